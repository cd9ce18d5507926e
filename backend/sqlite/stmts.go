package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Every statement of a hot path is prepared once at Open: the driver keeps
// the compiled SQLite statement and only binds and steps it per call.

// instanceCols is the column list scanInstance reads.
const instanceCols = `instance_id, name, execution_id, status, input, output, custom_status, failure,
	created_at, updated_at, completed_at, scheduled_start_at, parent_instance_id, version`

// writeStmts run on the write connection, inside write transactions.
type writeStmts struct {
	begin, commit, rollback *sql.Stmt

	hubSelect, hubInsert, partitionInsert                                *sql.Stmt
	partitionAcquire, partitionRenew, partitionRelease, partitionRequest *sql.Stmt
	partitionRow                                                         *sql.Stmt
	workerUpsert, workerDelete                                           *sql.Stmt

	fence, instanceCond, workComplete                         *sql.Stmt
	payloadPut, historyReset, historyInsert                   *sql.Stmt
	instanceUpdate, instanceUpsert, controlInsert, workInsert *sql.Stmt
	controlBacklog, controlDeleteMany, controlInsertMany      *sql.Stmt
	controlDelete, poisonInsert                               *sql.Stmt
	instanceDelete, payloadPurge, controlPurge, workPurge     *sql.Stmt

	controlReceive, controlNextVisible, controlRenew, controlAbandon *sql.Stmt
	workReceive, workRenew, workAbandon                              *sql.Stmt

	all []*sql.Stmt
}

