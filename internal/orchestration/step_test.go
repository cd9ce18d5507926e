package orchestration

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

// TestStepTable drives Step with hand-built histories and messages and checks
// exactly what is appended and sent.
func TestStepTable(t *testing.T) {
	const id = "inst"
	ev := func(typ history.Type, mod func(*history.Event)) *history.Event {
		e := &history.Event{Type: typ}
		if mod != nil {
			mod(e)
		}
		return e
	}
	// seqHistory is Sequence after its first activity was scheduled
	// (and, with done, completed and the second scheduled).
	seqHistory := func(done bool) []*history.Event {
		h := []*history.Event{
			ev(history.OrchestratorStarted, func(e *history.Event) { e.Time = t0 }),
			ev(history.ExecutionStarted, func(e *history.Event) { e.Name, e.ExecutionID = "Sequence", "exec-1" }),
			ev(history.TaskScheduled, func(e *history.Event) { e.TaskID, e.Name, e.Input, e.Attempt = 0, "Hello", js("Tokyo"), 1 }),
		}
		if done {
			h = append(h,
				ev(history.OrchestratorStarted, func(e *history.Event) { e.Time = t0.Add(time.Second) }),
				ev(history.TaskCompleted, func(e *history.Event) { e.TaskID, e.Input = 0, js("Hello, Tokyo!") }),
				ev(history.TaskScheduled, func(e *history.Event) { e.TaskID, e.Name, e.Input, e.Attempt = 1, "Hello", js("Seattle"), 1 }),
			)
		}
		for i, e := range h {
			e.Seq = int64(i)
		}
		return h
	}
	finished := func() []*history.Event {
		h := seqHistory(false)
		return append(h, &history.Event{Seq: 3, Type: history.ExecutionCompleted, Status: StatusCompleted, Input: js("x")})
	}
	msg := func(exec string, e *history.Event) *history.Message {
		return &history.Message{InstanceID: id, ExecutionID: exec, Event: e}
	}
	start := func(name, exec string) *history.Message {
		return msg("", ev(history.ExecutionStarted, func(e *history.Event) { e.Name, e.ExecutionID, e.Input = name, exec, js(2) }))
	}
	completed := func(exec string, task int64, out []byte) *history.Message {
		return msg(exec, ev(history.TaskCompleted, func(e *history.Event) { e.TaskID, e.Input = task, out }))
	}

	tests := []struct {
		name     string
		past     []*history.Event
		msgs     []*history.Message
		events   []string
		outbound []string
		status   string
		reset    bool
		done     bool
		replayed int
	}{
		{
			name:     "start schedules the first activity",
			msgs:     []*history.Message{start("Sequence", "exec-1")},
			events:   []string{"OrchestratorStarted", "ExecutionStarted Sequence 2", `TaskScheduled#0 Hello "Tokyo"`},
			outbound: []string{`work TaskScheduled#0 Hello "Tokyo" -> inst/exec-1`},
			status:   StatusRunning,
		},
		{
			name:     "completion resumes the code",
			past:     seqHistory(false),
			msgs:     []*history.Message{completed("exec-1", 0, js("Hello, Tokyo!"))},
			events:   []string{"OrchestratorStarted", `TaskCompleted#0 "Hello, Tokyo!"`, `TaskScheduled#1 Hello "Seattle"`},
			outbound: []string{`work TaskScheduled#1 Hello "Seattle" -> inst/exec-1`},
			status:   StatusRunning,
			replayed: 3,
		},
		{
			name:     "completion without execution ID targets the current one",
			past:     seqHistory(false),
			msgs:     []*history.Message{completed("", 0, js("Hello, Tokyo!"))},
			events:   []string{"OrchestratorStarted", `TaskCompleted#0 "Hello, Tokyo!"`, `TaskScheduled#1 Hello "Seattle"`},
			outbound: []string{`work TaskScheduled#1 Hello "Seattle" -> inst/exec-1`},
			status:   StatusRunning,
			replayed: 3,
		},
		{
			name:     "duplicate completion is dropped",
			past:     seqHistory(true),
			msgs:     []*history.Message{completed("exec-1", 0, js("again"))},
			replayed: 6,
		},
		{
			name:     "duplicate in one batch: the first wins",
			past:     seqHistory(false),
			msgs:     []*history.Message{completed("exec-1", 0, js("first")), completed("exec-1", 0, js("second"))},
			events:   []string{"OrchestratorStarted", `TaskCompleted#0 "first"`, `TaskScheduled#1 Hello "Seattle"`},
			outbound: []string{`work TaskScheduled#1 Hello "Seattle" -> inst/exec-1`},
			status:   StatusRunning,
			replayed: 3,
		},
		{
			name:     "completion of a task never scheduled is dropped",
			past:     seqHistory(false),
			msgs:     []*history.Message{completed("exec-1", 7, js("?"))},
			replayed: 3,
		},
		{
			name:     "completion of the wrong kind is dropped",
			past:     seqHistory(false),
			msgs:     []*history.Message{msg("exec-1", ev(history.TimerFired, func(e *history.Event) { e.TaskID = 0 }))},
			replayed: 3,
		},
		{
			name:     "message for another execution is dropped",
			past:     seqHistory(false),
			msgs:     []*history.Message{completed("exec-0", 0, js("stale"))},
			replayed: 3,
		},
		{
			name: "message for an instance without execution is dropped",
			msgs: []*history.Message{completed("", 0, js("?")), msg("", ev(history.EventRaised, func(e *history.Event) { e.Name = "x" }))},
		},
		{
			name:     "a scheduling event is not a message",
			past:     seqHistory(false),
			msgs:     []*history.Message{msg("exec-1", ev(history.TaskScheduled, func(e *history.Event) { e.TaskID, e.Name = 1, "Hello" }))},
			replayed: 3,
		},
		{
			name:     "duplicate ExecutionStarted is dropped",
			past:     seqHistory(false),
			msgs:     []*history.Message{start("Sequence", "exec-1")},
			replayed: 3,
		},
		{
			name:     "ExecutionStarted of a new execution resets history",
			past:     seqHistory(true),
			msgs:     []*history.Message{start("Sequence", "exec-2")},
			events:   []string{"OrchestratorStarted", "ExecutionStarted Sequence 2", `TaskScheduled#0 Hello "Tokyo"`},
			outbound: []string{`work TaskScheduled#0 Hello "Tokyo" -> inst/exec-2`},
			status:   StatusRunning,
			reset:    true,
			replayed: 6,
		},
		{
			name: "ExecutionStarted is applied first in a batch",
			msgs: []*history.Message{
				msg("", ev(history.EventRaised, func(e *history.Event) { e.Name, e.Input = "approve", js("yes") })),
				start("Approval", "exec-1"),
			},
			// The timeout timer was scheduled when the code started waiting,
			// before the event was applied.
			events: []string{"OrchestratorStarted", "ExecutionStarted Approval 2", `EventRaised approve "yes"`,
				"TimerCreated#0", `ExecutionCompleted Completed "yes"`},
			outbound: []string{"control TimerFired#0 -> inst/exec-1 at +2h0m0s"},
			status:   StatusCompleted,
			done:     true,
		},
		{
			name:     "finished history drops messages and runs no code",
			past:     finished(),
			msgs:     []*history.Message{completed("exec-1", 0, js("late")), msg("", ev(history.EventRaised, func(e *history.Event) { e.Name = "x" }))},
			done:     true,
			replayed: 0,
		},
		{
			name:     "finished history restarts on a new execution",
			past:     finished(),
			msgs:     []*history.Message{start("Sequence", "exec-2")},
			events:   []string{"OrchestratorStarted", "ExecutionStarted Sequence 2", `TaskScheduled#0 Hello "Tokyo"`},
			outbound: []string{`work TaskScheduled#0 Hello "Tokyo" -> inst/exec-2`},
			status:   StatusRunning,
			reset:    true,
		},
		{
			name:   "unknown orchestrator fails",
			msgs:   []*history.Message{start("NoSuchThing", "exec-1")},
			events: []string{"OrchestratorStarted", "ExecutionStarted NoSuchThing 2", "ExecutionCompleted Failed failure=OrchestratorNotFound"},
			status: StatusFailed,
			done:   true,
		},
		{
			name:     "timer is sent to self, visible at its time",
			msgs:     []*history.Message{start("Clock", "exec-1")},
			events:   []string{"OrchestratorStarted", "ExecutionStarted Clock 2", "TimerCreated#0"},
			outbound: []string{"control TimerFired#0 -> inst/exec-1 at +1h1m0s"}, // now is t0+1h
			status:   StatusRunning,
		},
		{
			name:   "ExecutionStarted without an execution ID is dropped",
			msgs:   []*history.Message{start("Sequence", "")},
			events: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := NewInstance(id, lookup, Options{})
			defer in.Close()
			res, err := in.Step(tt.past, tt.msgs, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			wantStrings(t, "events", summaries(res.NewEvents), tt.events)
			wantStrings(t, "outbound", outboundSummaries(res.Outbound), tt.outbound)
			if res.Status != tt.status || res.ResetHistory != tt.reset || res.Done != tt.done || res.Replayed != tt.replayed {
				t.Fatalf("status=%q reset=%v done=%v replayed=%d, want %q %v %v %d",
					res.Status, res.ResetHistory, res.Done, res.Replayed, tt.status, tt.reset, tt.done, tt.replayed)
			}
			base := int64(len(tt.past))
			if tt.reset {
				base = 0
			}
			for i, e := range res.NewEvents {
				if e.Seq != base+int64(i) {
					t.Fatalf("event %d has Seq %d, want %d", i, e.Seq, base+int64(i))
				}
			}
			if len(res.NewEvents) > 0 && !res.NewEvents[0].Time.Equal(t0.Add(time.Hour)) {
				t.Fatalf("OrchestratorStarted time %v, want the step's now", res.NewEvents[0].Time)
			}
		})
	}
}

