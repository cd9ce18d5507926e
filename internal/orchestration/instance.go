package orchestration

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

// Func is an orchestrator function. Input and output are encoded JSON. It
// runs on its own goroutine, replayed from history, so it must be
// deterministic: time from ctx.CurrentTime, IDs from ctx.NewGUID, and every
// side effect through activities.
type Func func(ctx *Context) (output []byte, err error)

// Lookup finds an orchestrator by name.
type Lookup func(name string) (Func, bool)

// Options configure an Instance.
type Options struct {
	// Logger receives the runtime's diagnostics for the instance (dropped
	// messages at Debug, non-determinism at Error) and is the parent of
	// Context.Logger. Nil discards them.
	Logger *slog.Logger
}

// Outbound is a message a step asks the engine to send when it commits.
type Outbound struct {
	// WorkItem is true for an activity to run (a TaskScheduled addressed to
	// this instance, to go to the work-item queue); false for a control
	// message to Message.InstanceID.
	WorkItem bool
	Message  history.Message
	// VisibleAt delays delivery (durable timers); zero: at once.
	VisibleAt time.Time
}

// StepResult is what a step decided. The engine commits it atomically: the
// history append, the instance row from the status fields, and Outbound.
type StepResult struct {
	// ExecutionID is the current execution ("" when the instance has none).
	ExecutionID string
	// ResetHistory is true when a new execution began: the stored history
	// (of any execution) must be replaced by NewEvents.
	ResetHistory bool
	// NewEvents are to be appended to history. Seq continues from the
	// Instance's Version before the step (from 0 after a reset); the first
	// is an OrchestratorStarted whose Time is the step's now. Empty when
	// every message was dropped.
	NewEvents []*history.Event
	// Outbound are the messages to send, in order.
	Outbound []Outbound

	// Status is the instance's status after the step: StatusRunning,
	// StatusSuspended, StatusCompleted, StatusFailed, StatusTerminated or
	// StatusContinuedAsNew; "" when nothing was applied (NewEvents is
	// empty), and then the fields below are not set either.
	Status           string
	Name             string
	Input            []byte
	Output           []byte
	Failure          *history.Failure
	CustomStatus     []byte
	ParentInstanceID string

	// Replayed is the number of stored events replayed through the code.
	Replayed int
	// Done is true when the current execution has ended (the Instance need
	// not be cached, but may be: later messages are dropped, and an
	// ExecutionStarted for a new execution restarts it).
	Done bool
}

// Instance is one orchestration instance in memory: the replayed state of
// its current execution and the goroutine of its orchestrator code. It may
// be cached between steps (cursor caching). Step and Close may be called
// from any goroutine, one at a time.
type Instance struct {
	mu      sync.Mutex
	id      string
	lookup  Lookup
	log     *slog.Logger
	userLog *slog.Logger

	stepped bool
	closed  bool
	version int64    // history length of the current execution
	x       *Context // current execution; nil when none

	// Written by the driver only, read by the orchestrator during its turn.
	replaying bool
	clock     time.Time // Time of the OrchestratorStarted being processed

	// Valid only during Step.
	res    *StepResult
	now    time.Time
	opened bool // this step appended its OrchestratorStarted
	// released holds the lock IDs of the critical sections this step
	// released, so that a grant dropped later in the step does not
	// release them again.
	released map[string]bool
}

// NewInstance returns an empty Instance; its first Step gives it the stored
// history, if there is any.
func NewInstance(id string, lookup Lookup, opts Options) *Instance {
	l := opts.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Instance{id: id, lookup: lookup, log: l, userLog: l}
}

