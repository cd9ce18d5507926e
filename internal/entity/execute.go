package entity

import (
	"bytes"
	"cmp"
	"fmt"
	"runtime/debug"
	"slices"

	"github.com/taskhub/taskhub/internal/history"
)

// MaxBatchDefault is the number of operations one batch runs at most when
// Execute is given maxBatch ≤ 0 (Durable Functions'
// maxEntityOperationBatchSize). Larger batches amortise the commit; the
// limit bounds how long one entity keeps its partition's listener busy and
// how much work a crash throws away.
const MaxBatchDefault = 5000

// Execute runs one batch of requests for entity entityID whose record and
// state (nil: none) the engine read, and returns what to commit. The package
// doc states the rules. rec, state and reqs are not modified, and the result
// may share their payload bytes.
//
// A nil invoke behaves like [NotRegistered].
func Execute(entityID string, rec Record, state []byte, reqs []Request, invoke Invoke, maxBatch int) Result {
	if maxBatch <= 0 {
		maxBatch = MaxBatchDefault
	}
	if invoke == nil {
		invoke = NotRegistered(entityID)
	}
	x := &executor{entity: entityID, invoke: invoke, max: maxBatch, rec: rec.clone(), state: state}
	x.res.Consumed = make([]string, 0, min(len(reqs), maxBatch))
	// A release that the previous batch cut short at its limit goes on
	// first: those requests arrived before anything given now.
	x.drain()
	if !x.stopped {
		order := perSenderOrder(reqs)
		for n := range reqs {
			i := n
			if order != nil {
				i = order[n]
			}
			if !x.admit(&reqs[i]) {
				break
			}
		}
	}
	return x.result(state)
}

// executor is the working state of one Execute call.
type executor struct {
	entity  string
	invoke  Invoke
	max     int
	rec     Record
	state   []byte
	stopped bool // the batch limit was reached at an operation that must wait
	res     Result
	seen    seenCache
}

// seenCache holds one sender's de-duplication mark, written back to
// rec.Seen when another sender comes or the batch ends. A batch is mostly
// runs of one sender's requests, and two map lookups and a store per
// request were a third of Execute's own cost.
type seenCache struct {
	sender    Sender
	seq       uint64
	ok, dirty bool
}

// lastSeen returns the highest sequence number consumed from s.
func (x *executor) lastSeen(s Sender) uint64 {
	if !x.seen.ok || x.seen.sender != s {
		x.flushSeen()
		x.seen = seenCache{sender: s, seq: x.rec.Seen[s.InstanceID][s.ExecutionID], ok: true}
	}
	return x.seen.seq
}

func (x *executor) flushSeen() {
	if !x.seen.dirty {
		return
	}
	s := x.seen.sender
	execs := x.rec.Seen[s.InstanceID]
	if execs == nil {
		if x.rec.Seen == nil {
			x.rec.Seen = make(map[string]map[string]uint64)
		}
		execs = make(map[string]uint64, 1)
		x.rec.Seen[s.InstanceID] = execs
	}
	execs[s.ExecutionID] = x.seen.seq
	x.seen.dirty = false
}

// admit handles one new request, and reports false when the batch stops
// before consuming it.
func (x *executor) admit(r *Request) bool {
	if x.duplicate(r) {
		x.consume(r)
		return true
	}
	switch r.Kind {
	case Operation:
		if x.rec.LockedBy != nil && !x.fromHolder(r) {
			x.accept(r)
			x.rec.Queued = append(x.rec.Queued, *r)
			return true
		}
		if x.res.Applied >= x.max {
			x.stopped = true
			return false
		}
		x.accept(r)
		x.run(r)
	case Lock:
		x.accept(r)
		if x.lock(r) {
			// The new holder may have operations waiting in the queue
			// (sent before its lock came through).
			x.drain()
		}
	case Unlock:
		x.accept(r)
		x.unlock(r)
	case Continue:
		// Its work, the release, was done by the drain at the start.
		x.accept(r)
		x.rec.Continuing = false
	default:
		x.accept(r)
		x.fail(r, &history.Failure{
			Type:         FailureTypeInvalidRequest,
			Message:      fmt.Sprintf("entity %q: request %q has unknown kind %s", x.entity, r.ID, r.Kind),
			NonRetryable: true,
		}, r.Sender)
	}
	return !x.stopped
}

