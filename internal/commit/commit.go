// Package commit is the group committer: it gathers the commit units that
// orchestration steps, activity completions and clients submit at the same
// moment and writes them with one Backend.CommitBatch call, so on SQL
// backends many steps share one transaction and one fsync.
//
// There is no waiting for a batch to fill: the committer takes whatever is
// queued when the previous batch finishes. At low load every unit commits at
// once on its own; under load batches grow by themselves, which is where the
// throughput comes from (the fsync, not the CPU, is the floor of a durable
// commit).
package commit

import (
	"context"
	"errors"
	"sync"

	"github.com/taskhub/taskhub/backend"
)

// Options configure a Committer.
type Options struct {
	// MaxBatch bounds the units in one CommitBatch call. Default 512.
	MaxBatch int
	// Concurrency is the number of batches in flight at once. Default 1:
	// SQLite has one writer anyway; server databases may use more.
	Concurrency int
	// OnBatch, if set, is called after every CommitBatch with its size
	// (metrics).
	OnBatch func(size int, err error)
}

// Defaults.
const (
	MaxBatchDefault    = 512
	ConcurrencyDefault = 1
)

// ErrStopped is returned for units submitted after Stop.
var ErrStopped = errors.New("committer stopped")

// Committer batches commit units.
type Committer struct {
	be   backend.Backend
	opts Options

	mu      sync.Mutex
	queue   []*request
	stopped bool
	signal  chan struct{}
	wg      sync.WaitGroup
	stop    chan struct{}
}

type request struct {
	c    *backend.Commit
	done chan error
}

// New returns a committer writing to be. Call Start before Commit.
func New(be backend.Backend, opts Options) *Committer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = MaxBatchDefault
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = ConcurrencyDefault
	}
	return &Committer{be: be, opts: opts, signal: make(chan struct{}, 1), stop: make(chan struct{})}
}

// Start starts the batching goroutines.
func (c *Committer) Start() {
	for i := 0; i < c.opts.Concurrency; i++ {
		c.wg.Add(1)
		go c.loop()
	}
}

// Stop flushes what is queued and stops. Safe to call twice.
func (c *Committer) Stop() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		c.wg.Wait()
		return
	}
	c.stopped = true
	c.mu.Unlock()
	close(c.stop)
	c.wg.Wait()
}

// Commit submits a unit and waits until it is durable or refused. The error
// is the unit's condition error, or the batch's storage error. If ctx ends
// first Commit returns ctx.Err(); the unit may still be applied.
func (c *Committer) Commit(ctx context.Context, unit *backend.Commit) error {
	r := &request{c: unit, done: make(chan error, 1)}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return ErrStopped
	}
	c.queue = append(c.queue, r)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Committer) take() []*request {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.queue)
	if n == 0 {
		return nil
	}
	if n > c.opts.MaxBatch {
		n = c.opts.MaxBatch
	}
	batch := make([]*request, n)
	copy(batch, c.queue)
	rest := copy(c.queue, c.queue[n:])
	for i := rest; i < len(c.queue); i++ {
		c.queue[i] = nil
	}
	c.queue = c.queue[:rest]
	if rest > 0 {
		select {
		case c.signal <- struct{}{}:
		default:
		}
	}
	return batch
}

func (c *Committer) loop() {
	defer c.wg.Done()
	for {
		batch := c.take()
		if batch == nil {
			select {
			case <-c.signal:
				continue
			case <-c.stop:
				// Flush whatever raced in before stopping.
				for b := c.take(); b != nil; b = c.take() {
					c.write(b)
				}
				return
			}
		}
		c.write(batch)
	}
}

func (c *Committer) write(batch []*request) {
	units := make([]*backend.Commit, len(batch))
	for i, r := range batch {
		units[i] = r.c
	}
	// The batch is written with a background context: a unit whose
	// submitter gave up must still be written or refused as a whole.
	errs, err := c.be.CommitBatch(context.Background(), units)
	if c.opts.OnBatch != nil {
		c.opts.OnBatch(len(batch), err)
	}
	for i, r := range batch {
		switch {
		case err != nil:
			r.done <- err
		case i < len(errs):
			r.done <- errs[i]
		default:
			r.done <- nil
		}
	}
}