// Step applies a batch of messages, and returns what to commit.
//
// past is the stored history of the current execution, given on the first
// Step of a fresh Instance only (nil afterwards: the Instance continues
// from where its last Step left it). now becomes the Time of the step's
// OrchestratorStarted and the code's CurrentTime.
//
// The error is only for engine misuse (history given twice, a message for
// another instance, a closed Instance, a history whose Seq are not 0..n-1);
// everything that goes wrong with the orchestration itself becomes a failure
// of the instance in the result.
func (in *Instance) Step(past []*history.Event, msgs []*history.Message, now time.Time) (*StepResult, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil, ErrClosed
	}
	if len(past) > 0 && in.stepped {
		return nil, fmt.Errorf("%w: instance %q was given its stored history again: pass it only on the first Step of a fresh Instance", ErrMisuse, in.id)
	}
	if err := in.check(past, msgs); err != nil {
		return nil, err
	}
	in.stepped = true
	res := &StepResult{}
	// Times are stored in UTC without a monotonic reading: normalising now
	// keeps a cached instance and one replayed from storage identical.
	in.res, in.now, in.opened, in.released = res, now.Round(0).UTC(), false, nil
	defer func() { in.res, in.released = nil, nil }()

	if len(past) > 0 {
		in.load(past)
	}
	for _, m := range batchOrder(msgs) {
		in.applyMessage(m)
	}
	in.endStep()
	return res, nil
}

func (in *Instance) check(past []*history.Event, msgs []*history.Message) error {
	for i, e := range past {
		if e == nil {
			return fmt.Errorf("%w: instance %q: event %d is nil", ErrInvalidHistory, in.id, i)
		}
		if e.Seq != int64(i) {
			return fmt.Errorf("%w: instance %q: event %d has Seq %d", ErrInvalidHistory, in.id, i, e.Seq)
		}
	}
	for i, m := range msgs {
		if m == nil || m.Event == nil {
			return fmt.Errorf("%w: message %d for instance %q has no event", ErrMisuse, i, in.id)
		}
		if m.InstanceID != in.id {
			return fmt.Errorf("%w: message %d is for instance %q, not %q", ErrMisuse, i, m.InstanceID, in.id)
		}
	}
	return nil
}

// batchOrder puts ExecutionStarted messages first (stable), so a batch that
// starts an instance and already holds messages for it applies them in
// the new execution.
func batchOrder(msgs []*history.Message) []*history.Message {
	isStart := func(m *history.Message) bool { return m.Event.Type == history.ExecutionStarted }
	late := false
	for i, m := range msgs {
		if isStart(m) && i > 0 && !isStart(msgs[i-1]) {
			late = true
			break
		}
	}
	if !late {
		return msgs
	}
	out := make([]*history.Message, 0, len(msgs))
	for _, m := range msgs {
		if isStart(m) {
			out = append(out, m)
		}
	}
	for _, m := range msgs {
		if !isStart(m) {
			out = append(out, m)
		}
	}
	return out
}

// Version returns the length of the current execution's history, including
// the events of the last Step (0 before a fresh Instance's first Step).
func (in *Instance) Version() int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.version
}

// ExecutionID returns the current execution's ID, or "".
func (in *Instance) ExecutionID() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.x == nil {
		return ""
	}
	return in.x.executionID
}

// Done reports whether the current execution has ended.
func (in *Instance) Done() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.x != nil && in.x.ended
}

// SizeBytes estimates the memory the Instance holds, for a cache bounded in
// bytes: pending tasks, buffered events, payloads and a parked goroutine.
func (in *Instance) SizeBytes() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	size := 512
	if c := in.x; c != nil {
		size += c.size
		if c.live {
			size += goroutineOverhead
		}
	}
	return size
}

// Close ends a parked orchestrator goroutine (runtime.Goexit: the code's
// deferred calls run, nothing else) and makes later Steps fail. Safe to call
// twice.
func (in *Instance) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return
	}
	in.closed = true
	if in.x != nil {
		in.x.stop()
	}
}

// ---- Loading and replaying stored history ----

func (in *Instance) load(past []*history.Event) {
	in.version = int64(len(past))
	if last := past[len(past)-1]; last.Type == history.ExecutionCompleted || last.Type == history.ExecutionTerminated {
		in.loadFinished(past)
		return
	}
	in.replaying = true
	applied := 0
	for i, e := range past {
		if c := in.x; c != nil && c.ended {
			if c.outcome == outcomeReturned {
				in.checkReturnedEarly(past[i:])
			}
			// The code no longer follows history, but what history
			// says was sent decides which locks the end releases.
			for _, e := range past[i:] {
				c.trackSection(e)
			}
			break
		}
		in.apply(e)
		applied++
	}
	if c := in.x; c != nil && (!c.ended || c.outcome == outcomeReturned) {
		in.checkStepEnd(nil)
	}
	in.replaying = false
	in.res.Replayed = applied
	if c := in.x; c != nil && c.ended && !c.emitted {
		in.emitEnd()
	}
}

