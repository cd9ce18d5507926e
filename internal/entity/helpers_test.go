package entity

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

// Senders used across the tests.
var (
	orchA  = Sender{InstanceID: "orch-a", ExecutionID: "e1"}
	orchB  = Sender{InstanceID: "orch-b", ExecutionID: "e1"}
	orchP  = Sender{InstanceID: "orch-p", ExecutionID: "e1"}
	client = Sender{InstanceID: "client"}
)

// journal is a test entity whose state is the comma-separated list of the
// inputs of its "append" operations, so the state shows the order in which
// operations were applied.
func journal(c Call) (Outcome, error) {
	switch c.Operation {
	case "append":
		if c.State == nil {
			return Outcome{State: append([]byte(nil), c.Input...)}, nil
		}
		s := append(append(append([]byte(nil), c.State...), ','), c.Input...)
		return Outcome{State: s}, nil
	case "get":
		return Outcome{Output: c.State}, nil
	case "delete":
		return Outcome{Deleted: true}, nil
	case "fail":
		// Asks for a signal and a start, then fails: neither may be sent.
		return Outcome{
			State:   []byte("must not be kept"),
			Actions: []Action{{Kind: ActionSignal, Target: "@journal@other", Name: "append", Input: []byte("leak")}, {Kind: ActionStart, Name: "Leak"}},
		}, errors.New("boom")
	case "failure":
		return Outcome{}, &history.Failure{Type: "MyError", Message: "typed", NonRetryable: true}
	case "panic":
		panic("kaboom")
	case "panic-error":
		panic(fmt.Errorf("wrapped: %w", errors.New("inner")))
	case "signal":
		// Input: target entity ID.
		return Outcome{Actions: []Action{{Kind: ActionSignal, Target: string(c.Input), Name: "append", Input: []byte("from " + c.Entity)}}}, nil
	case "signal-later":
		return Outcome{Actions: []Action{{Kind: ActionSignal, Target: string(c.Input), Name: "append", At: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}}}, nil
	case "start":
		return Outcome{Actions: []Action{{Kind: ActionStart, Target: "child-1", Name: "Child", Input: c.Input}}}, nil
	case "bad-signal":
		return Outcome{State: []byte("must not be kept"), Actions: []Action{{Kind: ActionStart, Name: "Fine"}, {Kind: ActionSignal, Target: "not-an-entity", Name: "x"}}}, nil
	}
	return Outcome{}, OperationNotFoundFailure(c.Entity, c.Operation)
}

// counter is an entity with a JSON integer state, like a user's entity
// behind the SDK's JSON codec.
func counter(c Call) (Outcome, error) {
	var n int64
	if c.State != nil {
		if err := json.Unmarshal(c.State, &n); err != nil {
			return Outcome{}, err
		}
	}
	switch c.Operation {
	case "add", "deposit":
		var d int64
		if err := json.Unmarshal(c.Input, &d); err != nil {
			return Outcome{}, err
		}
		s, err := json.Marshal(n + d)
		return Outcome{State: s}, err
	case "set":
		var v int64
		if err := json.Unmarshal(c.Input, &v); err != nil {
			return Outcome{}, err
		}
		return Outcome{State: c.Input}, nil
	case "get":
		s, err := json.Marshal(n)
		return Outcome{Output: s}, err
	}
	return Outcome{}, OperationNotFoundFailure(c.Entity, c.Operation)
}

func signal(id string, s Sender, seq uint64, op, in string) Request {
	return Request{Kind: Operation, ID: id, Sender: s, Seq: seq, Operation: op, Input: []byte(in)}
}

func callOp(id string, s Sender, seq uint64, op, in string, task int64) Request {
	r := signal(id, s, seq, op, in)
	r.WantsResponse, r.TaskID = true, task
	return r
}

func lockReq(id string, s Sender, seq uint64, lockID string, task int64, rest ...string) Request {
	return Request{Kind: Lock, ID: id, Sender: s, Seq: seq, LockID: lockID, TaskID: task, LockSet: rest}
}

func unlockReq(id string, s Sender, seq uint64, lockID string) Request {
	return Request{Kind: Unlock, ID: id, Sender: s, Seq: seq, LockID: lockID}
}

func holder(s Sender, lockID string) *Holder {
	return &Holder{InstanceID: s.InstanceID, ExecutionID: s.ExecutionID, LockID: lockID}
}

// describeResponses renders responses compactly: "orch-a#3=output" or
// "orch-a#3!FailureType".
func describeResponses(rs []Response) []string {
	var out []string
	for _, r := range rs {
		if r.Failure != nil {
			out = append(out, fmt.Sprintf("%s#%d!%s", r.To.InstanceID, r.TaskID, r.Failure.Type))
		} else {
			out = append(out, fmt.Sprintf("%s#%d=%s", r.To.InstanceID, r.TaskID, r.Output))
		}
	}
	return out
}

// describeEffects renders effects compactly, with the fields each kind uses.
func describeEffects(es []Effect) []string {
	var out []string
	for _, e := range es {
		switch e.Kind {
		case EffectSignal:
			s := fmt.Sprintf("signal %s %s(%s) from %s seq %d", e.Target, e.Request.Operation, e.Request.Input, e.Request.Sender.InstanceID, e.Request.Seq)
			if !e.At.IsZero() {
				s += " at " + e.At.Format(time.DateOnly)
			}
			out = append(out, s)
		case EffectStart:
			out = append(out, fmt.Sprintf("start %s %s(%s)", e.Target, e.Name, e.Input))
		case EffectLockForward:
			r := e.Request
			out = append(out, fmt.Sprintf("forward %s lock %s of %s task %d rest [%s] from %s seq %d",
				e.Target, r.LockID, r.Owner.InstanceID, r.TaskID, strings.Join(r.LockSet, " "), r.Sender.InstanceID, r.Seq))
		case EffectLockGranted:
			out = append(out, fmt.Sprintf("granted %s/%s lock %s task %d", e.Target, e.ExecutionID, e.LockID, e.TaskID))
		case EffectContinue:
			out = append(out, fmt.Sprintf("continue %s %s from %s", e.Target, e.Request.Kind, e.Request.Sender.InstanceID))
		default:
			out = append(out, e.Kind.String())
		}
	}
	return out
}

func queuedIDs(rec Record) []string {
	var ids []string
	for _, r := range rec.Queued {
		ids = append(ids, r.ID)
	}
	return ids
}

func ids(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i+1)
	}
	return out
}

// stripStacks clears panic stacks, the one field of a Result that is not
// deterministic.
func stripStacks(res *Result) {
	for i := range res.Responses {
		for f := res.Responses[i].Failure; f != nil; f = f.Cause {
			f.Stack = ""
		}
	}
	for i := range res.Failures {
		for f := res.Failures[i].Failure; f != nil; f = f.Cause {
			f.Stack = ""
		}
	}
}
