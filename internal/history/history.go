// Package history defines the events an orchestration's history is made of,
// and the messages that carry them between instances and queues.
//
// History is event sourced: the History table holds, per instance and
// execution, an ordered list of Events, and an orchestrator is rebuilt by
// replaying them. Control-queue and work-item messages carry the same Event
// type, so an event travels as a message and is appended to the receiver's
// history unchanged.
//
// One struct with a Type tag (rather than one Go type per event) keeps the
// codec compact and allocation-light; each Type documents which fields it
// uses. Payload fields (Input) hold engine-encoded payload bytes: JSON, or a
// reference to a large payload (see internal/payload).
package history

import (
	"fmt"
	"time"
)

// Type is the kind of a history event.
type Type uint8

// Event types. The numbers are stored: never renumber.
const (
	// ExecutionStarted starts an execution. Name = orchestrator, Input,
	// ExecutionID = the new execution, Parent set for sub-orchestrations,
	// FireAt = scheduled start time (zero: at once).
	ExecutionStarted Type = 1
	// ExecutionCompleted ends an execution. Status is Completed, Failed or
	// ContinuedAsNew; Input = output (or the next input for ContinuedAsNew);
	// Failure for Failed.
	ExecutionCompleted Type = 2
	// ExecutionTerminated asks an instance to end (as a message) and ends it
	// (in history). Input = reason; Recurse terminates sub-orchestrations.
	ExecutionTerminated Type = 3
	// ExecutionSuspended suspends an instance; Input = reason.
	ExecutionSuspended Type = 4
	// ExecutionResumed resumes a suspended instance; Input = reason.
	ExecutionResumed Type = 5
	// OrchestratorStarted opens each step; Time is the step's current time.
	OrchestratorStarted Type = 6
	// TaskScheduled records an activity call: TaskID, Name, Input, Attempt,
	// Timeout. As a work-item message it asks a worker to run the activity.
	TaskScheduled Type = 7
	// TaskCompleted: TaskID of the TaskScheduled, Input = result.
	TaskCompleted Type = 8
	// TaskFailed: TaskID of the TaskScheduled, Failure.
	TaskFailed Type = 9
	// TimerCreated: TaskID, FireAt.
	TimerCreated Type = 10
	// TimerFired: TaskID of the TimerCreated, FireAt.
	TimerFired Type = 11
	// SubOrchestrationCreated: TaskID, Name, InstanceID (child), Input.
	SubOrchestrationCreated Type = 12
	// SubOrchestrationCompleted: TaskID of the creation, Input = result.
	SubOrchestrationCompleted Type = 13
	// SubOrchestrationFailed: TaskID of the creation, Failure.
	SubOrchestrationFailed Type = 14
	// EventSent: TaskID, InstanceID (target), Name, Input.
	EventSent Type = 15
	// EventRaised: Name, Input.
	EventRaised Type = 16
	// ExecutionRewound asks a failed instance to rewind (a message only,
	// never in history): the engine cuts its history back to before the
	// step of its first failure and re-runs what failed. Input = reason.
	ExecutionRewound Type = 17

	// Durable entities (see docs/entities.md). The scheduling types below
	// are recorded in an orchestration's history with InstanceID = the
	// target entity; as messages to an entity, InstanceID and ExecutionID
	// name the SENDER instead (an orchestration's instance and execution,
	// an entity's ID with no execution, or nothing for a client), and Seq
	// carries the sender's sequence number for de-duplication (0: not
	// sequenced). Message.InstanceID is always the receiver.

	// EntityOperationSignaled is a one-way operation. History: TaskID,
	// InstanceID (entity), Name (operation), Input, FireAt (zero: at once).
	// Message: Name, Input, sender, Seq.
	EntityOperationSignaled Type = 18
	// EntityOperationCalled is a two-way operation, answered by
	// EntityOperationCompleted or EntityOperationFailed for TaskID.
	// History: TaskID, InstanceID (entity), Name, Input. Message: TaskID,
	// Name, Input, sender, Seq.
	EntityOperationCalled Type = 19
	// EntityOperationCompleted answers a call: TaskID, Input = result.
	EntityOperationCompleted Type = 20
	// EntityOperationFailed answers a call, or refuses a lock request:
	// TaskID, Failure.
	EntityOperationFailed Type = 21
	// EntityLockRequested asks for a critical section's locks. History:
	// TaskID, Name (lock ID), Input (JSON array of the entity IDs, sorted
	// ascending, no repeats). Message: Name, Input (the whole section),
	// sender, Seq, and Parent = the owning orchestration (InstanceID,
	// ExecutionID, TaskID). Each entity locks itself and forwards the
	// message to the next entity of the section; the last one grants.
	EntityLockRequested Type = 22
	// EntityLockGranted tells the owner that every entity of the section
	// is locked: TaskID, Name (lock ID), Input (the section).
	EntityLockGranted Type = 23
	// EntityLockReleased ends a critical section. History: TaskID, Name
	// (lock ID), Input (the section). Message (one per entity): Name,
	// sender (the holder), Seq.
	EntityLockReleased Type = 24
	// EntityContinue is an entity's message to itself (never in history):
	// run another batch for requests left in its record.
	EntityContinue Type = 25
)

