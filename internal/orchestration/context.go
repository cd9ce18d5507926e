package orchestration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

// Context is the orchestrator function's view of its execution, and the
// state of that execution. Every method must be called from the
// orchestrator's own goroutine; Await detects other goroutines and panics.
type Context struct {
	in *Instance
	fn Func

	instanceID  string
	executionID string
	name        string
	input       []byte
	parent      *history.Parent

	// Scheduling. tasks holds every task that is pending (produced by the
	// code, not yet in history) or scheduled (in history, not completed):
	// a completion is one map lookup. unflushed lists, in TaskID order,
	// the tasks produced since the last flush (live) or step boundary
	// (replay); pending counts those still unmatched.
	nextTaskID int64
	guids      int64
	tasks      map[int64]*task
	unflushed  []*task
	pending    int

	// External events, by lower-cased name.
	events   map[string]*eventQueue
	arrivals int64

	// Suspension: events applied while suspended wait here, in order.
	suspended bool
	deferred  []*history.Event

	// Durable entities. lock is the critical section as the code sees it:
	// from LockEntities until UnlockEntities or the refusal of its locks.
	// held is the section as history records it (requested and neither
	// released nor refused): what the end of the execution must release.
	lock *section
	held *heldSection

	customStatus []byte
	cont         *continueAsNew
	logger       *slog.Logger
	size         int

	// Dispatcher. turn says who may run; resume and yield hand the turn
	// over; live is true while the goroutine exists.
	turn     atomic.Int32
	resume   chan bool // true: exit
	yield    chan struct{}
	live     bool
	exiting  bool
	awaiting *Future

	// What the function did.
	returned   bool
	result     []byte
	err        error
	panicked   bool
	panicValue any
	panicStack []byte

	// The execution's outcome. ended: no further event applies; emitted:
	// the end is in the step's events (ExecutionCompleted appended or the
	// ExecutionTerminated applied).
	status  string
	ended   bool
	emitted bool
	outcome outcome
	output  []byte
	failure *history.Failure
	// carryTo is the new execution's ID between ContinueAsNew (with
	// keepUnprocessedEvents) and the end of that step: later EventRaised
	// messages of the same batch are forwarded to it.
	carryTo string
}

type outcome uint8

const (
	outcomeNone     outcome = iota
	outcomeReturned         // the function returned (or panicked)
	outcomeFailed           // the runtime failed the execution (failure set)
)

// Runtime statuses reported in StepResult.Status, named as in backend.Status.
const (
	StatusRunning        = "Running"
	StatusSuspended      = "Suspended"
	StatusCompleted      = history.StatusCompleted
	StatusFailed         = history.StatusFailed
	StatusTerminated     = history.StatusTerminated
	StatusContinuedAsNew = history.StatusContinuedAsNew
)

const (
	turnDriver int32 = iota // the step runs; the orchestrator is parked or not started
	turnOrch                // the orchestrator goroutine runs
	turnDone                // the orchestrator goroutine has ended
)

// Rough memory costs for SizeBytes (an estimate for an MB-bounded cache,
// not an accounting).
const (
	contextOverhead   = 2048
	goroutineOverhead = 8192
	taskOverhead      = 200
	eventOverhead     = 160
)

type continueAsNew struct {
	input []byte
	keep  bool
}

type taskKind uint8

const (
	kindActivity taskKind = iota + 1
	kindTimer
	kindSub
	kindSendEvent
	kindEntitySignal
	kindEntityCall
	kindEntityLock
	kindEntityUnlock
)

// fireAndForget reports whether tasks of the kind need no completion: they
// have no future and are forgotten once recorded.
func (k taskKind) fireAndForget() bool {
	return k == kindSendEvent || k == kindEntitySignal || k == kindEntityUnlock
}

type taskState uint8

const (
	statePending   taskState = iota + 1 // produced by the code, not in history yet
	stateScheduled                      // in history, awaiting its completion
)

type task struct {
	id          int64
	kind        taskKind
	state       taskState
	queued      bool // a completion waits in the suspension buffer
	abandoned   bool // entity lock: UnlockEntities came first; forget it once recorded
	attempt     int32
	name        string
	instanceID  string // sub-orchestration: the child; SendEvent, entity signal or call: the target
	executionID string // sub-orchestration: the child's execution
	input       []byte
	fireAt      time.Time
	timeout     time.Duration
	entities    []string // entity lock or unlock: the section, sorted
	future      *Future
}

