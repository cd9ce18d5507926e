package engine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/controlqueue"
	"github.com/taskhub/taskhub/internal/partition"
)

// partitionLoop is the partition manager: it heartbeats the worker row,
// renews held leases every LeaseRenewInterval, and every
// LeaseAcquireInterval applies the pure balancing rules to a fresh snapshot
// of leases and live workers. The first balance runs at once, so a lone
// worker owns every partition as soon as it starts.
func (e *Engine) partitionLoop(ctx context.Context) {
	defer e.bg.Done()
	started := e.clk.Now()
	nextBalance := started
	nextRenew := started.Add(e.opts.LeaseRenewInterval)
	for ctx.Err() == nil {
		now := e.clk.Now()
		if !now.Before(nextRenew) {
			e.renewAll(ctx, now)
			nextRenew = now.Add(e.opts.LeaseRenewInterval)
		}
		if !now.Before(nextBalance) {
			e.balanceOnce(ctx, now)
			// After balancing, so the row lists what this worker now holds.
			e.heartbeat(ctx, started, e.clk.Now())
			nextBalance = now.Add(e.opts.LeaseAcquireInterval)
		}
		wait := min(nextRenew.Sub(now), nextBalance.Sub(now))
		t := e.clk.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-e.balance:
			t.Stop()
			nextBalance = e.clk.Now()
		case <-t.C():
		}
	}
}

type workerInfo struct {
	MaxConcurrentActivities     int `json:"maxConcurrentActivityFunctions"`
	MaxConcurrentOrchestrations int `json:"maxConcurrentOrchestratorFunctions"`
	PID                         int `json:"pid"`
}

func (e *Engine) heartbeat(ctx context.Context, started, now time.Time) {
	host, _ := os.Hostname()
	info, _ := json.Marshal(workerInfo{e.opts.MaxConcurrentActivities, e.opts.MaxConcurrentOrchestrations, os.Getpid()})
	owned := e.OwnedPartitions()
	parts := make([]int, 0, len(owned))
	for p := range owned {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	err := e.be.WorkerHeartbeat(ctx, &backend.Worker{ID: e.opts.WorkerID, Host: host, StartedAt: started, HeartbeatAt: now, Partitions: parts, Info: info})
	if err != nil && ctx.Err() == nil {
		e.log.Warn("worker registry: heartbeat failed", "err", err)
	}
}

func (e *Engine) balanceOnce(ctx context.Context, now time.Time) {
	parts, err := e.be.PartitionList(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("partitions: list failed", "err", err)
		}
		return
	}
	workers, err := e.be.WorkerList(ctx, &backend.WorkerListParams{Since: now.Add(-e.opts.LeaseDuration)})
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("partitions: worker list failed", "err", err)
		}
		return
	}
	live := make([]string, 0, len(workers)+1)
	self := false
	for _, w := range workers {
		live = append(live, w.ID)
		self = self || w.ID == e.opts.WorkerID
	}
	if !self {
		live = append(live, e.opts.WorkerID)
	}
	d := partition.Balance(partition.Snapshot{Now: now, Self: e.opts.WorkerID, Partitions: parts, Workers: live})
	for _, p := range d.Release {
		e.releasePartition(ctx, p, "rebalance")
	}
	for _, c := range d.Acquire {
		got, err := e.be.PartitionAcquire(ctx, &backend.PartitionAcquireParams{
			Partition: c.Partition, Owner: e.opts.WorkerID, ExpectEpoch: c.ExpectEpoch, Duration: e.opts.LeaseDuration, Now: now,
		})
		if err != nil {
			if !errors.Is(err, backend.ErrLeaseConflict) && ctx.Err() == nil {
				e.log.Warn("partitions: acquire failed", "partition", c.Partition, "err", err)
			}
			continue
		}
		e.startListener(ctx, got)
	}
	for _, p := range d.Request {
		if err := e.be.PartitionRequest(ctx, &backend.PartitionRequestParams{Partition: p, Requester: e.opts.WorkerID}); err != nil && ctx.Err() == nil {
			e.log.Warn("partitions: hand-off request failed", "partition", p, "err", err)
		}
	}
}