// duplicate reports whether r was consumed before (see De-duplication).
func (x *executor) duplicate(r *Request) bool {
	return r.Seq != 0 && r.Seq <= x.lastSeen(r.Sender)
}

// accept consumes a new request and records its sequence number. Requests
// reach it in per-sender sequence order, so the number only grows.
func (x *executor) accept(r *Request) {
	x.consume(r)
	if r.Seq == 0 {
		return
	}
	x.lastSeen(r.Sender)
	x.seen.seq, x.seen.dirty = r.Seq, true
}

func (x *executor) consume(r *Request) { x.res.Consumed = append(x.res.Consumed, r.ID) }

// fromHolder reports whether r comes from the orchestration holding the
// lock, whose operations run inside its critical section.
func (x *executor) fromHolder(r *Request) bool {
	h := x.rec.LockedBy
	return h != nil && h.InstanceID == r.Sender.InstanceID && h.ExecutionID == r.Sender.ExecutionID
}

// heldBy reports whether the lock is held by Lock request r's section: a
// redelivered request (Seq 0, or queued twice) must not lock again.
func (x *executor) heldBy(r *Request) bool {
	h, o := x.rec.LockedBy, r.owner()
	return h != nil && h.InstanceID == o.InstanceID && h.ExecutionID == o.ExecutionID && h.LockID == r.LockID
}

// drain processes the queue while the entity is unlocked, and the holder's
// queued operations while it is locked; see Locks in the package doc.
func (x *executor) drain() {
	q := x.rec.Queued
	if len(q) == 0 {
		return
	}
	x.rec.Queued = nil
	kept := make([]Request, 0, len(q))
	for i := range q {
		r := &q[i]
		if x.rec.LockedBy != nil && !x.fromHolder(r) && !(r.Kind == Lock && x.heldBy(r)) {
			kept = append(kept, *r)
			continue
		}
		switch r.Kind {
		case Operation:
			if x.res.Applied >= x.max {
				x.stopped = true
				kept = append(kept, q[i:]...)
				x.rec.Queued = append(kept, x.rec.Queued...)
				return
			}
			x.run(r)
		case Lock:
			x.lock(r) // unlocked, or held by r already: never queues r again
		}
	}
	// Nothing appends to the queue while draining; keep whatever might,
	// after the older requests.
	x.rec.Queued = append(kept, x.rec.Queued...)
}

// lock handles a Lock request and reports whether it took the lock.
func (x *executor) lock(r *Request) bool {
	owner := r.owner()
	if msg := x.checkLockSet(r.LockSet); msg != "" {
		x.fail(r, &history.Failure{
			Type:         FailureTypeInvalidLock,
			Message:      fmt.Sprintf("entity %q: lock request %q of %q refused: %s", x.entity, r.LockID, owner.InstanceID, msg),
			NonRetryable: true,
		}, owner)
		return false
	}
	if x.rec.LockedBy != nil {
		if !x.heldBy(r) {
			x.rec.Queued = append(x.rec.Queued, *r)
		}
		return false
	}
	x.rec.LockedBy = &Holder{InstanceID: owner.InstanceID, ExecutionID: owner.ExecutionID, LockID: r.LockID}
	if len(r.LockSet) > 0 {
		x.res.Outbound = append(x.res.Outbound, Effect{
			Kind:   EffectLockForward,
			Target: r.LockSet[0],
			Request: Request{
				Kind:    Lock,
				Sender:  Sender{InstanceID: x.entity},
				Seq:     x.nextSeq(),
				TaskID:  r.TaskID,
				Owner:   owner,
				LockID:  r.LockID,
				LockSet: slices.Clone(r.LockSet[1:]),
				Section: r.Section,
			},
		})
	} else {
		x.res.Outbound = append(x.res.Outbound, Effect{
			Kind:        EffectLockGranted,
			Target:      owner.InstanceID,
			ExecutionID: owner.ExecutionID,
			TaskID:      r.TaskID,
			LockID:      r.LockID,
			Section:     r.Section,
		})
	}
	return true
}

