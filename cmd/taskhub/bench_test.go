package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runBenchCLI runs `taskhub bench args...` and decodes its --json output.
func runBenchCLI(t *testing.T, args ...string) *benchReport {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := rootCommand()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(append([]string{"bench", "--json"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("bench %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var rep benchReport
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("bench %s: output is not one JSON report: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
	if dec.More() {
		t.Fatalf("bench %s: more than one JSON value on stdout", strings.Join(args, " "))
	}
	return &rep
}

// checkReport checks what every report must hold: the echoed parameters,
// strictly positive figures, and the process figures.
func checkReport(t *testing.T, rep *benchReport, scenario string, want benchParams, figures ...string) {
	t.Helper()
	if rep.Scenario != scenario {
		t.Errorf("scenario %q, want %q", rep.Scenario, scenario)
	}
	if rep.Parameters != want {
		t.Errorf("parameters %+v, want %+v", rep.Parameters, want)
	}
	if len(rep.Runs) != want.Repeat {
		t.Errorf("%d runs reported, want %d", len(rep.Runs), want.Repeat)
	}
	for _, k := range figures {
		if _, ok := rep.Figures[k]; !ok {
			t.Errorf("figure %s missing from %v", k, rep.Figures)
		}
	}
	for k, v := range rep.Figures {
		if !(v > 0) {
			t.Errorf("figure %s = %v, want > 0", k, v)
		}
		if rep.Units[k] == "" {
			t.Errorf("figure %s has no unit", k)
		}
	}
	for i, run := range rep.Runs {
		if len(run) != len(rep.Figures) {
			t.Errorf("run %d has %d figures, the summary %d", i, len(run), len(rep.Figures))
		}
		for k, v := range run {
			if !(v > 0) {
				t.Errorf("run %d: figure %s = %v, want > 0", i, k, v)
			}
		}
	}
	m := rep.Main
	if m.Figure == "" || rep.Figures[m.Figure] != m.Median {
		t.Errorf("main figure %+v does not match figures %v", m, rep.Figures)
	}
	if !(m.Min > 0 && m.Min <= m.Median && m.Median <= m.Max) {
		t.Errorf("main figure min/median/max out of order: %+v", m)
	}
	if rep.PeakRSS <= 0 {
		t.Errorf("peak RSS %d, want > 0", rep.PeakRSS)
	}
	// getrusage counts in scheduler ticks: a tiny run may show all its time
	// as user or as sys, but never none.
	if rep.CPUUser < 0 || rep.CPUSys < 0 || rep.CPUUser+rep.CPUSys <= 0 {
		t.Errorf("CPU time user %v sys %v", rep.CPUUser, rep.CPUSys)
	}
	if !strings.HasPrefix(rep.GoVersion, "go") || rep.GOMAXPROCS < 1 || rep.NumCPU < 1 {
		t.Errorf("runtime fields: go %q GOMAXPROCS %d CPUs %d", rep.GoVersion, rep.GOMAXPROCS, rep.NumCPU)
	}
}

func TestBenchScenarios(t *testing.T) {
	base := benchParams{Partitions: 2, MaxActivities: 4, MaxOrchestrations: 3, Repeat: 1, Concurrency: 5, Backend: "temp", Synchronous: "FULL"}
	common := []string{"--partitions", "2", "--max-activities", "4", "--max-orchestrations", "3", "--concurrency", "5"}
	cases := []struct {
		scenario string
		n        int
		extra    []string
		figures  []string
	}{
		{"chain", 12, nil, []string{"activities_per_s", "ms_per_step", "activity_p50_ms", "step_gap_p50_ms"}},
		{"fanout", 20, nil, []string{"activities_per_s", "completions_per_step"}},
		{"many", 15, nil, []string{"orchestrations_per_s", "latency_p50_ms", "latency_p99_ms"}},
		{"hello", 8, nil, []string{"p50_ms", "p90_ms", "p99_ms", "max_ms"}},
		{"events", 10, nil, []string{"burst_events_per_s", "one_p50_ms", "one_p99_ms", "one_events_per_s"}},
		{"idle", 20, []string{"--wakes", "4"}, []string{"rss_mib", "wake_p50_ms", "started_per_s"}},
		{"entity", 300, nil, []string{"signals_per_s", "signals_sent_per_s", "calls_per_s", "call_ms"}},
	}
	for _, c := range cases {
		t.Run(c.scenario, func(t *testing.T) {
			args := append([]string{"--scenario", c.scenario, "--n", strconv.Itoa(c.n)}, common...)
			rep := runBenchCLI(t, append(args, c.extra...)...)
			want := base
			want.N = c.n
			if c.scenario == "idle" {
				want.Wakes = 4
			}
			checkReport(t, rep, c.scenario, want, c.figures...)
		})
	}
}

func TestBenchRepeatAndBackend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.db")
	rep := runBenchCLI(t, "--backend", path, "--scenario", "chain", "--n", "5", "--repeat", "3")
	checkReport(t, rep, "chain", benchParams{N: 5, Partitions: 4, MaxActivities: rep.Parameters.MaxActivities,
		MaxOrchestrations: rep.Parameters.MaxOrchestrations, Repeat: 3, Concurrency: 64, Backend: path, Synchronous: "FULL"},
		"activities_per_s")
	if rep.Main.Figure != "activities_per_s" || rep.Main.Unit != "1/s" {
		t.Errorf("main figure %+v, want activities_per_s in 1/s", rep.Main)
	}
	// A --backend file is kept, and a second bench reuses its hub.
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the --backend file is gone: %v", err)
	}
	runBenchCLI(t, "--backend", path, "--scenario", "hello", "--n", "2")
}

func TestBenchTempBackendRemoved(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	runBenchCLI(t, "--scenario", "hello", "--n", "1")
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("bench left %s behind in the temporary directory", e.Name())
	}
}

func TestBenchTable(t *testing.T) {
	var stdout bytes.Buffer
	root := rootCommand()
	root.SetOut(&stdout)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"bench", "--scenario", "hello", "--n", "3", "--repeat", "2"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	for _, want := range []string{"bench hello: n=3", "created -> completed, p50", "min / max", "peak RSS", "CPU time user / sys", "medians of 2 runs"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchProgressLine(t *testing.T) {
	var buf bytes.Buffer
	p := &benchProgress{scenario: "chain", start: time.Now()}
	p.phase("activities in sequence", 10)
	p.add(3)
	if got, want := p.describe(), "chain: activities in sequence 3/10"; !strings.HasPrefix(got, want) {
		t.Errorf("describe() = %q, want prefix %q", got, want)
	}
	stop := p.show(&buf, false)
	stop()
	stop() // safe twice
}

func TestBenchBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--scenario", "nope"}, []string{"unknown scenario", "chain, fanout, many, hello, events, idle, entity"}},
		{[]string{"--scenario", "chain", "--n", "-1"}, []string{"--n is -1"}},
		{[]string{"--scenario", "chain", "--repeat", "0"}, []string{"--repeat is 0"}},
		{[]string{"--scenario", "idle", "--n", "5", "--wakes", "6"}, []string{"--wakes is 6"}},
		{[]string{"--scenario", "chain", "--backend", "postgres://nobody:secret@127.0.0.1:1/none", "--sync", "OFF"}, []string{"--sync is a SQLite setting"}},
		{[]string{"--scenario", "chain", "--backend", "postgres://nobody:secret@127.0.0.1:1/none", "--timeout", "5s"}, []string{"open PostgreSQL hub"}},
	}
	for _, c := range cases {
		root := rootCommand()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(append([]string{"bench"}, c.args...))
		err := root.Execute()
		if err == nil {
			t.Errorf("bench %v: no error", c.args)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("bench %v: error %q does not say %q", c.args, err, w)
			}
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {0, 1}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(d[:1], 99); got != 1 {
		t.Errorf("p99 of one value = %v", got)
	}
}
