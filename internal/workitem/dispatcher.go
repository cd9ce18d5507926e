// Package workitem is the activity dispatcher: the competing consumer of the
// hub's shared work-item queue. A worker receives only as many work items as
// it has free activity slots (maxConcurrentActivityFunctions), so it never
// hoards messages another worker could run; it renews each item's visibility
// while the activity runs, and polls with back-off when the queue is empty,
// waking at once when this process enqueues an activity.
package workitem

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/backoff"
	"github.com/taskhub/taskhub/internal/clock"
)

// Defaults.
const (
	LockDurationDefault = 5 * time.Minute
	MaxFetchDefault     = 32
)

// Run executes one work item and completes or abandons it. ctx ends when the
// dispatcher stops without draining.
type Run func(ctx context.Context, item *backend.WorkItem)

// Options configure a Dispatcher.
type Options struct {
	Owner        string
	Slots        int // maxConcurrentActivityFunctions
	MaxFetch     int
	LockDuration time.Duration
	MinPoll      time.Duration
	MaxPoll      time.Duration
	Clock        clock.Clock
	Logger       *slog.Logger
	Rand         func() float64
}

// Dispatcher receives work items into free slots.
type Dispatcher struct {
	be   backend.Backend
	run  Run
	opts Options

	slots chan struct{}
	wake  chan struct{}

	mu       sync.Mutex
	stopping bool

	runCtx    context.Context
	runCancel context.CancelFunc
	cancel    context.CancelFunc
	done      chan struct{}
	workers   sync.WaitGroup
	stopOnce  sync.Once
}

// New returns a dispatcher.
func New(be backend.Backend, run Run, opts Options) *Dispatcher {
	if opts.Slots <= 0 {
		opts.Slots = 1
	}
	if opts.MaxFetch <= 0 {
		opts.MaxFetch = MaxFetchDefault
	}
	if opts.LockDuration <= 0 {
		opts.LockDuration = LockDurationDefault
	}
	if opts.MinPoll <= 0 {
		opts.MinPoll = 50 * time.Millisecond
	}
	if opts.MaxPoll <= 0 {
		opts.MaxPoll = 30 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Dispatcher{be: be, run: run, opts: opts, slots: make(chan struct{}, opts.Slots), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Start starts fetching.
func (d *Dispatcher) Start(ctx context.Context) {
	d.runCtx, d.runCancel = context.WithCancel(context.WithoutCancel(ctx))
	var fetchCtx context.Context
	fetchCtx, d.cancel = context.WithCancel(ctx)
	go d.loop(fetchCtx)
}

// Wake makes the dispatcher fetch at once.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// TryReserve takes a free activity slot for eager dispatch, without
// waiting. A reserved slot must be given to RunReserved or Release.
func (d *Dispatcher) TryReserve() bool {
	select {
	case d.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release gives back a slot taken by TryReserve.
func (d *Dispatcher) Release() {
	<-d.slots
	d.Wake()
}

// RunReserved runs a work item this process enqueued already locked (eager
// dispatch) in a slot taken by TryReserve. After Stop it abandons the item
// instead, so another worker runs it at once.
func (d *Dispatcher) RunReserved(it *backend.WorkItem) {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		<-d.slots
		_ = d.be.WorkItemAbandon(context.Background(), &backend.WorkItemAbandonParams{ID: it.ID, LockToken: it.LockToken, VisibleAt: d.opts.Clock.Now()})
		return
	}
	d.workers.Add(1)
	d.mu.Unlock()
	go d.execute(it)
}

// InUse returns the number of busy slots.
func (d *Dispatcher) InUse() int { return len(d.slots) }

// Stop stops fetching and waits for running activities until ctx ends; then
// it cancels them (they abandon their work items). Safe to call twice.
func (d *Dispatcher) Stop(ctx context.Context) error {
	var err error
	d.stopOnce.Do(func() {
		d.mu.Lock()
		d.stopping = true
		d.mu.Unlock()
		if d.cancel == nil {
			return
		}
		d.cancel()
		<-d.done
		finished := make(chan struct{})
		go func() { d.workers.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-ctx.Done():
			// Only a stop that cuts activities short is an error: with
			// every slot free (all runs returned) the stop is clean, even
			// if finished has not been closed yet.
			if len(d.slots) > 0 {
				err = ctx.Err()
			}
			d.runCancel()
			<-finished
		}
		d.runCancel()
	})
	return err
}

func (d *Dispatcher) loop(ctx context.Context) {
	defer close(d.done)
	poll := backoff.New(d.opts.MinPoll, d.opts.MaxPoll, d.opts.Rand)
	for ctx.Err() == nil {
		free := cap(d.slots) - len(d.slots)
		if free == 0 {
			// Wait for a slot: released slots Wake the loop.
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
			}
			continue
		}
		items, err := d.be.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{
			Owner: d.opts.Owner, Max: min(free, d.opts.MaxFetch), LockDuration: d.opts.LockDuration, Now: d.opts.Clock.Now(),
		})
		if err != nil && ctx.Err() == nil {
			d.opts.Logger.Warn("work items: receive failed", "err", err)
		}
		if len(items) > 0 {
			poll.Reset()
			for i, it := range items {
				// Eager dispatch may have taken the slots counted as
				// free: wait for one, or give the rest back on stop.
				select {
				case d.slots <- struct{}{}:
				case <-ctx.Done():
					for _, rest := range items[i:] {
						_ = d.be.WorkItemAbandon(context.WithoutCancel(ctx), &backend.WorkItemAbandonParams{ID: rest.ID, LockToken: rest.LockToken, VisibleAt: d.opts.Clock.Now()})
					}
					return
				}
				d.mu.Lock()
				d.workers.Add(1)
				d.mu.Unlock()
				go d.execute(it)
			}
			continue
		}
		t := d.opts.Clock.NewTimer(poll.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.wake:
			t.Stop()
		case <-t.C():
		}
	}
}

func (d *Dispatcher) execute(it *backend.WorkItem) {
	defer d.workers.Done()
	defer func() {
		<-d.slots
		d.Wake()
	}()
	ctx, cancel := context.WithCancel(d.runCtx)
	defer cancel()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		d.keepLocked(ctx, it)
	}()
	d.run(ctx, it)
	cancel()
	<-renewed
}

// keepLocked renews the item's lock at half its duration until ctx ends.
func (d *Dispatcher) keepLocked(ctx context.Context, it *backend.WorkItem) {
	every := d.opts.LockDuration / 2
	for {
		t := d.opts.Clock.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		err := d.be.WorkItemRenew(ctx, &backend.WorkItemRenewParams{ID: it.ID, LockToken: it.LockToken, LockDuration: d.opts.LockDuration, Now: d.opts.Clock.Now()})
		if err != nil && ctx.Err() == nil {
			d.opts.Logger.Warn("work items: lock renewal failed", "id", it.ID, "err", err)
		}
	}
}
