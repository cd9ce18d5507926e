package orchestration

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// ---- Test orchestrators ----

func js(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func unjs[T any](b []byte) T {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		panic(fmt.Sprintf("unmarshal %q into %T: %v", b, v, err))
	}
	return v
}

// registry is the orchestrators the tests and testdata use. Their code is
// part of the recorded histories' contract: changing it makes the golden
// files (and so TestRecordedHistories) fail, on purpose.
var registry = map[string]Func{
	// Sequence greets three cities, one activity after the other.
	"Sequence": func(ctx *Context) ([]byte, error) {
		var out []string
		for _, city := range []string{"Tokyo", "Seattle", "London"} {
			b, err := ctx.Await(ctx.CallActivity("Hello", js(city), ActivityOptions{}))
			if err != nil {
				return nil, fmt.Errorf("greeting %s: %w", city, err)
			}
			out = append(out, unjs[string](b))
		}
		return js(out), nil
	},
	// FanOut squares 0..n-1 in parallel and sums the results.
	"FanOut": func(ctx *Context) ([]byte, error) {
		n := unjs[int](ctx.Input())
		fs := make([]*Future, n)
		for i := range fs {
			fs[i] = ctx.CallActivity("Square", js(i), ActivityOptions{})
		}
		if _, err := ctx.Await(ctx.WhenAll(fs...)); err != nil {
			return nil, err
		}
		sum := 0
		for _, f := range fs {
			b, _ := ctx.Await(f)
			sum += unjs[int](b)
		}
		return js(sum), nil
	},
	// Approval waits an hour for "Approve", and escalates on timeout.
	"Approval": func(ctx *Context) ([]byte, error) {
		b, err := ctx.Await(ctx.WaitForExternalEvent("Approve", time.Hour))
		if errors.Is(err, ErrEventTimeout) {
			if _, err := ctx.Await(ctx.CallActivity("Escalate", ctx.Input(), ActivityOptions{})); err != nil {
				return nil, err
			}
			return js("escalated"), nil
		}
		if err != nil {
			return nil, err
		}
		return b, nil
	},
	// Retry calls a flaky activity with a backoff policy.
	"Retry": func(ctx *Context) ([]byte, error) {
		p := &RetryPolicy{MaxAttempts: 4, FirstInterval: time.Second, BackoffCoefficient: 2, MaxInterval: 3 * time.Second}
		return ctx.Await(ctx.CallActivity("Flaky", ctx.Input(), ActivityOptions{Retry: p, Timeout: time.Minute}))
	},
	// Parent runs Sequence as a child and sends a note to an observer.
	"Parent": func(ctx *Context) ([]byte, error) {
		b, err := ctx.Await(ctx.CallSubOrchestrator("Sequence", "", nil, SubOrchestratorOptions{}))
		if err != nil {
			return nil, err
		}
		ctx.SendEvent("observer", "ChildDone", b)
		return b, nil
	},
	// Counter adds "add" events to its input and continues as new until
	// it reaches 3, keeping events it has not consumed.
	"Counter": func(ctx *Context) ([]byte, error) {
		n := unjs[int](ctx.Input())
		b, err := ctx.Await(ctx.WaitForExternalEvent("add", -1))
		if err != nil {
			return nil, err
		}
		n += unjs[int](b)
		if n >= 3 {
			return js(n), nil
		}
		ctx.ContinueAsNew(js(n), true)
		return nil, nil
	},
	// Loop runs activities forever (benchmarks and cache tests).
	"Loop": func(ctx *Context) ([]byte, error) {
		for {
			if _, err := ctx.Await(ctx.CallActivity("Work", nil, ActivityOptions{})); err != nil {
				return nil, err
			}
		}
	},
	// Sequential runs n activities one after the other.
	"Sequential": func(ctx *Context) ([]byte, error) {
		n := unjs[int](ctx.Input())
		for i := range n {
			if _, err := ctx.Await(ctx.CallActivity("Work", js(i), ActivityOptions{})); err != nil {
				return nil, err
			}
		}
		return js(n), nil
	},
	// Bank moves an amount between two account entities inside a critical
	// section, then signals an audit entity.
	"Bank": func(ctx *Context) ([]byte, error) {
		in := unjs[struct {
			From, To string
			Amount   int
		}](ctx.Input())
		if _, err := ctx.Await(ctx.LockEntities(in.To, in.From)); err != nil {
			return nil, err
		}
		b, err := ctx.Await(ctx.CallEntity(in.From, "get", nil))
		if err != nil {
			return nil, err
		}
		if unjs[int](b) < in.Amount {
			return js("insufficient funds"), nil // the end releases the locks
		}
		debit := ctx.CallEntity(in.From, "add", js(-in.Amount))
		credit := ctx.CallEntity(in.To, "add", js(in.Amount))
		if _, err := ctx.Await(ctx.WhenAll(debit, credit)); err != nil {
			return nil, err
		}
		ctx.UnlockEntities()
		ctx.SignalEntity("@audit@log", "record", ctx.Input(), time.Time{})
		return js("transferred"), nil
	},
	// Clock waits a minute on a durable timer and reports history time and
	// two GUIDs.
	"Clock": func(ctx *Context) ([]byte, error) {
		start := ctx.CurrentTime()
		ctx.SetCustomStatus(js("waiting"))
		if _, err := ctx.Await(ctx.CreateTimer(start.Add(time.Minute))); err != nil {
			return nil, err
		}
		return js([]string{start.Format(time.RFC3339Nano), ctx.CurrentTime().Format(time.RFC3339Nano), ctx.NewGUID(), ctx.NewGUID()}), nil
	},
}

