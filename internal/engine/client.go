package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/backoff"
	"github.com/taskhub/taskhub/internal/clock"
	"github.com/taskhub/taskhub/internal/history"
)

// Client performs instance-management operations on a hub: it writes
// control messages and instance rows, and reads rows and history. A client
// created from an engine shares its committer (client writes join step
// batches) and wakes its listeners and waiters in-process; a standalone
// client talks to the backend directly and polls with back-off.
type Client struct {
	be     backend.Backend
	eng    *Engine
	clk    clock.Clock
	codec  *codec
	poll   time.Duration // max poll interval while waiting cross-process
	mu     sync.Mutex
	pcount int
}

// NewClient returns a client. eng may be nil.
func NewClient(be backend.Backend, eng *Engine, clk clock.Clock, largePayloadThreshold int, maxPoll time.Duration) *Client {
	if clk == nil {
		clk = clock.Real
	}
	if maxPoll <= 0 {
		maxPoll = time.Second
	}
	return &Client{be: be, eng: eng, clk: clk, codec: newCodec(be, largePayloadThreshold), poll: maxPoll}
}

// ErrInstanceFinished is returned when an operation needs a running instance.
var ErrInstanceFinished = errors.New("instance has finished")

// ErrInstanceNotFailed is returned when rewinding an instance that has not
// failed.
var ErrInstanceNotFailed = errors.New("instance has not failed")

// Rewind asks a failed instance to re-run what failed (see Engine.rewind).
func (c *Client) Rewind(ctx context.Context, instanceID string, reason []byte) error {
	pc, err := c.partitions(ctx)
	if err != nil {
		return err
	}
	row, err := c.be.InstanceGet(ctx, instanceID)
	if err != nil {
		return err
	}
	if row.Status != backend.StatusFailed {
		return fmt.Errorf("instance %q is %s: %w", instanceID, row.Status, ErrInstanceNotFailed)
	}
	now := c.clk.Now()
	msg := &history.Message{InstanceID: instanceID, ExecutionID: row.ExecutionID, Event: &history.Event{Type: history.ExecutionRewound, Time: now, Input: reason}}
	unit := &backend.Commit{Now: now}
	nm := &backend.NewMessage{ID: newID(), Partition: backend.PartitionOf(instanceID, pc), InstanceID: instanceID, Data: c.codec.encodeMessage(msg, &unit.Writes.Payloads)}
	unit.Writes.ControlSend = []*backend.NewMessage{nm}
	return c.commitSend(ctx, unit, nm)
}

func (c *Client) partitions(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pcount > 0 {
		return c.pcount, nil
	}
	if c.eng != nil && c.eng.PartitionCount() > 0 {
		c.pcount = c.eng.PartitionCount()
		return c.pcount, nil
	}
	h, err := c.be.HubGet(ctx)
	if err != nil {
		return 0, fmt.Errorf("open task hub: %w", err)
	}
	c.pcount = h.PartitionCount
	return c.pcount, nil
}

func (c *Client) commit(ctx context.Context, unit *backend.Commit) error {
	if c.eng != nil {
		return c.eng.committer.Commit(ctx, unit)
	}
	errs, err := c.be.CommitBatch(ctx, []*backend.Commit{unit})
	if err != nil {
		return err
	}
	return errs[0]
}

// commitSend commits a unit whose only control message is nm, delivering
// it in memory when the client's engine owns its partition.
func (c *Client) commitSend(ctx context.Context, unit *backend.Commit, nm *backend.NewMessage) error {
	if c.eng == nil {
		return c.commit(ctx, unit)
	}
	out := c.eng.newOutbox(unit.Now)
	out.addControl(nm, false)
	if err := c.commit(ctx, unit); err != nil {
		out.failed()
		return err
	}
	out.committed()
	c.eng.Notify.Changed(nm.InstanceID)
	return nil
}

// ScheduleParams describe a new instance.
type ScheduleParams struct {
	InstanceID string
	Name       string
	Input      []byte
	StartAt    time.Time
	// RefuseStatuses: an existing instance in one of these statuses makes
	// the schedule fail with *backend.InstanceExistsError.
	RefuseStatuses []backend.Status
}

// Schedule creates an instance: a Pending row and an ExecutionStarted
// message, in one commit.
func (c *Client) Schedule(ctx context.Context, p ScheduleParams) error {
	pc, err := c.partitions(ctx)
	if err != nil {
		return err
	}
	now := c.clk.Now()
	execID := uuid.NewString()
	unit := &backend.Commit{Create: &backend.CreateCondition{InstanceID: p.InstanceID, RefuseStatuses: p.RefuseStatuses}, Now: now}
	w := &unit.Writes
	w.InstanceUpsert = &backend.Instance{
		InstanceID: p.InstanceID, Name: p.Name, ExecutionID: execID, Status: backend.StatusPending,
		Input: c.codec.payload(p.InstanceID, p.Input, &w.Payloads), CreatedAt: now, UpdatedAt: now,
		ScheduledStartAt: p.StartAt, Version: -1,
	}
	msg := &history.Message{InstanceID: p.InstanceID, ExecutionID: execID, Event: &history.Event{
		Type: history.ExecutionStarted, Time: now, Name: p.Name, ExecutionID: execID, Input: p.Input, FireAt: p.StartAt,
	}}
	part := backend.PartitionOf(p.InstanceID, pc)
	nm := &backend.NewMessage{ID: newID(), Partition: part, InstanceID: p.InstanceID, VisibleAt: p.StartAt, Data: c.codec.encodeMessage(msg, &w.Payloads)}
	w.ControlSend = []*backend.NewMessage{nm}
	return c.commitSend(ctx, unit, nm)
}