func TestStepMisuse(t *testing.T) {
	in := NewInstance("a", lookup, Options{})
	start := &history.Message{InstanceID: "a", Event: &history.Event{Type: history.ExecutionStarted, Name: "Sequence", ExecutionID: "e"}}
	res, err := in.Step(nil, []*history.Message{start}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Step(res.NewEvents, nil, t0); !errors.Is(err, ErrMisuse) {
		t.Fatalf("history given twice: err = %v, want ErrMisuse", err)
	}
	other := &history.Message{InstanceID: "b", Event: &history.Event{Type: history.EventRaised, Name: "x"}}
	if _, err := in.Step(nil, []*history.Message{other}, t0); !errors.Is(err, ErrMisuse) {
		t.Fatalf("message for another instance: err = %v, want ErrMisuse", err)
	}
	if _, err := in.Step(nil, []*history.Message{{InstanceID: "a"}}, t0); !errors.Is(err, ErrMisuse) {
		t.Fatalf("message without event: err = %v, want ErrMisuse", err)
	}
	bad := NewInstance("a", lookup, Options{})
	defer bad.Close()
	if _, err := bad.Step([]*history.Event{{Seq: 1, Type: history.OrchestratorStarted}}, nil, t0); !errors.Is(err, ErrInvalidHistory) {
		t.Fatalf("history with wrong Seq: err = %v, want ErrInvalidHistory", err)
	}
	in.Close()
	in.Close() // twice is fine
	if _, err := in.Step(nil, nil, t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Step after Close: err = %v, want ErrClosed", err)
	}
}

func TestSequenceToCompletion(t *testing.T) {
	h := newHarness(t, "seq", lookup)
	h.start("Sequence", nil)
	res := h.drive(activities)
	if res.Status != StatusCompleted || string(res.Output) != `["Hello, Tokyo!","Hello, Seattle!","Hello, London!"]` {
		t.Fatalf("status %s output %s", res.Status, res.Output)
	}
	if !res.Done || res.Name != "Sequence" {
		t.Fatalf("done=%v name=%q", res.Done, res.Name)
	}
	// Later messages of the finished execution leave no trace.
	if r := h.step(h.completed(2, js("late"))); len(r.NewEvents) != 0 || !r.Done {
		t.Fatalf("message after completion appended %v", summaries(r.NewEvents))
	}
}

// TestCursorCaching checks that a cached Instance replays nothing, while a
// fresh one on the same stored history replays it all and decides the same
// (the harness compares every result of the two).
func TestCursorCaching(t *testing.T) {
	h := newHarness(t, "cache", lookup)
	h.start("Sequence", nil)
	h.step(h.answers(activities)...)
	stored := len(h.hist)

	msgs := h.answers(activities)
	fresh := NewInstance(h.id, lookup, Options{})
	defer fresh.Close()
	fr, err := fresh.Step(h.hist, msgs, h.now)
	if err != nil {
		t.Fatal(err)
	}
	cached := h.step(msgs...) // also compares with its own fresh replay
	if cached.Replayed != 0 || fr.Replayed != stored {
		t.Fatalf("replayed: cached %d (want 0), fresh %d (want %d)", cached.Replayed, fr.Replayed, stored)
	}
	if d := diffResults(fr, cached); d != "" {
		t.Fatal(d)
	}
	if fresh.Version() != h.in.Version() || fresh.ExecutionID() != h.in.ExecutionID() {
		t.Fatalf("fresh version %d exec %q, cached %d %q", fresh.Version(), fresh.ExecutionID(), h.in.Version(), h.in.ExecutionID())
	}
}

func TestFanIn10000InOneStep(t *testing.T) {
	const n = 10000
	h := newHarness(t, "fan", lookup)
	res := h.start("FanOut", js(n))
	if len(res.Outbound) != n || len(res.NewEvents) != n+2 {
		t.Fatalf("fan-out sent %d work items and appended %d events, want %d and %d", len(res.Outbound), len(res.NewEvents), n, n+2)
	}
	msgs := h.answers(activities)
	// Shuffle-ish order plus a duplicate: completion order must not matter.
	for i, j := 0, len(msgs)-1; i < j; i, j = i+2, j-2 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	msgs = append(msgs, msgs[17])
	res = h.step(msgs...) // the harness also replays all 2n events on a fresh Instance
	want := 0
	for i := range n {
		want += i * i
	}
	if res.Status != StatusCompleted || unjs[int](res.Output) != want {
		t.Fatalf("status %s output %s, want Completed %d", res.Status, res.Output, want)
	}
	if got := len(res.NewEvents); got != n+2 {
		t.Fatalf("appended %d events, want %d completions + OrchestratorStarted + ExecutionCompleted (the duplicate dropped)", got, n+2)
	}
}

func TestRetryWithBackoff(t *testing.T) {
	h := newHarness(t, "retry", lookup)
	h.start("Retry", js("order-1"))
	res := h.drive(activities)
	if res.Status != StatusCompleted || string(res.Output) != `"ok"` {
		t.Fatalf("status %s output %s failure %v", res.Status, res.Output, res.Failure)
	}
	var got []string
	var timers []time.Duration
	var lastOS time.Time
	for _, e := range h.hist {
		switch e.Type {
		case history.OrchestratorStarted:
			lastOS = e.Time
		case history.TaskScheduled, history.TaskFailed, history.TaskCompleted, history.TimerCreated, history.TimerFired:
			got = append(got, summary(e))
		}
		if e.Type == history.TimerCreated {
			timers = append(timers, e.FireAt.Sub(lastOS))
		}
		if e.Type == history.TaskScheduled && e.Timeout != time.Minute {
			t.Fatalf("TaskScheduled#%d has Timeout %v, want 1m", e.TaskID, e.Timeout)
		}
	}
	wantStrings(t, "retry history", got, []string{
		`TaskScheduled#0 Flaky "order-1"`, "TaskFailed#0 failure=*net.OpError", "TimerCreated#1", "TimerFired#1",
		`TaskScheduled#2 Flaky attempt=2 "order-1"`, "TaskFailed#2 failure=*net.OpError", "TimerCreated#3", "TimerFired#3",
		`TaskScheduled#4 Flaky attempt=3 "order-1"`, `TaskCompleted#4 "ok"`,
	})
	if len(timers) != 2 || timers[0] != time.Second || timers[1] != 2*time.Second {
		t.Fatalf("backoff delays %v, want [1s 2s]", timers)
	}
}

func TestRetryStops(t *testing.T) {
	alwaysFails := func(nonRetryable bool) activityFunc {
		return func(name string, _ []byte, attempt int32) ([]byte, *history.Failure) {
			return nil, &history.Failure{Type: "Boom", Message: "attempt " + string(rune('0'+attempt)), NonRetryable: nonRetryable}
		}
	}
	type result struct {
		attempts int
		delays   []time.Duration
	}
	run := func(t *testing.T, p RetryPolicy, act activityFunc) (*StepResult, result) {
		t.Helper()
		h := newHarness(t, "stop", lookupWith(map[string]Func{
			"R": func(ctx *Context) ([]byte, error) {
				return ctx.Await(ctx.CallActivity("A", nil, ActivityOptions{Retry: &p}))
			},
		}))
		h.start("R", nil)
		res := h.drive(act)
		var r result
		var lastOS time.Time
		for _, e := range h.hist {
			switch e.Type {
			case history.OrchestratorStarted:
				lastOS = e.Time
			case history.TaskScheduled:
				r.attempts++
				if e.Attempt != int32(r.attempts) {
					t.Fatalf("attempt %d recorded as %d", r.attempts, e.Attempt)
				}
			case history.TimerCreated:
				r.delays = append(r.delays, e.FireAt.Sub(lastOS))
			}
		}
		return res, r
	}
	t.Run("NonRetryable", func(t *testing.T) {
		res, r := run(t, RetryPolicy{MaxAttempts: 5, FirstInterval: time.Second}, alwaysFails(true))
		if r.attempts != 1 || len(r.delays) != 0 || res.Status != StatusFailed {
			t.Fatalf("attempts %d timers %v status %s: a non-retryable failure must not be retried", r.attempts, r.delays, res.Status)
		}
		if res.Failure.Type != "Boom" || !res.Failure.NonRetryable || !strings.Contains(res.Failure.Message, `activity "A" (task 0) failed`) {
			t.Fatalf("failure %+v", res.Failure)
		}
	})
	t.Run("MaxAttempts and MaxInterval", func(t *testing.T) {
		res, r := run(t, RetryPolicy{MaxAttempts: 4, FirstInterval: time.Second, BackoffCoefficient: 10, MaxInterval: 5 * time.Second}, alwaysFails(false))
		if r.attempts != 4 || res.Status != StatusFailed {
			t.Fatalf("attempts %d status %s, want 4 Failed", r.attempts, res.Status)
		}
		if want := []time.Duration{time.Second, 5 * time.Second, 5 * time.Second}; len(r.delays) != 3 || r.delays[0] != want[0] || r.delays[1] != want[1] || r.delays[2] != want[2] {
			t.Fatalf("delays %v, want %v", r.delays, want)
		}
		if !strings.Contains(res.Failure.Message, "(task 6)") {
			t.Fatalf("failure should name the last attempt's task: %q", res.Failure.Message)
		}
	})
	t.Run("Handle", func(t *testing.T) {
		calls := 0
		p := RetryPolicy{MaxAttempts: 5, FirstInterval: time.Second, Handle: func(f *history.Failure) bool {
			calls++
			return f.Message != "attempt 2"
		}}
		_, r := run(t, p, alwaysFails(false))
		if r.attempts != 2 {
			t.Fatalf("attempts %d, want 2 (Handle refuses the second failure)", r.attempts)
		}
		if calls == 0 {
			t.Fatal("Handle never called")
		}
	})
	t.Run("RetryTimeout", func(t *testing.T) {
		// Delays 1s, 2s, 4s: the harness adds 1s per activity round, so
		// attempt 3 starts at +5s and attempt 4 would start at +10s > 8s.
		_, r := run(t, RetryPolicy{MaxAttempts: 10, FirstInterval: time.Second, BackoffCoefficient: 2, RetryTimeout: 8 * time.Second}, alwaysFails(false))
		if r.attempts != 3 {
			t.Fatalf("attempts %d, want 3", r.attempts)
		}
	})
	t.Run("zero interval retries without timers", func(t *testing.T) {
		_, r := run(t, RetryPolicy{MaxAttempts: 3}, alwaysFails(false))
		if r.attempts != 3 || len(r.delays) != 0 {
			t.Fatalf("attempts %d timers %v, want 3 attempts and no timer", r.attempts, r.delays)
		}
	})
	t.Run("Handle panics", func(t *testing.T) {
		p := RetryPolicy{MaxAttempts: 5, FirstInterval: time.Second, Handle: func(*history.Failure) bool { panic("bad policy") }}
		res, r := run(t, p, alwaysFails(false))
		if r.attempts != 1 || res.Status != StatusFailed {
			t.Fatalf("attempts %d status %s: a panicking Handle means no retry", r.attempts, res.Status)
		}
	})
}

func TestExternalEvents(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		h := newHarness(t, "appr", lookup)
		h.start("Approval", js("doc-1"))
		res := h.drive(activities)
		if res.Status != StatusCompleted || string(res.Output) != `"escalated"` {
			t.Fatalf("status %s output %s", res.Status, res.Output)
		}
		if !h.now.Equal(t0.Add(time.Hour + time.Second)) {
			t.Fatalf("clock at %v: the timeout should have fired after 1h", h.now.Sub(t0))
		}
	})
	t.Run("event before timeout, case-insensitive", func(t *testing.T) {
		h := newHarness(t, "appr", lookup)
		h.start("Approval", nil)
		res := h.step(h.raise("APPROVE", js("yes")))
		if res.Status != StatusCompleted || string(res.Output) != `"yes"` {
			t.Fatalf("status %s output %s", res.Status, res.Output)
		}
		// The timeout timer fires later: the execution is over, it is dropped.
		if r := h.step(h.fired(0)); len(r.NewEvents) != 0 {
			t.Fatalf("late timer appended %v", summaries(r.NewEvents))
		}
	})
	t.Run("buffered FIFO per name", func(t *testing.T) {
		h := newHarness(t, "fifo", lookupWith(map[string]Func{
			"Collect": func(ctx *Context) ([]byte, error) {
				if _, err := ctx.Await(ctx.CreateTimer(ctx.CurrentTime().Add(time.Minute))); err != nil {
					return nil, err
				}
				var got []string
				for _, name := range []string{"b", "a", "a", "B"} {
					v, err := ctx.Await(ctx.WaitForExternalEvent(name, -1))
					if err != nil {
						return nil, err
					}
					got = append(got, name+"="+unjs[string](v))
				}
				return js(got), nil
			},
		}))
		h.start("Collect", nil)
		h.step(h.raise("a", js("a1")), h.raise("b", js("b1")), h.raise("A", js("a2")))
		h.step(h.fired(0))
		res := h.step(h.raise("b", js("b2")))
		if string(res.Output) != `["b=b1","a=a1","a=a2","B=b2"]` {
			t.Fatalf("output %s", res.Output)
		}
	})
	t.Run("zero timeout", func(t *testing.T) {
		h := newHarness(t, "zero", lookupWith(map[string]Func{
			"Z": func(ctx *Context) ([]byte, error) {
				_, err := ctx.Await(ctx.WaitForExternalEvent("x", 0))
				return js(errors.Is(err, ErrEventTimeout)), nil
			},
		}))
		res := h.start("Z", nil)
		if string(res.Output) != "true" {
			t.Fatalf("zero timeout with nothing buffered: output %s, want true", res.Output)
		}
	})
}

