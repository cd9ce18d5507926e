package entity

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/taskhub/taskhub/internal/history"
)

// sim is a tiny in-memory engine: one FIFO queue per entity, the record
// and state each entity's row would hold, and an inbox per orchestration.
// It delivers every Effect and Response the way the engine will, and lets
// the test choose the interleaving.
type sim struct {
	t        *testing.T
	invoke   Invoke
	entities map[string]*simEntity
	inboxes  map[string][]reply // by orchestration instance ID
	nextID   int
	starts   []Effect

	// With rng set, each entity step takes a random prefix of its queue,
	// a random batch limit, and redelivers consumed sequenced messages with
	// probability dupRate (as a non-transactional backend would).
	rng     *rand.Rand
	dupRate float64
	// Counters showing what a run exercised: entity steps after which a
	// Lock was waiting, Continue messages sent, redeliveries.
	lockQueued, continues, redelivered int
}

type simEntity struct {
	rec   Record
	state []byte
	queue []Request
}

// reply is what reaches an orchestration: a call's answer or a lock grant.
type reply struct {
	taskID  int64
	output  []byte
	failure *history.Failure
	granted bool
}

func newSim(t *testing.T, invoke Invoke) *sim {
	return &sim{t: t, invoke: invoke, entities: map[string]*simEntity{}, inboxes: map[string][]reply{}}
}

func (s *sim) entity(id string) *simEntity {
	e := s.entities[id]
	if e == nil {
		e = &simEntity{}
		s.entities[id] = e
	}
	return e
}

// send enqueues r for entity id, giving it a fresh message ID as the
// engine would.
func (s *sim) send(id string, r Request) {
	s.nextID++
	r.ID = "m" + strconv.Itoa(s.nextID)
	e := s.entity(id)
	e.queue = append(e.queue, r)
}

// step runs one batch of entity id and delivers what it produced.
func (s *sim) step(id string) Result {
	s.t.Helper()
	e := s.entity(id)
	given, maxBatch := e.queue, 0
	if s.rng != nil {
		given = e.queue[:1+s.rng.IntN(len(e.queue))]
		maxBatch = s.rng.IntN(4) // 0 is the default
	}
	res := Execute(id, e.rec, e.state, given, s.invoke, maxBatch)

	consumed := make(map[string]bool, len(res.Consumed))
	for _, cid := range res.Consumed {
		if consumed[cid] {
			s.t.Fatalf("%s: message %s consumed twice", id, cid)
		}
		consumed[cid] = true
	}
	var rest, redeliver []Request
	for _, r := range given {
		if !consumed[r.ID] {
			rest = append(rest, r)
			continue
		}
		delete(consumed, r.ID)
		if s.rng != nil && r.Seq > 0 && s.rng.Float64() < s.dupRate {
			redeliver = append(redeliver, r)
		}
	}
	if len(consumed) > 0 {
		s.t.Fatalf("%s: consumed messages it was not given: %v", id, consumed)
	}
	e.queue = append(rest, e.queue[len(given):]...)

	// The record goes through its storage encoding, as it will in the row.
	b, err := json.Marshal(res.Record)
	if err != nil {
		s.t.Fatal(err)
	}
	e.rec = Record{}
	if err := json.Unmarshal(b, &e.rec); err != nil {
		s.t.Fatal(err)
	}
	e.state = res.State
	for _, q := range e.rec.Queued {
		if q.Kind == Lock {
			s.lockQueued++
			break
		}
	}

	for _, ef := range res.Outbound {
		switch ef.Kind {
		case EffectSignal, EffectLockForward, EffectContinue:
			if ef.Kind == EffectContinue {
				s.continues++
			}
			s.send(ef.Target, ef.Request)
		case EffectLockGranted:
			s.inboxes[ef.Target] = append(s.inboxes[ef.Target], reply{taskID: ef.TaskID, granted: true})
		case EffectStart:
			s.starts = append(s.starts, ef)
		}
	}
	for _, r := range res.Responses {
		s.inboxes[r.To.InstanceID] = append(s.inboxes[r.To.InstanceID], reply{taskID: r.TaskID, output: r.Output, failure: r.Failure})
	}
	for _, r := range redeliver {
		s.redelivered++
		s.send(id, r)
	}
	return res
}

// lockedBy names the instance holding entity id's lock, or "".
func (s *sim) lockedBy(id string) string {
	if h := s.entity(id).rec.LockedBy; h != nil {
		return h.InstanceID
	}
	return ""
}

