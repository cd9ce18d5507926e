package postgres

import (
	"fmt"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// benchHub opens a fresh schema with a hub of 4 partitions, all held by "w".
func benchHub(b *testing.B) (*Backend, []backend.Fence) {
	b.Helper()
	be := openTest(b, Options{})
	createHub(b, be, 4)
	fences := make([]backend.Fence, 4)
	for p := range fences {
		fences[p] = acquire(b, be, p, "w")
	}
	return be, fences
}

// stepSource makes commit units shaped like orchestration steps: each
// appends two history events to an instance under its partition's fence
// and a version condition, rewrites the instance row, sends one control
// message and consumes the one its previous step sent.
type stepSource struct {
	fences    []backend.Fence
	instances []benchInstance
	next      int
	seq       int
	payload   []byte
}

type benchInstance struct {
	id        string
	partition int
	version   int64
	pending   string // the control message the previous step sent
}

func newStepSource(fences []backend.Fence, instances int) *stepSource {
	s := &stepSource{fences: fences, payload: make([]byte, 200)}
	for i := range instances {
		id := fmt.Sprintf("bench-%06d", i)
		s.instances = append(s.instances, benchInstance{id: id, partition: backend.PartitionOf(id, len(fences))})
	}
	return s
}

func (s *stepSource) unit(now time.Time) *backend.Commit {
	in := &s.instances[s.next]
	s.next = (s.next + 1) % len(s.instances)
	s.seq++
	id := fmt.Sprintf("%020d", s.seq)
	u := &backend.Commit{
		Fence:    &s.fences[in.partition],
		Instance: &backend.InstanceCondition{InstanceID: in.id, ExpectVersion: in.version},
		Now:      now,
		Writes: backend.Writes{
			History: &backend.HistoryAppend{InstanceID: in.id, ExecutionID: "e", Events: []backend.HistoryRecord{
				{Seq: in.version + 1, Data: s.payload}, {Seq: in.version + 2, Data: s.payload},
			}},
			InstanceUpsert: &backend.Instance{
				InstanceID: in.id, Name: "Orchestration", ExecutionID: "e", Status: backend.StatusRunning,
				Input: s.payload[:50], CreatedAt: t0, UpdatedAt: now, Version: in.version + 2,
			},
			ControlSend: []*backend.NewMessage{{ID: id, Partition: in.partition, InstanceID: in.id, Data: s.payload[:100]}},
		},
	}
	if in.pending != "" {
		u.Writes.ControlDelete = []string{in.pending}
	}
	in.version += 2
	in.pending = id
	return u
}

func BenchmarkCommitBatch(b *testing.B) {
	for _, units := range []int{1, 64} {
		b.Run(fmt.Sprintf("units=%d", units), func(b *testing.B) {
			be, fences := benchHub(b)
			src := newStepSource(fences, 4096)
			batch := make([]*backend.Commit, units)
			ctx := b.Context()
			now := t0
			for b.Loop() {
				now = now.Add(time.Millisecond)
				for i := range batch {
					batch[i] = src.unit(now)
				}
				errs, err := be.CommitBatch(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N*units)/b.Elapsed().Seconds(), "steps/s")
		})
	}
}

func BenchmarkWorkItemReceive(b *testing.B) {
	for _, max := range []int{1, 32} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) {
			be, _ := benchHub(b)
			ctx := b.Context()
			// A backlog of 1000 items. Every receive moves time past the
			// previous locks, so each one locks the oldest max items again:
			// the queue stays in a steady state.
			var items []*backend.NewMessage
			for i := range 1000 {
				items = append(items, &backend.NewMessage{ID: fmt.Sprintf("%020d", i), InstanceID: fmt.Sprintf("i%d", i), Data: make([]byte, 200)})
			}
			mustCommit(b, be, &backend.Commit{Now: t0, Writes: backend.Writes{WorkSend: items}})
			now := t0
			for b.Loop() {
				now = now.Add(2 * time.Second)
				got, err := be.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Owner: "w", Max: max, LockDuration: time.Second, Now: now})
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != max {
					b.Fatalf("received %d work items, want %d", len(got), max)
				}
			}
			b.ReportMetric(float64(b.N*max)/b.Elapsed().Seconds(), "items/s")
		})
	}
	b.Run("empty", func(b *testing.B) {
		be, _ := benchHub(b)
		ctx := b.Context()
		for b.Loop() {
			got, err := be.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Owner: "w", Max: 32, LockDuration: time.Minute, Now: t0})
			if err != nil || len(got) != 0 {
				b.Fatal(err, got)
			}
		}
	})
}

func BenchmarkControlReceive(b *testing.B) {
	be, fences := benchHub(b)
	ctx := b.Context()
	var msgs []*backend.NewMessage
	for i := range 1000 {
		msgs = append(msgs, &backend.NewMessage{ID: fmt.Sprintf("%020d", i), InstanceID: fmt.Sprintf("i%d", i), Data: make([]byte, 200)})
	}
	mustCommit(b, be, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: msgs}})
	now := t0
	for b.Loop() {
		now = now.Add(2 * time.Second)
		res, err := be.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: fences[0], Max: 32, LockDuration: time.Second, Now: now})
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Messages) != 32 {
			b.Fatalf("received %d messages, want 32", len(res.Messages))
		}
	}
	b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "msgs/s")
}
