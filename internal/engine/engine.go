// Package engine is the worker runtime: it wires the partition manager, one
// control-queue listener per owned partition, the orchestration executor
// with its instance cache, the activity dispatcher and the group committer
// over one backend.
//
// Shutdown order (Stop): stop the partition manager's balancing, stop
// fetching (listeners, dispatcher), let running steps and activities finish
// or cancel them when the context ends, flush the committer, release the
// leases, remove the worker's registry row.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/cache"
	"github.com/taskhub/taskhub/internal/clock"
	"github.com/taskhub/taskhub/internal/commit"
	"github.com/taskhub/taskhub/internal/controlqueue"
	"github.com/taskhub/taskhub/internal/entity"
	"github.com/taskhub/taskhub/internal/orchestration"
	"github.com/taskhub/taskhub/internal/workitem"
)

// ActivityInfo describes the activity invocation being run.
type ActivityInfo struct {
	Name       string
	InstanceID string
	TaskID     int64
	Attempt    int
}

// ActivityFunc is an activity as the engine runs it.
type ActivityFunc func(ctx context.Context, info ActivityInfo, input []byte) ([]byte, error)

// Options configure an Engine. The root package validates them and fills in
// defaults; the engine takes them as given.
type Options struct {
	WorkerID       string
	PartitionCount int

	Orchestrators orchestration.Lookup
	Activities    func(name string) (ActivityFunc, bool)
	// ActivityTimeout is the default timeout of an activity (0: none).
	ActivityTimeout func(name string) time.Duration

	MaxConcurrentActivities     int
	MaxConcurrentOrchestrations int

	// Entities finds an entity's operations by (lower-case) name; nil or
	// not found makes every operation fail as not registered.
	Entities                     func(name string) (entity.Invoke, bool)
	MaxConcurrentEntityFunctions int
	// MaxEntityOperationBatchSize bounds the operations of one entity
	// batch (one commit); 1 disables batching, ≤ 0 means the default.
	MaxEntityOperationBatchSize int

	ControlQueueBatchSize         int
	ControlQueueBufferThreshold   int
	ControlQueueVisibilityTimeout time.Duration
	WorkItemVisibilityTimeout     time.Duration
	MinQueuePollingInterval       time.Duration
	MaxQueuePollingInterval       time.Duration

	LeaseDuration        time.Duration
	LeaseRenewInterval   time.Duration
	LeaseAcquireInterval time.Duration

	CacheEnabled    bool
	CacheBytes      int
	CacheIdle       time.Duration
	ForceReplay     bool
	PoisonThreshold int

	LargePayloadThreshold int

	Clock  clock.Clock
	Logger *slog.Logger
	Hooks  Hooks
}

// Hooks let the root package and tests observe the engine (metrics,
// ownership logs). Every hook is optional and must not block.
type Hooks struct {
	OnStep       func(instanceID string, d time.Duration, replayed int)
	OnActivity   func(name string, d time.Duration, err error)
	OnBatch      func(size int, err error)
	OnLeaseEvent func(partition int, epoch int64, event string)
	// OnEntityBatch reports a committed entity batch: the operations it
	// ran and the messages it consumed.
	OnEntityBatch func(entityID string, operations, consumed int, d time.Duration)
}

// Engine is a running worker.
type Engine struct {
	be    backend.Backend
	opts  Options
	clk   clock.Clock
	log   *slog.Logger
	codec *codec

	committer   *commit.Committer
	dispatcher  *workitem.Dispatcher
	cache       *cache.Cache[*cached]
	entCache    *cache.Cache[*entityState]
	orchSlots   chan struct{}
	entitySlots chan struct{}
	Notify      *Notifier

	mu       sync.Mutex
	owned    map[int]*controlqueue.Listener
	leases   map[int]time.Time // partition -> lease expiry as last granted
	started  bool
	stopped  bool
	runCtx   context.Context
	cancel   context.CancelFunc
	bg       sync.WaitGroup // background loops
	steps    sync.WaitGroup // running steps
	balance  chan struct{}
	stopOnce sync.Once
}

