package payload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/history"
)

// memStore is an in-memory blob store standing in for a backend.
type memStore struct {
	mu    sync.Mutex
	blobs map[string][]byte
}

func newMemStore() *memStore { return &memStore{blobs: map[string][]byte{}} }

func (m *memStore) put(ps ...*backend.Payload) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		m.blobs[p.Key] = p.Data
	}
}

func (m *memStore) get(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[key]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, backend.ErrPayloadNotFound)
	}
	return b, nil
}

func counterKeys() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("k%d", n) }
}

// jsonOf returns n bytes of compressible JSON-like text.
func jsonOf(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`[`)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"item %d","tags":["a","b"]},`, i, i)
	}
	out := b.Bytes()[:n]
	out[n-1] = ']'
	return out
}

func TestSmallStaysInline(t *testing.T) {
	for _, s := range []Store{{}, {Threshold: 10}, {Threshold: -1}} {
		limit := s.Threshold
		if limit <= 0 {
			limit = 45 * 1024
		}
		for _, n := range []int{0, 1, limit - 1, limit} {
			data := jsonOf(max(n, 1))[:n]
			enc, blob := s.Externalize("inst", data, func() string { t.Fatal("newKey called for an inline payload"); return "" })
			if blob != nil || !bytes.Equal(enc, data) || IsRef(enc) {
				t.Errorf("threshold %d, %d bytes: externalized (blob %v)", limit, n, blob != nil)
			}
		}
	}
	if ThresholdDefault != 45*1024 {
		t.Errorf("ThresholdDefault = %d", ThresholdDefault)
	}
	// Just past the default threshold goes out, through the free function
	// too.
	data := jsonOf(ThresholdDefault + 1)
	if _, blob := Externalize("i", data, 0, counterKeys()); blob == nil {
		t.Error("a payload one byte over the default threshold stayed inline")
	}
	if _, blob := (Store{}).Externalize("i", data, counterKeys()); blob == nil {
		t.Error("Store{}: a payload one byte over the default threshold stayed inline")
	}
}

func TestLargeRoundTrip(t *testing.T) {
	data := jsonOf(1 << 20)
	s := Store{}
	enc, blob := s.Externalize("order-1", data, counterKeys())
	if blob == nil {
		t.Fatal("1 MiB payload was not externalized")
	}
	if !IsRef(enc) || enc[0] != 0 {
		t.Fatalf("encoded = %q, want a reference", enc)
	}
	if key, _ := Key(enc); key != "order-1/k1" || blob.Key != key || blob.InstanceID != "order-1" {
		t.Fatalf("key %q, blob %q/%q", key, blob.Key, blob.InstanceID)
	}
	if len(blob.Data) >= len(data)/4 {
		t.Errorf("compressed %d bytes to %d: expected much smaller for repetitive JSON", len(data), len(blob.Data))
	}
	m := newMemStore()
	m.put(blob)
	got, err := Resolve(context.Background(), m.get, enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("resolved payload differs from the original")
	}
}

func TestIncompressibleRoundTrip(t *testing.T) {
	data := make([]byte, 100_000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	data[0] = '"' // a payload never starts with 0x00
	enc, blob := Store{Threshold: 1000}.Externalize("i", data, counterKeys())
	m := newMemStore()
	m.put(blob)
	got, err := Resolve(context.Background(), m.get, enc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip failed: %v", err)
	}
}

func TestResolveInline(t *testing.T) {
	in := []byte(`{"a":1}`)
	got, err := Resolve(context.Background(), func(context.Context, string) ([]byte, error) {
		t.Fatal("get called for an inline payload")
		return nil, nil
	}, in)
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("Resolve(inline) = %q, %v", got, err)
	}
	if got, err := Resolve(context.Background(), nil, nil); err != nil || got != nil {
		t.Fatalf("Resolve(nil) = %q, %v", got, err)
	}
}

func TestExternalizeIsIdempotent(t *testing.T) {
	ref := Ref("inst/" + strings.Repeat("k", 100))
	enc, blob := Store{Threshold: 10}.Externalize("inst", ref, counterKeys())
	if blob != nil || !bytes.Equal(enc, ref) {
		t.Fatal("a reference was externalized again")
	}
}

func TestMissingKey(t *testing.T) {
	m := newMemStore()
	_, err := Resolve(context.Background(), m.get, Ref("order-9/abc"))
	if !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Fatalf("err = %v, want ErrPayloadNotFound", err)
	}
	if !strings.Contains(err.Error(), `"order-9/abc"`) {
		t.Fatalf("error %q does not name the key", err)
	}
}

func TestGetErrorNamesKey(t *testing.T) {
	boom := errors.New("disk on fire")
	_, err := Resolve(context.Background(), func(context.Context, string) ([]byte, error) { return nil, boom }, Ref("i/k"))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), `"i/k"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestCorruptBlob(t *testing.T) {
	data := jsonOf(100_000)
	_, blob := Store{}.Externalize("i", data, counterKeys())
	truncated := blob.Data[:len(blob.Data)/2]
	flipped := bytes.Clone(blob.Data)
	flipped[len(flipped)/2] ^= 0xff
	badCRC := bytes.Clone(blob.Data)
	badCRC[len(badCRC)-5] ^= 0x01 // in the CRC-32 of the trailer
	hugeSize := bytes.Clone(blob.Data)
	copy(hugeSize[len(hugeSize)-4:], []byte{0xff, 0xff, 0xff, 0xff})

	cases := map[string][]byte{
		"not gzip":     []byte(`{"plain":"json"}`),
		"empty":        {},
		"truncated":    truncated,
		"flipped byte": flipped,
		"bad crc":      badCRC,
		"bad size":     hugeSize,
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			m := newMemStore()
			m.put(&backend.Payload{Key: "i/k", Data: b})
			got, err := Resolve(context.Background(), m.get, Ref("i/k"))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Resolve = %d bytes, %v; want ErrCorrupt", len(got), err)
			}
			if !strings.Contains(err.Error(), `"i/k"`) {
				t.Fatalf("error %q does not name the key", err)
			}
		})
	}
	if _, err := Resolve(context.Background(), newMemStore().get, []byte{0}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("empty reference: err = %v, want ErrCorrupt", err)
	}
}

