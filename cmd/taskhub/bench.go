package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/postgres"
	"github.com/taskhub/taskhub/backend/sqlite"
	"github.com/taskhub/taskhub/samples"
)

// The bench command measures the engine on one scenario at a time, each on a
// fresh worker with its own no-op functions. Every rate and latency it
// reports comes from the engine's own timestamps — the instance rows'
// CreatedAt / LastUpdatedAt / CompletedAt and the history events' times —
// never from the client's clock around a wait, so the client's wake-up and
// polling are not part of the figures. (Two exceptions are labelled as such:
// the client-observed latencies of hello and events, shown next to the
// engine's for comparison.)
//
// What the engine timestamps mean:
//   - Instance CreatedAt: the client's clock when it scheduled the instance,
//     before the schedule commit.
//   - LastUpdatedAt / CompletedAt: the worker's clock when it built the row of
//     the step, just before that step's commit (so the last fsync is not in).
//   - TaskScheduled / OrchestratorStarted: the step's start time.
//   - TaskCompleted: the worker's clock when the activity returned, before
//     its completion commit.
//   - EventRaised: the client's clock when it raised the event, before the
//     raise commit.

const (
	benchNoop = "BenchNoop"
	benchWarm = "BenchWarm"
	// benchEvent is the event name the events and idle scenarios wait for.
	benchEvent = "go"
)

// benchScenario is one workload of the bench command.
type benchScenario struct {
	name     string
	defaultN int
	nMeans   string // what --n counts, for the help text
	// main is the key of the figure --repeat reports min/median/max of.
	main     string
	register func(reg *taskhub.Registry, prog *benchProgress) error
	run      func(ctx context.Context, r *benchRun) ([]benchFigure, error)
}

// benchFigure is one measured value.
type benchFigure struct {
	Key   string // JSON key
	Label string // table label
	Unit  string
	Value float64
}

func benchScenarios() []*benchScenario {
	return []*benchScenario{
		{name: "chain", defaultN: 1000, nMeans: "activities in sequence", main: "activities_per_s",
			register: func(reg *taskhub.Registry, _ *benchProgress) error {
				return taskhub.RegisterOrchestrator(reg, "BenchChain", benchChainOrchestrator)
			},
			run: runBenchChain},
		{name: "fanout", defaultN: 5000, nMeans: "parallel activities", main: "activities_per_s",
			register: func(reg *taskhub.Registry, _ *benchProgress) error {
				return taskhub.RegisterOrchestrator(reg, "BenchFanOut", benchFanOutOrchestrator)
			},
			run: runBenchFanOut},
		{name: "many", defaultN: 1000, nMeans: "orchestrations started at once", main: "orchestrations_per_s",
			register: func(reg *taskhub.Registry, _ *benchProgress) error {
				return taskhub.RegisterOrchestrator(reg, "BenchOne", benchOneOrchestrator)
			},
			run: runBenchMany},
		{name: "hello", defaultN: 200, nMeans: "runs, one at a time", main: "p50_ms",
			register: func(reg *taskhub.Registry, _ *benchProgress) error {
				return taskhub.RegisterOrchestrator(reg, "BenchHello", benchOneOrchestrator)
			},
			run: runBenchHello},
		{name: "events", defaultN: 1000, nMeans: "external events (burst, then one at a time)", main: "burst_events_per_s",
			register: func(reg *taskhub.Registry, _ *benchProgress) error {
				return errors.Join(
					taskhub.RegisterOrchestrator(reg, "BenchEventsBurst", benchEventsBurstOrchestrator),
					taskhub.RegisterOrchestrator(reg, "BenchEventsPingPong", benchEventsPingPongOrchestrator))
			},
			run: runBenchEvents},
		{name: "idle", defaultN: 100000, nMeans: "orchestrations waiting on an event", main: "rss_mib",
			register: func(reg *taskhub.Registry, prog *benchProgress) error {
				return taskhub.RegisterOrchestrator(reg, "BenchIdle", benchIdleOrchestrator(prog.counter("started")))
			},
			run: runBenchIdle},
		{name: "entity", defaultN: 100000, nMeans: "signals to one entity (then n/100 calls, at most 1000)", main: "signals_per_s",
			register: func(reg *taskhub.Registry, _ *benchProgress) error {
				return errors.Join(
					taskhub.RegisterEntity(reg, benchCounter, samples.Counter),
					taskhub.RegisterOrchestrator(reg, "BenchEntityCalls", benchEntityCallsOrchestrator))
			},
			run: runBenchEntity},
	}
}

func scenarioNames() []string {
	var names []string
	for _, s := range benchScenarios() {
		names = append(names, s.name)
	}
	return names
}