func TestTerminate(t *testing.T) {
	t.Run("recursive", func(t *testing.T) {
		h := newHarness(t, "par", lookup)
		res := h.start("Parent", nil)
		wantStrings(t, "outbound", outboundSummaries(res.Outbound), []string{
			"control ExecutionStarted Sequence -> par:exec-1:0/" + childExecutionID("par", "exec-1", 0),
		})
		term := h.control(history.ExecutionTerminated, "enough")
		term.Event.Recurse = true
		res = h.step(term)
		wantStrings(t, "events", summaries(res.NewEvents), []string{"OrchestratorStarted", `ExecutionTerminated "enough"`})
		wantStrings(t, "outbound", outboundSummaries(res.Outbound), []string{`control ExecutionTerminated "enough" -> par:exec-1:0`})
		if res.Status != StatusTerminated || string(res.Output) != `"enough"` || !res.Done {
			t.Fatalf("status %s output %s done %v", res.Status, res.Output, res.Done)
		}
		if !res.Outbound[0].Message.Event.Recurse {
			t.Fatal("children must be terminated recursively too")
		}
		// The child's late completion is dropped.
		done := h.msg(&history.Event{Type: history.SubOrchestrationCompleted, TaskID: 0, Input: js("x")})
		if r := h.step(done); len(r.NewEvents) != 0 {
			t.Fatalf("completion after termination appended %v", summaries(r.NewEvents))
		}
	})
	t.Run("not recursive, child tells its parent", func(t *testing.T) {
		h := newHarness(t, "child", lookup)
		start := h.startMsg("Sequence", nil, "c1")
		start.Event.Parent = &history.Parent{InstanceID: "par", ExecutionID: "p1", Name: "Parent", TaskID: 4}
		h.step(start)
		res := h.step(h.control(history.ExecutionTerminated, "stop"))
		wantStrings(t, "outbound", outboundSummaries(res.Outbound), []string{"control SubOrchestrationFailed#4 failure=Terminated -> par/p1"})
		if res.ParentInstanceID != "par" {
			t.Fatalf("ParentInstanceID %q", res.ParentInstanceID)
		}
	})
	t.Run("with Status Failed (poison)", func(t *testing.T) {
		h := newHarness(t, "poison", lookup)
		h.start("Sequence", nil)
		m := h.control(history.ExecutionTerminated, "message m1 was received 11 times")
		m.Event.Status = StatusFailed
		res := h.step(m)
		if res.Status != StatusFailed || res.Failure == nil || res.Failure.Message != "message m1 was received 11 times" {
			t.Fatalf("status %s failure %+v", res.Status, res.Failure)
		}
	})
	t.Run("while suspended", func(t *testing.T) {
		h := newHarness(t, "susp-term", lookup)
		h.start("Sequence", nil)
		h.step(h.control(history.ExecutionSuspended, "pause"))
		if res := h.step(h.control(history.ExecutionTerminated, "stop")); res.Status != StatusTerminated {
			t.Fatalf("status %s", res.Status)
		}
	})
}

