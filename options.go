package taskhub

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/clock"
	"github.com/taskhub/taskhub/internal/engine"
)

// Defaults of WorkerOptions, from the Durable Functions Azure Storage
// provider unless noted.
const (
	PartitionCountDefault                = backend.PartitionCountDefault // 4
	ControlQueueBatchSizeDefault         = 32
	ControlQueueBufferThresholdDefault   = 256
	ControlQueueVisibilityTimeoutDefault = 5 * time.Minute
	WorkItemVisibilityTimeoutDefault     = 5 * time.Minute
	MinQueuePollingIntervalDefault       = 50 * time.Millisecond
	MaxQueuePollingIntervalDefault       = 30 * time.Second
	LeaseDurationDefault                 = 30 * time.Second
	LeaseRenewIntervalDefault            = 10 * time.Second
	LeaseAcquireIntervalDefault          = 10 * time.Second
	ExtendedSessionIdleTimeoutDefault    = 30 * time.Second
	// InstanceCacheSizeMBDefault bounds the instance cache (taskhub's own
	// default; the reference has no cursor cache).
	InstanceCacheSizeMBDefault = 256
	// PoisonThresholdDefault: a message received more often than this is set
	// aside and its instance fails with the reason (the reference retries
	// forever).
	PoisonThresholdDefault = 20
	// LargePayloadThresholdDefault: payloads above it are compressed into
	// the payload store and referenced (45 KB, as the reference).
	LargePayloadThresholdDefault = 45 * 1024
	// MaxEntityOperationBatchSizeDefault: operations one entity batch (one
	// commit) runs at most (Durable Functions' default).
	MaxEntityOperationBatchSizeDefault = 5000
)

// ConcurrencyDefault is the default of the per-worker throttles: 10 × cores.
func ConcurrencyDefault() int { return 10 * runtime.NumCPU() }

// WorkerOptions configure a Worker. The zero value of every field means its
// documented default.
type WorkerOptions struct {
	// WorkerID names the worker in leases and the worker registry. Default:
	// host-pid-random.
	WorkerID string
	// PartitionCount is used when the hub is created (1–16, default 4).
	// Opening an existing hub with another count is an error.
	PartitionCount int

	// MaxConcurrentActivityFunctions bounds running activities (default
	// 10 × cores). The worker receives only as many work items as it has
	// free slots.
	MaxConcurrentActivityFunctions int
	// MaxConcurrentOrchestratorFunctions bounds orchestration steps running
	// at once (default 10 × cores). An orchestration that is awaiting does
	// not count.
	MaxConcurrentOrchestratorFunctions int
	// MaxConcurrentEntityFunctions bounds entity batches running at once
	// (default 10 × cores).
	MaxConcurrentEntityFunctions int
	// MaxEntityOperationBatchSize bounds the operations one entity runs
	// in one batch, which is one commit (default 5000; 1 disables
	// batching). A batch also never holds more messages than the
	// partition's listener has received (ControlQueueBufferThreshold).
	MaxEntityOperationBatchSize int

	// ControlQueueBatchSize is how many control messages one receive takes
	// (default 32).
	ControlQueueBatchSize int
	// ControlQueueBufferThreshold bounds prefetched control messages per
	// partition (default 256).
	ControlQueueBufferThreshold int
	// ControlQueueVisibilityTimeout is the lock of received control
	// messages, renewed while held (default 5 min).
	ControlQueueVisibilityTimeout time.Duration
	// WorkItemVisibilityTimeout is the lock of a running work item, renewed
	// while it runs (default 5 min).
	WorkItemVisibilityTimeout time.Duration
	// MaxQueuePollingInterval caps the polling back-off (default 30 s).
	MaxQueuePollingInterval time.Duration

	// LeaseDuration, LeaseRenewInterval and LeaseAcquireInterval drive the
	// partition leases (defaults 30 s, 10 s, 10 s).
	LeaseDuration        time.Duration
	LeaseRenewInterval   time.Duration
	LeaseAcquireInterval time.Duration

	// DisableExtendedSessions turns the instance cache off: every step
	// replays the history. (Extended sessions are on by default here.)
	DisableExtendedSessions bool
	// ExtendedSessionIdleTimeout evicts a cached instance idle this long
	// (default 30 s).
	ExtendedSessionIdleTimeout time.Duration
	// InstanceCacheSizeMB bounds the instance cache (default 256).
	InstanceCacheSizeMB int
	// ForceReplay replays every step from history (tests of determinism).
	ForceReplay bool

	// PoisonThreshold is the dequeue count past which a message is set
	// aside (default 20).
	PoisonThreshold int
	// LargePayloadThreshold in bytes (default 45 KB).
	LargePayloadThreshold int

	// Logger receives the worker's logs (default slog.Default()).
	Logger *slog.Logger
	// Clock is the time source (default the wall clock). Tests inject one.
	Clock Clock

	// MetricsRegisterer, if set, receives the worker's Prometheus metrics
	// (queue lengths and ages, leases, throttles, latencies, commit batch
	// sizes, replays, cache hits).
	MetricsRegisterer prometheus.Registerer

	// hooks observe the engine (tests).
	hooks engine.Hooks
}

