// Package entity executes batches of durable-entity requests: the pure core
// of durable entities (see docs/entities.md, "Batch execution").
//
// An entity is a small piece of state addressed by an ID ("@name@key", see
// [ID]) that processes operations one at a time. [Execute] takes what the
// engine read for one entity — its [Record] (lock holder, requests queued
// behind the lock, de-duplication marks), its state and the control-queue
// messages given to it as [Request]s — runs the operations through an
// [Invoke] function, and returns a [Result]: the new record and state, the
// IDs of the messages it consumed, the responses to callers and the messages
// to send. It does no I/O, reads no clock and starts no goroutine, so the
// engine commits a Result as one unit (state, record, consumed messages and
// outbound messages together) and every rule below is tested in memory.
//
// Results are deterministic: the same inputs and the same Invoke give the same
// Result, in the same order, with one exception: the Stack of a panic's
// failure, which is the goroutine's stack at the time.
//
// # Batching
//
// Requests are handled in the order given (the queue order), except that the
// sequenced requests of one sender are put in sequence order among the slots
// they occupy (see De-duplication). At most maxBatch operations run per call
// ([MaxBatchDefault] when maxBatch ≤ 0, 1 disables batching). The call stops
// at the first operation that would run once the limit is reached: that
// request and every request after it are not consumed and stay in the
// queue for the next call. Lock, unlock, duplicate and queued requests do not
// count towards the limit, since they run no user code. Consumed IDs are
// therefore not always a prefix of the given requests.
//
// # De-duplication
//
// A request with Seq > 0 carries its sender's sequence number; a sender
// (instance and execution: a new execution starts a new sequence) numbers its
// messages with one counter, so the messages it sends to one entity have
// growing numbers. The record keeps, per sender, the highest number consumed;
// a request at or below it is a redelivery and is consumed without effect.
// A request with Seq 0 is not de-duplicated: clients have no durable counter,
// and a scheduled signal is delivered later than messages sent after it, so
// its number would be taken for a duplicate's.
//
// A gap in a sender's numbers (5 consumed, 7 arrives) does not hold 7 back:
// it is applied at once, and 6, if it shows up later, is dropped as a
// duplicate. On the transactional backends a sender's messages are committed
// in sequence order and never lost, so gaps do not occur; waiting for a
// message that may never come (a lost message on a non-transactional
// backend) would stall the entity for everyone, which is worse than losing
// that message. Messages of one sender given out of order in the same call
// are put back in order first, so only a message arriving in a later call
// than its successor can be lost this way.
//
// # Locks (critical sections)
//
// An orchestration locks a set of entities in one global order (sorted IDs):
// it sends a Lock request to the first, whose LockSet lists the entities still
// to lock after it. An unlocked entity takes the lock (Record.LockedBy) and
// forwards the request to the next entity ([EffectLockForward]) or, being
// the last, answers the orchestration ([EffectLockGranted]). A Lock arriving
// while another holds the lock waits in Record.Queued. Because every section
// locks in the same order, no two sections wait on each other: a section
// waiting at entity k holds only entities before k, and whoever holds k
// waits, if at all, only for entities after k.
//
// While locked, operations from the holder (the orchestration's instance and
// execution) run, and everything else — operations and lock requests of
// other senders — is queued in arrival order; queuing consumes the message
// (the record now holds it). An Unlock from the holder releases the lock and
// the queue is processed in order: operations run (counting towards the
// batch limit; the rest stays queued), and a queued Lock takes the lock, after
// which only the new holder's queued operations run. When the limit cuts a
// release short, the entity is left unlocked with requests that need no new
// message to run, so it sends itself a Continue message ([EffectContinue],
// one at a time); otherwise nothing would ever run it again. An Unlock from
// anyone else is ignored, except that it withdraws that sender's own Lock
// still waiting in the queue (an orchestration giving up before its lock
// came).
// A Lock whose LockSet is not sorted after the entity's ID is refused with a
// failure response: such a section could deadlock.
//
// # Operations, failures and rollback
//
// Each operation runs on the current state through Invoke. An error or a
// panic leaves the state exactly as before that operation, discards the
// signals and orchestration starts it asked for, and answers a call with a
// failure; the operations before and after it in the batch are unaffected.
// An operation that succeeds emits its actions and answers a call with its
// output; a signal gets no answer. Deleting the state makes it absent for
// the following operations, which may create it again.
package entity
