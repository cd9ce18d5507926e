package sqlite

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/taskhub/taskhub/backend"
)

// instanceListPageDefault is the page size when InstanceListParams.PageSize
// is 0, as the contract documents.
const instanceListPageDefault = 100

// HistoryLoad implements backend.Backend.
func (b *Backend) HistoryLoad(ctx context.Context, instanceID string) (*backend.History, error) {
	h := &backend.History{}
	err := b.read(ctx, func() error {
		h.ExecutionID, h.Events = "", h.Events[:0]
		rows, err := b.rs.historyLoad.QueryContext(context.WithoutCancel(ctx), instanceID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e backend.HistoryRecord
			if err := rows.Scan(&e.Seq, &h.ExecutionID, &e.Data); err != nil {
				return err
			}
			h.Events = append(h.Events, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: load history of %q: %w", instanceID, err)
	}
	return h, nil
}

// InstanceGet implements backend.Backend.
func (b *Backend) InstanceGet(ctx context.Context, instanceID string) (*backend.Instance, error) {
	var in *backend.Instance
	err := b.read(ctx, func() error {
		var err error
		in, err = scanInstance(b.rs.instanceGet.QueryRowContext(context.WithoutCancel(ctx), instanceID))
		return err
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("sqlite: instance %q: %w", instanceID, backend.ErrInstanceNotFound)
	case err != nil:
		return nil, fmt.Errorf("sqlite: read instance %q: %w", instanceID, err)
	}
	return in, nil
}

func scanInstance(r rowScanner) (*backend.Instance, error) {
	var (
		in                                 backend.Instance
		status                             string
		created, updated, completed, sched int64
	)
	err := r.Scan(&in.InstanceID, &in.Name, &in.ExecutionID, &status,
		&in.Input, &in.Output, &in.CustomStatus, &in.Failure,
		&created, &updated, &completed, &sched, &in.ParentInstanceID, &in.Version)
	if err != nil {
		return nil, err
	}
	in.Status = backend.Status(status)
	in.CreatedAt, in.UpdatedAt, in.CompletedAt, in.ScheduledStartAt = at(created), at(updated), at(completed), at(sched)
	return &in, nil
}

// InstanceList implements backend.Backend. The continuation token encodes
// the last instance ID of the page; a page starts after it.
func (b *Backend) InstanceList(ctx context.Context, params *backend.InstanceListParams) (*backend.InstanceListResult, error) {
	size := params.PageSize
	if size == 0 {
		size = instanceListPageDefault
	}
	if size < 0 {
		return nil, fmt.Errorf("sqlite: InstanceList: PageSize is %d; it must not be negative", size)
	}
	after, err := backend.ParseContinuationToken(params.ContinuationToken)
	if err != nil {
		return nil, fmt.Errorf("sqlite: InstanceList: %w", err)
	}
	var sb strings.Builder
	sb.WriteString(`SELECT ` + instanceCols + ` FROM instances WHERE instance_id > ?`)
	args := []any{after}
	args = filterSQL(&sb, args, &params.Filter, params.Filter.Statuses)
	sb.WriteString(` ORDER BY instance_id LIMIT ?`)
	args = append(args, int64(size)+1)
	query := sb.String()

	res := &backend.InstanceListResult{}
	err = b.read(ctx, func() error {
		res.Instances = res.Instances[:0]
		rows, err := b.rdb.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			in, err := scanInstance(rows)
			if err != nil {
				return err
			}
			res.Instances = append(res.Instances, in)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list instances: %w", err)
	}
	if len(res.Instances) > size {
		res.Instances = res.Instances[:size]
		last := res.Instances[size-1].InstanceID
		res.ContinuationToken = backend.ContinuationToken(last)
	}
	return res, nil
}

// filterSQL appends the conditions of f to a WHERE clause, with statuses in
// place of f.Statuses (purge narrows them to finished ones).
func filterSQL(sb *strings.Builder, args []any, f *backend.InstanceFilter, statuses []backend.Status) []any {
	if len(statuses) > 0 {
		sb.WriteString(` AND status IN (`)
		for i, s := range statuses {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('?')
			args = append(args, string(s))
		}
		sb.WriteByte(')')
	}
	if !f.CreatedFrom.IsZero() {
		sb.WriteString(` AND created_at >= ?`)
		args = append(args, f.CreatedFrom.UnixNano())
	}
	if !f.CreatedTo.IsZero() {
		sb.WriteString(` AND created_at < ?`)
		args = append(args, f.CreatedTo.UnixNano())
	}
	if f.Name != "" {
		sb.WriteString(` AND name = ?`)
		args = append(args, f.Name)
	}
	if p := f.InstanceIDPrefix; p != "" {
		// A range rather than LIKE, so that the primary key serves it and
		// no character of the prefix is a wildcard.
		sb.WriteString(` AND instance_id >= ?`)
		args = append(args, p)
		if end, ok := prefixEnd(p); ok {
			sb.WriteString(` AND instance_id < ?`)
			args = append(args, end)
		}
	}
	if p := f.ExcludeInstanceIDPrefix; p != "" {
		// The complement of the same range.
		if end, ok := prefixEnd(p); ok {
			sb.WriteString(` AND (instance_id < ? OR instance_id >= ?)`)
			args = append(args, p, end)
		} else {
			sb.WriteString(` AND instance_id < ?`)
			args = append(args, p)
		}
	}
	return args
}

// prefixEnd returns the smallest string greater than every string with
// prefix p, in byte order (SQLite's BINARY collation); ok is false when no
// such string exists (p is all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// finishedStatuses are the statuses a purge may delete.
var finishedStatuses = []backend.Status{backend.StatusCompleted, backend.StatusFailed, backend.StatusTerminated}

// InstancePurge implements backend.Backend.
func (b *Backend) InstancePurge(ctx context.Context, params *backend.InstancePurgeParams) (int, error) {
	if params.ExpectVersion < 0 {
		return 0, fmt.Errorf("sqlite: InstancePurge: ExpectVersion is %d; it must not be negative", params.ExpectVersion)
	}
	if params.InstanceID != "" {
		id := params.InstanceID
		err := b.write(ctx, true, func(ctx context.Context) error {
			var status string
			var version int64
			err := b.ws.instanceCond.QueryRowContext(ctx, id).Scan(&status, &version)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("sqlite: purge %q: %w", id, backend.ErrInstanceNotFound)
			case err != nil:
				return fmt.Errorf("sqlite: purge %q: %w", id, err)
			case params.ExpectVersion > 0 && version != params.ExpectVersion:
				return fmt.Errorf("sqlite: purge %q: version is %d, expected %d: %w", id, version, params.ExpectVersion, backend.ErrVersionConflict)
			case !backend.Status(status).Finished():
				return fmt.Errorf("sqlite: purge %q: status is %s: %w", id, status, backend.ErrInstanceNotFinished)
			}
			return b.purge(ctx, []string{id}, params.KeepMessages)
		})
		if err != nil {
			return 0, err
		}
		return 1, nil
	}
	if params.Limit < 0 {
		return 0, fmt.Errorf("sqlite: InstancePurge: Limit is %d; it must not be negative", params.Limit)
	}
	if params.ExpectVersion != 0 || params.KeepMessages {
		return 0, fmt.Errorf("sqlite: InstancePurge: ExpectVersion and KeepMessages apply only to the purge of one InstanceID")
	}

	statuses := finishedStatuses
	if len(params.Filter.Statuses) > 0 {
		statuses = nil
		for _, s := range params.Filter.Statuses {
			if s.Finished() && !slices.Contains(statuses, s) {
				statuses = append(statuses, s)
			}
		}
		if len(statuses) == 0 {
			return 0, nil
		}
	}
	var sb strings.Builder
	sb.WriteString(`SELECT instance_id FROM instances WHERE 1`)
	args := filterSQL(&sb, nil, &params.Filter, statuses)
	sb.WriteString(` ORDER BY instance_id`)
	if params.Limit > 0 {
		sb.WriteString(` LIMIT ?`)
		args = append(args, int64(params.Limit))
	}
	query := sb.String()

	purged := 0
	err := b.write(ctx, true, func(ctx context.Context) error {
		purged = 0
		rows, err := b.wconn.QueryContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("sqlite: purge: select instances: %w", err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: purge: select instances: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: purge: select instances: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		if err := b.purge(ctx, ids, false); err != nil {
			return err
		}
		purged = len(ids)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return purged, nil
}

// purge deletes everything stored for the instances, inside a write
// transaction. Poison records stay: they are the record of what went wrong.
// With keepMessages only the rows and histories go: queued messages stay,
// and so do the payloads they may reference.
func (b *Backend) purge(ctx context.Context, ids []string, keepMessages bool) error {
	stmts := []*sql.Stmt{b.ws.instanceDelete, b.ws.historyReset, b.ws.payloadPurge}
	if keepMessages {
		stmts = stmts[:2]
	}
	for _, id := range ids {
		for _, st := range stmts {
			if _, err := st.ExecContext(ctx, id); err != nil {
				return fmt.Errorf("sqlite: purge %q: %w", id, err)
			}
		}
	}
	if keepMessages {
		return nil
	}
	var list strings.Builder
	list.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			list.WriteByte(',')
		}
		list.WriteByte('"')
		list.WriteString(hex.EncodeToString([]byte(id)))
		list.WriteByte('"')
	}
	list.WriteByte(']')
	for _, st := range []*sql.Stmt{b.ws.controlPurge, b.ws.workPurge} {
		if _, err := st.ExecContext(ctx, list.String()); err != nil {
			return fmt.Errorf("sqlite: purge messages: %w", err)
		}
	}
	return nil
}

// PayloadGet implements backend.Backend.
func (b *Backend) PayloadGet(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := b.read(ctx, func() error {
		return b.rs.payloadGet.QueryRowContext(context.WithoutCancel(ctx), key).Scan(&data)
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("sqlite: payload %q: %w", key, backend.ErrPayloadNotFound)
	case err != nil:
		return nil, fmt.Errorf("sqlite: read payload %q: %w", key, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// PoisonList implements backend.Backend.
func (b *Backend) PoisonList(ctx context.Context, limit int) ([]*backend.Poison, error) {
	if limit <= 0 {
		return nil, nil
	}
	var list []*backend.Poison
	err := b.read(ctx, func() error {
		list = list[:0]
		rows, err := b.rs.poisonList.QueryContext(ctx, int64(limit))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				p               backend.Poison
				part, dq, creat int64
			)
			if err := rows.Scan(&p.ID, &p.Queue, &part, &p.InstanceID, &p.Data, &dq, &p.Reason, &creat); err != nil {
				return err
			}
			p.Partition, p.DequeueCount, p.CreatedAt = int(part), int(dq), at(creat)
			list = append(list, &p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list poison records: %w", err)
	}
	return list, nil
}

// QueueMetrics implements backend.Backend. Length counts every message
// (visible, locked or delayed); the oldest times consider only the messages
// that are visible and unlocked at params.Now.
func (b *Backend) QueueMetrics(ctx context.Context, params *backend.QueueMetricsParams) (*backend.QueueMetrics, error) {
	hub, err := b.HubGet(ctx)
	if err != nil {
		return nil, err
	}
	now := ns(params.Now)
	m := &backend.QueueMetrics{Control: make([]backend.QueueStat, hub.PartitionCount)}
	err = b.read(ctx, func() error {
		clear(m.Control)
		rows, err := b.rs.metricsControl.QueryContext(ctx, now)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				part, n  int64
				vis, enq sql.NullInt64
			)
			if err := rows.Scan(&part, &n, &vis, &enq); err != nil {
				return err
			}
			if part < 0 || int(part) >= len(m.Control) {
				continue // cannot happen: sends are checked against the partition count
			}
			m.Control[part] = backend.QueueStat{Length: int(n), OldestVisibleAt: at(vis.Int64), OldestEnqueued: at(enq.Int64)}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		var (
			n        int64
			vis, enq sql.NullInt64
		)
		if err := b.rs.metricsWork.QueryRowContext(ctx, now).Scan(&n, &vis, &enq); err != nil {
			return err
		}
		m.Work = backend.QueueStat{Length: int(n), OldestVisibleAt: at(vis.Int64), OldestEnqueued: at(enq.Int64)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: queue metrics: %w", err)
	}
	return m, nil
}
