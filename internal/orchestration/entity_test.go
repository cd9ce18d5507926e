package orchestration

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

const (
	entA = "@counter@a"
	entB = "@counter@b"
	entX = "@acct@x"
	entY = "@acct@y"
	entZ = "@acct@z"
)

// ---- Helpers ----

func (h *harness) entityDone(taskID int64, out []byte) *history.Message {
	return h.msg(&history.Event{Type: history.EntityOperationCompleted, TaskID: taskID, Input: out})
}

func (h *harness) entityFailed(taskID int64, f *history.Failure) *history.Message {
	return h.msg(&history.Event{Type: history.EntityOperationFailed, TaskID: taskID, Failure: f})
}

func (h *harness) grant(taskID int64, lockID string, ids ...string) *history.Message {
	return h.msg(&history.Event{Type: history.EntityLockGranted, TaskID: taskID, Name: lockID, Input: js(ids)})
}

// lockOf is the lock ID of the section requested with TaskID taskID by the
// harness's first execution.
func (h *harness) lockOf(taskID int64) string { return entityLockID(h.id, "exec-1", taskID) }

// entityEvent is summary plus the fields entity events add.
func entityEvent(e *history.Event) string {
	s := summary(e)
	if e.InstanceID != "" {
		s += " on " + e.InstanceID
	}
	if !e.FireAt.IsZero() {
		s += " fireAt=+" + e.FireAt.Sub(t0).String()
	}
	return s
}

func entityEvents(es []*history.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = entityEvent(e)
	}
	return out
}

// entityMsg shows every field of a message to an entity.
func entityMsg(o Outbound) string {
	m, e := o.Message, o.Message.Event
	s := fmt.Sprintf("%s -> %s", e.Type, m.InstanceID)
	if m.ExecutionID != "" {
		s += "/" + m.ExecutionID
	}
	if e.TaskID != 0 || e.Type == history.EntityOperationCalled || e.Type == history.EntityLockRequested {
		s += fmt.Sprintf(" task=%d", e.TaskID)
	}
	if e.Name != "" {
		s += " name=" + e.Name
	}
	if len(e.Input) > 0 {
		s += " input=" + string(e.Input)
	}
	s += fmt.Sprintf(" from=%s/%s seq=%d", e.InstanceID, e.ExecutionID, e.Seq)
	if p := e.Parent; p != nil {
		s += fmt.Sprintf(" parent=%s/%s#%d", p.InstanceID, p.ExecutionID, p.TaskID)
	}
	if !o.VisibleAt.IsZero() {
		s += " at=+" + o.VisibleAt.Sub(t0).String()
	}
	if o.WorkItem {
		s += " work"
	}
	return s
}

func entityMsgs(t testing.TB, res *StepResult, now time.Time) []string {
	t.Helper()
	out := make([]string, len(res.Outbound))
	for i, o := range res.Outbound {
		if !o.Message.Event.Time.Equal(now) {
			t.Fatalf("message %d (%s) has Time %v, want the step's now %v", i, o.Message.Event.Type, o.Message.Event.Time, now)
		}
		out[i] = entityMsg(o)
	}
	return out
}

// released lists the releases of a lock ID a result sends, as
// "entity from=instance/execution seq=n".
func released(res *StepResult, lockID string) []string {
	var out []string
	for _, o := range res.Outbound {
		if e := o.Message.Event; e.Type == history.EntityLockReleased && e.Name == lockID {
			out = append(out, fmt.Sprintf("%s from=%s/%s seq=%d", o.Message.InstanceID, e.InstanceID, e.ExecutionID, e.Seq))
		}
	}
	return out
}

func releases(execID string, seq int64, ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = fmt.Sprintf("%s from=inst/%s seq=%d", id, execID, seq)
	}
	return out
}

func wantDone(t testing.TB, res *StepResult, status string) {
	t.Helper()
	if res.Status != status || !res.Done {
		t.Fatalf("status %q done %v failure %v, want %s and done", res.Status, res.Done, res.Failure, status)
	}
}

// ---- Signal, call, lock, unlock ----

