package postgres

import "strings"

// queries holds every fixed statement, with the schema name spliced in once
// at Open. The schema name was validated as a plain identifier and is
// quoted; every value is a parameter. pgx prepares each statement once per
// connection and reuses it (its statement cache), so a hot path only binds
// and executes.
type queries struct {
	hubSelect, hubCreate, hubLock, hubTruncate string

	partitionList, partitionAcquire, partitionRenew  string
	partitionRelease, partitionRequest, partitionRow string
	workerUpsert, workerList, workerDelete           string

	lockKeys, fenceRows, instanceConds, workLocks string
	workComplete, payloadPut                      string
	historyReset, historyInsert, instanceUpsert   string
	instanceNewVersion                            string
	controlInsert, workInsert, controlDelete      string
	poisonInsert, notify                          string

	asyncCommit                                    string
	fenceShare, controlReceive, controlNextVisible string
	controlRenew, controlAbandon                   string
	workReceive, workRenew, workAbandon            string

	historyLoad, instanceGet, instanceStatus, purge string
	purgeKeep, payloadGet, poisonList               string
	metricsControl, metricsWork                     string
}

// instanceCols is the column list scanInstance reads.
const instanceCols = `instance_id, name, execution_id, status, input, output, custom_status, failure,
	created_at, updated_at, completed_at, scheduled_start_at, parent_instance_id, version`

// dataTables lists every table of hub data (not schema_migrations), for
// HubDelete.
var dataTables = []string{"hub", "partitions", "workers", "history", "instances", "control", "work", "payloads", "poison"}

