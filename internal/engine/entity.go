package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/entity"
	"github.com/taskhub/taskhub/internal/history"
	"github.com/taskhub/taskhub/internal/payload"
)

// Durable entities (docs/entities.md). An entity's control messages are
// dispatched like an orchestration's, one step at a time per instance, but
// the step runs entity.Execute instead of a replay: the entity's record and
// state live in its Instances row (Input and Output), and every batch
// commits the new row, the consumed messages and the messages the batch
// sends as one unit, conditional on the row's version. That unit is what
// makes state changes exactly-once on the transactional backends: a crash
// before it loses the whole batch (its messages are received again), a crash
// after it loses nothing.

// entityState is an entity between batches: what its row holds, decoded.
// It is kept in the entity cache, so a hot entity is not read back from the
// store for every batch.
type entityState struct {
	rec       entity.Record
	state     []byte
	version   int64
	createdAt time.Time
}

func (s *entityState) SizeBytes() int {
	return 256 + len(s.state) + 64*len(s.rec.Queued) + 48*len(s.rec.Seen)
}
func (s *entityState) Close() {}

// entityBackoffMax caps the wait between attempts to commit a batch that
// keeps failing (the store is down): the step keeps its messages, in order,
// until it commits, the lease is lost or the engine stops.
const entityBackoffMax = 30 * time.Second

// isEntity reports whether an instance ID names an entity.
func isEntity(instanceID string) bool {
	_, _, ok := entity.ParseID(instanceID)
	return ok
}

// dispatchEntity runs an entity step once an entity slot is free.
func (e *Engine) dispatchEntity(fence backend.Fence, entityID string, msgs []*backend.ControlMessage, done func()) {
	e.steps.Add(1)
	go func() {
		defer e.steps.Done()
		defer done()
		e.entitySlots <- struct{}{}
		defer func() { <-e.entitySlots }()
		e.runEntityStep(fence, entityID, msgs)
	}()
}

// runEntityStep processes an entity's messages: one Execute and one commit
// per batch of at most MaxEntityOperationBatchSize operations, until every
// message given is consumed. Messages stay in this step until they are
// committed, so a later step never overtakes them: that keeps one sender's
// operations in the order sent.
func (e *Engine) runEntityStep(fence backend.Fence, entityID string, raw []*backend.ControlMessage) {
	ctx := context.WithoutCancel(e.runCtx)
	name, _, _ := entity.ParseID(entityID)
	invoke, _ := e.opts.Entities(name)

	var drop []string // consumed without effect (not for an entity)
	var poisoned []*backend.ControlMessage
	reqs := make([]entity.Request, 0, len(raw))
	byID := make(map[string]*backend.ControlMessage, len(raw))
	for _, m := range raw {
		byID[m.ID] = m
		if e.opts.PoisonThreshold > 0 && m.DequeueCount > e.opts.PoisonThreshold {
			poisoned = append(poisoned, m)
			continue
		}
		hm, err := e.codec.decodeMessage(ctx, m.Data)
		if err != nil {
			e.log.Error("entity message undecodable: moved to poison", "id", m.ID, "entity", entityID, "err", err)
			poisoned = append(poisoned, m)
			continue
		}
		req, ok := entityRequest(entityID, m.ID, hm)
		if !ok {
			e.log.Warn("message dropped: an entity does not accept it", "entity", entityID, "type", hm.Event.Type.String(), "id", m.ID)
			drop = append(drop, m.ID)
			continue
		}
		reqs = append(reqs, req)
	}

	st, ok := e.entCache.Take(entityID)
	first := true
	failures := 0
	for first || len(reqs) > 0 {
		if !ok {
			var err error
			if st, err = e.loadEntity(ctx, entityID); err != nil {
				failures++
				if !e.entityRetry(entityID, "load", err, failures) {
					return
				}
				continue
			}
			ok = true
		}
		start := e.clk.Now()
		res := entity.Execute(entityID, st.rec, st.state, reqs, invoke, e.opts.MaxEntityOperationBatchSize)
		unit, out, next := e.entityUnit(fence, entityID, st, &res, start)
		if first {
			unit.Writes.ControlDelete = append(unit.Writes.ControlDelete, drop...)
			e.poisonEntityMessages(entityID, unit, poisoned)
		}
		err := e.committer.Commit(ctx, unit)
		if err != nil {
			out.failed()
			if errors.Is(err, backend.ErrLeaseLost) {
				e.log.Warn("entity batch refused: lease lost", "entity", entityID, "partition", fence.Partition, "epoch", fence.Epoch)
				e.WakePartition(fence.Partition)
				return
			}
			ok = false // reload: the row may have moved on (version conflict)
			failures++
			if !e.entityRetry(entityID, "commit", err, failures) {
				return
			}
			continue
		}
		failures = 0
		if h := e.opts.Hooks.OnEntityBatch; h != nil {
			h(entityID, res.Applied, len(res.Consumed), e.clk.Now().Sub(start))
		}
		out.committed()
		e.Notify.Changed(entityID)
		for _, f := range res.Failures {
			e.logEntityFailure(entityID, &f)
		}
		st, first = next, false
		reqs = remaining(reqs, res.Consumed)
		if len(res.Consumed) == 0 && len(reqs) > 0 {
			// Cannot happen (Execute always runs at least one operation),
			// but a loop that makes no progress must not spin.
			e.log.Error("entity batch consumed nothing; messages left for later", "entity", entityID, "left", len(reqs))
			break
		}
	}
	e.entCache.Put(entityID, st, e.clk.Now())
}