func TestEntityActions(t *testing.T) {
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"E": func(ctx *Context) ([]byte, error) {
			ctx.SignalEntity(entA, "add", js(1), time.Time{})
			ctx.SignalEntity(entB, "add", js(2), ctx.CurrentTime().Add(time.Hour))
			v, err := ctx.Await(ctx.CallEntity(entA, "get", nil))
			if err != nil {
				return nil, err
			}
			// Unsorted, with a repeat: sorted and de-duplicated.
			if _, err := ctx.Await(ctx.LockEntities(entY, entX, entY)); err != nil {
				return nil, err
			}
			ids, in := ctx.InCriticalSection()
			ctx.SignalEntity(entA, "ping", nil, time.Time{}) // anything may be signalled
			b, err := ctx.Await(ctx.CallEntity(entX, "balance", nil))
			if err != nil {
				return nil, err
			}
			ctx.UnlockEntities()
			_, after := ctx.InCriticalSection()
			ctx.UnlockEntities() // no section: nothing
			return js([]any{unjs[int](v), ids, in, unjs[int](b), after}), nil
		},
	}))
	res := h.start("E", nil)
	wantStrings(t, "start events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", "ExecutionStarted E",
		"EntityOperationSignaled#0 add 1 on @counter@a",
		"EntityOperationSignaled#1 add 2 on @counter@b fireAt=+1h0m0s",
		"EntityOperationCalled#2 get on @counter@a",
	})
	wantStrings(t, "start messages", entityMsgs(t, res, h.now), []string{
		"EntityOperationSignaled -> @counter@a name=add input=1 from=inst/exec-1 seq=1",
		// Scheduled: delayed, and not sequenced.
		"EntityOperationSignaled -> @counter@b name=add input=2 from=inst/exec-1 seq=0 at=+1h0m0s",
		"EntityOperationCalled -> @counter@a task=2 name=get from=inst/exec-1 seq=3",
	})

	h.now = h.now.Add(time.Second)
	res = h.step(h.entityDone(2, js(7)))
	lk := h.lockOf(3)
	wantStrings(t, "lock events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", "EntityOperationCompleted#2 7",
		`EntityLockRequested#3 ` + lk + ` ["@acct@x","@acct@y"]`,
	})
	// One request, to the first entity; the entities forward it.
	wantStrings(t, "lock messages", entityMsgs(t, res, h.now), []string{
		`EntityLockRequested -> @acct@x task=3 name=` + lk + ` input=["@acct@x","@acct@y"] from=inst/exec-1 seq=4 parent=inst/exec-1#3`,
	})

	h.now = h.now.Add(time.Second)
	res = h.step(h.grant(3, lk, entX, entY))
	wantStrings(t, "granted events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", `EntityLockGranted#3 ` + lk + ` ["@acct@x","@acct@y"]`,
		"EntityOperationSignaled#4 ping on @counter@a",
		"EntityOperationCalled#5 balance on @acct@x",
	})
	wantStrings(t, "granted messages", entityMsgs(t, res, h.now), []string{
		"EntityOperationSignaled -> @counter@a name=ping from=inst/exec-1 seq=5",
		"EntityOperationCalled -> @acct@x task=5 name=balance from=inst/exec-1 seq=6",
	})

	h.now = h.now.Add(time.Second)
	res = h.step(h.entityDone(5, js(100)))
	wantStrings(t, "unlock events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", "EntityOperationCompleted#5 100",
		`EntityLockReleased#6 ` + lk + ` ["@acct@x","@acct@y"]`,
		`ExecutionCompleted Completed [7,["@acct@x","@acct@y"],true,100,false]`,
	})
	// One release per entity; none again for the end: the section is over.
	wantStrings(t, "unlock messages", entityMsgs(t, res, h.now), []string{
		"EntityLockReleased -> @acct@x name=" + lk + " from=inst/exec-1 seq=7",
		"EntityLockReleased -> @acct@y name=" + lk + " from=inst/exec-1 seq=7",
	})
	wantDone(t, res, StatusCompleted)
}

func TestEntityScheduledSignalInThePast(t *testing.T) {
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"S": func(ctx *Context) ([]byte, error) {
			ctx.SignalEntity(entA, "add", nil, ctx.CurrentTime().Add(-time.Minute))
			return nil, nil
		},
	}))
	res := h.start("S", nil)
	// Not delayed (already due) but still unsequenced: it was scheduled.
	wantStrings(t, "messages", entityMsgs(t, res, h.now), []string{"EntityOperationSignaled -> @counter@a name=add from=inst/exec-1 seq=0"})
	if fa := res.NewEvents[2].FireAt; !fa.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("FireAt %v", fa)
	}
}

