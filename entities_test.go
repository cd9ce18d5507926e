package taskhub

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/entity"
	"github.com/taskhub/taskhub/internal/payload"
)

// End-to-end tests of durable entities on a real worker (SQLite). The pure
// batch rules are tested in internal/entity; these check the wiring:
// batches and commits, messages between entities and orchestrations,
// critical sections, the client and bad input.

// e2eCounter is a function-style counter: add, fail (changes the state,
// then fails), get, big (sets a large state).
func e2eCounter(ctx *EntityContext) (any, error) {
	var n int
	if ctx.HasState() {
		if err := ctx.GetState(&n); err != nil {
			return nil, err
		}
	}
	switch ctx.Operation() {
	case "add":
		var d int
		if err := ctx.GetInput(&d); err != nil {
			return nil, err
		}
		return n + d, ctx.SetState(n + d)
	case "fail":
		if err := ctx.SetState(n + 1000); err != nil {
			return nil, err
		}
		return nil, errors.New("fail on purpose")
	case "get":
		return n, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownOperation, ctx.Operation())
}

// e2eLog is a function-style entity appending its inputs to a list.
func e2eLog(ctx *EntityContext) (any, error) {
	var l []string
	if ctx.HasState() {
		if err := ctx.GetState(&l); err != nil {
			return nil, err
		}
	}
	var s string
	if err := ctx.GetInput(&s); err != nil {
		return nil, err
	}
	return nil, ctx.SetState(append(l, s))
}

type e2eAccount struct {
	Balance int `json:"balance"`
}

func (a *e2eAccount) Deposit(n int) { a.Balance += n }
func (a *e2eAccount) Withdraw(n int) error {
	if n > a.Balance {
		return NonRetryable(fmt.Errorf("balance %d cannot cover %d", a.Balance, n))
	}
	a.Balance -= n
	return nil
}
func (a *e2eAccount) Get() int { return a.Balance }

type e2eTransferInput struct {
	From, To string
	Amount   int
}

// e2eTransfer moves money between two testAccounts in a critical section.
func e2eTransfer(ctx *OrchestrationContext, in e2eTransferInput) (bool, error) {
	from, to := NewEntityID("Account", in.From), NewEntityID("Account", in.To)
	unlock, err := ctx.LockEntities(from, to)
	if err != nil {
		return false, err
	}
	defer unlock()
	bal, err := Await[int](ctx.CallEntity(from, "Get", nil))
	if err != nil {
		return false, err
	}
	if bal < in.Amount {
		return false, nil
	}
	if err := ctx.CallEntity(from, "Withdraw", in.Amount).Await(nil); err != nil {
		return false, err
	}
	if err := ctx.CallEntity(to, "Deposit", in.Amount).Await(nil); err != nil {
		return false, err
	}
	return true, nil
}

func registerEntityTests(r *Registry) {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(RegisterEntity(r, "Counter", e2eCounter))
	must(RegisterEntity(r, "Log", e2eLog))
	must(RegisterEntityType[e2eAccount](r, "Account"))
	must(RegisterOrchestrator(r, "Transfer", e2eTransfer))
	must(RegisterOrchestrator(r, "CallCounter", func(ctx *OrchestrationContext, in struct {
		Name, Key, Op string
		N             int
	}) (int, error) {
		id := NewEntityID(cmp.Or(in.Name, "Counter"), in.Key)
		return Await[int](ctx.CallEntity(id, in.Op, in.N))
	}))
	must(RegisterOrchestrator(r, "SignalMany", func(ctx *OrchestrationContext, in struct {
		Entity, Prefix string
		N              int
	}) (int, error) {
		id, err := ParseEntityID(in.Entity)
		if err != nil {
			return 0, err
		}
		for i := range in.N {
			var v any = 1
			if in.Prefix != "" {
				v = fmt.Sprintf("%s%04d", in.Prefix, i)
			}
			if err := ctx.SignalEntity(id, "add", v); err != nil {
				return 0, err
			}
			if i%7 == 6 { // spread the signals over several steps
				if err := ctx.CreateTimer(0).Await(nil); err != nil {
					return 0, err
				}
			}
		}
		return in.N, nil
	}))
}

