// Package taskhub is Durable Functions for Go: a durable orchestration
// engine whose orchestrators are replayed from an event-sourced history and
// whose activities run at least once on any worker of a task hub.
//
// # Functions
//
// Orchestrators coordinate; they must be deterministic, because they are
// replayed from history after every restart and whenever they are not in the
// instance cache. They call activities, sub-orchestrations, durable timers
// and external events through an [OrchestrationContext], and each call
// returns a [Task] to [Await]:
//
//	taskhub.RegisterOrchestrator(reg, "Hello", func(ctx *taskhub.OrchestrationContext, name string) (string, error) {
//		return taskhub.Await[string](ctx.CallActivity("SayHello", name))
//	})
//
// Activities do the work: I/O, CPU, anything. They are typed with generics
// and get an [ActivityContext], cancelled on timeout and shutdown.
//
// # Workers and clients
//
// A [Worker] runs the registered functions of one task hub stored in a
// backend (backend/sqlite by default). Many workers can serve one hub: the
// hub's control-queue partitions are spread over them by leases, and every
// worker competes for activities. A [Client] starts, queries, signals,
// suspends, terminates and purges instances; [Worker.Client] returns one
// that wakes on the worker's commits instead of polling.
//
// # Guarantees
//
// Each orchestration step is one atomic commit fenced by the partition
// lease's epoch: history never holds a duplicated or lost event. Activities
// run at least once: after a crash an activity may run again.
//
// # Errors
//
// Errors work with errors.Is and errors.As: [ErrInstanceNotFound],
// [ErrEventTimeout], [*TaskFailedError] (an activity's type, message and
// stack), [*InstanceExistsError], [*PartitionCountMismatchError].
// [NonRetryable] stops retries of an activity error.
package taskhub