func TestSuspendResume(t *testing.T) {
	h := newHarness(t, "susp", lookup)
	h.start("Sequence", nil)
	res := h.step(h.control(history.ExecutionSuspended, "maintenance"))
	if res.Status != StatusSuspended {
		t.Fatalf("status %s", res.Status)
	}
	if r := h.step(h.control(history.ExecutionSuspended, "again")); len(r.NewEvents) != 0 {
		t.Fatal("a second suspend must be dropped")
	}
	// The completion is recorded, but the code does not see it yet.
	res = h.step(h.answers(activities)...)
	wantStrings(t, "while suspended", summaries(res.NewEvents), []string{"OrchestratorStarted", `TaskCompleted#0 "Hello, Tokyo!"`})
	if res.Status != StatusSuspended || len(res.Outbound) != 0 {
		t.Fatalf("status %s outbound %v", res.Status, outboundSummaries(res.Outbound))
	}
	if r := h.step(h.completed(0, js("dup"))); len(r.NewEvents) != 0 {
		t.Fatal("a duplicate of a held completion must be dropped")
	}
	res = h.step(h.control(history.ExecutionResumed, "go"))
	wantStrings(t, "resumed", summaries(res.NewEvents), []string{"OrchestratorStarted", `ExecutionResumed "go"`, `TaskScheduled#1 Hello "Seattle"`})
	if res.Status != StatusRunning {
		t.Fatalf("status %s", res.Status)
	}
	if r := h.step(h.control(history.ExecutionResumed, "again")); len(r.NewEvents) != 0 {
		t.Fatal("resume of a running instance must be dropped")
	}
	if res = h.drive(activities); res.Status != StatusCompleted {
		t.Fatalf("status %s", res.Status)
	}
}