// loadFinished takes a finished execution's state from its history without
// running any code: there is nothing left for the code to do.
func (in *Instance) loadFinished(past []*history.Event) {
	for _, e := range past {
		if e.Type == history.ExecutionStarted {
			in.x = newContext(in, e)
			break
		}
	}
	c := in.x
	if c == nil {
		return // no execution recorded; an ExecutionStarted will reset
	}
	c.ended, c.emitted = true, true
	last := past[len(past)-1]
	if last.Type == history.ExecutionTerminated {
		c.setTerminated(last)
		return
	}
	c.status = last.Status
	switch last.Status {
	case StatusFailed:
		c.failure = last.Failure
	case StatusContinuedAsNew:
	default:
		c.status, c.output = StatusCompleted, last.Input
	}
}

// checkStepEnd runs at each step boundary of a replay (before is the next
// OrchestratorStarted, nil at the end of the stored history): every action
// the code produced in a recorded step was recorded in that step, so one
// still unmatched means the code changed.
func (in *Instance) checkStepEnd(before *history.Event) {
	c := in.x
	if c.pending > 0 {
		for _, t := range c.unflushed {
			if t.state == statePending {
				in.nonDeterminism(&NonDeterminismError{Produced: t.describe(), Before: before, BeforeSeq: in.version})
				return
			}
		}
	}
	in.resetUnflushed()
}

// checkReturnedEarly runs when the function returned during replay: the
// recorded run did not return there (its history would be finished), and a
// scheduling event still ahead proves it did more.
func (in *Instance) checkReturnedEarly(rest []*history.Event) {
	for _, e := range rest {
		if kindScheduledBy(e.Type) != 0 {
			in.nonDeterminism(&NonDeterminismError{Expected: e, Returned: true})
			return
		}
	}
}

// match pairs a recorded scheduling event with the code's action of the
// same TaskID.
func (in *Instance) match(e *history.Event) {
	c := in.x
	t := c.tasks[e.TaskID]
	if t == nil || t.state != statePending {
		in.nonDeterminism(&NonDeterminismError{Expected: e})
		return
	}
	if t.kind != kindScheduledBy(e.Type) || !t.matches(e) {
		in.nonDeterminism(&NonDeterminismError{Expected: e, Produced: t.describe()})
		return
	}
	c.pending--
	t.state = stateScheduled
	if t.kind.fireAndForget() || t.abandoned {
		c.dropTask(t)
	}
}

func (in *Instance) nonDeterminism(err *NonDeterminismError) {
	err.Orchestrator = in.x.name
	in.log.Error("orchestration failed: non-deterministic replay", "instance", in.id, "err", err)
	in.fail(&history.Failure{Type: FailureTypeNonDeterminism, Message: err.Error()})
}

// ---- Applying events (replayed and new alike) ----

// apply applies one history event. Replay and new events take the same
// path, which is what makes a cached instance and a replayed one agree.
func (in *Instance) apply(e *history.Event) {
	switch e.Type {
	case history.OrchestratorStarted:
		if in.replaying && in.x != nil {
			in.checkStepEnd(e)
		}
		in.clock = e.Time
		return
	case history.ExecutionStarted:
		if in.x == nil {
			in.startExecution(e)
		}
		return
	}
	c := in.x
	if c == nil || c.ended {
		return
	}
	switch e.Type {
	case history.ExecutionTerminated:
		in.terminate(e)
	case history.ExecutionSuspended:
		c.suspended, c.status = true, StatusSuspended
	case history.ExecutionResumed:
		in.resume()
	case history.TaskScheduled, history.TimerCreated, history.SubOrchestrationCreated, history.EventSent,
		history.EntityOperationSignaled, history.EntityOperationCalled, history.EntityLockRequested, history.EntityLockReleased:
		// New scheduling events are produced by the step, never applied;
		// recorded ones are checked against the code.
		if in.replaying {
			c.trackSection(e)
			in.match(e)
		}
	case history.TaskCompleted, history.TaskFailed, history.TimerFired,
		history.SubOrchestrationCompleted, history.SubOrchestrationFailed, history.EventRaised,
		history.EntityOperationCompleted, history.EntityOperationFailed, history.EntityLockGranted:
		if c.suspended {
			if t := c.tasks[e.TaskID]; t != nil && e.Type != history.EventRaised {
				t.queued = true
			}
			c.deferred = append(c.deferred, e)
			c.size += eventOverhead + len(e.Input)
			return
		}
		in.deliver(e)
	}
}