// checkLockSet returns why set cannot follow this entity in a critical
// section, or "". Sections stay deadlock-free only if every one of them
// locks in ascending ID order.
func (x *executor) checkLockSet(set []string) string {
	prev := x.entity
	for _, id := range set {
		if _, _, ok := ParseID(id); !ok {
			return fmt.Sprintf("%q is not an entity ID", id)
		}
		if id <= prev {
			return fmt.Sprintf("entities must be locked in ascending order without repeats, but %q comes after %q", id, prev)
		}
		prev = id
	}
	return ""
}

// unlock handles an Unlock request.
func (x *executor) unlock(r *Request) {
	if x.fromHolder(r) && (r.LockID == "" || r.LockID == x.rec.LockedBy.LockID) {
		x.rec.LockedBy = nil
		x.drain()
		return
	}
	// Not the holder: withdraw the sender's waiting Lock, if any. An
	// orchestration that gives up (ends, or fails to lock another entity)
	// unlocks every entity of its section, including those it never got.
	x.rec.Queued = slices.DeleteFunc(x.rec.Queued, func(q Request) bool {
		return q.Kind == Lock && q.owner() == r.Sender && (r.LockID == "" || r.LockID == q.LockID)
	})
}

// run executes operation r and applies its outcome, or rolls it back.
func (x *executor) run(r *Request) {
	x.res.Applied++
	out, f := x.call(r)
	if f == nil {
		f = x.checkActions(r, out.Actions)
	}
	if f != nil {
		// x.state was never touched: the operation is rolled back, and its
		// actions are dropped with it.
		x.fail(r, f, r.Sender)
		return
	}
	switch {
	case out.Deleted:
		x.state = nil
	case out.State != nil:
		x.state = out.State
	}
	for i := range out.Actions {
		x.emit(&out.Actions[i])
	}
	if r.WantsResponse {
		x.res.Responses = append(x.res.Responses, Response{To: r.Sender, TaskID: r.TaskID, RequestID: r.ID, Output: out.Output})
	}
}

// call runs invoke, turning a panic into a failure. The recover is in this
// goroutine: a goroutine per operation would cost more than the operation.
func (x *executor) call(r *Request) (out Outcome, f *history.Failure) {
	defer func() {
		if v := recover(); v != nil {
			out, f = Outcome{}, panicFailure(x.entity, r.Operation, v, debug.Stack())
		}
	}()
	out, err := x.invoke(Call{Entity: x.entity, Operation: r.Operation, Input: r.Input, State: x.state, Sender: r.Sender, RequestID: r.ID})
	if err != nil {
		return Outcome{}, failureOf(err)
	}
	return out, nil
}

// checkActions refuses actions the engine could not send, before any is
// emitted, so an operation's effects are all or nothing.
func (x *executor) checkActions(r *Request, actions []Action) *history.Failure {
	for i, a := range actions {
		var msg string
		switch a.Kind {
		case ActionSignal:
			if _, _, ok := ParseID(a.Target); !ok {
				msg = fmt.Sprintf("signal target %q is not an entity ID", a.Target)
			} else if a.Name == "" {
				msg = fmt.Sprintf("signal to %q has no operation name", a.Target)
			}
		case ActionStart:
			if a.Name == "" {
				msg = "orchestration start has no orchestrator name"
			}
		default:
			msg = fmt.Sprintf("unknown action kind %d", a.Kind)
		}
		if msg != "" {
			return &history.Failure{
				Type:         FailureTypeInvalidAction,
				Message:      fmt.Sprintf("operation %q of entity %q: action %d: %s", r.Operation, x.entity, i, msg),
				NonRetryable: true,
			}
		}
	}
	return nil
}