func TestContinueAsNew(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(map[bool]string{true: "keep events", false: "drop events"}[keep], func(t *testing.T) {
			h := newHarness(t, "ctr", lookupWith(map[string]Func{
				"C": func(ctx *Context) ([]byte, error) {
					n := unjs[int](ctx.Input())
					b, _ := ctx.Await(ctx.WaitForExternalEvent("add", -1))
					ctx.ContinueAsNew(js(n+unjs[int](b)), keep)
					return nil, nil
				},
			}))
			start := h.startMsg("C", js(0), "exec-1")
			start.Event.Parent = &history.Parent{InstanceID: "p", ExecutionID: "pe", TaskID: 3}
			h.step(start)
			res := h.step(h.raise("add", js(1)), h.raise("add", js(2)), h.raise("other", js(9)), h.raise("ADD", js(3)))
			next := continueAsNewExecutionID("ctr", "exec-1")
			wantStrings(t, "events", summaries(res.NewEvents), []string{"OrchestratorStarted", `EventRaised add 1`, "ExecutionCompleted ContinuedAsNew 1"})
			want := []string{"control ExecutionStarted C 1 -> ctr/" + next}
			if keep {
				// Events are applied one by one: the code returns on the
				// first, the rest are carried over in arrival order.
				want = append(want, "control EventRaised add 2 -> ctr/"+next, "control EventRaised other 9 -> ctr/"+next, "control EventRaised ADD 3 -> ctr/"+next)
			}
			wantStrings(t, "outbound", outboundSummaries(res.Outbound), want)
			if res.Status != StatusContinuedAsNew || !res.Done {
				t.Fatalf("status %s done %v", res.Status, res.Done)
			}
			if p := res.Outbound[0].Message.Event.Parent; p == nil || p.InstanceID != "p" || p.TaskID != 3 {
				t.Fatalf("the new execution must keep the parent, got %+v", p)
			}
			// The new execution starts on the same Instance: history reset.
			m := res.Outbound[0].Message
			res = h.step(&m)
			if !res.ResetHistory || res.ExecutionID != next || res.Status != StatusRunning {
				t.Fatalf("reset %v exec %q status %s", res.ResetHistory, res.ExecutionID, res.Status)
			}
		})
	}
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("buffered events, keep=%v", keep), func(t *testing.T) {
			h := newHarness(t, "ctr3", lookupWith(map[string]Func{
				"C": func(ctx *Context) ([]byte, error) {
					// Events raised during the timer are buffered.
					if _, err := ctx.Await(ctx.CreateTimer(ctx.CurrentTime().Add(time.Minute))); err != nil {
						return nil, err
					}
					b, _ := ctx.Await(ctx.WaitForExternalEvent("add", -1))
					ctx.ContinueAsNew(b, keep)
					return nil, nil
				},
			}))
			h.start("C", nil)
			h.step(h.raise("add", js(1)), h.raise("other", js(9)), h.raise("Add", js(2)))
			res := h.step(h.fired(0))
			next := continueAsNewExecutionID("ctr3", "exec-1")
			want := []string{"control ExecutionStarted C 1 -> ctr3/" + next}
			if keep {
				want = append(want, "control EventRaised other 9 -> ctr3/"+next, "control EventRaised Add 2 -> ctr3/"+next)
			}
			wantStrings(t, "outbound", outboundSummaries(res.Outbound), want)
		})
	}
	t.Run("buffered events carried", func(t *testing.T) {
		h := newHarness(t, "ctr2", lookup)
		// Events raised before the code waits stay buffered; Counter
		// consumes one per execution and carries the rest.
		h.step(h.startMsg("Counter", js(0), "exec-1"), h.raise("add", js(1)), h.raise("add", js(1)), h.raise("add", js(1)))
		for i := 0; i < 5 && !(h.last.Status == StatusCompleted); i++ {
			var msgs []*history.Message
			for _, o := range h.last.Outbound {
				m := o.Message
				msgs = append(msgs, &m)
			}
			h.step(msgs...)
		}
		if h.last.Status != StatusCompleted || string(h.last.Output) != "3" {
			t.Fatalf("status %s output %s, want Completed 3", h.last.Status, h.last.Output)
		}
	})
}

