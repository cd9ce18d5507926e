package samples_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend/sqlite"
	"github.com/taskhub/taskhub/samples"
)

func startWorker(t *testing.T) *taskhub.Client {
	t.Helper()
	be, err := sqlite.Open(filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	reg := taskhub.NewRegistry()
	if err := samples.Register(reg); err != nil {
		t.Fatal(err)
	}
	w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w.Client()
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// balance waits until the account is unlocked with nothing queued and
// returns its balance.
func balance(t *testing.T, c *taskhub.Client, key string) int {
	t.Helper()
	ctx := ctxT(t)
	for {
		m, err := c.GetEntity(ctx, taskhub.NewEntityID(samples.AccountName, key), true)
		if err != nil {
			t.Fatalf("account %s: %v", key, err)
		}
		if m.LockedBy == "" && m.BacklogQueueSize == 0 {
			var a samples.Account
			if err := m.ReadState(&a); err != nil {
				t.Fatal(err)
			}
			return a.Balance
		}
		select {
		case <-ctx.Done():
			t.Fatalf("account %s stays locked by %s", key, m.LockedBy)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestBankTransfer(t *testing.T) {
	c := startWorker(t)
	ctx := ctxT(t)
	keys := []string{"alice", "bob", "carol"}
	for _, k := range keys {
		if err := c.SignalEntity(ctx, taskhub.NewEntityID(samples.AccountName, k), "Deposit", 100); err != nil {
			t.Fatal(err)
		}
	}
	// Many transfers at once, in both directions, over the same accounts.
	var ids []string
	for i := range 30 {
		in := samples.TransferInput{From: keys[i%3], To: keys[(i+1)%3], Amount: 5 + i*7%90}
		if i%2 == 1 {
			in.From, in.To = in.To, in.From
		}
		id, err := c.ScheduleNewOrchestration(ctx, samples.BankTransferName, in)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		st, err := c.WaitForInstanceCompletion(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.RuntimeStatus != taskhub.StatusCompleted {
			t.Fatalf("transfer %s: %s %v", id, st.RuntimeStatus, st.Failure)
		}
	}
	total := 0
	for _, k := range keys {
		b := balance(t, c, k)
		if b < 0 {
			t.Fatalf("account %s is overdrawn: %d", k, b)
		}
		total += b
	}
	if total != 300 {
		t.Fatalf("accounts hold %d, want 300", total)
	}

	// A transfer the source cannot cover moves nothing and says so.
	id, err := c.ScheduleNewOrchestration(ctx, samples.BankTransferName, samples.TransferInput{From: "alice", To: "bob", Amount: 1000})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitForInstanceCompletion(ctx, id)
	if err != nil || string(st.Output) != "false" {
		t.Fatalf("overdraft transfer: %v, output %s", err, st.Output)
	}
	// A bad transfer fails clearly.
	id, err = c.ScheduleNewOrchestration(ctx, samples.BankTransferName, samples.TransferInput{From: "alice", To: "alice", Amount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.WaitForInstanceCompletion(ctx, id); st.RuntimeStatus != taskhub.StatusFailed {
		t.Fatalf("transfer to the same account: %s, want Failed", st.RuntimeStatus)
	}
}

func TestCounter(t *testing.T) {
	c := startWorker(t)
	ctx := ctxT(t)
	id := taskhub.NewEntityID(samples.CounterName, "c")
	for _, op := range []struct {
		name  string
		input any
	}{{"add", 5}, {"add", 7}, {"reset", nil}, {"add", 3}} {
		if err := c.SignalEntity(ctx, id, op.name, op.input); err != nil {
			t.Fatal(err)
		}
	}
	for {
		m, err := c.GetEntity(ctx, id, true)
		if err == nil && string(m.State) == "3" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("counter: %v %v", m, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