// describe names the action for non-determinism messages, in the words of
// the orchestrator API.
func (t *task) describe() string {
	switch t.kind {
	case kindActivity:
		return fmt.Sprintf("CallActivity %q (TaskID %d)", t.name, t.id)
	case kindTimer:
		return fmt.Sprintf("CreateTimer (TaskID %d)", t.id)
	case kindSub:
		return fmt.Sprintf("CallSubOrchestrator %q (TaskID %d)", t.name, t.id)
	case kindEntitySignal:
		return fmt.Sprintf("SignalEntity %q on %q (TaskID %d)", t.name, t.instanceID, t.id)
	case kindEntityCall:
		return fmt.Sprintf("CallEntity %q on %q (TaskID %d)", t.name, t.instanceID, t.id)
	case kindEntityLock:
		return fmt.Sprintf("LockEntities %s (TaskID %d)", t.input, t.id)
	case kindEntityUnlock:
		return fmt.Sprintf("UnlockEntities of %s (TaskID %d)", t.input, t.id)
	default:
		return fmt.Sprintf("SendEvent %q to %q (TaskID %d)", t.name, t.instanceID, t.id)
	}
}

// matches reports whether a recorded scheduling event of the task's kind
// records this task: same name and, for entities, same target or section.
func (t *task) matches(e *history.Event) bool {
	switch t.kind {
	case kindTimer:
		return true
	case kindEntitySignal, kindEntityCall:
		return t.name == e.Name && t.instanceID == e.InstanceID
	case kindEntityLock, kindEntityUnlock:
		return t.name == e.Name && bytes.Equal(t.input, e.Input)
	}
	return t.name == e.Name
}

// kindScheduledBy maps a scheduling event type to the task kind it records.
func kindScheduledBy(t history.Type) taskKind {
	switch t {
	case history.TaskScheduled:
		return kindActivity
	case history.TimerCreated:
		return kindTimer
	case history.SubOrchestrationCreated:
		return kindSub
	case history.EventSent:
		return kindSendEvent
	case history.EntityOperationSignaled:
		return kindEntitySignal
	case history.EntityOperationCalled:
		return kindEntityCall
	case history.EntityLockRequested:
		return kindEntityLock
	case history.EntityLockReleased:
		return kindEntityUnlock
	}
	return 0
}

// kindCompletedBy maps a completion event type to the task kind it
// completes. EntityOperationFailed also completes an entity lock (a refused
// lock request): see completes.
func kindCompletedBy(t history.Type) taskKind {
	switch t {
	case history.TaskCompleted, history.TaskFailed:
		return kindActivity
	case history.TimerFired:
		return kindTimer
	case history.SubOrchestrationCompleted, history.SubOrchestrationFailed:
		return kindSub
	case history.EntityOperationCompleted, history.EntityOperationFailed:
		return kindEntityCall
	case history.EntityLockGranted:
		return kindEntityLock
	}
	return 0
}

// completes reports whether a completion event of type typ can complete a
// task of kind k.
func completes(typ history.Type, k taskKind) bool {
	return k == kindCompletedBy(typ) || (typ == history.EntityOperationFailed && k == kindEntityLock)
}

func newContext(in *Instance, started *history.Event) *Context {
	c := &Context{
		in:          in,
		instanceID:  in.id,
		executionID: started.ExecutionID,
		name:        started.Name,
		input:       started.Input,
		parent:      started.Parent,
		tasks:       make(map[int64]*task),
		events:      make(map[string]*eventQueue),
		status:      StatusRunning,
		size:        contextOverhead + len(started.Input),
	}
	return c
}

// ---- The orchestrator API ----

// InstanceID returns the orchestration's instance ID.
func (c *Context) InstanceID() string { return c.instanceID }

// Name returns the orchestrator's name.
func (c *Context) Name() string { return c.name }

// Input returns the execution's input (encoded JSON).
func (c *Context) Input() []byte { return c.input }

// ExecutionID returns the current execution's ID.
func (c *Context) ExecutionID() string { return c.executionID }

// CurrentTime returns the history time: the Time of the OrchestratorStarted
// event being processed. It is the same on every replay; never use the wall
// clock in orchestrator code.
func (c *Context) CurrentTime() time.Time { return c.in.clock }

// IsReplaying reports whether the code is re-executing recorded history.
func (c *Context) IsReplaying() bool { return c.in.replaying }

// NewGUID returns a deterministic UUID (v5 over the instance ID, the
// execution ID and a counter): the same sequence on every replay.
func (c *Context) NewGUID() string {
	c.checkTurn("NewGUID")
	n := c.guids
	c.guids++
	return guidID(c.instanceID, c.executionID, n)
}