// entityRetry waits before the next attempt of a failed load or commit, and
// reports false when the step should give up: the engine is stopping (the
// messages stay locked under this epoch, and whoever owns the partition
// next receives them in order).
func (e *Engine) entityRetry(entityID, what string, err error, failures int) bool {
	if errors.Is(err, backend.ErrVersionConflict) && failures == 1 {
		// The cached copy was stale (the row moved on elsewhere): reload
		// and run the batch again at once.
		e.log.Info("entity batch: row changed since it was read; reloading", "entity", entityID)
		return e.runCtx.Err() == nil
	}
	d := min(50*time.Millisecond<<min(failures-1, 10), entityBackoffMax)
	e.log.Warn("entity batch: "+what+" failed; retrying", "entity", entityID, "err", err, "in", d)
	t := e.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.runCtx.Done():
		return false
	case <-t.C():
		return true
	}
}

// remaining returns the requests not consumed, in their order.
func remaining(reqs []entity.Request, consumed []string) []entity.Request {
	if len(consumed) == len(reqs) {
		return nil
	}
	done := make(map[string]struct{}, len(consumed))
	for _, id := range consumed {
		done[id] = struct{}{}
	}
	return slices.DeleteFunc(reqs, func(r entity.Request) bool {
		_, ok := done[r.ID]
		return ok
	})
}

// entityRequest converts a control message for an entity into a request;
// ok is false for a message an entity does not accept.
func entityRequest(entityID, id string, m *history.Message) (entity.Request, bool) {
	ev := m.Event
	r := entity.Request{ID: id, Sender: entity.Sender{InstanceID: ev.InstanceID, ExecutionID: ev.ExecutionID}}
	if ev.Seq > 0 {
		r.Seq = uint64(ev.Seq)
	}
	switch ev.Type {
	case history.EntityOperationSignaled:
		r.Kind, r.Operation, r.Input = entity.Operation, ev.Name, ev.Input
	case history.EntityOperationCalled:
		r.Kind, r.Operation, r.Input = entity.Operation, ev.Name, ev.Input
		r.WantsResponse, r.TaskID = true, ev.TaskID
	case history.EntityLockRequested:
		r.Kind, r.LockID, r.TaskID = entity.Lock, ev.Name, ev.TaskID
		if p := ev.Parent; p != nil {
			r.Owner = entity.Sender{InstanceID: p.InstanceID, ExecutionID: p.ExecutionID}
			r.TaskID = p.TaskID
		}
		if err := json.Unmarshal(ev.Input, &r.Section); err != nil || len(r.Section) == 0 {
			// An unreadable section: this entity alone, which makes the
			// executor refuse it (it must come after the entity itself).
			r.Section = nil
			r.LockSet = []string{entityID}
			return r, true
		}
		r.LockSet = lockSetAfter(entityID, r.Section)
	case history.EntityLockReleased:
		r.Kind, r.LockID = entity.Unlock, ev.Name
	case history.EntityContinue:
		r.Kind, r.Sender, r.Seq = entity.Continue, entity.Sender{InstanceID: entityID}, 0
	default:
		return entity.Request{}, false
	}
	return r, true
}

// lockSetAfter returns the entities of a section that come after entityID.
// A section that does not hold the entity gives a set that starts with the
// entity itself, which the executor refuses: such a request was misrouted.
func lockSetAfter(entityID string, section []string) []string {
	i := slices.Index(section, entityID)
	if i < 0 {
		return append([]string{entityID}, section...)
	}
	return section[i+1:]
}

