package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskhub/taskhub/backend"
)

// CommitBatch implements backend.Backend: the whole batch is one
// transaction, in at most two round trips.
//
//  1. BEGIN, then in one pipeline: advisory locks on every instance the
//     batch touches (in key order), the fenced partition rows FOR SHARE, the
//     condition columns of those instances, and the named work items FOR
//     UPDATE.
//  2. The units' conditions are decided in Go, in unit order, against what
//     was read plus the effect of the units accepted before (a unit sees the
//     writes of the units before it, as in the SQLite backend). A refused
//     unit queues nothing, so it writes nothing and aborts nothing.
//  3. In one pipeline: the accepted units' writes, merged per table into a
//     few multi-row statements (see writeGroup), one pg_notify per
//     partition sent to (and one for the work-item queue), COMMIT.
//
// Everything the checks read stays locked until COMMIT, so the decisions
// hold when the writes land. A batch without conditions skips step 1 and
// runs as a single pipeline (an implicit transaction). A storage error
// rolls the whole batch back and is returned; no unit is applied.
func (b *Backend) CommitBatch(ctx context.Context, commits []*backend.Commit) ([]error, error) {
	for i, c := range commits {
		if c == nil {
			return nil, fmt.Errorf("postgres: commit %d is nil", i)
		}
	}
	results := make([]error, len(commits))
	if len(commits) == 0 {
		return results, nil
	}
	if err := b.ensurePartitionCount(ctx, commits); err != nil {
		return nil, err
	}
	conn, err := b.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: commit: %w", err)
	}
	defer conn.Release()

	plan := newBatchPlan(b, commits)
	if !plan.conditional {
		w, err := plan.writes(results, false)
		if err != nil {
			return nil, err
		}
		wctx, cancel := writeContext(ctx)
		defer cancel()
		if err := w.send(wctx, conn.Conn()); err != nil {
			return nil, err
		}
		return results, nil
	}

	if err := plan.check(ctx, conn, results); err != nil {
		rollback(conn)
		return nil, err
	}
	w, err := plan.writes(results, true)
	if err == nil {
		wctx, cancel := writeContext(ctx)
		defer cancel()
		err = w.send(wctx, conn.Conn())
	}
	if err != nil {
		rollback(conn)
		return nil, err
	}
	return results, nil
}

// writeTimeout bounds the write round trip of a batch, which ignores the
// caller's cancellation: it only ever waits for row locks held by other
// short transactions, so reaching it means the server is in trouble.
const writeTimeout = time.Minute

// writeContext is the context of the write round trip. Once the writes are
// sent they run to the end: cancelling them could leave the outcome of the
// COMMIT unknown.
func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// rollbackTimeout bounds the ROLLBACK after a failed batch.
const rollbackTimeout = 5 * time.Second

// rollback ends a failed explicit transaction. When it cannot, the
// connection is closed: the server then rolls back, and the pool discards
// the connection instead of reusing it.
func rollback(conn *pgxpool.Conn) {
	c := conn.Conn()
	if c.IsClosed() || c.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		_ = c.Close(ctx)
	}
}

// ensurePartitionCount loads the hub's partition count when a unit sends
// control messages and this Backend has not seen the hub yet.
func (b *Backend) ensurePartitionCount(ctx context.Context, commits []*backend.Commit) error {
	if b.partitionCount.Load() > 0 {
		return nil
	}
	for _, c := range commits {
		if len(c.Writes.ControlSend) > 0 {
			if _, err := b.HubGet(ctx); err != nil {
				return fmt.Errorf("postgres: send control messages: %w", err)
			}
			return nil
		}
	}
	return nil
}

// batchPlan is what CommitBatch reads before deciding.
type batchPlan struct {
	b       *Backend
	commits []*backend.Commit
	// conditional is true when some unit has a condition to check.
	conditional bool
	lockKeys    []int64  // sorted, distinct
	fenceParts  []int32  // sorted, distinct
	instanceIDs []string // conditions and upserts: their state is simulated
	workIDs     []string

	// What the checks read, updated as accepted units apply.
	fences    map[int32]fenceRow
	instances map[string]instanceState
	workItems map[string]string // ID → lock token; deleted items are absent
}

type fenceRow struct {
	owner string
	epoch int64
}

type instanceState struct {
	found   bool
	status  backend.Status
	version int64
}

func newBatchPlan(b *Backend, commits []*backend.Commit) *batchPlan {
	p := &batchPlan{b: b, commits: commits}
	lockIDs := map[string]bool{}
	condIDs := map[string]bool{}
	parts := map[int32]bool{}
	work := map[string]bool{}
	for _, c := range commits {
		if f := c.Fence; f != nil {
			parts[int32(f.Partition)] = true
		}
		if ic := c.Instance; ic != nil {
			lockIDs[ic.InstanceID], condIDs[ic.InstanceID] = true, true
		}
		if cc := c.Create; cc != nil && len(cc.RefuseStatuses) > 0 {
			lockIDs[cc.InstanceID], condIDs[cc.InstanceID] = true, true
		}
		if wl := c.WorkItem; wl != nil {
			work[wl.ID] = true
		}
		if in := c.Writes.InstanceUpsert; in != nil {
			lockIDs[in.InstanceID] = true
		}
		if h := c.Writes.History; h != nil {
			lockIDs[h.InstanceID] = true
		}
	}
	p.conditional = len(parts) > 0 || len(condIDs) > 0 || len(work) > 0
	for id := range lockIDs {
		p.lockKeys = append(p.lockKeys, lockKey(b.opts.Schema, id))
	}
	slices.Sort(p.lockKeys)
	p.lockKeys = slices.Compact(p.lockKeys)
	for part := range parts {
		p.fenceParts = append(p.fenceParts, part)
	}
	slices.Sort(p.fenceParts)
	if len(condIDs) > 0 {
		// Upserted instances are read too: a later unit's condition on
		// them must see what the earlier upsert kept (Version -1).
		for _, c := range commits {
			if in := c.Writes.InstanceUpsert; in != nil {
				condIDs[in.InstanceID] = true
			}
		}
		for id := range condIDs {
			p.instanceIDs = append(p.instanceIDs, id)
		}
		slices.Sort(p.instanceIDs)
	}
	for id := range work {
		p.workIDs = append(p.workIDs, id)
	}
	slices.Sort(p.workIDs)
	return p
}