func TestEvents(t *testing.T) {
	big := jsonOf(2000)
	small := []byte(`"ok"`)
	e1 := &history.Event{Seq: 1, Type: history.TaskScheduled, Input: small}
	e2 := &history.Event{Seq: 2, Type: history.TaskCompleted, Input: big}
	e3 := &history.Event{Seq: 3, Type: history.EventRaised, Input: big}
	events := []*history.Event{e1, e2, nil, e3}
	s := Store{Threshold: 1000}

	out, blobs := s.ExternalizeEvents("inst", events, counterKeys(), nil)
	if len(blobs) != 2 {
		t.Fatalf("%d blobs, want 2", len(blobs))
	}
	// The caller's events are untouched.
	if !bytes.Equal(e2.Input, big) || !bytes.Equal(e3.Input, big) || events[1] != e2 {
		t.Fatal("ExternalizeEvents modified its input")
	}
	if out[0] != e1 || out[2] != nil || !IsRef(out[1].Input) || !IsRef(out[3].Input) {
		t.Fatalf("unexpected output %v", out)
	}
	if out[1].Seq != 2 || out[1].Type != history.TaskCompleted {
		t.Fatal("copy lost fields")
	}
	for _, b := range blobs {
		if !strings.HasPrefix(b.Key, "inst/") || b.InstanceID != "inst" {
			t.Fatalf("blob key %q owner %q", b.Key, b.InstanceID)
		}
	}

	// Through the codec, as the engine does.
	var encoded [][]byte
	for _, e := range out {
		if e != nil {
			encoded = append(encoded, history.EncodeEvent(e))
		}
	}
	m := newMemStore()
	m.put(blobs...)
	var decoded []*history.Event
	for _, b := range encoded {
		e, err := history.DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, e)
	}
	if err := ResolveEvents(context.Background(), m.get, decoded); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{small, big, big} {
		if !bytes.Equal(decoded[i].Input, want) {
			t.Fatalf("event %d: input not restored", i)
		}
	}

	// Nothing to externalize: the same slice comes back.
	same, blobs := s.ExternalizeEvents("inst", []*history.Event{e1}, counterKeys(), nil)
	if len(blobs) != 0 || len(same) != 1 || same[0] != e1 {
		t.Fatal("unchanged events were copied")
	}

	// A missing blob names the event and the key.
	gone := []*history.Event{{Seq: 7, Type: history.TaskCompleted, Input: Ref("inst/zzz")}}
	err := ResolveEvents(context.Background(), m.get, gone)
	if !errors.Is(err, backend.ErrPayloadNotFound) || !strings.Contains(err.Error(), "inst/zzz") || !strings.Contains(err.Error(), "event 7") {
		t.Fatalf("err = %v", err)
	}
}