// orch is an orchestration as seen from entities: it numbers what it sends.
type orch struct {
	me  Sender
	seq uint64
}

func (o *orch) send(s *sim, to string, r Request) {
	o.seq++
	r.Sender, r.Seq = o.me, o.seq
	s.send(to, r)
}

// lock asks for a critical section over ids, in the global order.
func (o *orch) lock(s *sim, lockID string, task int64, ids ...string) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	o.send(s, ids[0], Request{Kind: Lock, LockID: lockID, TaskID: task, LockSet: ids[1:]})
}

func (o *orch) unlock(s *sim, lockID string, ids ...string) {
	for _, id := range ids {
		o.send(s, id, Request{Kind: Unlock, LockID: lockID})
	}
}

func (o *orch) call(s *sim, to, op string, input []byte, task int64) {
	o.send(s, to, Request{Kind: Operation, Operation: op, Input: input, WantsResponse: true, TaskID: task})
}

// TestLockChain walks one critical section over three entities, one of
// them held by another orchestration, and checks every hop.
func TestLockChain(t *testing.T) {
	const a, b, c = "@acct@a", "@acct@b", "@acct@c"
	s := newSim(t, journal)
	o := &orch{me: orchA}
	p := &orch{me: orchP}

	expect := func(res Result, wantOut, wantResp []string) {
		t.Helper()
		if got := describeEffects(res.Outbound); !slices.Equal(got, wantOut) {
			t.Errorf("Outbound = %q, want %q", got, wantOut)
		}
		if got := describeResponses(res.Responses); !slices.Equal(got, wantResp) {
			t.Errorf("Responses = %q, want %q", got, wantResp)
		}
	}

	// P holds b.
	p.lock(s, "P", 1, b)
	expect(s.step(b), []string{"granted orch-p/e1 lock P task 1"}, nil)

	// O locks {c, a, b}: requested in sorted order, starting at a.
	o.lock(s, "O", 1, c, a, b)
	expect(s.step(a), []string{"forward @acct@b lock O of orch-a task 1 rest [@acct@c] from @acct@a seq 1"}, nil)
	// b is P's: O's lock waits there.
	expect(s.step(b), nil, nil)
	if got := queuedIDs(s.entity(b).rec); len(got) != 1 || s.lockedBy(b) != "orch-p" {
		t.Fatalf("b: locked by %q, queue %v; want P holding and O's lock waiting", s.lockedBy(b), got)
	}
	// Another section over {a, c} waits at a, holding nothing.
	q := &orch{me: orchB}
	q.lock(s, "Q", 1, a, c)
	expect(s.step(a), nil, nil)

	// P works inside its section, then leaves: O's lock moves on to c.
	p.call(s, b, "append", []byte("p"), 2)
	p.unlock(s, "P", b)
	expect(s.step(b), []string{"forward @acct@c lock O of orch-a task 1 rest [] from @acct@b seq 1"}, []string{"orch-p#2="})
	expect(s.step(c), []string{"granted orch-a/e1 lock O task 1"}, nil)
	for _, id := range []string{a, b, c} {
		if s.lockedBy(id) != "orch-a" {
			t.Fatalf("%s locked by %q, want orch-a", id, s.lockedBy(id))
		}
	}

	// Inside the section O's calls run; a signal from outside waits.
	s.send(c, signal("", client, 0, "append", "outside"))
	o.call(s, c, "append", []byte("o"), 2)
	expect(s.step(c), nil, []string{"orch-a#2="})
	if string(s.entity(c).state) != "o" {
		t.Errorf("c state = %q, want only O's operation applied", s.entity(c).state)
	}

	// O unlocks everything: c applies the waiting signal, a hands the lock
	// to the section waiting there (Q), which moves on to c.
	o.unlock(s, "O", a, b, c)
	expect(s.step(a), []string{"forward @acct@c lock Q of orch-b task 1 rest [] from @acct@a seq 2"}, nil)
	expect(s.step(b), nil, nil)
	expect(s.step(c), []string{"granted orch-b/e1 lock Q task 1"}, nil)
	if got := string(s.entity(c).state); got != "o,outside" {
		t.Errorf("c state = %q, want o,outside", got)
	}
	if s.lockedBy(b) != "" || s.lockedBy(a) != "orch-b" || s.lockedBy(c) != "orch-b" {
		t.Errorf("locks: a %q, b %q, c %q; want Q on a and c only", s.lockedBy(a), s.lockedBy(b), s.lockedBy(c))
	}
	if got := s.inboxes["orch-a"]; len(got) != 2 || !got[0].granted {
		t.Errorf("orch-a inbox = %+v, want grant then its call's answer", got)
	}
}

