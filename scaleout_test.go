package taskhub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/postgres"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// The scale-out test runs several real worker processes (this test binary,
// re-executed) on one hub, and checks the ownership log they print and the
// store: partitions spread evenly after a join, move at once on a graceful
// exit, are never owned by two workers at once, and no instance is lost.

const scaleChildEnv = "TASKHUB_SCALE_CHILD"

func scaleOptions() WorkerOptions {
	o := testOptions()
	o.PartitionCount = 16
	o.LeaseDuration = 3 * time.Second
	o.LeaseRenewInterval = time.Second
	o.LeaseAcquireInterval = 500 * time.Millisecond
	o.MaxQueuePollingInterval = 200 * time.Millisecond
	return o
}

// leaseEvent is one line of a worker's ownership log.
type leaseEvent struct {
	Worker    string `json:"worker"`
	Partition int    `json:"partition"`
	Epoch     int64  `json:"epoch"`
	Event     string `json:"event"` // acquired, released, lost, stopped
	At        int64  `json:"at"`    // unix nanoseconds
}

// openSpec opens a hub by spec: a postgres:// URL or a SQLite file path.
func openSpec(ctx context.Context, spec, hub string) (backend.Backend, error) {
	if strings.HasPrefix(spec, "postgres://") {
		return postgres.Open(ctx, spec, postgres.Options{Hub: hub})
	}
	return sqlite.Open(spec, sqlite.Options{Hub: hub})
}

// postgresURL returns the test server's URL. Without a reachable server the
// caller is skipped with the reason, or fails when $CI is "true": CI must
// run the PostgreSQL suites.
func postgresURL(t *testing.T) string {
	t.Helper()
	url := postgres.URLFromEnv("postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	be, err := postgres.Open(ctx, url, postgres.Options{Hub: "probe" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")})
	if err == nil {
		_ = be.HubDelete(ctx)
		be.Close()
		return url
	}
	msg := fmt.Sprintf("PostgreSQL at %s is not reachable (%v); set %s", url, err, postgres.EnvURL)
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true requires PostgreSQL: " + msg)
	}
	t.Skip("SKIPPING PostgreSQL test: " + msg)
	return ""
}

// scaleChild runs a worker until SIGTERM, printing its lease events.
func scaleChild() int {
	be, err := openSpec(context.Background(), os.Getenv("TASKHUB_SCALE_DB"), os.Getenv("TASKHUB_SCALE_HUB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	reg := NewRegistry()
	registerHello(reg)
	opts := scaleOptions()
	opts.WorkerID = os.Getenv("TASKHUB_SCALE_ID")
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	opts.hooks.OnLeaseEvent = func(p int, epoch int64, ev string) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(leaseEvent{Worker: opts.WorkerID, Partition: p, Epoch: epoch, Event: ev, At: time.Now().UnixNano()})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	w, err := NewWorker(be, reg, opts)
	if err == nil {
		err = w.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 2
	}
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "stop:", err)
		return 3
	}
	mu.Lock()
	_ = enc.Encode(leaseEvent{Worker: opts.WorkerID, Event: "stopped", At: time.Now().UnixNano()})
	mu.Unlock()
	return 0
}

type scaleWorker struct {
	id     string
	cmd    *exec.Cmd
	events chan leaseEvent
	done   chan error
}

func startScaleWorker(t *testing.T, db, hub, id string) *scaleWorker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), scaleChildEnv+"=1", "TASKHUB_SCALE_DB="+db, "TASKHUB_SCALE_HUB="+hub, "TASKHUB_SCALE_ID="+id)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &scaleWorker{id: id, cmd: cmd, events: make(chan leaseEvent, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev leaseEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				w.events <- ev
			}
		}
		_, _ = io.Copy(io.Discard, out)
		close(w.events)
		w.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return w
}

// ownership is the parent's view of the log.
type ownership struct {
	mu     sync.Mutex
	log    []leaseEvent
	owners map[int]string
}

func (o *ownership) collect(ws ...*scaleWorker) {
	for _, w := range ws {
		go func() {
			for ev := range w.events {
				o.mu.Lock()
				o.log = append(o.log, ev)
				switch ev.Event {
				case "acquired":
					o.owners[ev.Partition] = ev.Worker
				case "released", "lost":
					if o.owners[ev.Partition] == ev.Worker {
						delete(o.owners, ev.Partition)
					}
				}
				o.mu.Unlock()
			}
		}()
	}
}

func (o *ownership) counts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := map[string]int{}
	for _, w := range o.owners {
		c[w]++
	}
	return c
}

// waitFor polls the parent's view (fed by the children's logs) until cond
// holds or the deadline passes.
func (o *ownership) waitFor(t *testing.T, within time.Duration, what string, cond func(map[string]int) bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if c := o.counts(); cond(c) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not reached within %s; owners per worker %v", what, within, o.counts())
		}
	}
	return 0
}