func lookup(name string) (Func, bool) {
	f, ok := registry[name]
	return f, ok
}

// lookupWith adds orchestrators to the registry for one test.
func lookupWith(extra map[string]Func) Lookup {
	return func(name string) (Func, bool) {
		if f, ok := extra[name]; ok {
			return f, true
		}
		return lookup(name)
	}
}

// ---- Activities for the harness ----

type activityFunc func(name string, input []byte, attempt int32) ([]byte, *history.Failure)

// activities is the default activity implementation.
func activities(name string, input []byte, attempt int32) ([]byte, *history.Failure) {
	switch name {
	case "Hello":
		return js("Hello, " + unjs[string](input) + "!"), nil
	case "Square":
		n := unjs[int](input)
		return js(n * n), nil
	case "Flaky":
		if attempt < 3 {
			return nil, &history.Failure{Type: "*net.OpError", Message: fmt.Sprintf("connection refused (attempt %d)", attempt)}
		}
		return js("ok"), nil
	case "Escalate", "Work":
		return js("done"), nil
	}
	return nil, &history.Failure{Type: "ActivityNotRegistered", Message: name, NonRetryable: true}
}

// ---- The harness ----

// harness drives one Instance the way the engine does and checks, on every
// step, the invariants of a step and that a fresh Instance given the stored
// history produces the identical result (cursor caching must not change
// anything but Replayed).
type harness struct {
	t       testing.TB
	id      string
	lookup  Lookup
	in      *Instance
	hist    []*history.Event
	now     time.Time
	last    *StepResult
	noFresh bool // skip the fresh-replay comparison (benchmarks, huge cases)

	work   []*history.Message // work items sent and not yet answered
	timers []Outbound         // timers to self not yet fired
}

func newHarness(t testing.TB, id string, l Lookup) *harness {
	h := &harness{t: t, id: id, lookup: l, now: t0}
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	if h.in != nil {
		h.in.Close()
	}
}

func (h *harness) execID() string {
	for _, e := range h.hist {
		if e.Type == history.ExecutionStarted {
			return e.ExecutionID
		}
	}
	return ""
}

// step runs one Step on the cached Instance (creating it from the stored
// history the first time) and records the result.
func (h *harness) step(msgs ...*history.Message) *StepResult {
	h.t.Helper()
	var fresh *StepResult
	if !h.noFresh && h.in != nil {
		fi := NewInstance(h.id, h.lookup, Options{})
		var err error
		fresh, err = fi.Step(slices.Clone(h.hist), msgs, h.now)
		fi.Close()
		if err != nil {
			h.t.Fatalf("fresh Step: %v", err)
		}
		if fresh.Replayed != 0 && fresh.Replayed != len(h.hist) && fresh.Status != StatusFailed {
			h.t.Fatalf("fresh Step replayed %d of %d events", fresh.Replayed, len(h.hist))
		}
	}
	var past []*history.Event
	if h.in == nil {
		h.in = NewInstance(h.id, h.lookup, Options{})
		past = slices.Clone(h.hist)
	}
	res, err := h.in.Step(past, msgs, h.now)
	if err != nil {
		h.t.Fatalf("Step: %v", err)
	}
	if past == nil && res.Replayed != 0 {
		h.t.Fatalf("cached Step replayed %d events, want 0", res.Replayed)
	}
	if fresh != nil {
		if d := diffResults(fresh, res); d != "" {
			h.t.Fatalf("cached and fresh Instances disagree:\n%s", d)
		}
	}
	h.record(res)
	return res
}

