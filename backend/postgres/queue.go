package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskhub/taskhub/backend"
)

// ControlReceive implements backend.Backend. One round trip: the fence
// check (locking the partition row FOR SHARE), the receive and the next
// delayed message run as one pipeline, which is one implicit transaction.
func (b *Backend) ControlReceive(ctx context.Context, params *backend.ControlReceiveParams) (*backend.ControlReceiveResult, error) {
	if params.Max <= 0 {
		return nil, fmt.Errorf("postgres: ControlReceive: Max is %d; it must be positive", params.Max)
	}
	f := params.Fence
	now := ns(params.Now)
	conn, err := b.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: receive partition %d: %w", f.Partition, err)
	}
	defer conn.Release()

	batch := &pgx.Batch{}
	batch.Queue(b.q.asyncCommit)
	batch.Queue(b.q.fenceShare, int32(f.Partition), f.Owner, f.Epoch)
	batch.Queue(b.q.controlReceive, int32(f.Partition), now, f.Epoch, ns(params.Now.Add(params.LockDuration)),
		int32(params.Max), f.Owner)
	batch.Queue(b.q.controlNextVisible, int32(f.Partition), now)
	br := conn.SendBatch(ctx, batch)

	res := &backend.ControlReceiveResult{}
	_, err = br.Exec()
	var held bool
	if err == nil {
		held, err = fenceHeld(br.QueryRow())
	}
	if err == nil {
		rows, _ := br.Query()
		res.Messages, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*backend.ControlMessage, error) {
			m := &backend.ControlMessage{Partition: f.Partition}
			var (
				enq, vis int64
				dq       int32
			)
			if err := r.Scan(&m.ID, &m.InstanceID, &m.Data, &enq, &vis, &dq); err != nil {
				return nil, err
			}
			m.EnqueuedAt, m.VisibleAt, m.DequeueCount = at(enq), at(vis), int(dq)
			return m, nil
		})
	}
	if err == nil {
		var next *int64
		err = br.QueryRow().Scan(&next)
		res.NextVisibleAt = atNull(next)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: receive partition %d: %w", f.Partition, err)
	}
	if !held {
		return nil, fenceLost(f)
	}
	// RETURNING yields rows in the order the update visited them, which
	// need not be the subquery's order.
	slices.SortFunc(res.Messages, func(a, b *backend.ControlMessage) int { return strings.Compare(a.ID, b.ID) })
	return res, nil
}

// fenceHeld reads a fenceShare result: a missing partition is not held.
func fenceHeld(row pgx.Row) (bool, error) {
	var held bool
	err := row.Scan(&held)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return held, err
}

// ControlRenew implements backend.Backend. Messages this epoch no longer
// holds (deleted, abandoned) are skipped.
func (b *Backend) ControlRenew(ctx context.Context, params *backend.ControlRenewParams) error {
	return b.controlLockUpdate(ctx, "renew", &params.Fence, b.q.controlRenew,
		ns(params.Now.Add(params.LockDuration)), params.IDs)
}

// ControlAbandon implements backend.Backend.
func (b *Backend) ControlAbandon(ctx context.Context, params *backend.ControlAbandonParams) error {
	return b.controlLockUpdate(ctx, "abandon", &params.Fence, b.q.controlAbandon, ns(params.VisibleAt), params.IDs)
}

// controlLockUpdate runs a fenced update of received control messages: the
// fence check (FOR SHARE) and the update, itself guarded by the fence, in
// one pipeline.
func (b *Backend) controlLockUpdate(ctx context.Context, op string, f *backend.Fence, sql string, t int64, ids []string) error {
	conn, err := b.conn(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %s control messages: %w", op, err)
	}
	defer conn.Release()
	if ids == nil {
		ids = []string{}
	}
	batch := &pgx.Batch{}
	batch.Queue(b.q.asyncCommit)
	batch.Queue(b.q.fenceShare, int32(f.Partition), f.Owner, f.Epoch)
	batch.Queue(sql, t, ids, int32(f.Partition), f.Epoch, f.Owner)
	br := conn.SendBatch(ctx, batch)
	_, err = br.Exec()
	var held bool
	if err == nil {
		held, err = fenceHeld(br.QueryRow())
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgres: %s control messages of partition %d: %w", op, f.Partition, err)
	}
	if !held {
		return fenceLost(*f)
	}
	return nil
}

// WorkItemReceive implements backend.Backend: one UPDATE that locks the
// oldest visible items with FOR UPDATE SKIP LOCKED, so competing receivers
// never wait for each other and never get the same item.
func (b *Backend) WorkItemReceive(ctx context.Context, params *backend.WorkItemReceiveParams) ([]*backend.WorkItem, error) {
	if params.Max <= 0 {
		return nil, fmt.Errorf("postgres: WorkItemReceive: Max is %d; it must be positive", params.Max)
	}
	if b.closed.Load() {
		return nil, ErrClosed
	}
	until := params.Now.Add(params.LockDuration)
	token := b.tokenPrefix + strconv.FormatUint(b.tokenSeq.Add(1), 36) + "."
	batch := &pgx.Batch{}
	batch.Queue(b.q.asyncCommit)
	batch.Queue(b.q.workReceive, ns(params.Now), token, ns(until), int32(params.Max))
	br := b.pool.SendBatch(ctx, batch)
	_, err := br.Exec()
	var items []*backend.WorkItem
	if err == nil {
		rows, _ := br.Query()
		items, err = pgx.CollectRows(rows, scanWorkItem(until))
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: receive work items: %w", err)
	}
	slices.SortFunc(items, func(a, b *backend.WorkItem) int { return strings.Compare(a.ID, b.ID) })
	return items, nil
}

// scanWorkItem reads a received work item.
func scanWorkItem(until time.Time) pgx.RowToFunc[*backend.WorkItem] {
	return func(r pgx.CollectableRow) (*backend.WorkItem, error) {
		w := &backend.WorkItem{LockedUntil: until}
		var (
			enq int64
			dq  int32
		)
		if err := r.Scan(&w.ID, &w.InstanceID, &w.Data, &enq, &dq, &w.LockToken); err != nil {
			return nil, err
		}
		w.EnqueuedAt, w.DequeueCount = at(enq), int(dq)
		return w, nil
	}
}

// WorkItemRenew implements backend.Backend.
func (b *Backend) WorkItemRenew(ctx context.Context, params *backend.WorkItemRenewParams) error {
	return b.workLockUpdate(ctx, "renew", b.q.workRenew, ns(params.Now.Add(params.LockDuration)), params.ID, params.LockToken)
}

// WorkItemAbandon implements backend.Backend.
func (b *Backend) WorkItemAbandon(ctx context.Context, params *backend.WorkItemAbandonParams) error {
	return b.workLockUpdate(ctx, "abandon", b.q.workAbandon, ns(params.VisibleAt), params.ID, params.LockToken)
}

// workLockUpdate runs an update conditional on the work item's lock token
// and reports ErrLockLost when the token no longer matches.
func (b *Backend) workLockUpdate(ctx context.Context, op, sql string, t int64, id, token string) error {
	if token == "" {
		return fmt.Errorf("postgres: %s work item %q: empty lock token: %w", op, id, backend.ErrLockLost)
	}
	if b.closed.Load() {
		return ErrClosed
	}
	batch := &pgx.Batch{}
	batch.Queue(b.q.asyncCommit)
	batch.Queue(sql, t, id, token)
	br := b.pool.SendBatch(ctx, batch)
	_, err := br.Exec()
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgres: %s work item %q: %w", op, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s work item %q: %w", op, id, backend.ErrLockLost)
	}
	return nil
}
