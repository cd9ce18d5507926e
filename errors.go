package taskhub

import (
	"errors"
	"fmt"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/history"
	"github.com/taskhub/taskhub/internal/orchestration"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrInstanceNotFound: no instance has this ID.
	ErrInstanceNotFound = backend.ErrInstanceNotFound
	// ErrInstanceNotFinished: the operation (purge) needs a finished
	// instance.
	ErrInstanceNotFinished = backend.ErrInstanceNotFinished
	// ErrInstanceFinished: the operation (raise, terminate, suspend) needs
	// a running instance.
	ErrInstanceFinished = engine.ErrInstanceFinished
	// ErrInstanceNotFailed: RewindInstance needs a failed instance.
	ErrInstanceNotFailed = engine.ErrInstanceNotFailed
	// ErrEventTimeout: WaitForExternalEvent's timeout passed first.
	ErrEventTimeout = orchestration.ErrEventTimeout
	// ErrActivityTimeout is the cause of an activity attempt that ran past
	// its timeout.
	ErrActivityTimeout = engine.ErrActivityTimeout
	// ErrInvalidInstanceID: an instance ID was empty, too long or had
	// forbidden characters.
	ErrInvalidInstanceID = errors.New("invalid instance ID")
	// ErrHubNotFound: the task hub does not exist (no worker created it).
	ErrHubNotFound = backend.ErrHubNotFound
	// ErrOrchestratorNotFound: a client bound to a worker was asked to
	// start an orchestrator that worker does not have. (A standalone client
	// cannot know; the instance then fails with a message naming it.)
	ErrOrchestratorNotFound = errors.New("orchestrator not registered")
	// ErrInvalidInput: an input is not valid JSON, cannot be encoded, or
	// does not decode into the orchestrator's input type.
	ErrInvalidInput = errors.New("invalid input")
)

// InstanceExistsError: an instance with the ID exists in a status the
// reuse policy refuses.
type InstanceExistsError = backend.InstanceExistsError

// PartitionCountMismatchError: the hub exists with another partition count.
type PartitionCountMismatchError = backend.PartitionCountMismatchError

// FailureDetails describes a failure that crossed a durable boundary: an
// activity's or sub-orchestration's error seen by an orchestrator, or an
// instance's own failure seen by a client.
type FailureDetails struct {
	Type         string          `json:"type,omitempty"`
	Message      string          `json:"message"`
	Stack        string          `json:"stack,omitempty"`
	NonRetryable bool            `json:"nonRetryable,omitempty"`
	Cause        *FailureDetails `json:"cause,omitempty"`
}

func (f *FailureDetails) Error() string {
	if f.Type == "" {
		return f.Message
	}
	return f.Type + ": " + f.Message
}

func failureDetails(f *history.Failure) *FailureDetails {
	if f == nil {
		return nil
	}
	return &FailureDetails{Type: f.Type, Message: f.Message, Stack: f.Stack, NonRetryable: f.NonRetryable, Cause: failureDetails(f.Cause)}
}

// TaskFailedError is returned by Await when an activity, a
// sub-orchestration or an entity call failed (after its retries), or an
// entity refused a lock. Failure carries the remote error's type, message
// and stack.
type TaskFailedError struct {
	// Kind is "activity", "suborchestration", "entity" or "entitylock".
	Kind string
	// Name is the activity, orchestrator or entity operation (for a lock:
	// the critical section's lock ID).
	Name string
	// Entity is the called entity's ID (for a lock: the section's IDs).
	Entity  string
	TaskID  int64
	Failure *FailureDetails
}

func (e *TaskFailedError) Error() string {
	if e.Entity != "" {
		return fmt.Sprintf("%s %q on %q failed: %s", e.Kind, e.Name, e.Entity, e.Failure.Error())
	}
	return fmt.Sprintf("%s %q failed: %s", e.Kind, e.Name, e.Failure.Error())
}

// Unwrap exposes the failure, so errors.As(err, &*FailureDetails) works.
func (e *TaskFailedError) Unwrap() error { return e.Failure }

func wrapTaskError(err error) error {
	var tf *orchestration.TaskFailedError
	if errors.As(err, &tf) {
		return &TaskFailedError{Kind: tf.Kind, Name: tf.Name, Entity: tf.Entity, TaskID: tf.TaskID, Failure: failureDetails(tf.Failure)}
	}
	return err
}

// NonRetryable marks an activity error so that no retry policy retries it.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &engine.NonRetryableError{Err: err}
}
