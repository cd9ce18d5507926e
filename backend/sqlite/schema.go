package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// schemaVersion is the version of the schema this build writes. A file with a
// newer version was written by a newer build and is refused rather than
// misread.
const schemaVersion = 1

// schemaV1 creates every table. Times are int64 Unix nanoseconds (0 for the
// zero time) so comparisons are integer comparisons in the indexes.
var schemaV1 = []string{
	`CREATE TABLE hub (
		name            TEXT PRIMARY KEY,
		partition_count INTEGER NOT NULL,
		created_at      INTEGER NOT NULL,
		settings        BLOB
	)`,
	`CREATE TABLE partitions (
		idx              INTEGER PRIMARY KEY,
		owner            TEXT NOT NULL DEFAULT '',
		epoch            INTEGER NOT NULL DEFAULT 0,
		lease_expires_at INTEGER NOT NULL DEFAULT 0,
		next_owner       TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE TABLE workers (
		id           TEXT PRIMARY KEY,
		host         TEXT NOT NULL,
		started_at   INTEGER NOT NULL,
		heartbeat_at INTEGER NOT NULL,
		partitions   TEXT NOT NULL,
		info         BLOB
	)`,
	// WITHOUT ROWID clusters an instance's events, so loading a history is
	// one contiguous range read.
	`CREATE TABLE history (
		instance_id  TEXT NOT NULL,
		seq          INTEGER NOT NULL,
		execution_id TEXT NOT NULL,
		data         BLOB,
		PRIMARY KEY (instance_id, seq)
	) WITHOUT ROWID`,
	`CREATE TABLE instances (
		instance_id        TEXT PRIMARY KEY,
		name               TEXT NOT NULL,
		execution_id       TEXT NOT NULL,
		status             TEXT NOT NULL,
		input              BLOB,
		output             BLOB,
		custom_status      BLOB,
		failure            BLOB,
		created_at         INTEGER NOT NULL,
		updated_at         INTEGER NOT NULL,
		completed_at       INTEGER NOT NULL,
		scheduled_start_at INTEGER NOT NULL,
		parent_instance_id TEXT NOT NULL,
		version            INTEGER NOT NULL
	)`,
	// Listing pages in instance_id order, so the filter indexes end with it.
	`CREATE INDEX instances_status ON instances (status, instance_id)`,
	`CREATE INDEX instances_name ON instances (name, instance_id)`,
	`CREATE INDEX instances_created ON instances (created_at)`,
	`CREATE TABLE control (
		id            TEXT PRIMARY KEY,
		partition     INTEGER NOT NULL,
		instance_id   TEXT NOT NULL,
		data          BLOB,
		enqueued_at   INTEGER NOT NULL,
		visible_at    INTEGER NOT NULL,
		dequeue_count INTEGER NOT NULL DEFAULT 0,
		locked_epoch  INTEGER NOT NULL DEFAULT 0,
		locked_until  INTEGER NOT NULL DEFAULT 0
	)`,
	// Receive walks a partition in ID order and stops after Max visible
	// messages. The visibility columns are in the index so that skipping
	// locked and delayed messages never reads the table.
	`CREATE INDEX control_receive ON control (partition, id, visible_at, locked_until, locked_epoch)`,
	// Finds the next delayed message (durable timers) without a scan.
	`CREATE INDEX control_delayed ON control (partition, visible_at)`,
	`CREATE TABLE work (
		id            TEXT PRIMARY KEY,
		instance_id   TEXT NOT NULL,
		data          BLOB,
		enqueued_at   INTEGER NOT NULL,
		visible_at    INTEGER NOT NULL,
		dequeue_count INTEGER NOT NULL DEFAULT 0,
		lock_token    TEXT NOT NULL DEFAULT '',
		locked_until  INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE INDEX work_receive ON work (id, visible_at, locked_until)`,
	`CREATE TABLE payloads (
		key         TEXT PRIMARY KEY,
		instance_id TEXT NOT NULL,
		data        BLOB
	)`,
	`CREATE INDEX payloads_instance ON payloads (instance_id)`,
	`CREATE TABLE poison (
		seq           INTEGER PRIMARY KEY,
		id            TEXT NOT NULL,
		queue         TEXT NOT NULL,
		partition     INTEGER NOT NULL,
		instance_id   TEXT NOT NULL,
		data          BLOB,
		dequeue_count INTEGER NOT NULL,
		reason        TEXT NOT NULL,
		created_at    INTEGER NOT NULL
	)`,
	`CREATE INDEX poison_created ON poison (created_at)`,
}

// tables lists every data table, for HubDelete.
var tables = []string{"hub", "partitions", "workers", "history", "instances", "control", "work", "payloads", "poison"}

// migrate creates the schema in an empty file, or checks that an existing
// file's schema is one this build understands. It runs in a write
// transaction so that processes opening a new file at the same time do not
// both create it.
func migrate(ctx context.Context, c *sql.Conn) error {
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: create schema_version: %w", err)
	}
	var v int
	err := c.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("sqlite: read schema version: %w", err)
	case v == schemaVersion:
		return nil
	case v > schemaVersion:
		return fmt.Errorf("sqlite: the file has schema version %d, but this build knows only up to %d: upgrade taskhub", v, schemaVersion)
	default:
		return fmt.Errorf("sqlite: the file has unknown schema version %d", v)
	}
	for _, stmt := range schemaV1 {
		if _, err := c.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("sqlite: create schema: %w", err)
		}
	}
	if _, err := c.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, schemaVersion); err != nil {
		return fmt.Errorf("sqlite: write schema version: %w", err)
	}
	return nil
}
