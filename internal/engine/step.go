package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/backoff"
	"github.com/taskhub/taskhub/internal/history"
	"github.com/taskhub/taskhub/internal/orchestration"
	"github.com/taskhub/taskhub/internal/payload"
)

// cached is an orchestration kept between steps, with the row fields the
// runtime does not track.
type cached struct {
	in        *orchestration.Instance
	createdAt time.Time
	scheduled time.Time
}

func (c *cached) SizeBytes() int { return c.in.SizeBytes() + 128 }
func (c *cached) Close()         { c.in.Close() }

// dispatchStep is the listener's Dispatch: it runs the step on its own
// goroutine once an orchestration slot is free. An instance that is only
// awaiting holds no slot.
func (e *Engine) dispatchStep(fence backend.Fence, instanceID string, msgs []*backend.ControlMessage, done func()) {
	if isEntity(instanceID) {
		e.dispatchEntity(fence, instanceID, msgs, done)
		return
	}
	e.steps.Add(1)
	go func() {
		defer e.steps.Done()
		defer done()
		e.orchSlots <- struct{}{}
		defer func() { <-e.orchSlots }()
		e.runStep(fence, instanceID, msgs)
	}()
}

// runStep executes one orchestration step and commits it.
func (e *Engine) runStep(fence backend.Fence, instanceID string, raw []*backend.ControlMessage) {
	ctx := context.WithoutCancel(e.runCtx)
	start := e.clk.Now()
	consumed := make([]string, len(raw))
	for i, m := range raw {
		consumed[i] = m.ID
	}

	// Poison: a message delivered too many times fails the instance with a
	// readable reason instead of being retried forever.
	var poisoned []*backend.ControlMessage
	var good []*backend.ControlMessage
	for _, m := range raw {
		if e.opts.PoisonThreshold > 0 && m.DequeueCount > e.opts.PoisonThreshold {
			poisoned = append(poisoned, m)
		} else {
			good = append(good, m)
		}
	}
	msgs := make([]*history.Message, 0, len(good))
	for _, m := range good {
		hm, err := e.codec.decodeMessage(ctx, m.Data)
		if err != nil {
			// Undecodable bytes cannot become valid on retry.
			e.log.Error("control message undecodable: moved to poison", "id", m.ID, "instance", instanceID, "err", err)
			poisoned = append(poisoned, m)
			continue
		}
		msgs = append(msgs, hm)
	}
	if len(poisoned) > 0 {
		e.poisonControl(ctx, fence, instanceID, raw, poisoned)
		return
	}
	for i, m := range msgs {
		if m.Event.Type == history.ExecutionRewound {
			others := append(append([]*backend.ControlMessage(nil), good[:i]...), good[i+1:]...)
			e.rewind(ctx, fence, instanceID, m, good[i], others)
			return
		}
	}

	c, fromCache := e.cache.Take(instanceID)
	var past []*history.Event
	var row *backend.Instance
	if !fromCache {
		var err error
		c, past, row, err = e.load(ctx, instanceID)
		if err != nil {
			e.log.Warn("step: load failed", "instance", instanceID, "err", err)
			e.abandon(ctx, fence, raw)
			return
		}
	}
	before := c.in.Version()
	if !fromCache {
		before = int64(len(past)) // the fresh instance has not seen its history yet
	}
	res, err := c.in.Step(past, msgs, start)
	if err != nil {
		c.Close()
		e.log.Error("step: engine misuse", "instance", instanceID, "err", err)
		e.abandon(ctx, fence, raw)
		return
	}
	for _, m := range msgs {
		if m.Event.Type == history.ExecutionStarted && (res.ResetHistory || before == 0) && m.ExecutionID == res.ExecutionID {
			c.createdAt = m.Event.Time
			c.scheduled = m.Event.FireAt
		}
	}
	if row != nil && c.createdAt.IsZero() {
		c.createdAt, c.scheduled = row.CreatedAt, row.ScheduledStartAt
	}
	if c.createdAt.IsZero() {
		c.createdAt = start
	}

	unit := &backend.Commit{Fence: &fence, Now: start}
	unit.Writes.ControlDelete = consumed
	if !res.ResetHistory {
		// Also when the step only drops messages: an instance that is
		// behind the store (a stale copy) must not discard messages the
		// real history needs.
		unit.Instance = &backend.InstanceCondition{InstanceID: instanceID, ExpectVersion: before}
	}
	out := e.newOutbox(start)
	if len(res.NewEvents) > 0 {
		w := &unit.Writes
		app := &backend.HistoryAppend{InstanceID: instanceID, ExecutionID: res.ExecutionID, Reset: res.ResetHistory}
		app.Events = make([]backend.HistoryRecord, len(res.NewEvents))
		for i, ev := range res.NewEvents {
			app.Events[i] = backend.HistoryRecord{Seq: ev.Seq, Data: e.codec.encodeEvent(instanceID, ev, &w.Payloads)}
		}
		w.History = app
		w.InstanceUpsert = e.instanceRow(instanceID, c, res, &w.Payloads)
	}
	// Messages go out even from a step that recorded nothing: a lock grant
	// that nobody waits for any more is answered by releasing the locks.
	for _, ob := range res.Outbound {
		w := &unit.Writes
		msg := ob.Message
		if !ob.WorkItem {
			e.addOutbound(w, out, &msg, ob.VisibleAt)
			continue
		}
		nm := &backend.NewMessage{ID: newID(), InstanceID: msg.InstanceID, VisibleAt: ob.VisibleAt}
		nm.Data = e.codec.encodeMessage(&msg, &w.Payloads)
		w.WorkSend = append(w.WorkSend, nm)
		out.addWork(nm)
	}

	err = e.committer.Commit(ctx, unit)
	if err != nil {
		out.failed()
		c.Close()
		if errors.Is(err, backend.ErrLeaseLost) {
			e.log.Warn("step refused: lease lost", "instance", instanceID, "partition", fence.Partition, "epoch", fence.Epoch)
			e.WakePartition(fence.Partition) // a newer epoch here, if any, takes the messages at once
			return
		}
		e.log.Warn("step commit failed: messages abandoned", "instance", instanceID, "err", err)
		e.abandon(ctx, fence, raw)
		return
	}
	if res.Done || len(res.NewEvents) == 0 && c.in.Version() == 0 {
		c.Close()
	} else {
		e.cache.Put(instanceID, c, e.clk.Now())
	}
	out.committed()
	if len(res.NewEvents) > 0 {
		e.Notify.Changed(instanceID)
	}
	if h := e.opts.Hooks.OnStep; h != nil {
		h(instanceID, e.clk.Now().Sub(start), res.Replayed)
	}
}

