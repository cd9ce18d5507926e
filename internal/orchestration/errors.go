package orchestration

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/taskhub/taskhub/internal/history"
)

// Failure types the runtime itself produces (history.Failure.Type).
const (
	// FailureTypePanic: the orchestrator function panicked; Stack holds the
	// goroutine's stack at the panic.
	FailureTypePanic = "panic"
	// FailureTypeNonDeterminism: replay did not reproduce the history.
	FailureTypeNonDeterminism = "NonDeterminismError"
	// FailureTypeOrchestratorNotFound: no orchestrator has the instance's name.
	FailureTypeOrchestratorNotFound = "OrchestratorNotFound"
	// FailureTypeTerminated: the instance was terminated; a parent sees its
	// sub-orchestration fail with this type.
	FailureTypeTerminated = "Terminated"
)

var (
	// ErrEventTimeout is returned (wrapped, with the event name) by Await on
	// a WaitForExternalEvent future whose timeout passed first.
	ErrEventTimeout = errors.New("timed out waiting for external event")

	// ErrClosed is returned by Step on a closed Instance.
	ErrClosed = errors.New("orchestration: instance is closed")

	// ErrMisuse is wrapped by the errors Step returns when the engine calls
	// it wrongly (history given twice, a message for another instance).
	ErrMisuse = errors.New("orchestration: engine misuse")

	// ErrInvalidHistory is wrapped when the stored history cannot be a
	// history (sequence numbers out of order, nil events).
	ErrInvalidHistory = errors.New("orchestration: invalid history")

	errGoexit = errors.New("orchestrator function called runtime.Goexit")
)

// TaskFailedError is the error Await returns when an activity or a
// sub-orchestration failed (after its retries, if it had a retry policy),
// when an entity operation called with CallEntity failed, and when an
// entity refused the locks of LockEntities.
type TaskFailedError struct {
	// Kind is KindActivity, KindSubOrchestration, KindEntity or
	// KindEntityLock.
	Kind string
	// Name is the activity's or orchestrator's name, the entity
	// operation's name, or the critical section's lock ID.
	Name string
	// Entity is, for KindEntity, the entity's ID and, for KindEntityLock,
	// the section's entity IDs joined by ", "; empty for the other kinds.
	Entity string
	// TaskID is the TaskID of the (last) attempt.
	TaskID int64
	// Failure is the remote error.
	Failure *history.Failure
}

// Task kinds of TaskFailedError.Kind.
const (
	KindActivity         = "activity"
	KindSubOrchestration = "suborchestration"
	// KindEntity is a failed entity operation (CallEntity).
	KindEntity = "entity"
	// KindEntityLock is a refused critical section (LockEntities).
	KindEntityLock = "entitylock"
)

func (e *TaskFailedError) Error() string {
	if e.Entity != "" {
		return fmt.Sprintf("%s %q on %q (task %d) failed: %s", e.Kind, e.Name, e.Entity, e.TaskID, e.Failure.Error())
	}
	return fmt.Sprintf("%s %q (task %d) failed: %s", e.Kind, e.Name, e.TaskID, e.Failure.Error())
}

// Unwrap exposes the failure, so errors.As(err, new(*history.Failure)) works.
func (e *TaskFailedError) Unwrap() error {
	if e.Failure == nil {
		return nil // not a typed nil in an error interface
	}
	return e.Failure
}

// NonDeterminismError explains how replay diverged from history. It reaches
// users as the Message of a failure of type FailureTypeNonDeterminism.
type NonDeterminismError struct {
	// Orchestrator is the orchestrator's name.
	Orchestrator string
	// Expected is the scheduling event of history the code did not
	// reproduce, nil when the code produced an action history lacks.
	Expected *history.Event
	// Produced describes the code's action with Expected's TaskID, or the
	// action history lacks; empty when the code produced none.
	Produced string
	// Returned is true when the function returned instead of producing
	// Expected.
	Returned bool
	// Before is the history event (an OrchestratorStarted) by which the
	// Produced action should have been recorded; nil means the end of the
	// history, whose length is BeforeSeq.
	Before    *history.Event
	BeforeSeq int64
}