// transfer is a BankTransfer orchestration: inside a critical section over
// two accounts it reads both balances, then writes both new balances. The
// read-modify-write spans several messages, so money is conserved only if
// no other transfer touches either account in between.
type transfer struct {
	orch
	from, to string
	amount   int64
	useLocks bool

	phase   int // 0 not started, 1 locking, 2 reading, 3 writing, 4 done
	pending int
	balance map[string]int64
}

const (
	taskLock = iota + 1
	taskGetFrom
	taskGetTo
	taskSetFrom
	taskSetTo
)

func (tr *transfer) start(s *sim) {
	if tr.useLocks {
		tr.phase = 1
		tr.lock(s, "section", taskLock, tr.from, tr.to)
		return
	}
	tr.read(s)
}

func (tr *transfer) read(s *sim) {
	tr.phase, tr.pending, tr.balance = 2, 2, map[string]int64{}
	tr.call(s, tr.from, "get", nil, taskGetFrom)
	tr.call(s, tr.to, "get", nil, taskGetTo)
}

func (tr *transfer) receive(t *testing.T, s *sim, r reply) {
	t.Helper()
	if r.failure != nil {
		t.Fatalf("%s: task %d failed: %v", tr.me.InstanceID, r.taskID, r.failure)
	}
	if tr.useLocks {
		// Mutual exclusion, checked at every step of the section: from the
		// grant to the unlock, both accounts are this transfer's.
		for _, id := range []string{tr.from, tr.to} {
			if got := s.lockedBy(id); got != tr.me.InstanceID {
				t.Fatalf("%s: in its critical section but %s is locked by %q", tr.me.InstanceID, id, got)
			}
		}
	}
	switch {
	case tr.phase == 1 && r.granted && r.taskID == taskLock:
		tr.read(s)
	case tr.phase == 2 && (r.taskID == taskGetFrom || r.taskID == taskGetTo):
		var v int64
		if err := json.Unmarshal(r.output, &v); err != nil {
			t.Fatal(err)
		}
		tr.balance[map[int64]string{taskGetFrom: tr.from, taskGetTo: tr.to}[r.taskID]] = v
		if tr.pending--; tr.pending > 0 {
			return
		}
		if tr.balance[tr.from] < tr.amount {
			tr.finish(s)
			return
		}
		tr.phase, tr.pending = 3, 2
		tr.call(s, tr.from, "set", []byte(strconv.FormatInt(tr.balance[tr.from]-tr.amount, 10)), taskSetFrom)
		tr.call(s, tr.to, "set", []byte(strconv.FormatInt(tr.balance[tr.to]+tr.amount, 10)), taskSetTo)
	case tr.phase == 3 && (r.taskID == taskSetFrom || r.taskID == taskSetTo):
		if tr.pending--; tr.pending == 0 {
			tr.finish(s)
		}
	default:
		t.Fatalf("%s: unexpected reply %+v in phase %d", tr.me.InstanceID, r, tr.phase)
	}
}

func (tr *transfer) finish(s *sim) {
	tr.phase = 4
	if tr.useLocks {
		tr.unlock(s, "section", tr.from, tr.to)
	}
}

type bankOutcome struct {
	total, want                               int64
	steps, lockQueued, continues, redelivered int
}