func TestEntityCallResults(t *testing.T) {
	l := lookupWith(map[string]Func{
		"Call": func(ctx *Context) ([]byte, error) {
			v, err := ctx.Await(ctx.CallEntity(entA, "add", js(5)))
			var tf *TaskFailedError
			if errors.As(err, &tf) {
				return js([]any{tf.Kind, tf.Name, tf.Entity, tf.TaskID, tf.Failure.Type, tf.Failure.Message, err.Error()}), nil
			}
			if err != nil {
				return nil, err
			}
			return v, nil
		},
	})
	t.Run("completed", func(t *testing.T) {
		h := newHarness(t, "inst", l)
		h.start("Call", nil)
		res := h.step(h.entityDone(0, js(42)))
		wantDone(t, res, StatusCompleted)
		if string(res.Output) != "42" {
			t.Fatalf("output %s", res.Output)
		}
		// Replaying the whole history on a fresh Instance gives the same.
		fresh := NewInstance("inst", l, Options{})
		defer fresh.Close()
		fr, err := fresh.Step(h.hist[:len(h.hist)-1], nil, h.now)
		if err != nil {
			t.Fatal(err)
		}
		if fr.Status != StatusCompleted || string(fr.Output) != "42" || fr.Replayed != len(h.hist)-1 {
			t.Fatalf("fresh replay: status %s output %s replayed %d", fr.Status, fr.Output, fr.Replayed)
		}
	})
	t.Run("failed", func(t *testing.T) {
		h := newHarness(t, "inst", l)
		h.start("Call", nil)
		h.now = h.now.Add(time.Second)
		res := h.step(h.entityFailed(0, &history.Failure{Type: "Overflow", Message: "too big"}))
		wantDone(t, res, StatusCompleted)
		want := `["entity","add","@counter@a",0,"Overflow","too big","entity \"add\" on \"@counter@a\" (task 0) failed: Overflow: too big"]`
		if string(res.Output) != want {
			t.Fatalf("output %s\n  want %s", res.Output, want)
		}
		wantStrings(t, "events", summaries(res.NewEvents), []string{"OrchestratorStarted", "EntityOperationFailed#0 failure=Overflow",
			"ExecutionCompleted Completed " + want})
	})
	t.Run("failure becomes the orchestration's", func(t *testing.T) {
		h := newHarness(t, "inst", lookupWith(map[string]Func{
			"C": func(ctx *Context) ([]byte, error) { return ctx.Await(ctx.CallEntity(entA, "add", nil)) },
		}))
		h.start("C", nil)
		res := h.step(h.entityFailed(0, &history.Failure{Type: "Overflow", Message: "too big", NonRetryable: true}))
		if res.Status != StatusFailed || res.Failure.Type != "Overflow" || !res.Failure.NonRetryable ||
			res.Failure.Message != `entity "add" on "@counter@a" (task 0) failed: Overflow: too big` {
			t.Fatalf("status %s failure %s", res.Status, toJSONString(res.Failure))
		}
	})
	t.Run("wrong kind and unknown task are dropped", func(t *testing.T) {
		h := newHarness(t, "inst", l)
		h.start("Call", nil)
		for _, m := range []*history.Message{
			h.grant(0, "x", entA), // a grant for a call task: not a lock's
			h.completed(0, js(1)), // an activity result for an entity task
			h.entityDone(9, js(1)),
			h.entityFailed(9, nil),
		} {
			if r := h.step(m); len(r.NewEvents) != 0 {
				t.Fatalf("%s#%d applied: %v", m.Event.Type, m.Event.TaskID, summaries(r.NewEvents))
			}
		}
		// Completions of entity tasks are not accepted for activities.
		h2 := newHarness(t, "inst2", lookup)
		h2.start("Sequence", nil)
		if r := h2.step(h2.entityDone(0, js("x"))); len(r.NewEvents) != 0 {
			t.Fatalf("entity completion applied to an activity: %v", summaries(r.NewEvents))
		}
	})
}

// TestEntityRequestsAreNotForOrchestrations: requests meant for entities
// that reach an orchestration are dropped.
func TestEntityRequestsAreNotForOrchestrations(t *testing.T) {
	for _, typ := range []history.Type{
		history.EntityOperationSignaled, history.EntityOperationCalled, history.EntityLockRequested,
		history.EntityLockReleased, history.EntityContinue,
	} {
		t.Run(typ.String(), func(t *testing.T) {
			h := newHarness(t, "inst", lookup)
			h.start("Sequence", nil)
			res := h.step(h.msg(&history.Event{Type: typ, TaskID: 0, Name: "op", InstanceID: "someone", Seq: 1}))
			if len(res.NewEvents) != 0 || len(res.Outbound) != 0 {
				t.Fatalf("events %v outbound %v", summaries(res.NewEvents), outboundSummaries(res.Outbound))
			}
		})
	}
}

// ---- Non-determinism ----