// loadEntity reads an entity's row; an entity without a row starts empty.
func (e *Engine) loadEntity(ctx context.Context, entityID string) (*entityState, error) {
	row, err := e.be.InstanceGet(ctx, entityID)
	if errors.Is(err, backend.ErrInstanceNotFound) {
		return &entityState{}, nil
	}
	if err != nil {
		return nil, err
	}
	st := &entityState{version: row.Version, createdAt: row.CreatedAt}
	rec, err := e.codec.resolve(ctx, row.Input)
	if err != nil {
		return nil, fmt.Errorf("entity %q: record: %w", entityID, err)
	}
	if len(rec) > 0 {
		if err := json.Unmarshal(rec, &st.rec); err != nil {
			return nil, fmt.Errorf("entity %q: record cannot be decoded: %w", entityID, err)
		}
	}
	if st.state, err = e.codec.resolve(ctx, row.Output); err != nil {
		return nil, fmt.Errorf("entity %q: state: %w", entityID, err)
	}
	if len(st.state) == 0 {
		st.state = nil
	}
	return st, nil
}

// DecodeEntityRecord decodes an entity row's record (its Input); the row's
// payloads must be resolved.
func DecodeEntityRecord(row *backend.Instance) (entity.Record, error) {
	var rec entity.Record
	if len(row.Input) == 0 {
		return rec, nil
	}
	err := json.Unmarshal(row.Input, &rec)
	return rec, err
}

// entityUnit builds the commit of one batch and the entity after it.
func (e *Engine) entityUnit(fence backend.Fence, entityID string, st *entityState, res *entity.Result, now time.Time) (*backend.Commit, *outbox, *entityState) {
	next := &entityState{rec: res.Record, state: res.State, version: st.version + 1, createdAt: st.createdAt}
	if next.createdAt.IsZero() {
		next.createdAt = now
	}
	unit := &backend.Commit{Fence: &fence, Now: now}
	unit.Instance = &backend.InstanceCondition{InstanceID: entityID, ExpectVersion: st.version}
	w := &unit.Writes
	w.ControlDelete = res.Consumed

	name, _, _ := entity.ParseID(entityID)
	row := &backend.Instance{
		InstanceID: entityID, Name: name, Status: backend.StatusCompleted,
		CreatedAt: next.createdAt, UpdatedAt: now, Version: next.version,
	}
	if res.State != nil {
		row.Status = backend.StatusRunning
		row.Output = e.codec.payload(entityID, res.State, &w.Payloads)
	}
	if rec := encodeRecord(&res.Record); rec != nil {
		row.Input = e.codec.payload(entityID, rec, &w.Payloads)
	}
	if row.Status.Finished() {
		row.CompletedAt = now
	}
	w.InstanceUpsert = row

	out := e.newOutbox(now)
	send := func(msg *history.Message, visibleAt time.Time) {
		e.addOutbound(w, out, msg, visibleAt)
	}
	for i := range res.Responses {
		r := &res.Responses[i]
		if r.To.InstanceID == "" || isEntity(r.To.InstanceID) {
			continue // a client or an entity: nobody awaits the answer
		}
		ev := &history.Event{Type: history.EntityOperationCompleted, Time: now, TaskID: r.TaskID, Input: r.Output}
		if r.Failure != nil {
			ev = &history.Event{Type: history.EntityOperationFailed, Time: now, TaskID: r.TaskID, Failure: payload.TrimFailure(r.Failure)}
		}
		send(&history.Message{InstanceID: r.To.InstanceID, ExecutionID: r.To.ExecutionID, Event: ev}, time.Time{})
	}
	for i := range res.Outbound {
		ef := &res.Outbound[i]
		switch ef.Kind {
		case entity.EffectSignal:
			rq := &ef.Request
			send(&history.Message{InstanceID: ef.Target, Event: &history.Event{
				Type: history.EntityOperationSignaled, Time: now, Name: rq.Operation, Input: rq.Input,
				InstanceID: entityID, Seq: int64(rq.Seq), FireAt: ef.At,
			}}, ef.At)
		case entity.EffectStart:
			id := ef.Target
			if id == "" {
				id = newID()
			}
			exec := newID()
			send(&history.Message{InstanceID: id, ExecutionID: exec, Event: &history.Event{
				Type: history.ExecutionStarted, Time: now, Name: ef.Name, Input: ef.Input, ExecutionID: exec, FireAt: ef.At,
			}}, ef.At)
		case entity.EffectLockForward:
			rq := &ef.Request
			section, _ := json.Marshal(rq.Section)
			send(&history.Message{InstanceID: ef.Target, Event: &history.Event{
				Type: history.EntityLockRequested, Time: now, TaskID: rq.TaskID, Name: rq.LockID, Input: section,
				InstanceID: entityID, Seq: int64(rq.Seq),
				Parent: &history.Parent{InstanceID: rq.Owner.InstanceID, ExecutionID: rq.Owner.ExecutionID, TaskID: rq.TaskID},
			}}, time.Time{})
		case entity.EffectLockGranted:
			section, _ := json.Marshal(ef.Section)
			send(&history.Message{InstanceID: ef.Target, ExecutionID: ef.ExecutionID, Event: &history.Event{
				Type: history.EntityLockGranted, Time: now, TaskID: ef.TaskID, Name: ef.LockID, Input: section,
			}}, time.Time{})
		case entity.EffectContinue:
			send(&history.Message{InstanceID: entityID, Event: &history.Event{
				Type: history.EntityContinue, Time: now, InstanceID: entityID,
			}}, time.Time{})
		}
	}
	return unit, out, next
}

