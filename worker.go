package taskhub

import (
	"context"
	"fmt"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/metrics"
)

// Worker runs orchestrations and activities of one task hub. Any number of
// workers (in one process or many) can serve the same hub: control-queue
// partitions are spread over them by leases, and all of them compete for
// activities.
type Worker struct {
	be   backend.Backend
	reg  *Registry
	opts WorkerOptions
	eng  *engine.Engine
}

// NewWorker returns a worker for the hub in be, running the functions in
// reg. It validates opts (see WorkerOptions for defaults).
func NewWorker(be backend.Backend, reg *Registry, opts WorkerOptions) (*Worker, error) {
	if be == nil || reg == nil {
		return nil, fmt.Errorf("%w: NewWorker needs a backend and a registry", ErrInvalidOptions)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	w := &Worker{be: be, reg: reg, opts: opts}
	hooks := opts.hooks
	var collector *metrics.Collector
	if opts.MetricsRegisterer != nil {
		collector = metrics.New(metrics.Source{Backend: be, Clock: opts.Clock})
		hooks = chainHooks(hooks, engine.Hooks{
			OnStep: collector.OnStep, OnActivity: collector.OnActivity, OnBatch: collector.OnBatch, OnLeaseEvent: collector.OnLeaseEvent,
			OnEntityBatch: collector.OnEntityBatch,
		})
	}
	w.eng = engine.New(be, engine.Options{
		WorkerID:                      opts.WorkerID,
		PartitionCount:                opts.PartitionCount,
		Orchestrators:                 reg.orchestrator,
		Activities:                    reg.activity,
		ActivityTimeout:               reg.activityTimeout,
		MaxConcurrentActivities:       opts.MaxConcurrentActivityFunctions,
		MaxConcurrentOrchestrations:   opts.MaxConcurrentOrchestratorFunctions,
		Entities:                      reg.entity,
		MaxConcurrentEntityFunctions:  opts.MaxConcurrentEntityFunctions,
		MaxEntityOperationBatchSize:   opts.MaxEntityOperationBatchSize,
		ControlQueueBatchSize:         opts.ControlQueueBatchSize,
		ControlQueueBufferThreshold:   opts.ControlQueueBufferThreshold,
		ControlQueueVisibilityTimeout: opts.ControlQueueVisibilityTimeout,
		WorkItemVisibilityTimeout:     opts.WorkItemVisibilityTimeout,
		MinQueuePollingInterval:       MinQueuePollingIntervalDefault,
		MaxQueuePollingInterval:       opts.MaxQueuePollingInterval,
		LeaseDuration:                 opts.LeaseDuration,
		LeaseRenewInterval:            opts.LeaseRenewInterval,
		LeaseAcquireInterval:          opts.LeaseAcquireInterval,
		CacheEnabled:                  !opts.DisableExtendedSessions,
		CacheBytes:                    opts.InstanceCacheSizeMB << 20,
		CacheIdle:                     opts.ExtendedSessionIdleTimeout,
		ForceReplay:                   opts.ForceReplay,
		PoisonThreshold:               opts.PoisonThreshold,
		LargePayloadThreshold:         opts.LargePayloadThreshold,
		Clock:                         opts.Clock,
		Logger:                        opts.Logger,
		Hooks:                         hooks,
	})
	if collector != nil {
		eng := w.eng
		collector.SetSource(metrics.Source{
			Backend: be, Clock: opts.Clock, OwnedPartitions: eng.OwnedPartitions, CacheStats: eng.CacheStats,
			ActivitySlots:      func() (int, int) { return eng.ActivitySlotsInUse(), opts.MaxConcurrentActivityFunctions },
			OrchestrationSlots: func() (int, int) { return eng.OrchestrationSlotsInUse(), opts.MaxConcurrentOrchestratorFunctions },
			EntitySlots:        func() (int, int) { return eng.EntitySlotsInUse(), opts.MaxConcurrentEntityFunctions },
		})
		if err := opts.MetricsRegisterer.Register(collector); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return w, nil
}

// chainHooks calls a's hooks, then b's.
func chainHooks(a, b engine.Hooks) engine.Hooks {
	return engine.Hooks{
		OnStep: func(id string, d time.Duration, replayed int) {
			if a.OnStep != nil {
				a.OnStep(id, d, replayed)
			}
			if b.OnStep != nil {
				b.OnStep(id, d, replayed)
			}
		},
		OnActivity: func(name string, d time.Duration, err error) {
			if a.OnActivity != nil {
				a.OnActivity(name, d, err)
			}
			if b.OnActivity != nil {
				b.OnActivity(name, d, err)
			}
		},
		OnBatch: func(size int, err error) {
			if a.OnBatch != nil {
				a.OnBatch(size, err)
			}
			if b.OnBatch != nil {
				b.OnBatch(size, err)
			}
		},
		OnLeaseEvent: func(p int, epoch int64, ev string) {
			if a.OnLeaseEvent != nil {
				a.OnLeaseEvent(p, epoch, ev)
			}
			if b.OnLeaseEvent != nil {
				b.OnLeaseEvent(p, epoch, ev)
			}
		},
		OnEntityBatch: func(id string, ops, consumed int, d time.Duration) {
			if a.OnEntityBatch != nil {
				a.OnEntityBatch(id, ops, consumed, d)
			}
			if b.OnEntityBatch != nil {
				b.OnEntityBatch(id, ops, consumed, d)
			}
		},
	}
}

// ID returns the worker's ID.
func (w *Worker) ID() string { return w.eng.WorkerID() }

// Start opens (or creates) the hub and starts processing. It returns a
// *PartitionCountMismatchError if the hub exists with another partition
// count. The worker runs until Stop; ctx only bounds the start.
func (w *Worker) Start(ctx context.Context) error { return w.eng.Start(ctx) }

// Stop stops fetching new work, lets running steps and activities finish —
// or abandons them to other workers when ctx ends — flushes commits and
// releases the partition leases so other workers take them at once. Safe to
// call twice.
func (w *Worker) Stop(ctx context.Context) error { return w.eng.Stop(ctx) }

// Client returns a client bound to this worker: its writes join the
// worker's group commits, and its waits wake on the worker's commits
// instead of polling.
func (w *Worker) Client() *Client {
	c := newClient(w.be, w.eng, w.opts.Clock, w.opts.LargePayloadThreshold, 0)
	c.reg = w.reg
	return c
}