func (s *writeStmts) prepare(ctx context.Context, c *sql.Conn) error {
	list := []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.begin, `BEGIN IMMEDIATE`},
		{&s.commit, `COMMIT`},
		{&s.rollback, `ROLLBACK`},

		{&s.hubSelect, `SELECT name, partition_count, created_at, settings FROM hub`},
		{&s.hubInsert, `INSERT INTO hub (name, partition_count, created_at) VALUES (?1, ?2, ?3)`},
		{&s.partitionInsert, `INSERT INTO partitions (idx) VALUES (?1)`},
		{&s.partitionAcquire, `UPDATE partitions SET owner = ?1, epoch = epoch + 1, lease_expires_at = ?2, next_owner = ''
			WHERE idx = ?3 AND epoch = ?4 RETURNING epoch`},
		// An expired lease is not renewed: another worker may already have
		// read it as expired and be taking it over.
		{&s.partitionRenew, `UPDATE partitions SET lease_expires_at = ?1
			WHERE idx = ?2 AND owner = ?3 AND epoch = ?4 AND lease_expires_at > ?5 RETURNING next_owner`},
		{&s.partitionRelease, `UPDATE partitions SET owner = '', lease_expires_at = ?1
			WHERE idx = ?2 AND owner = ?3 AND epoch = ?4`},
		{&s.partitionRequest, `UPDATE partitions SET next_owner = ?1 WHERE idx = ?2`},
		{&s.partitionRow, `SELECT owner, epoch, lease_expires_at FROM partitions WHERE idx = ?1`},
		{&s.workerUpsert, `INSERT INTO workers (id, host, started_at, heartbeat_at, partitions, info)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6)
			ON CONFLICT (id) DO UPDATE SET host = excluded.host, started_at = excluded.started_at,
				heartbeat_at = excluded.heartbeat_at, partitions = excluded.partitions, info = excluded.info`},
		{&s.workerDelete, `DELETE FROM workers WHERE id = ?1`},

		{&s.fence, `SELECT EXISTS (SELECT 1 FROM partitions WHERE idx = ?1 AND owner = ?2 AND epoch = ?3)`},
		{&s.instanceCond, `SELECT status, version FROM instances WHERE instance_id = ?1`},
		{&s.workComplete, `DELETE FROM work WHERE id = ?1 AND lock_token = ?2`},
		{&s.payloadPut, `INSERT INTO payloads (key, instance_id, data) VALUES (?1, ?2, ?3)
			ON CONFLICT (key) DO UPDATE SET instance_id = excluded.instance_id, data = excluded.data`},
		{&s.historyReset, `DELETE FROM history WHERE instance_id = ?1`},
		{&s.historyInsert, `INSERT INTO history (instance_id, seq, execution_id, data) VALUES (?1, ?2, ?3, ?4)`},
		// Version -1 keeps the stored version (0 for a new row), for
		// clients that rewrite a row without touching its history.
		//
		// Most upserts are steps of an existing instance: this update leaves
		// name and created_at, and so their indexes, alone. When it matches
		// no row, instanceUpsert writes every column.
		{&s.instanceUpdate, `UPDATE instances SET execution_id = ?3, status = ?4, input = ?5, output = ?6,
			custom_status = ?7, failure = ?8, updated_at = ?10, completed_at = ?11, scheduled_start_at = ?12,
			parent_instance_id = ?13, version = CASE WHEN ?14 < 0 THEN version ELSE ?14 END
			WHERE instance_id = ?1 AND name = ?2 AND created_at = ?9`},
		{&s.instanceUpsert, `INSERT INTO instances (` + instanceCols + `)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, max(?14, 0))
			ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name, execution_id = excluded.execution_id,
				status = excluded.status, input = excluded.input, output = excluded.output,
				custom_status = excluded.custom_status, failure = excluded.failure,
				created_at = excluded.created_at, updated_at = excluded.updated_at,
				completed_at = excluded.completed_at, scheduled_start_at = excluded.scheduled_start_at,
				parent_instance_id = excluded.parent_instance_id,
				version = CASE WHEN ?14 < 0 THEN instances.version ELSE ?14 END`},
		{&s.controlInsert, `INSERT INTO control (id, partition, instance_id, data, enqueued_at, visible_at, dequeue_count, locked_epoch, locked_until)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)`},
		{&s.workInsert, `INSERT INTO work (id, instance_id, data, enqueued_at, visible_at, dequeue_count, lock_token, locked_until)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)`},
		{&s.controlDelete, `DELETE FROM control WHERE id = ?1`},
		{&s.controlInsertMany, controlInsertManySQL()},
		{&s.controlDeleteMany, `DELETE FROM control WHERE id IN (SELECT value FROM json_each(?1))`},
		{&s.poisonInsert, `INSERT INTO poison (id, queue, partition, instance_id, data, dequeue_count, reason, created_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)`},
		{&s.instanceDelete, `DELETE FROM instances WHERE instance_id = ?1`},
		{&s.payloadPurge, `DELETE FROM payloads WHERE instance_id = ?1`},
		// The queues have no instance_id index: it would cost every send
		// and delete, while purges are rare. A purge deletes the messages
		// of all its instances in one scan. ?1 is a JSON array of the IDs in
		// hex, so that any byte string survives the trip through JSON.
		{&s.controlPurge, `DELETE FROM control WHERE instance_id IN
			(SELECT CAST(unhex(value) AS TEXT) FROM json_each(?1))`},
		{&s.workPurge, `DELETE FROM work WHERE instance_id IN
			(SELECT CAST(unhex(value) AS TEXT) FROM json_each(?1))`},

		// A message is visible when its time has come and no lock of the
		// caller's epoch holds it: locks of older epochs are void.
		{&s.controlReceive, `UPDATE control SET dequeue_count = dequeue_count + 1, locked_epoch = ?3, locked_until = ?4
			WHERE rowid IN (SELECT rowid FROM control INDEXED BY control_receive
				WHERE partition = ?1 AND visible_at <= ?2 AND (locked_until <= ?2 OR locked_epoch <> ?3)
				ORDER BY id LIMIT ?5)
			RETURNING id, instance_id, data, enqueued_at, visible_at, dequeue_count`},
		{&s.controlBacklog, `SELECT EXISTS (SELECT 1 FROM control INDEXED BY control_receive
			WHERE partition = ?1 AND visible_at <= ?2 AND (locked_until <= ?2 OR locked_epoch <> ?3))`},
		{&s.controlNextVisible, `SELECT min(visible_at) FROM control WHERE partition = ?1 AND visible_at > ?2`},
		{&s.controlRenew, `UPDATE control SET locked_until = ?1 WHERE id = ?2 AND partition = ?3 AND locked_epoch = ?4`},
		{&s.controlAbandon, `UPDATE control SET visible_at = ?1, locked_epoch = 0, locked_until = 0
			WHERE id = ?2 AND partition = ?3 AND locked_epoch = ?4`},
		// Each item gets its own token: the receive's unique prefix plus the
		// row's rowid.
		{&s.workReceive, `UPDATE work SET dequeue_count = dequeue_count + 1, lock_token = ?2 || rowid, locked_until = ?3
			WHERE rowid IN (SELECT rowid FROM work INDEXED BY work_receive
				WHERE visible_at <= ?1 AND locked_until <= ?1 ORDER BY id LIMIT ?4)
			RETURNING id, instance_id, data, enqueued_at, dequeue_count, lock_token`},
		{&s.workRenew, `UPDATE work SET locked_until = ?1 WHERE id = ?2 AND lock_token = ?3`},
		{&s.workAbandon, `UPDATE work SET visible_at = ?1, lock_token = '', locked_until = 0
			WHERE id = ?2 AND lock_token = ?3`},
	}
	for _, q := range list {
		st, err := c.PrepareContext(ctx, q.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q.query, err)
		}
		*q.dst = st
		s.all = append(s.all, st)
	}
	return nil
}

