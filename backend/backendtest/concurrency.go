package backendtest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// testConcurrency runs producers committing work items (and instance rows)
// next to consumers receiving and completing them. Locks are long, so a
// work item delivered twice can only mean two receivers got it while it was
// locked.
func testConcurrency(t *testing.T, b backend.Backend) {
	const (
		producers = 4
		consumers = 4
		batches   = 20 // per producer
		perBatch  = 5  // work items per batch
		total     = producers * batches * perBatch
	)
	createHub(t, b, 1)
	ctx := t.Context()

	var (
		mu         sync.Mutex
		deliveries = map[string]int{}
		failures   []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// produced wakes a waiting consumer; done tells consumers that no more
	// work is coming.
	produced := make(chan struct{}, 1)
	done := make(chan struct{})

	var pwg sync.WaitGroup
	for p := range producers {
		pwg.Go(func() {
			for n := range batches {
				var msgs []*backend.NewMessage
				for k := range perBatch {
					msgs = append(msgs, &backend.NewMessage{ID: fmt.Sprintf("%02d-%04d-%02d", p, n, k), InstanceID: "i"})
				}
				id := fmt.Sprintf("producer-%d-%d", p, n)
				errs, err := b.CommitBatch(ctx, []*backend.Commit{
					{Now: t0, Writes: backend.Writes{WorkSend: msgs}},
					{Now: t0, Writes: backend.Writes{InstanceUpsert: instance(id, 1)}},
				})
				if err != nil || errs[0] != nil || errs[1] != nil {
					fail("producer %d batch %d: %v %v", p, n, err, errs)
					return
				}
				select {
				case produced <- struct{}{}:
				default:
				}
			}
		})
	}

	var cwg sync.WaitGroup
	for c := range consumers {
		cwg.Go(func() {
			owner := fmt.Sprintf("consumer-%d", c)
			for {
				items, err := b.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Owner: owner, Max: 3, LockDuration: time.Hour, Now: t0})
				if err != nil {
					fail("%s: WorkItemReceive: %v", owner, err)
					return
				}
				if len(items) == 0 {
					select {
					case <-produced:
						continue
					case <-done:
					}
					// Producers are done: one more empty receive means
					// every item is locked by someone or completed.
					items, err = b.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Owner: owner, Max: 3, LockDuration: time.Hour, Now: t0})
					if err != nil {
						fail("%s: WorkItemReceive: %v", owner, err)
						return
					}
					if len(items) == 0 {
						return
					}
				}
				units := make([]*backend.Commit, len(items))
				mu.Lock()
				for i, w := range items {
					deliveries[w.ID]++
					units[i] = &backend.Commit{Now: t0, WorkItem: &backend.WorkItemLock{ID: w.ID, LockToken: w.LockToken}}
				}
				mu.Unlock()
				errs, err := b.CommitBatch(ctx, units)
				if err != nil {
					fail("%s: CommitBatch: %v", owner, err)
					return
				}
				for i, e := range errs {
					if e != nil {
						fail("%s: completing %s: %v", owner, items[i].ID, e)
					}
				}
			}
		})
	}

	pwg.Wait()
	close(done)
	cwg.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	if len(deliveries) != total {
		t.Errorf("%d distinct work items delivered, want %d", len(deliveries), total)
	}
	for id, n := range deliveries {
		if n != 1 {
			t.Errorf("work item %s delivered %d times while locked", id, n)
		}
	}
	if l := lengths(metrics(t, b, t0)); l[1] != 0 {
		t.Errorf("work queue length after every item was completed = %d, want 0", l[1])
	}
	res, err := b.InstanceList(ctx, &backend.InstanceListParams{PageSize: 1000})
	if err != nil {
		t.Fatalf("InstanceList: %v", err)
	}
	if len(res.Instances) != producers*batches {
		t.Errorf("%d instance rows written by the producers, want %d", len(res.Instances), producers*batches)
	}
}