func (e *Engine) startListener(ctx context.Context, p *backend.Partition) {
	fence := backend.Fence{Partition: p.Index, Owner: e.opts.WorkerID, Epoch: p.Epoch}
	l := controlqueue.New(e.be, fence, e.dispatchStep, controlqueue.Options{
		BatchSize:       e.opts.ControlQueueBatchSize,
		BufferThreshold: e.opts.ControlQueueBufferThreshold,
		LockDuration:    e.opts.ControlQueueVisibilityTimeout,
		MinPoll:         e.opts.MinQueuePollingInterval,
		MaxPoll:         e.opts.MaxQueuePollingInterval,
		Clock:           e.clk,
		Logger:          e.log,
		OnLeaseLost:     func(int) { e.lostPartition(p.Index, p.Epoch) },
	})
	e.mu.Lock()
	if old := e.owned[p.Index]; old != nil {
		e.mu.Unlock()
		old.Stop()
		e.mu.Lock()
	}
	e.owned[p.Index] = l
	e.leases[p.Index] = p.LeaseExpiresAt
	e.mu.Unlock()
	l.Start(e.runCtx)
	e.log.Info("partition acquired", "partition", p.Index, "epoch", p.Epoch, "worker", e.opts.WorkerID)
	if h := e.opts.Hooks.OnLeaseEvent; h != nil {
		h(p.Index, p.Epoch, "acquired")
	}
}

func (e *Engine) renewAll(ctx context.Context, now time.Time) {
	e.mu.Lock()
	fences := make([]backend.Fence, 0, len(e.owned))
	for _, l := range e.owned {
		fences = append(fences, l.Fence())
	}
	e.mu.Unlock()
	for _, f := range fences {
		p, err := e.be.PartitionRenew(ctx, &backend.PartitionRenewParams{Partition: f.Partition, Owner: f.Owner, Epoch: f.Epoch, Duration: e.opts.LeaseDuration, Now: now})
		switch {
		case errors.Is(err, backend.ErrLeaseLost):
			e.lostPartition(f.Partition, f.Epoch)
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("partitions: renew failed", "partition", f.Partition, "err", err)
			// Past its expiry the lease may belong to someone else: stop
			// believing it is ours, whatever the storage says later.
			e.mu.Lock()
			expired := !now.Before(e.leases[f.Partition])
			e.mu.Unlock()
			if expired {
				e.lostPartition(f.Partition, f.Epoch)
			}
		default:
			e.mu.Lock()
			if l := e.owned[f.Partition]; l != nil && l.Fence() == f {
				e.leases[f.Partition] = p.LeaseExpiresAt
			}
			e.mu.Unlock()
			if p.NextOwner == "" || p.NextOwner == e.opts.WorkerID {
				continue
			}
			// A hand-off was requested: let the balancer decide at once.
			select {
			case e.balance <- struct{}{}:
			default:
			}
		}
	}
}

// lostPartition stops a listener whose lease is gone, immediately: any commit
// it still attempts is refused by the epoch fence anyway.
func (e *Engine) lostPartition(p int, epoch int64) {
	e.mu.Lock()
	l := e.owned[p]
	if l == nil || l.Fence().Epoch != epoch {
		e.mu.Unlock()
		return
	}
	delete(e.owned, p)
	delete(e.leases, p)
	e.mu.Unlock()
	l.Stop()
	e.forgetPartition(p)
	e.log.Warn("partition lost", "partition", p, "epoch", epoch)
	if h := e.opts.Hooks.OnLeaseEvent; h != nil {
		h(p, epoch, "lost")
	}
}

// releasePartition drains a partition (stop fetching, finish running steps)
// and releases its lease so the next owner can take it at once.
func (e *Engine) releasePartition(ctx context.Context, p int, why string) {
	e.mu.Lock()
	l := e.owned[p]
	delete(e.owned, p)
	delete(e.leases, p)
	e.mu.Unlock()
	if l == nil {
		return
	}
	if err := l.Drain(ctx); err != nil {
		e.log.Warn("partition drain incomplete", "partition", p, "err", err)
	}
	e.forgetPartition(p)
	f := l.Fence()
	err := e.be.PartitionRelease(context.WithoutCancel(ctx), &backend.PartitionReleaseParams{Partition: p, Owner: f.Owner, Epoch: f.Epoch, Now: e.clk.Now()})
	if err != nil && !errors.Is(err, backend.ErrLeaseLost) {
		e.log.Warn("partitions: release failed", "partition", p, "err", err)
	}
	e.log.Info("partition released", "partition", p, "epoch", f.Epoch, "reason", why)
	if h := e.opts.Hooks.OnLeaseEvent; h != nil {
		h(p, f.Epoch, "released")
	}
}

func (e *Engine) releaseAll(ctx context.Context) error {
	e.mu.Lock()
	parts := make([]int, 0, len(e.owned))
	for p := range e.owned {
		parts = append(parts, p)
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.releasePartition(ctx, p, "shutdown")
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// forgetPartition evicts the cached instances of a partition this worker no
// longer owns: another worker will advance their histories, and a copy kept
// here would be stale if the partition came back.
func (e *Engine) forgetPartition(p int) {
	e.cache.RemoveIf(func(id string) bool { return backend.PartitionOf(id, e.opts.PartitionCount) == p })
	e.entCache.RemoveIf(func(id string) bool { return backend.PartitionOf(id, e.opts.PartitionCount) == p })
}
