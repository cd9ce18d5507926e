package postgres

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskhub/taskhub/backend"
)

// Listener timing.
const (
	// listenRetryMin and listenRetryMax bound the back-off between attempts
	// to reconnect the LISTEN connection.
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 10 * time.Second
	// listenIdleCheck is how long the listener waits for a notification
	// before it pings the server: a connection that died without a word
	// (a dropped network path) is noticed within this time.
	listenIdleCheck = 30 * time.Second
	// listenPingTimeout bounds that ping.
	listenPingTimeout = 10 * time.Second
)

// Notifications implements backend.Notifier. It holds a dedicated
// connection (outside the pool) that LISTENs on the hub's channel, and calls
// fn, from this goroutine and one call at a time, for every notification:
// Partition is the control-queue partition a commit sent to, or -1 for the
// work-item queue. CommitBatch sends at most one notification per
// partition (and one for work items) per batch, on commit.
//
// A lost connection is re-established with back-off for as long as ctx
// lasts. Notifications sent while it was down are lost, so after every
// reconnection fn is called once for every partition and for -1: a spurious
// wake-up costs a poll, a missed one a polling delay.
//
// It returns nil when ctx ends and ErrClosed when the Backend is closed.
// fn should return quickly: notifications queue up while it runs.
func (b *Backend) Notifications(ctx context.Context, fn func(backend.Notification)) error {
	if b.closed.Load() {
		return ErrClosed
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.closing, cancel)
	defer stop()

	wait := listenRetryMin
	everListened := false
	for {
		listened, err := b.listen(ctx, fn, everListened)
		if ctx.Err() != nil {
			if parent.Err() == nil && b.closed.Load() {
				return ErrClosed
			}
			return nil
		}
		if listened {
			everListened = true
			wait = listenRetryMin
		}
		b.opts.Logger.Warn("postgres: notification listener lost its connection; reconnecting",
			"schema", b.opts.Schema, "err", err, "retry_in", wait)
		sleep(ctx, jitter(wait))
		if !listened {
			wait = min(2*wait, listenRetryMax)
		}
	}
}

// listen runs one LISTEN connection until it fails or ctx ends. listened
// reports whether LISTEN took effect; resync asks for a wake-up of every
// queue once it has.
func (b *Backend) listen(ctx context.Context, fn func(backend.Notification), resync bool) (listened bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, b.listenConfig)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), listenPingTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize()); err != nil {
		return false, err
	}
	b.listenerPID.Store(conn.PgConn().PID())
	if resync {
		b.wakeAll(fn)
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if p, perr := strconv.Atoi(n.Payload); perr == nil && p >= -1 {
				fn(backend.Notification{Partition: p})
			}
			continue
		case ctx.Err() != nil:
			return true, ctx.Err()
		case !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded):
			return true, err
		}
		// Quiet for a while: make sure the connection still answers.
		pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return true, err
		}
	}
}

// wakeAll calls fn for every partition of the hub (as far as this Backend
// knows it) and for the work-item queue.
func (b *Backend) wakeAll(fn func(backend.Notification)) {
	for p := range int(b.partitionCount.Load()) {
		fn(backend.Notification{Partition: p})
	}
	fn(backend.Notification{Partition: -1})
}
