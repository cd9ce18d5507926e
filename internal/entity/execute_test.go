package entity

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// batchCase is one Execute call on the journal entity "@journal@j" and
// everything it must produce. nil expectations mean "none".
type batchCase struct {
	name   string
	rec    Record
	state  []byte
	reqs   []Request
	max    int
	invoke Invoke // journal when nil, unless noInvoke
	// noInvoke passes a nil Invoke on purpose.
	noInvoke bool

	wantState     []byte
	wantDeleted   bool
	wantConsumed  []string
	wantApplied   int
	wantResponses []string
	wantOutbound  []string
	wantLockedBy  *Holder
	wantQueued    []string
	wantFailures  []string // failure types, in order
	check         func(t *testing.T, res Result)
}

const journalID = "@journal@j"

var batchCases = []batchCase{
	// ---- plain operations ----
	{
		name:         "operations apply in queue order",
		reqs:         []Request{signal("1", orchA, 1, "append", "a"), signal("2", orchB, 1, "append", "b"), signal("3", orchA, 2, "append", "c")},
		wantState:    []byte("a,b,c"),
		wantConsumed: []string{"1", "2", "3"},
		wantApplied:  3,
		check: func(t *testing.T, res Result) {
			want := map[string]map[string]uint64{"orch-a": {"e1": 2}, "orch-b": {"e1": 1}}
			if !reflect.DeepEqual(res.Record.Seen, want) {
				t.Errorf("Seen = %v, want %v", res.Record.Seen, want)
			}
		},
	},
	{
		name:          "a call is answered, a signal is not",
		state:         []byte("s"),
		reqs:          []Request{callOp("1", orchA, 1, "get", "", 7), signal("2", orchA, 2, "get", "")},
		wantState:     []byte("s"),
		wantConsumed:  []string{"1", "2"},
		wantApplied:   2,
		wantResponses: []string{"orch-a#7=s"},
		check: func(t *testing.T, res Result) {
			if res.StateChanged {
				t.Error("StateChanged after read-only operations")
			}
		},
	},
	{
		name:          "unknown operation fails through invoke",
		reqs:          []Request{callOp("1", orchA, 1, "nope", "", 1)},
		wantConsumed:  []string{"1"},
		wantApplied:   1,
		wantResponses: []string{"orch-a#1!" + FailureTypeOperationNotFound},
		wantFailures:  []string{FailureTypeOperationNotFound},
	},
	{
		name:          "nil invoke fails every operation as not registered",
		noInvoke:      true,
		reqs:          []Request{callOp("1", orchA, 1, "append", "x", 1), signal("2", orchA, 2, "append", "y")},
		wantConsumed:  []string{"1", "2"},
		wantApplied:   2,
		wantResponses: []string{"orch-a#1!" + FailureTypeNotRegistered},
		wantFailures:  []string{FailureTypeNotRegistered, FailureTypeNotRegistered},
	},

	// ---- de-duplication and per-sender order ----
	{
		name: "duplicates in a batch are dropped by sequence",
		reqs: []Request{
			signal("1", orchA, 1, "append", "a1"), signal("2", orchA, 2, "append", "a2"),
			signal("2'", orchA, 2, "append", "a2"), signal("1'", orchA, 1, "append", "a1"),
		},
		wantState:    []byte("a1,a2"),
		wantConsumed: []string{"1", "1'", "2", "2'"}, // per-sender order moves 1' up
		wantApplied:  2,
	},
	{
		name:         "redelivery of an earlier batch is dropped",
		rec:          Record{Seen: map[string]map[string]uint64{"orch-a": {"e1": 5}}},
		state:        []byte("x"),
		reqs:         []Request{signal("5", orchA, 5, "append", "dup"), signal("6", orchA, 6, "append", "a6")},
		wantState:    []byte("x,a6"),
		wantConsumed: []string{"5", "6"},
		wantApplied:  1,
	},
	{
		name:         "a new execution is a new sender",
		rec:          Record{Seen: map[string]map[string]uint64{"orch-a": {"e1": 5}}},
		reqs:         []Request{signal("1", Sender{InstanceID: "orch-a", ExecutionID: "e2"}, 1, "append", "new")},
		wantState:    []byte("new"),
		wantConsumed: []string{"1"},
		wantApplied:  1,
		check: func(t *testing.T, res Result) {
			want := map[string]map[string]uint64{"orch-a": {"e1": 5, "e2": 1}}
			if !reflect.DeepEqual(res.Record.Seen, want) {
				t.Errorf("Seen = %v, want %v", res.Record.Seen, want)
			}
		},
	},
	{
		name:         "unsequenced requests are never dropped",
		reqs:         []Request{signal("1", client, 0, "append", "c"), signal("2", client, 0, "append", "c")},
		wantState:    []byte("c,c"),
		wantConsumed: []string{"1", "2"},
		wantApplied:  2,
		check: func(t *testing.T, res Result) {
			if res.Record.Seen != nil {
				t.Errorf("Seen = %v for unsequenced requests", res.Record.Seen)
			}
		},
	},
	{
		name: "one sender's requests apply in sequence order within their slots",
		reqs: []Request{
			signal("a2", orchA, 2, "append", "a2"), signal("b2", orchB, 2, "append", "b2"),
			signal("c", client, 0, "append", "c"),
			signal("a1", orchA, 1, "append", "a1"), signal("b1", orchB, 1, "append", "b1"),
		},
		wantState:    []byte("a1,b1,c,a2,b2"),
		wantConsumed: []string{"a1", "b1", "c", "a2", "b2"},
		wantApplied:  5,
	},
	{
		name:         "a gap is applied at once; the late message is then a duplicate",
		rec:          Record{Seen: map[string]map[string]uint64{"orch-a": {"e1": 1}}},
		reqs:         []Request{signal("3", orchA, 3, "append", "a3")},
		wantState:    []byte("a3"),
		wantConsumed: []string{"3"},
		wantApplied:  1,
		check: func(t *testing.T, res Result) {
			late := Execute(journalID, res.Record, res.State, []Request{signal("2", orchA, 2, "append", "a2")}, journal, 0)
			if late.Applied != 0 || !slices.Equal(late.Consumed, []string{"2"}) || string(late.State) != "a3" {
				t.Errorf("late message: applied %d, consumed %v, state %q; want dropped", late.Applied, late.Consumed, late.State)
			}
		},
	},

	// ---- failures and rollback ----
	{
		name:  "only the failing operation is rolled back",
		state: []byte("s"),
		reqs: []Request{
			callOp("1", orchA, 1, "append", "x", 1),
			callOp("2", orchA, 2, "fail", "", 2),
			callOp("3", orchA, 3, "panic", "", 3),
			signal("4", orchA, 4, "panic-error", ""),
			callOp("5", orchA, 5, "failure", "", 5),
			callOp("6", orchA, 6, "append", "y", 6),
			callOp("7", orchA, 7, "get", "", 7),
		},
		wantState:     []byte("s,x,y"),
		wantConsumed:  []string{"1", "2", "3", "4", "5", "6", "7"},
		wantApplied:   7,
		wantResponses: []string{"orch-a#1=", "orch-a#2!*errors.errorString", "orch-a#3!panic", "orch-a#5!MyError", "orch-a#6=", "orch-a#7=s,x,y"},
		wantFailures:  []string{"*errors.errorString", "panic", "panic", "MyError"},
		check: func(t *testing.T, res Result) {
			p := res.Failures[1].Failure
			if !strings.Contains(p.Message, `"panic"`) || !strings.Contains(p.Message, journalID) || !strings.Contains(p.Message, "kaboom") || p.Stack == "" {
				t.Errorf("panic failure = %+v; want the operation, the entity, the value and a stack", p)
			}
			if c := res.Failures[2].Failure.Cause; c == nil || c.Message != "wrapped: inner" {
				t.Errorf("panic with an error: cause = %+v", c)
			}
			if f := res.Failures[3].Failure; !f.NonRetryable || f.Message != "typed" {
				t.Errorf("a *history.Failure from invoke must pass unchanged, got %+v", f)
			}
		},
	},
	{
		name:          "side effects are emitted only for successful operations",
		reqs:          []Request{signal("1", orchA, 1, "fail", ""), signal("2", orchA, 2, "signal", "@journal@k"), signal("3", orchA, 3, "start", "in"), callOp("4", orchA, 4, "bad-signal", "", 4)},
		wantConsumed:  []string{"1", "2", "3", "4"},
		wantApplied:   4,
		wantResponses: []string{"orch-a#4!" + FailureTypeInvalidAction},
		wantOutbound:  []string{"signal @journal@k append(from @journal@j) from @journal@j seq 1", "start child-1 Child(in)"},
		wantFailures:  []string{"*errors.errorString", FailureTypeInvalidAction},
		check: func(t *testing.T, res Result) {
			if res.Record.SentSeq != 1 {
				t.Errorf("SentSeq = %d, want 1", res.Record.SentSeq)
			}
		},
	},
	{
		name:         "a scheduled signal is not sequenced",
		rec:          Record{SentSeq: 4},
		reqs:         []Request{signal("1", orchA, 1, "signal-later", "@journal@k")},
		wantConsumed: []string{"1"},
		wantApplied:  1,
		wantOutbound: []string{"signal @journal@k append() from @journal@j seq 0 at 2030-01-01"},
		check: func(t *testing.T, res Result) {
			if res.Record.SentSeq != 4 {
				t.Errorf("SentSeq = %d, want 4 (unchanged)", res.Record.SentSeq)
			}
		},
	},
	{
		name:         "delete removes the state",
		state:        []byte("old"),
		reqs:         []Request{signal("1", orchA, 1, "delete", "")},
		wantDeleted:  true,
		wantConsumed: []string{"1"},
		wantApplied:  1,
	},
	{
		name:          "delete then re-create",
		state:         []byte("old"),
		reqs:          []Request{signal("1", orchA, 1, "delete", ""), callOp("2", orchA, 2, "get", "", 2), signal("3", orchA, 3, "append", "new"), callOp("4", orchA, 4, "get", "", 4)},
		wantState:     []byte("new"),
		wantConsumed:  []string{"1", "2", "3", "4"},
		wantApplied:   4,
		wantResponses: []string{"orch-a#2=", "orch-a#4=new"},
	},
	{
		name:          "a failing delete keeps the state",
		state:         []byte("old"),
		reqs:          []Request{signal("1", orchA, 1, "delete", ""), signal("2", orchA, 2, "append", "x"), callOp("3", orchA, 3, "fail", "", 3), callOp("4", orchA, 4, "get", "", 4)},
		wantState:     []byte("x"),
		wantConsumed:  []string{"1", "2", "3", "4"},
		wantApplied:   4,
		wantResponses: []string{"orch-a#3!*errors.errorString", "orch-a#4=x"},
		wantFailures:  []string{"*errors.errorString"},
	},

	// ---- batch limit ----
	{
		name:         "requests after the limit are not consumed",
		reqs:         []Request{signal("1", orchA, 1, "append", "1"), signal("2", orchA, 2, "append", "2"), signal("3", orchA, 3, "append", "3")},
		max:          2,
		wantState:    []byte("1,2"),
		wantConsumed: []string{"1", "2"},
		wantApplied:  2,
		check: func(t *testing.T, res Result) {
			if got := res.Record.Seen["orch-a"]["e1"]; got != 2 {
				t.Errorf("Seen = %d: an unconsumed request must not be marked", got)
			}
		},
	},
	{
		name:         "at the limit, duplicates before the next operation are still consumed",
		reqs:         []Request{signal("1", orchA, 1, "append", "1"), signal("1'", orchA, 1, "append", "1"), signal("2", orchA, 2, "append", "2")},
		max:          1,
		wantState:    []byte("1"),
		wantConsumed: []string{"1", "1'"},
		wantApplied:  1,
	},

	// ---- locks ----
	{
		name:         "lock when unlocked forwards to the next entity",
		reqs:         []Request{lockReq("1", orchA, 1, "L", 9, "@journal@k", "@journal@l")},
		wantConsumed: []string{"1"},
		wantLockedBy: holder(orchA, "L"),
		wantOutbound: []string{"forward @journal@k lock L of orch-a task 9 rest [@journal@l] from @journal@j seq 1"},
	},
	{
		name:         "the last entity of the set grants the lock",
		reqs:         []Request{lockReq("1", orchA, 1, "L", 9)},
		wantConsumed: []string{"1"},
		wantLockedBy: holder(orchA, "L"),
		wantOutbound: []string{"granted orch-a/e1 lock L task 9"},
	},
	{
		name: "a forwarded lock is granted to its owner, not its sender",
		reqs: []Request{{Kind: Lock, ID: "1", Sender: Sender{InstanceID: "@journal@a"}, Seq: 3, Owner: orchA, LockID: "L", TaskID: 9}},
		check: func(t *testing.T, res Result) {
			if res.Record.Seen["@journal@a"][""] != 3 {
				t.Errorf("Seen = %v: a forward is de-duplicated by its sender", res.Record.Seen)
			}
		},
		wantConsumed: []string{"1"},
		wantLockedBy: holder(orchA, "L"),
		wantOutbound: []string{"granted orch-a/e1 lock L task 9"},
	},
	{
		name:          "a lock set out of order is refused",
		reqs:          []Request{lockReq("1", orchA, 1, "L", 9, "@journal@z", "@journal@k")},
		wantConsumed:  []string{"1"},
		wantResponses: []string{"orch-a#9!" + FailureTypeInvalidLock},
		wantFailures:  []string{FailureTypeInvalidLock},
	},
	{
		name:          "a lock set naming the entity itself is refused",
		reqs:          []Request{lockReq("1", orchA, 1, "L", 9, journalID)},
		wantConsumed:  []string{"1"},
		wantResponses: []string{"orch-a#9!" + FailureTypeInvalidLock},
		wantFailures:  []string{FailureTypeInvalidLock},
	},
	{
		name: "while locked, the holder's operations run and the others queue",
		rec:  Record{LockedBy: holder(orchA, "L")},
		reqs: []Request{
			signal("b1", orchB, 1, "append", "b1"), callOp("a1", orchA, 1, "append", "a1", 1),
			signal("c", client, 0, "append", "c"), signal("e", Sender{InstanceID: "@journal@k"}, 1, "append", "e"),
			lockReq("p", orchP, 1, "M", 1), callOp("a2", orchA, 2, "get", "", 2),
		},
		wantState:     []byte("a1"),
		wantConsumed:  []string{"b1", "a1", "c", "e", "p", "a2"},
		wantApplied:   2,
		wantResponses: []string{"orch-a#1=", "orch-a#2=a1"},
		wantLockedBy:  holder(orchA, "L"),
		wantQueued:    []string{"b1", "c", "e", "p"},
	},
	{
		name: "unlock releases the queue in arrival order",
		rec: Record{LockedBy: holder(orchA, "L"), Queued: []Request{
			signal("b1", orchB, 1, "append", "b1"), signal("c", client, 0, "append", "c"), callOp("b2", orchB, 2, "append", "b2", 5),
		}},
		reqs:          []Request{unlockReq("u", orchA, 3, "L"), signal("d", client, 0, "append", "d")},
		wantState:     []byte("b1,c,b2,d"),
		wantConsumed:  []string{"u", "d"},
		wantApplied:   4,
		wantResponses: []string{"orch-b#5="},
	},
	{
		name: "a release beyond the limit stays queued and stops the batch",
		rec: Record{LockedBy: holder(orchA, "L"), Queued: []Request{
			signal("b1", orchB, 1, "append", "b1"), signal("c", client, 0, "append", "c"), signal("b2", orchB, 2, "append", "b2"),
		}},
		reqs:         []Request{signal("a1", orchA, 1, "append", "a1"), unlockReq("u", orchA, 2, "L"), lockReq("p", orchP, 1, "M", 1)},
		max:          3,
		wantState:    []byte("a1,b1,c"),
		wantConsumed: []string{"a1", "u"},
		wantApplied:  3,
		wantQueued:   []string{"b2"},
		// b2 can run with no new message: the entity makes sure it gets one.
		wantOutbound: []string{"continue @journal@j continue from @journal@j"},
		check: func(t *testing.T, res Result) {
			if !res.Record.Continuing {
				t.Error("Continuing not set with a Continue on its way")
			}
		},
	},
	{
		name:         "a Continue on its way is not sent again",
		rec:          Record{Continuing: true, Queued: []Request{signal("b1", orchB, 1, "append", "b1"), signal("b2", orchB, 2, "append", "b2")}},
		reqs:         []Request{signal("c", client, 0, "append", "c")},
		max:          1,
		wantState:    []byte("b1"),
		wantApplied:  1,
		wantQueued:   []string{"b2"},
		wantConsumed: nil,
		check: func(t *testing.T, res Result) {
			if !res.Record.Continuing {
				t.Error("Continuing cleared without its message being consumed")
			}
		},
	},
	{
		name:         "a Continue is consumed once the release has caught up",
		rec:          Record{Continuing: true, Queued: []Request{signal("b1", orchB, 1, "append", "b1")}},
		reqs:         []Request{{Kind: Continue, ID: "k", Sender: Sender{InstanceID: journalID}}, signal("b2", orchB, 2, "append", "b2"), signal("b3", orchB, 3, "append", "b3")},
		max:          2,
		wantState:    []byte("b1,b2"),
		wantApplied:  2,
		wantConsumed: []string{"k", "b2"},
		// b3 is still in the control queue and the record holds nothing to
		// run: no Continue is needed.
	},
	{
		name: "a consumed Continue is sent again when a later release is cut short",
		rec: Record{LockedBy: holder(orchA, "L"), Continuing: true, Queued: []Request{
			signal("b1", orchB, 1, "append", "b1"), signal("b2", orchB, 2, "append", "b2"),
		}},
		reqs:         []Request{{Kind: Continue, ID: "k", Sender: Sender{InstanceID: journalID}}, unlockReq("u", orchA, 1, "L")},
		max:          1,
		wantState:    []byte("b1"),
		wantApplied:  1,
		wantConsumed: []string{"k", "u"},
		wantQueued:   []string{"b2"},
		wantOutbound: []string{"continue @journal@j continue from @journal@j"},
	},
	{
		name:         "a Continue with nothing left to do is consumed",
		rec:          Record{Continuing: true},
		reqs:         []Request{{Kind: Continue, ID: "k", Sender: Sender{InstanceID: journalID}}},
		wantConsumed: []string{"k"},
		check: func(t *testing.T, res Result) {
			if res.Record.Continuing {
				t.Error("Continuing still set after its message was consumed")
			}
		},
	},
	{
		name: "a release cut short goes on first in the next batch",
		rec: Record{Queued: []Request{
			signal("b2", orchB, 2, "append", "b2"), lockReq("p", orchP, 1, "M", 4),
		}},
		state:        []byte("b1"),
		reqs:         []Request{signal("b3", orchB, 3, "append", "b3"), signal("p1", orchP, 2, "append", "p1")},
		wantState:    []byte("b1,b2,p1"),
		wantConsumed: []string{"b3", "p1"},
		wantApplied:  2,
		wantLockedBy: holder(orchP, "M"),
		wantOutbound: []string{"granted orch-p/e1 lock M task 4"},
		wantQueued:   []string{"b3"},
	},
	{
		name: "a queued lock takes the lock on release, then only its holder's requests run",
		rec: Record{LockedBy: holder(orchA, "L"), Queued: []Request{
			signal("b1", orchB, 1, "append", "b1"), lockReq("p", orchP, 1, "M", 4),
			signal("c", client, 0, "append", "c"), signal("p1", orchP, 2, "append", "p1"),
			lockReq("q", orchB, 2, "N", 6), signal("b3", orchB, 3, "append", "b3"),
		}},
		reqs:         []Request{unlockReq("u", orchA, 1, "L"), signal("p2", orchP, 3, "append", "p2"), signal("d", client, 0, "append", "d")},
		wantState:    []byte("b1,p1,p2"),
		wantConsumed: []string{"u", "p2", "d"},
		wantApplied:  3,
		wantLockedBy: holder(orchP, "M"),
		wantOutbound: []string{"granted orch-p/e1 lock M task 4"},
		wantQueued:   []string{"c", "q", "b3", "d"},
	},
	{
		name:         "an unlock from a non-holder is ignored",
		rec:          Record{LockedBy: holder(orchA, "L"), Queued: []Request{signal("b1", orchB, 1, "append", "b1")}},
		reqs:         []Request{unlockReq("u", orchB, 2, "L"), unlockReq("u2", client, 0, "")},
		wantConsumed: []string{"u", "u2"},
		wantLockedBy: holder(orchA, "L"),
		wantQueued:   []string{"b1"},
	},
	{
		name:         "an unlock naming another section of the holder is ignored",
		rec:          Record{LockedBy: holder(orchA, "L")},
		reqs:         []Request{unlockReq("u", orchA, 1, "other")},
		wantConsumed: []string{"u"},
		wantLockedBy: holder(orchA, "L"),
	},
	{
		name:         "an unlock from the holder without a lock ID releases",
		rec:          Record{LockedBy: holder(orchA, "L")},
		reqs:         []Request{unlockReq("u", orchA, 1, "")},
		wantConsumed: []string{"u"},
	},
	{
		name:         "an unlock withdraws the sender's waiting lock",
		rec:          Record{LockedBy: holder(orchA, "L"), Queued: []Request{lockReq("p", orchP, 1, "M", 4), signal("b1", orchB, 1, "append", "b1")}},
		reqs:         []Request{unlockReq("u", orchP, 2, "M")},
		wantConsumed: []string{"u"},
		wantLockedBy: holder(orchA, "L"),
		wantQueued:   []string{"b1"},
	},
	{
		name:         "a redelivered lock of the holder does not lock again",
		rec:          Record{LockedBy: holder(orchA, "L")},
		reqs:         []Request{lockReq("1", orchA, 0, "L", 9)},
		wantConsumed: []string{"1"},
		wantLockedBy: holder(orchA, "L"),
	},
	{
		name:         "a lock for another section of the holder waits",
		rec:          Record{LockedBy: holder(orchA, "L")},
		reqs:         []Request{lockReq("1", orchA, 1, "L2", 9), unlockReq("u", orchA, 2, "L")},
		wantConsumed: []string{"1", "u"},
		wantLockedBy: holder(orchA, "L2"),
		wantOutbound: []string{"granted orch-a/e1 lock L2 task 9"},
	},
	{
		name:          "a request of unknown kind is consumed and reported",
		reqs:          []Request{{Kind: 42, ID: "x", Sender: orchA, Seq: 1, WantsResponse: true, TaskID: 3}},
		wantConsumed:  []string{"x"},
		wantResponses: []string{"orch-a#3!" + FailureTypeInvalidRequest},
		wantFailures:  []string{FailureTypeInvalidRequest},
	},
}