func (in *Instance) startExecution(e *history.Event) {
	c := newContext(in, e)
	in.x = c
	var fn Func
	ok := false
	if in.lookup != nil {
		fn, ok = in.lookup(e.Name)
	}
	if !ok || fn == nil {
		in.fail(&history.Failure{
			Type:    FailureTypeOrchestratorNotFound,
			Message: fmt.Sprintf("orchestrator %q is not registered with this worker", e.Name),
		})
		return
	}
	c.fn = fn
	c.launch()
	in.afterRun()
}

// deliver completes the future of a completion event, or hands an event to
// its waiter, and lets the code run if what it awaits is now done.
func (in *Instance) deliver(e *history.Event) {
	c := in.x
	if e.Type == history.EventRaised {
		c.raise(e)
		in.wake()
		return
	}
	if c.ended {
		return
	}
	t := c.completedTask(e)
	if t == nil {
		return // unknown or duplicate: at-least-once delivery
	}
	c.dropTask(t)
	switch e.Type {
	case history.TaskCompleted, history.SubOrchestrationCompleted, history.EntityOperationCompleted:
		t.future.resolve(e.Input, nil)
	case history.TaskFailed:
		t.future.resolve(nil, &TaskFailedError{Kind: KindActivity, Name: t.name, TaskID: t.id, Failure: failureOrUnknown(e.Failure)})
	case history.SubOrchestrationFailed:
		t.future.resolve(nil, &TaskFailedError{Kind: KindSubOrchestration, Name: t.name, TaskID: t.id, Failure: failureOrUnknown(e.Failure)})
	case history.TimerFired:
		t.future.resolve(nil, nil)
	case history.EntityOperationFailed:
		if t.kind == kindEntityLock {
			in.lockRefused(t, e)
		} else {
			t.future.resolve(nil, &TaskFailedError{Kind: KindEntity, Name: t.name, Entity: t.instanceID, TaskID: t.id, Failure: failureOrUnknown(e.Failure)})
		}
	case history.EntityLockGranted:
		if s := c.lock; s != nil && s.task == t {
			s.granted = true
		}
		t.future.resolve(nil, nil)
	}
	in.wake()
}

// completedTask returns the scheduled task completion e is for, or nil when
// there is none (unknown, already completed, or of another kind).
func (c *Context) completedTask(e *history.Event) *task {
	t := c.tasks[e.TaskID]
	if t == nil || t.state != stateScheduled || !completes(e.Type, t.kind) {
		return nil
	}
	if e.Type == history.EntityLockGranted && e.Name != t.name {
		return nil // a grant for another section
	}
	return t
}

func failureOrUnknown(f *history.Failure) *history.Failure {
	if f == nil {
		return &history.Failure{Message: "failed without details"}
	}
	return f
}

// wake resumes the code if the future it awaits is done.
func (in *Instance) wake() {
	c := in.x
	if c == nil || !c.live || c.ended || c.awaiting == nil || !c.awaiting.done {
		return
	}
	c.run()
	in.afterRun()
}

func (in *Instance) afterRun() {
	if c := in.x; c.returned && !c.ended {
		c.ended, c.outcome = true, outcomeReturned
	}
}

// resume applies the events held back while suspended, in order.
func (in *Instance) resume() {
	c := in.x
	c.suspended, c.status = false, StatusRunning
	held := c.deferred
	c.deferred = nil
	for _, e := range held {
		c.size -= eventOverhead + len(e.Input)
		in.deliver(e)
	}
}