// SetCustomStatus sets the instance's custom status (encoded JSON), reported
// in every StepResult that applies events.
func (c *Context) SetCustomStatus(status []byte) {
	c.checkTurn("SetCustomStatus")
	c.size += len(status) - len(c.customStatus)
	c.customStatus = status
}

// Logger returns a logger that is silent while replaying, so each line is
// written once, when the code runs for the first time.
func (c *Context) Logger() *slog.Logger {
	if c.logger == nil {
		c.logger = slog.New(replayHandler{c: c, h: c.in.userLog.Handler()}).
			With("instanceID", c.instanceID, "executionID", c.executionID, "orchestrator", c.name)
	}
	return c.logger
}

// CallActivity schedules an activity and returns its future. The value is
// the activity's output; a failure is a *TaskFailedError.
func (c *Context) CallActivity(name string, input []byte, opts ActivityOptions) *Future {
	c.checkTurn("CallActivity")
	if opts.Retry != nil {
		return c.withRetry(kindActivity, name, "", input, opts.Timeout, opts.Retry)
	}
	return c.scheduleActivity(name, input, opts.Timeout, 1).future
}

// CallSubOrchestrator starts orchestrator name as a child instance and
// returns a future for its output. An empty instanceID derives the child's
// ID from this instance and the call's TaskID. A failure is a
// *TaskFailedError.
func (c *Context) CallSubOrchestrator(name, instanceID string, input []byte, opts SubOrchestratorOptions) *Future {
	c.checkTurn("CallSubOrchestrator")
	if opts.Retry != nil {
		return c.withRetry(kindSub, name, instanceID, input, 0, opts.Retry)
	}
	return c.scheduleSub(name, instanceID, input, 1).future
}

// CreateTimer returns a future that completes at fireAt (a durable timer).
func (c *Context) CreateTimer(fireAt time.Time) *Future {
	c.checkTurn("CreateTimer")
	return c.scheduleTimer(fireAt).future
}

// WaitForExternalEvent returns a future for the next event raised with this
// name (case-insensitive). Events raised before anyone waits are buffered,
// and each is consumed by one wait, oldest first. With timeout >= 0 the
// future fails with ErrEventTimeout if the event has not come when the
// timeout (a durable timer) passes; zero fails at once unless an event is
// buffered. A negative timeout waits forever.
func (c *Context) WaitForExternalEvent(name string, timeout time.Duration) *Future {
	c.checkTurn("WaitForExternalEvent")
	f := &Future{}
	q := c.queue(name)
	if e, ok := q.popBuffered(); ok {
		c.size -= eventOverhead + len(e.Input)
		f.resolve(e.Input, nil)
		return f
	}
	if timeout == 0 {
		f.resolve(nil, eventTimeoutError(name))
		return f
	}
	w := &eventWaiter{f: f, name: name}
	q.waiters = append(q.waiters, w)
	if timeout > 0 {
		c.scheduleTimer(c.in.clock.Add(timeout)).future.listen(w, 0)
	}
	return f
}

// SendEvent raises event name on another instance (fire and forget).
func (c *Context) SendEvent(instanceID, name string, input []byte) {
	c.checkTurn("SendEvent")
	t := c.newTask(kindSendEvent)
	t.instanceID, t.name, t.input = instanceID, name, input
	c.size += len(input)
}

// ContinueAsNew restarts the orchestration with input and an empty history
// when the function returns (without an error). With keepUnprocessedEvents,
// raised events the code has not consumed are re-sent to the new execution.
func (c *Context) ContinueAsNew(input []byte, keepUnprocessedEvents bool) {
	c.checkTurn("ContinueAsNew")
	c.cont = &continueAsNew{input: input, keep: keepUnprocessedEvents}
}

// Await parks the orchestrator until f completes, and returns its value and
// error. It returns at once if f is already done.
func (c *Context) Await(f *Future) ([]byte, error) {
	c.checkTurn("Await")
	if f == nil {
		return nil, fmt.Errorf("orchestration: Await of a nil Future")
	}
	if c.exiting {
		// A deferred call of the code runs while Close ends the goroutine:
		// there is nobody to resume it, so keep exiting.
		c.goexit()
	}
	if !f.done {
		c.awaiting = f
		c.park()
		c.awaiting = nil
	}
	return f.value, f.err
}

