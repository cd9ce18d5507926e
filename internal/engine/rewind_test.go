package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

func hist(evs ...*history.Event) []*history.Event {
	for i, e := range evs {
		e.Seq = int64(i)
	}
	return evs
}

func ev(t history.Type, task int64) *history.Event { return &history.Event{Type: t, TaskID: task} }

func failedEnd() *history.Event {
	return &history.Event{Type: history.ExecutionCompleted, Status: history.StatusFailed}
}

func TestPlanRewind(t *testing.T) {
	fire := time.Unix(100, 0)
	timer := &history.Event{Type: history.TimerCreated, TaskID: 3, FireAt: fire}
	child := &history.Event{Type: history.SubOrchestrationCreated, TaskID: 4, InstanceID: "kid"}
	past := hist(
		ev(history.OrchestratorStarted, 0), ev(history.ExecutionStarted, 0),
		ev(history.TaskScheduled, 0), ev(history.TaskScheduled, 1), ev(history.TaskScheduled, 2), timer, child,
		ev(history.OrchestratorStarted, 0), ev(history.TaskCompleted, 0), // kept: task 0 done
		ev(history.OrchestratorStarted, 0), ev(history.TaskFailed, 1), ev(history.TaskCompleted, 2),
		&history.Event{Type: history.EventRaised, Name: "go"},
		failedEnd(),
	)
	plan, err := planRewind(past)
	if err != nil {
		t.Fatal(err)
	}
	if plan.keep != 9 {
		t.Fatalf("keep %d, want 9 (up to the step of the first failure)", plan.keep)
	}
	var redelivered []string
	for _, e := range plan.redeliver {
		redelivered = append(redelivered, e.Type.String())
	}
	// The raised event and task 2's result are delivered again; the timer
	// never fired in history, so it is re-armed at its FireAt.
	want := []string{"EventRaised", "TaskCompleted", "TimerFired"}
	if len(redelivered) != len(want) {
		t.Fatalf("redelivered %v, want %v", redelivered, want)
	}
	for i := range want {
		if redelivered[i] != want[i] {
			t.Fatalf("redelivered %v, want %v", redelivered, want)
		}
	}
	if !plan.redeliver[2].FireAt.Equal(fire) || plan.redeliver[2].TaskID != 3 {
		t.Fatalf("re-armed timer %+v", plan.redeliver[2])
	}
	if len(plan.rerun) != 1 || plan.rerun[0].TaskID != 1 {
		t.Fatalf("rerun %+v, want task 1", plan.rerun)
	}
	if len(plan.children) != 1 || plan.children[0].instanceID != "kid" || plan.children[0].failure != nil {
		t.Fatalf("children %+v, want kid without a recorded outcome", plan.children)
	}
}

func TestPlanRewindOrchestratorFailure(t *testing.T) {
	past := hist(
		ev(history.OrchestratorStarted, 0), ev(history.ExecutionStarted, 0), ev(history.TaskScheduled, 0),
		ev(history.OrchestratorStarted, 0), ev(history.TaskCompleted, 0), failedEnd(),
	)
	plan, err := planRewind(past)
	if err != nil {
		t.Fatal(err)
	}
	if plan.keep != 3 || len(plan.redeliver) != 1 || plan.redeliver[0].Type != history.TaskCompleted || len(plan.rerun) != 0 {
		t.Fatalf("plan %+v: want the last step redone with its result delivered again", plan)
	}
}

func TestPlanRewindRefusesUnfailed(t *testing.T) {
	done := hist(ev(history.OrchestratorStarted, 0), ev(history.ExecutionStarted, 0),
		&history.Event{Type: history.ExecutionCompleted, Status: history.StatusCompleted})
	for _, past := range [][]*history.Event{nil, done} {
		if _, err := planRewind(past); !errors.Is(err, errRewindDropped) {
			t.Fatalf("planRewind(%d events) = %v, want errRewindDropped", len(past), err)
		}
	}
}