func findScenario(name string) (*benchScenario, error) {
	for _, s := range benchScenarios() {
		if s.name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("--scenario %q: unknown scenario; choose one of %s", name, strings.Join(scenarioNames(), ", "))
}

// benchOptions are the bench command's flags.
type benchOptions struct {
	scenario          string
	n                 int
	partitions        int
	maxActivities     int
	maxOrchestrations int
	repeat            int
	concurrency       int
	wakes             int
	jsonOut           bool
	progress          bool
	timeout           time.Duration
	cpuProfile        string
	tracePath         string
	synchronous       string
	syncSet           bool
	backendPath       string // "" : a fresh temporary file per run
	hub               string
}

func benchCommand() *cobra.Command {
	var o benchOptions
	var help strings.Builder
	for _, s := range benchScenarios() {
		fmt.Fprintf(&help, "  %-7s --n = %s (default %d)\n", s.name, s.nMeans, s.defaultN)
	}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the engine on one scenario (chain, fanout, many, hello, events, idle, entity)",
		Long: `bench runs one scenario on a fresh worker with its own no-op activities and
reports its figures, peak RSS and CPU time. Rates and latencies come from the
engine's timestamps (instance created/updated/completed times and history
event times), not from the client's clock around its waits.

Scenarios:
` + help.String() + `
The entity scenario's signal rate starts at the client's clock before the
first signal (same process) and ends at the entity's last batch commit.

idle takes --n 1000000 for the issue's one million waiting orchestrations.

By default each run uses a fresh temporary SQLite file, deleted afterwards;
--backend PATH runs on that file instead (and keeps it), and --backend
postgres://... on that PostgreSQL database (TASKHUB_POSTGRES_URL is not used:
bench runs on a temporary SQLite file unless told otherwise).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("backend") {
				o.backendPath, _ = cmd.Flags().GetString("backend")
			}
			o.hub, _ = cmd.Flags().GetString("hub")
			o.syncSet = cmd.Flags().Changed("sync")
			return runBench(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.scenario, "scenario", "chain", "scenario: "+strings.Join(scenarioNames(), ", "))
	f.IntVar(&o.n, "n", 0, "scenario size (0: the scenario's default, see above)")
	f.IntVar(&o.partitions, "partitions", taskhub.PartitionCountDefault, "control-queue partitions of the hub (1-16)")
	f.IntVar(&o.maxActivities, "max-activities", 0, "MaxConcurrentActivityFunctions (0: the default, 10 x cores)")
	f.IntVar(&o.maxOrchestrations, "max-orchestrations", 0, "MaxConcurrentOrchestratorFunctions (0: the default, 10 x cores)")
	f.IntVar(&o.repeat, "repeat", 1, "run the scenario this many times (each on a fresh worker) and report min/median/max of its main figure")
	f.IntVar(&o.concurrency, "concurrency", 64, "client goroutines that start instances or raise events at once (many, events burst, idle)")
	f.IntVar(&o.wakes, "wakes", 20, "idle: instances woken one at a time, for the wake latency")
	f.BoolVar(&o.jsonOut, "json", false, "print one JSON object instead of the table")
	f.BoolVar(&o.progress, "progress", false, "show the live progress line on stderr even when it is not a terminal")
	f.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up (with what was still pending) after this long")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the runs to this file (go tool pprof)")
	f.StringVar(&o.tracePath, "trace", "", "write a runtime execution trace of the runs to this file (go tool trace; -pprof=sync shows where time is spent waiting)")
	f.StringVar(&o.synchronous, "sync", sqlite.SynchronousDefault, "SQLite synchronous setting: FULL (default, durable), NORMAL, OFF (to see what the fsync costs)")
	return cmd
}

// benchParams is the configuration a report echoes.
type benchParams struct {
	N                 int    `json:"n"`
	Partitions        int    `json:"partitions"`
	MaxActivities     int    `json:"max_activities"`
	MaxOrchestrations int    `json:"max_orchestrations"`
	Repeat            int    `json:"repeat"`
	Concurrency       int    `json:"concurrency"`
	Wakes             int    `json:"wakes,omitempty"`
	Backend           string `json:"backend"`        // "temp", a file, or a URL without its password
	Synchronous       string `json:"sync,omitempty"` // SQLite only
}

// benchSummary is min/median/max of the main figure over the runs.
type benchSummary struct {
	Figure string  `json:"figure"`
	Unit   string  `json:"unit"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// benchReport is the --json output.
type benchReport struct {
	Scenario   string               `json:"scenario"`
	Parameters benchParams          `json:"parameters"`
	Main       benchSummary         `json:"main"`
	Figures    map[string]float64   `json:"figures"` // median over the runs
	Units      map[string]string    `json:"units"`
	Runs       []map[string]float64 `json:"runs"`
	PeakRSS    int64                `json:"peak_rss_bytes"`
	CPUUser    float64              `json:"cpu_user_s"`
	CPUSys     float64              `json:"cpu_sys_s"`
	GoVersion  string               `json:"go_version"`
	GOMAXPROCS int                  `json:"gomaxprocs"`
	NumCPU     int                  `json:"num_cpu"`
	OS         string               `json:"os"`
	Arch       string               `json:"arch"`

	order []benchFigure // figure order and labels for the table
}

func runBench(ctx context.Context, o benchOptions, stdout, stderr io.Writer) error {
	sc, err := findScenario(o.scenario)
	if err != nil {
		return err
	}
	if o.n == 0 {
		o.n = sc.defaultN
	}
	switch {
	case o.n < 1:
		return fmt.Errorf("--n is %d; it must be at least 1", o.n)
	case o.repeat < 1:
		return fmt.Errorf("--repeat is %d; it must be at least 1", o.repeat)
	case o.concurrency < 1:
		return fmt.Errorf("--concurrency is %d; it must be at least 1", o.concurrency)
	case sc.name == "idle" && (o.wakes < 1 || o.wakes > o.n):
		return fmt.Errorf("--wakes is %d; it must be between 1 and --n (%d)", o.wakes, o.n)
	case o.timeout <= 0:
		return fmt.Errorf("--timeout is %s; it must be positive", o.timeout)
	}
	params := benchParams{
		N: o.n, Partitions: o.partitions, MaxActivities: o.maxActivities, MaxOrchestrations: o.maxOrchestrations,
		Repeat: o.repeat, Concurrency: o.concurrency, Backend: o.backendPath, Synchronous: strings.ToUpper(o.synchronous),
	}
	if isPostgresURL(o.backendPath) {
		if o.syncSet {
			return errors.New("--sync is a SQLite setting; it does not apply to a PostgreSQL --backend")
		}
		params.Synchronous = ""
		if u, err := url.Parse(o.backendPath); err == nil {
			params.Backend = u.Redacted()
		} else {
			params.Backend = "postgres://(unparsable URL)"
		}
	}
	if params.MaxActivities == 0 {
		params.MaxActivities = taskhub.ConcurrencyDefault()
	}
	if params.MaxOrchestrations == 0 {
		params.MaxOrchestrations = taskhub.ConcurrencyDefault()
	}
	if params.Backend == "" {
		params.Backend = "temp"
	}
	if sc.name == "idle" {
		params.Wakes = o.wakes
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	prog := &benchProgress{scenario: sc.name, start: time.Now()}
	if terminal := isTerminal(stderr); terminal || o.progress {
		stop := prog.show(stderr, terminal)
		defer stop()
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	if o.tracePath != "" {
		f, err := os.Create(o.tracePath)
		if err != nil {
			return fmt.Errorf("--trace: %w", err)
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			return fmt.Errorf("--trace: %w", err)
		}
		defer func() {
			trace.Stop()
			f.Close()
		}()
	}

	var runs [][]benchFigure
	for i := range o.repeat {
		prog.setRun(i+1, o.repeat)
		figs, err := benchOnce(ctx, sc, o, prog, stderr)
		if err != nil {
			if o.repeat > 1 {
				return fmt.Errorf("bench %s, run %d of %d: %w", sc.name, i+1, o.repeat, err)
			}
			return fmt.Errorf("bench %s: %w", sc.name, err)
		}
		runs = append(runs, figs)
	}
	prog.finish()

	rep := summarize(sc, params, runs)
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printBenchTable(stdout, rep)
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// benchRun is one run of a scenario: a fresh worker and its client.
type benchRun struct {
	opts   benchOptions
	client *taskhub.Client
	prog   *benchProgress
	prefix string // instance-ID prefix, unique per run
	rng    *mrand.Rand
}

func (r *benchRun) id(kind string, i int) string { return r.prefix + kind + "-" + strconv.Itoa(i) }

// benchOnce runs the scenario once on a fresh worker (and, unless --backend
// is given, a fresh temporary hub file).
func benchOnce(ctx context.Context, sc *benchScenario, o benchOptions, prog *benchProgress, stderr io.Writer) (figs []benchFigure, err error) {
	path := o.backendPath
	if path == "" {
		dir, err := os.MkdirTemp("", "taskhub-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "bench.db")
	}
	be, err := openBenchBackend(ctx, path, o)
	if err != nil {
		return nil, err
	}
	defer be.Close()

	prog.newWorker()
	acts := prog.counter("activities")
	reg := taskhub.NewRegistry()
	if err := errors.Join(
		taskhub.RegisterActivity(reg, benchNoop, func(taskhub.ActivityContext, json.RawMessage) (json.RawMessage, error) {
			acts.Add(1)
			return nil, nil
		}),
		taskhub.RegisterOrchestrator(reg, benchWarm, benchOneOrchestrator),
		sc.register(reg, prog),
	); err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{
		PartitionCount:                     o.partitions,
		MaxConcurrentActivityFunctions:     o.maxActivities,
		MaxConcurrentOrchestratorFunctions: o.maxOrchestrations,
		Logger:                             logger,
	})
	if err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		prog.phase("stopping the worker", 0)
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := w.Stop(stopCtx); serr != nil && err == nil {
			err = fmt.Errorf("stop worker: %w", serr)
		}
	}()

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	r := &benchRun{opts: o, client: w.Client(), prog: prog, prefix: "bench-" + hex.EncodeToString(rnd[:]) + "-",
		rng: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 0))}
	if err := r.warmUp(ctx); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	figs, err = sc.run(ctx, r)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (stopped while %s)", err, prog.describe())
	}
	return figs, err
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// openBenchBackend opens a PostgreSQL hub for a postgres:// URL, else the
// SQLite file at spec.
func openBenchBackend(ctx context.Context, spec string, o benchOptions) (backend.Backend, error) {
	if isPostgresURL(spec) {
		be, err := postgres.Open(ctx, spec, postgres.Options{Hub: o.hub})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL hub %q: %w", o.hub, err)
		}
		return be, nil
	}
	be, err := sqlite.Open(spec, sqlite.Options{Hub: o.hub, Synchronous: o.synchronous})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", spec, err)
	}
	return be, nil
}