func (in *Instance) terminate(e *history.Event) {
	c := in.x
	c.stop()
	c.ended, c.emitted = true, true
	in.discardPending()
	c.setTerminated(e)
	if in.replaying {
		return // only a corrupt history has events after a termination
	}
	in.releaseHeld(c)
	if e.Recurse {
		var children []*task
		for _, t := range c.tasks {
			if t.kind == kindSub && t.state == stateScheduled {
				children = append(children, t)
			}
		}
		slices.SortFunc(children, func(a, b *task) int { return int(a.id - b.id) })
		for _, t := range children {
			in.send(Outbound{Message: history.Message{InstanceID: t.instanceID, Event: &history.Event{
				Type: history.ExecutionTerminated, Time: in.now, Input: e.Input, Recurse: true,
			}}})
		}
	}
	if p := c.parent; p != nil {
		f := c.failure
		if f == nil {
			f = &history.Failure{Type: FailureTypeTerminated, Message: fmt.Sprintf("instance %q was terminated: %s", in.id, reasonText(e.Input))}
		}
		in.send(Outbound{Message: history.Message{InstanceID: p.InstanceID, ExecutionID: p.ExecutionID, Event: &history.Event{
			Type: history.SubOrchestrationFailed, Time: in.now, TaskID: p.TaskID, Failure: f,
		}}})
	}
}

// setTerminated records a termination's outcome. A termination with Status
// Failed (the engine's poison handling) fails the instance with the reason.
func (c *Context) setTerminated(e *history.Event) {
	if e.Status == StatusFailed {
		c.status = StatusFailed
		c.failure = &history.Failure{Type: FailureTypeTerminated, Message: reasonText(e.Input)}
		return
	}
	c.status, c.output = StatusTerminated, e.Input
}

// reasonText shows a JSON string reason without its quotes.
func reasonText(b []byte) string {
	var s string
	if json.Unmarshal(b, &s) == nil {
		return s
	}
	return string(b)
}

// fail ends the execution with a failure decided by the runtime; the code's
// unrecorded actions are discarded.
func (in *Instance) fail(f *history.Failure) {
	c := in.x
	c.stop()
	c.ended, c.outcome, c.failure = true, outcomeFailed, f
	in.discardPending()
}

// ---- New messages ----

func (in *Instance) applyMessage(m *history.Message) {
	e := m.Event
	if e.Type == history.ExecutionStarted {
		in.startMessage(m)
		return
	}
	c := in.x
	switch {
	case c == nil:
		in.drop(m, "the instance has no execution")
	case m.ExecutionID != "" && m.ExecutionID != c.executionID:
		in.drop(m, "it is for another execution")
	case c.ended:
		if c.carryTo != "" && e.Type == history.EventRaised {
			in.carry(e)
			return
		}
		in.drop(m, "the execution has ended")
	default:
		if reason := c.refusal(e); reason != "" {
			in.drop(m, reason)
			return
		}
		ev := *e
		in.apply(in.appendEvent(&ev))
		in.afterMessage()
	}
}

// refusal says why a message is not applied, or "".
func (c *Context) refusal(e *history.Event) string {
	switch e.Type {
	case history.TaskCompleted, history.TaskFailed, history.TimerFired,
		history.SubOrchestrationCompleted, history.SubOrchestrationFailed,
		history.EntityOperationCompleted, history.EntityOperationFailed, history.EntityLockGranted:
		t := c.completedTask(e)
		if t == nil {
			return "its task is unknown or already completed"
		}
		if t.queued {
			return "its task's completion is already held while suspended"
		}
	case history.EventRaised, history.ExecutionTerminated:
	case history.ExecutionSuspended:
		if c.suspended {
			return "the instance is already suspended"
		}
	case history.ExecutionResumed:
		if !c.suspended {
			return "the instance is not suspended"
		}
	default:
		// Entity requests (signals, calls, lock requests and releases,
		// EntityContinue) are for entities.
		return "an orchestration does not accept it as a message"
	}
	return ""
}

func (in *Instance) startMessage(m *history.Message) {
	e := m.Event
	execID := e.ExecutionID
	if execID == "" {
		execID = m.ExecutionID
	}
	if execID == "" {
		in.drop(m, "ExecutionStarted without an execution ID")
		return
	}
	if in.x != nil && in.x.executionID == execID {
		in.drop(m, "duplicate ExecutionStarted")
		return
	}
	if in.x != nil || in.version > 0 {
		in.reset()
	}
	ev := *e
	ev.ExecutionID = execID
	in.apply(in.appendEvent(&ev))
	in.afterMessage()
}

