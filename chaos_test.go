package taskhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/backend"
)

// The chaos test runs at least 2,000 mixed orchestrations (chains,
// fan-outs, timers, external events, sub-orchestrations) on 3 worker
// processes while a random worker is SIGKILLed every 1–3 s and restarted.
// Afterwards every instance must have completed with the right output, with
// a clean history, and with an Instances row that agrees with History.
//
// Entities run through the same chaos: BankTransfer orchestrations move
// money between a few accounts inside critical sections (the total must be
// conserved, and every transfer must finish: no deadlock, no lock lost with
// a killed worker), and a counter receives one client signal per instance
// (it must end exact).

const chaosChildEnv = "TASKHUB_CHAOS_CHILD"

func registerChaos(r *Registry) {
	_ = RegisterActivity(r, "Inc", func(_ ActivityContext, n int) (int, error) { return n + 1, nil })
	_ = RegisterOrchestrator(r, "Chain", func(ctx *OrchestrationContext, n int) (int, error) {
		v := 0
		for range n {
			var err error
			if v, err = Await[int](ctx.CallActivity("Inc", v)); err != nil {
				return 0, err
			}
		}
		return v, nil
	})
	_ = RegisterOrchestrator(r, "Fan", func(ctx *OrchestrationContext, n int) (int, error) {
		tasks := make([]Task, n)
		for i := range tasks {
			tasks[i] = ctx.CallActivity("Inc", i)
		}
		sum := 0
		for _, task := range tasks {
			v, err := Await[int](task)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	})
	_ = RegisterOrchestrator(r, "Timer", func(ctx *OrchestrationContext, ms int) (string, error) {
		if err := ctx.CreateTimer(time.Duration(ms) * time.Millisecond).Await(nil); err != nil {
			return "", err
		}
		return "fired", nil
	})
	_ = RegisterOrchestrator(r, "Event", func(ctx *OrchestrationContext, _ any) (string, error) {
		return Await[string](ctx.WaitForExternalEvent("Go", 0))
	})
	_ = RegisterOrchestrator(r, "Parent", func(ctx *OrchestrationContext, n int) (int, error) {
		a, b := ctx.CallSubOrchestrator("Chain", n), ctx.CallSubOrchestrator("Fan", n)
		x, err := Await[int](a)
		if err != nil {
			return 0, err
		}
		y, err := Await[int](b)
		return x + y, err
	})
	_ = RegisterEntityType[e2eAccount](r, "Account")
	_ = RegisterEntity(r, "Counter", e2eCounter)
	_ = RegisterOrchestrator(r, "Transfer", e2eTransfer)
}

// Chaos entities: accounts with chaosInitial each, and the counter.
const (
	chaosAccounts = 6
	chaosInitial  = 1000
)

func chaosOptions() WorkerOptions {
	o := testOptions()
	o.PartitionCount = 4
	o.LeaseDuration = 2 * time.Second
	o.LeaseRenewInterval = 500 * time.Millisecond
	o.LeaseAcquireInterval = 250 * time.Millisecond
	o.WorkItemVisibilityTimeout = 2 * time.Second
	o.MaxQueuePollingInterval = 200 * time.Millisecond
	return o
}

// chaosChild runs a worker until it is killed or sent SIGTERM.
func chaosChild() int {
	be, err := openSpec(context.Background(), os.Getenv("TASKHUB_CHAOS_SPEC"), os.Getenv("TASKHUB_CHAOS_HUB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	reg := NewRegistry()
	registerChaos(reg)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	w, err := NewWorker(be, reg, chaosOptions())
	if err == nil {
		err = w.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 2
	}
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = w.Stop(ctx)
	return 0
}

type chaosCase struct {
	name  string
	input any
	want  string
}

func chaosCases(n int) []chaosCase {
	var cs []chaosCase
	for i := range n {
		switch i % 5 {
		case 0:
			cs = append(cs, chaosCase{"Chain", 5, "5"})
		case 1:
			cs = append(cs, chaosCase{"Fan", 8, "36"}) // sum of 1..8
		case 2:
			cs = append(cs, chaosCase{"Timer", 1000 + 100*(i%20), `"fired"`})
		case 3:
			cs = append(cs, chaosCase{"Event", nil, `"go"`})
		case 4:
			cs = append(cs, chaosCase{"Parent", 3, "9"}) // 3 + (1+2+3)
		}
	}
	return cs
}

func TestChaosSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test; skipped with -short")
	}
	testChaos(t, filepath.Join(t.TempDir(), "hub.db"), "taskhub")
}

func TestChaosPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test; skipped with -short")
	}
	testChaos(t, postgresURL(t), "chaos"+strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
}