// record checks a result's invariants and appends its events to history.
func (h *harness) record(res *StepResult) {
	h.t.Helper()
	if res.ResetHistory {
		h.hist = nil
	}
	if (len(res.NewEvents) == 0) != (res.Status == "") {
		h.t.Fatalf("Status %q with %d new events: want Status \"\" exactly when nothing is appended", res.Status, len(res.NewEvents))
	}
	for i, e := range res.NewEvents {
		if want := int64(len(h.hist) + i); e.Seq != want {
			h.t.Fatalf("new event %d (%s) has Seq %d, want %d", i, e.Type, e.Seq, want)
		}
	}
	if len(res.NewEvents) > 0 {
		if os := res.NewEvents[0]; os.Type != history.OrchestratorStarted || !os.Time.Equal(h.now) {
			h.t.Fatalf("first new event is %s at %v, want OrchestratorStarted at %v", os.Type, os.Time, h.now)
		}
	}
	h.hist = append(h.hist, res.NewEvents...)
	if v := h.in.Version(); v != int64(len(h.hist)) {
		h.t.Fatalf("Version() = %d, history has %d events", v, len(h.hist))
	}
	if res.Done != h.in.Done() {
		h.t.Fatalf("res.Done=%v, Instance.Done()=%v", res.Done, h.in.Done())
	}
	for _, o := range res.Outbound {
		switch {
		case o.WorkItem:
			h.work = append(h.work, &o.Message)
		case o.Message.InstanceID == h.id && o.Message.Event.Type == history.TimerFired:
			h.timers = append(h.timers, o)
		}
	}
	h.last = res
}

func (h *harness) msg(e *history.Event) *history.Message {
	return &history.Message{InstanceID: h.id, ExecutionID: h.execID(), Event: e}
}

func (h *harness) start(name string, input []byte) *StepResult {
	h.t.Helper()
	return h.step(h.startMsg(name, input, "exec-1"))
}

func (h *harness) startMsg(name string, input []byte, execID string) *history.Message {
	return &history.Message{InstanceID: h.id, Event: &history.Event{Type: history.ExecutionStarted, Time: h.now, Name: name, Input: input, ExecutionID: execID}}
}

func (h *harness) completed(taskID int64, out []byte) *history.Message {
	return h.msg(&history.Event{Type: history.TaskCompleted, TaskID: taskID, Input: out})
}

func (h *harness) failed(taskID int64, f *history.Failure) *history.Message {
	return h.msg(&history.Event{Type: history.TaskFailed, TaskID: taskID, Failure: f})
}

func (h *harness) fired(taskID int64) *history.Message {
	return h.msg(&history.Event{Type: history.TimerFired, TaskID: taskID})
}

func (h *harness) raise(name string, input []byte) *history.Message {
	return &history.Message{InstanceID: h.id, Event: &history.Event{Type: history.EventRaised, Name: name, Input: input}}
}

func (h *harness) control(t history.Type, reason string) *history.Message {
	return &history.Message{InstanceID: h.id, Event: &history.Event{Type: t, Input: js(reason)}}
}

// answers runs the activities of every unanswered work item.
func (h *harness) answers(act activityFunc) []*history.Message {
	var msgs []*history.Message
	for _, w := range h.work {
		out, f := act(w.Event.Name, w.Event.Input, w.Event.Attempt)
		e := &history.Event{Type: history.TaskCompleted, TaskID: w.Event.TaskID, Input: out}
		if f != nil {
			e = &history.Event{Type: history.TaskFailed, TaskID: w.Event.TaskID, Failure: f}
		}
		msgs = append(msgs, &history.Message{InstanceID: w.InstanceID, ExecutionID: w.ExecutionID, Event: e})
	}
	h.work = nil
	return msgs
}

// drive plays the activity worker and the timer queue until the instance
// has nothing left to wait for: each round delivers every pending activity
// result in one batch, or, when there is none, fires the earliest timer
// (moving the clock to it).
func (h *harness) drive(act activityFunc) *StepResult {
	h.t.Helper()
	for range 10000 {
		if len(h.work) > 0 {
			h.now = h.now.Add(time.Second)
			h.step(h.answers(act)...)
			continue
		}
		if len(h.timers) == 0 || h.last.Done {
			return h.last
		}
		slices.SortStableFunc(h.timers, func(a, b Outbound) int { return a.VisibleAt.Compare(b.VisibleAt) })
		tm := h.timers[0]
		h.timers = h.timers[1:]
		if tm.VisibleAt.After(h.now) {
			h.now = tm.VisibleAt
		}
		m := tm.Message
		h.step(&m)
	}
	h.t.Fatal("drive: no end after 10000 rounds")
	return nil
}

