package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// childEnv carries the database path to the helper processes of
// TestMultiProcess.
const childEnv = "TASKHUB_SQLITE_TEST_CHILD"

// TestMultiProcess has real processes compete for the work items of one
// file, so that SQLite's locking between processes, not only between
// connections of one process, is what keeps delivery exclusive.
func TestMultiProcess(t *testing.T) {
	const (
		children = 2
		items    = 1200
	)
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "hub.db")
	parent := openTemp(t, path, Options{})
	if _, err := parent.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	var msgs []*backend.NewMessage
	for i := range items {
		msgs = append(msgs, &backend.NewMessage{ID: fmt.Sprintf("w%05d", i), InstanceID: "i"})
	}
	if errs, err := parent.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{WorkSend: msgs}}}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}

	var (
		mu        sync.Mutex
		delivered = map[string][]string{}
	)
	record := func(owner, id string) {
		mu.Lock()
		delivered[id] = append(delivered[id], owner)
		mu.Unlock()
	}

	type child struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		ready  chan struct{}
		exited chan struct{} // its output ended
	}
	var kids []*child
	for i := range children {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMultiProcessChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		k := &child{cmd: cmd, stdin: stdin, ready: make(chan struct{}), exited: make(chan struct{})}
		owner := fmt.Sprintf("child-%d", i)
		go func() {
			defer close(k.exited)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case line == "ready":
					close(k.ready)
				case strings.HasPrefix(line, "got "):
					record(owner, strings.TrimPrefix(line, "got "))
				}
			}
		}()
		kids = append(kids, k)
	}
	// Start everyone at once: each child has opened the file and waits.
	for _, k := range kids {
		select {
		case <-k.ready:
		case <-k.exited:
			t.Fatalf("child process exited before it was ready: %v", k.cmd.Wait())
		}
	}
	for _, k := range kids {
		if _, err := io.WriteString(k.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	if err := consume(ctx, parent, func(id string) { record("parent", id) }); err != nil {
		t.Errorf("parent: %v", err)
	}
	for i, k := range kids {
		<-k.exited
		if err := k.cmd.Wait(); err != nil {
			t.Errorf("child %d: %v", i, err)
		}
	}

	if len(delivered) != items {
		t.Errorf("%d work items delivered, want %d", len(delivered), items)
	}
	perOwner := map[string]int{}
	for id, owners := range delivered {
		if len(owners) != 1 {
			t.Errorf("work item %s delivered to %v", id, owners)
		}
		perOwner[owners[0]]++
	}
	t.Logf("deliveries per process: %v", perOwner)
	m, err := parent.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if m.Work.Length != 0 {
		t.Errorf("%d work items left after every process completed its own", m.Work.Length)
	}
}

// TestMultiProcessChild is the helper process of TestMultiProcess.
func TestMultiProcessChild(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("helper process of TestMultiProcess; it runs only when started by that test")
	}
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if err := consume(t.Context(), b, func(id string) { fmt.Println("got " + id) }); err != nil {
		t.Fatal(err)
	}
}

// consume receives and completes work items until none is left. Locks last
// an hour and time stands still, so no item can be delivered twice legally.
func consume(ctx context.Context, b *Backend, got func(id string)) error {
	for {
		items, err := b.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Max: 3, LockDuration: time.Hour, Now: t0})
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		units := make([]*backend.Commit, len(items))
		for i, w := range items {
			got(w.ID)
			units[i] = &backend.Commit{Now: t0, WorkItem: &backend.WorkItemLock{ID: w.ID, LockToken: w.LockToken}}
		}
		errs, err := b.CommitBatch(ctx, units)
		if err != nil {
			return err
		}
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
	}
}