func TestMessageOwner(t *testing.T) {
	ev := &history.Event{Type: history.EventRaised, Name: "go", Input: jsonOf(5000)}
	msg := &history.Message{InstanceID: "receiver", Event: ev}
	s := Store{Threshold: 1000}
	out, blobs := s.ExternalizeMessage(msg, counterKeys(), nil)
	if len(blobs) != 1 || blobs[0].InstanceID != "receiver" || !strings.HasPrefix(blobs[0].Key, "receiver/") {
		t.Fatalf("blobs %+v: want one owned by the receiver", blobs)
	}
	if out == msg || msg.Event != ev || IsRef(ev.Input) || !IsRef(out.Event.Input) {
		t.Fatal("message not copied on write")
	}
	dec, err := history.DecodeMessage(history.EncodeMessage(out))
	if err != nil {
		t.Fatal(err)
	}
	m := newMemStore()
	m.put(blobs...)
	if err := ResolveMessage(context.Background(), m.get, dec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec.Event.Input, ev.Input) {
		t.Fatal("message input not restored")
	}

	small := &history.Message{InstanceID: "r", Event: &history.Event{Type: history.EventRaised}}
	if out, _ := s.ExternalizeMessage(small, counterKeys(), nil); out != small {
		t.Fatal("unchanged message copied")
	}
	if out, _ := s.ExternalizeMessage(&history.Message{InstanceID: "r"}, counterKeys(), nil); out.Event != nil {
		t.Fatal("message without event")
	}
}

func TestTrimFailure(t *testing.T) {
	short := &history.Failure{Message: "m", Stack: "s", Cause: &history.Failure{Message: "c"}}
	if TrimFailure(short) != short {
		t.Fatal("short failure copied")
	}
	if TrimFailure(nil) != nil {
		t.Fatal("nil failure")
	}

	exact := strings.Repeat("a", MaxFailureText)
	longMsg := "a" + strings.Repeat("é", MaxFailureText) // odd offset, 2-byte runes: the cut must not split one
	longStack := strings.Repeat("x", 100_000)
	in := &history.Failure{
		Type:         "T",
		Message:      exact,
		NonRetryable: true,
		Cause:        &history.Failure{Message: longMsg, Stack: longStack, Cause: &history.Failure{Message: "root"}},
	}
	out := TrimFailure(in)
	if out == in || in.Cause.Message != longMsg || in.Cause.Stack != longStack {
		t.Fatal("TrimFailure modified its input")
	}
	if out.Message != exact || out.Type != "T" || !out.NonRetryable {
		t.Fatalf("top failure changed: %q", out.Message[:10])
	}
	c := out.Cause
	for name, s := range map[string]string{"message": c.Message, "stack": c.Stack} {
		if len(s) > MaxFailureText {
			t.Errorf("%s is %d bytes, want <= %d", name, len(s), MaxFailureText)
		}
		if len(s) < MaxFailureText-8 {
			t.Errorf("%s cut too short: %d bytes", name, len(s))
		}
		if !strings.HasSuffix(s, "…(truncated)") || !utf8.ValidString(s) {
			t.Errorf("%s does not end with a visible marker or is invalid UTF-8", name)
		}
	}
	if !strings.HasPrefix(c.Stack, "xxxx") || !strings.HasPrefix(c.Message, "aéé") {
		t.Error("trimming must keep the beginning")
	}
	if c.Cause == nil || c.Cause.Message != "root" {
		t.Error("cause chain lost")
	}

	// A cycle is cut at the codec's depth limit instead of looping.
	cyc := &history.Failure{Stack: longStack}
	cyc.Cause = cyc
	n := 0
	for f := TrimFailure(cyc); f != nil; f = f.Cause {
		n++
	}
	if n != history.MaxCauseDepth {
		t.Fatalf("trimmed cyclic chain has %d links, want %d", n, history.MaxCauseDepth)
	}
}

func TestConcurrentUse(t *testing.T) {
	m := newMemStore()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			data := jsonOf(50_000 + g)
			enc, blob := Store{}.Externalize(fmt.Sprint("i", g), data, func() string { return "k" })
			m.put(blob)
			got, err := Resolve(context.Background(), m.get, enc)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("goroutine %d: %v", g, err)
			}
		})
	}
	wg.Wait()
}

func BenchmarkExternalize1MiB(b *testing.B) {
	data := jsonOf(1 << 20)
	keys := counterKeys()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Store{}.Externalize("i", data, keys)
	}
}

func BenchmarkResolve1MiB(b *testing.B) {
	data := jsonOf(1 << 20)
	enc, blob := Store{}.Externalize("i", data, counterKeys())
	m := newMemStore()
	m.put(blob)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Resolve(context.Background(), m.get, enc); err != nil {
			b.Fatal(err)
		}
	}
}
