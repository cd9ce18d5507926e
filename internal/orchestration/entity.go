package orchestration

// The orchestration side of durable entities (see docs/entities.md): the
// Context methods that signal and call entities and hold critical sections,
// and the runtime that records them, releases locks nobody will release
// otherwise, and undoes grants nobody waits for.
//
// Every message an orchestration sends to an entity names it as the sender
// (Event.InstanceID and Event.ExecutionID) and carries Seq = TaskID+1, so
// that the entity drops redeliveries; TaskIDs are unique in an execution
// and a new execution is a new sender. Messages that cannot be numbered
// that way are sent with Seq 0 (not de-duplicated): scheduled signals, which
// arrive later than messages sent after them, and releases not tied to a
// task, which are harmless to repeat because they name their section.

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/taskhub/taskhub/internal/entity"
	"github.com/taskhub/taskhub/internal/history"
)

var (
	// ErrInvalidEntityID is wrapped by the error of a CallEntity or
	// LockEntities future (and the panic of SignalEntity) given an ID that
	// is not an entity ID ("@name@key", see entity.ID).
	ErrInvalidEntityID = errors.New("orchestration: not an entity ID")

	// ErrNoEntities is wrapped by the error of a LockEntities future given
	// no entity.
	ErrNoEntities = errors.New("orchestration: LockEntities of no entities")

	// ErrNestedCriticalSection is wrapped by the error of a LockEntities
	// future made while a critical section is held or being acquired:
	// sections cannot be nested (locking more later could deadlock).
	ErrNestedCriticalSection = errors.New("orchestration: critical sections cannot be nested")

	// ErrEntityNotLocked is wrapped by the error of a CallEntity future made
	// inside a critical section for an entity the section does not lock:
	// the call could wait for an entity locked by a section waiting for
	// this one (a deadlock). Signals are allowed.
	ErrEntityNotLocked = errors.New("orchestration: entity not locked by the critical section")

	// ErrCriticalSectionAbandoned is wrapped by the error of a LockEntities
	// future whose section UnlockEntities ended before the locks were
	// granted.
	ErrCriticalSectionAbandoned = errors.New("orchestration: critical section released before its locks were granted")
)

// Rough memory cost of a critical section for SizeBytes, plus twice its
// JSON (the JSON and the IDs).
const sectionOverhead = 96

// section is a critical section as the code sees it.
type section struct {
	lockID   string
	entities []string // sorted, no repeats
	json     []byte   // entities as a JSON array: the history Input
	task     *task    // the lock request
	granted  bool
}

func (s *section) size() int { return sectionOverhead + 2*len(s.json) }

// heldSection is a critical section as history records it: requested, and
// neither released nor refused.
type heldSection struct {
	lockID   string
	entities []string
}

// SignalEntity sends operation with input to the entity entityID, one way:
// nothing answers, and the code cannot wait for it. A non-zero at delays
// the operation until then (a scheduled signal). Signals are allowed inside
// a critical section, to any entity.
//
// SignalEntity panics, failing the orchestration, if entityID is not an
// entity ID.
func (c *Context) SignalEntity(entityID, operation string, input []byte, at time.Time) {
	c.checkTurn("SignalEntity")
	if err := checkEntityID("SignalEntity", entityID); err != nil {
		panic(err)
	}
	t := c.newTask(kindEntitySignal)
	t.instanceID, t.name, t.input = entityID, operation, input
	if !at.IsZero() {
		t.fireAt = at.Round(0).UTC()
	}
	c.size += len(input)
}

// CallEntity runs operation with input on the entity entityID and returns
// a future for its output. A failed operation is a *TaskFailedError of Kind
// KindEntity, with the entity's failure.
//
// Misuse fails the future at once, and nothing is sent: an ID that is not an
// entity ID (ErrInvalidEntityID), and, inside a critical section, an entity
// the section does not lock (ErrEntityNotLocked).
func (c *Context) CallEntity(entityID, operation string, input []byte) *Future {
	c.checkTurn("CallEntity")
	if err := checkEntityID("CallEntity", entityID); err != nil {
		return failedFuture(err)
	}
	if s := c.lock; s != nil {
		if _, found := slices.BinarySearch(s.entities, entityID); !found {
			return failedFuture(fmt.Errorf("%w: CallEntity %q on %q inside the critical section of %s could deadlock: "+
				"call only the entities the section locks (signals are allowed)", ErrEntityNotLocked, operation, entityID, s.json))
		}
	}
	t := c.newTask(kindEntityCall)
	t.instanceID, t.name, t.input = entityID, operation, input
	c.size += len(input)
	return t.future
}

