package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// benchHub opens a fresh file with a hub of 4 partitions, all held by "w".
func benchHub(b *testing.B, opts Options) (*Backend, []backend.Fence) {
	b.Helper()
	be := openTemp(b, filepath.Join(b.TempDir(), "bench.db"), opts)
	ctx := b.Context()
	if _, err := be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 4, Now: t0}); err != nil {
		b.Fatal(err)
	}
	fences := make([]backend.Fence, 4)
	for p := range fences {
		got, err := be.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: p, Owner: "w", Duration: time.Hour, Now: t0})
		if err != nil {
			b.Fatal(err)
		}
		fences[p] = backend.Fence{Partition: p, Owner: "w", Epoch: got.Epoch}
	}
	return be, fences
}

// stepper builds orchestration-step-like commit units: each appends two
// history events to an instance, upserts its row under a version
// condition, sends one control message and deletes the one the previous
// step of that instance sent.
type stepper struct {
	fences    []backend.Fence
	instances []stepInstance
	next      int // instance of the next unit
	msgSeq    int
	event     []byte
}

type stepInstance struct {
	id        string
	partition int
	version   int64
	lastMsg   string
}

func newStepper(fences []backend.Fence, instances int) *stepper {
	s := &stepper{fences: fences, event: make([]byte, 200)}
	for i := range instances {
		id := fmt.Sprintf("instance-%06d", i)
		s.instances = append(s.instances, stepInstance{id: id, partition: backend.PartitionOf(id, len(fences))})
	}
	return s
}

func (s *stepper) unit(now time.Time) *backend.Commit {
	in := &s.instances[s.next]
	s.next = (s.next + 1) % len(s.instances)
	s.msgSeq++
	msgID := fmt.Sprintf("%020d", s.msgSeq)
	u := &backend.Commit{
		Fence:    &s.fences[in.partition],
		Instance: &backend.InstanceCondition{InstanceID: in.id, ExpectVersion: in.version},
		Now:      now,
		Writes: backend.Writes{
			History: &backend.HistoryAppend{InstanceID: in.id, ExecutionID: "e", Events: []backend.HistoryRecord{
				{Seq: in.version + 1, Data: s.event}, {Seq: in.version + 2, Data: s.event},
			}},
			InstanceUpsert: &backend.Instance{
				InstanceID: in.id, Name: "Orchestration", ExecutionID: "e", Status: backend.StatusRunning,
				Input: s.event[:50], CreatedAt: t0, UpdatedAt: now, Version: in.version + 2,
			},
			ControlSend: []*backend.NewMessage{{ID: msgID, Partition: in.partition, InstanceID: in.id, Data: s.event[:100]}},
		},
	}
	if in.lastMsg != "" {
		u.Writes.ControlDelete = []string{in.lastMsg}
	}
	in.version += 2
	in.lastMsg = msgID
	return u
}

func BenchmarkCommitBatch(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		for _, units := range []int{1, 64} {
			b.Run(fmt.Sprintf("sync=%s/units=%d", sync, units), func(b *testing.B) {
				be, fences := benchHub(b, Options{Synchronous: sync})
				s := newStepper(fences, 4096)
				batch := make([]*backend.Commit, units)
				ctx := b.Context()
				now := t0
				for b.Loop() {
					now = now.Add(time.Millisecond)
					for i := range batch {
						batch[i] = s.unit(now)
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
}

func BenchmarkControlReceive(b *testing.B) {
	for _, max := range []int{1, 32} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) {
			be, fences := benchHub(b, Options{})
			ctx := b.Context()
			// A backlog of 1000 messages in partition 0. Every receive moves
			// time past the previous locks, so each one locks the oldest max
			// messages again: the queue stays in a steady state.
			var msgs []*backend.NewMessage
			for i := range 1000 {
				msgs = append(msgs, &backend.NewMessage{ID: fmt.Sprintf("%020d", i), InstanceID: fmt.Sprintf("i%d", i), Data: make([]byte, 200)})
			}
			if errs, err := be.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{ControlSend: msgs}}}); err != nil || errs[0] != nil {
				b.Fatal(err, errs)
			}
			now := t0
			for b.Loop() {
				now = now.Add(2 * time.Second)
				res, err := be.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: fences[0], Max: max, LockDuration: time.Second, Now: now})
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Messages) != max {
					b.Fatalf("received %d messages, want %d", len(res.Messages), max)
				}
			}
			b.ReportMetric(float64(b.N*max)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	b.Run("empty", func(b *testing.B) {
		be, fences := benchHub(b, Options{})
		ctx := b.Context()
		for b.Loop() {
			res, err := be.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: fences[1], Max: 32, LockDuration: time.Minute, Now: t0})
			if err != nil || len(res.Messages) != 0 {
				b.Fatal(err, res)
			}
		}
	})
}
