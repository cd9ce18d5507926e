// Package controlqueue is the control-queue listener: one per owned
// partition. It receives the partition's messages in batches
// (controlQueueBatchSize), keeps at most controlQueueBufferThreshold of them
// in a prefetch buffer, groups them by instance, and hands each instance's
// pending messages to the engine as one orchestration step, never two steps
// of the same instance at once. While a backlog lasts (every receive comes
// back full) each receive asks for twice as many messages as the last, up to
// the room in the buffer, so a burst costs a few large receive transactions
// instead of many of controlQueueBatchSize; the first receive after a short
// one asks for controlQueueBatchSize again. When the queue is empty it polls with
// randomized exponential back-off, wakes at once when this process enqueues
// to the partition (Wake), and sleeps no longer than the next due timer.
package controlqueue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/backoff"
	"github.com/taskhub/taskhub/internal/clock"
)

// Defaults from the reference implementation.
const (
	BatchSizeDefault       = 32
	BufferThresholdDefault = 256
	LockDurationDefault    = 5 * time.Minute
	MaxPollDefault         = 30 * time.Second
	MinPollDefault         = 50 * time.Millisecond
)

// Dispatch runs one step of an instance with its pending messages. It must
// not block for long: the engine starts the step on its own goroutine and
// calls done when the step has been committed or abandoned.
type Dispatch func(fence backend.Fence, instanceID string, msgs []*backend.ControlMessage, done func())

// Options configure a Listener.
type Options struct {
	BatchSize       int
	BufferThreshold int
	LockDuration    time.Duration
	MinPoll         time.Duration
	MaxPoll         time.Duration
	Clock           clock.Clock
	Logger          *slog.Logger
	Rand            func() float64
	// OnLeaseLost is called (once, from the listener goroutine) when the
	// backend says the lease is gone; the listener has then stopped.
	OnLeaseLost func(partition int)
}

func (o Options) withDefaults() Options {
	if o.BatchSize <= 0 {
		o.BatchSize = BatchSizeDefault
	}
	if o.BufferThreshold <= 0 {
		o.BufferThreshold = BufferThresholdDefault
	}
	if o.LockDuration <= 0 {
		o.LockDuration = LockDurationDefault
	}
	if o.MinPoll <= 0 {
		o.MinPoll = MinPollDefault
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = MaxPollDefault
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Listener reads one partition's control queue.
type Listener struct {
	be       backend.Backend
	fence    backend.Fence
	dispatch Dispatch
	opts     Options

	wake chan struct{}

	mu       sync.Mutex
	pending  map[string]*instanceQueue            // instance ID -> messages not yet dispatched
	running  map[string][]*backend.ControlMessage // instance ID -> messages of its running step
	buffered int                                  // messages held (pending + running)
	inflight map[string]struct{}                  // every held message ID, for lock renewal
	draining bool
	// receiving is true while a receive is between its transaction and
	// the buffering of what it returned. Messages delivered meanwhile wait
	// in eager and are buffered right after those: the receive may have
	// taken older messages for the same instances.
	receiving bool
	eager     []*backend.ControlMessage

	cancel context.CancelFunc
	done   chan struct{}
	idle   chan struct{} // closed when draining and nothing is held
}

type instanceQueue struct {
	msgs []*backend.ControlMessage
}

// New returns a listener for the fenced partition.
func New(be backend.Backend, fence backend.Fence, dispatch Dispatch, opts Options) *Listener {
	return &Listener{
		be:       be,
		fence:    fence,
		dispatch: dispatch,
		opts:     opts.withDefaults(),
		wake:     make(chan struct{}, 1),
		pending:  map[string]*instanceQueue{},
		running:  map[string][]*backend.ControlMessage{},
		inflight: map[string]struct{}{},
		done:     make(chan struct{}),
		idle:     make(chan struct{}),
	}
}

// Fence returns the partition lease the listener works under.
func (l *Listener) Fence() backend.Fence { return l.fence }

// Start starts receiving.
func (l *Listener) Start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	go l.run(ctx)
}

// Wake makes the listener receive at once (a message was enqueued to its
// partition by this process, or pushed by the backend).
func (l *Listener) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Stop stops receiving at once; held messages stay locked until their lock
// expires or a newer epoch takes them. Use Drain for a graceful hand-off.
func (l *Listener) Stop() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
}