// WhenAll returns a future that completes when all fs have; its error is
// the first failure in argument order, its value nil.
func (c *Context) WhenAll(fs ...*Future) *Future {
	c.checkTurn("WhenAll")
	checkFutures("WhenAll", fs)
	return whenAll(fs)
}

// WhenAny returns a future that completes when the first of fs does; its
// Winner method gives that future's index, and its value is nil. When
// several are already done, the first in argument order wins.
func (c *Context) WhenAny(fs ...*Future) *Future {
	c.checkTurn("WhenAny")
	checkFutures("WhenAny", fs)
	return whenAny(fs)
}

func checkFutures(op string, fs []*Future) {
	if i := slices.Index(fs, nil); i >= 0 {
		panic(fmt.Sprintf("orchestration: %s: future %d is nil", op, i))
	}
}

// checkTurn makes a call from a goroutine other than the orchestrator's
// fail loudly instead of corrupting the execution's state. It detects calls
// made while the orchestrator is parked or finished; two goroutines running
// orchestrator code at once are caught when one of them parks (see park).
func (c *Context) checkTurn(op string) {
	if c.turn.Load() != turnOrch {
		panic(fmt.Sprintf("orchestration: %s called outside the orchestrator goroutine of instance %q: "+
			"orchestrator code must not use its Context from other goroutines", op, c.instanceID))
	}
}

// ---- Scheduling (also used by retries, on the driver side) ----

func (c *Context) newTask(kind taskKind) *task {
	t := &task{id: c.nextTaskID, kind: kind, state: statePending}
	c.nextTaskID++
	if !kind.fireAndForget() {
		t.future = &Future{}
	}
	c.tasks[t.id] = t
	c.unflushed = append(c.unflushed, t)
	c.pending++
	c.size += taskOverhead
	return t
}

func (c *Context) scheduleActivity(name string, input []byte, timeout time.Duration, attempt int32) *task {
	t := c.newTask(kindActivity)
	t.name, t.input, t.timeout, t.attempt = name, input, timeout, attempt
	c.size += len(input)
	return t
}

func (c *Context) scheduleTimer(fireAt time.Time) *task {
	t := c.newTask(kindTimer)
	t.fireAt = fireAt.Round(0).UTC()
	return t
}

func (c *Context) scheduleSub(name, instanceID string, input []byte, attempt int32) *task {
	t := c.newTask(kindSub)
	if instanceID == "" {
		instanceID = defaultChildID(c.instanceID, c.executionID, t.id)
	}
	t.name, t.instanceID, t.input, t.attempt = name, instanceID, input, attempt
	t.executionID = childExecutionID(c.instanceID, c.executionID, t.id)
	c.size += len(input)
	return t
}

// dropTask forgets a task that is completed (or needs no completion).
func (c *Context) dropTask(t *task) {
	delete(c.tasks, t.id)
	c.size -= taskOverhead + len(t.input)
}

// ---- External events ----

// eventQueue holds, for one event name, the events nobody waited for yet
// and the waits no event satisfied yet, both oldest first. Heads advance
// instead of re-slicing from the front, so popping is O(1).
type eventQueue struct {
	buffered []bufferedEvent
	bhead    int
	waiters  []*eventWaiter
	whead    int
}

type bufferedEvent struct {
	e       *history.Event
	arrival int64 // order across names, for carrying events over
}

// eventWaiter is one WaitForExternalEvent; it listens to its timeout timer.
type eventWaiter struct {
	f    *Future
	name string
}

func (w *eventWaiter) futureDone(*Future, int) {
	w.f.resolve(nil, eventTimeoutError(w.name)) // no-op if the event came first
}

func eventTimeoutError(name string) error {
	return fmt.Errorf("external event %q: %w", name, ErrEventTimeout)
}

// eventKey folds case: event names are case-insensitive, as in Durable
// Functions.
func eventKey(name string) string { return strings.ToLower(name) }

func (c *Context) queue(name string) *eventQueue {
	k := eventKey(name)
	q := c.events[k]
	if q == nil {
		q = &eventQueue{}
		c.events[k] = q
	}
	return q
}

func (q *eventQueue) popBuffered() (*history.Event, bool) {
	if q.bhead == len(q.buffered) {
		return nil, false
	}
	e := q.buffered[q.bhead].e
	q.buffered[q.bhead] = bufferedEvent{}
	q.bhead++
	if q.bhead == len(q.buffered) {
		q.buffered, q.bhead = q.buffered[:0], 0
	}
	return e, true
}

