package entity

import (
	"strconv"
	"testing"
)

// BenchmarkExecute runs one full batch (MaxBatchDefault increments of a
// counter from one orchestration) per iteration and reports the cost per
// operation. "json" is a counter behind a JSON codec, as the SDK will
// run user entities; "noop" isolates Execute's own bookkeeping.
func BenchmarkExecute(b *testing.B) {
	reqs := make([]Request, MaxBatchDefault)
	for i := range reqs {
		reqs[i] = signal(strconv.Itoa(i), orchA, uint64(i+1), "add", "1")
	}
	noop := func(c Call) (Outcome, error) { return Outcome{State: c.State}, nil }
	for _, bc := range []struct {
		name   string
		invoke Invoke
	}{{"json", counter}, {"noop", noop}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res := Execute("@counter@bench", Record{}, []byte("0"), reqs, bc.invoke, 0)
				if res.Applied != len(reqs) {
					b.Fatalf("applied %d", res.Applied)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(reqs)), "ns/operation")
		})
	}
}
