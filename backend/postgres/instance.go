package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/taskhub/taskhub/backend"
)

// instanceListPageDefault is the page size when InstanceListParams.PageSize
// is 0, as the contract documents.
const instanceListPageDefault = 100

// HistoryLoad implements backend.Backend.
func (b *Backend) HistoryLoad(ctx context.Context, instanceID string) (*backend.History, error) {
	h := &backend.History{}
	err := b.read(ctx, func(ctx context.Context) error {
		h.ExecutionID, h.Events = "", h.Events[:0]
		rows, _ := b.pool.Query(ctx, b.q.historyLoad, instanceID)
		var (
			e    backend.HistoryRecord
			exec string
		)
		_, err := pgx.ForEachRow(rows, []any{&e.Seq, &exec, &e.Data}, func() error {
			h.ExecutionID = exec
			h.Events = append(h.Events, e)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: load history of %q: %w", instanceID, err)
	}
	return h, nil
}

// InstanceGet implements backend.Backend.
func (b *Backend) InstanceGet(ctx context.Context, instanceID string) (*backend.Instance, error) {
	var in *backend.Instance
	err := b.read(ctx, func(ctx context.Context) error {
		var err error
		in, err = scanInstance(b.pool.QueryRow(ctx, b.q.instanceGet, instanceID))
		return err
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("postgres: instance %q: %w", instanceID, backend.ErrInstanceNotFound)
	case err != nil:
		return nil, fmt.Errorf("postgres: read instance %q: %w", instanceID, err)
	}
	return in, nil
}

func scanInstance(r pgx.Row) (*backend.Instance, error) {
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
		return nil, fmt.Errorf("postgres: InstanceList: PageSize is %d; it must not be negative", size)
	}
	after, err := backend.ParseContinuationToken(params.ContinuationToken)
	if err != nil {
		return nil, fmt.Errorf("postgres: InstanceList: %w", err)
	}
	w := &where{args: []any{after}}
	w.sb.WriteString(`SELECT ` + instanceCols + ` FROM ` + b.schemaIdent + `.instances WHERE instance_id > $1`)
	w.filter(&params.Filter, params.Filter.Statuses)
	w.sb.WriteString(` ORDER BY instance_id LIMIT ` + w.arg(int64(size)+1))
	query := w.sb.String()

	res := &backend.InstanceListResult{}
	err = b.read(ctx, func(ctx context.Context) error {
		rows, _ := b.pool.Query(ctx, query, w.args...)
		var err error
		res.Instances, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*backend.Instance, error) {
			return scanInstance(r)
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list instances: %w", err)
	}
	if len(res.Instances) > size {
		res.Instances = res.Instances[:size]
		last := res.Instances[size-1].InstanceID
		res.ContinuationToken = backend.ContinuationToken(last)
	}
	return res, nil
}

// where builds the WHERE clause of a filtered query; every value is a
// parameter.
type where struct {
	sb   strings.Builder
	args []any
}

// arg adds a parameter and returns its placeholder.
func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

// filter appends the conditions of f, with statuses in place of f.Statuses
// (purge narrows them to finished ones).
func (w *where) filter(f *backend.InstanceFilter, statuses []backend.Status) {
	if len(statuses) > 0 {
		s := make([]string, len(statuses))
		for i, st := range statuses {
			s[i] = string(st)
		}
		w.sb.WriteString(` AND status = ANY(` + w.arg(s) + `::text[])`)
	}
	if !f.CreatedFrom.IsZero() {
		w.sb.WriteString(` AND created_at >= ` + w.arg(f.CreatedFrom.UnixNano()))
	}
	if !f.CreatedTo.IsZero() {
		w.sb.WriteString(` AND created_at < ` + w.arg(f.CreatedTo.UnixNano()))
	}
	if f.Name != "" {
		w.sb.WriteString(` AND name = ` + w.arg(f.Name))
	}
	if p := f.InstanceIDPrefix; p != "" {
		// A range rather than LIKE, so that the primary key serves it and
		// no character of the prefix is a wildcard.
		w.sb.WriteString(` AND instance_id >= ` + w.arg(p))
		if end, ok := prefixEnd(p); ok {
			w.sb.WriteString(` AND instance_id < ` + w.arg(end))
		}
	}
	if p := f.ExcludeInstanceIDPrefix; p != "" {
		// The complement of the same range.
		if end, ok := prefixEnd(p); ok {
			w.sb.WriteString(` AND (instance_id < ` + w.arg(p) + ` OR instance_id >= ` + w.arg(end) + `)`)
		} else {
			w.sb.WriteString(` AND instance_id < ` + w.arg(p))
		}
	}
}

// prefixEnd returns the smallest string greater than every string with
// prefix p in the "C" collation (code point order for valid UTF-8); ok is
// false when no such string exists. The result is valid UTF-8 whenever p
// is, as PostgreSQL text requires.
func prefixEnd(p string) (string, bool) {
	runes := []rune(p)
	for i := len(runes) - 1; i >= 0; i-- {
		r := runes[i] + 1
		if r >= 0xD800 && r <= 0xDFFF { // surrogates are not encodable
			r = 0xE000
		}
		if r <= utf8.MaxRune {
			runes[i] = r
			return string(runes[:i+1]), true
		}
	}
	return "", false
}

// finishedStatuses are the statuses a purge may delete.
var finishedStatuses = []string{string(backend.StatusCompleted), string(backend.StatusFailed), string(backend.StatusTerminated)}

// InstancePurge implements backend.Backend. A purge takes the same
// per-instance advisory locks as CommitBatch, so it never races a step of
// the instances it deletes, and it deletes only rows still finished.
func (b *Backend) InstancePurge(ctx context.Context, params *backend.InstancePurgeParams) (int, error) {
	if params.ExpectVersion < 0 {
		return 0, fmt.Errorf("postgres: InstancePurge: ExpectVersion is %d; it must not be negative", params.ExpectVersion)
	}
	if params.InstanceID != "" {
		return b.purgeOne(ctx, params)
	}
	if params.Limit < 0 {
		return 0, fmt.Errorf("postgres: InstancePurge: Limit is %d; it must not be negative", params.Limit)
	}
	if params.ExpectVersion != 0 || params.KeepMessages {
		return 0, fmt.Errorf("postgres: InstancePurge: ExpectVersion and KeepMessages apply only to the purge of one InstanceID")
	}
	statuses := finishedStatuses
	if len(params.Filter.Statuses) > 0 {
		statuses = nil
		for _, s := range params.Filter.Statuses {
			if s.Finished() && !slices.Contains(statuses, string(s)) {
				statuses = append(statuses, string(s))
			}
		}
		if len(statuses) == 0 {
			return 0, nil
		}
	}
	st := make([]backend.Status, len(statuses))
	for i, s := range statuses {
		st[i] = backend.Status(s)
	}
	w := &where{}
	w.sb.WriteString(`SELECT instance_id FROM ` + b.schemaIdent + `.instances WHERE true`)
	w.filter(&params.Filter, st)
	w.sb.WriteString(` ORDER BY instance_id`)
	if params.Limit > 0 {
		w.sb.WriteString(` LIMIT ` + w.arg(int64(params.Limit)))
	}

	conn, err := b.conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: purge: %w", err)
	}
	defer conn.Release()
	rows, _ := conn.Query(ctx, w.sb.String(), w.args...)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("postgres: purge: select instances: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	batch := &pgx.Batch{}
	batch.Queue(b.q.lockKeys, b.instanceLockKeys(ids))
	batch.Queue(b.q.purge, ids, statuses, int64(0))
	br := conn.SendBatch(ctx, batch)
	var n int64
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&n)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: purge: %w", err)
	}
	return int(n), nil
}

// purgeOne purges params.InstanceID, telling a missing instance from a
// changed version and from an unfinished one. The pipeline is one implicit
// transaction: the instance lock serializes it with commits, so the status
// and version read are those the delete sees.
func (b *Backend) purgeOne(ctx context.Context, params *backend.InstancePurgeParams) (int, error) {
	id := params.InstanceID
	conn, err := b.conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: purge %q: %w", id, err)
	}
	defer conn.Release()
	purge := b.q.purge
	if params.KeepMessages {
		purge = b.q.purgeKeep
	}
	batch := &pgx.Batch{}
	batch.Queue(b.q.lockKeys, b.instanceLockKeys([]string{id}))
	batch.Queue(b.q.instanceStatus, id)
	batch.Queue(purge, []string{id}, finishedStatuses, params.ExpectVersion)
	br := conn.SendBatch(ctx, batch)
	var (
		status  string
		version int64
		n       int64
	)
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&status, &version)
	}
	found := !errors.Is(err, pgx.ErrNoRows)
	if !found {
		err = nil
	}
	if err == nil {
		err = br.QueryRow().Scan(&n)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("postgres: purge %q: %w", id, err)
	case !found:
		return 0, fmt.Errorf("postgres: purge %q: %w", id, backend.ErrInstanceNotFound)
	case n == 0 && params.ExpectVersion > 0 && version != params.ExpectVersion:
		return 0, fmt.Errorf("postgres: purge %q: version is %d, expected %d: %w", id, version, params.ExpectVersion, backend.ErrVersionConflict)
	case n == 0:
		return 0, fmt.Errorf("postgres: purge %q: status is %s: %w", id, status, backend.ErrInstanceNotFinished)
	}
	return 1, nil
}

