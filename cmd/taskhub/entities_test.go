package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/httpapi"
	"github.com/taskhub/taskhub/samples"
)

// holderOrchestration locks the Counter of its input key until the event
// "release", then returns the counter's value.
func holderOrchestration(ctx *taskhub.OrchestrationContext, key string) (int, error) {
	id := taskhub.NewEntityID(samples.CounterName, key)
	unlock, err := ctx.LockEntities(id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if err := ctx.WaitForExternalEvent("release", 0).Await(nil); err != nil {
		return 0, err
	}
	return taskhub.Await[int](ctx.CallEntity(id, "get", nil))
}

func registerEntityTest(r *taskhub.Registry) error {
	return errors.Join(
		taskhub.RegisterEntity(r, samples.CounterName, samples.Counter),
		taskhub.RegisterEntity(r, "Tally", samples.Counter),
		taskhub.RegisterOrchestrator(r, "Holder", holderOrchestration),
	)
}

// entityEnv is a worker with the entity test functions and the flags that
// name the target the commands act on.
type entityEnv struct {
	t     *testing.T
	w     *cliWorker
	flags []string
}

func (e *entityEnv) run(args ...string) []string { return append(slices.Clone(args), e.flags...) }

// waitEntity polls the entity until done accepts what GetEntity answers.
func (e *entityEnv) waitEntity(name, key, what string, done func(*taskhub.EntityMetadata, error) bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := taskhub.NewEntityID(name, key)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m, err := e.w.w.Client().GetEntity(ctx, id, true)
		if done(m, err) {
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("entity %s: %s: gave up (last answer %+v, %v)", id, what, m, err)
		case <-tick.C:
		}
	}
}

func (e *entityEnv) waitState(name, key, want string) {
	e.t.Helper()
	e.waitEntity(name, key, "state "+want, func(m *taskhub.EntityMetadata, err error) bool { return err == nil && string(m.State) == want })
}