func evenSpread(partitions, workers int) func(map[string]int) bool {
	ceil := (partitions + workers - 1) / workers
	return func(c map[string]int) bool {
		total := 0
		for _, n := range c {
			if n > ceil {
				return false
			}
			total += n
		}
		return total == partitions && len(c) == workers
	}
}

// checkNoDoubleOwnership replays the log: a partition acquired by one worker
// must have been released or lost by the previous owner first.
func (o *ownership) checkNoDoubleOwnership(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	log := append([]leaseEvent(nil), o.log...)
	o.mu.Unlock()
	sort.SliceStable(log, func(i, j int) bool { return log[i].At < log[j].At })
	holder := map[int]leaseEvent{}
	for _, ev := range log {
		switch ev.Event {
		case "acquired":
			if h, ok := holder[ev.Partition]; ok && h.Worker != ev.Worker {
				t.Fatalf("partition %d acquired by %s (epoch %d) while %s still held it (epoch %d)", ev.Partition, ev.Worker, ev.Epoch, h.Worker, h.Epoch)
			}
			if h, ok := holder[ev.Partition]; ok && ev.Epoch <= h.Epoch {
				t.Fatalf("partition %d epoch went from %d to %d", ev.Partition, h.Epoch, ev.Epoch)
			}
			holder[ev.Partition] = ev
		case "released", "lost":
			if h, ok := holder[ev.Partition]; ok && h.Worker == ev.Worker {
				delete(holder, ev.Partition)
			}
		}
	}
}

func TestScaleOutSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; skipped with -short")
	}
	testScaleOut(t, filepath.Join(t.TempDir(), "hub.db"), "taskhub")
}

func TestScaleOutPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test; skipped with -short")
	}
	url := postgresURL(t)
	testScaleOut(t, url, "scale"+strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
}

// testScaleOut runs 3, then 4, then 3 worker processes on one hub while
// orchestrations run.
func testScaleOut(t *testing.T, spec, hub string) {
	opts := scaleOptions()
	lease := opts.LeaseDuration

	// Create the hub and a workload before any worker runs.
	ctx := ctxT(t)
	be, err := openSpec(ctx, spec, hub)
	must(t, err)
	t.Cleanup(func() {
		_ = be.HubDelete(context.Background())
		be.Close()
	})
	_, err = be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 16, Now: time.Now()})
	must(t, err)
	client := NewClient(be, ClientOptions{MaxPollInterval: 50 * time.Millisecond})
	var ids []string
	schedule := func(n int) {
		for range n {
			id, err := client.ScheduleNewOrchestration(ctx, "Hello", nil)
			must(t, err)
			ids = append(ids, id)
		}
	}
	schedule(100)

	own := &ownership{owners: map[int]string{}}
	w1, w2, w3 := startScaleWorker(t, spec, hub, "w1"), startScaleWorker(t, spec, hub, "w2"), startScaleWorker(t, spec, hub, "w3")
	own.collect(w1, w2, w3)
	own.waitFor(t, 4*lease, "3 workers share 16 partitions", evenSpread(16, 3))

	// Joining: a 4th worker gets its share within 2 lease periods.
	schedule(100)
	w4 := startScaleWorker(t, spec, hub, "w4")
	own.collect(w4)
	took := own.waitFor(t, 2*lease, "spread after w4 joins", evenSpread(16, 4))
	t.Logf("w4 joined: even spread after %s (lease %s)", took.Round(time.Millisecond), lease)

	// Graceful exit: w2's partitions move without waiting for lease expiry.
	schedule(100)
	_ = w2.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-w2.done; err != nil {
		t.Fatalf("w2 graceful stop: %v", err)
	}
	took = own.waitFor(t, lease, "w2's partitions taken over", evenSpread(16, 3))
	t.Logf("w2 left: partitions re-owned after %s (lease %s)", took.Round(time.Millisecond), lease)

	for _, id := range ids {
		st, err := client.WaitForInstanceCompletion(ctx, id)
		must(t, err)
		wantOutput(t, st, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`)
		evs, err := client.GetHistory(ctx, id)
		must(t, err)
		assertCleanHistory(t, evs, 3)
	}
	for _, w := range []*scaleWorker{w1, w3, w4} {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-w.done; err != nil {
			t.Fatalf("%s graceful stop: %v", w.id, err)
		}
	}
	own.checkNoDoubleOwnership(t)
	parts, err := be.PartitionList(ctx)
	must(t, err)
	for _, p := range parts {
		if p.Owner != "" {
			t.Fatalf("partition %d still owned by %s after every worker stopped", p.Index, p.Owner)
		}
	}
}
