package history

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	testTime   = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	testFireAt = time.Date(2024, 5, 6, 8, 0, 0, 0, time.UTC)
)

// fullEvent sets every field of Event, so a field the codec forgets fails
// the round trip.
func fullEvent(t Type) *Event {
	return &Event{
		Seq:         42,
		Type:        t,
		Time:        testTime,
		TaskID:      7,
		Name:        "ProcessOrder",
		InstanceID:  "order-123",
		ExecutionID: "exec-1",
		Input:       []byte(`{"id":123,"items":["a","b"]}`),
		Failure: &Failure{
			Type:         "*errors.errorString",
			Message:      "payment declined",
			Stack:        "main.charge()\n\tcharge.go:12",
			NonRetryable: true,
			Cause:        &Failure{Type: "net.OpError", Message: "connection reset", Cause: &Failure{Message: "EOF"}},
		},
		FireAt:  testFireAt,
		Status:  StatusFailed,
		Parent:  &Parent{InstanceID: "parent-1", ExecutionID: "pexec", Name: "Parent", TaskID: 3},
		Timeout: 90 * time.Second,
		Attempt: 4,
		Recurse: true,
	}
}

func allTypes() []Type {
	var ts []Type
	for t := ExecutionStarted; t <= EventRaised; t++ {
		ts = append(ts, t)
	}
	return ts
}

// TestFullEventSetsEveryField guards the round-trip tests: if Event grows a
// field that fullEvent leaves zero, the codec is probably missing it too.
func TestFullEventSetsEveryField(t *testing.T) {
	for _, v := range []any{*fullEvent(TaskFailed), *fullEvent(TaskFailed).Failure, *fullEvent(TaskFailed).Parent} {
		rv := reflect.ValueOf(v)
		for i := range rv.NumField() {
			if rv.Field(i).IsZero() {
				t.Errorf("%s.%s is zero in the test value: add it to the test and to the codec", rv.Type().Name(), rv.Type().Field(i).Name)
			}
		}
	}
}

func TestEventRoundTripAllTypes(t *testing.T) {
	for _, typ := range allTypes() {
		t.Run(typ.String(), func(t *testing.T) {
			in := fullEvent(typ)
			b := EncodeEvent(in)
			out, err := DecodeEvent(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("round trip mismatch:\n in: %+v\nout: %+v", in, out)
			}
			if again := EncodeEvent(out); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
			}
		})
	}
}

func TestEventRoundTripSparse(t *testing.T) {
	epoch := time.Unix(0, 0).UTC()
	cases := map[string]*Event{
		"type only":           {Type: OrchestratorStarted},
		"negative ints":       {Type: TaskScheduled, Seq: -1, TaskID: math.MinInt64, Timeout: -time.Second, Attempt: math.MinInt32},
		"max ints":            {Type: TaskScheduled, Seq: math.MaxInt64, TaskID: math.MaxInt64, Attempt: math.MaxInt32},
		"unix epoch time":     {Type: TimerFired, Time: epoch, FireAt: epoch},
		"time before 1970":    {Type: TimerFired, Time: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC)},
		"empty parent":        {Type: ExecutionStarted, Parent: &Parent{}},
		"empty failure":       {Type: TaskFailed, Failure: &Failure{}},
		"empty failure cause": {Type: TaskFailed, Failure: &Failure{Cause: &Failure{}}},
		"binary input":        {Type: EventRaised, Input: []byte{0, 1, 2, 0xff}},
		"utf8 and invalid":    {Type: EventRaised, Name: "héllo \xff"},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := DecodeEvent(EncodeEvent(in))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("round trip mismatch:\n in: %+v\nout: %+v", in, out)
			}
		})
	}
}

func TestEventTimes(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	in := &Event{Type: TimerCreated, Time: testTime.In(loc), FireAt: time.Now()}
	out, err := DecodeEvent(EncodeEvent(in))
	if err != nil {
		t.Fatal(err)
	}
	if !out.Time.Equal(in.Time) || out.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v in UTC", out.Time, in.Time)
	}
	if !out.FireAt.Equal(in.FireAt) {
		t.Errorf("FireAt = %v, want %v", out.FireAt, in.FireAt)
	}

	// Out of range times are clamped, not garbled.
	far := &Event{Type: TimerCreated, FireAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), Time: time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC)}
	out, err = DecodeEvent(EncodeEvent(far))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(0, math.MaxInt64).UTC(); !out.FireAt.Equal(want) {
		t.Errorf("far FireAt = %v, want %v", out.FireAt, want)
	}
	if want := time.Unix(0, math.MinInt64).UTC(); !out.Time.Equal(want) {
		t.Errorf("early Time = %v, want %v", out.Time, want)
	}
}

