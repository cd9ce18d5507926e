// Package metrics exposes a worker's view of its task hub as Prometheus
// metrics: every queue's length and oldest-message age (the scale signal),
// partition ownership and lease changes, throttle occupancy, step and
// activity latencies, commit batch sizes, replays and the instance cache.
//
// Queue figures are sampled from the backend at scrape time, so every worker
// reports the whole hub; the others are this worker's own.
package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/cache"
	"github.com/taskhub/taskhub/internal/clock"
)

const namespace = "taskhub"

// Source is what the collector reads at scrape time.
type Source struct {
	Backend            backend.Backend
	Clock              clock.Clock
	OwnedPartitions    func() map[int]int64
	ActivitySlots      func() (inUse, limit int)
	OrchestrationSlots func() (inUse, limit int)
	EntitySlots        func() (inUse, limit int)
	CacheStats         func() cache.Stats
}

// Collector is a prometheus.Collector plus the hooks the engine calls.
type Collector struct {
	src Source

	stepSeconds     prometheus.Histogram
	activitySeconds *prometheus.HistogramVec
	batchSize       prometheus.Histogram
	batchErrors     prometheus.Counter
	replayed        prometheus.Counter
	steps           prometheus.Counter
	leaseEvents     *prometheus.CounterVec
	entityBatchOps  prometheus.Histogram
	entityBatchSecs prometheus.Histogram
	entityOps       prometheus.Counter

	queueLength *prometheus.Desc
	queueAge    *prometheus.Desc
	owned       *prometheus.Desc
	epoch       *prometheus.Desc
	throttleUse *prometheus.Desc
	throttleMax *prometheus.Desc
	cacheHits   *prometheus.Desc
	cacheMisses *prometheus.Desc
	cacheBytes  *prometheus.Desc
	cacheItems  *prometheus.Desc
	scrapeErr   *prometheus.Desc
}

// New returns a collector reading src.
func New(src Source) *Collector {
	if src.Clock == nil {
		src.Clock = clock.Real
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &Collector{
		src: src,
		stepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "orchestration_step_seconds",
			Help:    "Time from receiving an instance's messages to its step being committed.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		activitySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "activity_seconds",
			Help:    "Activity execution time, by outcome (completed or failed).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"outcome"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "commit_batch_size",
			Help:    "Commit units written per backend transaction (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		batchErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "commit_batch_errors_total", Help: "Commit batches that failed in storage."}),
		replayed:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "replayed_events_total", Help: "History events replayed to rebuild orchestrations not in the instance cache."}),
		steps:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "orchestration_steps_total", Help: "Orchestration steps committed."}),
		leaseEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "lease_events_total", Help: "Partition lease changes of this worker (acquired, released, lost)."}, []string{"event"}),
		entityBatchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "entity_batch_operations",
			Help:    "Operations run by one entity batch (one commit); bounded by maxEntityOperationBatchSize.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		entityBatchSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "entity_batch_seconds",
			Help:    "Time from running an entity batch to its commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		entityOps: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "entity_operations_total", Help: "Entity operations run (succeeded or failed) in committed batches."}),

		queueLength: desc("queue_length", "Messages in a queue (control queues by partition, and the work-item queue).", "queue", "partition"),
		queueAge:    desc("queue_oldest_message_age_seconds", "Age of the oldest visible message of a queue: how long work has waited.", "queue", "partition"),
		owned:       desc("partition_owned", "1 when this worker holds the partition's lease.", "partition"),
		epoch:       desc("partition_epoch", "Lease epoch (fencing token) of a partition this worker holds.", "partition"),
		throttleUse: desc("throttle_in_use", "Busy slots of a per-worker throttle.", "kind"),
		throttleMax: desc("throttle_limit", "Size of a per-worker throttle.", "kind"),
		cacheHits:   desc("instance_cache_hits_total", "Steps that found their orchestration in the instance cache (no replay)."),
		cacheMisses: desc("instance_cache_misses_total", "Steps that had to load and replay history."),
		cacheBytes:  desc("instance_cache_bytes", "Estimated memory held by the instance cache."),
		cacheItems:  desc("instance_cache_entries", "Orchestrations held in the instance cache."),
		scrapeErr:   desc("scrape_error", "1 when sampling the queues failed during this scrape."),
	}
}

// SetSource replaces what the collector reads at scrape time (the engine
// exists only after the collector's hooks are handed to it).
func (c *Collector) SetSource(src Source) {
	if src.Clock == nil {
		src.Clock = clock.Real
	}
	c.src = src
}