// load builds an instance from storage: its row (for fields the runtime
// does not keep) and the current execution's history.
func (e *Engine) load(ctx context.Context, instanceID string) (*cached, []*history.Event, *backend.Instance, error) {
	in := orchestration.NewInstance(instanceID, e.opts.Orchestrators, orchestration.Options{Logger: e.log})
	row, err := e.be.InstanceGet(ctx, instanceID)
	switch {
	case errors.Is(err, backend.ErrInstanceNotFound):
		row = nil
	case err != nil:
		return nil, nil, nil, err
	}
	if row == nil || row.Version == 0 {
		// The row and its history are written by the same commits: a new
		// instance has no history to read.
		return &cached{in: in}, nil, row, nil
	}
	h, err := e.be.HistoryLoad(ctx, instanceID)
	if err != nil {
		return nil, nil, nil, err
	}
	past := make([]*history.Event, len(h.Events))
	for i, r := range h.Events {
		ev, err := e.codec.decodeEvent(ctx, r.Data)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("history of %q, event %d: %w", instanceID, r.Seq, err)
		}
		past[i] = ev
	}
	return &cached{in: in}, past, row, nil
}

// instanceRow is the Instances-table row after a step. It is written in the
// same unit as the history, so the query model never contradicts History.
func (e *Engine) instanceRow(instanceID string, c *cached, res *orchestration.StepResult, payloads *[]*backend.Payload) *backend.Instance {
	row := &backend.Instance{
		InstanceID:       instanceID,
		Name:             res.Name,
		ExecutionID:      res.ExecutionID,
		Status:           backend.Status(res.Status),
		Input:            e.codec.payload(instanceID, res.Input, payloads),
		Output:           e.codec.payload(instanceID, res.Output, payloads),
		CustomStatus:     e.codec.payload(instanceID, res.CustomStatus, payloads),
		CreatedAt:        c.createdAt,
		UpdatedAt:        e.clk.Now(),
		ScheduledStartAt: c.scheduled,
		ParentInstanceID: res.ParentInstanceID,
		Version:          c.in.Version(),
	}
	if res.Failure != nil {
		row.Failure, _ = json.Marshal(EncodeFailure(payload.TrimFailure(res.Failure)))
	}
	if row.Status.Finished() {
		row.CompletedAt = row.UpdatedAt
	}
	return row
}