// Drain stops receiving, abandons messages not yet dispatched, and waits
// until running steps are done (or ctx ends).
func (l *Listener) Drain(ctx context.Context) error {
	l.Stop()
	l.mu.Lock()
	l.draining = true
	var ids []string
	for _, m := range l.eager {
		ids = append(ids, m.ID)
		delete(l.inflight, m.ID)
	}
	l.eager = nil
	for inst, q := range l.pending {
		for _, m := range q.msgs {
			ids = append(ids, m.ID)
			delete(l.inflight, m.ID)
		}
		l.buffered -= len(q.msgs)
		delete(l.pending, inst)
	}
	l.checkIdleLocked()
	l.mu.Unlock()
	if len(ids) > 0 {
		// Best effort: the next owner's newer epoch sees them anyway.
		_ = l.be.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: l.fence, IDs: ids, VisibleAt: l.opts.Clock.Now()})
	}
	// A finished drain wins over an ended ctx: select alone would pick at
	// random when both are ready.
	select {
	case <-l.idle:
		return nil
	default:
	}
	select {
	case <-l.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Listener) checkIdleLocked() {
	if l.draining && l.buffered == 0 {
		select {
		case <-l.idle:
		default:
			close(l.idle)
		}
	}
}

// Done reports that the step of instanceID has finished (committed, or
// abandoned) with the messages it was dispatched; they leave the buffer. If
// more messages arrived for the instance meanwhile, its next step is
// dispatched.
func (l *Listener) Done(instanceID string) {
	l.mu.Lock()
	done := l.running[instanceID]
	delete(l.running, instanceID)
	l.buffered -= len(done)
	for _, m := range done {
		delete(l.inflight, m.ID)
	}
	var next []*backend.ControlMessage
	if q, ok := l.pending[instanceID]; ok && !l.draining {
		next = q.msgs
		delete(l.pending, instanceID)
		l.running[instanceID] = next
	}
	l.checkIdleLocked()
	l.mu.Unlock()
	if next != nil {
		l.dispatch(l.fence, instanceID, next, func() { l.Done(instanceID) })
	}
	l.Wake() // room in the buffer
}

// HasRoom reports whether the prefetch buffer can take more messages.
func (l *Listener) HasRoom() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts.BufferThreshold-l.buffered-len(l.eager) > 0
}

// Deliver hands the listener messages this process enqueued already locked
// by the listener's epoch (eager local delivery), as if it had received
// them, and reports whether it took them. The backend locked them only if
// they overtook no message waiting in the queue (backend.NewMessage.Lock),
// so buffering them now keeps the queue order. A listener that has stopped
// or is draining refuses them: their lock belongs to an epoch that is over
// or about to be, so the next owner receives them (the caller should wake
// it). The check and the hand-over are one step under the listener's lock,
// so a Drain that starts meanwhile cannot strand them.
func (l *Listener) Deliver(msgs []*backend.ControlMessage) bool {
	l.mu.Lock()
	if l.draining || l.stoppedLocked() {
		l.mu.Unlock()
		return false
	}
	if l.receiving {
		for _, m := range msgs {
			l.inflight[m.ID] = struct{}{}
		}
		l.eager = append(l.eager, msgs...)
		l.mu.Unlock()
		return true
	}
	jobs := l.acceptLocked(msgs)
	l.mu.Unlock()
	l.dispatchJobs(jobs)
	return true
}

// received buffers what a receive returned, then the messages delivered
// while it ran, and ends the receive.
func (l *Listener) received(msgs []*backend.ControlMessage) {
	l.mu.Lock()
	jobs := l.acceptLocked(append(msgs, l.eager...))
	l.eager, l.receiving = nil, false
	l.mu.Unlock()
	l.dispatchJobs(jobs)
}

func (l *Listener) stoppedLocked() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Buffered returns how many messages the listener holds.
func (l *Listener) Buffered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buffered
}

