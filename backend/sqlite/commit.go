package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/taskhub/taskhub/backend"
)

// CommitBatch implements backend.Backend: the whole batch is one transaction
// and one fsync. Each unit's conditions are read first; a refused unit is
// skipped before it writes anything, the others apply in order, so a unit
// sees the writes of the units before it.
func (b *Backend) CommitBatch(ctx context.Context, commits []*backend.Commit) ([]error, error) {
	for i, c := range commits {
		if c == nil {
			return nil, fmt.Errorf("sqlite: commit %d is nil", i)
		}
	}
	results := make([]error, len(commits))
	err := b.write(ctx, true, func(ctx context.Context) error {
		bc := batchCommit{b: b, ctx: ctx}
		for i, c := range commits {
			refused, err := bc.check(c)
			if err != nil {
				return fmt.Errorf("sqlite: commit %d: %w", i, err)
			}
			if refused != nil {
				results[i] = refused
				continue
			}
			if err := bc.apply(c); err != nil {
				return fmt.Errorf("sqlite: commit %d: %w", i, err)
			}
		}
		if err := bc.flushControl(); err != nil {
			return fmt.Errorf("sqlite: commit: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// batchCommit is the state of one CommitBatch transaction.
type batchCommit struct {
	b   *Backend
	ctx context.Context
	// fences caches fence checks: no unit changes a partition row, so an
	// answer holds for the whole batch, and a batch usually carries one
	// fence many times.
	fences []fenceResult
	// control holds the arguments of control-message inserts not written
	// yet: they are written together, many rows per statement, before
	// anything that could read them (a delete) and at the end of the batch.
	// Nothing else in a batch reads the control table: fence and instance
	// conditions read other tables, and backlog is tracked below.
	control []any
	// backlog caches, per partition, whether a receivable message exists
	// (so a locked insert would overtake it): read once per batch, and set
	// when the batch sends a plain message visible now. Deletes only make
	// a partition emptier, so a cached false stays true to the table.
	backlog map[int]bool
}

type fenceResult struct {
	fence backend.Fence
	held  bool
}

// check returns the condition error that refuses c, or a storage error. The
// work-item lock is checked last by deleting the item: that is the unit's
// first write, so a refusal still leaves nothing written.
func (bc *batchCommit) check(c *backend.Commit) (refused, err error) {
	ws := &bc.b.ws
	if f := c.Fence; f != nil {
		held, err := bc.fenceHeld(f)
		if err != nil {
			return nil, err
		}
		if !held {
			return fenceLost(*f), nil
		}
	}

	// Instance and Create usually name the same instance: one read serves
	// both.
	var (
		readID  string
		read    bool
		status  backend.Status
		version int64
		found   bool
	)
	if ic := c.Instance; ic != nil {
		readID, read = ic.InstanceID, true
		if status, version, found, err = bc.instanceRow(readID); err != nil {
			return nil, err
		}
		if version != ic.ExpectVersion {
			return fmt.Errorf("sqlite: instance %q is at version %d, not %d: %w",
				ic.InstanceID, version, ic.ExpectVersion, backend.ErrVersionConflict), nil
		}
	}
	if cc := c.Create; cc != nil && len(cc.RefuseStatuses) > 0 {
		if !read || readID != cc.InstanceID {
			if status, _, found, err = bc.instanceRow(cc.InstanceID); err != nil {
				return nil, err
			}
		}
		if found && slices.Contains(cc.RefuseStatuses, status) {
			return &backend.InstanceExistsError{InstanceID: cc.InstanceID, Status: status}, nil
		}
	}

	if wl := c.WorkItem; wl != nil {
		if wl.LockToken == "" {
			return fmt.Errorf("sqlite: work item %q: empty lock token: %w", wl.ID, backend.ErrLockLost), nil
		}
		res, err := ws.workComplete.ExecContext(bc.ctx, wl.ID, wl.LockToken)
		if err != nil {
			return nil, fmt.Errorf("complete work item %q: %w", wl.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("complete work item %q: %w", wl.ID, err)
		}
		if n == 0 {
			return fmt.Errorf("sqlite: work item %q is not locked with token %q: %w",
				wl.ID, wl.LockToken, backend.ErrLockLost), nil
		}
	}
	return nil, nil
}

// instanceRow reads the condition columns of an instance row; a missing row
// has version 0.
func (bc *batchCommit) instanceRow(id string) (status backend.Status, version int64, found bool, err error) {
	var s string
	err = bc.b.ws.instanceCond.QueryRowContext(bc.ctx, id).Scan(&s, &version)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", 0, false, nil
	case err != nil:
		return "", 0, false, fmt.Errorf("read instance %q: %w", id, err)
	}
	return backend.Status(s), version, true, nil
}

func (bc *batchCommit) fenceHeld(f *backend.Fence) (bool, error) {
	for _, r := range bc.fences {
		if r.fence == *f {
			return r.held, nil
		}
	}
	var held bool
	err := bc.b.ws.fence.QueryRowContext(bc.ctx, int64(f.Partition), f.Owner, f.Epoch).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("check lease of partition %d: %w", f.Partition, err)
	}
	bc.fences = append(bc.fences, fenceResult{fence: *f, held: held})
	return held, nil
}

// apply writes a unit whose conditions hold, in the order backend.Writes
// documents.
func (bc *batchCommit) apply(c *backend.Commit) error {
	ctx, ws, w := bc.ctx, &bc.b.ws, &c.Writes
	now := ns(c.Now)

	for _, p := range w.Payloads {
		if _, err := ws.payloadPut.ExecContext(ctx, p.Key, p.InstanceID, p.Data); err != nil {
			return fmt.Errorf("write payload %q: %w", p.Key, err)
		}
	}

	if h := w.History; h != nil {
		if h.Reset {
			if _, err := ws.historyReset.ExecContext(ctx, h.InstanceID); err != nil {
				return fmt.Errorf("reset history of %q: %w", h.InstanceID, err)
			}
		}
		for _, e := range h.Events {
			if _, err := ws.historyInsert.ExecContext(ctx, h.InstanceID, e.Seq, h.ExecutionID, e.Data); err != nil {
				return fmt.Errorf("append history of %q at seq %d: %w", h.InstanceID, e.Seq, err)
			}
		}
	}

	if in := w.InstanceUpsert; in != nil {
		args := []any{
			in.InstanceID, in.Name, in.ExecutionID, string(in.Status),
			in.Input, in.Output, in.CustomStatus, in.Failure,
			ns(in.CreatedAt), ns(in.UpdatedAt), ns(in.CompletedAt), ns(in.ScheduledStartAt),
			in.ParentInstanceID, in.Version,
		}
		res, err := ws.instanceUpdate.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("write instance %q: %w", in.InstanceID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if _, err := ws.instanceUpsert.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("write instance %q: %w", in.InstanceID, err)
			}
		}
	}

	if len(w.ControlSend) > 0 {
		count, err := bc.partitionCount()
		if err != nil {
			return err
		}
		for _, m := range w.ControlSend {
			if m.Partition < 0 || m.Partition >= count {
				return fmt.Errorf("control message %q: partition %d is out of range [0, %d)", m.ID, m.Partition, count)
			}
			m.Locked = false
			if m.Lock != nil {
				busy := false
				if !m.Lock.MayOvertake {
					var err error
					if busy, err = bc.hasBacklog(m.Partition, m.Lock.Epoch, now); err != nil {
						return err
					}
				}
				m.Locked = !busy
			}
			var deq, epoch, until int64
			if m.Locked {
				deq, epoch, until = lockColumns(m)
			}
			vis := visibleAt(m, now)
			bc.control = append(bc.control, m.ID, int64(m.Partition), m.InstanceID, m.Data, now, vis, deq, epoch, until)
			if !m.Locked && vis <= now {
				if bc.backlog == nil {
					bc.backlog = map[int]bool{}
				}
				bc.backlog[m.Partition] = true
			}
		}
	}

	for _, m := range w.WorkSend {
		m.Locked = m.Lock != nil
		deq, _, until := lockColumns(m)
		token := ""
		if m.Lock != nil {
			token = m.Lock.Token
		}
		if _, err := ws.workInsert.ExecContext(ctx, m.ID, m.InstanceID, m.Data, now, visibleAt(m, now), deq, token, until); err != nil {
			return fmt.Errorf("send work item %q: %w", m.ID, err)
		}
	}

	if len(w.ControlDelete) > 0 {
		if err := bc.flushControl(); err != nil {
			return err
		}
	}
	switch n := len(w.ControlDelete); {
	case n <= deleteManyFrom:
		for _, id := range w.ControlDelete {
			if _, err := ws.controlDelete.ExecContext(ctx, id); err != nil {
				return fmt.Errorf("delete control message %q: %w", id, err)
			}
		}
	default:
		// One statement for the lot: an entity batch consumes thousands.
		ids, err := json.Marshal(w.ControlDelete)
		if err != nil {
			return fmt.Errorf("delete control messages: %w", err)
		}
		if _, err := ws.controlDeleteMany.ExecContext(ctx, string(ids)); err != nil {
			return fmt.Errorf("delete %d control messages: %w", len(w.ControlDelete), err)
		}
	}

	for _, p := range w.Poison {
		_, err := ws.poisonInsert.ExecContext(ctx,
			p.ID, p.Queue, int64(p.Partition), p.InstanceID, p.Data, int64(p.DequeueCount), p.Reason, now)
		if err != nil {
			return fmt.Errorf("write poison record %q: %w", p.ID, err)
		}
	}
	return nil
}

// visibleAt is when a sent message becomes visible; a zero VisibleAt means
// at once, which is stored as the enqueue time so that metrics can tell how
// long a message has been waiting.
func visibleAt(m *backend.NewMessage, now int64) int64 {
	if m.VisibleAt.IsZero() {
		return now
	}
	return m.VisibleAt.UnixNano()
}

// partitionCount returns the hub's partition count, reading it inside the
// transaction when this Backend has not seen the hub yet.
func (bc *batchCommit) partitionCount() (int, error) {
	if n := bc.b.partitionCount.Load(); n > 0 {
		return int(n), nil
	}
	h, err := scanHub(bc.b.ws.hubSelect.QueryRowContext(bc.ctx))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("send control messages: %w", backend.ErrHubNotFound)
	case err != nil:
		return 0, fmt.Errorf("read hub: %w", err)
	}
	bc.b.partitionCount.Store(int64(h.PartitionCount))
	return h.PartitionCount, nil
}

// deleteManyFrom is the number of consumed messages above which one DELETE
// over a JSON array of IDs is cheaper than a statement per message.
const deleteManyFrom = 32

// controlColumns is the number of arguments of one control-message insert.
const controlColumns = 9

// flushControl writes the pending control-message inserts: controlInsertRows
// rows per statement, then one statement per remaining row.
func (bc *batchCommit) flushControl() error {
	args := bc.control
	bc.control = bc.control[:0]
	ws := bc.b.ws
	const chunk = controlInsertRows * controlColumns
	for len(args) >= chunk {
		if _, err := ws.controlInsertMany.ExecContext(bc.ctx, args[:chunk]...); err != nil {
			return fmt.Errorf("send %d control messages: %w", controlInsertRows, err)
		}
		args = args[chunk:]
	}
	for len(args) > 0 {
		if _, err := ws.controlInsert.ExecContext(bc.ctx, args[:controlColumns]...); err != nil {
			return fmt.Errorf("send control message %q: %w", args[0], err)
		}
		args = args[controlColumns:]
	}
	return nil
}

// hasBacklog reports whether partition p holds a message that a receive
// under epoch could take now (see NewMessage.Lock).
func (bc *batchCommit) hasBacklog(p int, epoch, now int64) (bool, error) {
	if busy, ok := bc.backlog[p]; ok {
		return busy, nil
	}
	var busy bool
	if err := bc.b.ws.controlBacklog.QueryRowContext(bc.ctx, int64(p), now, epoch).Scan(&busy); err != nil {
		return false, fmt.Errorf("read partition %d backlog: %w", p, err)
	}
	if bc.backlog == nil {
		bc.backlog = map[int]bool{}
	}
	bc.backlog[p] = busy
	return busy, nil
}

// lockColumns are the dequeue count, lock epoch and lock expiry of a message
// inserted as already received (NewMessage.Lock), or zeros.
func lockColumns(m *backend.NewMessage) (dequeueCount, epoch, until int64) {
	if m.Lock == nil {
		return 0, 0, 0
	}
	return 1, m.Lock.Epoch, m.Lock.Until.UnixNano()
}