// abandon makes messages visible again after the back-off for their
// dequeue count; the step will be retried (on this or another worker).
func (e *Engine) abandon(ctx context.Context, fence backend.Fence, raw []*backend.ControlMessage) {
	maxCount := 0
	ids := make([]string, len(raw))
	for i, m := range raw {
		ids[i] = m.ID
		maxCount = max(maxCount, m.DequeueCount)
	}
	err := e.be.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: fence, IDs: ids, VisibleAt: e.clk.Now().Add(backoff.AbandonDelay(maxCount))})
	if err != nil && !errors.Is(err, backend.ErrLeaseLost) {
		e.log.Warn("abandon failed", "err", err)
	}
}

// poisonControl sets poisoned messages aside and fails the instance with a
// reason naming them. The rest of the batch is left for the next step.
func (e *Engine) poisonControl(ctx context.Context, fence backend.Fence, instanceID string, raw, poisoned []*backend.ControlMessage) {
	e.cache.Remove(instanceID)
	now := e.clk.Now()
	unit := &backend.Commit{Fence: &fence, Now: now}
	reason := ""
	for _, m := range poisoned {
		r := fmt.Sprintf("control message %s for instance %q was received %d times (poison threshold %d) and set aside", m.ID, instanceID, m.DequeueCount, e.opts.PoisonThreshold)
		if _, err := history.DecodeMessage(m.Data); err != nil {
			r = fmt.Sprintf("control message %s for instance %q cannot be decoded (%v) and was set aside", m.ID, instanceID, err)
		}
		if reason == "" {
			reason = r
		}
		unit.Writes.ControlDelete = append(unit.Writes.ControlDelete, m.ID)
		unit.Writes.Poison = append(unit.Writes.Poison, &backend.Poison{
			ID: m.ID, Queue: "control", Partition: m.Partition, InstanceID: instanceID, Data: m.Data,
			DequeueCount: m.DequeueCount, Reason: r, CreatedAt: now,
		})
	}
	if err := e.failInstance(ctx, fence, instanceID, reason, unit); err != nil {
		e.log.Warn("poison: reading the instance failed", "instance", instanceID, "err", err)
		e.abandon(ctx, fence, raw)
		return
	}
	if err := e.committer.Commit(ctx, unit); err != nil {
		e.log.Warn("poison: commit failed", "instance", instanceID, "err", err)
		if !errors.Is(err, backend.ErrLeaseLost) {
			e.abandon(ctx, fence, raw)
		}
		return
	}
	// Messages of the batch that were fine go back for the next step.
	var rest []string
	for _, m := range raw {
		keep := true
		for _, p := range poisoned {
			keep = keep && p.ID != m.ID
		}
		if keep {
			rest = append(rest, m.ID)
		}
	}
	if len(rest) > 0 {
		_ = e.be.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: fence, IDs: rest, VisibleAt: now})
	}
	e.WakePartition(fence.Partition)
	e.Notify.Changed(instanceID)
}

// failInstance adds to unit what fails an instance with reason. A started
// execution is failed through its own control queue, so a regular step
// records the failure (history, row and parent stay consistent). An instance
// that never started has no history to keep consistent: its row is marked
// Failed directly.
func (e *Engine) failInstance(ctx context.Context, fence backend.Fence, instanceID, reason string, unit *backend.Commit) error {
	h, err := e.be.HistoryLoad(ctx, instanceID)
	if err != nil {
		return err
	}
	now := unit.Now
	if len(h.Events) > 0 {
		fail := &history.Message{InstanceID: instanceID, Event: &history.Event{
			Type: history.ExecutionTerminated, Time: now, Input: mustJSON(reason), Status: history.StatusFailed,
		}}
		unit.Writes.ControlSend = append(unit.Writes.ControlSend, &backend.NewMessage{
			ID: newID(), Partition: fence.Partition, InstanceID: instanceID, Data: history.EncodeMessage(fail),
		})
		return nil
	}
	row, err := e.be.InstanceGet(ctx, instanceID)
	switch {
	case errors.Is(err, backend.ErrInstanceNotFound):
		row = &backend.Instance{InstanceID: instanceID, CreatedAt: now}
	case err != nil:
		return err
	}
	row.Status = backend.StatusFailed
	row.Failure, _ = json.Marshal(&FailureJSON{Type: "PoisonMessage", Message: reason})
	row.UpdatedAt, row.CompletedAt = now, now
	unit.Instance = &backend.InstanceCondition{InstanceID: instanceID, ExpectVersion: row.Version}
	unit.Writes.InstanceUpsert = row
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
