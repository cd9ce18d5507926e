package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema's versions, NNNN_name.sql, applied in order.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one versioned schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations and checks that their
// versions run 1, 2, 3, … without gaps or repeats.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: read migrations: %w", err)
	}
	var list []migration
	for _, e := range entries {
		file := e.Name()
		base, ok := strings.CutSuffix(file, ".sql")
		num, name, ok2 := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || !ok2 || err != nil || v <= 0 || name == "" {
			return nil, fmt.Errorf("postgres: migration file %q is not named NNNN_name.sql", file)
		}
		data, err := migrationFiles.ReadFile(path.Join("migrations", file))
		if err != nil {
			return nil, fmt.Errorf("postgres: read migration %q: %w", file, err)
		}
		list = append(list, migration{version: v, name: name, sql: string(data)})
	}
	slices.SortFunc(list, func(a, b migration) int { return a.version - b.version })
	for i, m := range list {
		if m.version != i+1 {
			return nil, fmt.Errorf("postgres: migrations must be numbered 1, 2, 3, … without gaps; found version %d at position %d", m.version, i+1)
		}
	}
	return list, nil
}

// SchemaVersion returns the newest schema version this build knows.
func SchemaVersion() int {
	list, err := loadMigrations()
	if err != nil {
		return 0
	}
	return len(list)
}

// Migrate brings the hub's schema to the newest version this build knows:
// it creates the schema if needed and applies, each in its own transaction,
// the embedded migrations not yet recorded in its schema_migrations table.
// Open calls it; calling it again is harmless.
//
// Processes opening the same schema at once are serialized by a session
// advisory lock for the schema, so each migration is applied exactly once.
// A schema already at a newer version than this build knows is refused
// rather than misread.
func (b *Backend) Migrate(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	list, err := loadMigrations()
	if err != nil {
		return err
	}
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: %w", b.opts.Schema, err)
	}
	defer conn.Release()

	key := lockKey("migrate", b.opts.Schema)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("postgres: migrate %s: take the migration lock: %w", b.opts.Schema, err)
	}
	defer func() {
		// A session lock outlives errors: if it cannot be released, the
		// connection is closed so the lock goes with it instead of
		// returning to the pool.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+b.schemaIdent); err != nil {
		return fmt.Errorf("postgres: create schema %s: %w", b.opts.Schema, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+b.schemaIdent+`.schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("postgres: create %s.schema_migrations: %w", b.opts.Schema, err)
	}
	rows, err := conn.Query(ctx, `SELECT version FROM `+b.schemaIdent+`.schema_migrations ORDER BY version`)
	if err != nil {
		return fmt.Errorf("postgres: read %s.schema_migrations: %w", b.opts.Schema, err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("postgres: read %s.schema_migrations: %w", b.opts.Schema, err)
	}
	if n := len(applied); n > 0 && int(applied[n-1]) > len(list) {
		return fmt.Errorf("postgres: schema %s is at version %d, but this build knows only up to %d: upgrade taskhub",
			b.opts.Schema, applied[n-1], len(list))
	}
	for _, m := range list {
		if slices.Contains(applied, int32(m.version)) {
			continue
		}
		if err := b.applyMigration(ctx, conn.Conn(), m); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration runs one migration and records it, in one transaction.
func (b *Backend) applyMigration(ctx context.Context, conn *pgx.Conn, m migration) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+b.schemaIdent); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+b.schemaIdent+`.schema_migrations (version, name) VALUES ($1, $2)`,
			int32(m.version), m.name)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: migrate %s to version %d (%s): %w", b.opts.Schema, m.version, m.name, err)
	}
	return nil
}
