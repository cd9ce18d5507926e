package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/taskhub/taskhub/backend"
)

// ErrClosed is returned by calls on a closed Backend.
var ErrClosed = errors.New("sqlite: backend is closed")

// HubMismatchError is returned when a file holds a hub other than the one
// Options.Hub names: a file holds exactly one hub.
type HubMismatchError struct {
	Path      string
	Stored    string
	Requested string
}

func (e *HubMismatchError) Error() string {
	return fmt.Sprintf("sqlite: %s holds task hub %q, not %q: a file holds one hub, use another file for another hub",
		e.Path, e.Stored, e.Requested)
}

// Backend is a task hub in a SQLite file. It implements backend.Backend and
// is safe for concurrent use.
type Backend struct {
	path string
	opts Options

	// The write side: one connection, one writer at a time. wlock is a
	// channel rather than a sync.Mutex so that waiting for it honours ctx.
	wdb   *sql.DB
	wconn *sql.Conn
	wlock chan struct{}
	ws    writeStmts
	// lowSync is whether the write connection is currently at
	// synchronous=NORMAL; guarded by wlock.
	lowSync bool
	// canLowerSync is false when Options.Synchronous is already NORMAL or OFF.
	canLowerSync bool

	// The read side: a pool of query_only connections.
	rdb *sql.DB
	rs  readStmts

	// tokenPrefix makes lock tokens unique across Backends and processes;
	// tokenSeq makes them unique across receives of this Backend.
	tokenPrefix string
	tokenSeq    atomic.Uint64

	// partitionCount caches the hub's partition count (0 when unknown): it
	// is fixed at creation, and CommitBatch checks sends against it.
	partitionCount atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ backend.Backend = (*Backend)(nil)

// Open opens (creating if needed) the SQLite file at path and returns a
// backend for the hub opts.Hub. It does not create the hub: call HubCreate.
func Open(path string, opts Options) (*Backend, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file::memory:") {
		return nil, fmt.Errorf("sqlite: path %q: an in-memory database cannot be shared by the backend's connections; use a file (t.TempDir() in tests)", path)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("sqlite: lock token prefix: %w", err)
	}
	b := &Backend{
		path:         path,
		opts:         opts,
		wlock:        make(chan struct{}, 1),
		canLowerSync: syncLevel(opts.Synchronous) > syncLevel("NORMAL"),
		tokenPrefix:  hex.EncodeToString(rnd[:]) + ".",
	}
	if err := b.open(context.Background()); err != nil {
		b.closeAll()
		return nil, err
	}
	return b, nil
}

func (b *Backend) open(ctx context.Context) error {
	busyMS := strconv.FormatInt(b.opts.BusyTimeout.Milliseconds(), 10)
	var err error
	b.wdb, err = sql.Open("sqlite", dsn(b.path,
		"busy_timeout("+busyMS+")",
		"journal_mode(WAL)",
		"synchronous("+b.opts.Synchronous+")",
		// The writer touches the hot pages of every table; a larger cache
		// than the 2 MiB default saves it re-reading them from the log.
		"cache_size(-16384)",
	))
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}
	b.wdb.SetMaxOpenConns(1)
	b.wdb.SetConnMaxLifetime(0)
	b.wdb.SetConnMaxIdleTime(0)
	// journal_mode(WAL) needs the file lock briefly; another process may be
	// creating the file at the same moment.
	err = retryBusy(ctx, b.opts.BusyTimeout, func() error {
		c, err := b.wdb.Conn(ctx)
		if err != nil {
			return err
		}
		b.wconn = c
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}
	var mode string
	if err := b.wconn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: open %s: journal mode is %q, not WAL (is it on a file system without shared memory?)", b.path, mode)
	}

	err = retryBusy(ctx, b.opts.BusyTimeout, func() error {
		if _, err := b.wconn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
			return err
		}
		if err := migrate(ctx, b.wconn); err != nil {
			_, _ = b.wconn.ExecContext(context.Background(), `ROLLBACK`)
			return err
		}
		if _, err := b.wconn.ExecContext(ctx, `COMMIT`); err != nil {
			_, _ = b.wconn.ExecContext(context.Background(), `ROLLBACK`)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}

	b.rdb, err = sql.Open("sqlite", dsn(b.path,
		"busy_timeout("+busyMS+")",
		"query_only(1)",
	))
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	b.rdb.SetMaxOpenConns(n)
	b.rdb.SetMaxIdleConns(n)
	b.rdb.SetConnMaxLifetime(0)
	b.rdb.SetConnMaxIdleTime(0)

	if err := b.ws.prepare(ctx, b.wconn); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}
	if err := b.rs.prepare(ctx, b.rdb); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", b.path, err)
	}

	hub, err := b.HubGet(ctx)
	switch {
	case errors.Is(err, backend.ErrHubNotFound):
	case err != nil:
		return err
	default:
		b.partitionCount.Store(int64(hub.PartitionCount))
	}
	return nil
}

