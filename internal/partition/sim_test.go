package partition

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// The simulator runs several workers against one in-memory Partitions table
// and worker registry, round by round, with a clock that only moves when a
// round starts. It plays both sides of the contract: the backend (CAS acquire,
// renew, release, request, exactly as backend.Backend documents them) and the
// partition manager around Balance (renew before balancing, never renew a
// lease that already ran out, drop a partition before releasing it).
//
// Each worker keeps its own belief of what it owns: a partition, the epoch it
// acquired it with and when it thinks the lease runs out. That belief is what
// a real worker acts on (it processes the partition's control queue while it
// holds it), so the safety invariant is stated over beliefs, not rows.

// workerState is where a simulated worker is in its life.
type workerState int

const (
	running  workerState = iota
	draining             // leaving gracefully: releases everything, then gone
	crashed              // stopped for good; its leases run out
	paused               // stopped for now (a long GC pause, a frozen VM)
	gone                 // left after draining
)

func (s workerState) String() string {
	return [...]string{"running", "draining", "crashed", "paused", "gone"}[s]
}

// belief is a worker's own view of one lease it holds.
type belief struct {
	epoch   int64
	expires time.Time
}

type simWorker struct {
	id      string
	state   workerState
	beliefs map[int]belief
}

// mode says what each worker reads before running Balance in a round.
type mode string

const (
	// sequential: workers take turns, each reading the rows as the previous
	// one left them.
	sequential mode = "sequential"
	// snapshot: every worker reads the same rows at the start of the round,
	// then they act in turn (the case where all workers balance at once).
	snapshot mode = "snapshot"
	// stale: every worker acts on what it read one round earlier (a worker
	// stalled between reading and writing), so its CAS can lose.
	stale mode = "stale"
)

// stats counts the backend calls of the rounds since the last reset.
type stats struct {
	acquires  int // successful acquires
	conflicts int // acquires refused by the epoch CAS
	releases  int
	requests  int
	overrides int // requests replacing another worker's request
	rounds    int
}

type readState struct {
	now     time.Time
	rows    []*backend.Partition
	workers []string
}

type sim struct {
	now      time.Time
	lease    time.Duration
	interval time.Duration
	ttl      time.Duration // heartbeat age after which a worker is not live
	mode     mode
	rows     []*backend.Partition
	registry map[string]time.Time // worker ID -> last heartbeat
	workers  map[string]*simWorker
	last     map[string]readState // stale mode: what each worker read last round
	round    int
	stats    stats
	// rng, when set, shuffles the workers' turn order and the order of the
	// rows handed to Balance (which must not care; worker IDs come in map
	// order anyway).
	rng *rand.Rand
	// fail reports a broken invariant or rule. The tests make it fatal; the
	// simulator goes on as if nothing happened when it is not.
	fail func(format string, args ...any)
	// trace, when set, is told every backend call the workers make.
	trace func(format string, args ...any)
}

func (s *sim) tracef(format string, args ...any) {
	if s.trace != nil {
		s.trace("t=+%s "+format, append([]any{s.now.Sub(simEpoch)}, args...)...)
	}
}

var simEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newSim(fail func(string, ...any)) *sim {
	return &sim{
		now:      simEpoch,
		lease:    LeaseDurationDefault,
		interval: BalanceIntervalDefault,
		ttl:      LeaseDurationDefault,
		mode:     sequential,
		registry: map[string]time.Time{},
		workers:  map[string]*simWorker{},
		last:     map[string]readState{},
		fail:     fail,
	}
}

func (s *sim) setPartitions(n int) {
	s.rows = make([]*backend.Partition, n)
	for i := range s.rows {
		s.rows[i] = &backend.Partition{Index: i}
	}
}

// join starts a worker: it registers at once (its first heartbeat) and
// balances from the next round on.
func (s *sim) join(id string) error {
	if w, ok := s.workers[id]; ok && w.state != gone {
		// A crashed worker's rows still name it: a new process reusing its
		// ID would count those leases as its own without holding them.
		// Worker IDs are unique per process; only a clean exit frees one.
		return fmt.Errorf("worker %s already joined (%s); worker IDs are unique per process", id, w.state)
	}
	s.workers[id] = &simWorker{id: id, beliefs: map[int]belief{}}
	s.registry[id] = s.now
	delete(s.last, id)
	return nil
}

// leave shuts a worker down gracefully: it removes its registry row first
// (so the others stop counting it), then releases everything on its turn.
func (s *sim) leave(id string) error {
	w, err := s.worker(id, running, paused)
	if err != nil {
		return err
	}
	w.state = draining
	delete(s.registry, id)
	return nil
}

