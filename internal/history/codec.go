package history

// # Binary encoding
//
// Events and messages are stored (History rows, queue messages) in a compact
// binary form. Every encoding starts with a version byte (codecVersion).
//
// An event is
//
//	version  type  field*
//
// where type is the Type as one byte and each field is a one-byte tag
// followed by its value. Only non-zero fields are written, in ascending tag
// order. Values are:
//
//	int fields (Seq, TaskID, Timeout, Attempt)   zig-zag varint
//	time fields (Time, FireAt)                     zig-zag varint of Unix nanoseconds
//	string and []byte fields                       uvarint length, then the bytes
//	bool fields (Recurse, NonRetryable)            nothing: the tag alone means true
//	nested structs (Failure, Parent)               their own fields, see below
//
// A Parent is its fields (own tag numbers) ended by a 0 byte. A Failure is its
// fields ended by a 0 byte, except that the Cause tag, the last one, ends the
// failure and starts the cause's fields: a chain of n failures has one 0 byte,
// and decoding it needs no recursion.
//
// A message is
//
//	version  0x00  message-field*  0x00  [type  event-field*]
//
// The 0x00 in place of a type marks a message (0 is not a valid Type). The
// event part is the event's encoding without its version byte; it is absent
// when the message has no event.
//
// The decoder is strict: an unknown tag, tags out of order or repeated, a
// zero value the encoder would have left out, an empty string, a non-minimal
// varint, a length past the end of the input, or trailing bytes are errors
// wrapping ErrCorrupt. So every accepted input is the one encoding of the
// value it decodes to: EncodeEvent(DecodeEvent(b)) == b. New fields therefore
// need a new version byte or a reader that knows them; an old reader refuses
// them instead of silently dropping data it cannot see.
//
// Times lose their location and monotonic reading: they decode in UTC.
// Times outside the range of Unix nanoseconds in an int64 (years 1678 to
// 2262) are clamped to that range. Failure chains deeper than MaxCauseDepth
// are cut at that depth.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("history: corrupt encoding")

// MaxCauseDepth is the longest Failure.Cause chain the codec stores: the
// encoder drops causes past it, the decoder refuses longer chains.
const MaxCauseDepth = 64

// codecVersion is the first byte of every encoding.
const codecVersion = 1

// messageMarker takes the place of the event type in a message encoding.
const messageMarker = 0

// endTag ends a nested struct (Parent, Failure) and the message header.
const endTag = 0

// Event field tags. Stored: never renumber.
const (
	tagSeq         = 1
	tagTime        = 2
	tagTaskID      = 3
	tagName        = 4
	tagInstanceID  = 5
	tagExecutionID = 6
	tagInput       = 7
	tagFailure     = 8
	tagFireAt      = 9
	tagStatus      = 10
	tagParent      = 11
	tagTimeout     = 12
	tagAttempt     = 13
	tagRecurse     = 14
)

// Failure field tags. Stored: never renumber. tagFailureCause must stay last.
const (
	tagFailureType         = 1
	tagFailureMessage      = 2
	tagFailureStack        = 3
	tagFailureNonRetryable = 4
	tagFailureCause        = 5
)

// Parent field tags. Stored: never renumber.
const (
	tagParentInstanceID  = 1
	tagParentExecutionID = 2
	tagParentName        = 3
	tagParentTaskID      = 4
)

// Message field tags. Stored: never renumber.
const (
	tagMessageInstanceID  = 1
	tagMessageExecutionID = 2
)

// EncodeEvent returns the binary encoding of e.
func EncodeEvent(e *Event) []byte {
	return AppendEvent(make([]byte, 0, eventSizeHint(e)), e)
}

// EncodeMessage returns the binary encoding of m.
func EncodeMessage(m *Message) []byte {
	n := 3 + len(m.InstanceID) + len(m.ExecutionID) + 2*binary.MaxVarintLen64
	if m.Event != nil {
		n += eventSizeHint(m.Event)
	}
	return AppendMessage(make([]byte, 0, n), m)
}