// entityScenario runs the entity commands on e's target and returns their
// normalized outputs by name.
func entityScenario(e *entityEnv) map[string]string {
	t := e.t
	out := map[string]string{}
	keep := func(name string, args ...string) {
		t.Helper()
		s := normalize(mustRun(t, e.run(args...)...), "")
		if !strings.HasSuffix(name, ".json") {
			s = realign(s)
		}
		out[name] = s
	}

	keep("signal.txt", "entity", "signal", "Counter", "c1", "add", "--input", "5")
	mustRun(t, e.run("entity", "signal", "counter", "c2", "add", "--input", " 2 ")...)
	mustRun(t, e.run("entity", "signal", "Tally", "t1", "add", "--input", "10")...)
	mustRun(t, e.run("entity", "signal", "Counter", "a/b@c", "add", "--input", "1")...)
	at := time.Now().Add(200 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	keep("signal_at.json", "entity", "signal", "Counter", "c3", "add", "--input", "3", "--at", at, "--json")
	e.waitState("Counter", "c1", "5")
	e.waitState("Counter", "c2", "2")
	e.waitState("Tally", "t1", "10")
	e.waitState("Counter", "a/b@c", "1")
	e.waitState("Counter", "c3", "3")

	keep("get.txt", "entity", "get", "Counter", "c1")
	keep("get.json", "entity", "get", "COUNTER", "c1", "--json")
	keep("get_escaped.txt", "entity", "get", "Counter", "a/b@c")
	keep("list.txt", "entity", "list")
	keep("list_state.json", "entity", "list", "--state", "--json")
	keep("list_name.txt", "entity", "list", "--name", "Counter", "--state")
	keep("list_prefix.txt", "entity", "list", "--prefix", "ta")
	keep("list_none.txt", "entity", "list", "--name", "nobody")
	if got, want := mustRun(t, e.run("entity", "list", "--top", "2", "--all")...), mustRun(t, e.run("entity", "list")...); got != want {
		t.Errorf("entity list --top 2 --all:\n%s\nwant the full listing:\n%s", got, want)
	}
	r := runCLI(t, e.run("entity", "list", "--top", "2")...)
	if r.err != nil || !strings.Contains(r.stderr, "--continuation-token") || strings.Count(r.stdout, "\n") != 3 {
		t.Fatalf("entity list --top 2: err %v, stdout:\n%sstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	words := strings.Fields(r.stderr)
	token := words[len(words)-5]
	if page := mustRun(t, e.run("entity", "list", "--top", "2", "--continuation-token", token)...); !strings.Contains(page, "@counter@c2") || strings.Contains(page, "@counter@c1") {
		t.Errorf("second page from token %q:\n%s", token, page)
	}

	// A critical section holds c1's lock; a signal waits behind it.
	mustRun(t, e.run("start", "Holder", "--id", "holder-1", "--input", `"c1"`)...)
	e.waitEntity("Counter", "c1", "locked", func(m *taskhub.EntityMetadata, err error) bool { return err == nil && m.LockedBy == "holder-1" })
	mustRun(t, e.run("entity", "signal", "Counter", "c1", "add", "--input", "100")...)
	e.waitEntity("Counter", "c1", "backlog 1", func(m *taskhub.EntityMetadata, err error) bool { return err == nil && m.BacklogQueueSize == 1 })
	keep("list_locked.txt", "entity", "list", "--name", "counter")
	keep("get_locked.json", "entity", "get", "Counter", "c1", "--json")
	mustRun(t, e.run("raise", "holder-1", "release")...)
	e.waitEntity("Counter", "c1", "released", func(m *taskhub.EntityMetadata, err error) bool {
		return err == nil && string(m.State) == "105" && m.LockedBy == "" && m.BacklogQueueSize == 0
	})
	if st := e.w.waitFinished(t, "holder-1"); st.RuntimeStatus != taskhub.StatusCompleted || string(st.Output) != "5" {
		t.Errorf("holder-1 ended %s with %s", st.RuntimeStatus, st.Output)
	}

	// The built-in delete.
	mustRun(t, e.run("entity", "signal", "Counter", "c2", "delete")...)
	e.waitEntity("Counter", "c2", "deleted", func(_ *taskhub.EntityMetadata, err error) bool { return errors.Is(err, taskhub.ErrEntityNotFound) })
	out["get_deleted.err"] = mustFail(t, e.run("entity", "get", "Counter", "c2")...)
	out["get_unknown.err"] = mustFail(t, e.run("entity", "get", "Counter", "nobody")...)
	keep("list_deleted.txt", "entity", "list", "--deleted", "--name", "counter")
	return out
}

// TestCLIEntities runs the entity commands on a hub file and through the
// HTTP API of package httpapi: the outputs are golden, and the same
// through either target.
func TestCLIEntities(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hub.db")
	local := &entityEnv{t: t, w: startCLIWorkerWith(t, db, registerEntityTest), flags: []string{"--backend", db}}
	localOut := entityScenario(local)
	for name, s := range localOut {
		if strings.HasSuffix(name, ".err") {
			continue
		}
		checkGolden(t, "entity_"+name, s)
	}
	for name, want := range map[string]string{
		"get_deleted.err": `entity "@counter@c2" not found: it has no state (never set, or deleted)`,
		"get_unknown.err": `entity "@counter@nobody" not found: it has no state (never set, or deleted)`,
	} {
		if localOut[name] != want {
			t.Errorf("%s: %q, want %q", name, localOut[name], want)
		}
	}

	// Cleaning (local only): c2 has no state, so it is removed.
	if out := mustRun(t, local.run("entity", "clean")...); out != "removed 1 empty entity; released 0 orphaned locks\n" {
		t.Errorf("entity clean: %q", out)
	}
	if out := mustRun(t, local.run("entity", "list", "--deleted", "--name", "counter")...); strings.Contains(out, "@counter@c2") {
		t.Errorf("after clean, c2 is still listed:\n%s", out)
	}
	if out := mustRun(t, local.run("entity", "clean", "--json")...); out != "{\n  \"emptyEntitiesRemoved\": 0,\n  \"orphanedLocksReleased\": 0\n}\n" {
		t.Errorf("entity clean --json: %q", out)
	}
	if out := mustRun(t, local.run("entity", "clean", "--release-locks")...); out != "released 0 orphaned locks\n" {
		t.Errorf("entity clean --release-locks: %q", out)
	}
	if out := mustRun(t, local.run("entity", "clean", "--remove-empty")...); out != "removed 0 empty entities\n" {
		t.Errorf("entity clean --remove-empty: %q", out)
	}

	// The same through the HTTP API, with a key.
	const key = "entity-cli-key-0123456789"
	db2 := filepath.Join(dir, "served.db")
	served := startCLIWorkerWith(t, db2, registerEntityTest)
	srv := httptest.NewServer(httpapi.New(served.w.Client(), httpapi.Options{Keys: []string{key}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	remote := &entityEnv{t: t, w: served, flags: []string{"--server", srv.URL, "--key", key}}
	remoteOut := entityScenario(remote)
	for name, want := range localOut {
		if remoteOut[name] != want {
			t.Errorf("%s through --server:\n%s\nwant (as on --backend):\n%s", name, remoteOut[name], want)
		}
	}
	if msg := mustFail(t, remote.run("entity", "clean")...); msg != errCleanNeedsBackend.Error() {
		t.Errorf("entity clean --server: %q", msg)
	}
}

// TestCLIEntityFlagErrors checks argument and flag validation.
func TestCLIEntityFlagErrors(t *testing.T) {
	db := filepath.Join(t.TempDir(), "hub.db")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"entity", "signal", "a@b", "k", "add"}, `invalid entity ID: entity name "a@b" contains '@'`},
		{[]string{"entity", "signal", "", "k", "add"}, "invalid entity ID: "},
		{[]string{"entity", "signal", "Counter", "k\n", "add"}, "contains a control character"},
		{[]string{"entity", "signal", "Counter", "k", ""}, "the operation name is empty"},
		{[]string{"entity", "signal", "Counter", "k", "add", "--input", "{bad"}, "--input is not valid JSON"},
		{[]string{"entity", "signal", "Counter", "k", "add", "--at", "tomorrow"}, `--at "tomorrow": want an RFC 3339 time`},
		{[]string{"entity", "signal", "Counter", "k"}, "accepts 3 arg(s)"},
		{[]string{"entity", "get", "Counter", ""}, "has an empty key"},
		{[]string{"entity", "get", "Counter"}, "accepts 2 arg(s)"},
		{[]string{"entity", "list", "--name", "a", "--prefix", "b"}, "--name and --prefix exclude each other"},
		{[]string{"entity", "list", "--prefix", "a@b"}, `--prefix: invalid entity ID: entity name "a@b" contains '@'`},
		{[]string{"entity", "list", "--top", "0"}, "--top 0: want a number from 1 to 1000"},
		{[]string{"entity", "list", "--all", "--continuation-token", "x"}, "exclude each other"},
		{[]string{"entity", "clean", "--remove-empty=false", "--release-locks=false"}, "nothing to do"},
		{[]string{"entity", "get", "Counter", "k", "--key", "k"}, "--key is only used with --server"},
		{[]string{"entity", "get", "Counter", "k"}, "no such file"},
		{[]string{"entity", "clean", "--server", "http://127.0.0.1:1"}, "entity clean needs --backend"},
		{[]string{"entity", "get", "Counter", "k", "--server", "localhost:7071"}, "want an http:// or https:// URL"},
		{[]string{"entity", "get", "Counter", "k", "--server", "http://127.0.0.1:1"}, "cannot reach the server"},
	}
	for _, c := range cases {
		args := append(slices.Clone(c.args), "--backend", db)
		if slices.Contains(c.args, "--server") {
			args = c.args
		}
		if msg := mustFail(t, args...); !strings.Contains(msg, c.want) {
			t.Errorf("taskhub %q: error %q does not say %q", c.args, msg, c.want)
		}
	}
}

// TestHTTPEntityAnswers checks how answers of servers other than taskhub's
// read: Durable Functions' bare 404 and its entities without taskhub's
// additions.
func TestHTTPEntityAnswers(t *testing.T) {
	h := &httpTarget{}
	for _, c := range []struct {
		status int
		body   string
		gone   bool
	}{
		{404, "", true},
		{404, `{"error":{"code":"entity_not_found","message":"m"}}`, true},
		{404, `{"error":{"code":"not_found","message":"no such route"}}`, false},
		{400, `{"error":{"code":"invalid_entity_id","message":"m"}}`, false},
	} {
		if got := entityNotFound(h.errorOf(c.status, []byte(c.body))); got != c.gone {
			t.Errorf("%d %s: entity not found = %v, want %v", c.status, c.body, got, c.gone)
		}
	}
	var d dfEntity
	if err := json.Unmarshal([]byte(`{"entityId":{"name":"Counter","key":"k"},"lastOperationTime":"2025-01-31T12:00:00.1234567Z","state":{"n":1}}`), &d); err != nil {
		t.Fatal(err)
	}
	m, err := d.metadata()
	if err != nil || m.ID != taskhub.NewEntityID("counter", "k") || !m.HasState || string(m.State) != `{"n":1}` ||
		!m.LastModified.Equal(time.Date(2025, 1, 31, 12, 0, 0, 123456700, time.UTC)) {
		t.Errorf("Durable Functions entity read as %+v, %v", m, err)
	}
	d = dfEntity{}
	d.EntityID.Name, d.EntityID.Key = "a@b", "k"
	if _, err := d.metadata(); !errors.Is(err, taskhub.ErrInvalidEntityID) {
		t.Errorf("an invalid listed entity: %v", err)
	}
}