// crash stops a worker for good without releasing anything.
func (s *sim) crash(id string) error {
	w, err := s.worker(id, running, paused, draining)
	if err != nil {
		return err
	}
	w.state = crashed
	return nil
}

// pause freezes a worker: no renewals, heartbeats or balancing, but it keeps
// its beliefs and comes back with resume.
func (s *sim) pause(id string) error {
	w, err := s.worker(id, running)
	if err != nil {
		return err
	}
	w.state = paused
	return nil
}

// resume thaws a paused worker. Its renewal timer is overdue, so the first
// thing it does is renew (at the current time): leases still current are
// kept, leases that ran out while it was frozen are dropped.
func (s *sim) resume(id string) error {
	w, err := s.worker(id, paused)
	if err != nil {
		return err
	}
	w.state = running
	s.renew(w)
	s.checkInvariants()
	return nil
}

func (s *sim) worker(id string, allowed ...workerState) (*simWorker, error) {
	w, ok := s.workers[id]
	if !ok {
		return nil, fmt.Errorf("unknown worker %s", id)
	}
	if !slices.Contains(allowed, w.state) {
		return nil, fmt.Errorf("worker %s is %s", id, w.state)
	}
	return w, nil
}

// active returns the workers that act in a round, in turn order.
func (s *sim) active() []*simWorker {
	var ws []*simWorker
	for _, id := range s.ids() {
		if w := s.workers[id]; w.state == running || w.state == draining {
			ws = append(ws, w)
		}
	}
	if s.rng != nil {
		s.rng.Shuffle(len(ws), func(i, j int) { ws[i], ws[j] = ws[j], ws[i] })
	}
	return ws
}

