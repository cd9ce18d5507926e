package orchestration

import (
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

var update = flag.Bool("update", false, "rewrite the recorded histories in testdata/ from the current code")

// scenarios produce the recorded histories of testdata/. Each runs the test
// orchestrators (harness_test.go) through the harness.
var scenarios = []struct {
	file, about string
	run         func(h *harness)
}{
	{"sequence.jsonl", "Sequence: three activities one after the other.", func(h *harness) {
		h.start("Sequence", nil)
		h.drive(activities)
	}},
	{"fanout.jsonl", "FanOut of 5: five activities at once, all results in one step.", func(h *harness) {
		h.start("FanOut", js(5))
		h.drive(activities)
	}},
	{"approval_timeout.jsonl", "Approval: no event within the hour, the timer fires, Escalate runs.", func(h *harness) {
		h.start("Approval", js("doc-7"))
		h.drive(activities)
	}},
	{"approval_event.jsonl", "Approval: the event comes (in other case) before the timeout.", func(h *harness) {
		h.start("Approval", js("doc-8"))
		h.now = h.now.Add(time.Minute)
		h.step(h.raise("APPROVE", js("approved by ann")))
	}},
	{"retry.jsonl", "Retry: Flaky fails twice; retries wait 1s then 2s on durable timers.", func(h *harness) {
		h.start("Retry", js("order-1"))
		h.drive(activities)
	}},
	{"parent.jsonl", "Parent: a sub-orchestration, then an event sent to another instance.", func(h *harness) {
		h.start("Parent", nil)
		h.now = h.now.Add(time.Minute)
		h.step(h.msg(&history.Event{Type: history.SubOrchestrationCompleted, TaskID: 0, Input: js([]string{"a", "b"})}))
	}},
	{"suspend_resume.jsonl", "Sequence suspended: a completion is held until the resume.", func(h *harness) {
		h.start("Sequence", nil)
		h.step(h.control(history.ExecutionSuspended, "maintenance"))
		h.step(h.answers(activities)...)
		h.now = h.now.Add(time.Minute)
		h.step(h.control(history.ExecutionResumed, "done"))
		h.drive(activities)
	}},
	{"counter_continue_as_new.jsonl", "Counter: an event, then ContinueAsNew (first execution).", func(h *harness) {
		h.start("Counter", js(0))
		h.step(h.raise("add", js(1)), h.raise("add", js(5)))
	}},
	{"clock_running.jsonl", "Clock: still waiting on its timer (an unfinished history).", func(h *harness) {
		h.start("Clock", nil)
	}},
	{"bank_entities.jsonl", "Bank: a critical section on two entities, three calls, the release, a signal.", func(h *harness) {
		h.start("Bank", js(map[string]any{"From": "@account@alice", "To": "@account@bob", "Amount": 5}))
		lk := entityLockID(h.id, "exec-1", 0)
		h.now = h.now.Add(time.Second)
		h.step(h.msg(&history.Event{Type: history.EntityLockGranted, TaskID: 0, Name: lk, Input: js([]string{"@account@alice", "@account@bob"})}))
		h.now = h.now.Add(time.Second)
		h.step(h.msg(&history.Event{Type: history.EntityOperationCompleted, TaskID: 1, Input: js(10)}))
		h.now = h.now.Add(time.Second)
		h.step(h.msg(&history.Event{Type: history.EntityOperationCompleted, TaskID: 3}),
			h.msg(&history.Event{Type: history.EntityOperationCompleted, TaskID: 2}))
	}},
}

// TestRecordedHistories runs the scenarios and compares the histories they
// produce with the recorded ones: a change in what the runtime records (or
// in the test orchestrators) shows up here as a diff. Run with -update to
// accept it.
func TestRecordedHistories(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.file, func(t *testing.T) {
			h := newHarness(t, "inst-"+strings.TrimSuffix(sc.file, ".jsonl"), lookup)
			sc.run(h)
			path := filepath.Join("testdata", sc.file)
			header := []string{
				"# " + sc.about,
				"# Recorded by TestRecordedHistories (go test -run TestRecordedHistories -update).",
				"#! instance " + h.id,
				"#! check steps",
			}
			if *update {
				if err := writeHistoryFile(path, header, h.hist); err != nil {
					t.Fatal(err)
				}
				return
			}
			f, err := readHistoryFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to record it)", err)
			}
			got, want := eventLines(h.hist), eventLines(f.Events)
			if !slices.Equal(got, want) {
				t.Fatalf("history differs from %s (run with -update if the change is intended):\n got:\n%s\nwant:\n%s",
					path, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func eventLines(es []*history.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = encodeEventJSON(e)
	}
	return out
}

// TestReplayTestdata replays every file of testdata/ on fresh Instances.
//
//	#! instance <id>          the instance ID (default "replayed")
//	#! check steps            for every recorded step k: replay the events
//	                          before it, deliver the step's messages again,
//	                          and require exactly the recorded events of k
//	#! expect-failure <text>  replaying the whole history must fail the
//	                          non-determinism check with a message
//	                          containing text (the directive may repeat)
//	#! expect-release <id>    with expect-failure: the failure releases the
//	                          critical section history holds, on entity id
//	                          (one directive per entity, in order)
func TestReplayTestdata(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < len(scenarios)+4 {
		t.Fatalf("found %d testdata files, expected the %d recorded ones and the non-determinism cases", len(files), len(scenarios))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := readHistoryFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Events) == 0 {
				t.Fatal("no events")
			}
			id := "replayed"
			if v := f.directive("instance"); len(v) > 0 {
				id = v[0]
			}
			checked := false
			if len(f.directive("check")) > 0 {
				checkSteps(t, id, f.Events)
				checked = true
			}
			if wants := f.directive("expect-failure"); len(wants) > 0 {
				checkNonDeterminism(t, id, f.Events, wants, f.directive("expect-release"))
				checked = true
			}
			if !checked {
				t.Fatal("the file has no directive: it would test nothing")
			}
		})
	}
}