// waitEntity waits until the entity's row satisfies cond.
func waitEntity(t *testing.T, c *Client, id EntityID, cond func(*EntityMetadata) bool) *EntityMetadata {
	t.Helper()
	ctx := ctxT(t)
	var last *EntityMetadata
	_, err := c.c.Wait(ctx, id.String(), func(row *backend.Instance) bool {
		r := *row
		var err error
		if r.Output, err = payload.Resolve(ctx, c.be.PayloadGet, r.Output); err != nil {
			return false
		}
		m, err := entityMetadata(&r, true)
		if err != nil {
			return false
		}
		last = m
		return cond(m)
	})
	if err != nil {
		t.Fatalf("entity %s: %v (last seen %+v)", id, err, last)
	}
	return last
}

func stateInt(t *testing.T, m *EntityMetadata) int {
	t.Helper()
	var n int
	if err := m.ReadState(&n); err != nil {
		t.Fatalf("entity %s: %v", m.ID, err)
	}
	return n
}

func TestEntityCounter(t *testing.T) {
	h := newHarness(t, registerEntityTests, testOptions())
	ctx := ctxT(t)
	id := NewEntityID("Counter", "c1")
	if _, err := h.client.GetEntity(ctx, id, true); !errors.Is(err, ErrEntityNotFound) {
		t.Fatalf("GetEntity before any signal: %v, want ErrEntityNotFound", err)
	}
	for i := 1; i <= 10; i++ {
		must(t, h.client.SignalEntity(ctx, id, "add", i))
	}
	m := waitEntity(t, h.client, id, func(m *EntityMetadata) bool { return m.HasState && string(m.State) == "55" })
	if m.LockedBy != "" || m.BacklogQueueSize != 0 {
		t.Fatalf("metadata %+v", m)
	}
	// A call from an orchestration gets the operation's result.
	st := h.run("CallCounter", map[string]any{"Key": "c1", "Op": "add", "N": 5})
	wantOutput(t, st, "60")
	got, err := h.client.GetEntity(ctx, id, true)
	must(t, err)
	if stateInt(t, got) != 60 {
		t.Fatalf("state %s, want 60", got.State)
	}
	// The built-in delete removes the state.
	must(t, h.client.SignalEntity(ctx, id, "delete", nil))
	waitEntity(t, h.client, id, func(m *EntityMetadata) bool { return !m.HasState })
	if _, err := h.client.GetEntity(ctx, id, true); !errors.Is(err, ErrEntityNotFound) {
		t.Fatalf("GetEntity after delete: %v, want ErrEntityNotFound", err)
	}
}

// TestEntityBatching: N signals waiting when the worker starts run in
// ⌈N/B⌉ batches (each one commit), and B = 1 disables batching.
func TestEntityBatching(t *testing.T) {
	const n = 300
	for _, b := range []int{1, 7, 64, 5000} {
		t.Run(fmt.Sprint("batch-", b), func(t *testing.T) {
			reg := NewRegistry()
			registerEntityTests(reg)
			be := openSQLite(t, t.TempDir()+"/hub.db")
			ctx := ctxT(t)
			_, err := be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: time.Now()})
			must(t, err)
			c := NewClient(be, ClientOptions{})
			id := NewEntityID("Counter", "batched")
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- c.SignalEntity(ctx, id, "add", 1+i%3) // never 0: the sum grows with every operation
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				must(t, err)
			}

			opts := testOptions()
			opts.PartitionCount = 1
			opts.ControlQueueBatchSize = 1000
			opts.ControlQueueBufferThreshold = 1000
			opts.MaxEntityOperationBatchSize = b
			var mu sync.Mutex
			var sizes []int
			opts.hooks.OnEntityBatch = func(_ string, ops, _ int, _ time.Duration) {
				mu.Lock()
				sizes = append(sizes, ops)
				mu.Unlock()
			}
			w, err := NewWorker(be, reg, opts)
			must(t, err)
			must(t, w.Start(ctx))
			defer w.Stop(context.Background())
			want := 0
			for i := range n {
				want += 1 + i%3
			}
			waitEntity(t, w.Client(), id, func(m *EntityMetadata) bool { return string(m.State) == fmt.Sprint(want) })
			mu.Lock()
			defer mu.Unlock()
			if batches := (n + b - 1) / b; len(sizes) != batches {
				t.Fatalf("batch size %d: %d signals ran in %d batches %v, want %d", b, n, len(sizes), sizes, batches)
			}
			for i, s := range sizes {
				if s > b {
					t.Fatalf("batch %d ran %d operations, more than %d", i, s, b)
				}
			}
		})
	}
}

