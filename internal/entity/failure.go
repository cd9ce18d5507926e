package entity

import (
	"errors"
	"fmt"

	"github.com/taskhub/taskhub/internal/history"
)

// Failure types this package produces (history.Failure.Type).
const (
	// FailureTypeNotRegistered: no entity of this name is registered with
	// the worker.
	FailureTypeNotRegistered = "EntityNotRegistered"
	// FailureTypeOperationNotFound: the entity has no such operation.
	FailureTypeOperationNotFound = "EntityOperationNotFound"
	// FailureTypePanic: the operation panicked; Stack holds the stack. The
	// same type as an orchestrator's or an activity's panic.
	FailureTypePanic = "panic"
	// FailureTypeInvalidAction: the operation asked for a signal or a start
	// that cannot be sent; the operation fails as a whole.
	FailureTypeInvalidAction = "EntityInvalidAction"
	// FailureTypeInvalidLock: a Lock request whose LockSet is not in
	// ascending order after the entity, which could deadlock.
	FailureTypeInvalidLock = "EntityInvalidLockRequest"
	// FailureTypeInvalidRequest: a request of an unknown kind (a message
	// written by a newer version).
	FailureTypeInvalidRequest = "EntityInvalidRequest"
)

// NotRegisteredFailure is the failure of an operation on an entity whose
// name the worker does not know. It is non-retryable: retrying cannot make
// the entity appear.
func NotRegisteredFailure(entityID, operation string) *history.Failure {
	name, _, ok := ParseID(entityID)
	if !ok {
		name = entityID
	}
	return &history.Failure{
		Type:         FailureTypeNotRegistered,
		Message:      fmt.Sprintf("entity %q: cannot run operation %q: no entity named %q is registered with this worker", entityID, operation, name),
		NonRetryable: true,
	}
}

// OperationNotFoundFailure is the failure an Invoke returns for an
// operation name its entity does not have.
func OperationNotFoundFailure(entityID, operation string) *history.Failure {
	return &history.Failure{
		Type:         FailureTypeOperationNotFound,
		Message:      fmt.Sprintf("entity %q has no operation %q", entityID, operation),
		NonRetryable: true,
	}
}

// NotRegistered is the Invoke the engine passes for an entity name it does
// not know: every operation fails with [NotRegisteredFailure], while locks,
// queues and de-duplication keep working, so that a section locking a
// misnamed entity still completes and callers get an answer.
func NotRegistered(entityID string) Invoke {
	return func(c Call) (Outcome, error) {
		return Outcome{}, NotRegisteredFailure(entityID, c.Operation)
	}
}

// failureOf converts Invoke's error. A *history.Failure (anywhere in the
// chain) is the engine's own conversion and is kept, copied so the result
// does not alias the caller's value.
func failureOf(err error) *history.Failure {
	var hf *history.Failure
	if errors.As(err, &hf) && hf != nil {
		c := *hf
		return &c
	}
	return &history.Failure{Type: fmt.Sprintf("%T", err), Message: err.Error()}
}

// panicFailure describes a recovered panic, naming the entity and the
// operation since the stack alone often does not.
func panicFailure(entityID, operation string, value any, stack []byte) *history.Failure {
	f := &history.Failure{
		Type:    FailureTypePanic,
		Message: fmt.Sprintf("operation %q of entity %q panicked: %v", operation, entityID, value),
		Stack:   string(stack),
	}
	if err, ok := value.(error); ok {
		f.Cause = failureOf(err)
	}
	return f
}
