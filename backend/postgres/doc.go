// Package postgres is the PostgreSQL backend of taskhub, for many workers
// on many machines, through pgx v5 and its connection pool (pgxpool).
//
//	be, err := postgres.Open(ctx, postgres.URLFromEnv("postgres://localhost/app"), postgres.Options{Hub: "orders"})
//
// It implements backend.Backend with the semantics of the SQLite backend
// (the same conformance suite, backend/backendtest, passes unchanged), and
// backend.Notifier with LISTEN/NOTIFY, so workers in other processes wake up
// as soon as a message is enqueued for them.
//
// # Layout
//
// Several hubs share a database, each in its own schema (Options.Schema,
// by default "taskhub_" + the hub name). A schema holds one hub; opening it
// for another hub fails with a *HubMismatchError. The schema is created and
// upgraded by Open (see Backend.Migrate) from versioned SQL files embedded
// in the binary, recorded in the schema's schema_migrations table; a
// session advisory lock lets many processes open a new schema at once.
//
// Times are stored as bigint Unix nanoseconds, exactly as the engine passes
// them (its Now parameters are authoritative; the server clock is never
// used), and come back in UTC. IDs are text in the "C" collation, so they
// order byte by byte as in SQLite, whatever the database's locale. Strings
// must therefore be valid UTF-8 without NUL bytes, as PostgreSQL text
// requires; engine-generated IDs always are.
//
// # Transactions and locking
//
// CommitBatch applies a whole batch in one transaction, in at most two
// round trips (pgx pipelines): the first reads every condition with the
// rows it depends on locked, the second writes the accepted units and
// commits. A unit's conditions are decided before any of its statements is
// sent, so a refused unit writes nothing and does not abort the
// transaction. The lease fence locks the partition row FOR SHARE, so a
// concurrent PartitionAcquire waits for the batch and cannot slip between
// the check and the writes; named work items are locked FOR UPDATE; and
// every instance the batch touches is serialized through a
// transaction-level advisory lock, which also covers instances whose row
// does not exist yet. A storage error rolls the whole batch back.
//
// The queues are read with UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
// LOCKED LIMIT n) RETURNING …, so competing receivers never wait for each
// other or get the same message.
//
// # Durability
//
// CommitBatch, hub, lease, worker and purge calls commit with the server's
// synchronous_commit setting (on by default: a returned call survives a
// server crash). Lock bookkeeping (ControlReceive, ControlRenew,
// ControlAbandon, WorkItemReceive, WorkItemRenew, WorkItemAbandon) commits
// with synchronous_commit off, as the SQLite backend commits it with
// synchronous=NORMAL: it waits for no WAL flush, and becomes durable with
// the next durable commit. After a server crash a received message may
// therefore reappear unlocked with its previous dequeue count; delivery is
// at least once in any case, and messages themselves are only written by
// durable commits.
//
// # Connections
//
// Calls take connections from a pgxpool (Options.MaxConns). Idempotent
// reads that meet a lost connection (a server restart, a terminated
// backend, a network error) are retried with back-off for up to
// Options.RetryTimeout. Writes are not retried: their error is returned,
// and the engine abandons and retries the work. Statements are prepared
// once per connection by pgx's statement cache, so the database must be
// reached directly or through a pooler in session mode.
//
// # Notifications
//
// Every batch that enqueues sends pg_notify on the hub's channel (the
// schema name) in its own transaction, so the notification goes out on
// commit: at most one per partition, with the partition number as payload,
// and "-1" for the work-item queue. Backend.Notifications listens on a
// dedicated connection and reconnects with back-off when it drops.
package postgres