// Send delivers an event message to a running instance: EventRaised,
// ExecutionTerminated, ExecutionSuspended or ExecutionResumed. It fails with
// backend.ErrInstanceNotFound or ErrInstanceFinished.
func (c *Client) Send(ctx context.Context, instanceID string, ev *history.Event) error {
	pc, err := c.partitions(ctx)
	if err != nil {
		return err
	}
	row, err := c.be.InstanceGet(ctx, instanceID)
	if err != nil {
		return err
	}
	if row.Status.Finished() {
		return fmt.Errorf("instance %q is %s: %w", instanceID, row.Status, ErrInstanceFinished)
	}
	now := c.clk.Now()
	ev.Time = now
	unit := &backend.Commit{Now: now}
	part := backend.PartitionOf(instanceID, pc)
	msg := &history.Message{InstanceID: instanceID, Event: ev}
	nm := &backend.NewMessage{ID: newID(), Partition: part, InstanceID: instanceID, Data: c.codec.encodeMessage(msg, &unit.Writes.Payloads)}
	if row.Status == backend.StatusPending && row.ScheduledStartAt.After(now) {
		// The instance starts later: deliver after its ExecutionStarted
		// (same visibility, later ID), or the event would find no execution.
		nm.VisibleAt = row.ScheduledStartAt
	}
	unit.Writes.ControlSend = []*backend.NewMessage{nm}
	return c.commitSend(ctx, unit, nm)
}

// Get returns an instance row with its payloads resolved and, when with
// history, the current execution's events.
func (c *Client) Get(ctx context.Context, instanceID string) (*backend.Instance, error) {
	row, err := c.be.InstanceGet(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	return c.resolveRow(ctx, row)
}

func (c *Client) resolveRow(ctx context.Context, row *backend.Instance) (*backend.Instance, error) {
	var err error
	for _, f := range []*[]byte{&row.Input, &row.Output, &row.CustomStatus} {
		if *f, err = c.codec.resolve(ctx, *f); err != nil {
			return nil, fmt.Errorf("instance %q: %w", row.InstanceID, err)
		}
	}
	return row, nil
}

// History returns the decoded history of an instance's current execution.
func (c *Client) History(ctx context.Context, instanceID string) ([]*history.Event, error) {
	h, err := c.be.HistoryLoad(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	out := make([]*history.Event, len(h.Events))
	for i, r := range h.Events {
		if out[i], err = c.codec.decodeEvent(ctx, r.Data); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// List pages through instances, resolving payloads.
func (c *Client) List(ctx context.Context, p *backend.InstanceListParams) (*backend.InstanceListResult, error) {
	res, err := c.be.InstanceList(ctx, p)
	if err != nil {
		return nil, err
	}
	for _, r := range res.Instances {
		if _, err := c.resolveRow(ctx, r); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Wait returns the instance row once done reports true for it. In-process
// it wakes on the commit; otherwise it polls with back-off up to the
// client's poll interval. A missing instance is waited for, too (it may not
// be created yet), until ctx ends.
func (c *Client) Wait(ctx context.Context, instanceID string, done func(*backend.Instance) bool) (*backend.Instance, error) {
	var changed <-chan struct{}
	if c.eng != nil {
		ch, stop := c.eng.Notify.Watch(instanceID)
		defer stop()
		changed = ch
	}
	poll := backoff.New(5*time.Millisecond, c.poll, nil)
	for {
		row, err := c.be.InstanceGet(ctx, instanceID)
		if err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
			return nil, err
		}
		if err == nil && done(row) {
			return c.resolveRow(ctx, row)
		}
		t := c.clk.NewTimer(poll.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-changed:
			t.Stop()
		case <-t.C():
		}
	}
}

// SendEntity enqueues a message for an entity (an operation, or a lock
// release on behalf of its holder), visible at visibleAt (zero: at once).
// No row is read: an entity comes into being with its first operation.
func (c *Client) SendEntity(ctx context.Context, entityID string, ev *history.Event, visibleAt time.Time) error {
	if !isEntity(entityID) {
		return fmt.Errorf("%q is not an entity ID", entityID)
	}
	pc, err := c.partitions(ctx)
	if err != nil {
		return err
	}
	now := c.clk.Now()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	unit := &backend.Commit{Now: now}
	msg := &history.Message{InstanceID: entityID, Event: ev}
	nm := &backend.NewMessage{ID: newID(), Partition: backend.PartitionOf(entityID, pc), InstanceID: entityID, VisibleAt: visibleAt,
		Data: c.codec.encodeMessage(msg, &unit.Writes.Payloads)}
	unit.Writes.ControlSend = []*backend.NewMessage{nm}
	return c.commitSend(ctx, unit, nm)
}

// PurgeEntity removes an entity's row if it is still at version (nothing
// changed since it was read), keeping its queued messages: they bring the
// entity back.
func (c *Client) PurgeEntity(ctx context.Context, entityID string, version int64) error {
	if !isEntity(entityID) {
		return fmt.Errorf("%q is not an entity ID", entityID)
	}
	_, err := c.be.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: entityID, ExpectVersion: version, KeepMessages: true})
	return err
}
