package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/history"
	"github.com/taskhub/taskhub/internal/orchestration"
	"github.com/taskhub/taskhub/internal/payload"
)

// ErrActivityTimeout is the cause of a failure of an activity that ran past
// its timeout.
var ErrActivityTimeout = errors.New("activity timed out")

// NonRetryableError marks an error that must not be retried.
type NonRetryableError struct{ Err error }

func (e *NonRetryableError) Error() string { return e.Err.Error() }
func (e *NonRetryableError) Unwrap() error { return e.Err }

// NonRetryable marks the error for orchestration.FailureFromError, so an
// orchestrator returning NonRetryable(err) is not retried by its parent.
func (e *NonRetryableError) NonRetryable() bool { return true }

// runActivity is the dispatcher's Run: it executes one work item and
// completes it with a TaskCompleted or TaskFailed message to the
// orchestration, in one commit that also deletes the work item.
func (e *Engine) runActivity(ctx context.Context, it *backend.WorkItem) {
	now := e.clk.Now()
	m, err := e.codec.decodeMessage(ctx, it.Data)
	if err != nil || m.Event.Type != history.TaskScheduled {
		if err == nil {
			err = fmt.Errorf("work item carries %s, not TaskScheduled", m.Event.Type)
		}
		e.poisonWorkItem(ctx, it, nil, fmt.Sprintf("work item %s cannot be decoded: %v", it.ID, err))
		return
	}
	ev := m.Event
	if e.opts.PoisonThreshold > 0 && it.DequeueCount > e.opts.PoisonThreshold {
		e.poisonWorkItem(ctx, it, m, fmt.Sprintf("activity %q (task %d of instance %q) was received %d times (poison threshold %d) and set aside; the worker running it probably crashed each time",
			ev.Name, ev.TaskID, m.InstanceID, it.DequeueCount, e.opts.PoisonThreshold))
		return
	}

	start := e.clk.Now()
	out, failure := e.invokeActivity(ctx, m)
	if h := e.opts.Hooks.OnActivity; h != nil {
		var herr error
		if failure != nil {
			herr = failure
		}
		h(ev.Name, e.clk.Now().Sub(start), herr)
	}
	if failure != nil && ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) && !errors.Is(failure, ErrActivityTimeout) {
		// Shutdown cancelled the activity: hand it to another worker
		// rather than recording a failure that is not the activity's.
		_ = e.be.WorkItemAbandon(context.WithoutCancel(ctx), &backend.WorkItemAbandonParams{ID: it.ID, LockToken: it.LockToken, VisibleAt: now})
		return
	}

	reply := &history.Message{InstanceID: m.InstanceID, ExecutionID: m.ExecutionID, Event: &history.Event{
		Type: history.TaskCompleted, Time: e.clk.Now(), TaskID: ev.TaskID, Name: ev.Name, Input: out,
	}}
	if failure != nil {
		reply.Event.Type = history.TaskFailed
		reply.Event.Input = nil
		reply.Event.Failure = payload.TrimFailure(failure) // huge messages or stacks stay bounded
	}
	e.completeWorkItem(ctx, it, reply, nil)
}

func (e *Engine) invokeActivity(ctx context.Context, m *history.Message) (out []byte, failure *history.Failure) {
	ev := m.Event
	fn, ok := e.opts.Activities(ev.Name)
	if !ok {
		return nil, &history.Failure{Type: "ActivityNotRegistered", Message: fmt.Sprintf("activity %q is not registered with this worker", ev.Name), NonRetryable: true}
	}
	timeout := ev.Timeout
	if timeout <= 0 && e.opts.ActivityTimeout != nil {
		timeout = e.opts.ActivityTimeout(ev.Name)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, ErrActivityTimeout)
		defer cancel()
	}
	info := ActivityInfo{Name: ev.Name, InstanceID: m.InstanceID, TaskID: ev.TaskID, Attempt: int(max(ev.Attempt, 1))}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: &panicError{value: r, stack: string(debug.Stack())}}
			}
		}()
		o, err := fn(ctx, info, ev.Input)
		done <- result{o, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), ErrActivityTimeout) {
			// The activity ignores its context; report the timeout now.
			// Its goroutine finishes on its own, its result is dropped.
			return nil, &history.Failure{Type: "TimeoutError", Message: fmt.Sprintf("activity %q timed out after %s", ev.Name, timeout)}
		}
		r = <-done
	}
	if r.err == nil {
		return r.out, nil
	}
	if errors.Is(context.Cause(ctx), ErrActivityTimeout) && ctx.Err() != nil {
		return nil, &history.Failure{Type: "TimeoutError", Message: fmt.Sprintf("activity %q timed out after %s: %v", ev.Name, timeout, r.err)}
	}
	return nil, FailureFromError(r.err)
}