func testChaos(t *testing.T, spec, hub string) {
	instances := 2000
	if n, err := strconv.Atoi(os.Getenv("TASKHUB_CHAOS_N")); err == nil {
		instances = n
	}
	limit := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("TASKHUB_CHAOS_TIMEOUT")); err == nil {
		limit = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	be, err := openSpec(ctx, spec, hub)
	must(t, err)
	t.Cleanup(func() {
		_ = be.HubDelete(context.Background())
		be.Close()
	})
	_, err = be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: chaosOptions().PartitionCount, Now: time.Now()})
	must(t, err)
	client := NewClient(be, ClientOptions{MaxPollInterval: 100 * time.Millisecond})

	// Workers, with a chaos monkey that SIGKILLs one every 1–3 s.
	var mu sync.Mutex
	procs := make([]*exec.Cmd, 3)
	start := func(i int) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), chaosChildEnv+"=1", "TASKHUB_CHAOS_SPEC="+spec, "TASKHUB_CHAOS_HUB="+hub)
		cmd.Stderr = os.Stderr
		must(t, cmd.Start())
		go func() { _ = cmd.Wait() }()
		procs[i] = cmd
	}
	for i := range procs {
		start(i)
	}
	monkeyDone := make(chan struct{})
	kills := 0
	var monkey sync.WaitGroup
	monkey.Add(1)
	go func() {
		defer monkey.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			wait := time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
			select {
			case <-monkeyDone:
				return
			case <-time.After(wait):
			}
			mu.Lock()
			i := rng.IntN(len(procs))
			_ = procs[i].Process.Signal(syscall.SIGKILL)
			kills++
			start(i)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGKILL)
		}
	})

	for a := range chaosAccounts {
		must(t, client.SignalEntity(ctx, NewEntityID("Account", strconv.Itoa(a)), "Deposit", chaosInitial))
	}
	counter := NewEntityID("Counter", "chaos")
	transfers := instances / 10
	var transferIDs []string

	cases := chaosCases(instances)
	ids := make([]string, len(cases))
	// Start the instances in waves over about 30 s, so the kills land
	// while work is in flight rather than after it is done.
	wave := max(instances/20, 1)
	if os.Getenv("TASKHUB_CHAOS_BURST") != "" {
		wave = instances // start everything at once
	}
	for i, c := range cases {
		if i > 0 && i%wave == 0 {
			time.Sleep(1500 * time.Millisecond) // pacing the load, not waiting for a result
		}
		ids[i] = fmt.Sprintf("chaos-%04d-%s", i, c.name)
		_, err := client.ScheduleNewOrchestration(ctx, c.name, c.input, WithStartInstanceID(ids[i]))
		must(t, err)
		if c.name == "Event" {
			must(t, client.RaiseEvent(ctx, ids[i], "Go", "go"))
		}
		must(t, client.SignalEntity(ctx, counter, "add", 1))
		if i%10 == 0 && len(transferIDs) < transfers {
			k := len(transferIDs)
			from, to := k%chaosAccounts, (k*5+1)%chaosAccounts
			if from == to {
				to = (to + 1) % chaosAccounts
			}
			id := fmt.Sprintf("chaos-transfer-%04d", k)
			_, err := client.ScheduleNewOrchestration(ctx, "Transfer", e2eTransferInput{From: strconv.Itoa(from), To: strconv.Itoa(to), Amount: 1 + k%300}, WithStartInstanceID(id))
			must(t, err)
			transferIDs = append(transferIDs, id)
		}
	}
	for i, id := range ids {
		st, err := client.WaitForInstanceCompletion(ctx, id)
		if err != nil {
			dumpStuck(t, client, be, id)
			t.Fatalf("%s: %v (after %d kills)", id, err, kills)
		}
		if st.RuntimeStatus != StatusCompleted || string(st.Output) != cases[i].want {
			t.Fatalf("%s: status %s output %s failure %+v, want %s", id, st.RuntimeStatus, st.Output, st.Failure, cases[i].want)
		}
	}
	for _, id := range transferIDs {
		st, err := client.WaitForInstanceCompletion(ctx, id)
		if err != nil {
			dumpStuck(t, client, be, id)
			t.Fatalf("%s: %v (after %d kills)", id, err, kills)
		}
		if st.RuntimeStatus != StatusCompleted {
			t.Fatalf("%s: status %s failure %+v", id, st.RuntimeStatus, st.Failure)
		}
	}
	close(monkeyDone)
	monkey.Wait()
	mu.Lock()
	t.Logf("%d instances completed through %d SIGKILLs", instances, kills)
	mu.Unlock()
	if kills < 3 {
		t.Fatalf("only %d kills happened: the run was too short to test anything", kills)
	}

	// The entities: money conserved, no lock left, the counter exact.
	total := 0
	for a := range chaosAccounts {
		id := NewEntityID("Account", strconv.Itoa(a))
		m := waitEntity(t, client, id, func(m *EntityMetadata) bool { return m.LockedBy == "" && m.BacklogQueueSize == 0 })
		var acct e2eAccount
		must(t, m.ReadState(&acct))
		if acct.Balance < 0 {
			t.Fatalf("account %d: negative balance %d", a, acct.Balance)
		}
		total += acct.Balance
	}
	if total != chaosAccounts*chaosInitial {
		t.Fatalf("accounts hold %d in total after %d transfers, want %d", total, len(transferIDs), chaosAccounts*chaosInitial)
	}
	m := waitEntity(t, client, counter, func(m *EntityMetadata) bool { return m.HasState && string(m.State) == strconv.Itoa(instances) })
	t.Logf("counter %s after %d signals; %d transfers conserved %d", m.State, instances, len(transferIDs), total)

	// Every instance, sub-orchestrations included, has a consistent store.
	checked := 0
	token := ""
	for {
		page, err := be.InstanceList(ctx, &backend.InstanceListParams{PageSize: 500, ContinuationToken: token,
			Filter: backend.InstanceFilter{ExcludeInstanceIDPrefix: "@"}})
		must(t, err)
		for _, row := range page.Instances {
			checkConsistent(t, client, be, row)
			checked++
		}
		if token = page.ContinuationToken; token == "" {
			break
		}
	}
	if want := instances + 2*instances/5 + len(transferIDs); checked != want {
		t.Fatalf("checked %d instances, want %d (with sub-orchestrations)", checked, want)
	}
}

