package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/taskhub/taskhub/backend"
)

// ControlReceive implements backend.Backend.
//
// An idle poll is answered from a read connection without the write lock, so
// that listeners polling empty partitions do not queue behind commits.
func (b *Backend) ControlReceive(ctx context.Context, params *backend.ControlReceiveParams) (*backend.ControlReceiveResult, error) {
	if params.Max <= 0 {
		return nil, fmt.Errorf("sqlite: ControlReceive: Max is %d; it must be positive", params.Max)
	}
	f := params.Fence
	now := ns(params.Now)
	var (
		held, ready bool
		next        sql.NullInt64
	)
	err := b.read(ctx, func() error {
		return b.rs.controlPeek.QueryRowContext(context.WithoutCancel(ctx),
			int64(f.Partition), f.Owner, f.Epoch, now).Scan(&held, &ready, &next)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: receive partition %d: %w", f.Partition, err)
	}
	if !held {
		return nil, fenceLost(f)
	}
	if !ready {
		return &backend.ControlReceiveResult{NextVisibleAt: at(next.Int64)}, nil
	}

	res := &backend.ControlReceiveResult{Messages: make([]*backend.ControlMessage, 0, min(params.Max, 64))}
	err = b.write(ctx, false, func(ctx context.Context) error {
		if err := b.checkFence(ctx, &f); err != nil {
			return err
		}
		rows, err := b.ws.controlReceive.QueryContext(ctx,
			int64(f.Partition), now, f.Epoch, ns(params.Now.Add(params.LockDuration)), int64(params.Max))
		if err != nil {
			return fmt.Errorf("sqlite: receive partition %d: %w", f.Partition, err)
		}
		defer rows.Close()
		for rows.Next() {
			m := &backend.ControlMessage{Partition: f.Partition}
			var enq, vis, dq int64
			if err := rows.Scan(&m.ID, &m.InstanceID, &m.Data, &enq, &vis, &dq); err != nil {
				return fmt.Errorf("sqlite: receive partition %d: %w", f.Partition, err)
			}
			m.EnqueuedAt, m.VisibleAt, m.DequeueCount = at(enq), at(vis), int(dq)
			res.Messages = append(res.Messages, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: receive partition %d: %w", f.Partition, err)
		}
		rows.Close()
		var next sql.NullInt64
		if err := b.ws.controlNextVisible.QueryRowContext(ctx, int64(f.Partition), now).Scan(&next); err != nil {
			return fmt.Errorf("sqlite: receive partition %d: %w", f.Partition, err)
		}
		res.NextVisibleAt = at(next.Int64)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// RETURNING yields rows in the order the update visited them, which
	// SQLite does not promise to be the subquery's order.
	slices.SortFunc(res.Messages, func(a, b *backend.ControlMessage) int { return strings.Compare(a.ID, b.ID) })
	return res, nil
}

// ControlRenew implements backend.Backend. Messages this epoch no longer
// holds (deleted, abandoned) are skipped.
func (b *Backend) ControlRenew(ctx context.Context, params *backend.ControlRenewParams) error {
	f := params.Fence
	until := ns(params.Now.Add(params.LockDuration))
	return b.write(ctx, false, func(ctx context.Context) error {
		if err := b.checkFence(ctx, &f); err != nil {
			return err
		}
		for _, id := range params.IDs {
			if _, err := b.ws.controlRenew.ExecContext(ctx, until, id, int64(f.Partition), f.Epoch); err != nil {
				return fmt.Errorf("sqlite: renew control message %q: %w", id, err)
			}
		}
		return nil
	})
}

// ControlAbandon implements backend.Backend.
func (b *Backend) ControlAbandon(ctx context.Context, params *backend.ControlAbandonParams) error {
	f := params.Fence
	vis := ns(params.VisibleAt)
	return b.write(ctx, false, func(ctx context.Context) error {
		if err := b.checkFence(ctx, &f); err != nil {
			return err
		}
		for _, id := range params.IDs {
			if _, err := b.ws.controlAbandon.ExecContext(ctx, vis, id, int64(f.Partition), f.Epoch); err != nil {
				return fmt.Errorf("sqlite: abandon control message %q: %w", id, err)
			}
		}
		return nil
	})
}

// checkFence returns ErrLeaseLost unless the fence still holds; it runs
// inside a write transaction.
func (b *Backend) checkFence(ctx context.Context, f *backend.Fence) error {
	var held bool
	if err := b.ws.fence.QueryRowContext(ctx, int64(f.Partition), f.Owner, f.Epoch).Scan(&held); err != nil {
		return fmt.Errorf("sqlite: check lease of partition %d: %w", f.Partition, err)
	}
	if !held {
		return fenceLost(*f)
	}
	return nil
}

func fenceLost(f backend.Fence) error {
	return fmt.Errorf("sqlite: partition %d is not held by %q at epoch %d: %w",
		f.Partition, f.Owner, f.Epoch, backend.ErrLeaseLost)
}

// WorkItemReceive implements backend.Backend.
func (b *Backend) WorkItemReceive(ctx context.Context, params *backend.WorkItemReceiveParams) ([]*backend.WorkItem, error) {
	if params.Max <= 0 {
		return nil, fmt.Errorf("sqlite: WorkItemReceive: Max is %d; it must be positive", params.Max)
	}
	now := ns(params.Now)
	var ready bool
	err := b.read(ctx, func() error {
		return b.rs.workPeek.QueryRowContext(context.WithoutCancel(ctx), now).Scan(&ready)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: receive work items: %w", err)
	}
	if !ready {
		return nil, nil
	}

	until := params.Now.Add(params.LockDuration)
	token := b.tokenPrefix + strconv.FormatUint(b.tokenSeq.Add(1), 36) + "."
	items := make([]*backend.WorkItem, 0, min(params.Max, 64))
	err = b.write(ctx, false, func(ctx context.Context) error {
		rows, err := b.ws.workReceive.QueryContext(ctx, now, token, ns(until), int64(params.Max))
		if err != nil {
			return fmt.Errorf("sqlite: receive work items: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			w := &backend.WorkItem{LockedUntil: until}
			var enq, dq int64
			if err := rows.Scan(&w.ID, &w.InstanceID, &w.Data, &enq, &dq, &w.LockToken); err != nil {
				return fmt.Errorf("sqlite: receive work items: %w", err)
			}
			w.EnqueuedAt, w.DequeueCount = at(enq), int(dq)
			items = append(items, w)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: receive work items: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(items, func(a, b *backend.WorkItem) int { return strings.Compare(a.ID, b.ID) })
	return items, nil
}

// WorkItemRenew implements backend.Backend.
func (b *Backend) WorkItemRenew(ctx context.Context, params *backend.WorkItemRenewParams) error {
	until := ns(params.Now.Add(params.LockDuration))
	return b.write(ctx, false, func(ctx context.Context) error {
		return b.workLockUpdate(ctx, b.ws.workRenew, "renew", until, params.ID, params.LockToken)
	})
}

// WorkItemAbandon implements backend.Backend.
func (b *Backend) WorkItemAbandon(ctx context.Context, params *backend.WorkItemAbandonParams) error {
	vis := ns(params.VisibleAt)
	return b.write(ctx, false, func(ctx context.Context) error {
		return b.workLockUpdate(ctx, b.ws.workAbandon, "abandon", vis, params.ID, params.LockToken)
	})
}

// workLockUpdate runs an update conditional on the work item's lock token
// and reports ErrLockLost when the token no longer matches.
func (b *Backend) workLockUpdate(ctx context.Context, st *sql.Stmt, op string, t int64, id, token string) error {
	if token == "" {
		return fmt.Errorf("sqlite: %s work item %q: empty lock token: %w", op, id, backend.ErrLockLost)
	}
	res, err := st.ExecContext(ctx, t, id, token)
	if err != nil {
		return fmt.Errorf("sqlite: %s work item %q: %w", op, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: %s work item %q: %w", op, id, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s work item %q: %w", op, id, backend.ErrLockLost)
	}
	return nil
}