// Clock is the injectable time source of the engine.
type Clock = clock.Clock

func (o WorkerOptions) withDefaults() WorkerOptions {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.PartitionCount, PartitionCountDefault)
	def(&o.MaxConcurrentActivityFunctions, ConcurrencyDefault())
	def(&o.MaxConcurrentOrchestratorFunctions, ConcurrencyDefault())
	def(&o.MaxConcurrentEntityFunctions, ConcurrencyDefault())
	def(&o.MaxEntityOperationBatchSize, MaxEntityOperationBatchSizeDefault)
	def(&o.ControlQueueBatchSize, ControlQueueBatchSizeDefault)
	def(&o.ControlQueueBufferThreshold, ControlQueueBufferThresholdDefault)
	defDur(&o.ControlQueueVisibilityTimeout, ControlQueueVisibilityTimeoutDefault)
	defDur(&o.WorkItemVisibilityTimeout, WorkItemVisibilityTimeoutDefault)
	defDur(&o.MaxQueuePollingInterval, MaxQueuePollingIntervalDefault)
	defDur(&o.LeaseDuration, LeaseDurationDefault)
	defDur(&o.LeaseRenewInterval, LeaseRenewIntervalDefault)
	defDur(&o.LeaseAcquireInterval, LeaseAcquireIntervalDefault)
	defDur(&o.ExtendedSessionIdleTimeout, ExtendedSessionIdleTimeoutDefault)
	def(&o.InstanceCacheSizeMB, InstanceCacheSizeMBDefault)
	def(&o.PoisonThreshold, PoisonThresholdDefault)
	def(&o.LargePayloadThreshold, LargePayloadThresholdDefault)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	return o
}

// ErrInvalidOptions is wrapped by every options validation error.
var ErrInvalidOptions = errors.New("invalid options")

func (o WorkerOptions) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if o.PartitionCount < backend.PartitionCountMin || o.PartitionCount > backend.PartitionCountMax {
		bad("PartitionCount is %d; it must be between %d and %d", o.PartitionCount, backend.PartitionCountMin, backend.PartitionCountMax)
	}
	positive := map[string]int{
		"MaxConcurrentActivityFunctions":     o.MaxConcurrentActivityFunctions,
		"MaxConcurrentOrchestratorFunctions": o.MaxConcurrentOrchestratorFunctions,
		"MaxConcurrentEntityFunctions":       o.MaxConcurrentEntityFunctions,
		"MaxEntityOperationBatchSize":        o.MaxEntityOperationBatchSize,
		"ControlQueueBatchSize":              o.ControlQueueBatchSize,
		"ControlQueueBufferThreshold":        o.ControlQueueBufferThreshold,
		"InstanceCacheSizeMB":                o.InstanceCacheSizeMB,
		"PoisonThreshold":                    o.PoisonThreshold,
		"LargePayloadThreshold":              o.LargePayloadThreshold,
	}
	for _, name := range slices.Sorted(maps.Keys(positive)) {
		if positive[name] < 0 {
			bad("%s is %d; it must be positive", name, positive[name])
		}
	}
	if o.ControlQueueBatchSize > 1000 {
		bad("ControlQueueBatchSize is %d; it must be at most 1000", o.ControlQueueBatchSize)
	}
	durations := map[string]time.Duration{
		"ControlQueueVisibilityTimeout": o.ControlQueueVisibilityTimeout,
		"WorkItemVisibilityTimeout":     o.WorkItemVisibilityTimeout,
		"MaxQueuePollingInterval":       o.MaxQueuePollingInterval,
		"LeaseDuration":                 o.LeaseDuration,
		"LeaseRenewInterval":            o.LeaseRenewInterval,
		"LeaseAcquireInterval":          o.LeaseAcquireInterval,
		"ExtendedSessionIdleTimeout":    o.ExtendedSessionIdleTimeout,
	}
	for _, name := range slices.Sorted(maps.Keys(durations)) {
		if durations[name] < 0 {
			bad("%s is %s; it must be positive", name, durations[name])
		}
	}
	if o.LeaseRenewInterval >= o.LeaseDuration {
		bad("LeaseRenewInterval (%s) must be shorter than LeaseDuration (%s), or leases expire between renewals", o.LeaseRenewInterval, o.LeaseDuration)
	}
	return errors.Join(errs...)
}
