// Package payload keeps large payloads out of messages and rows.
//
// A payload field (history.Event.Input, an instance's input, output or custom
// status) holds encoded payload bytes, one of:
//
//   - the payload itself, JSON: the normal case, with no prefix;
//   - a reference: a 0x00 byte followed by the key of a backend.Payload that
//     holds the payload gzip-compressed. JSON never starts with 0x00, so the
//     first byte tells the two apart.
//
// A payload longer than Store.Threshold (45 KiB by default, the reference
// implementation's limit for queue messages) is compressed into a blob and
// replaced by a reference. The engine externalizes before encoding events and
// rows, writes the collected blobs in the same commit, and resolves
// references after decoding.
//
// # Ownership
//
// A blob's key starts with the ID of the instance that owns it and a slash,
// so purging that instance removes it (see backend.Payload). The owner must be
// the instance whose history, row or queue holds the reference: an event that
// is recorded in the sender's history and also sent to another instance
// (EventSent and the receiver's EventRaised, a sub-orchestration's input)
// needs one blob per owner, or purging one instance breaks the other.
// ExternalizeMessage therefore uses the message's target instance as owner.
package payload

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/history"
)

// ThresholdDefault is the default Store.Threshold: 45 KiB.
const ThresholdDefault = 45 * 1024

// refPrefix starts a reference.
const refPrefix = 0x00

// ErrCorrupt is wrapped by errors about unreadable references and blobs.
var ErrCorrupt = errors.New("payload: corrupt large payload")

// GetFunc reads a stored blob; backend.Backend.PayloadGet is one. It returns
// an error wrapping backend.ErrPayloadNotFound for a missing key.
type GetFunc func(ctx context.Context, key string) ([]byte, error)

// Store decides which payloads go to blobs. The zero value uses the
// defaults. A Store is a value with no state: safe for concurrent use.
type Store struct {
	// Threshold is the largest payload, in bytes, kept inline; longer ones
	// are externalized. Zero or negative means ThresholdDefault.
	Threshold int
}

// Externalize returns data unchanged when it is at most the threshold long
// (or already a reference). Otherwise it returns a reference to a new blob,
// gzip-compressed, with key instanceID + "/" + newKey(), and the blob to
// write. data is not retained.
func (s Store) Externalize(instanceID string, data []byte, newKey func() string) (encoded []byte, blob *backend.Payload) {
	return Externalize(instanceID, data, s.Threshold, newKey)
}

// Externalize is Store{Threshold: threshold}.Externalize: a threshold of
// zero or less means ThresholdDefault.
func Externalize(instanceID string, data []byte, threshold int, newKey func() string) (encoded []byte, blob *backend.Payload) {
	if threshold <= 0 {
		threshold = ThresholdDefault
	}
	if len(data) <= threshold || IsRef(data) {
		return data, nil
	}
	key := instanceID + "/" + newKey()
	return Ref(key), &backend.Payload{Key: key, InstanceID: instanceID, Data: compress(data)}
}

// IsRef reports whether encoded is a reference to a blob.
func IsRef(encoded []byte) bool { return len(encoded) > 0 && encoded[0] == refPrefix }

// Ref returns the reference to the blob named key.
func Ref(key string) []byte {
	b := make([]byte, 0, 1+len(key))
	return append(append(b, refPrefix), key...)
}

// Key returns the blob key of a reference, and false if encoded is not one.
func Key(encoded []byte) (string, bool) {
	if !IsRef(encoded) {
		return "", false
	}
	return string(encoded[1:]), true
}

// Resolve returns the payload that encoded stands for: encoded itself when it
// is inline, else the blob it refers to, read with get and decompressed. A
// missing blob gives an error naming the key and wrapping
// backend.ErrPayloadNotFound; an unreadable one wraps ErrCorrupt.
func Resolve(ctx context.Context, get GetFunc, encoded []byte) ([]byte, error) {
	key, ok := Key(encoded)
	if !ok {
		return encoded, nil
	}
	if key == "" {
		return nil, fmt.Errorf("%w: reference without a key", ErrCorrupt)
	}
	blob, err := get(ctx, key)
	if err != nil {
		if errors.Is(err, backend.ErrPayloadNotFound) {
			return nil, fmt.Errorf("payload: large payload %q is missing: %w", key, err)
		}
		return nil, fmt.Errorf("payload: reading large payload %q: %w", key, err)
	}
	data, err := decompress(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrCorrupt, key, err)
	}
	return data, nil
}

// ExternalizeEvent externalizes e.Input with owner as the owning instance
// and appends the blob, if any, to blobs. It does not modify e: when Input
// changes it returns a shallow copy, so events the engine keeps in memory
// keep their inline payloads.
func (s Store) ExternalizeEvent(owner string, e *history.Event, newKey func() string, blobs []*backend.Payload) (*history.Event, []*backend.Payload) {
	if e == nil {
		return e, blobs
	}
	input, blob := s.Externalize(owner, e.Input, newKey)
	if blob == nil {
		return e, blobs
	}
	c := *e
	c.Input = input
	return &c, append(blobs, blob)
}