// TestEntityPerSenderOrder: each sender's operations apply in the order
// sent, with several senders interleaving.
func TestEntityPerSenderOrder(t *testing.T) {
	opts := testOptions()
	opts.MaxEntityOperationBatchSize = 5
	h := newHarness(t, registerEntityTests, opts)
	ctx := ctxT(t)
	id := NewEntityID("Log", "order")
	const perSender = 60
	ids := make([]string, 3)
	for i := range ids {
		var err error
		ids[i], err = h.client.ScheduleNewOrchestration(ctx, "SignalMany", map[string]any{"Entity": id.String(), "Prefix": fmt.Sprintf("o%d-", i), "N": perSender})
		must(t, err)
	}
	for i := range perSender { // a client sender, one signal after another
		must(t, h.client.SignalEntity(ctx, id, "add", fmt.Sprintf("c-%04d", i)))
	}
	for _, oid := range ids {
		st, err := h.client.WaitForInstanceCompletion(ctx, oid)
		must(t, err)
		wantOutput(t, st, fmt.Sprint(perSender))
	}
	m := waitEntity(t, h.client, id, func(m *EntityMetadata) bool {
		var l []string
		return json.Unmarshal(m.State, &l) == nil && len(l) >= 4*perSender
	})
	var l []string
	must(t, json.Unmarshal(m.State, &l))
	if len(l) != 4*perSender {
		t.Fatalf("log holds %d entries, want %d", len(l), 4*perSender)
	}
	bySender := map[string][]string{}
	for _, s := range l {
		p, _, _ := strings.Cut(s, "-")
		bySender[p] = append(bySender[p], s)
	}
	for p, seq := range bySender {
		if !slices.IsSorted(seq) || len(seq) != perSender {
			t.Fatalf("sender %s: %d entries, in order %v: %v", p, len(seq), slices.IsSorted(seq), seq)
		}
	}
}

// TestEntityRollback: a failing operation rolls back only its own change;
// the operations around it in the same batch stay applied, and a caller
// gets the failure.
func TestEntityRollback(t *testing.T) {
	h := newHarness(t, registerEntityTests, testOptions())
	ctx := ctxT(t)
	id := NewEntityID("Counter", "rb")
	for _, op := range []string{"add", "fail", "add", "fail", "add"} {
		must(t, h.client.SignalEntity(ctx, id, op, 1))
	}
	waitEntity(t, h.client, id, func(m *EntityMetadata) bool { return string(m.State) == "3" })
	st := h.run("CallCounter", map[string]any{"Key": "rb", "Op": "fail"})
	if st.RuntimeStatus != StatusFailed || st.Failure == nil || !strings.Contains(st.Failure.Error(), "fail on purpose") {
		t.Fatalf("call of a failing operation: status %s failure %v", st.RuntimeStatus, st.Failure)
	}
	m, err := h.client.GetEntity(ctx, id, true)
	must(t, err)
	if string(m.State) != "3" {
		t.Fatalf("state %s after a failed call, want 3", m.State)
	}
}