// LockEntities starts a critical section on the entities entityIDs: it
// returns a future that completes (with a nil value) when every one of
// them is locked for this orchestration, until UnlockEntities or the end of
// the execution, whichever comes first. While locked, an entity runs only
// this orchestration's operations; the others wait.
//
// The IDs are sorted and de-duplicated: every section locks in that one
// global order, so no two sections can wait for each other. Inside the
// section (from this call on, even before the locks are granted) CallEntity
// may call only the section's entities.
//
// Misuse fails the future at once, and nothing is sent: no entity
// (ErrNoEntities), an ID that is not an entity ID (ErrInvalidEntityID), or a
// section already held or being acquired (ErrNestedCriticalSection). An
// entity that refuses the locks fails the future with a *TaskFailedError of
// Kind KindEntityLock, and the section ends.
func (c *Context) LockEntities(entityIDs ...string) *Future {
	c.checkTurn("LockEntities")
	if s := c.lock; s != nil {
		return failedFuture(fmt.Errorf("%w: LockEntities inside the critical section of %s", ErrNestedCriticalSection, s.json))
	}
	if len(entityIDs) == 0 {
		return failedFuture(ErrNoEntities)
	}
	for _, id := range entityIDs {
		if err := checkEntityID("LockEntities", id); err != nil {
			return failedFuture(err)
		}
	}
	ids := slices.Compact(slices.Sorted(slices.Values(entityIDs)))
	sectionJSON := mustJSON(ids)
	t := c.newTask(kindEntityLock)
	t.name, t.input, t.entities = entityLockID(c.instanceID, c.executionID, t.id), sectionJSON, ids
	c.size += len(sectionJSON)
	c.lock = &section{lockID: t.name, entities: ids, json: sectionJSON, task: t}
	c.size += c.lock.size()
	return t.future
}

// UnlockEntities ends the current critical section, releasing its
// entities; it does nothing outside a section. Ending a section whose
// locks are not granted yet gives up on it: its LockEntities future fails
// with ErrCriticalSectionAbandoned, and a grant that comes later is undone.
func (c *Context) UnlockEntities() {
	c.checkTurn("UnlockEntities")
	s := c.lock
	if s == nil {
		return
	}
	c.lock = nil
	c.size -= s.size()
	t := c.newTask(kindEntityUnlock)
	t.name, t.input, t.entities = s.lockID, s.json, s.entities
	c.size += len(t.input)
	if !s.granted {
		lt := s.task
		lt.abandoned = true
		if lt.state == stateScheduled {
			c.dropTask(lt)
		} // a pending request is forgotten once recorded (flush or match)
		lt.future.resolve(nil, fmt.Errorf("%w: %s", ErrCriticalSectionAbandoned, s.json))
	}
}

// InCriticalSection reports whether the code is inside a critical section,
// from LockEntities until UnlockEntities (or the refusal of its locks),
// including while the locks are being acquired, and returns the section's
// entity IDs, sorted.
func (c *Context) InCriticalSection() (lockedIDs []string, ok bool) {
	c.checkTurn("InCriticalSection")
	if c.lock == nil {
		return nil, false
	}
	return slices.Clone(c.lock.entities), true
}

func checkEntityID(op, id string) error {
	if _, _, ok := entity.ParseID(id); !ok {
		return fmt.Errorf("%w: %s of %q (an entity ID is \"@name@key\")", ErrInvalidEntityID, op, id)
	}
	return nil
}

func failedFuture(err error) *Future {
	f := &Future{}
	f.resolve(nil, err)
	return f
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("orchestration: encode %T: %v", v, err))
	}
	return b
}

// ---- The runtime side ----

// emitEntityAction records an entity action of the code and sends it.
func (in *Instance) emitEntityAction(t *task) {
	c := in.x
	seq := t.id + 1
	msg := func(to string, e *history.Event) Outbound {
		e.Time, e.InstanceID, e.ExecutionID, e.Seq = in.now, in.id, c.executionID, seq
		return Outbound{Message: history.Message{InstanceID: to, Event: e}}
	}
	switch t.kind {
	case kindEntitySignal:
		in.appendEvent(&history.Event{Type: history.EntityOperationSignaled, TaskID: t.id, InstanceID: t.instanceID,
			Name: t.name, Input: t.input, FireAt: t.fireAt})
		o := msg(t.instanceID, &history.Event{Type: history.EntityOperationSignaled, Name: t.name, Input: t.input})
		if !t.fireAt.IsZero() {
			// A scheduled signal arrives later than messages sent after
			// it, and would be taken for a redelivery: not sequenced.
			o.Message.Event.Seq = 0
		}
		if t.fireAt.After(in.now) {
			o.VisibleAt = t.fireAt
		}
		in.send(o)
	case kindEntityCall:
		in.appendEvent(&history.Event{Type: history.EntityOperationCalled, TaskID: t.id, InstanceID: t.instanceID,
			Name: t.name, Input: t.input})
		in.send(msg(t.instanceID, &history.Event{Type: history.EntityOperationCalled, TaskID: t.id, Name: t.name, Input: t.input}))
	case kindEntityLock:
		in.appendEvent(&history.Event{Type: history.EntityLockRequested, TaskID: t.id, Name: t.name, Input: t.input})
		in.send(msg(t.entities[0], &history.Event{Type: history.EntityLockRequested, TaskID: t.id, Name: t.name, Input: t.input,
			Parent: &history.Parent{InstanceID: in.id, ExecutionID: c.executionID, TaskID: t.id}}))
		c.held = &heldSection{lockID: t.name, entities: t.entities}
	case kindEntityUnlock:
		in.appendEvent(&history.Event{Type: history.EntityLockReleased, TaskID: t.id, Name: t.name, Input: t.input})
		for _, id := range t.entities {
			in.send(msg(id, &history.Event{Type: history.EntityLockReleased, Name: t.name}))
		}
		if c.held != nil && c.held.lockID == t.name {
			c.held = nil
		}
		in.markReleased(t.name)
	}
}