func TestEntityNonDeterminism(t *testing.T) {
	type code = Func
	call := func(id, op string) code {
		return func(ctx *Context) ([]byte, error) { return ctx.Await(ctx.CallEntity(id, op, nil)) }
	}
	signal := func(id, op string) code {
		return func(ctx *Context) ([]byte, error) {
			ctx.SignalEntity(id, op, nil, time.Time{})
			return ctx.Await(ctx.WaitForExternalEvent("never", -1))
		}
	}
	lock := func(ids ...string) code {
		return func(ctx *Context) ([]byte, error) { return ctx.Await(ctx.LockEntities(ids...)) }
	}
	tests := []struct {
		name         string
		recorded, nw code
		wants        []string
	}{
		{"operation renamed", call(entA, "add"), call(entA, "subtract"), []string{
			`history has EntityOperationCalled "add" on "@counter@a" (TaskID 0, Seq 2)`,
			`but the code produced CallEntity "subtract" on "@counter@a" (TaskID 0)`,
		}},
		{"other entity", call(entA, "add"), call(entB, "add"), []string{
			`EntityOperationCalled "add" on "@counter@a"`, `CallEntity "add" on "@counter@b"`,
		}},
		{"signal instead of call", call(entA, "add"), signal(entA, "add"), []string{
			`EntityOperationCalled "add" on "@counter@a"`, `SignalEntity "add" on "@counter@a" (TaskID 0)`,
		}},
		{"signal renamed", signal(entA, "add"), signal(entA, "reset"), []string{
			`EntityOperationSignaled "add" on "@counter@a"`, `SignalEntity "reset" on "@counter@a"`,
		}},
		{"other section", lock(entX, entY), lock(entX, entZ), []string{
			`EntityLockRequested ["@acct@x","@acct@y"] (TaskID 0, Seq 2)`, `LockEntities ["@acct@x","@acct@z"] (TaskID 0)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "inst", lookupWith(map[string]Func{"N": tt.recorded}))
			h.start("N", nil)
			in := NewInstance("inst", lookupWith(map[string]Func{"N": tt.nw}), Options{})
			defer in.Close()
			res, err := in.Step(h.hist, nil, h.now)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != StatusFailed || res.Failure.Type != FailureTypeNonDeterminism {
				t.Fatalf("status %s failure %v", res.Status, res.Failure)
			}
			for _, w := range tt.wants {
				if !strings.Contains(res.Failure.Message, w) {
					t.Errorf("failure message\n  %s\ndoes not contain\n  %s", res.Failure.Message, w)
				}
			}
		})
	}
}

// TestEntityNonDeterminismReleases: a replay that fails while history holds
// a section releases it (the runtime's failure ends the execution).
func TestEntityNonDeterminismReleases(t *testing.T) {
	body := func(op string) Func {
		return func(ctx *Context) ([]byte, error) {
			if _, err := ctx.Await(ctx.LockEntities(entX, entY)); err != nil {
				return nil, err
			}
			return ctx.Await(ctx.CallEntity(entX, op, nil))
		}
	}
	h := newHarness(t, "inst", lookupWith(map[string]Func{"N": body("add")}))
	h.start("N", nil)
	lk := h.lockOf(0)
	h.step(h.grant(0, lk, entX, entY))

	in := NewInstance("inst", lookupWith(map[string]Func{"N": body("subtract")}), Options{})
	defer in.Close()
	res, err := in.Step(h.hist, nil, h.now)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusFailed || res.Failure.Type != FailureTypeNonDeterminism {
		t.Fatalf("status %s failure %v", res.Status, res.Failure)
	}
	// TaskIDs 0 (lock) and 1 (call) are taken: the releases use 2+1.
	wantStrings(t, "releases", released(res, lk), releases("exec-1", 3, entX, entY))
	if len(res.Outbound) != 2 {
		t.Fatalf("outbound %v", outboundSummaries(res.Outbound))
	}

	// A section released in history is not released again.
	h2 := newHarness(t, "inst", lookupWith(map[string]Func{"N": func(ctx *Context) ([]byte, error) {
		if _, err := ctx.Await(ctx.LockEntities(entX)); err != nil {
			return nil, err
		}
		ctx.UnlockEntities()
		return ctx.Await(ctx.CallEntity(entA, "add", nil))
	}}))
	h2.start("N", nil)
	h2.step(h2.grant(0, h2.lockOf(0), entX))
	in2 := NewInstance("inst", lookupWith(map[string]Func{"N": body("add")}), Options{})
	defer in2.Close()
	res, err = in2.Step(h2.hist, nil, h2.now)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusFailed || len(res.Outbound) != 0 {
		t.Fatalf("status %s outbound %v", res.Status, outboundSummaries(res.Outbound))
	}
}

// ---- Critical-section rules ----

func TestEntitySectionRules(t *testing.T) {
	type result struct {
		Errs []string
		Done []bool
	}
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"R": func(ctx *Context) ([]byte, error) {
			var r result
			check := func(f *Future, target error) {
				v, err := ctx.Await(f) // already failed: returns at once
				r.Done = append(r.Done, f.Done())
				if !errors.Is(err, target) || v != nil {
					r.Errs = append(r.Errs, fmt.Sprintf("want %v, got %v", target, err))
					return
				}
				r.Errs = append(r.Errs, err.Error())
			}
			check(ctx.LockEntities(), ErrNoEntities)
			check(ctx.LockEntities(entX, "orchestration-1"), ErrInvalidEntityID)
			check(ctx.LockEntities("@@key"), ErrInvalidEntityID)
			check(ctx.CallEntity("counter", "get", nil), ErrInvalidEntityID)
			lock := ctx.LockEntities(entY, entX)
			// While acquiring: nesting and calls outside are refused.
			check(ctx.LockEntities(entZ), ErrNestedCriticalSection)
			check(ctx.CallEntity(entZ, "get", nil), ErrEntityNotLocked)
			if _, err := ctx.Await(lock); err != nil {
				return nil, err
			}
			// Held: the same.
			check(ctx.LockEntities(entX), ErrNestedCriticalSection)
			check(ctx.CallEntity(entA, "get", nil), ErrEntityNotLocked)
			ctx.SignalEntity(entZ, "poke", nil, time.Time{})
			ctx.UnlockEntities()
			// Outside again: anything goes.
			f := ctx.CallEntity(entZ, "get", nil)
			r.Done = append(r.Done, f.Done())
			if _, err := ctx.Await(f); err != nil {
				return nil, err
			}
			return js(r), nil
		},
	}))
	res := h.start("R", nil)
	// The refused calls recorded nothing and took no TaskID.
	lk := h.lockOf(0)
	wantStrings(t, "events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", "ExecutionStarted R", `EntityLockRequested#0 ` + lk + ` ["@acct@x","@acct@y"]`,
	})
	res = h.step(h.grant(0, lk, entX, entY))
	wantStrings(t, "events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", `EntityLockGranted#0 ` + lk + ` ["@acct@x","@acct@y"]`,
		"EntityOperationSignaled#1 poke on @acct@z", `EntityLockReleased#2 ` + lk + ` ["@acct@x","@acct@y"]`,
		"EntityOperationCalled#3 get on @acct@z",
	})
	if res.Status != StatusRunning {
		t.Fatalf("status %s", res.Status)
	}
	res = h.step(h.entityDone(3, js(0)))
	got := unjs[result](res.Output)
	wantStrings(t, "errors", got.Errs, []string{
		"orchestration: LockEntities of no entities",
		`orchestration: not an entity ID: LockEntities of "orchestration-1" (an entity ID is "@name@key")`,
		`orchestration: not an entity ID: LockEntities of "@@key" (an entity ID is "@name@key")`,
		`orchestration: not an entity ID: CallEntity of "counter" (an entity ID is "@name@key")`,
		`orchestration: critical sections cannot be nested: LockEntities inside the critical section of ["@acct@x","@acct@y"]`,
		`orchestration: entity not locked by the critical section: CallEntity "get" on "@acct@z" inside the critical section of ["@acct@x","@acct@y"] could deadlock: call only the entities the section locks (signals are allowed)`,
		`orchestration: critical sections cannot be nested: LockEntities inside the critical section of ["@acct@x","@acct@y"]`,
		`orchestration: entity not locked by the critical section: CallEntity "get" on "@counter@a" inside the critical section of ["@acct@x","@acct@y"] could deadlock: call only the entities the section locks (signals are allowed)`,
	})
	if fmt.Sprint(got.Done) != "[true true true true true true true true false]" {
		t.Fatalf("done %v: refused futures fail at once, the last call waits", got.Done)
	}
}