// dsn builds a driver DSN for path with the given pragmas, which the driver
// runs on every new connection. The "file:" URI form lets any path through:
// the characters URIs reserve are escaped.
func dsn(path string, pragmas ...string) string {
	var sb strings.Builder
	sb.WriteString("file:")
	for i := 0; i < len(path); i++ {
		switch c := path[i]; c {
		case '%', '?', '#':
			fmt.Fprintf(&sb, "%%%02x", c)
		default:
			sb.WriteByte(c)
		}
	}
	for i, p := range pragmas {
		if i == 0 {
			sb.WriteByte('?')
		} else {
			sb.WriteByte('&')
		}
		sb.WriteString("_pragma=")
		sb.WriteString(p)
	}
	return sb.String()
}

// Capabilities implements backend.Backend.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{Transactional: true}
}

// Close implements backend.Backend. It waits for a write in progress.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.wlock <- struct{}{}
		b.closed.Store(true)
		b.closeErr = b.closeAll()
		<-b.wlock
	})
	return b.closeErr
}

func (b *Backend) closeAll() error {
	var errs []error
	errs = append(errs, b.rs.close())
	if b.rdb != nil {
		errs = append(errs, b.rdb.Close())
	}
	errs = append(errs, b.ws.close())
	if b.wconn != nil {
		errs = append(errs, b.wconn.Close())
	}
	if b.wdb != nil {
		errs = append(errs, b.wdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close %s: %w", b.path, err)
	}
	return nil
}

// write runs fn in a write transaction on the write connection. durable
// selects the synchronous level of the commit: false is for lock bookkeeping
// that may be lost on power loss (see the package documentation).
//
// fn gets a context without cancellation: once begun, a transaction runs to
// the end, and the driver does not have to watch a context per statement.
func (b *Backend) write(ctx context.Context, durable bool, fn func(ctx context.Context) error) error {
	select {
	case b.wlock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.wlock }()
	if b.closed.Load() {
		return ErrClosed
	}
	qctx := context.WithoutCancel(ctx)
	if low := !durable && b.canLowerSync; low != b.lowSync {
		// Not a prepared statement: SQLite applies a PRAGMA when it
		// compiles it, so running a prepared one again changes nothing.
		// Options.Synchronous was validated against a list of keywords.
		pragma := "PRAGMA synchronous = " + b.opts.Synchronous
		if low {
			pragma = "PRAGMA synchronous = NORMAL"
		}
		if _, err := b.wconn.ExecContext(qctx, pragma); err != nil {
			return fmt.Errorf("sqlite: set synchronous: %w", err)
		}
		b.lowSync = low
	}
	err := retryBusy(ctx, b.opts.BusyTimeout, func() error {
		_, err := b.ws.begin.ExecContext(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	// Deferred so that a panic in fn (a nil message in a batch, say) does
	// not leave the shared connection inside a transaction.
	committed := false
	defer func() {
		if !committed {
			b.rollback()
		}
	}()
	if err := fn(qctx); err != nil {
		return err
	}
	if _, err := b.ws.commit.ExecContext(qctx); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	committed = true
	return nil
}

// rollback ends a failed transaction. Its own error is dropped: SQLite may
// already have rolled back (after an I/O error, say), and the caller reports
// the error that caused the rollback.
func (b *Backend) rollback() {
	_, _ = b.ws.rollback.ExecContext(context.Background())
}

// read runs a read, retrying the SQLITE_BUSY a WAL reader can meet while
// another connection recovers or restarts the log.
func (b *Backend) read(ctx context.Context, fn func() error) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return retryBusy(ctx, b.opts.BusyTimeout, fn)
}

// retryBusy runs fn until it returns something other than SQLITE_BUSY, for at
// most limit. SQLite's busy handler already waits for locks; this covers the
// cases where SQLite reports BUSY without calling it (WAL recovery, a
// checkpoint restarting the log) or after its timeout ran out under heavy
// contention.
func retryBusy(ctx context.Context, limit time.Duration, fn func() error) error {
	var deadline time.Time
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil || !isBusy(err) {
			return err
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(limit)
		} else if now.After(deadline) {
			return fmt.Errorf("database stayed locked for more than %v: %w", limit, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func isBusy(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
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

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}