func TestExecute(t *testing.T) {
	for _, tc := range batchCases {
		t.Run(tc.name, func(t *testing.T) {
			invoke := tc.invoke
			if invoke == nil && !tc.noInvoke {
				invoke = journal
			}
			recBefore, _ := json.Marshal(tc.rec)
			stateBefore := bytes.Clone(tc.state)
			reqsBefore, _ := json.Marshal(tc.reqs)

			res := Execute(journalID, tc.rec, tc.state, tc.reqs, invoke, tc.max)

			if !bytes.Equal(res.State, tc.wantState) || (res.State == nil) != (tc.wantState == nil) {
				t.Errorf("State = %q, want %q", res.State, tc.wantState)
			}
			if res.Deleted != tc.wantDeleted {
				t.Errorf("Deleted = %v, want %v", res.Deleted, tc.wantDeleted)
			}
			if changed := !bytes.Equal(tc.state, tc.wantState) || (tc.state == nil) != (tc.wantState == nil); res.StateChanged != changed {
				t.Errorf("StateChanged = %v, want %v", res.StateChanged, changed)
			}
			if !slices.Equal(res.Consumed, tc.wantConsumed) {
				t.Errorf("Consumed = %v, want %v", res.Consumed, tc.wantConsumed)
			}
			if res.Applied != tc.wantApplied {
				t.Errorf("Applied = %d, want %d", res.Applied, tc.wantApplied)
			}
			if got := describeResponses(res.Responses); !slices.Equal(got, tc.wantResponses) {
				t.Errorf("Responses = %q, want %q", got, tc.wantResponses)
			}
			if got := describeEffects(res.Outbound); !slices.Equal(got, tc.wantOutbound) {
				t.Errorf("Outbound = %q, want %q", got, tc.wantOutbound)
			}
			if !reflect.DeepEqual(res.Record.LockedBy, tc.wantLockedBy) {
				t.Errorf("LockedBy = %+v, want %+v", res.Record.LockedBy, tc.wantLockedBy)
			}
			if got := queuedIDs(res.Record); !slices.Equal(got, tc.wantQueued) {
				t.Errorf("Queued = %v, want %v", got, tc.wantQueued)
			}
			var failures []string
			for _, f := range res.Failures {
				failures = append(failures, f.Failure.Type)
			}
			if !slices.Equal(failures, tc.wantFailures) {
				t.Errorf("Failures = %v, want %v", failures, tc.wantFailures)
			}
			if tc.check != nil {
				tc.check(t, res)
			}

			// Pure: the inputs are untouched, and the same inputs give the
			// same result.
			if recAfter, _ := json.Marshal(tc.rec); !bytes.Equal(recBefore, recAfter) {
				t.Errorf("Execute modified the record it was given:\n%s\n%s", recBefore, recAfter)
			}
			if !bytes.Equal(stateBefore, tc.state) {
				t.Errorf("Execute modified the state it was given")
			}
			if reqsAfter, _ := json.Marshal(tc.reqs); !bytes.Equal(reqsBefore, reqsAfter) {
				t.Errorf("Execute modified the requests it was given")
			}
			again := Execute(journalID, tc.rec, tc.state, tc.reqs, invoke, tc.max)
			stripStacks(&res)
			stripStacks(&again)
			if !reflect.DeepEqual(res, again) {
				t.Errorf("not deterministic:\n%+v\n%+v", res, again)
			}

			// The record survives its storage round trip.
			enc, err := json.Marshal(res.Record)
			if err != nil {
				t.Fatalf("encoding the record: %v", err)
			}
			var dec Record
			if err := json.Unmarshal(enc, &dec); err != nil {
				t.Fatalf("decoding the record %s: %v", enc, err)
			}
			if !reflect.DeepEqual(dec, res.Record) {
				t.Errorf("record round trip:\n got %+v\nwant %+v", dec, res.Record)
			}
		})
	}
}