// warmUp runs one single-activity orchestration on every partition, so
// every listener is running, and the activity path and the SQLite caches
// are warm, before anything is measured.
func (r *benchRun) warmUp(ctx context.Context) error {
	r.prog.phase("warm-up", r.opts.partitions)
	var ids []string
	seen := map[int]bool{}
	for i := 0; len(seen) < r.opts.partitions && i < 100*r.opts.partitions; i++ {
		id := r.id("warm", i)
		if p := backend.PartitionOf(id, r.opts.partitions); !seen[p] {
			seen[p] = true
			ids = append(ids, id)
		}
	}
	return forEach(ctx, len(ids), len(ids), func(ctx context.Context, i int) error {
		if _, err := r.client.ScheduleNewOrchestration(ctx, benchWarm, nil, taskhub.WithStartInstanceID(ids[i])); err != nil {
			return err
		}
		if _, err := r.completed(ctx, ids[i]); err != nil {
			return err
		}
		r.prog.add(1)
		return nil
	})
}

// completed waits for an instance to finish and requires that it completed.
func (r *benchRun) completed(ctx context.Context, id string) (*taskhub.InstanceStatus, error) {
	st, err := r.client.WaitForInstanceCompletion(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.RuntimeStatus != taskhub.StatusCompleted {
		msg := ""
		if st.Failure != nil {
			msg = ": " + st.Failure.Message
		}
		return nil, fmt.Errorf("instance %s ended %s%s", id, st.RuntimeStatus, msg)
	}
	return st, nil
}

// ---- Orchestrators ----

func benchOneOrchestrator(ctx *taskhub.OrchestrationContext, _ any) (int, error) {
	return 1, ctx.CallActivity(benchNoop, nil).Await(nil)
}

func benchChainOrchestrator(ctx *taskhub.OrchestrationContext, n int) (int, error) {
	for i := range n {
		if err := ctx.CallActivity(benchNoop, nil).Await(nil); err != nil {
			return i, err
		}
	}
	return n, nil
}

func benchFanOutOrchestrator(ctx *taskhub.OrchestrationContext, n int) (int, error) {
	tasks := make([]taskhub.Task, n)
	for i := range tasks {
		tasks[i] = ctx.CallActivity(benchNoop, nil)
	}
	return n, ctx.WhenAll(tasks...).Await(nil)
}

func benchEventsBurstOrchestrator(ctx *taskhub.OrchestrationContext, k int) (int, error) {
	for i := range k {
		if err := ctx.WaitForExternalEvent(benchEvent, 0).Await(nil); err != nil {
			return i, err
		}
	}
	return k, nil
}

// benchEventsPingPongOrchestrator acknowledges event i by setting its custom
// status to i: the step that consumes the event commits the status.
func benchEventsPingPongOrchestrator(ctx *taskhub.OrchestrationContext, k int) (int, error) {
	for i := 1; i <= k; i++ {
		if err := ctx.WaitForExternalEvent(benchEvent, 0).Await(nil); err != nil {
			return i - 1, err
		}
		if err := ctx.SetCustomStatus(i); err != nil {
			return i - 1, err
		}
	}
	return k, nil
}

// benchIdleOrchestrator waits for one event. started counts first
// executions, for the progress line only (a replay does not count).
func benchIdleOrchestrator(started *atomic.Int64) func(*taskhub.OrchestrationContext, any) (int, error) {
	return func(ctx *taskhub.OrchestrationContext, _ any) (int, error) {
		if !ctx.IsReplaying() {
			started.Add(1)
		}
		return 1, ctx.WaitForExternalEvent(benchEvent, 0).Await(nil)
	}
}

// ---- Scenarios ----

// runActivities runs one orchestration that calls n activities, and returns
// its final status and history once it has checked that all n completed.
func (r *benchRun) runActivities(ctx context.Context, orchestrator, kind string, n int) (*taskhub.InstanceStatus, []*taskhub.HistoryEvent, error) {
	id := r.id(kind, 0)
	if _, err := r.client.ScheduleNewOrchestration(ctx, orchestrator, n, taskhub.WithStartInstanceID(id)); err != nil {
		return nil, nil, err
	}
	st, err := r.completed(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	h, err := r.client.GetHistory(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if run, _ := activitySpans(h); len(run) != n {
		return nil, nil, fmt.Errorf("history of %s holds %d completed activities, want %d", id, len(run), n)
	}
	return st, h, nil
}

func runBenchChain(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	n := r.opts.n
	r.prog.phase("activities in sequence", n)
	r.prog.countFrom("activities")
	st, h, err := r.runActivities(ctx, "BenchChain", "chain", n)
	if err != nil {
		return nil, err
	}
	run, gap := activitySpans(h)
	elapsed := positive(st.CompletedAt.Sub(st.CreatedAt))
	return []benchFigure{
		{"activities_per_s", "activities/s", "1/s", float64(n) / elapsed.Seconds()},
		{"ms_per_step", "per step (activity + orchestrator step)", "ms", ms(elapsed) / float64(n)},
		{"activity_p50_ms", "activity scheduled -> completed, p50", "ms", ms(percentile(run, 50))},
		{"step_gap_p50_ms", "activity completed -> next scheduled, p50", "ms", ms(percentile(gap, 50))},
		{"elapsed_s", "created -> completed", "s", elapsed.Seconds()},
	}, nil
}

func runBenchFanOut(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	n := r.opts.n
	r.prog.phase("parallel activities", n)
	r.prog.countFrom("activities")
	st, h, err := r.runActivities(ctx, "BenchFanOut", "fanout", n)
	if err != nil {
		return nil, err
	}
	run, _ := activitySpans(h)
	steps := 0
	var firstScheduled, lastCompleted time.Time
	for _, e := range h {
		switch e.Type {
		case "OrchestratorStarted":
			steps++
		case "TaskScheduled":
			if firstScheduled.IsZero() {
				firstScheduled = e.Timestamp
			}
		case "TaskCompleted":
			lastCompleted = later(lastCompleted, e.Timestamp)
		}
	}
	elapsed := positive(st.CompletedAt.Sub(st.CreatedAt))
	return []benchFigure{
		{"activities_per_s", "activities/s", "1/s", float64(n) / elapsed.Seconds()},
		{"activities_only_per_s", "activities/s, first scheduled -> last completed", "1/s", float64(n) / positive(lastCompleted.Sub(firstScheduled)).Seconds()},
		{"activity_p50_ms", "activity scheduled -> completed, p50", "ms", ms(percentile(run, 50))},
		{"completions_per_step", "completions per fan-in step (mean)", "1/step", float64(n) / float64(max(steps-1, 1))},
		{"elapsed_s", "created -> completed", "s", elapsed.Seconds()},
	}, nil
}

func runBenchMany(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	n := r.opts.n
	prefix := r.prefix + "many-"
	r.prog.phase("starting orchestrations", n)
	if err := forEach(ctx, n, r.opts.concurrency, func(ctx context.Context, i int) error {
		_, err := r.client.ScheduleNewOrchestration(ctx, "BenchOne", nil, taskhub.WithStartInstanceID(prefix+strconv.Itoa(i)))
		r.prog.add(1)
		return err
	}); err != nil {
		return nil, err
	}
	r.prog.phase("orchestrations completed", n)
	r.prog.countFrom("activities")
	if err := r.settle(ctx, prefix, taskhub.StatusPending, taskhub.StatusRunning); err != nil {
		return nil, err
	}
	r.prog.phase("reading the instances", n)
	var span timeSpan
	lat := make([]time.Duration, 0, n)
	if err := r.eachInstance(ctx, prefix, n, func(st *taskhub.InstanceStatus) error {
		if st.RuntimeStatus != taskhub.StatusCompleted {
			return fmt.Errorf("instance %s is %s, want Completed", st.InstanceID, st.RuntimeStatus)
		}
		span.add(st.CreatedAt, st.CompletedAt)
		lat = append(lat, st.CompletedAt.Sub(st.CreatedAt))
		return nil
	}); err != nil {
		return nil, err
	}
	slices.Sort(lat)
	elapsed := positive(span.duration())
	return []benchFigure{
		{"orchestrations_per_s", "orchestrations/s (first created -> last completed)", "1/s", float64(n) / elapsed.Seconds()},
		{"latency_p50_ms", "created -> completed, p50", "ms", ms(positive(percentile(lat, 50)))},
		{"latency_p99_ms", "created -> completed, p99", "ms", ms(positive(percentile(lat, 99)))},
		{"elapsed_s", "first created -> last completed", "s", elapsed.Seconds()},
	}, nil
}

func runBenchHello(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	n := r.opts.n
	r.prog.phase("runs", n)
	lat := make([]time.Duration, n)
	client := make([]time.Duration, n)
	for i := range n {
		id := r.id("hello", i)
		t0 := time.Now()
		if _, err := r.client.ScheduleNewOrchestration(ctx, "BenchHello", nil, taskhub.WithStartInstanceID(id)); err != nil {
			return nil, err
		}
		st, err := r.completed(ctx, id)
		if err != nil {
			return nil, err
		}
		client[i] = time.Since(t0)
		lat[i] = positive(st.CompletedAt.Sub(st.CreatedAt))
		r.prog.add(1)
	}
	slices.Sort(lat)
	slices.Sort(client)
	return []benchFigure{
		{"p50_ms", "created -> completed, p50", "ms", ms(percentile(lat, 50))},
		{"p90_ms", "created -> completed, p90", "ms", ms(percentile(lat, 90))},
		{"p99_ms", "created -> completed, p99", "ms", ms(percentile(lat, 99))},
		{"max_ms", "created -> completed, max", "ms", ms(lat[len(lat)-1])},
		{"client_p50_ms", "client-observed schedule -> wait returns, p50", "ms", ms(percentile(client, 50))},
	}, nil
}

func runBenchEvents(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	k := r.opts.n

	// Burst: raise every event at once; the orchestrator consumes K.
	burstID := r.id("burst", 0)
	if _, err := r.client.ScheduleNewOrchestration(ctx, "BenchEventsBurst", k, taskhub.WithStartInstanceID(burstID)); err != nil {
		return nil, err
	}
	if err := r.running(ctx, burstID); err != nil {
		return nil, err
	}
	r.prog.phase("burst: events raised", k)
	if err := forEach(ctx, k, r.opts.concurrency, func(ctx context.Context, i int) error {
		err := r.client.RaiseEvent(ctx, burstID, benchEvent, i)
		r.prog.add(1)
		return err
	}); err != nil {
		return nil, err
	}
	r.prog.phase("burst: waiting for the orchestrator to consume them", 0)
	st, err := r.completed(ctx, burstID)
	if err != nil {
		return nil, err
	}
	h, err := r.client.GetHistory(ctx, burstID)
	if err != nil {
		return nil, err
	}
	raised := eventTimes(h)
	if len(raised) != k {
		return nil, fmt.Errorf("history of %s holds %d raised events, want %d", burstID, len(raised), k)
	}
	burst := positive(st.CompletedAt.Sub(slices.MinFunc(raised, time.Time.Compare)))

	// One at a time: raise event i, wait until the step that consumed it
	// has committed custom status i, raise the next.
	pingID := r.id("pingpong", 0)
	if _, err := r.client.ScheduleNewOrchestration(ctx, "BenchEventsPingPong", k, taskhub.WithStartInstanceID(pingID)); err != nil {
		return nil, err
	}
	if err := r.running(ctx, pingID); err != nil {
		return nil, err
	}
	r.prog.phase("one at a time: round trips", k)
	acked := make([]time.Time, k)
	client := make([]time.Duration, k)
	for i := 1; i <= k; i++ {
		want := strconv.Itoa(i)
		t0 := time.Now()
		if err := r.client.RaiseEvent(ctx, pingID, benchEvent, i); err != nil {
			return nil, err
		}
		st, err := r.client.WaitForInstance(ctx, pingID, func(s *taskhub.InstanceStatus) bool {
			return string(s.CustomStatus) == want || s.Finished()
		})
		if err != nil {
			return nil, err
		}
		if string(st.CustomStatus) != want {
			return nil, fmt.Errorf("instance %s is %s with custom status %s, waiting for %s", pingID, st.RuntimeStatus, st.CustomStatus, want)
		}
		client[i-1] = time.Since(t0)
		acked[i-1] = st.LastUpdatedAt
		r.prog.add(1)
	}
	if _, err := r.completed(ctx, pingID); err != nil {
		return nil, err
	}
	h, err = r.client.GetHistory(ctx, pingID)
	if err != nil {
		return nil, err
	}
	raised = eventTimes(h)
	if len(raised) != k {
		return nil, fmt.Errorf("history of %s holds %d raised events, want %d", pingID, len(raised), k)
	}
	rt := make([]time.Duration, k)
	for i := range k {
		rt[i] = positive(acked[i].Sub(raised[i]))
	}
	total := positive(acked[k-1].Sub(raised[0]))
	slices.Sort(rt)
	slices.Sort(client)
	return []benchFigure{
		{"burst_events_per_s", "burst: events/s (first raised -> completed)", "1/s", float64(k) / burst.Seconds()},
		{"one_p50_ms", "one at a time: raised -> consumed and acked, p50", "ms", ms(percentile(rt, 50))},
		{"one_p99_ms", "one at a time: raised -> consumed and acked, p99", "ms", ms(percentile(rt, 99))},
		{"one_events_per_s", "one at a time: events/s", "1/s", float64(k) / total.Seconds()},
		{"one_client_p50_ms", "one at a time: client-observed raise -> ack seen, p50", "ms", ms(percentile(client, 50))},
	}, nil
}

// benchCounter is the entity of the entity scenario: the sample Counter
// ("add" adds its input to the state, "get" returns it).
const benchCounter = "BenchCounter"

// benchEntityCallsOrchestrator makes k calls to one counter, one at a time.
func benchEntityCallsOrchestrator(ctx *taskhub.OrchestrationContext, in struct {
	Key string
	K   int
}) (int, error) {
	id := taskhub.NewEntityID(benchCounter, in.Key)
	for range in.K {
		if err := ctx.CallEntity(id, "add", 1).Await(nil); err != nil {
			return 0, err
		}
	}
	return taskhub.Await[int](ctx.CallEntity(id, "get", nil))
}

// runBenchEntity signals one counter n times from concurrent client
// goroutines, then measures calls from an orchestration to another counter.
// The signal rate runs from the first signal sent (the client's clock, in
// this process) to the commit time of the batch that applied the last one
// (the entity row's LastModified); the counter's final value proves every
// signal was applied exactly once.
func runBenchEntity(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	n := r.opts.n
	id := taskhub.NewEntityID(benchCounter, r.prefix+"signals")
	r.prog.phase("signals sent", n)
	start := time.Now()
	if err := forEach(ctx, n, r.opts.concurrency, func(ctx context.Context, i int) error {
		err := r.client.SignalEntity(ctx, id, "add", 1)
		r.prog.add(1)
		return err
	}); err != nil {
		return nil, err
	}
	sent := time.Since(start)
	r.prog.phase("waiting for the entity to apply them", 0)
	var last *taskhub.EntityMetadata
	for {
		m, err := r.client.GetEntity(ctx, id, true)
		if err != nil && !errors.Is(err, taskhub.ErrEntityNotFound) {
			return nil, err
		}
		if m != nil {
			var v int
			if err := m.ReadState(&v); err != nil {
				return nil, err
			}
			if v > n {
				return nil, fmt.Errorf("counter %s is %d after %d signals: some were applied twice", id, v, n)
			}
			if v == n {
				last = m
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	total := positive(last.LastModified.Sub(start))

	k := min(max(n/100, 1), 1000)
	callsID := r.id("calls", 0)
	r.prog.phase("calls from an orchestration", k)
	if _, err := r.client.ScheduleNewOrchestration(ctx, "BenchEntityCalls", map[string]any{"Key": r.prefix + "calls", "K": k},
		taskhub.WithStartInstanceID(callsID)); err != nil {
		return nil, err
	}
	st, err := r.completed(ctx, callsID)
	if err != nil {
		return nil, err
	}
	var got int
	if err := st.ReadOutput(&got); err != nil {
		return nil, err
	}
	if got != k {
		return nil, fmt.Errorf("calls orchestration counted %d, want %d", got, k)
	}
	calls := positive(st.CompletedAt.Sub(st.CreatedAt))
	return []benchFigure{
		{"signals_per_s", "signals/s to one entity (first sent -> last applied)", "1/s", float64(n) / total.Seconds()},
		{"signals_sent_per_s", "signals/s committed by the client (client clock)", "1/s", float64(n) / positive(sent).Seconds()},
		{"calls_per_s", "calls/s from one orchestration, one at a time", "1/s", float64(k+1) / calls.Seconds()},
		{"call_ms", "call round trip, mean", "ms", ms(calls) / float64(k+1)},
	}, nil
}

func runBenchIdle(ctx context.Context, r *benchRun) ([]benchFigure, error) {
	n := r.opts.n
	prefix := r.prefix + "idle-"
	r.prog.phase("starting orchestrations", n)
	if err := forEach(ctx, n, r.opts.concurrency, func(ctx context.Context, i int) error {
		_, err := r.client.ScheduleNewOrchestration(ctx, "BenchIdle", nil, taskhub.WithStartInstanceID(prefix+strconv.Itoa(i)))
		r.prog.add(1)
		return err
	}); err != nil {
		return nil, err
	}
	// An instance is waiting once its first step has committed: it is
	// Running, and its row's LastUpdatedAt is that step's time.
	r.prog.phase("orchestrations waiting", n)
	r.prog.countFrom("started")
	if err := r.settle(ctx, prefix, taskhub.StatusPending); err != nil {
		return nil, err
	}
	rss := currentRSS()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)

	r.prog.phase("reading the instances", n)
	var span timeSpan
	if err := r.eachInstance(ctx, prefix, n, func(st *taskhub.InstanceStatus) error {
		if st.RuntimeStatus != taskhub.StatusRunning {
			return fmt.Errorf("instance %s is %s, want Running", st.InstanceID, st.RuntimeStatus)
		}
		span.add(st.CreatedAt, st.LastUpdatedAt)
		return nil
	}); err != nil {
		return nil, err
	}

	r.prog.phase("wakes", r.opts.wakes)
	wakes := make([]time.Duration, 0, r.opts.wakes)
	for _, i := range r.rng.Perm(n)[:r.opts.wakes] {
		id := prefix + strconv.Itoa(i)
		if err := r.client.RaiseEvent(ctx, id, benchEvent, nil); err != nil {
			return nil, err
		}
		st, err := r.completed(ctx, id)
		if err != nil {
			return nil, err
		}
		h, err := r.client.GetHistory(ctx, id)
		if err != nil {
			return nil, err
		}
		raised := eventTimes(h)
		if len(raised) != 1 {
			return nil, fmt.Errorf("history of %s holds %d raised events, want 1", id, len(raised))
		}
		wakes = append(wakes, positive(st.CompletedAt.Sub(raised[0])))
		r.prog.add(1)
	}
	slices.Sort(wakes)
	return []benchFigure{
		{"rss_mib", "RSS with every orchestration waiting", "MiB", float64(rss) / (1 << 20)},
		{"rss_per_instance_kib", "RSS per waiting orchestration", "KiB", float64(rss) / 1024 / float64(n)},
		{"go_heap_mib", "Go heap in use then", "MiB", float64(max(mem.HeapInuse, 1)) / (1 << 20)},
		{"wake_p50_ms", "wake one: raised -> completed, p50", "ms", ms(percentile(wakes, 50))},
		{"wake_max_ms", "wake one: raised -> completed, max", "ms", ms(wakes[len(wakes)-1])},
		{"started_per_s", "orchestrations started/s (first created -> last waiting)", "1/s", float64(n) / positive(span.duration()).Seconds()},
	}, nil
}

// settle returns once no instance whose ID starts with prefix is in one of
// statuses. It asks for the first such instance (the status index makes
// that cheap) and waits for it to change, woken by its commit; so the
// harness costs the engine a query per wait, not a read per instance.
func (r *benchRun) settle(ctx context.Context, prefix string, statuses ...taskhub.Status) error {
	for {
		page, err := r.client.QueryInstances(ctx, taskhub.InstanceQuery{
			Filter: taskhub.InstanceFilter{Statuses: statuses, InstanceIDPrefix: prefix}, PageSize: 1,
		})
		if err != nil {
			return err
		}
		if len(page.Instances) == 0 {
			return nil
		}
		if _, err := r.client.WaitForInstance(ctx, page.Instances[0].InstanceID, func(s *taskhub.InstanceStatus) bool {
			return !slices.Contains(statuses, s.RuntimeStatus)
		}); err != nil {
			return err
		}
	}
}

// eachInstance calls fn for every instance whose ID starts with prefix, and
// checks there are want of them.
func (r *benchRun) eachInstance(ctx context.Context, prefix string, want int, fn func(*taskhub.InstanceStatus) error) error {
	q := taskhub.InstanceQuery{Filter: taskhub.InstanceFilter{InstanceIDPrefix: prefix}, PageSize: 1000}
	seen := 0
	for {
		page, err := r.client.QueryInstances(ctx, q)
		if err != nil {
			return err
		}
		for _, st := range page.Instances {
			if err := fn(st); err != nil {
				return err
			}
		}
		seen += len(page.Instances)
		r.prog.add(len(page.Instances))
		if page.ContinuationToken == "" {
			break
		}
		q.ContinuationToken = page.ContinuationToken
	}
	if seen != want {
		return fmt.Errorf("%d instances with the prefix %s, want %d", seen, prefix, want)
	}
	return nil
}

// running waits until an instance's first step has committed.
func (r *benchRun) running(ctx context.Context, id string) error {
	st, err := r.client.WaitForInstanceStart(ctx, id)
	if err != nil {
		return err
	}
	if st.RuntimeStatus != taskhub.StatusRunning {
		return fmt.Errorf("instance %s is %s, want Running", id, st.RuntimeStatus)
	}
	return nil
}

// ---- Measurements from history ----

// activitySpans returns, for every completed activity, the time from its
// TaskScheduled to its TaskCompleted (the work-item round trip), and for each
// activity but the last, the time from its TaskCompleted to the next
// TaskScheduled (the completion's way back through the control queue and
// the orchestrator step).
func activitySpans(h []*taskhub.HistoryEvent) (run, gap []time.Duration) {
	scheduled := map[int64]time.Time{}
	var lastCompleted time.Time
	for _, e := range h {
		switch e.Type {
		case "TaskScheduled":
			scheduled[e.TaskID] = e.Timestamp
			if !lastCompleted.IsZero() {
				gap = append(gap, positive(e.Timestamp.Sub(lastCompleted)))
				lastCompleted = time.Time{}
			}
		case "TaskCompleted":
			if s, ok := scheduled[e.TaskID]; ok {
				run = append(run, positive(e.Timestamp.Sub(s)))
			}
			lastCompleted = e.Timestamp
		}
	}
	slices.Sort(run)
	slices.Sort(gap)
	return run, gap
}

// eventTimes returns the raise times of an instance's EventRaised events, in
// the order they were consumed.
func eventTimes(h []*taskhub.HistoryEvent) []time.Time {
	var out []time.Time
	for _, e := range h {
		if e.Type == "EventRaised" {
			out = append(out, e.Timestamp)
		}
	}
	return out
}

// timeSpan tracks the earliest start and latest end seen.
type timeSpan struct {
	mu         sync.Mutex
	first, end time.Time
}

func (s *timeSpan) add(start, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first.IsZero() || start.Before(s.first) {
		s.first = start
	}
	s.end = later(s.end, end)
}

func (s *timeSpan) duration() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end.Sub(s.first)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// positive keeps a duration at least 1 ns: figures divide by durations, and
// two timestamps of one fast step can be equal on a coarse clock.
func positive(d time.Duration) time.Duration { return max(d, time.Nanosecond) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

// forEach calls fn(i) for every i in [0, n) on up to workers goroutines and
// returns the first error; the others then see their ctx cancelled.
func forEach(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// ---- Progress ----

// benchProgress is the state the live progress line shows.
type benchProgress struct {
	scenario string
	start    time.Time

	mu         sync.Mutex
	run, runs  int
	label      string
	total      int
	phaseStart time.Time
	done       atomic.Int64
	// counters are the current worker's named counters (activities run,
	// orchestrations started); source, if set, is the one the phase shows,
	// from base.
	counters map[string]*atomic.Int64
	source   *atomic.Int64
	base     int64
	stop     chan struct{}
	stopped  chan struct{}
}

// newWorker starts fresh counters for a new worker.
func (p *benchProgress) newWorker() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counters, p.source = map[string]*atomic.Int64{}, nil
}

// counter returns the current worker's counter of that name.
func (p *benchProgress) counter(name string) *atomic.Int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counters == nil {
		p.counters = map[string]*atomic.Int64{}
	}
	c := p.counters[name]
	if c == nil {
		c = new(atomic.Int64)
		p.counters[name] = c
	}
	return c
}

func (p *benchProgress) setRun(run, runs int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.run, p.runs = run, runs
}

// phase starts a new phase of total steps (0: unknown).
func (p *benchProgress) phase(label string, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label, p.total, p.source, p.phaseStart = label, total, nil, time.Now()
	p.done.Store(0)
}

// countFrom makes the named counter's increase the phase's progress.
func (p *benchProgress) countFrom(name string) {
	c := p.counter(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.source, p.base = c, c.Load()
}

func (p *benchProgress) add(n int) { p.done.Add(int64(n)) }

func (p *benchProgress) describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	done := p.done.Load()
	if p.source != nil {
		done = p.source.Load() - p.base
	}
	s := p.scenario
	if p.runs > 1 {
		s += fmt.Sprintf(" run %d/%d", p.run, p.runs)
	}
	s += ": " + p.label
	if p.total > 0 {
		s += fmt.Sprintf(" %d/%d", done, p.total)
	} else if done > 0 {
		s += fmt.Sprintf(" %d", done)
	}
	if !p.phaseStart.IsZero() {
		s += fmt.Sprintf(", %.1fs in this phase", time.Since(p.phaseStart).Seconds())
	}
	return s
}

// show redraws the progress line on w, 4 times a second, until the returned
// function is called. On a terminal the line is redrawn in place; elsewhere
// (--progress into a file or pipe) one line is written per second.
func (p *benchProgress) show(w io.Writer, terminal bool) func() {
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	every := 250 * time.Millisecond
	if !terminal {
		every = time.Second
	}
	bw := bufio.NewWriter(w)
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		drawn := false
		for {
			select {
			case <-p.stop:
				if drawn && terminal {
					fmt.Fprint(bw, "\r\033[K")
					bw.Flush()
				}
				return
			case <-t.C:
			}
			line := fmt.Sprintf("[%5.1fs] %s", time.Since(p.start).Seconds(), p.describe())
			if terminal {
				fmt.Fprintf(bw, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(bw, line)
			}
			drawn = true
			bw.Flush()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(p.stop); <-p.stopped }) }
}

func (p *benchProgress) finish() { p.phase("done", 0) }

// ---- Process figures ----

// peakRSS returns the process's peak resident set size in bytes: VmHWM from
// /proc/self/status, or getrusage's maxrss where there is no /proc.
func peakRSS() int64 {
	if v := procStatus("VmHWM:"); v > 0 {
		return v
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		return int64(ru.Maxrss) * 1024 // kilobytes on Linux
	}
	return 0
}

// currentRSS returns the process's resident set size in bytes (VmRSS), or
// the peak where /proc is missing.
func currentRSS() int64 {
	if v := procStatus("VmRSS:"); v > 0 {
		return v
	}
	return peakRSS()
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// cpuTimes returns the process's user and system CPU time.
func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// ---- Report ----

func summarize(sc *benchScenario, params benchParams, runs [][]benchFigure) *benchReport {
	user, sys := cpuTimes()
	rep := &benchReport{
		Scenario: sc.name, Parameters: params,
		Figures: map[string]float64{}, Units: map[string]string{},
		PeakRSS: peakRSS(), CPUUser: user.Seconds(), CPUSys: sys.Seconds(),
		GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
		OS: runtime.GOOS, Arch: runtime.GOARCH,
		order: runs[0],
	}
	values := map[string][]float64{}
	for _, figs := range runs {
		run := map[string]float64{}
		for _, f := range figs {
			run[f.Key] = f.Value
			values[f.Key] = append(values[f.Key], f.Value)
		}
		rep.Runs = append(rep.Runs, run)
	}
	for _, f := range runs[0] {
		vs := slices.Clone(values[f.Key])
		slices.Sort(vs)
		rep.Figures[f.Key] = median(vs)
		rep.Units[f.Key] = f.Unit
		if f.Key == sc.main {
			rep.Main = benchSummary{Figure: f.Key, Unit: f.Unit, Min: vs[0], Median: median(vs), Max: vs[len(vs)-1]}
		}
	}
	return rep
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func formatFigure(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func printBenchTable(w io.Writer, rep *benchReport) {
	p := rep.Parameters
	fmt.Fprintf(w, "bench %s: n=%d partitions=%d max-activities=%d max-orchestrations=%d concurrency=%d",
		rep.Scenario, p.N, p.Partitions, p.MaxActivities, p.MaxOrchestrations, p.Concurrency)
	if p.Wakes > 0 {
		fmt.Fprintf(w, " wakes=%d", p.Wakes)
	}
	fmt.Fprintf(w, " repeat=%d backend=%s", p.Repeat, p.Backend)
	if p.Synchronous != "" {
		fmt.Fprintf(w, " sync=%s", p.Synchronous)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "figure\tvalue\tunit"
	if p.Repeat > 1 {
		head = "figure\tmedian\tunit\tmin / max"
	}
	fmt.Fprintln(tw, head)
	for _, f := range rep.order {
		line := fmt.Sprintf("%s\t%s\t%s", f.Label, formatFigure(rep.Figures[f.Key]), f.Unit)
		if p.Repeat > 1 && f.Key == rep.Main.Figure {
			line += fmt.Sprintf("\t%s / %s", formatFigure(rep.Main.Min), formatFigure(rep.Main.Max))
		}
		fmt.Fprintln(tw, line)
	}
	fmt.Fprintf(tw, "peak RSS\t%.1f\tMiB\n", float64(rep.PeakRSS)/(1<<20))
	fmt.Fprintf(tw, "CPU time user / sys\t%.2f / %.2f\ts\n", rep.CPUUser, rep.CPUSys)
	tw.Flush()
	fmt.Fprintf(w, "\n%s %s/%s, GOMAXPROCS=%d, %d CPUs", rep.GoVersion, rep.OS, rep.Arch, rep.GOMAXPROCS, rep.NumCPU)
	if p.Repeat > 1 {
		fmt.Fprintf(w, "; figures are medians of %d runs", p.Repeat)
	}
	fmt.Fprintln(w)
}