func TestEntitySignalBadIDFails(t *testing.T) {
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"S": func(ctx *Context) ([]byte, error) {
			ctx.SignalEntity("not-an-entity", "op", nil, time.Time{})
			return nil, nil
		},
	}))
	res := h.start("S", nil)
	if res.Status != StatusFailed || res.Failure.Type != FailureTypePanic ||
		!strings.Contains(res.Failure.Message, `not an entity ID: SignalEntity of "not-an-entity"`) {
		t.Fatalf("status %s failure %v", res.Status, res.Failure)
	}
	if len(res.Outbound) != 0 {
		t.Fatalf("outbound %v", outboundSummaries(res.Outbound))
	}
}

func TestEntityLockRefused(t *testing.T) {
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"R": func(ctx *Context) ([]byte, error) {
			_, err := ctx.Await(ctx.LockEntities(entX, entY))
			var tf *TaskFailedError
			if !errors.As(err, &tf) {
				return nil, fmt.Errorf("want a TaskFailedError, got %v", err)
			}
			_, in := ctx.InCriticalSection()
			// The section is over: locking again is allowed.
			again := ctx.LockEntities(entZ)
			if _, err := ctx.Await(ctx.WaitForExternalEvent("go", -1)); err != nil {
				return nil, err
			}
			return js([]any{tf.Kind, tf.Name == entityLockID("inst", "exec-1", 0), tf.Entity, tf.Failure.Type, in, again.Done()}), nil
		},
	}))
	h.start("R", nil)
	lk := h.lockOf(0)
	res := h.step(h.entityFailed(0, &history.Failure{Type: "InvalidLock", Message: "refused"}))
	wantStrings(t, "events", entityEvents(res.NewEvents), []string{
		"OrchestratorStarted", "EntityOperationFailed#0 failure=InvalidLock",
		`EntityLockRequested#1 ` + h.lockOf(1) + ` ["@acct@z"]`,
	})
	// Entities before the one that refused may hold their lock: all are
	// released, unsequenced (no task).
	wantStrings(t, "releases", released(res, lk), releases("exec-1", 0, entX, entY))
	// Replayed later (the harness also replays on a fresh Instance), the
	// refusal sends nothing again; the end releases the second section.
	res = h.step(h.raise("go", nil))
	wantDone(t, res, StatusCompleted)
	if string(res.Output) != `["entitylock",true,"@acct@x, @acct@y","InvalidLock",false,false]` {
		t.Fatalf("output %s", res.Output)
	}
	wantStrings(t, "end releases", entityMsgs(t, res, h.now), []string{
		"EntityLockReleased -> @acct@z name=" + h.lockOf(1) + " from=inst/exec-1 seq=3",
	})
}

// ---- Locks released at the end ----

// holder locks X and Y, then ends as its input says.
var holder = map[string]Func{
	"H": func(ctx *Context) ([]byte, error) {
		if _, err := ctx.Await(ctx.LockEntities(entY, entX)); err != nil {
			return nil, err
		}
		switch unjs[string](ctx.Input()) {
		case "return":
			return js("done"), nil
		case "error":
			return nil, errors.New("boom")
		case "panic":
			panic("boom")
		case "continue":
			ctx.ContinueAsNew(js("wait"), false)
			return nil, nil
		}
		return ctx.Await(ctx.WaitForExternalEvent("go", -1))
	},
}

