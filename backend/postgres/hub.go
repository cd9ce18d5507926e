package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/taskhub/taskhub/backend"
)

// HubCreate implements backend.Backend. Concurrent creators agree: one
// inserts the hub and its partitions, the others wait for it and open it.
func (b *Backend) HubCreate(ctx context.Context, params *backend.HubCreateParams) (*backend.Hub, error) {
	n := params.PartitionCount
	if n < backend.PartitionCountMin || n > backend.PartitionCountMax {
		return nil, fmt.Errorf("postgres: partition count %d is out of range [%d, %d]",
			n, backend.PartitionCountMin, backend.PartitionCountMax)
	}
	conn, err := b.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: create hub: %w", err)
	}
	defer conn.Release()
	batch := &pgx.Batch{}
	batch.Queue(b.q.hubCreate, b.opts.Hub, int32(n), ns(params.Now))
	batch.Queue(b.q.hubSelect)
	br := conn.SendBatch(ctx, batch)
	var hub *backend.Hub
	_, err = br.Exec()
	if err == nil {
		hub, err = scanHub(br.QueryRow())
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: create hub: %w", err)
	}
	switch {
	case hub.Name != b.opts.Hub:
		return nil, &HubMismatchError{Schema: b.opts.Schema, Stored: hub.Name, Requested: b.opts.Hub}
	case hub.PartitionCount != n:
		return nil, &backend.PartitionCountMismatchError{Hub: hub.Name, Stored: hub.PartitionCount, Requested: n}
	}
	b.partitionCount.Store(int64(hub.PartitionCount))
	return hub, nil
}

// HubGet implements backend.Backend.
func (b *Backend) HubGet(ctx context.Context) (*backend.Hub, error) {
	var hub *backend.Hub
	err := b.read(ctx, func(ctx context.Context) error {
		var err error
		hub, err = scanHub(b.pool.QueryRow(ctx, b.q.hubSelect))
		return err
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("postgres: hub %q: %w", b.opts.Hub, backend.ErrHubNotFound)
	case err != nil:
		return nil, fmt.Errorf("postgres: read hub: %w", err)
	case hub.Name != b.opts.Hub:
		return nil, &HubMismatchError{Schema: b.opts.Schema, Stored: hub.Name, Requested: b.opts.Hub}
	}
	b.partitionCount.Store(int64(hub.PartitionCount))
	return hub, nil
}

func scanHub(r pgx.Row) (*backend.Hub, error) {
	var (
		h       backend.Hub
		n       int32
		created int64
	)
	if err := r.Scan(&h.Name, &n, &created, &h.Settings); err != nil {
		return nil, err
	}
	h.PartitionCount = int(n)
	h.CreatedAt = at(created)
	return &h, nil
}

// HubDelete implements backend.Backend. It empties every table and keeps the
// schema, so that other Backends on the schema keep working.
func (b *Backend) HubDelete(ctx context.Context) error {
	conn, err := b.conn(ctx)
	if err != nil {
		return fmt.Errorf("postgres: delete hub: %w", err)
	}
	defer conn.Release()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var name string
		err := tx.QueryRow(ctx, b.q.hubLock).Scan(&name)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return err
		case name != b.opts.Hub:
			return &HubMismatchError{Schema: b.opts.Schema, Stored: name, Requested: b.opts.Hub}
		}
		_, err = tx.Exec(ctx, b.q.hubTruncate)
		return err
	})
	if err != nil {
		var mismatch *HubMismatchError
		if errors.As(err, &mismatch) {
			return err
		}
		return fmt.Errorf("postgres: delete hub: %w", err)
	}
	b.partitionCount.Store(0)
	return nil
}

// PartitionList implements backend.Backend.
func (b *Backend) PartitionList(ctx context.Context) ([]*backend.Partition, error) {
	var parts []*backend.Partition
	err := b.read(ctx, func(ctx context.Context) error {
		rows, _ := b.pool.Query(ctx, b.q.partitionList)
		var err error
		parts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*backend.Partition, error) {
			var (
				p     backend.Partition
				idx   int32
				until int64
			)
			if err := r.Scan(&idx, &p.Owner, &p.Epoch, &until, &p.NextOwner); err != nil {
				return nil, err
			}
			p.Index, p.LeaseExpiresAt = int(idx), at(until)
			return &p, nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list partitions: %w", err)
	}
	return parts, nil
}

// PartitionAcquire implements backend.Backend.
func (b *Backend) PartitionAcquire(ctx context.Context, params *backend.PartitionAcquireParams) (*backend.Partition, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	expires := ns(params.Now.Add(params.Duration))
	var epoch int64
	err := b.pool.QueryRow(ctx, b.q.partitionAcquire,
		params.Owner, expires, int32(params.Partition), params.ExpectEpoch).Scan(&epoch)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, b.partitionMiss(ctx, params.Partition, backend.ErrLeaseConflict, "expected epoch %d", params.ExpectEpoch)
	case err != nil:
		return nil, fmt.Errorf("postgres: acquire partition %d: %w", params.Partition, err)
	}
	return &backend.Partition{
		Index:          params.Partition,
		Owner:          params.Owner,
		Epoch:          epoch,
		LeaseExpiresAt: at(expires),
	}, nil
}