// AppendEvent appends the binary encoding of e (not nil) to dst.
func AppendEvent(dst []byte, e *Event) []byte {
	dst = append(dst, codecVersion)
	return appendEventBody(dst, e)
}

// AppendMessage appends the binary encoding of m to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, codecVersion, messageMarker)
	dst = appendString(dst, tagMessageInstanceID, m.InstanceID)
	dst = appendString(dst, tagMessageExecutionID, m.ExecutionID)
	dst = append(dst, endTag)
	if m.Event != nil {
		dst = appendEventBody(dst, m.Event)
	}
	return dst
}

// eventSizeHint is a cheap upper bound of an event's encoded size (without
// failure and parent text, which are rare and grow the buffer if present).
func eventSizeHint(e *Event) int {
	return 2 + 14*(1+binary.MaxVarintLen64) +
		len(e.Name) + len(e.InstanceID) + len(e.ExecutionID) + len(e.Input) + len(e.Status)
}

func appendEventBody(dst []byte, e *Event) []byte {
	dst = append(dst, byte(e.Type))
	dst = appendInt(dst, tagSeq, e.Seq)
	dst = appendTime(dst, tagTime, e.Time)
	dst = appendInt(dst, tagTaskID, e.TaskID)
	dst = appendString(dst, tagName, e.Name)
	dst = appendString(dst, tagInstanceID, e.InstanceID)
	dst = appendString(dst, tagExecutionID, e.ExecutionID)
	dst = appendBytes(dst, tagInput, e.Input)
	if e.Failure != nil {
		dst = append(dst, tagFailure)
		dst = appendFailure(dst, e.Failure)
	}
	dst = appendTime(dst, tagFireAt, e.FireAt)
	dst = appendString(dst, tagStatus, e.Status)
	if p := e.Parent; p != nil {
		dst = append(dst, tagParent)
		dst = appendString(dst, tagParentInstanceID, p.InstanceID)
		dst = appendString(dst, tagParentExecutionID, p.ExecutionID)
		dst = appendString(dst, tagParentName, p.Name)
		dst = appendInt(dst, tagParentTaskID, p.TaskID)
		dst = append(dst, endTag)
	}
	dst = appendInt(dst, tagTimeout, int64(e.Timeout))
	dst = appendInt(dst, tagAttempt, int64(e.Attempt))
	if e.Recurse {
		dst = append(dst, tagRecurse)
	}
	return dst
}

func appendFailure(dst []byte, f *Failure) []byte {
	for depth := 1; ; depth++ {
		dst = appendString(dst, tagFailureType, f.Type)
		dst = appendString(dst, tagFailureMessage, f.Message)
		dst = appendString(dst, tagFailureStack, f.Stack)
		if f.NonRetryable {
			dst = append(dst, tagFailureNonRetryable)
		}
		if f.Cause == nil || depth == MaxCauseDepth {
			return append(dst, endTag)
		}
		dst = append(dst, tagFailureCause)
		f = f.Cause
	}
}

func appendInt(dst []byte, tag byte, v int64) []byte {
	if v == 0 {
		return dst
	}
	return binary.AppendVarint(append(dst, tag), v)
}

func appendTime(dst []byte, tag byte, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	return binary.AppendVarint(append(dst, tag), unixNano(t))
}

// minNanoTime and maxNanoTime bound the times whose Unix nanoseconds fit an
// int64.
var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