// emit turns a successful operation's action into an outbound effect.
func (x *executor) emit(a *Action) {
	switch a.Kind {
	case ActionSignal:
		req := Request{Kind: Operation, Sender: Sender{InstanceID: x.entity}, Operation: a.Name, Input: a.Input}
		if a.At.IsZero() {
			// A scheduled signal stays unsequenced: it arrives after
			// later messages, which would make it look like a duplicate.
			req.Seq = x.nextSeq()
		}
		x.res.Outbound = append(x.res.Outbound, Effect{Kind: EffectSignal, Target: a.Target, Request: req, At: a.At})
	case ActionStart:
		x.res.Outbound = append(x.res.Outbound, Effect{Kind: EffectStart, Target: a.Target, Name: a.Name, Input: a.Input, At: a.At})
	}
}

func (x *executor) nextSeq() uint64 {
	x.rec.SentSeq++
	return x.rec.SentSeq
}

// fail reports a failed request, and answers to when someone waits: the
// caller of a call, or the owner of a refused lock.
func (x *executor) fail(r *Request, f *history.Failure, to Sender) {
	x.res.Failures = append(x.res.Failures, Failed{RequestID: r.ID, Kind: r.Kind, Operation: r.Operation, Sender: r.Sender, Failure: f})
	if r.WantsResponse || r.Kind == Lock {
		x.res.Responses = append(x.res.Responses, Response{To: to, TaskID: r.TaskID, RequestID: r.ID, Failure: f})
	}
}

func (x *executor) result(initial []byte) Result {
	x.flushSeen()
	if x.rec.LockedBy == nil && len(x.rec.Queued) > 0 && !x.rec.Continuing {
		x.rec.Continuing = true
		x.res.Outbound = append(x.res.Outbound, Effect{
			Kind:    EffectContinue,
			Target:  x.entity,
			Request: Request{Kind: Continue, Sender: Sender{InstanceID: x.entity}},
		})
	}
	res := x.res
	res.Record = x.rec
	if len(res.Record.Queued) == 0 {
		res.Record.Queued = nil // an empty queue encodes like none
	}
	res.State = x.state
	res.StateChanged = (initial == nil) != (x.state == nil) || !bytes.Equal(initial, x.state)
	res.Deleted = initial != nil && x.state == nil
	return res
}

// perSenderOrder returns the order in which to handle reqs so that each
// sender's sequenced requests come in sequence order, each taking the
// place of another of the same sender; nil means as given (the usual case,
// found without allocating an order). Which sender moves never depends on
// map iteration: every sender only rearranges its own slots.
func perSenderOrder(reqs []Request) []int {
	if len(reqs) < 2 {
		return nil
	}
	// The check looks at the map only when the sender changes, and
	// allocates it only if there is more than one sender.
	var last map[Sender]uint64
	var cur Sender
	var curSeq uint64
	have, sorted := false, true
	for i := range reqs {
		r := &reqs[i]
		if r.Seq == 0 {
			continue
		}
		if !have || r.Sender != cur {
			if have {
				if last == nil {
					last = make(map[Sender]uint64)
				}
				last[cur] = curSeq
			}
			cur, curSeq, have = r.Sender, last[r.Sender], true
		}
		if r.Seq < curSeq {
			sorted = false
			break
		}
		curSeq = r.Seq
	}
	if sorted {
		return nil
	}
	slots := make(map[Sender][]int)
	for i := range reqs {
		if reqs[i].Seq != 0 {
			slots[reqs[i].Sender] = append(slots[reqs[i].Sender], i)
		}
	}
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	for _, pos := range slots {
		bySeq := slices.Clone(pos)
		slices.SortStableFunc(bySeq, func(a, b int) int { return cmp.Compare(reqs[a].Seq, reqs[b].Seq) })
		for k, p := range pos {
			order[p] = bySeq[k]
		}
	}
	return order
}
