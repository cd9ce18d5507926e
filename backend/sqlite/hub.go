package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/taskhub/taskhub/backend"
)

// HubCreate implements backend.Backend.
func (b *Backend) HubCreate(ctx context.Context, params *backend.HubCreateParams) (*backend.Hub, error) {
	n := params.PartitionCount
	if n < backend.PartitionCountMin || n > backend.PartitionCountMax {
		return nil, fmt.Errorf("sqlite: partition count %d is out of range [%d, %d]",
			n, backend.PartitionCountMin, backend.PartitionCountMax)
	}
	var hub *backend.Hub
	err := b.write(ctx, true, func(ctx context.Context) error {
		h, err := scanHub(b.ws.hubSelect.QueryRowContext(ctx))
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("sqlite: read hub: %w", err)
		case h.Name != b.opts.Hub:
			return &HubMismatchError{Path: b.path, Stored: h.Name, Requested: b.opts.Hub}
		case h.PartitionCount != n:
			return &backend.PartitionCountMismatchError{Hub: h.Name, Stored: h.PartitionCount, Requested: n}
		default:
			hub = h
			return nil
		}
		if _, err := b.ws.hubInsert.ExecContext(ctx, b.opts.Hub, int64(n), ns(params.Now)); err != nil {
			return fmt.Errorf("sqlite: create hub: %w", err)
		}
		for i := range n {
			if _, err := b.ws.partitionInsert.ExecContext(ctx, int64(i)); err != nil {
				return fmt.Errorf("sqlite: create partition %d: %w", i, err)
			}
		}
		hub = &backend.Hub{Name: b.opts.Hub, PartitionCount: n, CreatedAt: at(ns(params.Now))}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.partitionCount.Store(int64(hub.PartitionCount))
	return hub, nil
}

// HubGet implements backend.Backend.
func (b *Backend) HubGet(ctx context.Context) (*backend.Hub, error) {
	var hub *backend.Hub
	err := b.read(ctx, func() error {
		var err error
		hub, err = scanHub(b.rs.hubGet.QueryRowContext(context.WithoutCancel(ctx)))
		return err
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("sqlite: hub %q: %w", b.opts.Hub, backend.ErrHubNotFound)
	case err != nil:
		return nil, fmt.Errorf("sqlite: read hub: %w", err)
	case hub.Name != b.opts.Hub:
		return nil, &HubMismatchError{Path: b.path, Stored: hub.Name, Requested: b.opts.Hub}
	}
	return hub, nil
}

func scanHub(r rowScanner) (*backend.Hub, error) {
	var (
		h       backend.Hub
		n       int64
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
// schema, so that other Backends on the file keep working.
func (b *Backend) HubDelete(ctx context.Context) error {
	err := b.write(ctx, true, func(ctx context.Context) error {
		h, err := scanHub(b.ws.hubSelect.QueryRowContext(ctx))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return fmt.Errorf("sqlite: read hub: %w", err)
		case h.Name != b.opts.Hub:
			return &HubMismatchError{Path: b.path, Stored: h.Name, Requested: b.opts.Hub}
		}
		for _, t := range tables {
			if _, err := b.wconn.ExecContext(ctx, `DELETE FROM `+t); err != nil {
				return fmt.Errorf("sqlite: delete hub: %s: %w", t, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.partitionCount.Store(0)
	return nil
}

// PartitionList implements backend.Backend.
func (b *Backend) PartitionList(ctx context.Context) ([]*backend.Partition, error) {
	var parts []*backend.Partition
	err := b.read(ctx, func() error {
		parts = parts[:0]
		rows, err := b.rs.partitionList.QueryContext(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				p          backend.Partition
				idx, until int64
			)
			if err := rows.Scan(&idx, &p.Owner, &p.Epoch, &until, &p.NextOwner); err != nil {
				return err
			}
			p.Index = int(idx)
			p.LeaseExpiresAt = at(until)
			parts = append(parts, &p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list partitions: %w", err)
	}
	return parts, nil
}

// PartitionAcquire implements backend.Backend.
func (b *Backend) PartitionAcquire(ctx context.Context, params *backend.PartitionAcquireParams) (*backend.Partition, error) {
	expires := ns(params.Now.Add(params.Duration))
	var epoch int64
	err := b.write(ctx, true, func(ctx context.Context) error {
		err := b.ws.partitionAcquire.QueryRowContext(ctx,
			params.Owner, expires, int64(params.Partition), params.ExpectEpoch).Scan(&epoch)
		if errors.Is(err, sql.ErrNoRows) {
			return b.partitionMiss(ctx, params.Partition, backend.ErrLeaseConflict,
				"expected epoch %d", params.ExpectEpoch)
		}
		return err
	})
	if err != nil {
		return nil, err
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
	expires := ns(params.Now.Add(params.Duration))
	var next string
	err := b.write(ctx, true, func(ctx context.Context) error {
		err := b.ws.partitionRenew.QueryRowContext(ctx,
			expires, int64(params.Partition), params.Owner, params.Epoch, ns(params.Now)).Scan(&next)
		if errors.Is(err, sql.ErrNoRows) {
			return b.partitionMiss(ctx, params.Partition, backend.ErrLeaseLost,
				"renew by %q at epoch %d at %v", params.Owner, params.Epoch, params.Now)
		}
		return err
	})
	if err != nil {
		return nil, err
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
	return b.write(ctx, true, func(ctx context.Context) error {
		res, err := b.ws.partitionRelease.ExecContext(ctx,
			ns(params.Now), int64(params.Partition), params.Owner, params.Epoch)
		if err != nil {
			return fmt.Errorf("sqlite: release partition %d: %w", params.Partition, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return b.partitionMiss(ctx, params.Partition, backend.ErrLeaseLost,
				"release by %q at epoch %d", params.Owner, params.Epoch)
		}
		return nil
	})
}

// PartitionRequest implements backend.Backend.
func (b *Backend) PartitionRequest(ctx context.Context, params *backend.PartitionRequestParams) error {
	return b.write(ctx, true, func(ctx context.Context) error {
		res, err := b.ws.partitionRequest.ExecContext(ctx, params.Requester, int64(params.Partition))
		if err != nil {
			return fmt.Errorf("sqlite: request partition %d: %w", params.Partition, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return b.partitionMiss(ctx, params.Partition, nil, "")
		}
		return nil
	})
}

// partitionMiss explains why a conditional partition update matched no row:
// the partition does not exist (or the hub does not), or the condition
// failed, reported as cause with the row's state.
func (b *Backend) partitionMiss(ctx context.Context, p int, cause error, format string, args ...any) error {
	var (
		owner   string
		epoch   int64
		expires int64
	)
	err := b.ws.partitionRow.QueryRowContext(ctx, int64(p)).Scan(&owner, &epoch, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, herr := scanHub(b.ws.hubSelect.QueryRowContext(ctx)); errors.Is(herr, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: partition %d: %w", p, backend.ErrHubNotFound)
		}
		return fmt.Errorf("sqlite: partition %d does not exist", p)
	case err != nil:
		return fmt.Errorf("sqlite: read partition %d: %w", p, err)
	case cause == nil:
		return fmt.Errorf("sqlite: partition %d: update matched no row", p)
	}
	return fmt.Errorf("sqlite: partition %d (owner %q, epoch %d, lease expires %v): %s: %w",
		p, owner, epoch, at(expires), fmt.Sprintf(format, args...), cause)
}

// WorkerHeartbeat implements backend.Backend.
func (b *Backend) WorkerHeartbeat(ctx context.Context, w *backend.Worker) error {
	parts := formatInts(w.Partitions)
	return b.write(ctx, true, func(ctx context.Context) error {
		_, err := b.ws.workerUpsert.ExecContext(ctx,
			w.ID, w.Host, ns(w.StartedAt), ns(w.HeartbeatAt), parts, w.Info)
		if err != nil {
			return fmt.Errorf("sqlite: worker heartbeat %q: %w", w.ID, err)
		}
		return nil
	})
}

// WorkerList implements backend.Backend.
func (b *Backend) WorkerList(ctx context.Context, params *backend.WorkerListParams) ([]*backend.Worker, error) {
	since := int64(math.MinInt64)
	if !params.Since.IsZero() {
		since = params.Since.UnixNano()
	}
	var workers []*backend.Worker
	err := b.read(ctx, func() error {
		workers = workers[:0]
		rows, err := b.rs.workerList.QueryContext(ctx, since)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				w                  backend.Worker
				started, heartbeat int64
				parts              string
			)
			if err := rows.Scan(&w.ID, &w.Host, &started, &heartbeat, &parts, &w.Info); err != nil {
				return err
			}
			w.StartedAt, w.HeartbeatAt = at(started), at(heartbeat)
			if w.Partitions, err = parseInts(parts); err != nil {
				return fmt.Errorf("worker %q: %w", w.ID, err)
			}
			workers = append(workers, &w)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list workers: %w", err)
	}
	return workers, nil
}

// WorkerRemove implements backend.Backend.
func (b *Backend) WorkerRemove(ctx context.Context, workerID string) error {
	return b.write(ctx, true, func(ctx context.Context) error {
		if _, err := b.ws.workerDelete.ExecContext(ctx, workerID); err != nil {
			return fmt.Errorf("sqlite: remove worker %q: %w", workerID, err)
		}
		return nil
	})
}

func formatInts(v []int) string {
	var sb strings.Builder
	for i, n := range v {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(n))
	}
	return sb.String()
}

func parseInts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	fields := strings.Split(s, ",")
	v := make([]int, len(fields))
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad partition list %q: %w", s, err)
		}
		v[i] = n
	}
	return v, nil
}