func (l *Listener) run(ctx context.Context) {
	defer close(l.done)
	poll := backoff.New(l.opts.MinPoll, l.opts.MaxPoll, l.opts.Rand)
	renewEvery := l.opts.LockDuration / 2
	nextRenew := l.opts.Clock.Now().Add(renewEvery)
	batch := l.opts.BatchSize // grows while receives come back full
	for ctx.Err() == nil {
		now := l.opts.Clock.Now()
		if !now.Before(nextRenew) {
			l.renew(ctx, now)
			nextRenew = now.Add(renewEvery)
		}
		room := l.room()
		var wait time.Duration
		if room > 0 {
			l.mu.Lock()
			l.receiving = true
			l.mu.Unlock()
			res, err := l.be.ControlReceive(ctx, &backend.ControlReceiveParams{
				Fence: l.fence, Max: min(room, batch), LockDuration: l.opts.LockDuration, Now: now,
			})
			var got []*backend.ControlMessage
			if err == nil {
				got = res.Messages
			}
			l.received(got)
			switch {
			case errors.Is(err, backend.ErrLeaseLost):
				l.opts.Logger.Warn("control queue: lease lost", "partition", l.fence.Partition, "epoch", l.fence.Epoch)
				if l.opts.OnLeaseLost != nil {
					go l.opts.OnLeaseLost(l.fence.Partition)
				}
				return
			case err != nil:
				if ctx.Err() != nil {
					return
				}
				l.opts.Logger.Warn("control queue: receive failed", "partition", l.fence.Partition, "err", err)
				wait = poll.Next()
			case len(res.Messages) > 0:
				poll.Reset()
				if len(res.Messages) == min(room, batch) {
					batch = min(2*batch, l.opts.BufferThreshold)
					continue // more may be waiting
				}
				batch = l.opts.BatchSize
				wait = l.sleepFor(poll, res.NextVisibleAt, now)
			default:
				batch = l.opts.BatchSize
				wait = l.sleepFor(poll, res.NextVisibleAt, now)
			}
		} else {
			wait = renewEvery // wait for Done to make room
		}
		if d := nextRenew.Sub(now); d < wait {
			wait = d
		}
		t := l.opts.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-l.wake:
			t.Stop()
		case <-t.C():
		}
	}
}

// sleepFor is the back-off delay, shortened to the next due message.
func (l *Listener) sleepFor(poll *backoff.Poller, nextVisible, now time.Time) time.Duration {
	d := poll.Next()
	if !nextVisible.IsZero() {
		if until := nextVisible.Sub(now); until < d {
			d = max(until, time.Millisecond)
		}
	}
	return d
}

func (l *Listener) room() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts.BufferThreshold - l.buffered
}

// job is an instance's step to dispatch.
type job struct {
	id   string
	msgs []*backend.ControlMessage
}

// acceptLocked buffers messages and returns the steps of idle instances to
// dispatch once the lock is released.
func (l *Listener) acceptLocked(msgs []*backend.ControlMessage) []job {
	var jobs []job
	touched := map[string]bool{}
	var order []string
	for _, m := range msgs {
		l.inflight[m.ID] = struct{}{}
		l.buffered++
		q := l.pending[m.InstanceID]
		if q == nil {
			q = &instanceQueue{}
			l.pending[m.InstanceID] = q
		}
		q.msgs = append(q.msgs, m)
		if !touched[m.InstanceID] {
			touched[m.InstanceID] = true
			order = append(order, m.InstanceID)
		}
	}
	for _, id := range order {
		if _, busy := l.running[id]; busy {
			continue
		}
		q := l.pending[id]
		delete(l.pending, id)
		l.running[id] = q.msgs
		jobs = append(jobs, job{id, q.msgs})
	}
	return jobs
}

func (l *Listener) dispatchJobs(jobs []job) {
	for _, j := range jobs {
		id := j.id
		l.dispatch(l.fence, id, j.msgs, func() { l.Done(id) })
	}
}

func (l *Listener) renew(ctx context.Context, now time.Time) {
	l.mu.Lock()
	ids := make([]string, 0, len(l.inflight))
	for id := range l.inflight {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	err := l.be.ControlRenew(ctx, &backend.ControlRenewParams{Fence: l.fence, IDs: ids, LockDuration: l.opts.LockDuration, Now: now})
	if err != nil && ctx.Err() == nil {
		l.opts.Logger.Warn("control queue: lock renewal failed", "partition", l.fence.Partition, "err", err)
	}
}