// unixNano is t.UnixNano clamped to the int64 range (t.UnixNano is undefined
// outside it).
func unixNano(t time.Time) int64 {
	if t.Before(minNanoTime) {
		return math.MinInt64
	}
	if t.After(maxNanoTime) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

func appendString(dst []byte, tag byte, s string) []byte {
	if s == "" {
		return dst
	}
	dst = binary.AppendUvarint(append(dst, tag), uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, tag byte, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	dst = binary.AppendUvarint(append(dst, tag), uint64(len(b)))
	return append(dst, b...)
}

// DecodeEvent decodes an encoding made by AppendEvent. Errors wrap
// ErrCorrupt. The event does not alias b: its strings and Input share one
// private copy of b (Input's capacity ends at its length, so appending to it
// copies).
func DecodeEvent(b []byte) (*Event, error) {
	d := decoder{buf: cloneBytes(b)}
	if err := d.version(); err != nil {
		return nil, err
	}
	e := new(Event)
	if err := d.event(e); err != nil {
		return nil, err
	}
	return e, nil
}

// DecodeMessage decodes an encoding made by AppendMessage. Errors wrap
// ErrCorrupt. As with DecodeEvent, the message does not alias b.
func DecodeMessage(b []byte) (*Message, error) {
	d := decoder{buf: cloneBytes(b)}
	if err := d.version(); err != nil {
		return nil, err
	}
	marker, err := d.byte()
	if err != nil {
		return nil, err
	}
	if marker != messageMarker {
		return nil, d.fail("not a message (found event type %d)", marker)
	}
	// One allocation for the message and its event.
	both := new(struct {
		m Message
		e Event
	})
	m := &both.m
	last := 0
	for {
		tag, err := d.tag(&last)
		if err != nil {
			return nil, err
		}
		switch tag {
		case endTag:
			if d.off == len(d.buf) {
				return m, nil
			}
			m.Event = &both.e
			if err := d.event(m.Event); err != nil {
				return nil, err
			}
			return m, nil
		case tagMessageInstanceID:
			m.InstanceID, err = d.string()
		case tagMessageExecutionID:
			m.ExecutionID, err = d.string()
		default:
			d.off--
			return nil, d.unknown("message", tag)
		}
		if err != nil {
			return nil, err
		}
	}
}

func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	c := make([]byte, len(b))
	copy(c, b)
	return c
}

// decoder reads from buf, a private copy of the input that nothing writes
// to once decoding starts: decoded strings point into it.
type decoder struct {
	buf []byte
	off int
}

func (d *decoder) fail(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrCorrupt, d.off, fmt.Sprintf(format, args...))
}

func (d *decoder) unknown(what string, tag byte) error {
	return d.fail("unknown %s field tag %d", what, tag)
}

func (d *decoder) version() error {
	v, err := d.byte()
	if err != nil {
		return err
	}
	if v != codecVersion {
		d.off--
		return d.fail("unsupported version %d", v)
	}
	return nil
}

func (d *decoder) byte() (byte, error) {
	if d.off >= len(d.buf) {
		return 0, d.fail("truncated")
	}
	c := d.buf[d.off]
	d.off++
	return c, nil
}

// tag reads a field tag, which must be endTag or greater than *last.
func (d *decoder) tag(last *int) (byte, error) {
	tag, err := d.byte()
	if err != nil {
		return 0, err
	}
	if tag != endTag {
		if int(tag) <= *last {
			d.off--
			return 0, d.fail("field tag %d out of order or repeated", tag)
		}
		*last = int(tag)
	}
	return tag, nil
}

func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.buf[d.off:])
	switch {
	case n == 0:
		return 0, d.fail("truncated varint")
	case n < 0:
		return 0, d.fail("varint overflows 64 bits")
	case n > 1 && d.buf[d.off+n-1] == 0:
		return 0, d.fail("non-minimal varint")
	}
	d.off += n
	return v, nil
}

func (d *decoder) varint() (int64, error) {
	u, err := d.uvarint()
	// Undo zig-zag as binary.Varint does.
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v, err
}

// int reads a non-zero varint (the encoder leaves zeros out).
func (d *decoder) int() (int64, error) {
	start := d.off
	v, err := d.varint()
	if err == nil && v == 0 {
		d.off = start
		return 0, d.fail("zero value written")
	}
	return v, err
}

