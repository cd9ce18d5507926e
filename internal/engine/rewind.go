package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/history"
)

// Rewind brings a failed instance back to life, re-running what failed.
//
// The history is cut back to the start of the step that received the first
// failure (a TaskFailed or SubOrchestrationFailed; with none, the last step:
// the orchestrator itself failed). What that step and later steps received
// is then delivered again as messages, except failures, which are re-run:
// a failed activity's work item is sent again with its original task ID,
// and a failed sub-orchestration is rewound in turn. Replaying the kept
// prefix reproduces exactly the actions it recorded, so the rewound
// instance stays deterministic; actions of the cut steps are scheduled anew
// by the replay (activities run at least once anyway).
func (e *Engine) rewind(ctx context.Context, fence backend.Fence, instanceID string, msg *history.Message, raw *backend.ControlMessage, others []*backend.ControlMessage) {
	e.cache.Remove(instanceID)
	now := e.clk.Now()
	unit := &backend.Commit{Fence: &fence, Now: now}
	unit.Writes.ControlDelete = []string{raw.ID}
	defer func() {
		// Messages that came with the rewind wait for the next step.
		if len(others) > 0 {
			ids := make([]string, len(others))
			for i, m := range others {
				ids[i] = m.ID
			}
			_ = e.be.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: fence, IDs: ids, VisibleAt: now})
			e.WakePartition(fence.Partition)
		}
	}()

	row, err := e.be.InstanceGet(ctx, instanceID)
	if err == nil && (row.Status != backend.StatusFailed || (msg.ExecutionID != "" && msg.ExecutionID != row.ExecutionID)) {
		e.log.Warn("rewind ignored: the instance is not failed", "instance", instanceID, "status", row.Status)
		err = errRewindDropped
	}
	var h *backend.History
	if err == nil {
		h, err = e.be.HistoryLoad(ctx, instanceID)
	}
	var past []*history.Event
	if err == nil {
		past = make([]*history.Event, len(h.Events))
		for i, r := range h.Events {
			if past[i], err = e.codec.decodeEvent(ctx, r.Data); err != nil {
				break
			}
		}
	}
	var plan *rewindPlan
	if err == nil {
		plan, err = planRewind(past)
	}
	switch {
	case errors.Is(err, errRewindDropped), errors.Is(err, backend.ErrInstanceNotFound):
		_ = e.committer.Commit(ctx, unit) // consume the rewind message only
		return
	case err != nil:
		e.log.Warn("rewind failed", "instance", instanceID, "err", err)
		e.abandon(ctx, fence, []*backend.ControlMessage{raw})
		return
	}

	w := &unit.Writes
	unit.Instance = &backend.InstanceCondition{InstanceID: instanceID, ExpectVersion: row.Version}
	app := &backend.HistoryAppend{InstanceID: instanceID, ExecutionID: h.ExecutionID, Reset: true}
	for _, ev := range past[:plan.keep] {
		app.Events = append(app.Events, backend.HistoryRecord{Seq: ev.Seq, Data: e.codec.encodeEvent(instanceID, ev, &w.Payloads)})
	}
	w.History = app
	row.Status, row.Output, row.Failure = backend.StatusRunning, nil, nil
	row.CompletedAt, row.UpdatedAt = time.Time{}, now
	row.Version = int64(plan.keep)
	w.InstanceUpsert = row
	out := e.newOutbox(now)
	self := func(ev *history.Event) {
		m := &history.Message{InstanceID: instanceID, ExecutionID: h.ExecutionID, Event: ev}
		nm := &backend.NewMessage{ID: newID(), Partition: fence.Partition, InstanceID: instanceID, Data: e.codec.encodeMessage(m, &w.Payloads)}
		if ev.Type == history.TimerFired && ev.FireAt.After(now) {
			nm.VisibleAt = ev.FireAt
		}
		w.ControlSend = append(w.ControlSend, nm)
		out.addControl(nm, mayOvertake(ev.Type))
	}
	for _, ev := range plan.redeliver {
		self(ev)
	}
	for _, ts := range plan.rerun {
		m := &history.Message{InstanceID: instanceID, ExecutionID: h.ExecutionID, Event: ts}
		nm := &backend.NewMessage{ID: newID(), InstanceID: instanceID, Data: e.codec.encodeMessage(m, &w.Payloads)}
		w.WorkSend = append(w.WorkSend, nm)
		out.addWork(nm)
	}
	for _, pc := range plan.children {
		child, err := e.be.InstanceGet(ctx, pc.instanceID)
		switch {
		case err != nil && !errors.Is(err, backend.ErrInstanceNotFound):
			e.log.Warn("rewind failed: reading a child", "instance", instanceID, "child", pc.instanceID, "err", err)
			e.abandon(ctx, fence, []*backend.ControlMessage{raw})
			return
		case err == nil && child.Status == backend.StatusFailed:
			m := &history.Message{InstanceID: pc.instanceID, ExecutionID: child.ExecutionID, Event: &history.Event{Type: history.ExecutionRewound, Time: now, Input: msg.Event.Input}}
			nm := &backend.NewMessage{ID: newID(), Partition: backend.PartitionOf(pc.instanceID, e.opts.PartitionCount), InstanceID: pc.instanceID, Data: e.codec.encodeMessage(m, &w.Payloads)}
			w.ControlSend = append(w.ControlSend, nm)
			out.addControl(nm, false)
		case err == nil && child.Status == backend.StatusCompleted:
			output, rerr := e.codec.resolve(ctx, child.Output)
			if rerr != nil {
				e.log.Warn("rewind failed: reading a child's output", "child", pc.instanceID, "err", rerr)
				e.abandon(ctx, fence, []*backend.ControlMessage{raw})
				return
			}
			self(&history.Event{Type: history.SubOrchestrationCompleted, Time: now, TaskID: pc.taskID, Input: output})
		case pc.failure != nil:
			// Terminated (or gone) after failing the parent: its recorded
			// outcome is all there is.
			self(pc.failure)
		}
		// A running child answers by itself when it finishes.
	}
	if err := e.committer.Commit(ctx, unit); err != nil {
		out.failed()
		e.log.Warn("rewind commit failed", "instance", instanceID, "err", err)
		if !errors.Is(err, backend.ErrLeaseLost) {
			e.abandon(ctx, fence, []*backend.ControlMessage{raw})
		}
		return
	}
	out.committed()
	e.Notify.Changed(instanceID)
	e.log.Info("instance rewound", "instance", instanceID, "kept", plan.keep, "of", len(past),
		"redelivered", len(plan.redeliver), "rerun", len(plan.rerun), "children", len(plan.children))
}