// TestBatchCount checks the batch limit end to end: N operations given to
// Execute again and again (always everything not yet consumed) take exactly
// ⌈N/B⌉ calls, each running min(B, remaining) of them in order.
func TestBatchCount(t *testing.T) {
	for _, tc := range []struct{ n, max int }{
		{0, 1}, {1, 1}, {10, 1}, {1000, 1},
		{1, 3}, {9, 3}, {10, 3}, {11, 3},
		{100, 7}, {5000, 0}, {5001, 0}, {12000, 0}, {12000, 5000}, {12000, 4999}, {7, 100},
	} {
		t.Run(strconv.Itoa(tc.n)+"/"+strconv.Itoa(tc.max), func(t *testing.T) {
			reqs := make([]Request, tc.n)
			for i := range reqs {
				reqs[i] = signal(strconv.Itoa(i+1), orchA, uint64(i+1), "add", "1")
			}
			limit := tc.max
			if limit <= 0 {
				limit = MaxBatchDefault
			}
			var rec Record
			var state []byte
			calls := 0
			for rest := reqs; len(rest) > 0; {
				res := Execute("@counter@c", rec, state, rest, counter, tc.max)
				calls++
				want := min(limit, len(rest))
				if res.Applied != want || len(res.Consumed) != want {
					t.Fatalf("call %d: applied %d, consumed %d, want %d", calls, res.Applied, len(res.Consumed), want)
				}
				for i, id := range res.Consumed {
					if id != rest[i].ID {
						t.Fatalf("call %d: consumed %v, want a prefix of the queue", calls, res.Consumed)
					}
				}
				rec, state, rest = res.Record, res.State, rest[want:]
			}
			if wantCalls := (tc.n + limit - 1) / limit; calls != wantCalls {
				t.Errorf("%d calls, want ⌈%d/%d⌉ = %d", calls, tc.n, limit, wantCalls)
			}
			if want := strconv.Itoa(tc.n); tc.n > 0 && string(state) != want {
				t.Errorf("counter = %s, want %s", state, want)
			}
		})
	}
}