func newQueries(schema string) queries {
	r := strings.NewReplacer("{s}", schema)
	tables := make([]string, len(dataTables))
	for i, t := range dataTables {
		tables[i] = schema + "." + t
	}
	x := r.Replace
	q := queries{
		hubSelect: x(`SELECT name, partition_count, created_at, settings FROM {s}.hub`),
		// A concurrent creator's row makes ON CONFLICT wait for its
		// transaction and then do nothing; the hub is read afterwards by a
		// statement of its own, whose snapshot sees that row.
		hubCreate: x(`WITH ins AS (
				INSERT INTO {s}.hub (name, partition_count, created_at) VALUES ($1, $2::int4, $3::int8)
				ON CONFLICT (singleton) DO NOTHING RETURNING partition_count)
			INSERT INTO {s}.partitions (idx) SELECT generate_series(0, partition_count - 1) FROM ins`),
		hubLock:     x(`SELECT name FROM {s}.hub FOR UPDATE`),
		hubTruncate: x(`TRUNCATE ` + strings.Join(tables, ", ")),

		partitionList: x(`SELECT idx, owner, epoch, lease_expires_at, next_owner FROM {s}.partitions ORDER BY idx`),
		partitionAcquire: x(`UPDATE {s}.partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = $2, next_owner = ''
			WHERE idx = $3 AND epoch = $4 RETURNING epoch`),
		// An expired lease is not renewed: another worker may already have
		// read it as expired and be taking it over.
		partitionRenew: x(`UPDATE {s}.partitions SET lease_expires_at = $1
			WHERE idx = $2 AND owner = $3 AND epoch = $4 AND lease_expires_at > $5 RETURNING next_owner`),
		partitionRelease: x(`UPDATE {s}.partitions SET owner = '', lease_expires_at = $1
			WHERE idx = $2 AND owner = $3 AND epoch = $4`),
		partitionRequest: x(`UPDATE {s}.partitions SET next_owner = $1 WHERE idx = $2`),
		partitionRow:     x(`SELECT owner, epoch, lease_expires_at FROM {s}.partitions WHERE idx = $1`),
		workerUpsert: x(`INSERT INTO {s}.workers (id, host, started_at, heartbeat_at, partitions, info)
			VALUES ($1, $2, $3, $4, $5::int4[], $6)
			ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, started_at = EXCLUDED.started_at,
				heartbeat_at = EXCLUDED.heartbeat_at, partitions = EXCLUDED.partitions, info = EXCLUDED.info`),
		workerList: x(`SELECT id, host, started_at, heartbeat_at, partitions, info FROM {s}.workers
			WHERE heartbeat_at > $1 ORDER BY id`),
		workerDelete: x(`DELETE FROM {s}.workers WHERE id = $1`),

		// Transaction-level advisory locks, one per instance a batch
		// touches, taken in key order (the caller sorts) so that batches
		// cannot deadlock on them. They serialize every batch that reads
		// or writes an instance, including the creation of a row that does
		// not exist yet, which no row lock can cover.
		lockKeys: x(`SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k`),
		// FOR SHARE: a concurrent PartitionAcquire (an UPDATE of the row)
		// waits until this transaction ends, so no acquire slips between
		// the fence check and the writes it guards.
		fenceRows: x(`SELECT idx, owner, epoch FROM {s}.partitions WHERE idx = ANY($1::int4[]) ORDER BY idx FOR SHARE`),
		// Each key of a list is looked up by its own index probe: a
		// LATERAL subquery with OFFSET 0 stays a nested loop of primary-key
		// lookups whatever the statistics say. With = ANY or a plain join,
		// a young table (no statistics yet) can get a cached generic plan
		// that scans it whole, for every batch.
		instanceConds: x(`SELECT i.instance_id, i.status, i.version FROM unnest($1::text[]) AS k (id),
			LATERAL (SELECT instance_id, status, version FROM {s}.instances WHERE instance_id = k.id OFFSET 0) AS i`),
		// FOR UPDATE: receivers skip these rows (SKIP LOCKED) and renewals
		// wait, so the token checked is the token deleted.
		workLocks: x(`SELECT w.id, w.lock_token FROM unnest($1::text[]) WITH ORDINALITY AS k (id, n),
			LATERAL (SELECT id, lock_token FROM {s}.work WHERE id = k.id OFFSET 0 FOR UPDATE) AS w
			ORDER BY k.n`),
		workComplete: x(`DELETE FROM {s}.work WHERE (id, lock_token) IN
			(SELECT u.id, u.token FROM unnest($1::text[], $2::text[]) AS u (id, token))`),
		payloadPut: x(`INSERT INTO {s}.payloads (key, instance_id, data)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
			ON CONFLICT (key) DO UPDATE SET instance_id = EXCLUDED.instance_id, data = EXCLUDED.data`),
		historyReset: x(`DELETE FROM {s}.history h USING unnest($1::text[]) AS k (id) WHERE h.instance_id = k.id`),
		historyInsert: x(`INSERT INTO {s}.history (instance_id, seq, execution_id, data)
			SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::bytea[])`),
		// Version -1 keeps the stored version (0 for a new row), for
		// clients that rewrite a row without touching its history.
		instanceUpsert: x(`INSERT INTO {s}.instances (` + instanceCols + `)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
				$5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[],
				$9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::int8[])
			ON CONFLICT (instance_id) DO UPDATE SET name = EXCLUDED.name, execution_id = EXCLUDED.execution_id,
				status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output,
				custom_status = EXCLUDED.custom_status, failure = EXCLUDED.failure,
				created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
				completed_at = EXCLUDED.completed_at, scheduled_start_at = EXCLUDED.scheduled_start_at,
				parent_instance_id = EXCLUDED.parent_instance_id,
				version = CASE WHEN EXCLUDED.version < 0 THEN {s}.instances.version ELSE EXCLUDED.version END`),
		// A new row written with version -1 (keep the stored one) gets 0.
		instanceNewVersion: x(`UPDATE {s}.instances SET version = 0 WHERE instance_id = ANY($1::text[]) AND version < 0`),
		controlInsert: x(`INSERT INTO {s}.control (id, partition, instance_id, data, enqueued_at, visible_at, dequeue_count, locked_epoch, locked_until)
			SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::bytea[], $5::int8[], $6::int8[], $7::int4[], $8::int8[], $9::int8[])`),
		workInsert: x(`INSERT INTO {s}.work (id, instance_id, data, enqueued_at, visible_at, dequeue_count, lock_token, locked_until)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], $6::int4[], $7::text[], $8::int8[])`),
		controlDelete: x(`DELETE FROM {s}.control c USING unnest($1::text[]) AS k (id) WHERE c.id = k.id`),
		poisonInsert: x(`INSERT INTO {s}.poison (id, queue, partition, instance_id, data, dequeue_count, reason, created_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::bytea[], $6::int4[], $7::text[], $8::int8[])`),
		// Sent inside the enqueuing transaction: PostgreSQL delivers it on
		// commit and drops it on rollback.
		notify: x(`SELECT count(pg_notify($1, p::text)) FROM unnest($2::int4[]) AS p`),

		// Lock bookkeeping (receive, renew, abandon) commits without
		// waiting for its WAL flush: losing it in a crash only makes a
		// message visible again early, with its previous dequeue count
		// (delivery is at least once anyway), and the next durable commit
		// flushes it. The messages themselves are written durably.
		asyncCommit: x(`SELECT set_config('synchronous_commit', 'off', true)`),
		fenceShare:  x(`SELECT owner = $2 AND epoch = $3 FROM {s}.partitions WHERE idx = $1 FOR SHARE`),
		// A message is visible when its time has come and no lock of the
		// caller's epoch holds it: locks of older epochs are void. The
		// fence is repeated inside, so a refused fence locks nothing.
		// SKIP LOCKED passes over rows a concurrent commit is deleting.
		controlReceive: x(`UPDATE {s}.control SET dequeue_count = dequeue_count + 1, locked_epoch = $3, locked_until = $4
			WHERE id IN (SELECT id FROM {s}.control
				WHERE partition = $1 AND visible_at <= $2 AND (locked_until <= $2 OR locked_epoch <> $3)
					AND EXISTS (SELECT 1 FROM {s}.partitions WHERE idx = $1 AND owner = $6 AND epoch = $3)
				ORDER BY id LIMIT $5
				FOR UPDATE SKIP LOCKED)
			RETURNING id, instance_id, data, enqueued_at, visible_at, dequeue_count`),
		controlNextVisible: x(`SELECT min(visible_at) FROM {s}.control WHERE partition = $1 AND visible_at > $2`),
		controlRenew: x(`UPDATE {s}.control SET locked_until = $1
			WHERE id = ANY($2::text[]) AND partition = $3 AND locked_epoch = $4
				AND EXISTS (SELECT 1 FROM {s}.partitions WHERE idx = $3 AND owner = $5 AND epoch = $4)`),
		controlAbandon: x(`UPDATE {s}.control SET visible_at = $1, locked_epoch = 0, locked_until = 0
			WHERE id = ANY($2::text[]) AND partition = $3 AND locked_epoch = $4
				AND EXISTS (SELECT 1 FROM {s}.partitions WHERE idx = $3 AND owner = $5 AND epoch = $4)`),
		// Each item gets its own token: the receive's unique prefix plus
		// the item's ID.
		workReceive: x(`UPDATE {s}.work SET dequeue_count = dequeue_count + 1, lock_token = $2 || id, locked_until = $3
			WHERE id IN (SELECT id FROM {s}.work
				WHERE visible_at <= $1 AND locked_until <= $1
				ORDER BY id LIMIT $4
				FOR UPDATE SKIP LOCKED)
			RETURNING id, instance_id, data, enqueued_at, dequeue_count, lock_token`),
		workRenew: x(`UPDATE {s}.work SET locked_until = $1 WHERE id = $2 AND lock_token = $3`),
		workAbandon: x(`UPDATE {s}.work SET visible_at = $1, lock_token = '', locked_until = 0
			WHERE id = $2 AND lock_token = $3`),

		historyLoad:    x(`SELECT seq, execution_id, data FROM {s}.history WHERE instance_id = $1 ORDER BY seq`),
		instanceGet:    x(`SELECT ` + instanceCols + ` FROM {s}.instances WHERE instance_id = $1`),
		instanceStatus: x(`SELECT status, version FROM {s}.instances WHERE instance_id = $1`),
		// Deletes the finished ones among $1 (whose version is $3, unless
		// $3 is 0) and everything stored for them. Poison records stay:
		// they are the record of what went wrong. The queues have no
		// instance_id index: it would cost every send and delete, while
		// purges are rare.
		purge: x(`WITH gone AS (
				DELETE FROM {s}.instances WHERE instance_id = ANY($1::text[]) AND status = ANY($2::text[])
					AND ($3::int8 = 0 OR version = $3::int8)
				RETURNING instance_id),
			h AS (DELETE FROM {s}.history WHERE instance_id IN (SELECT instance_id FROM gone)),
			p AS (DELETE FROM {s}.payloads WHERE instance_id IN (SELECT instance_id FROM gone)),
			c AS (DELETE FROM {s}.control WHERE instance_id IN (SELECT instance_id FROM gone)),
			w AS (DELETE FROM {s}.work WHERE instance_id IN (SELECT instance_id FROM gone))
			SELECT count(*) FROM gone`),
		// purge with KeepMessages: the row and history go; the queued
		// messages stay, and so do the payloads they may reference.
		purgeKeep: x(`WITH gone AS (
				DELETE FROM {s}.instances WHERE instance_id = ANY($1::text[]) AND status = ANY($2::text[])
					AND ($3::int8 = 0 OR version = $3::int8)
				RETURNING instance_id),
			h AS (DELETE FROM {s}.history WHERE instance_id IN (SELECT instance_id FROM gone))
			SELECT count(*) FROM gone`),
		payloadGet: x(`SELECT data FROM {s}.payloads WHERE key = $1`),
		poisonList: x(`SELECT id, queue, partition, instance_id, data, dequeue_count, reason, created_at
			FROM {s}.poison ORDER BY created_at DESC, seq DESC LIMIT $1`),
		metricsControl: x(`SELECT partition, count(*),
			min(visible_at) FILTER (WHERE visible_at <= $1 AND locked_until <= $1),
			min(enqueued_at) FILTER (WHERE visible_at <= $1 AND locked_until <= $1)
			FROM {s}.control GROUP BY partition`),
		metricsWork: x(`SELECT count(*),
			min(visible_at) FILTER (WHERE visible_at <= $1 AND locked_until <= $1),
			min(enqueued_at) FILTER (WHERE visible_at <= $1 AND locked_until <= $1)
			FROM {s}.work`),
	}
	return q
}