// popWaiter returns the oldest wait that has not timed out.
func (q *eventQueue) popWaiter() *eventWaiter {
	for q.whead < len(q.waiters) {
		w := q.waiters[q.whead]
		q.waiters[q.whead] = nil
		q.whead++
		if q.whead == len(q.waiters) {
			q.waiters, q.whead = q.waiters[:0], 0
		}
		if !w.f.done {
			return w
		}
	}
	return nil
}

// raise delivers an EventRaised to the oldest wait, or buffers it.
func (c *Context) raise(e *history.Event) {
	q := c.queue(e.Name)
	if !c.ended {
		if w := q.popWaiter(); w != nil {
			w.f.resolve(e.Input, nil)
			return
		}
	}
	q.buffered = append(q.buffered, bufferedEvent{e: e, arrival: c.arrivals})
	c.arrivals++
	c.size += eventOverhead + len(e.Input)
}

// unconsumedEvents returns the buffered events in arrival order.
func (c *Context) unconsumedEvents() []*history.Event {
	var all []bufferedEvent
	for _, q := range c.events {
		all = append(all, q.buffered[q.bhead:]...)
	}
	slices.SortFunc(all, func(a, b bufferedEvent) int { return int(a.arrival - b.arrival) })
	out := make([]*history.Event, len(all))
	for i, b := range all {
		out[i] = b.e
	}
	return out
}

// ---- The cooperative dispatcher ----
//
// The driver (Step) and the orchestrator goroutine pass one turn back and
// forth over two unbuffered channels, so exactly one of them runs and each
// sees the other's writes (a channel operation is a happens-before edge).

// launch starts the orchestrator goroutine and waits until it parks or ends.
func (c *Context) launch() {
	c.resume = make(chan bool)
	c.yield = make(chan struct{})
	c.live = true
	c.turn.Store(turnOrch)
	go c.main()
	c.waitYield()
}

// run gives the turn to the parked orchestrator until it parks again or ends.
func (c *Context) run() {
	c.turn.Store(turnOrch)
	c.resume <- false
	c.waitYield()
}

// stop ends a parked orchestrator goroutine with runtime.Goexit and waits
// until its deferred calls have run.
func (c *Context) stop() {
	if !c.live {
		return
	}
	c.turn.Store(turnOrch)
	c.resume <- true
	c.waitYield()
}

func (c *Context) waitYield() {
	<-c.yield
	if c.turn.Load() == turnDone {
		c.live = false
	}
}

// park hands the turn back to the driver and blocks until resumed.
func (c *Context) park() {
	if !c.turn.CompareAndSwap(turnOrch, turnDriver) {
		panic(fmt.Sprintf("orchestration: Await called from two goroutines at once in instance %q: "+
			"orchestrator code must not use its Context from other goroutines", c.instanceID))
	}
	c.yield <- struct{}{}
	if exit := <-c.resume; exit {
		c.exiting = true
		c.goexit()
	}
}

// goexit is the only way the runtime unwinds user code: unlike a panic it
// cannot be recovered by the code, which would otherwise swallow it (or
// misreport it) on every eviction.
func (c *Context) goexit() { runtime.Goexit() }

// main is the orchestrator goroutine.
func (c *Context) main() {
	completed := false
	defer func() {
		if !completed {
			r := recover() // nil for runtime.Goexit
			switch {
			case c.exiting:
				// Ended by stop: the outcome is the driver's business.
			case r != nil:
				c.returned, c.panicked, c.panicValue, c.panicStack = true, true, r, debug.Stack()
			default:
				c.returned, c.err = true, errGoexit
			}
		}
		c.turn.Store(turnDone)
		c.yield <- struct{}{}
	}()
	out, err := c.fn(c)
	completed = true
	c.returned, c.result, c.err = true, out, err
}

// ---- Logging ----

// replayHandler drops records while the code replays. It checks the flag on
// every record because the same logger is used before and after the replay
// catches up.
type replayHandler struct {
	c *Context
	h slog.Handler
}

func (r replayHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !r.c.in.replaying && r.h.Enabled(ctx, l)
}

func (r replayHandler) Handle(ctx context.Context, rec slog.Record) error {
	if r.c.in.replaying {
		return nil
	}
	return r.h.Handle(ctx, rec)
}

func (r replayHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return replayHandler{c: r.c, h: r.h.WithAttrs(as)}
}

func (r replayHandler) WithGroup(name string) slog.Handler {
	return replayHandler{c: r.c, h: r.h.WithGroup(name)}
}