func TestSubOrchestration(t *testing.T) {
	h := newHarness(t, "par", lookup)
	res := h.start("Parent", nil)
	child := res.Outbound[0].Message
	if child.Event.Parent == nil || child.Event.Parent.TaskID != 0 || child.Event.Parent.ExecutionID != "exec-1" || child.Event.Parent.InstanceID != "par" {
		t.Fatalf("child start %+v", child.Event)
	}

	// Run the child in its own harness; its completion goes to the parent.
	ch := newHarness(t, child.InstanceID, lookup)
	ch.step(&child)
	cres := ch.drive(activities)
	reply := cres.Outbound[len(cres.Outbound)-1]
	if got := outboundSummary(reply); got != `control SubOrchestrationCompleted#0 ["Hello, Tokyo!","Hello, Seattle!","Hello, London!"] -> par/exec-1` {
		t.Fatalf("child reply %s", got)
	}
	res = h.step(&reply.Message)
	if res.Status != StatusCompleted {
		t.Fatalf("parent status %s", res.Status)
	}
	wantStrings(t, "parent events", summaries(res.NewEvents)[2:3], []string{`EventSent#1 ChildDone ["Hello, Tokyo!","Hello, Seattle!","Hello, London!"]`})
	wantStrings(t, "parent outbound", outboundSummaries(res.Outbound), []string{`control EventRaised ChildDone ["Hello, Tokyo!","Hello, Seattle!","Hello, London!"] -> observer`})

	t.Run("failure", func(t *testing.T) {
		h := newHarness(t, "par2", lookup)
		h.start("Parent", nil)
		res := h.step(h.msg(&history.Event{Type: history.SubOrchestrationFailed, TaskID: 0, Failure: &history.Failure{Type: "Boom", Message: "child broke"}}))
		if res.Status != StatusFailed || res.Failure.Type != "Boom" || !strings.Contains(res.Failure.Message, `suborchestration "Sequence" (task 0) failed: Boom: child broke`) {
			t.Fatalf("status %s failure %+v", res.Status, res.Failure)
		}
	})
	t.Run("retry makes new children", func(t *testing.T) {
		h := newHarness(t, "par3", lookupWith(map[string]Func{
			"P": func(ctx *Context) ([]byte, error) {
				return ctx.Await(ctx.CallSubOrchestrator("Sequence", "", nil, SubOrchestratorOptions{Retry: &RetryPolicy{MaxAttempts: 2, FirstInterval: time.Second}}))
			},
		}))
		h.start("P", nil)
		h.step(h.msg(&history.Event{Type: history.SubOrchestrationFailed, TaskID: 0, Failure: &history.Failure{Message: "x"}}))
		res := h.step(h.fired(1))
		wantStrings(t, "second attempt", outboundSummaries(res.Outbound), []string{
			"control ExecutionStarted Sequence -> par3:exec-1:2/" + childExecutionID("par3", "exec-1", 2),
		})
		if res.NewEvents[2].Attempt != 2 {
			t.Fatalf("attempt %d", res.NewEvents[2].Attempt)
		}
	})
}

