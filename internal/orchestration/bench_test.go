package orchestration

import (
	"fmt"
	"testing"

	"github.com/taskhub/taskhub/internal/history"
)

// BenchmarkStepCachedCompletion is the steady state of a cached instance:
// one activity result in, the next activity out (a goroutine hand-off there
// and back, no replay).
func BenchmarkStepCachedCompletion(b *testing.B) {
	in := NewInstance("bench", lookup, Options{})
	defer in.Close()
	start := &history.Message{InstanceID: "bench", Event: &history.Event{Type: history.ExecutionStarted, Name: "Loop", ExecutionID: "e"}}
	if _, err := in.Step(nil, []*history.Message{start}, t0); err != nil {
		b.Fatal(err)
	}
	msgs := make([]*history.Message, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msgs[0] = &history.Message{InstanceID: "bench", ExecutionID: "e", Event: &history.Event{Type: history.TaskCompleted, TaskID: int64(i), Input: []byte(`"done"`)}}
		res, err := in.Step(nil, msgs, t0)
		if err != nil || len(res.NewEvents) != 3 {
			b.Fatalf("step %d: %v, %d events", i, err, len(res.NewEvents))
		}
	}
}

// history1000 is an unfinished Sequential history of exactly 1,000 events:
// 333 activities done one after the other, the 334th scheduled.
func history1000(tb testing.TB) []*history.Event {
	h := newHarness(tb, "bench", lookup)
	h.noFresh = true
	// The event makes the first step 4 events: 4 + 332×3 = 1000.
	h.step(h.startMsg("Sequential", js(100000), "e"), h.raise("noise", js(1)))
	for len(h.hist) < 1000 {
		h.step(h.answers(activities)...)
	}
	if len(h.hist) != 1000 {
		tb.Fatalf("history has %d events", len(h.hist))
	}
	return h.hist
}

// BenchmarkReplay1000Events is a cache miss: a fresh Instance replays a
// 1,000-event history through the code (333 activity round trips).
func BenchmarkReplay1000Events(b *testing.B) {
	past := history1000(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := NewInstance("bench", lookup, Options{})
		res, err := in.Step(past, nil, t0)
		if err != nil || res.Replayed != 1000 || len(res.NewEvents) != 0 {
			b.Fatalf("%v replayed %d, %d new events", err, res.Replayed, len(res.NewEvents))
		}
		in.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/event")
}

// BenchmarkFanIn is a fan-out of N activities and the fan-in of all N
// results in one step; ns/task staying flat as N grows shows the O(N) cost.
func BenchmarkFanIn(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint("N=", n), func(b *testing.B) {
			start := &history.Message{InstanceID: "fan", Event: &history.Event{Type: history.ExecutionStarted, Name: "FanOut", ExecutionID: "e", Input: js(n)}}
			results := make([]*history.Message, n)
			for i := range results {
				results[i] = &history.Message{InstanceID: "fan", ExecutionID: "e", Event: &history.Event{Type: history.TaskCompleted, TaskID: int64(i), Input: js(i * i)}}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in := NewInstance("fan", lookup, Options{})
				if _, err := in.Step(nil, []*history.Message{start}, t0); err != nil {
					b.Fatal(err)
				}
				res, err := in.Step(nil, results, t0)
				if err != nil || res.Status != StatusCompleted {
					b.Fatalf("%v status %s", err, res.Status)
				}
				in.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/task")
		})
	}
}