func TestEntityEndReleasesLocks(t *testing.T) {
	for _, tt := range []struct{ mode, status string }{
		{"return", StatusCompleted}, {"error", StatusFailed}, {"panic", StatusFailed}, {"continue", StatusContinuedAsNew},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			h := newHarness(t, "inst", lookupWith(holder))
			h.start("H", js(tt.mode))
			lk := h.lockOf(0)
			res := h.step(h.grant(0, lk, entX, entY))
			wantDone(t, res, tt.status)
			// Once per entity, as this execution, with an unused task number.
			wantStrings(t, "releases", released(res, lk), releases("exec-1", 2, entX, entY))
			if tt.mode == "continue" {
				if n := len(res.Outbound); n != 3 || res.Outbound[2].Message.Event.Type != history.ExecutionStarted {
					t.Fatalf("outbound %v", outboundSummaries(res.Outbound))
				}
			} else if len(res.Outbound) != 2 {
				t.Fatalf("outbound %v", outboundSummaries(res.Outbound))
			}
			if n := len(res.NewEvents); res.NewEvents[n-1].Type != history.ExecutionCompleted || n != 3 {
				t.Fatalf("events %v: the releases are not recorded", summaries(res.NewEvents))
			}
			// The finished history (cached or loaded) sends nothing again.
			if r := h.step(h.raise("go", nil)); len(r.Outbound) != 0 || len(r.NewEvents) != 0 {
				t.Fatalf("after the end: events %v outbound %v", summaries(r.NewEvents), outboundSummaries(r.Outbound))
			}
		})
	}
	t.Run("terminated", func(t *testing.T) {
		h := newHarness(t, "inst", lookupWith(holder))
		h.start("H", js("wait"))
		lk := h.lockOf(0)
		h.step(h.grant(0, lk, entX, entY))
		res := h.step(h.control(history.ExecutionTerminated, "stop"))
		wantDone(t, res, StatusTerminated)
		wantStrings(t, "releases", entityMsgs(t, res, h.now), []string{
			"EntityLockReleased -> @acct@x name=" + lk + " from=inst/exec-1 seq=2",
			"EntityLockReleased -> @acct@y name=" + lk + " from=inst/exec-1 seq=2",
		})
		if r := h.step(h.raise("go", nil)); len(r.Outbound) != 0 {
			t.Fatalf("after the end: %v", outboundSummaries(r.Outbound))
		}
	})
	t.Run("terminated while suspended and acquiring", func(t *testing.T) {
		h := newHarness(t, "inst", lookupWith(holder))
		h.start("H", js("wait"))
		h.step(h.control(history.ExecutionSuspended, "pause"))
		res := h.step(h.control(history.ExecutionTerminated, "stop"))
		wantStrings(t, "releases", released(res, h.lockOf(0)), releases("exec-1", 2, entX, entY))
	})
	t.Run("terminated with the grant in the same batch: released once", func(t *testing.T) {
		h := newHarness(t, "inst", lookupWith(holder))
		h.start("H", js("wait"))
		lk := h.lockOf(0)
		res := h.step(h.control(history.ExecutionTerminated, "stop"), h.grant(0, lk, entX, entY), h.grant(0, lk, entX, entY))
		wantDone(t, res, StatusTerminated)
		wantStrings(t, "releases", entityMsgs(t, res, h.now), []string{
			"EntityLockReleased -> @acct@x name=" + lk + " from=inst/exec-1 seq=2",
			"EntityLockReleased -> @acct@y name=" + lk + " from=inst/exec-1 seq=2",
		})
	})
	t.Run("replaced by a new execution", func(t *testing.T) {
		h := newHarness(t, "inst", lookupWith(holder))
		h.start("H", js("wait"))
		lk := h.lockOf(0)
		h.step(h.grant(0, lk, entX, entY))
		res := h.step(h.startMsg("H", js("wait"), "exec-2"))
		if !res.ResetHistory || res.ExecutionID != "exec-2" {
			t.Fatalf("reset %v exec %s", res.ResetHistory, res.ExecutionID)
		}
		wantStrings(t, "releases", released(res, lk), releases("exec-1", 2, entX, entY))
		wantStrings(t, "new request", released(res, entityLockID("inst", "exec-2", 0)), nil)
		if n := len(res.Outbound); n != 3 || res.Outbound[2].Message.Event.Type != history.EntityLockRequested ||
			res.Outbound[2].Message.Event.ExecutionID != "exec-2" {
			t.Fatalf("outbound %v", outboundSummaries(res.Outbound))
		}
	})
}