// PartitionRenew implements backend.Backend.
func (b *Backend) PartitionRenew(ctx context.Context, params *backend.PartitionRenewParams) (*backend.Partition, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	expires := ns(params.Now.Add(params.Duration))
	var next string
	err := b.pool.QueryRow(ctx, b.q.partitionRenew,
		expires, int32(params.Partition), params.Owner, params.Epoch, ns(params.Now)).Scan(&next)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, b.partitionMiss(ctx, params.Partition, backend.ErrLeaseLost,
			"renew by %q at epoch %d at %v", params.Owner, params.Epoch, params.Now)
	case err != nil:
		return nil, fmt.Errorf("postgres: renew partition %d: %w", params.Partition, err)
	}
	return &backend.Partition{
		Index:          params.Partition,
		Owner:          params.Owner,
		Epoch:          params.Epoch,
		LeaseExpiresAt: at(expires),
		NextOwner:      next,
	}, nil
}

// PartitionRelease implements backend.Backend.
func (b *Backend) PartitionRelease(ctx context.Context, params *backend.PartitionReleaseParams) error {
	if b.closed.Load() {
		return ErrClosed
	}
	tag, err := b.pool.Exec(ctx, b.q.partitionRelease,
		ns(params.Now), int32(params.Partition), params.Owner, params.Epoch)
	if err != nil {
		return fmt.Errorf("postgres: release partition %d: %w", params.Partition, err)
	}
	if tag.RowsAffected() == 0 {
		return b.partitionMiss(ctx, params.Partition, backend.ErrLeaseLost,
			"release by %q at epoch %d", params.Owner, params.Epoch)
	}
	return nil
}

// PartitionRequest implements backend.Backend.
func (b *Backend) PartitionRequest(ctx context.Context, params *backend.PartitionRequestParams) error {
	if b.closed.Load() {
		return ErrClosed
	}
	tag, err := b.pool.Exec(ctx, b.q.partitionRequest, params.Requester, int32(params.Partition))
	if err != nil {
		return fmt.Errorf("postgres: request partition %d: %w", params.Partition, err)
	}
	if tag.RowsAffected() == 0 {
		return b.partitionMiss(ctx, params.Partition, nil, "")
	}
	return nil
}

// partitionMiss explains why a conditional partition update matched no row:
// the partition does not exist (or the hub does not), or the condition
// failed, reported as cause with the row's state at the time of the look.
func (b *Backend) partitionMiss(ctx context.Context, p int, cause error, format string, args ...any) error {
	var (
		owner   string
		epoch   int64
		expires int64
	)
	err := b.pool.QueryRow(ctx, b.q.partitionRow, int32(p)).Scan(&owner, &epoch, &expires)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, herr := b.HubGet(ctx); errors.Is(herr, backend.ErrHubNotFound) {
			return fmt.Errorf("postgres: partition %d: %w", p, backend.ErrHubNotFound)
		}
		return fmt.Errorf("postgres: partition %d does not exist", p)
	case err != nil:
		if cause != nil {
			return fmt.Errorf("postgres: partition %d: %s: %w (reading the row failed: %v)", p, fmt.Sprintf(format, args...), cause, err)
		}
		return fmt.Errorf("postgres: read partition %d: %w", p, err)
	case cause == nil:
		return fmt.Errorf("postgres: partition %d: update matched no row", p)
	}
	return fmt.Errorf("postgres: partition %d (owner %q, epoch %d, lease expires %v): %s: %w",
		p, owner, epoch, at(expires), fmt.Sprintf(format, args...), cause)
}

// WorkerHeartbeat implements backend.Backend.
func (b *Backend) WorkerHeartbeat(ctx context.Context, w *backend.Worker) error {
	if b.closed.Load() {
		return ErrClosed
	}
	var parts []int32
	if w.Partitions != nil {
		parts = make([]int32, len(w.Partitions))
		for i, p := range w.Partitions {
			parts[i] = int32(p)
		}
	}
	_, err := b.pool.Exec(ctx, b.q.workerUpsert, w.ID, w.Host, ns(w.StartedAt), ns(w.HeartbeatAt), parts, w.Info)
	if err != nil {
		return fmt.Errorf("postgres: worker heartbeat %q: %w", w.ID, err)
	}
	return nil
}

// WorkerList implements backend.Backend.
func (b *Backend) WorkerList(ctx context.Context, params *backend.WorkerListParams) ([]*backend.Worker, error) {
	since := int64(math.MinInt64)
	if !params.Since.IsZero() {
		since = params.Since.UnixNano()
	}
	var workers []*backend.Worker
	err := b.read(ctx, func(ctx context.Context) error {
		rows, _ := b.pool.Query(ctx, b.q.workerList, since)
		var err error
		workers, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*backend.Worker, error) {
			var (
				w                  backend.Worker
				started, heartbeat int64
				parts              []int32
			)
			if err := r.Scan(&w.ID, &w.Host, &started, &heartbeat, &parts, &w.Info); err != nil {
				return nil, err
			}
			w.StartedAt, w.HeartbeatAt = at(started), at(heartbeat)
			if parts != nil {
				w.Partitions = make([]int, len(parts))
				for i, p := range parts {
					w.Partitions[i] = int(p)
				}
			}
			return &w, nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list workers: %w", err)
	}
	return workers, nil
}

// WorkerRemove implements backend.Backend.
func (b *Backend) WorkerRemove(ctx context.Context, workerID string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if _, err := b.pool.Exec(ctx, b.q.workerDelete, workerID); err != nil {
		return fmt.Errorf("postgres: remove worker %q: %w", workerID, err)
	}
	return nil
}
