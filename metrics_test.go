package taskhub

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := testOptions()
	opts.MetricsRegisterer = reg
	opts.MaxConcurrentActivityFunctions = 7
	opts.MaxConcurrentEntityFunctions = 5
	h := newHarness(t, func(r *Registry) { registerHello(r); registerEntityTests(r) }, opts)
	wantOutput(t, h.run("Hello", nil), `["Hello Tokyo!","Hello Seattle!","Hello London!"]`)
	wantOutput(t, h.run("CallCounter", map[string]any{"Key": "m", "Op": "add", "N": 2}), "2")

	families, err := reg.Gather()
	must(t, err)
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := byName[name]
		if f == nil {
			t.Fatalf("metric %s missing", name)
		}
	next:
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("metric %s has no series with %v", name, labels)
		return 0
	}
	if n := value("taskhub_orchestration_steps_total", nil); n < 4 {
		t.Fatalf("steps %v, want >= 4", n)
	}
	if n := value("taskhub_activity_seconds", map[string]string{"outcome": "completed"}); n != 3 {
		t.Fatalf("activities observed %v, want 3", n)
	}
	if n := value("taskhub_commit_batch_size", nil); n < 1 {
		t.Fatalf("no commit batches observed")
	}
	if n := value("taskhub_entity_operations_total", nil); n != 1 {
		t.Errorf("entity_operations_total = %v, want 1", n)
	}
	if n := value("taskhub_entity_batch_operations", nil); n != 1 {
		t.Errorf("entity_batch_operations has %v samples, want 1", n)
	}
	if n := value("taskhub_throttle_limit", map[string]string{"kind": "entity"}); n != 5 {
		t.Errorf("entity throttle limit = %v, want 5", n)
	}
	if n := value("taskhub_throttle_limit", map[string]string{"kind": "activity"}); n != 7 {
		t.Fatalf("activity throttle limit %v, want 7", n)
	}
	if got := len(byName["taskhub_partition_owned"].GetMetric()); got != PartitionCountDefault {
		t.Fatalf("owned partitions reported %d, want %d", got, PartitionCountDefault)
	}
	if got := len(byName["taskhub_queue_length"].GetMetric()); got != PartitionCountDefault+1 {
		t.Fatalf("queue series %d, want %d control + 1 work-item", got, PartitionCountDefault)
	}
	if n := value("taskhub_lease_events_total", map[string]string{"event": "acquired"}); n != PartitionCountDefault {
		t.Fatalf("lease acquisitions %v", n)
	}
	if n := value("taskhub_scrape_error", nil); n != 0 {
		t.Fatal("queue sampling failed")
	}
}