func TestEntityEndWhileAcquiring(t *testing.T) {
	impatient := lookupWith(map[string]Func{
		"I": func(ctx *Context) ([]byte, error) {
			lock := ctx.LockEntities(entX, entY)
			w := ctx.WhenAny(lock, ctx.CreateTimer(ctx.CurrentTime().Add(time.Minute)))
			if _, err := ctx.Await(w); err != nil {
				return nil, err
			}
			if w.Winner() == 1 {
				return js("gave up"), nil
			}
			return js("locked"), nil
		},
	})
	h := newHarness(t, "inst", impatient)
	h.start("I", nil)
	lk := h.lockOf(0)
	h.now = h.now.Add(time.Minute)
	res := h.step(h.fired(1))
	wantDone(t, res, StatusCompleted)
	if string(res.Output) != `"gave up"` {
		t.Fatalf("output %s", res.Output)
	}
	// The request may still lock entities: the end releases them all.
	wantStrings(t, "releases", released(res, lk), releases("exec-1", 3, entX, entY))

	// The grant comes after the end: it is undone, as exec-1.
	h.now = h.now.Add(time.Minute)
	res = h.step(h.grant(0, lk, entX, entY))
	if len(res.NewEvents) != 0 || res.Status != "" {
		t.Fatalf("late grant applied: %v", summaries(res.NewEvents))
	}
	wantStrings(t, "late grant", entityMsgs(t, res, h.now), []string{
		"EntityLockReleased -> @acct@x name=" + lk + " from=inst/exec-1 seq=0",
		"EntityLockReleased -> @acct@y name=" + lk + " from=inst/exec-1 seq=0",
	})

	t.Run("returning right after the request", func(t *testing.T) {
		h := newHarness(t, "inst", lookupWith(map[string]Func{
			"Q": func(ctx *Context) ([]byte, error) {
				ctx.LockEntities(entX)
				return nil, nil
			},
		}))
		res := h.start("Q", nil)
		lk := h.lockOf(0)
		// The request is recorded and sent, then released.
		wantStrings(t, "messages", entityMsgs(t, res, h.now), []string{
			`EntityLockRequested -> @acct@x task=0 name=` + lk + ` input=["@acct@x"] from=inst/exec-1 seq=1 parent=inst/exec-1#0`,
			"EntityLockReleased -> @acct@x name=" + lk + " from=inst/exec-1 seq=2",
		})
	})
}

func TestEntityUnlockWhileAcquiring(t *testing.T) {
	l := lookupWith(map[string]Func{
		"A": func(ctx *Context) ([]byte, error) {
			lock := ctx.LockEntities(entX, entY)
			w := ctx.WhenAny(lock, ctx.CreateTimer(ctx.CurrentTime().Add(time.Minute)))
			if _, err := ctx.Await(w); err != nil {
				return nil, err
			}
			if w.Winner() == 0 {
				return js("locked"), nil
			}
			ctx.UnlockEntities()
			_, err := ctx.Await(lock)
			_, in := ctx.InCriticalSection()
			if _, err := ctx.Await(ctx.WaitForExternalEvent("go", -1)); err != nil {
				return nil, err
			}
			return js([]any{errors.Is(err, ErrCriticalSectionAbandoned), in}), nil
		},
	})
	for _, sameBatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("grant in the same batch=%v", sameBatch), func(t *testing.T) {
			h := newHarness(t, "inst", l)
			h.start("A", nil)
			lk := h.lockOf(0)
			msgs := []*history.Message{h.fired(1)}
			if sameBatch {
				msgs = append(msgs, h.grant(0, lk, entX, entY))
			}
			res := h.step(msgs...)
			wantStrings(t, "events", entityEvents(res.NewEvents), []string{
				"OrchestratorStarted", "TimerFired#1", `EntityLockReleased#2 ` + lk + ` ["@acct@x","@acct@y"]`,
			})
			// Released once, by the recorded release (the grant of the
			// same batch is covered by it).
			wantStrings(t, "releases", released(res, lk), releases("exec-1", 3, entX, entY))
			if !sameBatch {
				// A later grant is undone.
				res = h.step(h.grant(0, lk, entX, entY))
				wantStrings(t, "late grant", released(res, lk), releases("exec-1", 0, entX, entY))
			}
			res = h.step(h.raise("go", nil))
			wantDone(t, res, StatusCompleted)
			if string(res.Output) != "[true,false]" || len(res.Outbound) != 0 {
				t.Fatalf("output %s outbound %v", res.Output, outboundSummaries(res.Outbound))
			}
		})
	}
}

// ---- Grants nobody waits for ----