var errRewindDropped = errors.New("rewind dropped")

// rewindPlan is the pure part of a rewind: what to keep, deliver again and
// re-run.
type rewindPlan struct {
	keep      int              // history events kept: [0, keep)
	redeliver []*history.Event // results to deliver again (timers at their FireAt)
	rerun     []*history.Event // TaskScheduled events to run again
	// children are sub-orchestrations created in the kept prefix whose
	// outcome the prefix lacks: failed ones are rewound, finished ones
	// deliver their outcome again, running ones will answer by themselves.
	children []pendingChild
}

type pendingChild struct {
	instanceID string
	taskID     int64
	failure    *history.Event // the recorded SubOrchestrationFailed, if any
}

// planRewind computes a rewind of a failed history. Every task the kept
// prefix scheduled and did not see finish gets its outcome again: recorded
// results are delivered again, failed activities re-run, and activities,
// timers and children whose result never reached the history (it arrived
// after the instance had failed, and was dropped) are re-run, re-armed or
// asked again.
func planRewind(past []*history.Event) (*rewindPlan, error) {
	if len(past) == 0 || past[len(past)-1].Type != history.ExecutionCompleted || past[len(past)-1].Status != history.StatusFailed {
		return nil, fmt.Errorf("%w: the history does not end with a failure", errRewindDropped)
	}
	first := -1
	for i, ev := range past {
		if ev.Type == history.TaskFailed || ev.Type == history.SubOrchestrationFailed {
			first = i
			break
		}
	}
	if first < 0 {
		first = len(past) - 1 // the orchestrator itself failed: redo its last step
	}
	cut := -1
	for i := first; i >= 0; i-- {
		if past[i].Type == history.OrchestratorStarted {
			cut = i
			break
		}
	}
	if cut <= 0 {
		return nil, fmt.Errorf("%w: no step to rewind to", errRewindDropped)
	}
	plan := &rewindPlan{keep: cut}
	var order []int64
	scheduled := map[int64]*history.Event{}
	finished := map[int64]bool{}
	for _, ev := range past[:cut] {
		switch ev.Type {
		case history.TaskScheduled, history.TimerCreated, history.SubOrchestrationCreated:
			scheduled[ev.TaskID] = ev
			order = append(order, ev.TaskID)
		case history.TaskCompleted, history.TaskFailed, history.TimerFired, history.SubOrchestrationCompleted, history.SubOrchestrationFailed:
			finished[ev.TaskID] = true
		}
	}
	outcome := map[int64]*history.Event{}
	for _, ev := range past[cut:] {
		switch ev.Type {
		case history.EventRaised:
			plan.redeliver = append(plan.redeliver, ev)
		case history.TaskCompleted, history.TaskFailed, history.TimerFired, history.SubOrchestrationCompleted, history.SubOrchestrationFailed:
			if scheduled[ev.TaskID] != nil && !finished[ev.TaskID] && outcome[ev.TaskID] == nil {
				outcome[ev.TaskID] = ev
			}
		}
	}
	for _, id := range order {
		if finished[id] {
			continue
		}
		s, got := scheduled[id], outcome[id]
		switch {
		case got != nil && (got.Type == history.TaskCompleted || got.Type == history.TimerFired || got.Type == history.SubOrchestrationCompleted):
			plan.redeliver = append(plan.redeliver, got)
		case s.Type == history.TaskScheduled:
			plan.rerun = append(plan.rerun, s) // failed, or its result was dropped
		case s.Type == history.TimerCreated:
			plan.redeliver = append(plan.redeliver, &history.Event{Type: history.TimerFired, Time: s.Time, TaskID: id, FireAt: s.FireAt})
		case s.Type == history.SubOrchestrationCreated:
			plan.children = append(plan.children, pendingChild{instanceID: s.InstanceID, taskID: id, failure: got})
		}
	}
	return plan, nil
}