func (e *NonDeterminismError) Error() string {
	head := fmt.Sprintf("non-deterministic orchestrator %q: ", e.Orchestrator)
	switch {
	case e.Expected != nil && e.Returned:
		return head + "history has " + describeEvent(e.Expected) + ", but the orchestrator function returned"
	case e.Expected != nil && e.Produced != "":
		return head + "history has " + describeEvent(e.Expected) + ", but the code produced " + e.Produced
	case e.Expected != nil:
		return head + "history has " + describeEvent(e.Expected) +
			fmt.Sprintf(", but the code produced no action with TaskID %d", e.Expected.TaskID)
	case e.Before != nil:
		return head + "the code produced " + e.Produced + ", but history has no matching event before " + describeEvent(e.Before)
	default:
		return head + "the code produced " + e.Produced +
			fmt.Sprintf(", but history has no matching event (history ends after %d events)", e.BeforeSeq)
	}
}

func describeEvent(e *history.Event) string {
	switch e.Type {
	case history.TaskScheduled, history.SubOrchestrationCreated, history.EventSent:
		return fmt.Sprintf("%s %q (TaskID %d, Seq %d)", e.Type, e.Name, e.TaskID, e.Seq)
	case history.TimerCreated:
		return fmt.Sprintf("%s (TaskID %d, Seq %d)", e.Type, e.TaskID, e.Seq)
	case history.EntityOperationSignaled, history.EntityOperationCalled:
		return fmt.Sprintf("%s %q on %q (TaskID %d, Seq %d)", e.Type, e.Name, e.InstanceID, e.TaskID, e.Seq)
	case history.EntityLockRequested, history.EntityLockReleased:
		return fmt.Sprintf("%s %s (TaskID %d, Seq %d)", e.Type, e.Input, e.TaskID, e.Seq)
	default:
		return fmt.Sprintf("%s (Seq %d)", e.Type, e.Seq)
	}
}

// FailureFromError turns the error an orchestrator function returned into
// the durable failure of its instance.
//
// Each level of the error's Unwrap chain becomes one Failure, with Type the
// Go type of that level and Message its text. A *TaskFailedError keeps the
// remote failure's Type, Stack and causes (so a failure crosses a chain of
// sub-orchestrations with its original type), with the task named in the
// Message. A *history.Failure is kept as it is. NonRetryable is set when an
// error in the chain has a NonRetryable() bool method that returns true, so
// a parent's retry policy respects it.
func FailureFromError(err error) *history.Failure {
	if err == nil {
		return nil
	}
	switch e := err.(type) {
	case *TaskFailedError:
		f := &history.Failure{Type: "TaskFailedError", Message: e.Error()}
		if e.Failure != nil {
			f.Type, f.Stack, f.NonRetryable, f.Cause = e.Failure.Type, e.Failure.Stack, e.Failure.NonRetryable, e.Failure.Cause
		}
		return f
	case *history.Failure:
		c := *e
		return &c
	}
	f := &history.Failure{Type: typeName(err), Message: err.Error()}
	if nr, ok := err.(interface{ NonRetryable() bool }); ok && nr.NonRetryable() {
		f.NonRetryable = true
	}
	var inner error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		inner = u.Unwrap()
	case interface{ Unwrap() []error }:
		if errs := u.Unwrap(); len(errs) > 0 {
			inner = errs[0] // a Failure has one cause: keep the first
		}
	}
	if inner != nil {
		f.Cause = FailureFromError(inner)
		f.NonRetryable = f.NonRetryable || f.Cause.NonRetryable
	}
	return f
}

func typeName(v any) string {
	if v == nil {
		return "<nil>"
	}
	return reflect.TypeOf(v).String()
}

// panicFailure describes a recovered panic of the orchestrator function.
func panicFailure(value any, stack []byte) *history.Failure {
	f := &history.Failure{Type: FailureTypePanic, Message: fmt.Sprint(value), Stack: string(stack)}
	if err, ok := value.(error); ok {
		f.Cause = FailureFromError(err)
	}
	return f
}
