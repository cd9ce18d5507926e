// Package orchestration runs orchestrator code: the pure orchestration step
// of the engine and the cooperative dispatcher under it.
//
// # The step
//
// An [Instance] is one orchestration instance held in memory. The engine
// calls [Instance.Step] with the stored history of the current execution
// (only on the first Step of a fresh Instance) and the new messages for the
// instance. The step replays the history through the orchestrator code,
// applies the messages, and returns a [StepResult]: the events to append to
// history and the messages to send. It does no I/O and never reads the wall
// clock; the engine passes "now", commits the result, and keeps the Instance
// in its cache (cursor caching: the next Step replays nothing) or closes it.
//
// # Replay and determinism
//
// Each call of the code that schedules durable work (CallActivity,
// CallSubOrchestrator, CreateTimer, WaitForExternalEvent with a timeout,
// SendEvent, SignalEntity, CallEntity, LockEntities, UnlockEntities, and the
// timers of retry policies) takes the next TaskID. When history is replayed,
// every scheduling event (TaskScheduled, TimerCreated,
// SubOrchestrationCreated, EventSent, EntityOperationSignaled,
// EntityOperationCalled, EntityLockRequested, EntityLockReleased) must match
// the action the code produced with the same TaskID in kind and name (and,
// for entities, target entity or locked section), and every action the code
// produced in a recorded step must be in that step's history. Otherwise the instance
// fails with a [NonDeterminismError]. Completions are looked up by TaskID in
// a map, so applying an event costs O(1) and a fan-in of N results O(N).
//
// # The cooperative dispatcher
//
// Orchestrator code runs on its own goroutine, but never at the same time as
// the step that drives it: the driver hands the turn to the code and waits
// until the code parks in [Context.Await] or returns. A parked goroutine that
// is no longer needed is ended with runtime.Goexit, which runs the user's
// deferred calls but, unlike a panic, cannot be recovered and so cannot be
// swallowed or misreported by user code.
//
// # Messages
//
// ExecutionStarted is applied first in a batch. A message whose ExecutionID
// names another execution is dropped (stale replies after ContinueAsNew or a
// restart), as are completions of unknown or already completed tasks
// (at-least-once delivery) and every message for a finished execution. A
// dropped message leaves no trace in history.
//
// # Durable entities
//
// An orchestration signals entities (SignalEntity), calls them
// (CallEntity, answered by EntityOperationCompleted or EntityOperationFailed)
// and holds critical sections on them (LockEntities, granted by
// EntityLockGranted, ended by UnlockEntities). Messages to entities name the
// orchestration's instance and execution as their sender and carry
// Seq = TaskID+1 for the entity's de-duplication. Requests meant for
// entities are dropped when sent to an orchestration.
//
// Locks are never left behind: the step that ends an execution (however it
// ends) while its section is held or being acquired sends EntityLockReleased
// to every entity of the section; the end event implies them, so they are
// not recorded, and replaying the ended history sends nothing. A grant that
// is dropped (its execution ended or was replaced, or no longer waits for
// that section) is answered with releases for every entity of the granted
// section, sent as that execution. Such a step may have Outbound messages
// and no NewEvents.
package orchestration
