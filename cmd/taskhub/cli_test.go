package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
	"github.com/taskhub/taskhub/samples"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// cliRoot is the root command with the client and hub commands, whether
// or not main.go registers them yet.
func cliRoot() *cobra.Command {
	root := rootCommand()
	have := map[string]bool{}
	for _, c := range root.Commands() {
		have[c.Name()] = true
	}
	for _, c := range append(instanceCommands(), hubCommand()) {
		if !have[c.Name()] {
			root.AddCommand(c)
		}
	}
	return root
}

type cliResult struct {
	stdout, stderr string
	err            error
}

// runCLI runs `taskhub args...` in process.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	root := cliRoot()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return cliResult{stdout.String(), stderr.String(), err}
}

// mustRun runs a command that must succeed and returns its stdout.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := runCLI(t, args...)
	if r.err != nil {
		t.Fatalf("taskhub %s: %v\nstderr: %s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// mustFail runs a command that must fail and returns its error message.
func mustFail(t *testing.T, args ...string) string {
	t.Helper()
	r := runCLI(t, args...)
	if r.err == nil {
		t.Fatalf("taskhub %s: no error; stdout:\n%s", strings.Join(args, " "), r.stdout)
	}
	return r.err.Error()
}

var (
	uuidPattern     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timePattern     = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	durationPattern = regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|ms|s|m|h)(\d+(\.\d+)?(ns|µs|ms|s|m|h))*\b`)
	agePattern      = regexp.MustCompile(`("\w*AgeSeconds": )[0-9.e+-]+`)
	pidPattern      = regexp.MustCompile(`("pid": )\d+`)
	multiSpace      = regexp.MustCompile(` {2,}`)
)

// normalize replaces what changes from run to run: the temporary
// directory, the host name, UUIDs, times, durations and ages.
func normalize(s, dir string) string {
	if dir != "" {
		s = strings.ReplaceAll(s, dir, "<DIR>")
	}
	if host, err := os.Hostname(); err == nil && host != "" {
		s = regexp.MustCompile(`\b`+regexp.QuoteMeta(host)+`\b`).ReplaceAllString(s, "<HOST>")
	}
	s = uuidPattern.ReplaceAllString(s, "<UUID>")
	s = timePattern.ReplaceAllString(s, "<TIME>")
	s = durationPattern.ReplaceAllString(s, "<DUR>")
	s = agePattern.ReplaceAllString(s, "${1}<N>")
	s = pidPattern.ReplaceAllString(s, "${1}<PID>")
	return s
}

// realign re-aligns table output after normalize changed cell widths:
// cells are separated by two or more spaces, as the tables print them.
func realign(s string) string {
	var out strings.Builder
	var block []string
	flush := func() {
		tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
		for _, l := range block {
			fmt.Fprintln(tw, strings.Join(multiSpace.Split(l, -1), "\t"))
		}
		tw.Flush()
		block = nil
	}
	for l := range strings.SplitSeq(strings.TrimSuffix(s, "\n"), "\n") {
		if l == "" {
			flush()
			out.WriteString("\n")
			continue
		}
		block = append(block, strings.TrimRight(l, " "))
	}
	flush()
	return out.String()
}

// checkGolden compares got with testdata/golden/name (-update rewrites it).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// golden runs a command that must succeed and compares its normalized
// output: tables are re-aligned, JSON must parse.
func golden(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	out := normalize(mustRun(t, args...), dir)
	if strings.HasSuffix(name, ".json") {
		if !json.Valid([]byte(strings.NewReplacer("<N>", "0", "<PID>", "0").Replace(out))) {
			t.Errorf("%s: output is not one JSON document:\n%s", name, out)
		}
	} else {
		out = realign(out)
	}
	checkGolden(t, name, out)
}

// cliWorker is a worker with the samples on the hub file, polling fast so
// that commits made by the CLI's own connection are picked up at once.
type cliWorker struct {
	w    *taskhub.Worker
	be   backend.Backend
	once sync.Once
}

func startCLIWorker(t *testing.T, path string) *cliWorker {
	t.Helper()
	return startCLIWorkerWith(t, path, samples.Register)
}

// startCLIWorkerWith is startCLIWorker with the functions of register.
func startCLIWorkerWith(t *testing.T, path string, register func(*taskhub.Registry) error) *cliWorker {
	t.Helper()
	be, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := taskhub.NewRegistry()
	if err := register(reg); err != nil {
		t.Fatal(err)
	}
	w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{
		WorkerID:                           "cli-test-worker",
		PartitionCount:                     4,
		MaxConcurrentActivityFunctions:     4,
		MaxConcurrentOrchestratorFunctions: 4,
		MaxQueuePollingInterval:            20 * time.Millisecond,
		LeaseDuration:                      10 * time.Second,
		LeaseRenewInterval:                 500 * time.Millisecond,
		LeaseAcquireInterval:               100 * time.Millisecond,
		Logger:                             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cw := &cliWorker{w: w, be: be}
	t.Cleanup(func() { cw.stop(t) })
	return cw
}

func (cw *cliWorker) stop(t *testing.T) {
	cw.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cw.w.Stop(ctx); err != nil {
			t.Errorf("worker stop: %v", err)
		}
		cw.be.Close()
	})
}

// waitFinished waits until an instance has finished and returns it.
func (cw *cliWorker) waitFinished(t *testing.T, id string) *taskhub.InstanceStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cw.w.Client().WaitForInstanceCompletion(ctx, id)
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	return st
}

// waitOwnsAll waits until the worker's registry row lists every partition
// and every lease is held, so that hub info shows a settled hub.
func (cw *cliWorker) waitOwnsAll(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ws, err := cw.be.WorkerList(context.Background(), &backend.WorkerListParams{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) == 1 && len(ws[0].Partitions) == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the worker did not take all %d partitions", n)
}

// TestCLILocal drives the commands against a SQLite hub with a worker:
// golden tables and JSON, then the operations and their errors.
func TestCLILocal(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hub.db")
	b := []string{"--backend", db}
	run := func(args ...string) []string { return append(slices.Clone(args), b...) }

	// Before the hub exists.
	if msg := mustFail(t, run("status", "x")...); !strings.Contains(msg, "no such file") || !strings.Contains(msg, "hub create") {
		t.Errorf("status on a missing file: %q", msg)
	}

	golden(t, dir, "hub_create.txt", run("hub", "create", "--partitions", "4")...)
	golden(t, dir, "hub_create_exists.json", run("hub", "create", "--partitions", "4", "--json")...)
	msg := mustFail(t, run("hub", "create", "--partitions", "8")...)
	if !strings.Contains(msg, "has 4 partitions") || !strings.Contains(msg, "8 were requested") {
		t.Errorf("hub create with another count: %q does not name both counts", msg)
	}
	var mismatch *backend.PartitionCountMismatchError
	if err := runCLI(t, run("hub", "create", "--partitions", "8")...).err; !errors.As(err, &mismatch) {
		t.Errorf("hub create mismatch: %T is not a *PartitionCountMismatchError", err)
	}

	// Scheduled before any worker runs: Pending, and visible as such.
	golden(t, dir, "start.json", run("start", samples.HelloSequenceName, "--id", "hello-2", "--json")...)
	out := mustRun(t, run("status", "hello-2")...)
	if !strings.Contains(out, "Pending") {
		t.Errorf("status of an instance no worker ran yet:\n%s", out)
	}

	w := startCLIWorker(t, db)
	golden(t, dir, "start_wait.txt", run("start", samples.HelloSequenceName, "--id", "hello-1", "--input", `{"note": "golden"}`, "--wait")...)
	if st := w.waitFinished(t, "hello-2"); st.RuntimeStatus != taskhub.StatusCompleted {
		t.Fatalf("hello-2 ended %s", st.RuntimeStatus)
	}

	golden(t, dir, "status.txt", run("status", "hello-1")...)
	golden(t, dir, "status.json", run("status", "hello-1", "--json")...)
	golden(t, dir, "status_history.txt", run("status", "hello-1", "--history", "--input")...)
	golden(t, dir, "status_history.json", run("status", "hello-1", "--history", "--input", "--json")...)
	golden(t, dir, "history.txt", run("history", "hello-1")...)
	golden(t, dir, "history.json", run("history", "hello-1", "--json")...)
	golden(t, dir, "list.txt", run("list")...)
	golden(t, dir, "list.json", run("list", "--json")...)
	golden(t, dir, "list_page.json", run("list", "--top", "1", "--json")...)
	if got, want := mustRun(t, run("list", "--top", "1", "--all")...), mustRun(t, run("list")...); got != want {
		t.Errorf("list --top 1 --all:\n%s\nwant the full listing:\n%s", got, want)
	}
	r := runCLI(t, run("list", "--top", "1")...)
	if r.err != nil || !strings.Contains(r.stderr, "--continuation-token") || strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("list --top 1: err %v, stdout:\n%sstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	words := strings.Fields(r.stderr)
	token := words[len(words)-5]
	if out := mustRun(t, run("list", "--top", "1", "--continuation-token", token)...); !strings.Contains(out, "hello-2") || strings.Contains(out, "hello-1") {
		t.Errorf("second page from token %q:\n%s", token, out)
	}
	if out := mustRun(t, run("list", "--status", "running,Pending")...); out != "no instances match\n" {
		t.Errorf("list --status running,Pending: %q", out)
	}
	if out := mustRun(t, run("list", "--prefix", "hello-2", "--status", "Completed")...); !strings.Contains(out, "hello-2") || strings.Contains(out, "hello-1") {
		t.Errorf("list --prefix hello-2:\n%s", out)
	}

	w.waitOwnsAll(t, 4)
	golden(t, dir, "hub_info.txt", run("hub", "info")...)
	golden(t, dir, "hub_info.json", run("hub", "info", "--json")...)

	// Operations on a running instance.
	mustRun(t, run("start", samples.ApprovalName, "--id", "approval-1", "--input", `{"timeoutSeconds": 3600}`)...)
	localErrors := map[string]string{
		"purge running":   mustFail(t, run("purge", "approval-1")...),
		"status unknown":  mustFail(t, run("status", "nope")...),
		"history unknown": mustFail(t, run("history", "nope")...),
		"raise finished":  mustFail(t, run("raise", "hello-1", "Approval")...),
		"rewind":          mustFail(t, run("rewind", "approval-1")...),
	}
	for name, want := range sharedErrors {
		if localErrors[name] != want {
			t.Errorf("%s: error %q, want %q", name, localErrors[name], want)
		}
	}
	if out := mustRun(t, run("suspend", "approval-1", "--reason", "hold")...); out != "suspension of instance approval-1 requested\n" {
		t.Errorf("suspend: %q", out)
	}
	mustRun(t, run("resume", "approval-1", "--reason", "go")...)
	if out := mustRun(t, run("raise", "approval-1", "Approval", "--data", `{"approved": true}`, "--json")...); !strings.Contains(out, `"operation": "raiseEvent"`) {
		t.Errorf("raise --json: %s", out)
	}
	if st := w.waitFinished(t, "approval-1"); string(st.Output) != `"approved"` {
		t.Errorf("approval-1 ended %s with %s, want approved", st.RuntimeStatus, st.Output)
	}
	h := mustRun(t, run("history", "approval-1")...)
	for _, want := range []string{"ExecutionSuspended", "ExecutionResumed", `EventRaised`, `{"approved":true}`} {
		if !strings.Contains(h, want) {
			t.Errorf("history of approval-1 lacks %s:\n%s", want, h)
		}
	}

	mustRun(t, run("start", samples.ApprovalName, "--id", "approval-2")...)
	if msg := mustFail(t, run("start", samples.ApprovalName, "--id", "approval-2")...); !strings.Contains(msg, `"approval-2" already exists`) {
		t.Errorf("start of an existing running instance: %q", msg)
	}
	mustRun(t, run("terminate", "approval-2", "--reason", "not needed")...)
	if st := w.waitFinished(t, "approval-2"); st.RuntimeStatus != taskhub.StatusTerminated || string(st.Output) != `"not needed"` {
		t.Errorf("approval-2 ended %s with %s", st.RuntimeStatus, st.Output)
	}
	msg = mustFail(t, run("start", samples.ApprovalName, "--id", "approval-3", "--input", `{"timeoutSeconds": -1}`, "--wait", "--timeout", "300ms")...)
	if msg != `instance "approval-3" has not finished after 300ms` {
		t.Errorf("start --wait --timeout: %q", msg)
	}
	mustRun(t, run("terminate", "approval-3")...)
	w.waitFinished(t, "approval-3")

	// Purges: one, then by filter with progress on stderr.
	if out := mustRun(t, run("purge", "hello-1")...); out != "purged 1 instance\n" {
		t.Errorf("purge hello-1: %q", out)
	}
	if msg := mustFail(t, run("status", "hello-1")...); msg != `instance "hello-1" not found` {
		t.Errorf("status after purge: %q", msg)
	}
	r = runCLI(t, run("purge", "--created-from", "2000-01-01", "--status", "Completed")...)
	if r.err != nil || r.stdout != "purged 2 instances\n" || r.stderr != "purged 2 instances so far\n" {
		t.Errorf("purge by filter: err %v, stdout %q, stderr %q", r.err, r.stdout, r.stderr)
	}
	if out := mustRun(t, run("purge", "--created-from", "2000-01-01T00:00:00Z", "--json")...); out != "{\n  \"instancesDeleted\": 2\n}\n" {
		t.Errorf("purge by filter --json: %q", out)
	}
	if out := mustRun(t, run("list")...); out != "no instances match\n" {
		t.Errorf("list after purges: %q", out)
	}

	// Deleting the hub.
	if msg := mustFail(t, run("hub", "delete")...); !strings.Contains(msg, "pass --yes") {
		t.Errorf("hub delete without --yes: %q", msg)
	}
	if msg := mustFail(t, run("hub", "delete", "--yes")...); !strings.Contains(msg, "1 worker is live") || !strings.Contains(msg, "cli-test-worker") {
		t.Errorf("hub delete with a live worker: %q", msg)
	}
	w.stop(t)
	// With no worker, a new instance's start message waits in its
	// partition's control queue, visible and ageing; the leases are free.
	mustRun(t, run("start", samples.HelloSequenceName, "--id", "waiting-1")...)
	golden(t, dir, "hub_info_stopped.txt", run("hub", "info")...)
	if out := mustRun(t, run("hub", "delete", "--yes")...); !strings.HasPrefix(out, "deleted task hub \"taskhub\"") {
		t.Errorf("hub delete --yes: %q", out)
	}
	if msg := mustFail(t, run("hub", "info")...); !strings.Contains(msg, `task hub "taskhub" does not exist`) {
		t.Errorf("hub info after delete: %q", msg)
	}
	if msg := mustFail(t, run("start", "X")...); !strings.Contains(msg, `task hub "taskhub" does not exist`) {
		t.Errorf("start after delete: %q", msg)
	}
}

// sharedErrors are the messages both targets give for the same failure.
var sharedErrors = map[string]string{
	"purge running":   `instance "approval-1" has not finished: only Completed, Failed and Terminated instances can be purged (terminate it first)`,
	"status unknown":  `instance "nope" not found`,
	"history unknown": `instance "nope" not found`,
	"raise finished":  `instance "hello-1" has already finished`,
	"rewind":          `instance "approval-1" has not failed: only Failed instances can be rewound`,
}

// TestCLIFlagErrors checks flag validation that needs no hub.
func TestCLIFlagErrors(t *testing.T) {
	db := filepath.Join(t.TempDir(), "hub.db")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"start", "X", "--input", "{bad"}, "--input is not valid JSON"},
		{[]string{"start", "X", "--start-at", "tomorrow"}, `--start-at "tomorrow": want an RFC 3339 time`},
		{[]string{"start", "X", "--timeout", "1s"}, "--timeout is only used with --wait"},
		{[]string{"raise", "x", "E", "--data", "nope"}, "--data is not valid JSON"},
		{[]string{"list", "--status", "Done"}, `--status "Done": want one of Pending, Running`},
		{[]string{"list", "--top", "0"}, "--top 0: want a number from 1 to 1000"},
		{[]string{"list", "--created-from", "2025-02-01", "--created-to", "2025-01-01"}, "is not after --created-from"},
		{[]string{"purge"}, "purge needs an instance ID, or --created-from"},
		{[]string{"purge", "x", "--created-from", "2025-01-01"}, "not both"},
		{[]string{"purge", "--created-from", "2025-01-01", "--status", "Running"}, `--status "Running": want one of Completed, Failed, Terminated`},
		{[]string{"status", "x", "--key", "k"}, "--key is only used with --server"},
		{[]string{"status", "x", "--server", "localhost:7071"}, "want an http:// or https:// URL"},
		{[]string{"status", "x", "--server", "http://127.0.0.1:1"}, "cannot reach the server"},
		{[]string{"hub", "create", "--partitions", "17"}, "--partitions 17: want 1 to 16"},
		{[]string{"hub", "info", "--live-within", "0s"}, "--live-within 0s: want a positive duration"},
	}
	for _, c := range cases {
		args := append(c.args, "--backend", db)
		if slices.Contains(c.args, "--server") {
			args = c.args
		}
		if msg := mustFail(t, args...); !strings.Contains(msg, c.want) {
			t.Errorf("taskhub %s: error %q does not say %q", strings.Join(c.args, " "), msg, c.want)
		}
	}
	if msg := mustFail(t, "status", "x", "--server", "http://127.0.0.1:1", "--backend", db); !strings.Contains(msg, "exclude each other") {
		t.Errorf("--server with --backend: %q", msg)
	}
}

// fakeDF is a Durable Functions HTTP API over an in-memory hub: enough of
// the protocol to test the CLI's client, independent of package httpapi.
type fakeDF struct {
	key string

	mu        sync.Mutex
	instances map[string]*fakeInstance
	requests  []string // "METHOD path?query", in order
}

type fakeInstance struct {
	id, name, status string
	input, output    string // JSON, "" for none
	created          time.Time
	// runningPolls is how many more status reads answer Running before
	// the instance completes (a worker stand-in).
	runningPolls int
	events       []string
}

var fakeEpoch = time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC)

func newFakeDF(key string) *fakeDF {
	f := &fakeDF{key: key, instances: map[string]*fakeInstance{}}
	for i, s := range []string{"Completed", "Completed", "Running", "Failed"} {
		id := fmt.Sprintf("seed-%d", i+1)
		f.instances[id] = &fakeInstance{id: id, name: "HelloSequence", status: s, input: `"in"`, output: `"out"`, created: fakeEpoch.Add(time.Duration(i) * time.Minute)}
	}
	f.instances["seed-4"].output = ""
	return f
}

func (f *fakeDF) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

func (f *fakeDF) fail(w http.ResponseWriter, status int, code, msg string) {
	f.reply(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (f *fakeDF) body(in *fakeInstance, showInput bool) map[string]any {
	raw := func(s string) json.RawMessage {
		if s == "" {
			return json.RawMessage("null")
		}
		return json.RawMessage(s)
	}
	b := map[string]any{
		"name": in.name, "instanceId": in.id, "runtimeStatus": in.status, "input": nil,
		"customStatus": nil, "output": raw(in.output),
		"createdTime": in.created.Format(time.RFC3339), "lastUpdatedTime": in.created.Add(time.Second).Format(time.RFC3339),
	}
	if showInput {
		b["input"] = raw(in.input)
	}
	if in.status == "Failed" {
		b["output"] = "Error: boom"
		b["failureDetails"] = map[string]string{"type": "Error", "message": "boom"}
	}
	return b
}

func (f *fakeDF) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	if r.Header.Get(dfKeyHeader) != f.key {
		f.fail(w, http.StatusUnauthorized, "unauthorized", "a valid API key is required")
		return
	}
	const base = dfBasePath + "/"
	if !strings.HasPrefix(r.URL.Path, base) {
		f.fail(w, http.StatusNotFound, "not_found", "no such route")
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, base), "/")
	q := r.URL.Query()
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method == http.MethodPost && parts[0] == "orchestrators" && len(parts) >= 2:
		id := fmt.Sprintf("new-%d", len(f.instances)+1)
		if len(parts) == 3 {
			id = parts[2]
		}
		if in := f.instances[id]; in != nil && in.status == "Running" {
			f.fail(w, http.StatusConflict, "instance_exists", fmt.Sprintf("instance %q is Running", id))
			return
		}
		f.instances[id] = &fakeInstance{id: id, name: parts[1], status: "Running", input: string(body), output: `"done"`,
			created: fakeEpoch.Add(time.Hour), runningPolls: 2}
		f.reply(w, http.StatusAccepted, map[string]string{"id": id, "statusQueryGetUri": "http://" + r.Host + base + "instances/" + id})
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "instances":
		f.list(w, r)
	case parts[0] == "instances" && len(parts) >= 2:
		in := f.instances[parts[1]]
		if in == nil {
			f.fail(w, http.StatusNotFound, "instance_not_found", "no instance "+parts[1])
			return
		}
		f.instance(w, r, in, parts[2:], q, body)
	case r.Method == http.MethodDelete && len(parts) == 1 && parts[0] == "instances":
		if q.Get("createdTimeFrom") == "" {
			f.fail(w, http.StatusBadRequest, "missing_parameter", "createdTimeFrom is required")
			return
		}
		n := 0
		statuses := []string{"Completed", "Failed", "Terminated"}
		if s := q.Get("runtimeStatus"); s != "" {
			statuses = strings.Split(s, ",")
		}
		for id, in := range f.instances {
			if slices.Contains(statuses, in.status) {
				delete(f.instances, id)
				n++
			}
		}
		f.reply(w, http.StatusOK, map[string]int{"instancesDeleted": n})
	default:
		f.fail(w, http.StatusNotFound, "not_found", "no such route")
	}
}

func (f *fakeDF) instance(w http.ResponseWriter, r *http.Request, in *fakeInstance, rest []string, q map[string][]string, body []byte) {
	finished := in.status == "Completed" || in.status == "Failed" || in.status == "Terminated"
	switch {
	case r.Method == http.MethodGet && len(rest) == 0:
		if in.status == "Running" && in.runningPolls > 0 {
			in.runningPolls--
			if in.runningPolls == 0 {
				in.status = "Completed"
			}
		}
		b := f.body(in, len(q["showInput"]) == 0 || q["showInput"][0] == "true")
		if len(q["showHistory"]) > 0 {
			b["historyEvents"] = []map[string]any{
				{"eventId": 0, "eventType": "ExecutionStarted", "timestamp": fakeEpoch, "name": in.name, "input": json.RawMessage(`"in"`)},
				{"eventId": 1, "eventType": "TaskScheduled", "timestamp": fakeEpoch.Add(time.Second), "name": "SayHello", "input": json.RawMessage(`"Tokyo"`)},
				{"eventId": 2, "eventType": "TaskCompleted", "timestamp": fakeEpoch.Add(2 * time.Second), "input": json.RawMessage(`"Hello Tokyo!"`)},
				{"eventId": 3, "eventType": "ExecutionCompleted", "timestamp": fakeEpoch.Add(3 * time.Second), "orchestrationStatus": "Completed", "input": json.RawMessage(`"out"`)},
			}
		}
		status := http.StatusAccepted
		switch {
		case finished && strings.HasPrefix(in.id, "legacy-"):
			status = http.StatusBadRequest // as some Durable Functions versions answer a failed instance
		case finished:
			status = http.StatusOK
		}
		f.reply(w, status, b)
	case r.Method == http.MethodDelete && len(rest) == 0:
		if !finished {
			f.fail(w, http.StatusBadRequest, "instance_not_finished", "instance is "+in.status)
			return
		}
		delete(f.instances, in.id)
		f.reply(w, http.StatusOK, map[string]int{"instancesDeleted": 1})
	case r.Method == http.MethodPost && len(rest) >= 1:
		if rest[0] == "rewind" {
			if in.status != "Failed" {
				f.fail(w, http.StatusConflict, "instance_not_failed", "instance is "+in.status)
				return
			}
			f.reply(w, http.StatusAccepted, nil)
			return
		}
		if finished {
			f.fail(w, http.StatusGone, "instance_finished", "instance is "+in.status)
			return
		}
		switch rest[0] {
		case "raiseEvent":
			in.events = append(in.events, rest[1]+" "+string(body))
		case "terminate":
			in.status, in.output = "Terminated", strconv.Quote(r.URL.Query().Get("reason"))
		case "suspend":
			in.status = "Suspended"
		case "resume":
			in.status = "Running"
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		f.fail(w, http.StatusNotFound, "not_found", "no such route")
	}
}

func (f *fakeDF) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	top, _ := strconv.Atoi(q.Get("top"))
	if top == 0 {
		top = 100
	}
	after := r.Header.Get(dfContinuationHeader)
	var ids []string
	for id, in := range f.instances {
		if id > after && strings.HasPrefix(id, q.Get("instanceIdPrefix")) &&
			(q.Get("runtimeStatus") == "" || slices.Contains(strings.Split(q.Get("runtimeStatus"), ","), in.status)) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > top {
		ids = ids[:top]
		w.Header().Set(dfContinuationHeader, ids[top-1])
	}
	out := []map[string]any{}
	for _, id := range ids {
		out = append(out, f.body(f.instances[id], false))
	}
	f.reply(w, http.StatusOK, out)
}

// snapshot returns a copy of an instance (zero when absent).
func (f *fakeDF) snapshot(id string) fakeInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in := f.instances[id]; in != nil {
		c := *in
		c.events = slices.Clone(in.events)
		return c
	}
	return fakeInstance{}
}

func (f *fakeDF) put(in *fakeInstance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances[in.id] = in
}

func (f *fakeDF) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// TestCLIServer drives the same commands through the HTTP API of a fake
// Durable Functions server.
func TestCLIServer(t *testing.T) {
	const key = "test-key-0123456789"
	fake := newFakeDF(key)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	s := []string{"--server", srv.URL, "--key", key}
	run := func(args ...string) []string { return append(slices.Clone(args), s...) }

	golden(t, "", "server_start_wait.txt", run("start", "HelloSequence", "--id", "srv-1", "--input", `{"n": 1}`, "--wait")...)
	if in := fake.snapshot("srv-1"); in.input != `{"n":1}` {
		t.Errorf("start sent input %q", in.input)
	}
	if out := mustRun(t, run("start", "HelloSequence", "--json")...); !strings.Contains(out, `"instanceId": "new-6"`) {
		t.Errorf("start --json without --id: %s", out)
	}
	golden(t, "", "server_status_history.json", run("status", "seed-1", "--history", "--input", "--json")...)
	golden(t, "", "server_status_failed.txt", run("status", "seed-4")...)
	golden(t, "", "server_history.txt", run("history", "seed-1")...)
	golden(t, "", "server_list.txt", run("list", "--top", "2", "--all")...)
	golden(t, "", "server_list_page.json", run("list", "--top", "2", "--status", "completed", "--prefix", "seed-", "--created-from", "2025-01-01", "--json")...)

	if out := mustRun(t, run("raise", "seed-3", "Approval", "--data", `{"approved": true}`)...); out != "event Approval sent to instance seed-3\n" {
		t.Errorf("raise: %q", out)
	}
	if got := fake.snapshot("seed-3").events; !slices.Equal(got, []string{`Approval {"approved":true}`}) {
		t.Errorf("events received: %q", got)
	}
	mustRun(t, run("suspend", "seed-3", "--reason", "hold on")...)
	if in := fake.snapshot("seed-3"); in.status != "Suspended" {
		t.Errorf("after suspend: %s", in.status)
	}
	mustRun(t, run("resume", "seed-3")...)

	// The same failures read the same through either target.
	fake.put(&fakeInstance{id: "approval-1", name: "Approval", status: "Running", created: fakeEpoch})
	fake.put(&fakeInstance{id: "hello-1", name: "HelloSequence", status: "Completed", created: fakeEpoch})
	serverErrors := map[string]string{
		"purge running":   mustFail(t, run("purge", "approval-1")...),
		"status unknown":  mustFail(t, run("status", "nope")...),
		"history unknown": mustFail(t, run("history", "nope")...),
		"raise finished":  mustFail(t, run("raise", "hello-1", "Approval")...),
		"rewind":          mustFail(t, run("rewind", "approval-1")...),
	}
	mustRun(t, run("terminate", "seed-3", "--reason", "stop it", "--recursive")...)
	if in := fake.snapshot("seed-3"); in.status != "Terminated" || in.output != `"stop it"` {
		t.Errorf("after terminate: %s %s", in.status, in.output)
	}
	if out := mustRun(t, run("purge", "seed-1", "--json")...); out != "{\n  \"instancesDeleted\": 1\n}\n" {
		t.Errorf("purge seed-1: %q", out)
	}
	if out := mustRun(t, run("purge", "--created-from", "2025-01-01", "--status", "Completed,Terminated")...); out != "purged 4 instances\n" {
		t.Errorf("purge by filter: %q", out)
	}
	if msg := mustFail(t, run("start", "X", "--start-at", "2030-01-01T00:00:00Z")...); !strings.Contains(msg, "--start-at is not available with --server") {
		t.Errorf("start --start-at with --server: %q", msg)
	}

	log := strings.Join(fake.requestLog(), "\n")
	for _, want := range []string{
		"POST " + dfBasePath + "/orchestrators/HelloSequence/srv-1",
		"GET " + dfBasePath + "/instances/seed-1?showHistory=true&showHistoryOutput=true&showInput=true",
		"GET " + dfBasePath + "/instances?createdTimeFrom=2025-01-01T00%3A00%3A00Z&instanceIdPrefix=seed-&runtimeStatus=Completed&showInput=false&top=2",
		"POST " + dfBasePath + "/instances/seed-3/raiseEvent/Approval",
		"POST " + dfBasePath + "/instances/seed-3/suspend?reason=hold+on",
		"POST " + dfBasePath + "/instances/seed-3/terminate?reason=stop+it&recursive=true",
		"POST " + dfBasePath + "/instances/approval-1/rewind",
		"DELETE " + dfBasePath + "/instances/seed-1",
		"DELETE " + dfBasePath + "/instances?createdTimeFrom=2025-01-01T00%3A00%3A00Z&runtimeStatus=Completed%2CTerminated",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("no request %s in\n%s", want, log)
		}
	}

	for name, want := range sharedErrors {
		if serverErrors[name] != want {
			t.Errorf("%s: error %q, want %q (as the local target)", name, serverErrors[name], want)
		}
	}

	// A failed instance's status answered with 400 is still its status.
	fake.put(&fakeInstance{id: "legacy-1", name: "HelloSequence", status: "Failed", created: fakeEpoch})
	if out := mustRun(t, run("status", "legacy-1")...); !strings.Contains(out, "Error: boom") {
		t.Errorf("status answered with 400: %s", out)
	}

	// Keys: wrong, missing, and from the environment.
	if msg := mustFail(t, "status", "seed-2", "--server", srv.URL, "--key", "wrong"); msg != "the server refused the API key (401 Unauthorized)" {
		t.Errorf("wrong key: %q", msg)
	}
	t.Setenv(clientKeyEnv, "")
	if msg := mustFail(t, "status", "seed-2", "--server", srv.URL); !strings.Contains(msg, "needs an API key") || !strings.Contains(msg, clientKeyEnv) {
		t.Errorf("no key: %q", msg)
	}
	t.Setenv(clientKeyEnv, key)
	if out := mustRun(t, "status", "seed-4", "--server", srv.URL+dfBasePath+"/"); !strings.Contains(out, "Failed") {
		t.Errorf("key from %s, explicit base path: %s", clientKeyEnv, out)
	}
	if msg := mustFail(t, "status", "seed-2", "--server", srv.URL+"/api"); !strings.Contains(msg, "404 Not Found (not_found)") {
		t.Errorf("wrong base path: %q", msg)
	}
}

// TestHTTPErrorMapping checks answers of servers other than the fake:
// Durable Functions' bare 404 and 410, and non-JSON bodies.
func TestHTTPErrorMapping(t *testing.T) {
	h := &httpTarget{}
	cases := []struct {
		status int
		body   string
		is     error
		text   string
	}{
		{404, "", taskhub.ErrInstanceNotFound, "the server answered 404 Not Found"},
		{410, "", taskhub.ErrInstanceFinished, "the server answered 410 Gone"},
		{400, `{"error":{"code":"instance_not_finished","message":"m"}}`, taskhub.ErrInstanceNotFinished, "the server answered 400 Bad Request (instance_not_finished): m"},
		{502, "bad gateway", nil, "the server answered 502 Bad Gateway: bad gateway"},
		{500, "<html>oops</html>", nil, "the server answered 500 Internal Server Error"},
	}
	for _, c := range cases {
		err := h.errorOf(c.status, []byte(c.body))
		if err.Error() != c.text {
			t.Errorf("%d %q: %q, want %q", c.status, c.body, err, c.text)
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%d %q: %v is not %v", c.status, c.body, err, c.is)
		}
		if got := explain(err, "x").Error(); c.is == taskhub.ErrInstanceNotFound && got != `instance "x" not found` {
			t.Errorf("explain: %q", got)
		}
	}
}