func (s *sim) ids() []string {
	ids := make([]string, 0, len(s.workers))
	for id := range s.workers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// step runs one round: the clock moves one interval, then every active worker
// renews, heartbeats, reads, runs Balance and carries out the decision. The
// invariants are checked after every worker's turn.
func (s *sim) step() {
	s.round++
	s.stats.rounds++
	s.now = s.now.Add(s.interval)
	ws := s.active()
	switch s.mode {
	case sequential:
		for _, w := range ws {
			s.renew(w)
			r := s.read()
			s.act(w, r)
		}
	case snapshot:
		for _, w := range ws {
			s.renew(w)
		}
		r := s.read()
		for _, w := range ws {
			s.act(w, r)
		}
	case stale:
		for _, w := range ws {
			s.renew(w)
			r, ok := s.last[w.id]
			s.last[w.id] = s.read()
			if !ok {
				continue // nothing read yet: this round only reads
			}
			s.act(w, r)
		}
	default:
		s.fail("unknown mode %q", s.mode)
	}
	s.checkInvariants()
}

// renew is the manager's renewal pass plus its heartbeat. A lease whose
// expiry has passed is dropped, never renewed: PartitionRenew only checks
// owner and epoch, so renewing an expired lease could succeed while another
// worker, having seen it expired, acquires it with the same ExpectEpoch. Once
// expired, a lease can only come back through an acquire, whose epoch bump
// makes that race lose one side.
func (s *sim) renew(w *simWorker) {
	for _, idx := range sortedKeys(w.beliefs) {
		b := w.beliefs[idx]
		row := s.rows[idx]
		if !s.now.Before(b.expires) || row.Owner != w.id || row.Epoch != b.epoch {
			delete(w.beliefs, idx) // lost: stop processing the partition
			continue
		}
		row.LeaseExpiresAt = s.now.Add(s.lease)
		w.beliefs[idx] = belief{epoch: b.epoch, expires: row.LeaseExpiresAt}
	}
	if w.state == running {
		s.registry[w.id] = s.now
	}
}

// read is what a worker reads from the backend: copies of the rows and the
// workers whose heartbeat is fresh.
func (s *sim) read() readState {
	r := readState{now: s.now}
	for _, row := range s.rows {
		c := *row
		r.rows = append(r.rows, &c)
	}
	since := s.now.Add(-s.ttl)
	for id, hb := range s.registry {
		if hb.After(since) {
			r.workers = append(r.workers, id) // map order: Balance must not care
		}
	}
	if s.rng != nil {
		s.rng.Shuffle(len(r.rows), func(i, j int) { r.rows[i], r.rows[j] = r.rows[j], r.rows[i] })
	}
	return r
}

// act runs Balance for w on what it read and carries out the decision. It
// also checks the rules that must hold for any decision on what w read, so a
// rule broken on paper fails even when the CAS would have saved the day.
func (s *sim) act(w *simWorker, r readState) {
	snap := Snapshot{Now: r.now, Self: w.id, Partitions: r.rows, Workers: r.workers, Draining: w.state == draining}
	before := deepCopy(r.rows)
	d := Balance(snap)
	if !equalRows(before, r.rows) {
		s.fail("Balance modified its input")
	}
	s.checkDecision(snap, d)

	for _, idx := range d.Release {
		b, ok := w.beliefs[idx]
		if !ok {
			continue // stale read: the manager no longer holds it
		}
		delete(w.beliefs, idx) // stop processing first, then let go
		row := s.rows[idx]
		if row.Owner == w.id && row.Epoch == b.epoch {
			row.Owner = ""
			row.LeaseExpiresAt = s.now
			s.stats.releases++
			s.tracef("%s releases %d", w.id, idx)
		}
	}
	for _, c := range d.Acquire {
		if _, ok := w.beliefs[c.Partition]; ok {
			continue // stale read: the manager already holds it
		}
		row := s.rows[c.Partition]
		if row.Epoch != c.ExpectEpoch {
			s.stats.conflicts++
			s.tracef("%s loses CAS on %d (expect %d, epoch %d)", w.id, c.Partition, c.ExpectEpoch, row.Epoch)
			continue
		}
		row.Epoch++
		row.Owner = w.id
		row.NextOwner = ""
		row.LeaseExpiresAt = s.now.Add(s.lease)
		w.beliefs[c.Partition] = belief{epoch: row.Epoch, expires: row.LeaseExpiresAt}
		s.stats.acquires++
		s.tracef("%s acquires %d at epoch %d (read at +%s)", w.id, c.Partition, row.Epoch, r.now.Sub(simEpoch))
		s.checkInvariants()
	}
	for _, idx := range d.Request {
		if next := s.rows[idx].NextOwner; next != "" && next != w.id {
			s.stats.overrides++
		}
		s.rows[idx].NextOwner = w.id
		s.stats.requests++
		s.tracef("%s requests %d", w.id, idx)
	}
	if w.state == draining && len(w.beliefs) == 0 {
		w.state = gone
	}
	s.checkInvariants()
}

// checkDecision checks a decision against the snapshot it was made from.
func (s *sim) checkDecision(snap Snapshot, d Decision) {
	byIdx := map[int]*backend.Partition{}
	for _, r := range snap.Partitions {
		byIdx[r.Index] = r
	}
	seen := map[int]string{}
	note := func(idx int, what string) {
		if prev, ok := seen[idx]; ok {
			s.fail("%s: partition %d both in %s and %s: %+v", snap.Self, idx, prev, what, d)
		}
		seen[idx] = what
	}
	for _, c := range d.Acquire {
		note(c.Partition, "Acquire")
		r := byIdx[c.Partition]
		if h := holder(r, snap.Now); h != "" {
			s.fail("%s acquires partition %d whose lease is held by %s until %s (now %s)",
				snap.Self, c.Partition, h, r.LeaseExpiresAt.Format(time.TimeOnly), snap.Now.Format(time.TimeOnly))
		}
		if c.ExpectEpoch != r.Epoch {
			s.fail("%s acquires partition %d expecting epoch %d, row has %d", snap.Self, c.Partition, c.ExpectEpoch, r.Epoch)
		}
	}
	for _, idx := range d.Release {
		note(idx, "Release")
		if h := holder(byIdx[idx], snap.Now); h != snap.Self {
			s.fail("%s releases partition %d held by %q", snap.Self, idx, h)
		}
	}
	for _, idx := range d.Request {
		note(idx, "Request")
		if h := holder(byIdx[idx], snap.Now); h == "" || h == snap.Self {
			s.fail("%s requests partition %d held by %q", snap.Self, idx, h)
		}
	}
	if !slices.IsSortedFunc(d.Acquire, func(a, b Claim) int { return a.Partition - b.Partition }) ||
		!slices.IsSorted(d.Release) || !slices.IsSorted(d.Request) {
		s.fail("%s: decision not sorted: %+v", snap.Self, d)
	}
	if snap.Draining && (len(d.Acquire) > 0 || len(d.Request) > 0) {
		s.fail("draining %s takes or asks for partitions: %+v", snap.Self, d)
	}
}

// checkInvariants checks, at the current time:
//   - no partition has two workers that both believe they hold it with an
//     unexpired lease (the safety property the whole lease scheme exists for);
//   - a worker that believes it holds a partition is the row's owner at the
//     epoch it acquired (so its fenced commits would pass);
//   - every current lease in the table is believed by its owner (the
//     simulator itself keeps rows and beliefs in step).
func (s *sim) checkInvariants() {
	believers := make([][]string, len(s.rows))
	for _, id := range s.ids() {
		for idx, b := range s.workers[id].beliefs {
			if !s.now.Before(b.expires) {
				continue
			}
			believers[idx] = append(believers[idx], id)
			row := s.rows[idx]
			if row.Owner != id || row.Epoch != b.epoch {
				s.fail("round %d: %s believes it holds partition %d at epoch %d until %s, but the row says owner %q epoch %d",
					s.round, id, idx, b.epoch, b.expires.Format(time.TimeOnly), row.Owner, row.Epoch)
			}
		}
	}
	for idx, ws := range believers {
		if len(ws) > 1 {
			s.fail("round %d: partition %d held by %v at once", s.round, idx, ws)
		}
	}
	for _, row := range s.rows {
		h := holder(row, s.now)
		if h == "" {
			continue
		}
		w := s.workers[h]
		if w == nil {
			s.fail("round %d: partition %d owned by unknown worker %s", s.round, row.Index, h)
			continue
		}
		if b, ok := w.beliefs[row.Index]; !ok || b.epoch != row.Epoch {
			s.fail("round %d: partition %d leased to %s (epoch %d), which does not believe it holds it", s.round, row.Index, h, row.Epoch)
		}
	}
}

// running returns the IDs of the workers that are up and not leaving.
func (s *sim) running() []string {
	var ids []string
	for _, id := range s.ids() {
		if s.workers[id].state == running {
			ids = append(ids, id)
		}
	}
	return ids
}

// counts returns the number of current leases per worker.
func (s *sim) counts() map[string]int {
	c := map[string]int{}
	for _, row := range s.rows {
		if h := holder(row, s.now); h != "" {
			c[h]++
		}
	}
	return c
}

// balanced reports whether every partition is held by a running worker and
// every running worker holds between floor(P/W) and ceil(P/W) of them; when
// not, it says why.
func (s *sim) balanced() (bool, string) {
	run := s.running()
	if len(run) == 0 {
		return false, "no running worker"
	}
	if problem := s.allOwned(); problem != "" {
		return false, problem
	}
	p, n := len(s.rows), len(run)
	lo, hi := p/n, (p+n-1)/n
	c := s.counts()
	for _, id := range run {
		if c[id] < lo || c[id] > hi {
			return false, fmt.Sprintf("%s holds %d, want %d..%d (%s)", id, c[id], lo, hi, s.describe())
		}
	}
	return true, ""
}

// allOwned returns "" when every partition is held by a running worker.
func (s *sim) allOwned() string {
	for _, row := range s.rows {
		h := holder(row, s.now)
		if h == "" {
			return fmt.Sprintf("partition %d is free (%s)", row.Index, s.describe())
		}
		if s.workers[h].state != running {
			return fmt.Sprintf("partition %d is held by %s, which is %s (%s)", row.Index, h, s.workers[h].state, s.describe())
		}
	}
	return ""
}

// describe renders the table compactly, e.g. "t=+40s w1:0-3,8 w2:4-7 free:9",
// for failure messages and the print command.
func (s *sim) describe() string {
	by := map[string][]int{}
	for _, row := range s.rows {
		h := holder(row, s.now)
		if h == "" {
			h = "free"
		}
		by[h] = append(by[h], row.Index)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "t=+%s", s.now.Sub(simEpoch))
	for _, id := range sortedKeys(by) {
		fmt.Fprintf(&b, " %s:%s", id, ranges(by[id]))
	}
	var states []string
	for _, id := range s.ids() {
		if st := s.workers[id].state; st != running {
			states = append(states, id+"="+st.String())
		}
	}
	if len(states) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(states, " "))
	}
	return b.String()
}

// ranges renders sorted integers as "0-3,8".
func ranges(xs []int) string {
	var parts []string
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, fmt.Sprint(xs[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", xs[i], xs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func sortedKeys[K interface{ ~int | ~string }, V any](m map[K]V) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func deepCopy(rows []*backend.Partition) []backend.Partition {
	out := make([]backend.Partition, len(rows))
	for i, r := range rows {
		out[i] = *r
	}
	return out
}

func equalRows(want []backend.Partition, got []*backend.Partition) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if want[i] != *got[i] {
			return false
		}
	}
	return true
}