// TestRecordJSON pins the record's stored field names: records written by
// one version are read by the next.
func TestRecordJSON(t *testing.T) {
	rec := Record{
		LockedBy: holder(orchA, "L"),
		Queued: []Request{
			{Kind: Operation, ID: "m1", Sender: orchB, Seq: 2, Operation: "add", Input: []byte("1"), WantsResponse: true, TaskID: 4},
			{Kind: Lock, ID: "m2", Sender: Sender{InstanceID: "@a@1"}, Seq: 7, Owner: orchP, LockID: "M", TaskID: 3, LockSet: []string{"@c@1"}},
		},
		Seen:       map[string]map[string]uint64{"orch-b": {"e1": 2}, "@a@1": {"": 7}},
		SentSeq:    9,
		Continuing: true,
	}
	const want = `{"lockedBy":{"instance":"orch-a","execution":"e1","lockId":"L"},` +
		`"queued":[{"kind":"operation","id":"m1","sender":{"instance":"orch-b","execution":"e1"},"seq":2,"op":"add","input":"MQ==","call":true,"taskId":4},` +
		`{"kind":"lock","id":"m2","sender":{"instance":"@a@1"},"seq":7,"taskId":3,"owner":{"instance":"orch-p","execution":"e1"},"lockId":"M","lockSet":["@c@1"]}],` +
		`"seen":{"@a@1":{"":7},"orch-b":{"e1":2}},"sentSeq":9,"continuing":true}`
	got, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("record JSON\n got %s\nwant %s", got, want)
	}
	var back Record
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rec) {
		t.Errorf("round trip: %+v", back)
	}
	if err := json.Unmarshal([]byte(`{"queued":[{"kind":"teleport"}]}`), &back); err == nil {
		t.Error("an unknown request kind decoded without error")
	}
	if _, err := json.Marshal(Request{Kind: 42}); err == nil {
		t.Error("an invalid request kind encoded without error")
	}
}