var typeNames = [...]string{
	ExecutionStarted:          "ExecutionStarted",
	ExecutionCompleted:        "ExecutionCompleted",
	ExecutionTerminated:       "ExecutionTerminated",
	ExecutionSuspended:        "ExecutionSuspended",
	ExecutionResumed:          "ExecutionResumed",
	OrchestratorStarted:       "OrchestratorStarted",
	TaskScheduled:             "TaskScheduled",
	TaskCompleted:             "TaskCompleted",
	TaskFailed:                "TaskFailed",
	TimerCreated:              "TimerCreated",
	TimerFired:                "TimerFired",
	SubOrchestrationCreated:   "SubOrchestrationCreated",
	SubOrchestrationCompleted: "SubOrchestrationCompleted",
	SubOrchestrationFailed:    "SubOrchestrationFailed",
	EventSent:                 "EventSent",
	EventRaised:               "EventRaised",
	ExecutionRewound:          "ExecutionRewound",
	EntityOperationSignaled:   "EntityOperationSignaled",
	EntityOperationCalled:     "EntityOperationCalled",
	EntityOperationCompleted:  "EntityOperationCompleted",
	EntityOperationFailed:     "EntityOperationFailed",
	EntityLockRequested:       "EntityLockRequested",
	EntityLockGranted:         "EntityLockGranted",
	EntityLockReleased:        "EntityLockReleased",
	EntityContinue:            "EntityContinue",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Valid reports whether t is a known event type.
func (t Type) Valid() bool { return t >= ExecutionStarted && t <= EntityContinue }

// Execution statuses carried by ExecutionCompleted (same strings as
// backend.Status).
const (
	StatusCompleted      = "Completed"
	StatusFailed         = "Failed"
	StatusContinuedAsNew = "ContinuedAsNew"
	StatusTerminated     = "Terminated"
)

// Event is one history event (or the content of a message).
type Event struct {
	Seq         int64 // position in the execution's history, from 0
	Type        Type
	Time        time.Time // when the event was created
	TaskID      int64
	Name        string
	InstanceID  string
	ExecutionID string
	Input       []byte
	Failure     *Failure
	FireAt      time.Time
	Status      string
	Parent      *Parent
	Timeout     time.Duration
	Attempt     int32
	Recurse     bool
}

// Parent identifies the orchestration that started a sub-orchestration.
type Parent struct {
	InstanceID  string
	ExecutionID string
	Name        string
	TaskID      int64
}

// Failure describes an error that crossed a durable boundary (an activity or
// sub-orchestration failure, or an instance's own failure).
type Failure struct {
	Type         string
	Message      string
	Stack        string
	NonRetryable bool
	Cause        *Failure
}

func (f *Failure) Error() string {
	if f == nil {
		return "<nil>"
	}
	if f.Type == "" {
		return f.Message
	}
	return f.Type + ": " + f.Message
}

// Message is the content of a queue message: an event addressed to an
// instance. ExecutionID, when set, targets one execution; messages for another
// execution are dropped (stale replies after ContinueAsNew or a restart).
// Work-item messages carry a TaskScheduled event addressed to the
// orchestration that scheduled it.
type Message struct {
	InstanceID  string
	ExecutionID string
	Event       *Event
}