func TestFailureCauseDepth(t *testing.T) {
	chain := func(n int) *Failure {
		var f *Failure
		for i := n; i > 0; i-- {
			f = &Failure{Message: strings.Repeat("x", i), Cause: f}
		}
		return f
	}
	depth := func(f *Failure) int {
		n := 0
		for ; f != nil; f = f.Cause {
			n++
		}
		return n
	}

	in := &Event{Type: TaskFailed, Failure: chain(MaxCauseDepth)}
	out, err := DecodeEvent(EncodeEvent(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("chain of %d did not round trip", MaxCauseDepth)
	}

	in = &Event{Type: TaskFailed, Failure: chain(MaxCauseDepth + 10)}
	out, err = DecodeEvent(EncodeEvent(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := depth(out.Failure); got != MaxCauseDepth {
		t.Fatalf("decoded chain depth = %d, want %d", got, MaxCauseDepth)
	}

	// A cycle must not hang the encoder.
	cyc := &Failure{Message: "loop"}
	cyc.Cause = cyc
	out, err = DecodeEvent(EncodeEvent(&Event{Type: TaskFailed, Failure: cyc}))
	if err != nil {
		t.Fatal(err)
	}
	if got := depth(out.Failure); got != MaxCauseDepth {
		t.Fatalf("cyclic chain depth = %d, want %d", got, MaxCauseDepth)
	}

	// A hand-made encoding one cause deeper is refused.
	b := []byte{codecVersion, byte(TaskFailed), tagFailure}
	for range MaxCauseDepth {
		b = append(b, tagFailureCause)
	}
	b = append(b, endTag)
	if _, err := DecodeEvent(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("too deep chain: err = %v, want ErrCorrupt", err)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	cases := map[string]*Message{
		"full":     {InstanceID: "order-123", ExecutionID: "exec-2", Event: fullEvent(TaskCompleted)},
		"no exec":  {InstanceID: "order-123", Event: &Event{Type: EventRaised, Name: "approve", Input: []byte(`true`)}},
		"no event": {InstanceID: "i"},
		"empty":    {},
		"only evt": {Event: &Event{Type: ExecutionTerminated}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			b := EncodeMessage(in)
			out, err := DecodeMessage(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("round trip mismatch:\n in: %+v\nout: %+v", in, out)
			}
			if again := EncodeMessage(out); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
			}
		})
	}
}

func TestMessageAndEventAreDistinct(t *testing.T) {
	if _, err := DecodeMessage(EncodeEvent(&Event{Type: TaskCompleted})); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeMessage(event) err = %v, want ErrCorrupt", err)
	}
	if _, err := DecodeEvent(EncodeMessage(&Message{Event: &Event{Type: TaskCompleted}})); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeEvent(message) err = %v, want ErrCorrupt", err)
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte("prefix")
	e := &Event{Type: TaskCompleted, TaskID: 1}
	b := AppendEvent(append([]byte(nil), prefix...), e)
	if !bytes.HasPrefix(b, prefix) || !bytes.Equal(b[len(prefix):], EncodeEvent(e)) {
		t.Fatalf("AppendEvent = %x", b)
	}
	m := &Message{InstanceID: "x", Event: e}
	b = AppendMessage(append([]byte(nil), prefix...), m)
	if !bytes.HasPrefix(b, prefix) || !bytes.Equal(b[len(prefix):], EncodeMessage(m)) {
		t.Fatalf("AppendMessage = %x", b)
	}
}

// TestDecodeDoesNotAlias: the decoded event stays intact when the caller
// reuses its buffer, and appending to Input does not overwrite the strings.
func TestDecodeDoesNotAlias(t *testing.T) {
	in := &Event{Type: EventSent, Name: "name", Input: []byte(`"payload"`), InstanceID: "target"}
	b := EncodeEvent(in)
	out, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xAA
	}
	_ = append(out.Input, "XXXXXXXXXXXXXXXXXXXXXXXX"...)
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("decoded event changed:\n in: %+v\nout: %+v", in, out)
	}
}