// instanceLockKeys returns the sorted, distinct advisory lock keys of ids.
func (b *Backend) instanceLockKeys(ids []string) []int64 {
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = lockKey(b.opts.Schema, id)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// PayloadGet implements backend.Backend.
func (b *Backend) PayloadGet(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := b.read(ctx, func(ctx context.Context) error {
		return b.pool.QueryRow(ctx, b.q.payloadGet, key).Scan(&data)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("postgres: payload %q: %w", key, backend.ErrPayloadNotFound)
	case err != nil:
		return nil, fmt.Errorf("postgres: read payload %q: %w", key, err)
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
	err := b.read(ctx, func(ctx context.Context) error {
		rows, _ := b.pool.Query(ctx, b.q.poisonList, int64(limit))
		var err error
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*backend.Poison, error) {
			var (
				p        backend.Poison
				part, dq int32
				created  int64
			)
			if err := r.Scan(&p.ID, &p.Queue, &part, &p.InstanceID, &p.Data, &dq, &p.Reason, &created); err != nil {
				return nil, err
			}
			p.Partition, p.DequeueCount, p.CreatedAt = int(part), int(dq), at(created)
			return &p, nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list poison records: %w", err)
	}
	return list, nil
}

// QueueMetrics implements backend.Backend, in one round trip. Length counts
// every message (visible, locked or delayed); the oldest times consider
// only the messages that are visible and unlocked at params.Now.
func (b *Backend) QueueMetrics(ctx context.Context, params *backend.QueueMetricsParams) (*backend.QueueMetrics, error) {
	now := ns(params.Now)
	var (
		hub *backend.Hub
		m   *backend.QueueMetrics
	)
	err := b.read(ctx, func(ctx context.Context) error {
		batch := &pgx.Batch{}
		batch.Queue(b.q.hubSelect)
		batch.Queue(b.q.metricsControl, now)
		batch.Queue(b.q.metricsWork, now)
		br := b.pool.SendBatch(ctx, batch)
		var err error
		hub, m, err = readMetrics(br)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return err
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("postgres: hub %q: %w", b.opts.Hub, backend.ErrHubNotFound)
	case err != nil:
		return nil, fmt.Errorf("postgres: queue metrics: %w", err)
	case hub.Name != b.opts.Hub:
		return nil, &HubMismatchError{Schema: b.opts.Schema, Stored: hub.Name, Requested: b.opts.Hub}
	}
	return m, nil
}

func readMetrics(br pgx.BatchResults) (*backend.Hub, *backend.QueueMetrics, error) {
	hub, err := scanHub(br.QueryRow())
	if err != nil {
		return nil, nil, err
	}
	m := &backend.QueueMetrics{Control: make([]backend.QueueStat, hub.PartitionCount)}
	rows, _ := br.Query()
	var (
		part     int32
		n        int64
		vis, enq *int64
	)
	_, err = pgx.ForEachRow(rows, []any{&part, &n, &vis, &enq}, func() error {
		if part >= 0 && int(part) < len(m.Control) {
			m.Control[part] = backend.QueueStat{Length: int(n), OldestVisibleAt: atNull(vis), OldestEnqueued: atNull(enq)}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if err := br.QueryRow().Scan(&n, &vis, &enq); err != nil {
		return nil, nil, err
	}
	m.Work = backend.QueueStat{Length: int(n), OldestVisibleAt: atNull(vis), OldestEnqueued: atNull(enq)}
	return hub, m, nil
}