// ExternalizeEvents is ExternalizeEvent for each event. It returns events
// itself when nothing changes, else a new slice; events is not modified.
func (s Store) ExternalizeEvents(owner string, events []*history.Event, newKey func() string, blobs []*backend.Payload) ([]*history.Event, []*backend.Payload) {
	out := events
	copied := false
	for i, e := range events {
		c, more := s.ExternalizeEvent(owner, e, newKey, blobs)
		if c == e {
			continue
		}
		blobs = more
		if !copied {
			out = append([]*history.Event(nil), events...)
			copied = true
		}
		out[i] = c
	}
	return out, blobs
}

// ExternalizeMessage externalizes the Input of m's event, owned by the
// target instance m.InstanceID. It does not modify m or its event.
func (s Store) ExternalizeMessage(m *history.Message, newKey func() string, blobs []*backend.Payload) (*history.Message, []*backend.Payload) {
	e, blobs := s.ExternalizeEvent(m.InstanceID, m.Event, newKey, blobs)
	if e == m.Event {
		return m, blobs
	}
	c := *m
	c.Event = e
	return &c, blobs
}

// ResolveEvent replaces a reference in e.Input with the payload, in place.
func ResolveEvent(ctx context.Context, get GetFunc, e *history.Event) error {
	if e == nil || !IsRef(e.Input) {
		return nil
	}
	data, err := Resolve(ctx, get, e.Input)
	if err != nil {
		return fmt.Errorf("event %d (%s): %w", e.Seq, e.Type, err)
	}
	e.Input = data
	return nil
}

// ResolveEvents is ResolveEvent for each event, stopping at the first error.
func ResolveEvents(ctx context.Context, get GetFunc, events []*history.Event) error {
	for _, e := range events {
		if err := ResolveEvent(ctx, get, e); err != nil {
			return err
		}
	}
	return nil
}

// ResolveMessage resolves the Input of m's event in place.
func ResolveMessage(ctx context.Context, get GetFunc, m *history.Message) error {
	return ResolveEvent(ctx, get, m.Event)
}

// MaxFailureText is the longest Failure.Message or Failure.Stack that
// TrimFailure keeps, in bytes, marker included.
const MaxFailureText = 16 * 1024

// truncatedMarker ends a trimmed failure text.
const truncatedMarker = "…(truncated)"

// TrimFailure cuts each Message and Stack of f and its causes to
// MaxFailureText bytes, ending a cut text with "…(truncated)". It returns f
// itself when nothing is too long; otherwise a copy of the chain (at most
// history.MaxCauseDepth deep, as the codec stores), leaving f unchanged.
func TrimFailure(f *history.Failure) *history.Failure {
	long := false
	depth := 0
	for c := f; c != nil && depth < history.MaxCauseDepth; c, depth = c.Cause, depth+1 {
		if len(c.Message) > MaxFailureText || len(c.Stack) > MaxFailureText {
			long = true
			break
		}
	}
	if !long {
		return f
	}
	var head *history.Failure
	link := &head
	depth = 0
	for c := f; c != nil && depth < history.MaxCauseDepth; c, depth = c.Cause, depth+1 {
		t := *c
		t.Message = trimText(c.Message)
		t.Stack = trimText(c.Stack)
		t.Cause = nil
		*link = &t
		link = &t.Cause
	}
	return head
}

// trimText cuts s to at most MaxFailureText bytes, marker included, at a
// UTF-8 character boundary.
func trimText(s string) string {
	if len(s) <= MaxFailureText {
		return s
	}
	cut := MaxFailureText - len(truncatedMarker)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMarker
}

// gzip writers hold about a megabyte of compressor state: reuse them.
var writers = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

var readers sync.Pool // *gzip.Reader

func compress(data []byte) []byte {
	var buf bytes.Buffer
	// Most payloads are JSON and compress well; start at a quarter.
	buf.Grow(len(data)/4 + 64)
	w := writers.Get().(*gzip.Writer)
	w.Reset(&buf)
	// Writing to a bytes.Buffer cannot fail.
	_, _ = w.Write(data)
	_ = w.Close()
	w.Reset(nil)
	writers.Put(w)
	return buf.Bytes()
}

// maxSizeHint bounds the buffer preallocated from a blob's stated size, so a
// corrupt trailer cannot make Resolve allocate gigabytes up front.
const maxSizeHint = 64 << 20

func decompress(blob []byte) ([]byte, error) {
	var zr *gzip.Reader
	var err error
	if r, ok := readers.Get().(*gzip.Reader); ok {
		zr, err = r, r.Reset(bytes.NewReader(blob))
	} else {
		zr, err = gzip.NewReader(bytes.NewReader(blob))
	}
	if err != nil {
		return nil, err
	}
	defer readers.Put(zr)
	var out bytes.Buffer
	// The gzip trailer ends with the uncompressed size modulo 2^32.
	if len(blob) >= 4 {
		if n := int(binary.LittleEndian.Uint32(blob[len(blob)-4:])); n <= maxSizeHint {
			out.Grow(n + bytes.MinRead)
		}
	}
	if _, err := io.Copy(&out, zr); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