// ---- Summaries for assertions and diffs ----

// summary is a compact, readable form of an event for table tests.
func summary(e *history.Event) string {
	var b strings.Builder
	b.WriteString(e.Type.String())
	if usesTaskID(e.Type) {
		fmt.Fprintf(&b, "#%d", e.TaskID)
	}
	if e.Name != "" {
		fmt.Fprintf(&b, " %s", e.Name)
	}
	if e.Attempt > 1 {
		fmt.Fprintf(&b, " attempt=%d", e.Attempt)
	}
	if e.Status != "" {
		fmt.Fprintf(&b, " %s", e.Status)
	}
	if len(e.Input) > 0 {
		fmt.Fprintf(&b, " %s", e.Input)
	}
	if e.Failure != nil {
		fmt.Fprintf(&b, " failure=%s", e.Failure.Type)
	}
	return b.String()
}

func summaries(es []*history.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = summary(e)
	}
	return out
}

func outboundSummary(o Outbound) string {
	kind := "control"
	if o.WorkItem {
		kind = "work"
	}
	s := fmt.Sprintf("%s %s -> %s", kind, summary(o.Message.Event), o.Message.InstanceID)
	if o.Message.ExecutionID != "" {
		s += "/" + o.Message.ExecutionID
	}
	if !o.VisibleAt.IsZero() {
		s += " at +" + o.VisibleAt.Sub(t0).String()
	}
	return s
}

func outboundSummaries(os []Outbound) []string {
	out := make([]string, len(os))
	for i, o := range os {
		out[i] = outboundSummary(o)
	}
	return out
}

// diffResults compares two results field by field (Replayed excepted, and
// panic stacks, which name goroutines and addresses).
func diffResults(a, b *StepResult) string {
	var d []string
	cmp := func(field string, x, y any) {
		xs, ys := fmt.Sprintf("%v", x), fmt.Sprintf("%v", y)
		if xs != ys {
			d = append(d, fmt.Sprintf("%s:\n  fresh:  %s\n  cached: %s", field, xs, ys))
		}
	}
	full := func(r *StepResult) (events, outbound []string) {
		for _, e := range r.NewEvents {
			events = append(events, encodeEventJSON(stripStack(e)))
		}
		for _, o := range r.Outbound {
			m := o.Message
			outbound = append(outbound, fmt.Sprintf("work=%v visible=%v %s/%s %s", o.WorkItem, o.VisibleAt, m.InstanceID, m.ExecutionID, encodeEventJSON(stripStack(m.Event))))
		}
		return
	}
	ae, ao := full(a)
	be, bo := full(b)
	cmp("ExecutionID", a.ExecutionID, b.ExecutionID)
	cmp("ResetHistory", a.ResetHistory, b.ResetHistory)
	cmp("NewEvents", strings.Join(ae, "\n          "), strings.Join(be, "\n          "))
	cmp("Outbound", strings.Join(ao, "\n          "), strings.Join(bo, "\n          "))
	cmp("Status", a.Status, b.Status)
	cmp("Name", a.Name, b.Name)
	cmp("Input", string(a.Input), string(b.Input))
	cmp("Output", string(a.Output), string(b.Output))
	cmp("Failure", toJSONString(a.Failure), toJSONString(b.Failure))
	cmp("CustomStatus", string(a.CustomStatus), string(b.CustomStatus))
	cmp("ParentInstanceID", a.ParentInstanceID, b.ParentInstanceID)
	cmp("Done", a.Done, b.Done)
	return strings.Join(d, "\n")
}

func stripStack(e *history.Event) *history.Event {
	if e.Failure == nil || e.Failure.Stack == "" {
		return e
	}
	c := *e
	f := *e.Failure
	f.Stack = "<stack>"
	c.Failure = &f
	return &c
}

func toJSONString(f *history.Failure) string {
	if f == nil {
		return "<nil>"
	}
	j := toJSONFailure(f)
	if j.Stack != "" {
		j.Stack = "<stack>"
	}
	return string(js(j))
}

func wantStrings(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got: %s\nwant: %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}