func (d *decoder) time() (time.Time, error) {
	ns, err := d.varint()
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns).UTC(), nil
}

// bytes reads a non-empty length-prefixed field, returning a slice of buf
// whose capacity ends at its length.
func (d *decoder) bytes() ([]byte, error) {
	start := d.off
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		d.off = start
		return nil, d.fail("empty value written")
	}
	if n > uint64(len(d.buf)-d.off) {
		d.off = start
		return nil, d.fail("length %d past the end of the input", n)
	}
	end := d.off + int(n)
	b := d.buf[d.off:end:end]
	d.off = end
	return b, nil
}

func (d *decoder) string() (string, error) {
	b, err := d.bytes()
	if err != nil {
		return "", err
	}
	// buf is never written after decoding starts, so the string is immutable.
	return unsafe.String(&b[0], len(b)), nil
}

// event reads a type and the event's fields up to the end of the input.
func (d *decoder) event(e *Event) error {
	t, err := d.byte()
	if err != nil {
		return err
	}
	if !Type(t).Valid() {
		d.off--
		return d.fail("invalid event type %d", t)
	}
	e.Type = Type(t)
	last := 0
	for d.off < len(d.buf) {
		tag, err := d.tag(&last)
		if err != nil {
			return err
		}
		switch tag {
		case tagSeq:
			e.Seq, err = d.int()
		case tagTime:
			e.Time, err = d.time()
		case tagTaskID:
			e.TaskID, err = d.int()
		case tagName:
			e.Name, err = d.string()
		case tagInstanceID:
			e.InstanceID, err = d.string()
		case tagExecutionID:
			e.ExecutionID, err = d.string()
		case tagInput:
			e.Input, err = d.bytes()
		case tagFailure:
			e.Failure, err = d.failure()
		case tagFireAt:
			e.FireAt, err = d.time()
		case tagStatus:
			e.Status, err = d.string()
		case tagParent:
			e.Parent, err = d.parent()
		case tagTimeout:
			var v int64
			v, err = d.int()
			e.Timeout = time.Duration(v)
		case tagAttempt:
			var v int64
			v, err = d.int()
			if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
				err = d.fail("attempt %d overflows int32", v)
			}
			e.Attempt = int32(v)
		case tagRecurse:
			e.Recurse = true
		default:
			d.off--
			return d.unknown("event", tag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) parent() (*Parent, error) {
	p := new(Parent)
	last := 0
	for {
		tag, err := d.tag(&last)
		if err != nil {
			return nil, err
		}
		switch tag {
		case endTag:
			return p, nil
		case tagParentInstanceID:
			p.InstanceID, err = d.string()
		case tagParentExecutionID:
			p.ExecutionID, err = d.string()
		case tagParentName:
			p.Name, err = d.string()
		case tagParentTaskID:
			p.TaskID, err = d.int()
		default:
			d.off--
			return nil, d.unknown("parent", tag)
		}
		if err != nil {
			return nil, err
		}
	}
}

func (d *decoder) failure() (*Failure, error) {
	first := new(Failure)
	f, depth, last := first, 1, 0
	for {
		tag, err := d.tag(&last)
		if err != nil {
			return nil, err
		}
		switch tag {
		case endTag:
			return first, nil
		case tagFailureType:
			f.Type, err = d.string()
		case tagFailureMessage:
			f.Message, err = d.string()
		case tagFailureStack:
			f.Stack, err = d.string()
		case tagFailureNonRetryable:
			f.NonRetryable = true
		case tagFailureCause:
			if depth == MaxCauseDepth {
				d.off--
				return nil, d.fail("failure causes nested deeper than %d", MaxCauseDepth)
			}
			f.Cause = new(Failure)
			f, depth, last = f.Cause, depth+1, 0
		default:
			d.off--
			return nil, d.unknown("failure", tag)
		}
		if err != nil {
			return nil, err
		}
	}
}