// TestEntityBankTransfers: many concurrent transfers over few accounts
// conserve the total and all finish (no deadlock).
func TestEntityBankTransfers(t *testing.T) {
	h := newHarness(t, registerEntityTests, testOptions())
	ctx := ctxT(t)
	const accounts, transfers, initial = 5, 60, 100
	for i := range accounts {
		must(t, h.client.SignalEntity(ctx, NewEntityID("Account", fmt.Sprint(i)), "Deposit", initial))
	}
	for i := range accounts {
		waitEntity(t, h.client, NewEntityID("Account", fmt.Sprint(i)), func(m *EntityMetadata) bool { return m.HasState })
	}
	ids := make([]string, transfers)
	for i := range ids {
		from, to := i%accounts, (i*3+1)%accounts
		if from == to {
			to = (to + 1) % accounts
		}
		var err error
		ids[i], err = h.client.ScheduleNewOrchestration(ctx, "Transfer", e2eTransferInput{From: fmt.Sprint(from), To: fmt.Sprint(to), Amount: 10 + i%50})
		must(t, err)
	}
	moved := 0
	for _, id := range ids {
		st, err := h.client.WaitForInstanceCompletion(ctx, id)
		must(t, err)
		if st.RuntimeStatus != StatusCompleted {
			t.Fatalf("transfer %s: %s %v", id, st.RuntimeStatus, st.Failure)
		}
		if string(st.Output) == "true" {
			moved++
		}
	}
	total := 0
	for i := range accounts {
		m := waitEntity(t, h.client, NewEntityID("Account", fmt.Sprint(i)), func(m *EntityMetadata) bool { return m.LockedBy == "" })
		var a e2eAccount
		must(t, m.ReadState(&a))
		if a.Balance < 0 {
			t.Fatalf("account %d has a negative balance %d", i, a.Balance)
		}
		total += a.Balance
	}
	if total != accounts*initial {
		t.Fatalf("total balance %d, want %d (%d transfers moved money)", total, accounts*initial, moved)
	}
	if moved == 0 {
		t.Fatalf("no transfer moved money: the test tested nothing")
	}
}

// TestEntityBadInput: unknown entities and operations fail clearly, bad IDs
// are refused, and a large state goes through the large-payload path.
func TestEntityBadInput(t *testing.T) {
	h := newHarness(t, registerEntityTests, testOptions())
	ctx := ctxT(t)

	st := h.run("CallCounter", map[string]any{"Name": "Nobody", "Key": "x", "Op": "add", "N": 1})
	if st.RuntimeStatus != StatusFailed || !strings.Contains(st.Failure.Error(), entity.FailureTypeNotRegistered) || !strings.Contains(st.Failure.Error(), "nobody") {
		t.Fatalf("call to an unregistered entity: %s %v", st.RuntimeStatus, st.Failure)
	}
	st = h.run("CallCounter", map[string]any{"Key": "x", "Op": "explode", "N": 1})
	if st.RuntimeStatus != StatusFailed || !strings.Contains(st.Failure.Error(), entity.FailureTypeOperationNotFound) || !strings.Contains(st.Failure.Error(), "explode") {
		t.Fatalf("call of an unknown operation: %s %v", st.RuntimeStatus, st.Failure)
	}
	for _, bad := range []EntityID{{Name: "", Key: "k"}, {Name: "a@b", Key: "k"}, {Name: "Counter", Key: ""}} {
		if err := h.client.SignalEntity(ctx, bad, "add", 1); !errors.Is(err, ErrInvalidEntityID) {
			t.Errorf("SignalEntity(%+v): %v, want ErrInvalidEntityID", bad, err)
		}
	}
	if err := h.client.SignalEntity(ctx, NewEntityID("Counter", "k"), "add", func() {}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("SignalEntity with an unencodable input: %v, want ErrInvalidInput", err)
	}
	if _, err := h.client.ScheduleNewOrchestration(ctx, "CallCounter", nil, WithStartInstanceID("@counter@k")); err == nil {
		t.Errorf("an orchestration with an entity ID was accepted")
	}

	// A state above the large-payload threshold is stored by reference.
	big := NewEntityID("Log", "big")
	long := strings.Repeat("x", 100*1024)
	must(t, h.client.SignalEntity(ctx, big, "add", long))
	m := waitEntity(t, h.client, big, func(m *EntityMetadata) bool { return m.HasState })
	var l []string
	must(t, m.ReadState(&l))
	if len(l) != 1 || l[0] != long {
		t.Fatalf("large state did not round-trip (%d entries)", len(l))
	}
	row, err := h.be.InstanceGet(ctx, big.String())
	must(t, err)
	if !payload.IsRef(row.Output) {
		t.Fatalf("a %d-byte state is stored inline (%d bytes), not through the large-payload path", len(long), len(row.Output))
	}
}