// OnStep records a committed step.
func (c *Collector) OnStep(_ string, d time.Duration, replayed int) {
	c.stepSeconds.Observe(d.Seconds())
	c.steps.Inc()
	c.replayed.Add(float64(replayed))
}

// OnActivity records an activity execution.
func (c *Collector) OnActivity(_ string, d time.Duration, err error) {
	outcome := "completed"
	if err != nil {
		outcome = "failed"
	}
	c.activitySeconds.WithLabelValues(outcome).Observe(d.Seconds())
}

// OnBatch records a commit batch.
func (c *Collector) OnBatch(size int, err error) {
	c.batchSize.Observe(float64(size))
	if err != nil {
		c.batchErrors.Inc()
	}
}

// OnEntityBatch records a committed entity batch.
func (c *Collector) OnEntityBatch(_ string, operations, _ int, d time.Duration) {
	c.entityBatchOps.Observe(float64(operations))
	c.entityBatchSecs.Observe(d.Seconds())
	c.entityOps.Add(float64(operations))
}

// OnLeaseEvent records a lease change.
func (c *Collector) OnLeaseEvent(_ int, _ int64, event string) {
	c.leaseEvents.WithLabelValues(event).Inc()
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.stepSeconds.Describe(ch)
	c.activitySeconds.Describe(ch)
	c.batchSize.Describe(ch)
	c.batchErrors.Describe(ch)
	c.replayed.Describe(ch)
	c.steps.Describe(ch)
	c.leaseEvents.Describe(ch)
	c.entityBatchOps.Describe(ch)
	c.entityBatchSecs.Describe(ch)
	c.entityOps.Describe(ch)
	for _, d := range []*prometheus.Desc{c.queueLength, c.queueAge, c.owned, c.epoch, c.throttleUse, c.throttleMax, c.cacheHits, c.cacheMisses, c.cacheBytes, c.cacheItems, c.scrapeErr} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.stepSeconds.Collect(ch)
	c.activitySeconds.Collect(ch)
	c.batchSize.Collect(ch)
	c.batchErrors.Collect(ch)
	c.replayed.Collect(ch)
	c.steps.Collect(ch)
	c.leaseEvents.Collect(ch)
	c.entityBatchOps.Collect(ch)
	c.entityBatchSecs.Collect(ch)
	c.entityOps.Collect(ch)

	now := c.src.Clock.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qm, err := c.src.Backend.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: now})
	failed := 0.0
	if err != nil {
		failed = 1
	} else {
		for p, q := range qm.Control {
			c.queue(ch, "control", strconv.Itoa(p), q, now)
		}
		c.queue(ch, "workitem", "", qm.Work, now)
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErr, prometheus.GaugeValue, failed)

	if c.src.OwnedPartitions != nil {
		for p, epoch := range c.src.OwnedPartitions() {
			label := strconv.Itoa(p)
			ch <- prometheus.MustNewConstMetric(c.owned, prometheus.GaugeValue, 1, label)
			ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(epoch), label)
		}
	}
	for kind, f := range map[string]func() (int, int){"activity": c.src.ActivitySlots, "orchestration": c.src.OrchestrationSlots, "entity": c.src.EntitySlots} {
		if f == nil {
			continue
		}
		inUse, limit := f()
		ch <- prometheus.MustNewConstMetric(c.throttleUse, prometheus.GaugeValue, float64(inUse), kind)
		ch <- prometheus.MustNewConstMetric(c.throttleMax, prometheus.GaugeValue, float64(limit), kind)
	}
	if c.src.CacheStats != nil {
		s := c.src.CacheStats()
		ch <- prometheus.MustNewConstMetric(c.cacheHits, prometheus.CounterValue, float64(s.Hits))
		ch <- prometheus.MustNewConstMetric(c.cacheMisses, prometheus.CounterValue, float64(s.Misses))
		ch <- prometheus.MustNewConstMetric(c.cacheBytes, prometheus.GaugeValue, float64(s.Bytes))
		ch <- prometheus.MustNewConstMetric(c.cacheItems, prometheus.GaugeValue, float64(s.Entries))
	}
}

func (c *Collector) queue(ch chan<- prometheus.Metric, queue, partition string, q backend.QueueStat, now time.Time) {
	ch <- prometheus.MustNewConstMetric(c.queueLength, prometheus.GaugeValue, float64(q.Length), queue, partition)
	age := 0.0
	if !q.OldestEnqueued.IsZero() {
		age = max(now.Sub(q.OldestEnqueued).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.queueAge, prometheus.GaugeValue, age, queue, partition)
}