// checkConsistent checks an instance's history has no duplicated or missing
// event and its row agrees with it.
func checkConsistent(t *testing.T, c *Client, be backend.Backend, row *backend.Instance) {
	t.Helper()
	ctx := context.Background()
	evs, err := c.GetHistory(ctx, row.InstanceID)
	must(t, err)
	scheduled, completed := map[string]int{}, map[string]int{}
	var last *HistoryEvent
	for i, e := range evs {
		if e.Seq != int64(i) {
			t.Fatalf("%s: event %d has seq %d", row.InstanceID, i, e.Seq)
		}
		key := func(kind string) string { return fmt.Sprintf("%s/%d", kind, e.TaskID) }
		switch e.Type {
		case "TaskScheduled":
			scheduled[key("task")]++
		case "TaskCompleted", "TaskFailed":
			completed[key("task")]++
		case "TimerCreated":
			scheduled[key("timer")]++
		case "TimerFired":
			completed[key("timer")]++
		case "SubOrchestrationCreated":
			scheduled[key("sub")]++
		case "SubOrchestrationCompleted", "SubOrchestrationFailed":
			completed[key("sub")]++
		case "EntityOperationCalled", "EntityLockRequested":
			scheduled[key("entity")]++
		case "EntityOperationCompleted", "EntityOperationFailed", "EntityLockGranted":
			completed[key("entity")]++
		case "ExecutionStarted", "ExecutionCompleted":
			if e.Type == "ExecutionStarted" && i != 1 {
				t.Fatalf("%s: ExecutionStarted at seq %d", row.InstanceID, i)
			}
		}
		last = e
	}
	for k, n := range scheduled {
		if n != 1 || completed[k] != 1 {
			t.Fatalf("%s: %s scheduled %d times, completed %d times", row.InstanceID, k, n, completed[k])
		}
	}
	for k := range completed {
		if scheduled[k] != 1 {
			t.Fatalf("%s: %s completed but never scheduled", row.InstanceID, k)
		}
	}
	if last == nil || last.Type != "ExecutionCompleted" || last.Status != string(row.Status) {
		t.Fatalf("%s: history ends with %+v, row says %s", row.InstanceID, last, row.Status)
	}
	var histOut, rowOut any
	_ = json.Unmarshal(last.Input, &histOut)
	_ = json.Unmarshal(row.Output, &rowOut)
	if fmt.Sprint(histOut) != fmt.Sprint(rowOut) {
		t.Fatalf("%s: row output %s, history output %s", row.InstanceID, row.Output, last.Input)
	}
	if row.Version != int64(len(evs)) {
		t.Fatalf("%s: row version %d, history has %d events", row.InstanceID, row.Version, len(evs))
	}
	if _, err := be.InstanceGet(ctx, row.InstanceID); errors.Is(err, backend.ErrInstanceNotFound) {
		t.Fatalf("%s vanished", row.InstanceID)
	}
}

// dumpStuck logs what the store says about an instance that did not
// finish: its row, history, its children's, and the queues.
func dumpStuck(t *testing.T, c *Client, be backend.Backend, id string) {
	ctx := context.Background()
	page, _ := be.InstanceList(ctx, &backend.InstanceListParams{Filter: backend.InstanceFilter{InstanceIDPrefix: id}, PageSize: 20})
	if page == nil {
		return
	}
	for _, row := range page.Instances {
		t.Logf("row %s: status %s version %d exec %s", row.InstanceID, row.Status, row.Version, row.ExecutionID)
		evs, _ := c.GetHistory(ctx, row.InstanceID)
		for _, e := range evs {
			t.Logf("   %d %s task=%d name=%s inst=%s input=%s", e.Seq, e.Type, e.TaskID, e.Name, e.InstanceID, e.Input)
		}
	}
	qm, err := be.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: time.Now()})
	if err == nil {
		t.Logf("queues: control %+v work %+v", qm.Control, qm.Work)
	}
	parts, _ := be.PartitionList(ctx)
	for _, p := range parts {
		t.Logf("partition %d owner %s epoch %d expires %s", p.Index, p.Owner, p.Epoch, time.Until(p.LeaseExpiresAt))
	}
	poison, _ := be.PoisonList(ctx, 5)
	for _, p := range poison {
		t.Logf("poison %s %s: %s", p.Queue, p.InstanceID, p.Reason)
	}
}