// encodeRecord returns the record's JSON, or nil for an empty record.
func encodeRecord(r *entity.Record) []byte {
	if r.LockedBy == nil && len(r.Queued) == 0 && len(r.Seen) == 0 && r.SentSeq == 0 && !r.Continuing {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("entity record cannot be encoded: %v", err)) // only plain types: cannot happen
	}
	return b
}

// addOutbound adds a message to a commit's writes and to the outbox that
// delivers it in memory when this process serves its queue.
func (e *Engine) addOutbound(w *backend.Writes, out *outbox, msg *history.Message, visibleAt time.Time) {
	nm := &backend.NewMessage{ID: newID(), InstanceID: msg.InstanceID, VisibleAt: visibleAt}
	nm.Data = e.codec.encodeMessage(msg, &w.Payloads)
	nm.Partition = backend.PartitionOf(msg.InstanceID, e.opts.PartitionCount)
	w.ControlSend = append(w.ControlSend, nm)
	out.addControl(nm, mayOvertake(msg.Event.Type))
}

// poisonEntityMessages sets aside messages that cannot be processed, and
// answers a caller or a lock owner waiting for them so that it does not
// wait forever.
func (e *Engine) poisonEntityMessages(entityID string, unit *backend.Commit, poisoned []*backend.ControlMessage) {
	for _, m := range poisoned {
		reason := fmt.Sprintf("control message %s for entity %q was received %d times (poison threshold %d) and set aside", m.ID, entityID, m.DequeueCount, e.opts.PoisonThreshold)
		hm, err := history.DecodeMessage(m.Data)
		if err != nil {
			reason = fmt.Sprintf("control message %s for entity %q cannot be decoded (%v) and was set aside", m.ID, entityID, err)
		}
		e.log.Error("entity message poisoned", "entity", entityID, "reason", reason)
		unit.Writes.ControlDelete = append(unit.Writes.ControlDelete, m.ID)
		unit.Writes.Poison = append(unit.Writes.Poison, &backend.Poison{
			ID: m.ID, Queue: "control", Partition: m.Partition, InstanceID: entityID, Data: m.Data,
			DequeueCount: m.DequeueCount, Reason: reason, CreatedAt: unit.Now,
		})
		if err != nil || hm.Event == nil {
			continue
		}
		to, task := "", int64(0)
		exec := ""
		switch ev := hm.Event; ev.Type {
		case history.EntityOperationCalled:
			to, exec, task = ev.InstanceID, ev.ExecutionID, ev.TaskID
		case history.EntityLockRequested:
			if ev.Parent != nil {
				to, exec, task = ev.Parent.InstanceID, ev.Parent.ExecutionID, ev.Parent.TaskID
			}
		}
		if to == "" || isEntity(to) {
			continue
		}
		msg := &history.Message{InstanceID: to, ExecutionID: exec, Event: &history.Event{
			Type: history.EntityOperationFailed, Time: unit.Now, TaskID: task,
			Failure: &history.Failure{Type: "PoisonMessage", Message: reason, NonRetryable: true},
		}}
		unit.Writes.ControlSend = append(unit.Writes.ControlSend, &backend.NewMessage{
			ID: newID(), Partition: backend.PartitionOf(to, e.opts.PartitionCount), InstanceID: to,
			Data: history.EncodeMessage(msg),
		})
	}
}

// logEntityFailure reports a failed request. A call's caller gets the
// failure as its answer; a failed signal has nobody to tell, so it is
// logged as a warning.
func (e *Engine) logEntityFailure(entityID string, f *entity.Failed) {
	level := e.log.Warn
	if f.Kind == entity.Operation && f.Sender.InstanceID != "" && !isEntity(f.Sender.InstanceID) {
		level = e.log.Debug
	}
	level("entity operation failed", "entity", entityID, "operation", f.Operation, "kind", f.Kind.String(),
		"sender", f.Sender.InstanceID, "request", f.RequestID, "failure", f.Failure.Error())
}