func (s *writeStmts) close() error {
	var errs []error
	for _, st := range s.all {
		errs = append(errs, st.Close())
	}
	s.all = nil
	return errors.Join(errs...)
}

// readStmts run on the read pool.
type readStmts struct {
	hubGet, partitionList, workerList    *sql.Stmt
	historyLoad, instanceGet, payloadGet *sql.Stmt
	poisonList                           *sql.Stmt
	controlPeek, workPeek                *sql.Stmt
	metricsControl, metricsWork          *sql.Stmt

	all []*sql.Stmt
}

func (s *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	list := []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.hubGet, `SELECT name, partition_count, created_at, settings FROM hub`},
		{&s.partitionList, `SELECT idx, owner, epoch, lease_expires_at, next_owner FROM partitions ORDER BY idx`},
		{&s.workerList, `SELECT id, host, started_at, heartbeat_at, partitions, info FROM workers
			WHERE heartbeat_at > ?1 ORDER BY id`},
		{&s.historyLoad, `SELECT seq, execution_id, data FROM history WHERE instance_id = ?1 ORDER BY seq`},
		{&s.instanceGet, `SELECT ` + instanceCols + ` FROM instances WHERE instance_id = ?1`},
		{&s.payloadGet, `SELECT data FROM payloads WHERE key = ?1`},
		{&s.poisonList, `SELECT id, queue, partition, instance_id, data, dequeue_count, reason, created_at
			FROM poison ORDER BY created_at DESC, seq DESC LIMIT ?1`},
		// Lets an idle poll answer without taking the write lock.
		{&s.controlPeek, `SELECT
			EXISTS (SELECT 1 FROM partitions WHERE idx = ?1 AND owner = ?2 AND epoch = ?3),
			EXISTS (SELECT 1 FROM control INDEXED BY control_receive
				WHERE partition = ?1 AND visible_at <= ?4 AND (locked_until <= ?4 OR locked_epoch <> ?3)),
			(SELECT min(visible_at) FROM control WHERE partition = ?1 AND visible_at > ?4)`},
		{&s.workPeek, `SELECT EXISTS (SELECT 1 FROM work INDEXED BY work_receive
			WHERE visible_at <= ?1 AND locked_until <= ?1)`},
		{&s.metricsControl, `SELECT partition, count(*),
			min(CASE WHEN visible_at <= ?1 AND locked_until <= ?1 THEN visible_at END),
			min(CASE WHEN visible_at <= ?1 AND locked_until <= ?1 THEN enqueued_at END)
			FROM control GROUP BY partition`},
		{&s.metricsWork, `SELECT count(*),
			min(CASE WHEN visible_at <= ?1 AND locked_until <= ?1 THEN visible_at END),
			min(CASE WHEN visible_at <= ?1 AND locked_until <= ?1 THEN enqueued_at END)
			FROM work`},
	}
	for _, q := range list {
		st, err := db.PrepareContext(ctx, q.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q.query, err)
		}
		*q.dst = st
		s.all = append(s.all, st)
	}
	return nil
}

func (s *readStmts) close() error {
	var errs []error
	for _, st := range s.all {
		errs = append(errs, st.Close())
	}
	s.all = nil
	return errors.Join(errs...)
}

// controlInsertRows is the number of rows of controlInsertMany.
const controlInsertRows = 16

// controlInsertManySQL is the INSERT of controlInsertRows control messages,
// the columns of each as in controlInsert.
func controlInsertManySQL() string {
	var b strings.Builder
	b.WriteString(`INSERT INTO control (id, partition, instance_id, data, enqueued_at, visible_at, dequeue_count, locked_epoch, locked_until) VALUES `)
	for r := range controlInsertRows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for c := range 9 {
			if c > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
		}
		b.WriteString(")")
	}
	return b.String()
}