// runBank runs transfers between accounts with random interleavings,
// batch sizes and redeliveries, plus clients depositing into random
// accounts meanwhile, until everything is done.
func runBank(t *testing.T, seed uint64, useLocks bool) bankOutcome {
	t.Helper()
	const accounts, transfers, deposits, initial = 6, 40, 20, 100
	rng := rand.New(rand.NewPCG(seed, 1))
	s := newSim(t, counter)
	s.rng, s.dupRate = rng, 0.1

	ids := make([]string, accounts)
	for i := range ids {
		ids[i] = ID("Account", strconv.Itoa(i))
		s.entity(ids[i]).state = []byte(strconv.Itoa(initial))
	}
	trs := make([]*transfer, transfers)
	for i := range trs {
		from := rng.IntN(accounts)
		to := (from + 1 + rng.IntN(accounts-1)) % accounts
		trs[i] = &transfer{
			orch: orch{me: Sender{InstanceID: fmt.Sprintf("transfer-%02d", i), ExecutionID: "x"}},
			from: ids[from], to: ids[to], amount: 1 + rng.Int64N(60), useLocks: useLocks,
		}
	}
	depositsLeft := deposits

	const maxSteps = 200_000
	steps := 0
	for ; steps < maxSteps; steps++ {
		// Everything that can make progress, in a fixed order, so that the
		// seed alone decides the interleaving.
		type runnable struct {
			entity string
			tr     *transfer
		}
		var ready []runnable
		for _, id := range ids {
			if len(s.entity(id).queue) > 0 {
				ready = append(ready, runnable{entity: id})
			}
		}
		for _, tr := range trs {
			if tr.phase == 0 || len(s.inboxes[tr.me.InstanceID]) > 0 {
				ready = append(ready, runnable{tr: tr})
			}
		}
		if depositsLeft > 0 {
			ready = append(ready, runnable{})
		}
		if len(ready) == 0 {
			break
		}
		switch pick := ready[rng.IntN(len(ready))]; {
		case pick.entity != "":
			s.step(pick.entity)
		case pick.tr != nil && pick.tr.phase == 0:
			pick.tr.start(s)
		case pick.tr != nil:
			inbox := s.inboxes[pick.tr.me.InstanceID]
			s.inboxes[pick.tr.me.InstanceID] = nil
			for _, r := range inbox {
				pick.tr.receive(t, s, r)
			}
		default:
			depositsLeft--
			s.send(ids[rng.IntN(accounts)], signal("", client, 0, "deposit", "1"))
		}
	}

	out := bankOutcome{want: accounts*initial + deposits, steps: steps, lockQueued: s.lockQueued, continues: s.continues, redelivered: s.redelivered}
	if steps == maxSteps {
		t.Fatalf("seed %d: no end after %d steps (deadlock or livelock)", seed, steps)
	}
	for _, tr := range trs {
		if tr.phase != 4 {
			t.Errorf("seed %d: %s never completed (phase %d): deadlock", seed, tr.me.InstanceID, tr.phase)
		}
	}
	for _, id := range ids {
		e := s.entity(id)
		if e.rec.LockedBy != nil || len(e.rec.Queued) > 0 || len(e.queue) > 0 {
			t.Errorf("seed %d: %s left locked by %+v with %d queued and %d unread", seed, id, e.rec.LockedBy, len(e.rec.Queued), len(e.queue))
		}
		v, err := strconv.ParseInt(string(e.state), 10, 64)
		if err != nil {
			t.Fatalf("%s: state %q: %v", id, e.state, err)
		}
		if v < 0 {
			t.Errorf("seed %d: %s overdrawn: %d", seed, id, v)
		}
		out.total += v
	}
	return out
}

// TestBankTransfer: many concurrent transfers, each locking its two
// accounts in sorted order; money is conserved and every section ends.
func TestBankTransfer(t *testing.T) {
	var sum bankOutcome
	for seed := range uint64(25) {
		out := runBank(t, seed, true)
		if out.total != out.want {
			t.Errorf("seed %d: total balance %d, want %d", seed, out.total, out.want)
		}
		sum.steps += out.steps
		sum.lockQueued += out.lockQueued
		sum.continues += out.continues
		sum.redelivered += out.redelivered
	}
	t.Logf("%d steps, %d with a lock waiting, %d continues, %d redeliveries", sum.steps, sum.lockQueued, sum.continues, sum.redelivered)
	// The runs must have exercised what they claim to test.
	if sum.lockQueued == 0 || sum.continues == 0 || sum.redelivered == 0 {
		t.Error("the scenario never had a lock wait, a release cut short or a redelivery")
	}
}

// TestBankTransferNeedsLocks is the control experiment: the same transfers
// without critical sections lose money, so TestBankTransfer's conservation
// is owed to the locks and not to a lucky schedule.
func TestBankTransferNeedsLocks(t *testing.T) {
	for seed := range uint64(25) {
		if out := runBank(t, seed, false); out.total != out.want {
			return
		}
	}
	t.Error("transfers without locks conserved money for every seed; the bank test cannot detect a broken lock")
}
