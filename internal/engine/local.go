package engine

import (
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/controlqueue"
	"github.com/taskhub/taskhub/internal/history"
)

// Eager local delivery. A message this process enqueues to a queue it
// serves itself is inserted already locked for this process and handed over
// in memory after the commit, so no receive round trip (a write transaction
// on SQL backends) stands between one step and the next. A control message
// is locked only if it overtakes no message still waiting in its partition
// (the backend decides inside the commit, see backend.NewMessage.Lock):
// otherwise an event raised right after its instance was scheduled could be
// handed over before the ExecutionStarted still in the queue, or an
// orchestration's later signal to an entity before its earlier one. The queue row
// still guards against a crash: a work item's lock expires and another
// worker runs it; a control message's lock belongs to this partition's epoch,
// and the next owner's newer epoch sees it at once.

// outbox collects the eager deliveries of one commit.
type outbox struct {
	e       *Engine
	now     time.Time
	work    []*backend.NewMessage // reserved activity slots
	control map[*controlqueue.Listener][]*backend.NewMessage
	wake    []int // partitions to wake (not delivered in memory)
	wakeAct bool
}

func (e *Engine) newOutbox(now time.Time) *outbox { return &outbox{e: e, now: now} }

// addWork prepares a work item: eagerly when an activity slot is free.
func (o *outbox) addWork(nm *backend.NewMessage) {
	if o.e.dispatcher.TryReserve() {
		nm.Lock = &backend.MessageLock{Token: newID(), Until: o.now.Add(o.e.opts.WorkItemVisibilityTimeout)}
		o.work = append(o.work, nm)
		return
	}
	o.wakeAct = true
}

// addControl prepares a control message: eagerly when this process owns its
// partition, the listener has room, and the message is due now. mayOvertake
// marks an answer to a task of a running instance (see mayOvertake).
func (o *outbox) addControl(nm *backend.NewMessage, mayOvertake bool) {
	if !nm.VisibleAt.IsZero() && nm.VisibleAt.After(o.now) {
		return // a timer: the listener sleeps until it is due
	}
	o.e.mu.Lock()
	l := o.e.owned[nm.Partition]
	o.e.mu.Unlock()
	if l == nil || !l.HasRoom() {
		o.wake = append(o.wake, nm.Partition)
		return
	}
	nm.Lock = &backend.MessageLock{Epoch: l.Fence().Epoch, Until: o.now.Add(o.e.opts.ControlQueueVisibilityTimeout), MayOvertake: mayOvertake}
	if o.control == nil {
		o.control = map[*controlqueue.Listener][]*backend.NewMessage{}
	}
	o.control[l] = append(o.control[l], nm)
}

// mayOvertake reports whether a message of type t may be handed over ahead
// of older messages still in the queue: the answers to tasks an instance
// scheduled. The instance has started (its ExecutionStarted came first), and
// the order among answers, or between an answer and an event from someone
// else, is not defined anyway. Everything else keeps queue order: an
// instance's start, events, terminate/suspend/resume, and messages to
// entities, whose senders' order must hold.
func mayOvertake(t history.Type) bool {
	switch t {
	case history.TaskCompleted, history.TaskFailed, history.TimerFired,
		history.SubOrchestrationCompleted, history.SubOrchestrationFailed,
		history.EntityOperationCompleted, history.EntityOperationFailed, history.EntityLockGranted:
		return true
	}
	return false
}

// committed delivers everything the backend inserted locked, after a
// successful commit; what it inserted plain is received from the queue.
func (o *outbox) committed() {
	for _, nm := range o.work {
		if !nm.Locked {
			o.e.dispatcher.Release()
			o.wakeAct = true
			continue
		}
		o.e.dispatcher.RunReserved(&backend.WorkItem{
			ID: nm.ID, InstanceID: nm.InstanceID, Data: nm.Data, EnqueuedAt: o.now,
			DequeueCount: 1, LockToken: nm.Lock.Token, LockedUntil: nm.Lock.Until,
		})
	}
	for l, nms := range o.control {
		msgs := make([]*backend.ControlMessage, 0, len(nms))
		for _, nm := range nms {
			if !nm.Locked {
				o.wake = append(o.wake, nm.Partition)
				continue
			}
			msgs = append(msgs, &backend.ControlMessage{
				ID: nm.ID, Partition: nm.Partition, InstanceID: nm.InstanceID, Data: nm.Data,
				EnqueuedAt: o.now, VisibleAt: o.now, DequeueCount: 1,
			})
		}
		if len(msgs) > 0 && !l.Deliver(msgs) {
			// The listener is going away: wake whoever serves the
			// partition now (its newer epoch sees these messages).
			o.wake = append(o.wake, msgs[0].Partition)
		}
	}
	for _, p := range o.wake {
		o.e.WakePartition(p)
	}
	if o.wakeAct {
		o.e.dispatcher.Wake()
	}
}

// failed gives back what was reserved when the commit did not happen.
func (o *outbox) failed() {
	for range o.work {
		o.e.dispatcher.Release()
	}
}