func TestFailures(t *testing.T) {
	t.Run("panic", func(t *testing.T) {
		h := newHarness(t, "p", lookupWith(map[string]Func{
			"Panics": func(ctx *Context) ([]byte, error) {
				_, _ = ctx.Await(ctx.CreateTimer(ctx.CurrentTime()))
				var m map[string]int
				m["boom"]++ // a nil-map write: a runtime error
				return nil, nil
			},
		}))
		h.start("Panics", nil)
		res := h.step(h.fired(0))
		f := res.Failure
		if res.Status != StatusFailed || f.Type != FailureTypePanic || !strings.Contains(f.Message, "assignment to entry in nil map") {
			t.Fatalf("status %s failure %+v", res.Status, f)
		}
		if !strings.Contains(f.Stack, "step_test.go") {
			t.Fatalf("stack does not show the panicking code:\n%s", f.Stack)
		}
		if f.Cause == nil || f.Cause.Type != "runtime.assignmentError" && !strings.Contains(f.Cause.Type, "runtime.") {
			t.Fatalf("cause %+v", f.Cause)
		}
	})
	t.Run("error chain", func(t *testing.T) {
		h := newHarness(t, "e", lookup)
		h.start("Sequence", nil)
		res := h.step(h.failed(0, &history.Failure{Type: "*net.OpError", Message: "refused", Stack: "at x", Cause: &history.Failure{Message: "syscall"}}))
		f := res.Failure
		if f.Type != "*fmt.wrapError" || !strings.HasPrefix(f.Message, "greeting Tokyo: activity \"Hello\" (task 0) failed") {
			t.Fatalf("top failure %+v", f)
		}
		if f.Cause == nil || f.Cause.Type != "*net.OpError" || f.Cause.Stack != "at x" || f.Cause.Cause == nil || f.Cause.Cause.Message != "syscall" {
			t.Fatalf("the activity's failure and its cause must be kept: %s", toJSONString(f))
		}
	})
	t.Run("runtime.Goexit by the code", func(t *testing.T) {
		h := newHarness(t, "g", lookupWith(map[string]Func{
			"Exits": func(ctx *Context) ([]byte, error) { runtimeGoexitForTest(); return nil, nil },
		}))
		res := h.start("Exits", nil)
		if res.Status != StatusFailed || !strings.Contains(res.Failure.Message, "runtime.Goexit") {
			t.Fatalf("status %s failure %+v", res.Status, res.Failure)
		}
	})
}

type nonRetryableErr struct{ error }

func (nonRetryableErr) NonRetryable() bool { return true }

func TestFailureFromError(t *testing.T) {
	tf := &TaskFailedError{Kind: KindActivity, Name: "A", TaskID: 3, Failure: &history.Failure{Type: "X", Message: "m", NonRetryable: true}}
	var target *TaskFailedError
	wrapped := errors.Join(errors.New("ctx"), tf)
	if !errors.As(wrapped, &target) {
		t.Fatal("TaskFailedError must work with errors.As")
	}
	var hf *history.Failure
	if !errors.As(tf, &hf) || hf.Type != "X" {
		t.Fatal("TaskFailedError must unwrap to its *history.Failure")
	}
	f := FailureFromError(tf)
	if f.Type != "X" || f.Message != `activity "A" (task 3) failed: X: m` || !f.NonRetryable {
		t.Fatalf("%+v", f)
	}
	f = FailureFromError(nonRetryableErr{errors.New("bad input")})
	if !f.NonRetryable || f.Type != "orchestration.nonRetryableErr" {
		t.Fatalf("%+v", f)
	}
	f = FailureFromError(errors.New("plain"))
	if f.Type != "*errors.errorString" || f.Message != "plain" || f.Cause != nil {
		t.Fatalf("%+v", f)
	}
}

func TestDeterministicContext(t *testing.T) {
	h := newHarness(t, "clk", lookup)
	if res := h.start("Clock", nil); string(res.CustomStatus) != `"waiting"` {
		t.Fatalf("custom status %q", res.CustomStatus)
	}
	h.now = h.now.Add(90 * time.Second)
	res := h.step(h.fired(0))
	out := unjs[[]string](res.Output)
	if out[0] != t0.Format(time.RFC3339Nano) || out[1] != t0.Add(90*time.Second).Format(time.RFC3339Nano) {
		t.Fatalf("CurrentTime %v, want the history times", out[:2])
	}
	if out[2] == out[3] || out[2] != guidID("clk", "exec-1", 0) {
		t.Fatalf("GUIDs %v", out[2:])
	}
}