// TestEntityQueryAndClean: listing with filters and paging, and cleaning
// empty entities and orphaned locks.
func TestEntityQueryAndClean(t *testing.T) {
	h := newHarness(t, registerEntityTests, testOptions())
	ctx := ctxT(t)
	for i := range 7 {
		must(t, h.client.SignalEntity(ctx, NewEntityID("Counter", fmt.Sprintf("q%d", i)), "add", i+1))
	}
	must(t, h.client.SignalEntity(ctx, NewEntityID("Log", "q"), "add", "x"))
	for i := range 7 {
		waitEntity(t, h.client, NewEntityID("Counter", fmt.Sprintf("q%d", i)), func(m *EntityMetadata) bool { return m.HasState })
	}
	waitEntity(t, h.client, NewEntityID("Log", "q"), func(m *EntityMetadata) bool { return m.HasState })
	// Delete two counters: they stay as empty rows until cleaned.
	for _, k := range []string{"q0", "q1"} {
		must(t, h.client.SignalEntity(ctx, NewEntityID("Counter", k), "delete", nil))
		waitEntity(t, h.client, NewEntityID("Counter", k), func(m *EntityMetadata) bool { return !m.HasState })
	}

	var seen []string
	token := ""
	for {
		page, err := h.client.QueryEntities(ctx, EntityQuery{Name: "counter", IncludeState: true, PageSize: 2, ContinuationToken: token})
		must(t, err)
		if len(page.Entities) > 2 {
			t.Fatalf("page of %d entities, want at most 2", len(page.Entities))
		}
		for _, m := range page.Entities {
			if m.ID.Name != "counter" || !m.HasState || len(m.State) == 0 {
				t.Fatalf("listed %+v", m)
			}
			seen = append(seen, m.ID.Key)
		}
		if token = page.ContinuationToken; token == "" {
			break
		}
	}
	if want := []string{"q2", "q3", "q4", "q5", "q6"}; !slices.Equal(seen, want) {
		t.Fatalf("listed %v, want %v", seen, want)
	}
	all, err := h.client.QueryEntities(ctx, EntityQuery{IncludeDeleted: true})
	must(t, err)
	if len(all.Entities) != 8 {
		t.Fatalf("with deleted: %d entities, want 8", len(all.Entities))
	}
	inst, err := h.client.QueryInstances(ctx, InstanceQuery{})
	must(t, err)
	for _, st := range inst.Instances {
		if strings.HasPrefix(st.InstanceID, "@") {
			t.Fatalf("QueryInstances lists entity %s", st.InstanceID)
		}
	}

	// An orphaned lock: the holder is an orchestration that no longer
	// exists (written into the record directly: the runtime itself
	// releases a lock granted to an orchestration that is gone, so this
	// state arises only from lost messages), then clean.
	acct := NewEntityID("Account", "orphan")
	must(t, h.client.SignalEntity(ctx, acct, "Deposit", 5))
	waitEntity(t, h.client, acct, func(m *EntityMetadata) bool { return m.HasState })
	lockFor(t, h.be, acct, "ghost-orchestration")
	waitEntity(t, h.client, acct, func(m *EntityMetadata) bool { return m.LockedBy == "ghost-orchestration" })
	must(t, h.client.SignalEntity(ctx, acct, "Deposit", 5)) // queued behind the lock
	waitEntity(t, h.client, acct, func(m *EntityMetadata) bool { return m.BacklogQueueSize == 1 })

	res, err := h.client.CleanEntityStorage(ctx, true, true)
	must(t, err)
	if res.EmptyEntitiesRemoved != 2 || res.OrphanedLocksReleased != 1 {
		t.Fatalf("clean: %+v, want 2 removed and 1 released", res)
	}
	m := waitEntity(t, h.client, acct, func(m *EntityMetadata) bool { return m.LockedBy == "" && m.BacklogQueueSize == 0 })
	var a e2eAccount
	must(t, m.ReadState(&a))
	if a.Balance != 10 {
		t.Fatalf("balance %d after the lock was released, want 10 (the queued deposit runs)", a.Balance)
	}
	all, err = h.client.QueryEntities(ctx, EntityQuery{IncludeDeleted: true})
	must(t, err)
	if len(all.Entities) != 7 {
		t.Fatalf("after clean: %d entities, want 7", len(all.Entities))
	}
}