// reset discards the current execution for a new one. The releases of
// critical sections already decided are kept: they are owed whatever
// happens to the execution, and so are the releases of the discarded
// execution's section if it had not ended.
func (in *Instance) reset() {
	old := in.x
	if old != nil {
		old.stop()
	}
	in.res.Outbound = slices.DeleteFunc(in.res.Outbound, func(o Outbound) bool {
		return o.Message.Event.Type != history.EntityLockReleased
	})
	if old != nil && !old.ended {
		in.releaseHeld(old)
	}
	in.x, in.version, in.opened = nil, 0, false
	in.res.ResetHistory = true
	in.res.NewEvents = nil
}

func (in *Instance) afterMessage() {
	if c := in.x; c != nil && c.ended && !c.emitted {
		in.emitEnd()
	}
}

// drop leaves a message without effect, except that a lock grant nobody
// waits for is undone (see releaseGrant).
func (in *Instance) drop(m *history.Message, reason string) {
	in.log.Debug("message dropped", "instance", in.id, "type", m.Event.Type.String(), "taskID", m.Event.TaskID,
		"executionID", m.ExecutionID, "reason", reason)
	if m.Event.Type == history.EntityLockGranted {
		in.releaseGrant(m)
	}
}

// ---- Producing events and messages ----

// appendEvent adds e to the step's new events, opening the step with its
// OrchestratorStarted first.
func (in *Instance) appendEvent(e *history.Event) *history.Event {
	res := in.res
	if !in.opened {
		in.opened = true
		in.clock = in.now
		res.NewEvents = append(res.NewEvents, &history.Event{Seq: in.version, Type: history.OrchestratorStarted, Time: in.now})
		in.version++
	}
	e.Seq = in.version
	if e.Time.IsZero() {
		e.Time = in.now
	}
	in.version++
	res.NewEvents = append(res.NewEvents, e)
	return e
}

func (in *Instance) send(o Outbound) { in.res.Outbound = append(in.res.Outbound, o) }

// flush records the code's new actions, in TaskID order, and sends them.
func (in *Instance) flush() {
	c := in.x
	for _, t := range c.unflushed {
		if t.state != statePending {
			continue
		}
		t.state = stateScheduled
		in.emitAction(t)
		if t.kind.fireAndForget() || t.abandoned {
			c.dropTask(t)
		}
	}
	in.resetUnflushed()
}

func (in *Instance) resetUnflushed() {
	c := in.x
	if cap(c.unflushed) > 1024 {
		c.unflushed = nil // do not keep a fan-out's worth of pointers
	} else {
		clear(c.unflushed)
		c.unflushed = c.unflushed[:0]
	}
	c.pending = 0
}

// discardPending forgets the actions the code produced but history will not
// record (the execution ended otherwise).
func (in *Instance) discardPending() {
	c := in.x
	for _, t := range c.unflushed {
		if t.state == statePending {
			c.dropTask(t)
		}
	}
	in.resetUnflushed()
}