// trackSection follows, in replayed history, which critical section was
// requested and not released.
func (c *Context) trackSection(e *history.Event) {
	switch e.Type {
	case history.EntityLockRequested:
		c.held = &heldSection{lockID: e.Name, entities: sectionEntities(e.Input)}
	case history.EntityLockReleased:
		if c.held != nil && c.held.lockID == e.Name {
			c.held = nil
		}
	}
}

// sectionEntities decodes a section's JSON, keeping only entity IDs (a
// release sent anywhere else would be dropped there anyway).
func sectionEntities(b []byte) []string {
	var ids []string
	if json.Unmarshal(b, &ids) != nil {
		return nil
	}
	return slices.DeleteFunc(ids, func(id string) bool {
		_, _, ok := entity.ParseID(id)
		return !ok
	})
}

// lockRefused fails a LockEntities future whose locks an entity refused.
// The section ends; entities before the one that refused may hold their
// lock, so all are released (by the step that applies the refusal, not
// again on replay).
func (in *Instance) lockRefused(t *task, e *history.Event) {
	c := in.x
	if s := c.lock; s != nil && s.task == t {
		c.lock = nil
		c.size -= s.size()
	}
	if h := c.held; h != nil && h.lockID == t.name {
		c.held = nil
		if !in.replaying {
			in.sendReleases(h.entities, h.lockID, c.executionID, 0)
		}
	}
	t.future.resolve(nil, &TaskFailedError{Kind: KindEntityLock, Name: t.name, Entity: strings.Join(t.entities, ", "),
		TaskID: t.id, Failure: failureOrUnknown(e.Failure)})
}

// releaseHeld releases the critical section c holds (or is acquiring) when
// its execution ends: the end event implies the release, so nothing else is
// recorded. It runs only in the step that ends the execution.
func (in *Instance) releaseHeld(c *Context) {
	h := c.held
	if h == nil {
		return
	}
	c.held = nil
	seq := c.nextTaskID + 1 // a task number nothing else uses
	c.nextTaskID++
	in.sendReleases(h.entities, h.lockID, c.executionID, seq)
}

// releaseGrant undoes a lock grant that is dropped: its execution ended or
// was replaced, or it no longer waits for that section. Otherwise the
// section's entities would stay locked forever. The sender of the releases
// is the execution the grant was for. A redelivered grant of the section
// the execution holds is not undone, nor one whose section this step
// already releases.
func (in *Instance) releaseGrant(m *history.Message) {
	e := m.Event
	execID := m.ExecutionID
	c := in.x
	if execID == "" && c != nil {
		execID = c.executionID // a message without one is for the current execution
	}
	if c != nil && c.held != nil && c.executionID == execID && c.held.lockID == e.Name {
		return
	}
	if in.released[e.Name] {
		return
	}
	ids := sectionEntities(e.Input)
	if len(ids) == 0 {
		in.log.Warn("lock grant nobody waits for has no section to release", "instance", in.id,
			"executionID", execID, "lockID", e.Name, "section", string(e.Input))
		return
	}
	in.sendReleases(ids, e.Name, execID, 0)
}

// sendReleases sends EntityLockReleased for section lockID of execution
// execID to each entity.
func (in *Instance) sendReleases(entities []string, lockID, execID string, seq int64) {
	for _, id := range entities {
		in.send(Outbound{Message: history.Message{InstanceID: id, Event: &history.Event{
			Type: history.EntityLockReleased, Time: in.now, Name: lockID, InstanceID: in.id, ExecutionID: execID, Seq: seq,
		}}})
	}
	in.markReleased(lockID)
}

func (in *Instance) markReleased(lockID string) {
	if in.released == nil {
		in.released = make(map[string]bool)
	}
	in.released[lockID] = true
}