// check runs round trip 1 and decides every unit, filling results with the
// refusals.
func (p *batchPlan) check(ctx context.Context, conn *pgxpool.Conn, results []error) error {
	q := &p.b.q
	batch := &pgx.Batch{}
	batch.Queue("BEGIN")
	if len(p.lockKeys) > 0 {
		batch.Queue(q.lockKeys, p.lockKeys)
	}
	if len(p.fenceParts) > 0 {
		batch.Queue(q.fenceRows, p.fenceParts)
	}
	if len(p.instanceIDs) > 0 {
		batch.Queue(q.instanceConds, p.instanceIDs)
	}
	if len(p.workIDs) > 0 {
		batch.Queue(q.workLocks, p.workIDs)
	}
	br := conn.SendBatch(ctx, batch)
	err := p.readChecks(br)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("postgres: commit: check conditions: %w", cerr)
	}
	if err != nil {
		return err
	}
	for i, c := range p.commits {
		results[i] = p.decide(c)
	}
	return nil
}

func (p *batchPlan) readChecks(br pgx.BatchResults) error {
	wrap := func(what string, err error) error {
		return fmt.Errorf("postgres: commit: %s: %w", what, err)
	}
	if _, err := br.Exec(); err != nil {
		return wrap("begin", err)
	}
	if len(p.lockKeys) > 0 {
		if _, err := br.Exec(); err != nil {
			return wrap("lock instances", err)
		}
	}
	p.fences = make(map[int32]fenceRow, len(p.fenceParts))
	if len(p.fenceParts) > 0 {
		rows, _ := br.Query()
		var (
			idx int32
			f   fenceRow
		)
		_, err := pgx.ForEachRow(rows, []any{&idx, &f.owner, &f.epoch}, func() error {
			p.fences[idx] = f
			return nil
		})
		if err != nil {
			return wrap("check leases", err)
		}
	}
	p.instances = make(map[string]instanceState, len(p.instanceIDs))
	if len(p.instanceIDs) > 0 {
		rows, _ := br.Query()
		var (
			id     string
			status string
			st     instanceState
		)
		_, err := pgx.ForEachRow(rows, []any{&id, &status, &st.version}, func() error {
			st.found, st.status = true, backend.Status(status)
			p.instances[id] = st
			return nil
		})
		if err != nil {
			return wrap("read instances", err)
		}
	}
	p.workItems = make(map[string]string, len(p.workIDs))
	if len(p.workIDs) > 0 {
		rows, _ := br.Query()
		var id, token string
		_, err := pgx.ForEachRow(rows, []any{&id, &token}, func() error {
			p.workItems[id] = token
			return nil
		})
		if err != nil {
			return wrap("lock work items", err)
		}
	}
	return nil
}

// decide returns the condition error that refuses c, or nil after recording
// the effect of c's writes on later units' conditions.
func (p *batchPlan) decide(c *backend.Commit) error {
	if f := c.Fence; f != nil {
		row, ok := p.fences[int32(f.Partition)]
		if !ok || row.owner != f.Owner || row.epoch != f.Epoch {
			return fenceLost(*f)
		}
	}
	if ic := c.Instance; ic != nil {
		st := p.instances[ic.InstanceID]
		if st.version != ic.ExpectVersion {
			return fmt.Errorf("postgres: instance %q is at version %d, not %d: %w",
				ic.InstanceID, st.version, ic.ExpectVersion, backend.ErrVersionConflict)
		}
	}
	if cc := c.Create; cc != nil && len(cc.RefuseStatuses) > 0 {
		st := p.instances[cc.InstanceID]
		if st.found && slices.Contains(cc.RefuseStatuses, st.status) {
			return &backend.InstanceExistsError{InstanceID: cc.InstanceID, Status: st.status}
		}
	}
	if wl := c.WorkItem; wl != nil {
		token, ok := p.workItems[wl.ID]
		if wl.LockToken == "" || !ok || token != wl.LockToken {
			return fmt.Errorf("postgres: work item %q is not locked with token %q: %w",
				wl.ID, wl.LockToken, backend.ErrLockLost)
		}
		delete(p.workItems, wl.ID)
	}
	if in := c.Writes.InstanceUpsert; in != nil && p.instances != nil {
		st := p.instances[in.InstanceID]
		if in.Version >= 0 {
			st.version = in.Version
		} else if !st.found {
			st.version = 0
		}
		st.found, st.status = true, in.Status
		p.instances[in.InstanceID] = st
	}
	return nil
}

func fenceLost(f backend.Fence) error {
	return fmt.Errorf("postgres: partition %d is not held by %q at epoch %d: %w",
		f.Partition, f.Owner, f.Epoch, backend.ErrLeaseLost)
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