func TestLoggerSilentWhileReplaying(t *testing.T) {
	var rec recorder
	l := lookupWith(map[string]Func{
		"Logs": func(ctx *Context) ([]byte, error) {
			for i := 0; ; i++ {
				ctx.Logger().Info("step", "i", i, "replaying", ctx.IsReplaying())
				if _, err := ctx.Await(ctx.CreateTimer(ctx.CurrentTime())); err != nil {
					return nil, err
				}
			}
		},
	})
	var hist []*history.Event
	in := NewInstance("log", l, Options{Logger: newRecorderLogger(&rec)})
	res, _ := in.Step(nil, []*history.Message{{InstanceID: "log", Event: &history.Event{Type: history.ExecutionStarted, Name: "Logs", ExecutionID: "e"}}}, t0)
	hist = append(hist, res.NewEvents...)
	res, _ = in.Step(nil, []*history.Message{{InstanceID: "log", Event: &history.Event{Type: history.TimerFired, TaskID: 0}}}, t0)
	hist = append(hist, res.NewEvents...)
	in.Close()
	if got := rec.lines(); len(got) != 2 || strings.Contains(strings.Join(got, ""), "replaying=true") {
		t.Fatalf("live run logged %q", got)
	}
	// A fresh replay of both steps plus one new event logs only the new line.
	rec.reset()
	fresh := NewInstance("log", l, Options{Logger: newRecorderLogger(&rec)})
	defer fresh.Close()
	if _, err := fresh.Step(hist, []*history.Message{{InstanceID: "log", Event: &history.Event{Type: history.TimerFired, TaskID: 1}}}, t0); err != nil {
		t.Fatal(err)
	}
	if got := rec.lines(); len(got) != 1 || !strings.Contains(got[0], "i=2") || !strings.Contains(got[0], "replaying=false") || !strings.Contains(got[0], "instanceID=log") {
		t.Fatalf("replay logged %q, want only the new line", got)
	}
}

func TestWhenAny(t *testing.T) {
	h := newHarness(t, "any", lookupWith(map[string]Func{
		"Race": func(ctx *Context) ([]byte, error) {
			a := ctx.CallActivity("Work", js("a"), ActivityOptions{})
			b := ctx.CallActivity("Work", js("b"), ActivityOptions{})
			tm := ctx.CreateTimer(ctx.CurrentTime().Add(time.Minute))
			w := ctx.WhenAny(a, b, tm)
			if _, err := ctx.Await(w); err != nil {
				return nil, err
			}
			// The loser completing later must not change the winner.
			if _, err := ctx.Await(a); err != nil {
				return nil, err
			}
			// Already-done futures: the first in argument order wins.
			w2 := ctx.WhenAny(tm, b, a)
			_, _ = ctx.Await(w2)
			return js([]int{w.Winner(), w2.Winner(), a.Winner()}), nil
		},
	}))
	h.start("Race", nil)
	res := h.step(h.completed(1, js("b")), h.completed(0, js("a")))
	if string(res.Output) != "[1,1,-1]" {
		t.Fatalf("winners %s, want [1,1,-1]", res.Output)
	}
}

func TestSizeBytes(t *testing.T) {
	h := newHarness(t, "size", lookup)
	h.start("FanOut", js(1000))
	big := h.in.SizeBytes()
	h.step(h.answers(activities)...)
	small := h.in.SizeBytes()
	if big < 1000*taskOverhead || small >= big/10 {
		t.Fatalf("SizeBytes with 1000 pending tasks %d, after completion %d", big, small)
	}
}

func TestNonDeterminismFailsTowardsParent(t *testing.T) {
	past := []*history.Event{
		{Seq: 0, Type: history.OrchestratorStarted, Time: t0},
		{Seq: 1, Type: history.ExecutionStarted, Name: "Sequence", ExecutionID: "c",
			Parent: &history.Parent{InstanceID: "p", ExecutionID: "pe", Name: "Parent", TaskID: 9}},
		{Seq: 2, Type: history.TaskScheduled, TaskID: 0, Name: "Renamed"},
	}
	in := NewInstance("child", lookup, Options{})
	defer in.Close()
	// The batch's messages are dropped: the execution failed during replay.
	res, err := in.Step(past, []*history.Message{{InstanceID: "child", Event: &history.Event{Type: history.TaskCompleted, TaskID: 0}}}, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "events", summaries(res.NewEvents), []string{"OrchestratorStarted", "ExecutionCompleted Failed failure=NonDeterminismError"})
	wantStrings(t, "outbound", outboundSummaries(res.Outbound), []string{"control SubOrchestrationFailed#9 failure=NonDeterminismError -> p/pe"})
	if res.NewEvents[0].Seq != 3 || res.Replayed != 3 {
		t.Fatalf("Seq %d replayed %d", res.NewEvents[0].Seq, res.Replayed)
	}
}

func TestWhenAllFirstFailureInArgumentOrder(t *testing.T) {
	h := newHarness(t, "all", lookupWith(map[string]Func{
		"All": func(ctx *Context) ([]byte, error) {
			fs := []*Future{
				ctx.CallActivity("A", nil, ActivityOptions{}),
				ctx.CallActivity("B", nil, ActivityOptions{}),
				ctx.CallActivity("C", nil, ActivityOptions{}),
			}
			all := ctx.WhenAll(fs...)
			_, err := ctx.Await(all)
			var tf *TaskFailedError
			if !errors.As(err, &tf) {
				return nil, errors.New("no TaskFailedError")
			}
			return js([]any{tf.Name, fs[1].Done()}), nil
		},
	}))
	h.start("All", nil)
	// C fails first, then B completes; WhenAll is not done until A is.
	res := h.step(h.failed(2, &history.Failure{Message: "c"}), h.completed(1, nil))
	if res.Status != StatusRunning {
		t.Fatalf("WhenAll completed before all its futures: %s", res.Status)
	}
	res = h.step(h.failed(0, &history.Failure{Message: "a"}))
	if string(res.Output) != `["A",true]` {
		t.Fatalf("output %s, want the first failure in argument order (A)", res.Output)
	}
}