// completeWorkItem commits the reply and deletes the work item, plus a
// poison row if given. A lost lock means another worker has the item: our
// result is dropped and theirs counts.
func (e *Engine) completeWorkItem(ctx context.Context, it *backend.WorkItem, reply *history.Message, poison *backend.Poison) {
	now := e.clk.Now()
	unit := &backend.Commit{WorkItem: &backend.WorkItemLock{ID: it.ID, LockToken: it.LockToken}, Now: now}
	out := e.newOutbox(now)
	if reply != nil {
		nm := &backend.NewMessage{
			ID: newID(), Partition: backend.PartitionOf(reply.InstanceID, e.opts.PartitionCount),
			InstanceID: reply.InstanceID, Data: e.codec.encodeMessage(reply, &unit.Writes.Payloads),
		}
		unit.Writes.ControlSend = []*backend.NewMessage{nm}
		out.addControl(nm, mayOvertake(reply.Event.Type))
	}
	if poison != nil {
		unit.Writes.Poison = []*backend.Poison{poison}
	}
	err := e.committer.Commit(context.WithoutCancel(ctx), unit)
	switch {
	case errors.Is(err, backend.ErrLockLost):
		e.log.Warn("activity result dropped: work item lock lost", "id", it.ID)
	case err != nil:
		e.log.Warn("activity completion failed: work item abandoned", "id", it.ID, "err", err)
		_ = e.be.WorkItemAbandon(context.WithoutCancel(ctx), &backend.WorkItemAbandonParams{ID: it.ID, LockToken: it.LockToken, VisibleAt: now.Add(time.Second)})
	default:
		out.committed()
	}
}

func (e *Engine) poisonWorkItem(ctx context.Context, it *backend.WorkItem, m *history.Message, reason string) {
	e.log.Error("work item moved to poison", "id", it.ID, "reason", reason)
	// An undecodable item names no task: fail its instance instead.
	reply := &history.Message{InstanceID: it.InstanceID, Event: &history.Event{
		Type: history.ExecutionTerminated, Time: e.clk.Now(), Input: mustJSON(reason), Status: history.StatusFailed,
	}}
	if m != nil {
		reply = &history.Message{InstanceID: m.InstanceID, ExecutionID: m.ExecutionID, Event: &history.Event{
			Type: history.TaskFailed, Time: e.clk.Now(), TaskID: m.Event.TaskID, Name: m.Event.Name,
			Failure: &history.Failure{Type: "PoisonMessage", Message: reason, NonRetryable: true},
		}}
	}
	e.completeWorkItem(ctx, it, reply, &backend.Poison{
		ID: it.ID, Queue: "workitem", Partition: -1, InstanceID: it.InstanceID, Data: it.Data,
		DequeueCount: it.DequeueCount, Reason: reason, CreatedAt: e.clk.Now(),
	})
}

type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// FailureFromError converts an activity's error into a durable failure: a
// recovered panic keeps its stack, NonRetryable(err) keeps err's own type,
// and everything else follows the orchestration runtime's conversion (type,
// message, chain of causes).
func FailureFromError(err error) *history.Failure {
	var pe *panicError
	if errors.As(err, &pe) {
		return &history.Failure{Type: "panic", Message: err.Error(), Stack: pe.stack}
	}
	var nr *NonRetryableError
	if errors.As(err, &nr) {
		f := orchestration.FailureFromError(nr.Err)
		f.NonRetryable = true
		return f
	}
	return orchestration.FailureFromError(err)
}

// FailureJSON is how a failure is stored in an instance row.
type FailureJSON struct {
	Type         string       `json:"type,omitempty"`
	Message      string       `json:"message"`
	Stack        string       `json:"stack,omitempty"`
	NonRetryable bool         `json:"nonRetryable,omitempty"`
	Cause        *FailureJSON `json:"cause,omitempty"`
}

// EncodeFailure converts a failure to its stored form.
func EncodeFailure(f *history.Failure) *FailureJSON {
	if f == nil {
		return nil
	}
	return &FailureJSON{Type: f.Type, Message: f.Message, Stack: f.Stack, NonRetryable: f.NonRetryable, Cause: EncodeFailure(f.Cause)}
}

// DecodeFailure converts a stored failure back.
func DecodeFailure(j *FailureJSON) *history.Failure {
	if j == nil {
		return nil
	}
	return &history.Failure{Type: j.Type, Message: j.Message, Stack: j.Stack, NonRetryable: j.NonRetryable, Cause: DecodeFailure(j.Cause)}
}