// golden is the encoding of goldenEvent. If this test fails, the stored
// format changed: stored histories and queued messages would no longer decode.
// Add a new version instead of changing this one.
const golden = "01" + // version
	"09" + // type TaskFailed
	"0114" + // Seq 10
	"0280c88980e6adb4a62f" + // Time 2024-01-02T03:04:05Z
	"0306" + // TaskID 3
	"0406636861726765" + // Name "charge"
	"05026931" + // InstanceID "i1"
	"07027b7d" + // Input "{}"
	"08" + "010145" + "02046e6f7065" + "04" + "05" + "0203454f46" + "00" + // Failure{Type "E", Message "nope", NonRetryable, Cause{Message "EOF"}}
	"0d04" + // Attempt 2
	"0e" // Recurse

var goldenEvent = &Event{
	Seq:        10,
	Type:       TaskFailed,
	Time:       time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	TaskID:     3,
	Name:       "charge",
	InstanceID: "i1",
	Input:      []byte("{}"),
	Failure:    &Failure{Type: "E", Message: "nope", NonRetryable: true, Cause: &Failure{Message: "EOF"}},
	Attempt:    2,
	Recurse:    true,
}

func TestGolden(t *testing.T) {
	want, err := hex.DecodeString(strings.ReplaceAll(golden, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := EncodeEvent(goldenEvent); !bytes.Equal(got, want) {
		t.Fatalf("encoding changed:\n got %x\nwant %x", got, want)
	}
	out, err := DecodeEvent(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, goldenEvent) {
		t.Fatalf("golden decodes to %+v", out)
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := EncodeEvent(fullEvent(TaskFailed))
	cases := map[string][]byte{
		"empty":                {},
		"version only":         {codecVersion},
		"bad version":          {2, byte(TaskCompleted)},
		"version zero":         {0, byte(TaskCompleted)},
		"type zero":            {codecVersion, 0},
		"type too large":       {codecVersion, byte(EntityContinue) + 1},
		"unknown tag":          {codecVersion, byte(TaskCompleted), 99, 1},
		"end tag at top":       {codecVersion, byte(TaskCompleted), endTag},
		"repeated tag":         {codecVersion, byte(TaskCompleted), tagTaskID, 2, tagTaskID, 2},
		"tags out of order":    {codecVersion, byte(TaskCompleted), tagTaskID, 2, tagSeq, 2},
		"zero int":             {codecVersion, byte(TaskCompleted), tagTaskID, 0},
		"non-minimal varint":   {codecVersion, byte(TaskCompleted), tagTaskID, 0x82, 0x00},
		"varint overflow":      {codecVersion, byte(TaskCompleted), tagTaskID, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"truncated varint":     {codecVersion, byte(TaskCompleted), tagTaskID, 0x80},
		"missing value":        {codecVersion, byte(TaskCompleted), tagTaskID},
		"empty string":         {codecVersion, byte(TaskCompleted), tagName, 0},
		"length past end":      {codecVersion, byte(TaskCompleted), tagName, 5, 'a', 'b'},
		"huge length":          {codecVersion, byte(TaskCompleted), tagInput, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"attempt overflow":     {codecVersion, byte(TaskScheduled), tagAttempt, 0x80, 0x80, 0x80, 0x80, 0x10},
		"unterminated parent":  {codecVersion, byte(ExecutionStarted), tagParent, tagParentName, 1, 'p'},
		"unknown parent tag":   {codecVersion, byte(ExecutionStarted), tagParent, 9, 0},
		"unterminated failure": {codecVersion, byte(TaskFailed), tagFailure, tagFailureMessage, 1, 'm'},
		"unknown failure tag":  {codecVersion, byte(TaskFailed), tagFailure, 9, 0},
		"failure out of order": {codecVersion, byte(TaskFailed), tagFailure, tagFailureMessage, 1, 'm', tagFailureType, 1, 't', 0},
		"truncated full":       valid[:len(valid)-2], // cuts the Attempt value
		"trailing byte":        append(append([]byte(nil), valid...), 0),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			e, err := DecodeEvent(b)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeEvent(%x) = %+v, %v; want ErrCorrupt", b, e, err)
			}
			if e != nil {
				t.Fatalf("event returned with error: %+v", e)
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	cases := map[string][]byte{
		"empty":               {},
		"version only":        {codecVersion},
		"no header end":       {codecVersion, messageMarker, tagMessageInstanceID, 1, 'i'},
		"unknown tag":         {codecVersion, messageMarker, 7, 0},
		"header out of order": {codecVersion, messageMarker, tagMessageExecutionID, 1, 'e', tagMessageInstanceID, 1, 'i', 0},
		"bad event type":      {codecVersion, messageMarker, 0, 0},
		"bad event field":     {codecVersion, messageMarker, 0, byte(TaskCompleted), 99},
		"bad version":         {3, messageMarker, 0},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if m, err := DecodeMessage(b); !errors.Is(err, ErrCorrupt) || m != nil {
				t.Fatalf("DecodeMessage(%x) = %+v, %v; want ErrCorrupt", b, m, err)
			}
		})
	}
}

// TestTruncationsNeverPanic: a strict prefix of a valid encoding is an
// error wrapping ErrCorrupt, unless it ends exactly at a field boundary of the
// event, where it decodes to fewer fields and must still re-encode exactly.
func TestTruncationsNeverPanic(t *testing.T) {
	full := EncodeMessage(&Message{InstanceID: "abc", ExecutionID: "e", Event: fullEvent(SubOrchestrationFailed)})
	for i := range len(full) {
		m, err := DecodeMessage(full[:i])
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("prefix %d: error %v does not wrap ErrCorrupt", i, err)
			}
			continue
		}
		if got := EncodeMessage(m); !bytes.Equal(got, full[:i]) {
			t.Fatalf("prefix %d decoded but re-encodes differently", i)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	b := EncodeEvent(typicalTaskCompleted())
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeEvent(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("DecodeEvent allocs = %v, want <= 2", allocs)
	}
	mb := EncodeMessage(&Message{InstanceID: "order-123", ExecutionID: "8f14e45f", Event: typicalTaskCompleted()})
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := DecodeMessage(mb); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("DecodeMessage allocs = %v, want <= 2", allocs)
	}
	dst := make([]byte, 0, 1024)
	e := typicalTaskCompleted()
	allocs = testing.AllocsPerRun(100, func() { dst = AppendEvent(dst[:0], e) })
	if allocs != 0 {
		t.Errorf("AppendEvent into a large enough buffer allocs = %v, want 0", allocs)
	}
}

func typicalTaskCompleted() *Event {
	return &Event{
		Seq:    17,
		Type:   TaskCompleted,
		Time:   testTime,
		TaskID: 5,
		Input:  []byte(`{"orderId":"order-123","status":"shipped","carrier":"UPS","tracking":"1Z999AA10123456784","eta":123}`),
	}
}

func BenchmarkEncodeTaskCompleted(b *testing.B) {
	e := typicalTaskCompleted()
	if len(e.Input) != 100 {
		b.Fatalf("payload is %d bytes, want 100", len(e.Input))
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(EncodeEvent(e))
	}
	b.SetBytes(int64(n))
}

func BenchmarkAppendTaskCompleted(b *testing.B) {
	e := typicalTaskCompleted()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], e)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeTaskCompleted(b *testing.B) {
	enc := EncodeEvent(typicalTaskCompleted())
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := DecodeEvent(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMessageTaskCompleted(b *testing.B) {
	enc := EncodeMessage(&Message{InstanceID: "order-123", ExecutionID: "8f14e45f", Event: typicalTaskCompleted()})
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := DecodeMessage(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, typ := range allTypes() {
		f.Add(EncodeEvent(fullEvent(typ)))
		f.Add(EncodeEvent(&Event{Type: typ}))
	}
	f.Add(EncodeEvent(typicalTaskCompleted()))
	f.Add(EncodeEvent(goldenEvent))
	f.Add(EncodeEvent(&Event{Type: TaskFailed, Failure: &Failure{Cause: &Failure{}}, Parent: &Parent{}}))
	f.Add([]byte{})
	f.Add([]byte{codecVersion, byte(TaskCompleted), tagInput, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		e, err := DecodeEvent(b)
		if !bytes.Equal(in, b) {
			t.Fatal("DecodeEvent modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if e != nil {
				t.Fatal("event returned with an error")
			}
			return
		}
		// The decoder accepts only canonical encodings, so re-encoding
		// gives back the input byte for byte.
		enc := EncodeEvent(e)
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, enc)
		}
		e2, err := DecodeEvent(enc)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("second decode differs:\n%+v\n%+v", e, e2)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, typ := range allTypes() {
		f.Add(EncodeMessage(&Message{InstanceID: "i", ExecutionID: "e", Event: fullEvent(typ)}))
	}
	f.Add(EncodeMessage(&Message{}))
	f.Add(EncodeMessage(&Message{InstanceID: "only"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || m != nil {
				t.Fatalf("DecodeMessage = %v, %v", m, err)
			}
			return
		}
		if enc := EncodeMessage(m); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, enc)
		}
	})
}