// New returns an engine over be. Start opens the hub.
func New(be backend.Backend, opts Options) *Engine {
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.WorkerID == "" {
		host, _ := os.Hostname()
		opts.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	e := &Engine{
		be:          be,
		opts:        opts,
		clk:         opts.Clock,
		log:         opts.Logger,
		codec:       newCodec(be, opts.LargePayloadThreshold),
		orchSlots:   make(chan struct{}, max(1, opts.MaxConcurrentOrchestrations)),
		entitySlots: make(chan struct{}, max(1, opts.MaxConcurrentEntityFunctions)),
		Notify:      NewNotifier(),
		owned:       map[int]*controlqueue.Listener{},
		leases:      map[int]time.Time{},
		balance:     make(chan struct{}, 1),
	}
	cacheBytes, idle := opts.CacheBytes, opts.CacheIdle
	if !opts.CacheEnabled || opts.ForceReplay {
		cacheBytes, idle = 1, 0 // every Put evicts at once
	}
	e.cache = cache.New[*cached](cacheBytes, idle)
	e.entCache = cache.New[*entityState](cacheBytes, idle)
	if e.opts.Entities == nil {
		e.opts.Entities = func(string) (entity.Invoke, bool) { return nil, false }
	}
	e.committer = commit.New(be, commit.Options{OnBatch: opts.Hooks.OnBatch})
	e.dispatcher = workitem.New(be, e.runActivity, workitem.Options{
		Owner:        opts.WorkerID,
		Slots:        max(1, opts.MaxConcurrentActivities),
		LockDuration: opts.WorkItemVisibilityTimeout,
		MinPoll:      opts.MinQueuePollingInterval,
		MaxPoll:      opts.MaxQueuePollingInterval,
		Clock:        opts.Clock,
		Logger:       opts.Logger,
	})
	return e
}

// WorkerID returns the worker's ID.
func (e *Engine) WorkerID() string { return e.opts.WorkerID }

// Committer returns the engine's group committer (clients in the same
// process share it).
func (e *Engine) Committer() *commit.Committer { return e.committer }

// Start opens (or creates) the hub and starts every loop. It fails with the
// backend's *PartitionCountMismatchError if the hub exists with another
// partition count.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return errors.New("engine already started")
	}
	e.started = true
	e.mu.Unlock()

	hub, err := e.be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: e.opts.PartitionCount, Now: e.clk.Now()})
	if err != nil {
		return fmt.Errorf("open task hub: %w", err)
	}
	e.opts.PartitionCount = hub.PartitionCount
	e.runCtx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.committer.Start()
	e.dispatcher.Start(e.runCtx)
	e.bg.Add(2)
	go e.partitionLoop(e.runCtx)
	go e.cacheLoop(e.runCtx)
	if n, ok := e.be.(backend.Notifier); ok {
		e.bg.Add(1)
		go e.notificationLoop(e.runCtx, n)
	}
	return nil
}

// notificationLoop turns the backend's cross-process pushes into wake-ups,
// so a message enqueued by another process is seen without a polling delay.
// Polling with back-off stays as the fallback.
func (e *Engine) notificationLoop(ctx context.Context, n backend.Notifier) {
	defer e.bg.Done()
	err := n.Notifications(ctx, func(note backend.Notification) {
		if note.Partition < 0 {
			e.dispatcher.Wake()
			return
		}
		e.WakePartition(note.Partition)
	})
	if err != nil && ctx.Err() == nil {
		e.log.Warn("backend notifications stopped; polling only", "err", err)
	}
}

// Stop shuts the engine down gracefully: stop fetching, finish (or, when ctx
// ends, abandon) running work, flush commits, release leases. Safe to call
// twice and before Start.
func (e *Engine) Stop(ctx context.Context) error {
	var err error
	e.stopOnce.Do(func() {
		e.mu.Lock()
		e.stopped = true
		started := e.started
		e.mu.Unlock()
		if !started {
			return
		}
		// Stop balancing first so no partition is acquired while draining.
		e.cancel()
		e.bg.Wait()
		err = errors.Join(e.dispatcher.Stop(ctx), e.releaseAll(ctx))
		e.steps.Wait()
		e.committer.Stop()
		e.cache.Clear()
		e.entCache.Clear()
		if rerr := e.be.WorkerRemove(context.WithoutCancel(ctx), e.opts.WorkerID); rerr != nil {
			e.log.Warn("worker registry: remove failed", "err", rerr)
		}
	})
	return err
}

// PartitionCount returns the hub's partition count (after Start).
func (e *Engine) PartitionCount() int { return e.opts.PartitionCount }

// WakePartition wakes the listener of a partition this process owns.
func (e *Engine) WakePartition(p int) {
	e.mu.Lock()
	l := e.owned[p]
	e.mu.Unlock()
	if l != nil {
		l.Wake()
	}
}

// WakeActivities wakes the activity dispatcher.
func (e *Engine) WakeActivities() { e.dispatcher.Wake() }

// OwnedPartitions returns the partitions this worker holds, with epochs.
func (e *Engine) OwnedPartitions() map[int]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[int]int64, len(e.owned))
	for p, l := range e.owned {
		out[p] = l.Fence().Epoch
	}
	return out
}

// CacheStats returns the instance cache's counters.
func (e *Engine) CacheStats() cache.Stats { return e.cache.Stats() }

// ActivitySlotsInUse returns the busy activity slots.
func (e *Engine) ActivitySlotsInUse() int { return e.dispatcher.InUse() }

// OrchestrationSlotsInUse returns the busy orchestration slots.
func (e *Engine) OrchestrationSlotsInUse() int { return len(e.orchSlots) }

// EntitySlotsInUse returns the busy entity slots.
func (e *Engine) EntitySlotsInUse() int { return len(e.entitySlots) }

func (e *Engine) cacheLoop(ctx context.Context) {
	defer e.bg.Done()
	every := e.opts.CacheIdle / 2
	if every <= 0 {
		every = 15 * time.Second
	}
	for {
		t := e.clk.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
			e.cache.ExpireIdle(e.clk.Now())
			e.entCache.ExpireIdle(e.clk.Now())
		}
	}
}

// newID returns a unique, time-ordered message ID.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
