package entity

import (
	"fmt"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

// Kind is the kind of a [Request]. It is stored in records (queued
// requests) as text, so the names below must never change.
type Kind uint8

// Request kinds.
const (
	// Operation runs an operation: a call when WantsResponse, else a signal.
	Operation Kind = iota + 1
	// Lock asks for the entity's lock on behalf of Owner's critical section.
	Lock
	// Unlock releases the lock held by the sender.
	Unlock
	// Continue is the entity's message to itself ([EffectContinue]): it
	// does nothing but make sure another batch runs.
	Continue
)

var kindNames = [...]string{Operation: "operation", Lock: "lock", Unlock: "unlock", Continue: "continue"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// MarshalText stores the kind by name, which reads better in a record than
// a number and cannot be silently renumbered.
func (k Kind) MarshalText() ([]byte, error) {
	if int(k) >= len(kindNames) || kindNames[k] == "" {
		return nil, fmt.Errorf("entity: cannot encode request kind %d", uint8(k))
	}
	return []byte(kindNames[k]), nil
}

// UnmarshalText is the inverse of MarshalText; an unknown name is an error
// rather than a zero Kind, so a record written by a newer version is not
// misread.
func (k *Kind) UnmarshalText(b []byte) error {
	for i, n := range kindNames {
		if n != "" && n == string(b) {
			*k = Kind(i)
			return nil
		}
	}
	return fmt.Errorf("entity: unknown request kind %q", b)
}

// Sender identifies who sent a request: an orchestration (instance and
// execution), an entity (its ID, no execution) or a client.
type Sender struct {
	InstanceID  string `json:"instance"`
	ExecutionID string `json:"execution,omitempty"`
}

// Request is one message for an entity: an EntityOperation, EntityLock or
// EntityUnlock control-queue message as the engine decodes it. Requests
// queued behind a lock are stored in the record, hence the JSON names.
type Request struct {
	Kind Kind `json:"kind"`
	// ID is the queue message's ID; Result.Consumed reports it.
	ID string `json:"id,omitempty"`
	// Sender sent this message. For a forwarded Lock it is the entity that
	// forwarded it, not the orchestration (see Owner).
	Sender Sender `json:"sender"`
	// Seq is the sender's sequence number (see the package doc); 0 means not
	// sequenced, hence never de-duplicated.
	Seq uint64 `json:"seq,omitempty"`

	// Operation: the operation's name and input.
	Operation string `json:"op,omitempty"`
	Input     []byte `json:"input,omitempty"`
	// WantsResponse marks a call (an orchestration awaits the answer under
	// TaskID); without it the operation is a signal.
	WantsResponse bool `json:"call,omitempty"`
	// TaskID is the orchestration's task for the answer: a call's result,
	// or a Lock's grant.
	TaskID int64 `json:"taskId,omitempty"`

	// Owner (Lock) is the orchestration the critical section belongs to,
	// which the grant answers; the zero Sender means the sender itself (the
	// first hop, sent by the orchestration).
	Owner Sender `json:"owner,omitzero"`
	// LockID (Lock, Unlock) names the critical section. An Unlock with an
	// empty LockID releases whatever section its sender holds.
	LockID string `json:"lockId,omitempty"`
	// LockSet (Lock) lists the entities still to lock after this one, in
	// ascending order.
	LockSet []string `json:"lockSet,omitempty"`
	// Section (Lock) is the whole critical section, sorted: forwarded
	// unchanged and returned with the grant, so that a grant nobody waits
	// for any more can still be undone by unlocking every entity.
	Section []string `json:"section,omitempty"`
}

// owner is the orchestration a Lock request is for.
func (r *Request) owner() Sender {
	if r.Owner == (Sender{}) {
		return r.Sender
	}
	return r.Owner
}

// Holder is the critical section holding an entity's lock.
type Holder struct {
	InstanceID  string `json:"instance"`
	ExecutionID string `json:"execution,omitempty"`
	LockID      string `json:"lockId,omitempty"`
}

// Record is an entity's bookkeeping, persisted next to its state (the
// instance row's Input) and committed with it after every batch.
type Record struct {
	// LockedBy is the critical section holding the lock, nil when unlocked.
	LockedBy *Holder `json:"lockedBy,omitempty"`
	// Queued holds the requests waiting for the lock, in arrival order.
	Queued []Request `json:"queued,omitempty"`
	// Seen is the highest sequence number consumed per sender: instance ID,
	// then execution ID ("" for entities). Two levels rather than one joined
	// key, so that no instance ID can be mistaken for another. It only
	// grows; pruning the entries of finished orchestrations is the
	// engine's clean-up job.
	Seen map[string]map[string]uint64 `json:"seen,omitempty"`
	// SentSeq is the last sequence number this entity gave to a message it
	// sent (signals, lock forwards), so that its receivers can de-duplicate.
	SentSeq uint64 `json:"sentSeq,omitempty"`
	// Continuing is set while a Continue message is on its way, so that
	// batches cut short one after another do not pile up Continues.
	Continuing bool `json:"continuing,omitempty"`
}

// Idle reports whether the record holds nothing an entity needs to keep
// running for: no lock and no queued request. An idle entity without state
// may be purged (losing its de-duplication marks, as in Durable Functions).
func (r *Record) Idle() bool { return r.LockedBy == nil && len(r.Queued) == 0 }

// clone copies everything Execute changes, so that it never modifies the
// caller's record. Payload byte slices are shared: nothing writes to them.
func (r *Record) clone() Record {
	c := Record{SentSeq: r.SentSeq, Continuing: r.Continuing}
	if r.LockedBy != nil {
		h := *r.LockedBy
		c.LockedBy = &h
	}
	if len(r.Queued) > 0 {
		c.Queued = append([]Request(nil), r.Queued...)
	}
	if len(r.Seen) > 0 {
		c.Seen = make(map[string]map[string]uint64, len(r.Seen))
		for inst, execs := range r.Seen {
			m := make(map[string]uint64, len(execs))
			for e, s := range execs {
				m[e] = s
			}
			c.Seen[inst] = m
		}
	}
	return c
}

// Call is what an operation is given.
type Call struct {
	Entity    string // the entity's ID
	Operation string
	Input     []byte
	// State is the current state, nil when the entity has none. It belongs
	// to Execute: Invoke must neither modify nor keep it, which is what
	// lets Execute roll back without copying the state for every operation.
	State     []byte
	Sender    Sender
	RequestID string
}

// Outcome is what a successful operation returns.
type Outcome struct {
	// State is the new state. nil (with Deleted false) leaves the state as it
	// was, so read-only operations need not encode it again.
	State []byte
	// Deleted removes the state; later operations see none.
	Deleted bool
	// Output answers a call; it is dropped for a signal.
	Output []byte
	// Actions are emitted, in order, only because the operation succeeded.
	Actions []Action
}

// ActionKind is the kind of an [Action].
type ActionKind uint8

// Action kinds.
const (
	// ActionSignal sends a one-way operation to an entity.
	ActionSignal ActionKind = iota + 1
	// ActionStart starts an orchestration.
	ActionStart
)

// Action is a side effect asked for by an operation: entities may signal
// entities and start orchestrations, but not call (a call would have to
// wait inside a batch).
type Action struct {
	Kind ActionKind
	// Target is the entity to signal, or the new orchestration's instance ID
	// ("" lets the engine choose one).
	Target string
	// Name is the operation (signal) or the orchestrator (start).
	Name  string
	Input []byte
	// At delays the signal or the start; zero means at once.
	At time.Time
}

// Invoke runs one operation. Its error becomes the caller's failure: the
// engine should return a *history.Failure (built the way activity failures
// are), which is passed on as is; any other error becomes a failure named
// after its type. Invoke may panic: the panic is recovered and treated as a
// failure, but runtime.Goexit (t.FailNow) is not recoverable and ends the
// goroutine calling Execute.
type Invoke func(Call) (Outcome, error)

// EffectKind is the kind of an [Effect].
type EffectKind uint8

// Effect kinds.
const (
	// EffectSignal delivers Request (an operation) to the entity Target,
	// at At when set.
	EffectSignal EffectKind = iota + 1
	// EffectStart starts orchestrator Name with Input as instance Target
	// ("" lets the engine choose the ID), at At when set.
	EffectStart
	// EffectLockForward delivers Request (a Lock) to the entity Target, the
	// next one of the critical section.
	EffectLockForward
	// EffectLockGranted tells the orchestration (Target, ExecutionID) that
	// its critical section LockID holds all its locks: the engine completes
	// task TaskID.
	EffectLockGranted
	// EffectContinue delivers Request (a Continue) to the entity itself
	// (Target). A release cut short by the batch limit leaves requests in
	// the record that can run without any new message, and only a message
	// makes the engine run an entity; as a committed message it also
	// survives a crash, which an in-memory "run again" flag would not.
	EffectContinue
)

func (k EffectKind) String() string {
	switch k {
	case EffectSignal:
		return "signal"
	case EffectStart:
		return "start"
	case EffectLockForward:
		return "lock-forward"
	case EffectLockGranted:
		return "lock-granted"
	case EffectContinue:
		return "continue"
	}
	return fmt.Sprintf("EffectKind(%d)", uint8(k))
}

// Effect is a message the batch sends. Like history.Event, it is one struct
// with a kind tag; each kind documents the fields it uses.
type Effect struct {
	Kind   EffectKind
	Target string
	// Request is the message for the target entity (Signal, LockForward,
	// Continue).
	// Its Sender is this entity and its Seq is numbered from
	// Record.SentSeq; its ID is left to the engine.
	Request     Request
	Name        string // Start
	Input       []byte // Start
	At          time.Time
	ExecutionID string   // LockGranted
	TaskID      int64    // LockGranted
	LockID      string   // LockGranted
	Section     []string // LockGranted: the section's entities
}

// Response answers a call (TaskCompleted or TaskFailed for task TaskID of
// orchestration To), or refuses a Lock.
type Response struct {
	To        Sender
	TaskID    int64
	RequestID string
	Output    []byte
	Failure   *history.Failure // nil on success
}

// Failed reports a request that failed, whether or not anyone hears of it
// (a failed signal has nobody to answer), so that the engine can log it.
type Failed struct {
	RequestID string
	Kind      Kind
	Operation string
	Sender    Sender
	Failure   *history.Failure
}

// Result is the outcome of one batch. Every list is in processing order.
type Result struct {
	Record Record
	// State is the state after the batch, nil when the entity has none.
	State []byte
	// StateChanged is false when State holds the same bytes as the state
	// given (or both are absent), so the engine can skip rewriting it.
	StateChanged bool
	// Deleted is true when the batch removed the state the entity had.
	Deleted bool
	// Consumed lists the IDs of the requests this batch took off the queue:
	// applied, queued in the record, ignored or dropped as duplicates.
	// Requests not listed stay in the queue for the next batch.
	Consumed  []string
	Responses []Response
	Outbound  []Effect
	Failures  []Failed
	// Applied counts the operations run (succeeded or failed).
	Applied int
}
