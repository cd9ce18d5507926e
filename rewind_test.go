package taskhub

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestRewind(t *testing.T) {
	var broken atomic.Bool // while set, "Fragile" fails and "Picky" returns an error
	var fragileRuns, steadyRuns atomic.Int32
	broken.Store(true)
	h := newHarness(t, func(r *Registry) {
		_ = RegisterActivity(r, "Fragile", func(_ ActivityContext, n int) (int, error) {
			fragileRuns.Add(1)
			if broken.Load() {
				return 0, errors.New("downstream unavailable")
			}
			return n * 10, nil
		})
		_ = RegisterActivity(r, "Steady", func(_ ActivityContext, n int) (int, error) {
			steadyRuns.Add(1)
			return n, nil
		})
		// Two steady calls in parallel with a fragile one, then a chain.
		_ = RegisterOrchestrator(r, "Mixed", func(ctx *OrchestrationContext, _ any) (int, error) {
			a, b, c := ctx.CallActivity("Steady", 1), ctx.CallActivity("Fragile", 2), ctx.CallActivity("Steady", 3)
			sum := 0
			for _, task := range []Task{a, b, c} {
				v, err := Await[int](task)
				if err != nil {
					return 0, err
				}
				sum += v
			}
			v, err := Await[int](ctx.CallActivity("Steady", 100))
			return sum + v, err
		})
		_ = RegisterOrchestrator(r, "Parent", func(ctx *OrchestrationContext, _ any) (int, error) {
			return Await[int](ctx.CallSubOrchestrator("Mixed", nil))
		})
		_ = RegisterOrchestrator(r, "Picky", func(ctx *OrchestrationContext, _ any) (string, error) {
			if _, err := Await[int](ctx.CallActivity("Steady", 1)); err != nil {
				return "", err
			}
			if broken.Load() { // an orchestrator bug, "fixed" by the test
				return "", errors.New("orchestrator bug")
			}
			return "fixed", nil
		})
	}, testOptions())
	ctx := ctxT(t)

	rewindAndWait := func(id string) *InstanceStatus {
		t.Helper()
		before, err := h.client.GetInstance(ctx, id)
		must(t, err)
		must(t, h.client.RewindInstance(ctx, id, "fixed downstream"))
		// Finished again, after the rewind was processed.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := h.client.WaitForInstance(wctx, id, func(s *InstanceStatus) bool {
			return s.Finished() && s.LastUpdatedAt.After(before.LastUpdatedAt)
		})
		if err != nil {
			dumpStuck(t, h.client, h.be, id)
			t.Fatal(err)
		}
		return st
	}

	t.Run("failed activity", func(t *testing.T) {
		broken.Store(true)
		st := h.run("Mixed", nil)
		if st.RuntimeStatus != StatusFailed {
			t.Fatalf("first run: %s", st.RuntimeStatus)
		}
		steadyBefore, fragileBefore := steadyRuns.Load(), fragileRuns.Load()
		broken.Store(false)
		st = rewindAndWait(st.InstanceID)
		wantOutput(t, st, "124") // 1 + 20 + 3 + 100
		if got := fragileRuns.Load() - fragileBefore; got != 1 {
			t.Fatalf("Fragile ran %d more times after the rewind, want 1", got)
		}
		// Steady(100) runs for the first time; Steady(3) runs again only if
		// its result arrived after the instance had failed (and was
		// dropped); Steady(1) never runs again.
		if got := steadyRuns.Load() - steadyBefore; got < 1 || got > 2 {
			t.Fatalf("Steady ran %d more times after the rewind, want 1 or 2", got)
		}
		evs, err := h.client.GetHistory(ctx, st.InstanceID)
		must(t, err)
		assertCleanHistory(t, evs, 4)
	})

	t.Run("failed sub-orchestration", func(t *testing.T) {
		broken.Store(true)
		st := h.run("Parent", nil)
		if st.RuntimeStatus != StatusFailed {
			t.Fatalf("first run: %s", st.RuntimeStatus)
		}
		broken.Store(false)
		got := rewindAndWait(st.InstanceID)
		if got.RuntimeStatus != StatusCompleted {
			dumpStuck(t, h.client, h.be, st.InstanceID)
		}
		wantOutput(t, got, "124")
	})

	t.Run("orchestrator failure re-runs its last step", func(t *testing.T) {
		broken.Store(true)
		st := h.run("Picky", nil)
		if st.RuntimeStatus != StatusFailed {
			t.Fatalf("first run: %s", st.RuntimeStatus)
		}
		broken.Store(false)
		wantOutput(t, rewindAndWait(st.InstanceID), `"fixed"`)
	})

	t.Run("only failed instances", func(t *testing.T) {
		st := h.run("Picky", nil)
		if err := h.client.RewindInstance(ctx, st.InstanceID, ""); !errors.Is(err, ErrInstanceNotFailed) {
			t.Fatalf("rewind of a %s instance: %v", st.RuntimeStatus, err)
		}
		if err := h.client.RewindInstance(ctx, "no-such", ""); !errors.Is(err, ErrInstanceNotFound) {
			t.Fatalf("rewind of a missing instance: %v", err)
		}
	})
}