func executionOf(events []*history.Event) string {
	for _, e := range events {
		if e.Type == history.ExecutionStarted {
			return e.ExecutionID
		}
	}
	return ""
}

// isMessageEvent reports whether a recorded event came from a message (and
// so is input to its step, not output).
func isMessageEvent(t history.Type) bool {
	switch t {
	case history.ExecutionStarted, history.EventRaised, history.ExecutionTerminated, history.ExecutionSuspended, history.ExecutionResumed:
		return true
	}
	return kindCompletedBy(t) != 0
}

func checkSteps(t *testing.T, id string, events []*history.Event) {
	execID := executionOf(events)
	var starts []int
	for i, e := range events {
		if e.Type == history.OrchestratorStarted {
			starts = append(starts, i)
		}
	}
	for n, k := range starts {
		end := len(events)
		if n+1 < len(starts) {
			end = starts[n+1]
		}
		var msgs []*history.Message
		for _, e := range events[k+1 : end] {
			if isMessageEvent(e.Type) {
				c := *e
				c.Seq = 0
				msgs = append(msgs, &history.Message{InstanceID: id, ExecutionID: execID, Event: &c})
			}
		}
		in := NewInstance(id, lookup, Options{})
		res, err := in.Step(events[:k], msgs, events[k].Time)
		in.Close()
		if err != nil {
			t.Fatalf("step at Seq %d: %v", k, err)
		}
		if res.Replayed != k {
			t.Fatalf("step at Seq %d replayed %d events", k, res.Replayed)
		}
		got, want := eventLines(res.NewEvents), eventLines(events[k:end])
		if !slices.Equal(got, want) {
			t.Fatalf("replaying up to Seq %d and re-delivering the step's %d messages gives:\n%s\nrecorded:\n%s",
				k, len(msgs), strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func checkNonDeterminism(t *testing.T, id string, events []*history.Event, wants, releases []string) {
	in := NewInstance(id, lookup, Options{})
	defer in.Close()
	now := events[len(events)-1].Time.Add(time.Hour)
	res, err := in.Step(events, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusFailed || res.Failure == nil || res.Failure.Type != FailureTypeNonDeterminism {
		t.Fatalf("status %s failure %v, want a %s failure", res.Status, res.Failure, FailureTypeNonDeterminism)
	}
	for _, w := range wants {
		if !strings.Contains(res.Failure.Message, w) {
			t.Errorf("failure message\n  %s\ndoes not contain\n  %s", res.Failure.Message, w)
		}
	}
	wantStrings(t, "events", summaries(res.NewEvents), []string{"OrchestratorStarted", "ExecutionCompleted Failed failure=" + FailureTypeNonDeterminism})
	var others []Outbound
	var released []string
	for _, o := range res.Outbound {
		if o.Message.Event.Type == history.EntityLockReleased {
			released = append(released, o.Message.InstanceID)
		} else {
			others = append(others, o)
		}
	}
	if !res.Done || len(others) != 0 {
		t.Fatalf("done %v outbound %v: a failed replay sends nothing but lock releases (no parent here)", res.Done, outboundSummaries(res.Outbound))
	}
	wantStrings(t, "released entities", released, releases)
	t.Logf("%s", res.Failure.Message)
}
