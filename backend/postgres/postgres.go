package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskhub/taskhub/backend"
)

// ErrClosed is returned by calls on a closed Backend.
var ErrClosed = errors.New("postgres: backend is closed")

// HubMismatchError is returned when a schema holds a hub other than the one
// Options.Hub names: a schema holds exactly one hub.
type HubMismatchError struct {
	Schema    string
	Stored    string
	Requested string
}

func (e *HubMismatchError) Error() string {
	return fmt.Sprintf("postgres: schema %q holds task hub %q, not %q: a schema holds one hub, use another Options.Schema for another hub",
		e.Schema, e.Stored, e.Requested)
}

// Backend is a task hub in a PostgreSQL schema. It implements
// backend.Backend and backend.Notifier, and is safe for concurrent use.
type Backend struct {
	opts Options
	pool *pgxpool.Pool
	// listenConfig configures the dedicated LISTEN connections.
	listenConfig *pgx.ConnConfig

	// schemaIdent is the quoted schema name; channel is the notification
	// channel of the hub (the schema name, unquoted, as pg_notify takes it).
	schemaIdent string
	channel     string
	q           queries

	// tokenPrefix makes lock tokens unique across Backends and processes;
	// tokenSeq makes them unique across receives of this Backend.
	tokenPrefix string
	tokenSeq    atomic.Uint64

	// partitionCount caches the hub's partition count (0 when unknown): it
	// is fixed at creation, and CommitBatch checks sends against it.
	partitionCount atomic.Int64

	// listenerPID is the server process of the newest LISTEN connection
	// (0 before the first); tests terminate it to prove reconnection.
	listenerPID atomic.Uint32

	// closing ends when Close is called, stopping Notifications loops.
	closing   context.Context
	cancel    context.CancelFunc
	closed    atomic.Bool
	closeOnce sync.Once
}

var (
	_ backend.Backend  = (*Backend)(nil)
	_ backend.Notifier = (*Backend)(nil)
)

// Open connects to the database at url (a postgres:// URL or a key=value
// DSN, as pgx parses it), creates or upgrades the hub's schema (see
// Migrate) and returns a backend for the hub opts.Hub. It does not create
// the hub: call HubCreate. ctx bounds the connection and migration only.
func Open(ctx context.Context, url string, opts Options) (*Backend, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MinConns > cfg.MaxConns {
		cfg.MinConns = cfg.MaxConns
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "taskhub"
	}
	listen := cfg.ConnConfig.Copy()
	listen.RuntimeParams["application_name"] = "taskhub listener"

	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("postgres: lock token prefix: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	b := &Backend{
		opts:         opts,
		pool:         pool,
		listenConfig: listen,
		schemaIdent:  pgx.Identifier{opts.Schema}.Sanitize(),
		channel:      opts.Schema,
		tokenPrefix:  hex.EncodeToString(rnd[:]) + ".",
	}
	b.closing, b.cancel = context.WithCancel(context.Background())
	b.q = newQueries(b.schemaIdent)
	if err := b.Migrate(ctx); err != nil {
		b.Close()
		return nil, err
	}
	hub, err := b.HubGet(ctx)
	switch {
	case errors.Is(err, backend.ErrHubNotFound):
	case err != nil:
		b.Close()
		return nil, err
	default:
		b.partitionCount.Store(int64(hub.PartitionCount))
	}
	return b, nil
}

// Schema returns the schema that holds the hub.
func (b *Backend) Schema() string { return b.opts.Schema }

// Capabilities implements backend.Backend.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{Transactional: true}
}

// Close implements backend.Backend. It stops Notifications loops and waits
// for calls in progress to hand back their connections. Safe to call twice.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.cancel()
		b.pool.Close()
	})
	return nil
}

// conn acquires a pooled connection, or fails with ErrClosed.
func (b *Backend) conn(ctx context.Context) (*pgxpool.Conn, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	c, err := b.pool.Acquire(ctx)
	if err != nil {
		if b.closed.Load() {
			return nil, ErrClosed
		}
		return nil, err
	}
	return c, nil
}

// read runs an idempotent read, retrying with back-off while the error says
// the connection was lost (server restart, terminated backend, network),
// for at most Options.RetryTimeout.
func (b *Backend) read(ctx context.Context, fn func(ctx context.Context) error) error {
	start := time.Now()
	wait := 10 * time.Millisecond
	for {
		if b.closed.Load() {
			return ErrClosed
		}
		err := fn(ctx)
		if err == nil || !connectionLost(err) || ctx.Err() != nil || b.opts.RetryTimeout < 0 {
			return err
		}
		if time.Since(start) >= b.opts.RetryTimeout {
			return fmt.Errorf("connection lost, retried for %v: %w", b.opts.RetryTimeout, err)
		}
		if !sleep(ctx, jitter(wait)) {
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// connectionLost reports whether err means the connection (not the
// statement) failed, so that an idempotent statement may run again on
// another connection.
func connectionLost(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", // admin_shutdown (also pg_terminate_backend)
			"57P02", // crash_shutdown
			"57P03": // cannot_connect_now (starting up, shutting down)
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// sleep waits d, or less if ctx ends first (then it returns false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter spreads d over 80–120 %, so that clients cut off together do not
// come back in lock step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

// lockKey derives an advisory lock key. Advisory locks are database-wide,
// so keys include the schema: hubs never contend for each other's keys.
func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int64(h.Sum64())
}

// ns converts a time to the stored form; the zero time is stored as 0.
func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// at converts a stored time back; 0 is the zero time.
func at(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// atNull converts a nullable stored time (an aggregate over no rows).
func atNull(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return at(*n)
}