func (in *Instance) emitAction(t *task) {
	c := in.x
	self := func(e *history.Event) history.Message {
		return history.Message{InstanceID: in.id, ExecutionID: c.executionID, Event: e}
	}
	switch t.kind {
	case kindActivity:
		in.appendEvent(&history.Event{Type: history.TaskScheduled, TaskID: t.id, Name: t.name, Input: t.input, Attempt: t.attempt, Timeout: t.timeout})
		in.send(Outbound{WorkItem: true, Message: self(&history.Event{
			Type: history.TaskScheduled, Time: in.now, TaskID: t.id, Name: t.name, Input: t.input, Attempt: t.attempt, Timeout: t.timeout,
		})})
	case kindTimer:
		in.appendEvent(&history.Event{Type: history.TimerCreated, TaskID: t.id, FireAt: t.fireAt})
		in.send(Outbound{VisibleAt: t.fireAt, Message: self(&history.Event{
			Type: history.TimerFired, Time: t.fireAt, TaskID: t.id, FireAt: t.fireAt,
		})})
	case kindSub:
		in.appendEvent(&history.Event{Type: history.SubOrchestrationCreated, TaskID: t.id, Name: t.name,
			InstanceID: t.instanceID, ExecutionID: t.executionID, Input: t.input, Attempt: t.attempt})
		in.send(Outbound{Message: history.Message{InstanceID: t.instanceID, ExecutionID: t.executionID, Event: &history.Event{
			Type: history.ExecutionStarted, Time: in.now, Name: t.name, Input: t.input, ExecutionID: t.executionID,
			Parent: &history.Parent{InstanceID: in.id, ExecutionID: c.executionID, Name: c.name, TaskID: t.id},
		}}})
	case kindSendEvent:
		in.appendEvent(&history.Event{Type: history.EventSent, TaskID: t.id, InstanceID: t.instanceID, Name: t.name, Input: t.input})
		in.send(Outbound{Message: history.Message{InstanceID: t.instanceID, Event: &history.Event{
			Type: history.EventRaised, Time: in.now, Name: t.name, Input: t.input,
		}}})
	case kindEntitySignal, kindEntityCall, kindEntityLock, kindEntityUnlock:
		in.emitEntityAction(t)
	}
}

// emitEnd records the end of an execution that did not end by termination.
func (in *Instance) emitEnd() {
	c := in.x
	c.emitted = true
	if c.outcome == outcomeReturned {
		in.flush() // fire-and-forget actions of the last run still happen
		switch {
		case c.panicked:
			c.status, c.failure = StatusFailed, panicFailure(c.panicValue, c.panicStack)
		case c.err != nil:
			c.status, c.failure = StatusFailed, FailureFromError(c.err)
		case c.cont != nil:
			c.status = StatusContinuedAsNew
		default:
			c.status, c.output = StatusCompleted, c.result
		}
	} else {
		c.status = StatusFailed
	}
	end := &history.Event{Type: history.ExecutionCompleted, Status: c.status}
	switch c.status {
	case StatusCompleted:
		end.Input = c.output
	case StatusFailed:
		end.Failure = c.failure
	case StatusContinuedAsNew:
		end.Input = c.cont.input
	}
	in.appendEvent(end)
	in.releaseHeld(c)

	if c.status == StatusContinuedAsNew {
		next := continueAsNewExecutionID(in.id, c.executionID)
		in.send(Outbound{Message: history.Message{InstanceID: in.id, ExecutionID: next, Event: &history.Event{
			Type: history.ExecutionStarted, Time: in.now, Name: c.name, Input: c.cont.input, ExecutionID: next, Parent: c.parent,
		}}})
		if c.cont.keep {
			c.carryTo = next
			for _, e := range c.unconsumedEvents() {
				in.carry(e)
			}
		}
		return
	}
	if p := c.parent; p != nil {
		ev := &history.Event{Type: history.SubOrchestrationCompleted, Time: in.now, TaskID: p.TaskID, Input: c.output}
		if c.status == StatusFailed {
			ev = &history.Event{Type: history.SubOrchestrationFailed, Time: in.now, TaskID: p.TaskID, Failure: c.failure}
		}
		in.send(Outbound{Message: history.Message{InstanceID: p.InstanceID, ExecutionID: p.ExecutionID, Event: ev}})
	}
}

// carry re-sends an unconsumed event to the execution ContinueAsNew starts.
func (in *Instance) carry(e *history.Event) {
	in.send(Outbound{Message: history.Message{InstanceID: in.id, ExecutionID: in.x.carryTo, Event: &history.Event{
		Type: history.EventRaised, Time: e.Time, Name: e.Name, Input: e.Input,
	}}})
}

// endStep records the code's new actions and fills in the result.
func (in *Instance) endStep() {
	res, c := in.res, in.x
	if c == nil {
		return
	}
	if !c.ended {
		in.flush()
	}
	c.carryTo = ""
	res.ExecutionID, res.Done = c.executionID, c.ended
	if len(res.NewEvents) == 0 {
		return
	}
	res.Status, res.Name, res.Input = c.status, c.name, c.input
	res.Output, res.Failure, res.CustomStatus = c.output, c.failure, c.customStatus
	if c.parent != nil {
		res.ParentInstanceID = c.parent.InstanceID
	}
}
