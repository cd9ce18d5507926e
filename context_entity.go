package taskhub

import "fmt"

// SignalEntity sends a one-way operation to an entity (at once, or at the
// time WithSignalTime gives). The orchestration's signals to one entity are
// processed in the order sent, each exactly once.
func (c *OrchestrationContext) SignalEntity(id EntityID, operation string, input any, opts ...SignalEntityOption) error {
	if err := validateEntityID(id); err != nil {
		return err
	}
	if operation == "" {
		return fmt.Errorf("signal entity %s: %w: empty operation name", id, ErrInvalidInput)
	}
	b, err := marshalInput("entity operation "+operation, input)
	if err != nil {
		return err
	}
	c.rt.SignalEntity(id.String(), operation, b, signalTime(opts))
	return nil
}

// CallEntity runs an operation on an entity and returns a task for its
// result. The operation's failure (including an unknown entity or
// operation) fails the task with a *TaskFailedError. Inside a critical
// section only the locked entities may be called.
func (c *OrchestrationContext) CallEntity(id EntityID, operation string, input any) Task {
	if err := validateEntityID(id); err != nil {
		return failedTask(err)
	}
	if operation == "" {
		return failedTask(fmt.Errorf("call entity %s: %w: empty operation name", id, ErrInvalidInput))
	}
	b, err := marshalInput("entity operation "+operation, input)
	if err != nil {
		return failedTask(err)
	}
	return Task{c: c, f: c.rt.CallEntity(id.String(), operation, b)}
}

// LockEntities enters a critical section: it returns once every entity in
// ids is locked for this orchestration. While the section lasts, other
// senders' operations on those entities wait, so a read-modify-write
// across several entities is atomic. Entities are locked in one global
// order (sorted IDs), so two sections can never deadlock.
//
// The section ends when unlock is called or the orchestration ends, even by
// failing. Sections do not nest, and only locked entities may be called
// inside one.
//
//	unlock, err := ctx.LockEntities(from, to)
//	if err != nil {
//		return err
//	}
//	defer unlock()
func (c *OrchestrationContext) LockEntities(ids ...EntityID) (unlock func(), err error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		if err := validateEntityID(id); err != nil {
			return nil, err
		}
		keys[i] = id.String()
	}
	if _, err := c.rt.Await(c.rt.LockEntities(keys...)); err != nil {
		return nil, wrapTaskError(err)
	}
	return c.rt.UnlockEntities, nil
}