func TestEntityGrantNobodyWaitsFor(t *testing.T) {
	other := entityLockID("inst", "exec-0", 4)
	tests := []struct {
		name  string
		setup func(h *harness)
		msg   func(h *harness) *history.Message
		want  []string // releases of the grant's lock ID
	}{
		{
			name: "instance without execution",
			msg: func(h *harness) *history.Message {
				return &history.Message{InstanceID: "inst", ExecutionID: "exec-0", Event: &history.Event{
					Type: history.EntityLockGranted, TaskID: 4, Name: other, Input: js([]string{entX, entY})}}
			},
			want: releases("exec-0", 0, entX, entY),
		},
		{
			name:  "another execution",
			setup: func(h *harness) { h.start("H", js("wait")) },
			msg: func(h *harness) *history.Message {
				m := h.grant(4, other, entX, entZ)
				m.ExecutionID = "exec-0"
				return m
			},
			want: releases("exec-0", 0, entX, entZ),
		},
		{
			name:  "unknown task",
			setup: func(h *harness) { h.start("H", js("wait")) },
			msg:   func(h *harness) *history.Message { return h.grant(4, other, entZ) },
			want:  releases("exec-1", 0, entZ),
		},
		{
			name:  "the task of another section",
			setup: func(h *harness) { h.start("H", js("wait")) },
			msg:   func(h *harness) *history.Message { return h.grant(0, other, entZ) },
			want:  releases("exec-1", 0, entZ),
		},
		{
			name: "ended execution, message without execution ID",
			setup: func(h *harness) {
				h.start("H", js("return"))
				h.step(h.grant(0, h.lockOf(0), entX, entY))
			},
			msg: func(h *harness) *history.Message {
				m := h.grant(0, h.lockOf(0), entX, entY)
				m.ExecutionID = ""
				return m
			},
			want: releases("exec-1", 0, entX, entY),
		},
		{
			name: "redelivered grant of the section held",
			setup: func(h *harness) {
				h.start("H", js("wait"))
				h.step(h.grant(0, h.lockOf(0), entX, entY))
			},
			msg:  func(h *harness) *history.Message { return h.grant(0, h.lockOf(0), entX, entY) },
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "inst", lookupWith(holder))
			if tt.setup != nil {
				tt.setup(h)
			}
			m := tt.msg(h)
			res := h.step(m)
			if len(res.NewEvents) != 0 {
				t.Fatalf("grant applied: %v", summaries(res.NewEvents))
			}
			wantStrings(t, "releases", released(res, m.Event.Name), tt.want)
			if len(res.Outbound) != len(tt.want) {
				t.Fatalf("outbound %v", outboundSummaries(res.Outbound))
			}
		})
	}
}

// ---- Suspension ----

func TestEntitySuspendHoldsCompletions(t *testing.T) {
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"S": func(ctx *Context) ([]byte, error) {
			if _, err := ctx.Await(ctx.LockEntities(entX)); err != nil {
				return nil, err
			}
			v, err := ctx.Await(ctx.CallEntity(entX, "get", nil))
			if err != nil {
				return nil, err
			}
			ctx.UnlockEntities()
			return v, nil
		},
	}))
	h.start("S", nil)
	lk := h.lockOf(0)
	h.step(h.control(history.ExecutionSuspended, "pause"))
	res := h.step(h.grant(0, lk, entX))
	wantStrings(t, "while suspended", summaries(res.NewEvents), []string{"OrchestratorStarted", `EntityLockGranted#0 ` + lk + ` ["@acct@x"]`})
	if res.Status != StatusSuspended || len(res.Outbound) != 0 {
		t.Fatalf("status %s outbound %v", res.Status, outboundSummaries(res.Outbound))
	}
	// A redelivery of the held grant is dropped, and does not release the
	// section it is for.
	if r := h.step(h.grant(0, lk, entX)); len(r.NewEvents) != 0 || len(r.Outbound) != 0 {
		t.Fatalf("duplicate grant: events %v outbound %v", summaries(r.NewEvents), outboundSummaries(r.Outbound))
	}
	res = h.step(h.control(history.ExecutionResumed, "go"))
	wantStrings(t, "resumed", entityEvents(res.NewEvents), []string{"OrchestratorStarted", `ExecutionResumed "go"`, "EntityOperationCalled#1 get on @acct@x"})

	h.step(h.control(history.ExecutionSuspended, "pause"))
	res = h.step(h.entityDone(1, js(9)))
	wantStrings(t, "while suspended", summaries(res.NewEvents), []string{"OrchestratorStarted", "EntityOperationCompleted#1 9"})
	if res.Status != StatusSuspended || len(res.Outbound) != 0 {
		t.Fatalf("status %s outbound %v", res.Status, outboundSummaries(res.Outbound))
	}
	if r := h.step(h.entityDone(1, js(10))); len(r.NewEvents) != 0 {
		t.Fatal("a duplicate of a held completion must be dropped")
	}
	res = h.step(h.control(history.ExecutionResumed, "go"))
	wantDone(t, res, StatusCompleted)
	if string(res.Output) != "9" {
		t.Fatalf("output %s", res.Output)
	}
	wantStrings(t, "releases", released(res, lk), releases("exec-1", 3, entX))
}

// ---- Memory ----

func TestEntitySizeBytes(t *testing.T) {
	big := js(strings.Repeat("x", 100_000))
	h := newHarness(t, "inst", lookupWith(map[string]Func{
		"B": func(ctx *Context) ([]byte, error) {
			if _, err := ctx.Await(ctx.CallEntity(entA, "put", big)); err != nil {
				return nil, err
			}
			if _, err := ctx.Await(ctx.LockEntities(entX, entY)); err != nil {
				return nil, err
			}
			ctx.UnlockEntities()
			return ctx.Await(ctx.WaitForExternalEvent("go", -1))
		},
	}))
	h.start("B", nil)
	before := h.in.SizeBytes()
	h.step(h.entityDone(0, nil))
	after := h.in.SizeBytes()
	// The call's payload is gone; the lock request that follows is small.
	if before < len(big) || after > before-len(big)+1000 {
		t.Fatalf("SizeBytes with a pending call of %d bytes %d, after it completed %d", len(big), before, after)
	}
	h.step(h.grant(1, h.lockOf(1), entX, entY))
	if done := h.in.SizeBytes(); done > after+sectionOverhead {
		t.Fatalf("SizeBytes after the section %d, before it %d: its tasks must be forgotten", done, after)
	}
}
