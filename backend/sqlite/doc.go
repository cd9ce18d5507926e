// Package sqlite is the embedded default backend of taskhub: one task hub in
// one SQLite file, through database/sql and the pure-Go driver
// modernc.org/sqlite (no cgo).
//
// # Durability
//
// The file is opened in WAL mode with synchronous=FULL (Options.Synchronous).
// Every durable write (CommitBatch, hub, lease, worker and purge calls) is one
// transaction whose commit fsyncs the write-ahead log before the call returns.
// So when CommitBatch returns, its units survive a process crash, an
// operating-system crash and a power loss, provided the disk honours fsync.
// A crash never leaves a partial batch: the whole batch or none of it is in
// the file. With Synchronous "NORMAL" commits survive a process crash but the
// last ones may be lost on power loss (the file stays consistent).
//
// Lock bookkeeping (ControlReceive, ControlRenew, ControlAbandon,
// WorkItemReceive, WorkItemRenew, WorkItemAbandon) is committed with
// synchronous=NORMAL: it costs no fsync of its own and becomes durable with
// the next durable commit, which syncs the whole log up to it. After a power
// loss a received message may therefore reappear unlocked with its previous
// dequeue count. Delivery is at-least-once in any case, and the messages
// themselves are written by durable commits only.
//
// # Several processes
//
// Several processes (and several Backend values in one process) may use one
// file. Write transactions start with BEGIN IMMEDIATE, so they take the write
// lock up front and never fail half-way on a lock upgrade; a writer waits up
// to Options.BusyTimeout for another process's lock, and the rare
// SQLITE_BUSY that SQLite reports without waiting is retried within the same
// budget. Within a process, writers share one connection guarded by a lock,
// so they queue in Go rather than in SQLite's sleep-and-retry busy handler;
// reads use a pool of read-only connections and, thanks to WAL, never wait
// for writers.
//
// The file must be on a local file system: SQLite's locking is not reliable
// over network file systems, and WAL needs shared memory between processes.
//
// # Layout
//
// One file holds one hub (Options.Hub); opening a file that holds another hub
// fails with a *HubMismatchError. The schema is versioned in the
// schema_version table and created on open. Times are stored as int64 Unix
// nanoseconds, and come back in UTC.
//
// # Cancellation
//
// A context cancels the wait for the write lock. Once a write transaction has
// begun it runs to completion, so a cancelled CommitBatch either applied its
// batch or did not start it; it never leaves the connection in a transaction.
package sqlite