func TestID(t *testing.T) {
	if got := ID("Counter", "K@1"); got != "@counter@K@1" {
		t.Errorf("ID = %q", got)
	}
	for _, tc := range []struct {
		id, name, key string
		ok            bool
	}{
		{"@counter@k", "counter", "k", true},
		{"@counter@", "counter", "", true},
		{"@counter@a@b", "counter", "a@b", true},
		{"@@k", "", "", false},
		{"@counter", "", "", false},
		{"counter@k", "", "", false},
		{"", "", "", false},
	} {
		name, key, ok := ParseID(tc.id)
		if name != tc.name || key != tc.key || ok != tc.ok {
			t.Errorf("ParseID(%q) = %q, %q, %v; want %q, %q, %v", tc.id, name, key, ok, tc.name, tc.key, tc.ok)
		}
	}
}

func TestNotRegisteredFailure(t *testing.T) {
	f := NotRegisteredFailure("@cart@42", "add")
	if f.Type != FailureTypeNotRegistered || !f.NonRetryable {
		t.Errorf("failure = %+v", f)
	}
	for _, part := range []string{`"@cart@42"`, `"add"`, `"cart"`} {
		if !strings.Contains(f.Message, part) {
			t.Errorf("message %q does not name %s", f.Message, part)
		}
	}
	_, err := NotRegistered("@cart@42")(Call{Operation: "remove"})
	if err == nil || !strings.Contains(err.Error(), `"remove"`) {
		t.Errorf("NotRegistered invoke: %v", err)
	}
}