// lockFor writes a lock held by holder into an entity's record.
func lockFor(t *testing.T, be backend.Backend, id EntityID, holder string) {
	t.Helper()
	ctx := ctxT(t)
	row, err := be.InstanceGet(ctx, id.String())
	must(t, err)
	rec := entity.Record{LockedBy: &entity.Holder{InstanceID: holder, ExecutionID: "e1", LockID: "l1"}}
	row.Input, err = json.Marshal(rec)
	must(t, err)
	old := row.Version
	row.Version++
	errs, err := be.CommitBatch(ctx, []*backend.Commit{{
		Instance: &backend.InstanceCondition{InstanceID: row.InstanceID, ExpectVersion: old},
		Writes:   backend.Writes{InstanceUpsert: row},
		Now:      time.Now(),
	}})
	must(t, err)
	must(t, errs[0])
}

// TestEntityCallsCounted: an orchestration's calls and signals to one
// entity, interleaved with a client's signals, are each applied once.
func TestEntityCallsCounted(t *testing.T) {
	h := newHarness(t, registerEntityTests, testOptions())
	ctx := ctxT(t)
	id := NewEntityID("Counter", "mixed")
	oid, err := h.client.ScheduleNewOrchestration(ctx, "SignalMany", map[string]any{"Entity": id.String(), "N": 50})
	must(t, err)
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if h.client.SignalEntity(ctx, id, "add", 1) == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	_, err = h.client.WaitForInstanceCompletion(ctx, oid)
	must(t, err)
	want := 50 + int(sent.Load())
	m := waitEntity(t, h.client, id, func(m *EntityMetadata) bool { return string(m.State) == fmt.Sprint(want) })
	if stateInt(t, m) != 150 {
		t.Fatalf("counter %d, want 150", stateInt(t, m))
	}
}

// TestEntityActionsEndToEnd: an operation that signals another entity and
// starts an orchestration, and a signal scheduled for later.
func TestEntityActionsEndToEnd(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		registerEntityTests(r)
		registerHello(r)
		must(t, RegisterEntity(r, "Relay", func(ctx *EntityContext) (any, error) {
			switch ctx.Operation() {
			case "forward": // signal the counter, then start Hello with a known ID
				var n int
				if err := ctx.GetInput(&n); err != nil {
					return nil, err
				}
				if err := ctx.SignalEntity(NewEntityID("Counter", "relayed"), "add", n); err != nil {
					return nil, err
				}
				_, err := ctx.ScheduleNewOrchestration("Hello", nil, WithStartInstanceID("started-by-entity"))
				return nil, err
			}
			return nil, ErrUnknownOperation
		}))
	}, testOptions())
	ctx := ctxT(t)
	must(t, h.client.SignalEntity(ctx, NewEntityID("Relay", "r"), "forward", 9))
	waitEntity(t, h.client, NewEntityID("Counter", "relayed"), func(m *EntityMetadata) bool { return string(m.State) == "9" })
	st, err := h.client.WaitForInstanceCompletion(ctx, "started-by-entity")
	must(t, err)
	wantOutput(t, st, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`)

	// A scheduled signal is applied no earlier than its time.
	at := time.Now().Add(300 * time.Millisecond)
	id := NewEntityID("Counter", "later")
	must(t, h.client.SignalEntity(ctx, id, "add", 1, WithSignalTime(at)))
	m := waitEntity(t, h.client, id, func(m *EntityMetadata) bool { return m.HasState })
	if m.LastModified.Before(at) {
		t.Fatalf("a signal scheduled for %v was applied at %v", at, m.LastModified)
	}
}
