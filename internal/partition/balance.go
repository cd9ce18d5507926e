package partition

import (
	"cmp"
	"slices"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// Lease timings from the reference implementation. The balancer itself reads
// none of them (it is a function of a snapshot); the partition manager that
// runs it uses them, and the tests' simulator does too.
const (
	// LeaseDurationDefault is how long an acquired or renewed lease lasts.
	// It bounds how long a crashed worker's partitions stay unowned.
	LeaseDurationDefault = 30 * time.Second
	// RenewIntervalDefault is how often an owner renews its leases. A third
	// of the lease, so two renewals can fail before the lease runs out.
	RenewIntervalDefault = 10 * time.Second
	// BalanceIntervalDefault is how often a worker reads the Partitions
	// table and the worker registry and runs Balance.
	BalanceIntervalDefault = 10 * time.Second
)

// Snapshot is what Balance decides from: the Partitions table and the live
// workers as one worker (Self) read them at Now.
type Snapshot struct {
	// Now is the time the rows were read; a lease is current while Now is
	// before its LeaseExpiresAt.
	Now time.Time
	// Self is the ID of the worker that will act on the decision.
	Self string
	// Partitions holds every partition row of the hub, in any order, with
	// distinct indexes. Balance does not modify them.
	Partitions []*backend.Partition
	// Workers are the IDs of the workers with a fresh heartbeat, in any
	// order. Self is counted as live whether it is listed or not, unless it
	// is Draining.
	Workers []string
	// Draining is true when Self is shutting down: it gives every partition
	// away and takes none. A draining worker should remove its registry row
	// first, so that the others stop counting it (and stop planning to give
	// partitions to it).
	Draining bool
}

// Claim is a partition to acquire with a compare-and-swap on its epoch
// (backend.PartitionAcquireParams.ExpectEpoch).
type Claim struct {
	Partition   int
	ExpectEpoch int64
}

// Decision is what Self should do now. Every list is sorted by partition
// index. The caller carries it out with PartitionAcquire (Acquire),
// PartitionRelease after draining the partition's work, using the epoch it
// holds (Release), and PartitionRequest (Request).
type Decision struct {
	// Acquire lists free partitions (never owned, released or expired) that
	// the plan gives to Self, including those released for Self after it
	// asked for them.
	Acquire []Claim
	// Release lists partitions Self owns and should drain and release:
	// everything when Draining, else the partitions another live worker has
	// asked for while Self is above its target.
	Release []int
	// Request lists partitions of workers above their target that Self, being
	// below its target with no free partition left for it, asks for.
	Request []int
	// Target is how many partitions Self should own (0 when Draining).
	Target int
	// Owned is how many current leases the snapshot shows Self holding.
	Owned int
}

// Balance decides which leases Self should take, give up or ask for.
//
// It computes one plan for the whole hub from the snapshot and returns Self's
// part of it. Because the plan depends only on the rows and the live workers
// (Self only picks its part), workers that read the same rows make moves
// that fit together: they do not pick the same free partition or ask for the
// same busy one. Workers that read at different times may still collide; the
// epoch compare-and-swap settles that, and no rule makes a move that is
// unsafe if it wins. An empty Self gets an empty decision.
//
// The rules, in order:
//
//  1. Live workers are Workers plus Self; W is their number, P the number of
//     partitions. A lease counts for its owner only while unexpired.
//  2. Targets sum to P: every live worker gets floor(P/W), and P mod W of
//     them get one more: workers already holding ceil(P/W) or more first,
//     then the smallest IDs. Giving the extra partitions to those who
//     already hold them means a balanced hub (every count in [floor, ceil])
//     has no worker above or below target, so it makes no moves.
//  3. Free partitions (no owner, or lease expired) go to live workers below
//     target: first a released partition to the worker that asked for it
//     (NextOwner), then the rest, lowest index first, each to the worker
//     missing the most (ties: smallest ID). Partitions whose owner is not
//     live but whose lease is current are left alone: the owner may be slow,
//     not dead, and its lease will run out if it is dead.
//  4. Workers still below target get partitions from live workers above
//     target. A request already recorded (NextOwner) is honoured first;
//     then the worker with the largest surplus (ties: smallest ID) gives its
//     lowest-index partition to the worker missing the most.
//  5. An owner releases a requested partition only when the plan honours the
//     request, i.e. it is above target and the requester is live and still
//     short; otherwise it ignores the request. It never gives a partition
//     away unasked (except when draining): the request is the requester's
//     confirmation, from its own reading, that it still wants one.
func Balance(s Snapshot) Decision {
	var d Decision
	rows := sortedRows(s.Partitions)
	if s.Self == "" {
		return d
	}
	if s.Draining {
		for _, r := range rows {
			if holder(r, s.Now) == s.Self {
				d.Release = append(d.Release, r.Index)
				d.Owned++
			}
		}
		return d
	}
	p := newPlan(s.Now, rows, s.Workers, s.Self)
	d.Target = p.target[s.Self]
	d.Owned = len(p.owned[s.Self])
	for _, r := range rows {
		if p.assign[r.Index] == s.Self {
			d.Acquire = append(d.Acquire, Claim{Partition: r.Index, ExpectEpoch: r.Epoch})
		}
	}
	for _, t := range p.transfers {
		switch {
		case t.from == s.Self && t.requested:
			d.Release = append(d.Release, t.partition)
		case t.to == s.Self && !t.requested:
			d.Request = append(d.Request, t.partition)
		}
	}
	slices.Sort(d.Release)
	slices.Sort(d.Request)
	return d
}

// holder returns the owner of r's current lease, or "" when the partition is
// free: never owned, released, or expired at now.
func holder(r *backend.Partition, now time.Time) string {
	if r.Owner == "" || !now.Before(r.LeaseExpiresAt) {
		return ""
	}
	return r.Owner
}

// sortedRows returns the non-nil rows ordered by index, so that every rule
// that says "lowest index first" can simply walk the slice.
func sortedRows(in []*backend.Partition) []*backend.Partition {
	rows := make([]*backend.Partition, 0, len(in))
	for _, r := range in {
		if r != nil {
			rows = append(rows, r)
		}
	}
	slices.SortFunc(rows, func(a, b *backend.Partition) int { return cmp.Compare(a.Index, b.Index) })
	return rows
}

// transfer is a partition moving from one live worker to another through a
// graceful hand-off.
type transfer struct {
	partition int
	from, to  string
	// requested is true when the row already names `to` as NextOwner: the
	// owner should release now. Otherwise `to` still has to ask.
	requested bool
}

// plan is the hub-wide assignment computed from one snapshot.
type plan struct {
	live   []string         // sorted, unique
	owned  map[string][]int // current leases by owner (live or not), ascending
	target map[string]int   // live workers only
	short  map[string]int   // target minus owned and assigned, when positive
	excess map[string]int   // owned minus target, when positive
	assign map[int]string   // free partition -> live worker that takes it
	rows   map[int]*backend.Partition
	// transfers lists hand-offs: honoured requests first, then new ones.
	transfers []transfer
}

func newPlan(now time.Time, rows []*backend.Partition, workers []string, self string) *plan {
	p := &plan{
		owned:  map[string][]int{},
		target: map[string]int{},
		short:  map[string]int{},
		excess: map[string]int{},
		assign: map[int]string{},
		rows:   map[int]*backend.Partition{},
	}
	p.live = liveWorkers(workers, self)
	var free []*backend.Partition
	for _, r := range rows {
		p.rows[r.Index] = r
		if h := holder(r, now); h != "" {
			p.owned[h] = append(p.owned[h], r.Index)
		} else {
			free = append(free, r)
		}
	}
	p.setTargets(len(rows))
	p.assignFree(free)
	p.planTransfers()
	return p
}

// liveWorkers returns the sorted, de-duplicated live worker IDs, Self included.
func liveWorkers(workers []string, self string) []string {
	live := make([]string, 0, len(workers)+1)
	for _, w := range workers {
		if w != "" {
			live = append(live, w)
		}
	}
	live = append(live, self)
	slices.Sort(live)
	return slices.Compact(live)
}

// setTargets gives each live worker floor(P/W), and one more to P mod W of
// them: first to workers that already hold ceil(P/W) or more (the only ones
// for whom the extra partition saves a move, and the reason a balanced hub
// stays put), then by ID. Ranking the rest by ID rather than by what they
// hold keeps the choice fixed while a rebalance is under way: counts below
// ceil change with every acquire, and a ranking that followed them would
// move the extra partition from worker to worker mid-flight.
func (p *plan) setTargets(partitions int) {
	n := len(p.live)
	base, extra := partitions/n, partitions%n
	ceil := base
	if extra > 0 {
		ceil++
	}
	ranked := slices.Clone(p.live) // sorted by ID
	slices.SortStableFunc(ranked, func(a, b string) int {
		return cmp.Compare(b2i(len(p.owned[b]) >= ceil), b2i(len(p.owned[a]) >= ceil))
	})
	for i, w := range ranked {
		t := base
		if i < extra {
			t++
		}
		p.target[w] = t
		have := len(p.owned[w])
		if have < t {
			p.short[w] = t - have
		} else {
			p.excess[w] = have - t
		}
	}
}

// assignFree hands free partitions to workers below target: a released
// partition to the worker that asked for it, then the rest to whoever misses
// the most. The targets sum to P, so the live workers together miss at least
// as many partitions as are free, and every free partition finds a taker.
func (p *plan) assignFree(free []*backend.Partition) {
	var rest []*backend.Partition
	for _, r := range free {
		if w := r.NextOwner; w != "" && p.short[w] > 0 {
			p.assign[r.Index] = w
			p.short[w]--
		} else {
			rest = append(rest, r)
		}
	}
	for _, r := range rest {
		w := p.mostShort()
		if w == "" {
			return // unreachable while targets sum to P; harmless otherwise
		}
		p.assign[r.Index] = w
		p.short[w]--
	}
}

// mostShort returns the live worker missing the most partitions (ties: the
// smallest ID), or "" when nobody is short.
func (p *plan) mostShort() string {
	best := ""
	for _, w := range p.live {
		if p.short[w] > p.short[best] {
			best = w
		}
	}
	return best
}

// mostExcess returns the live worker owning the most partitions beyond its
// target (ties: the smallest ID), or "" when nobody is above target.
func (p *plan) mostExcess() string {
	best := ""
	for _, w := range p.live {
		if p.excess[w] > p.excess[best] {
			best = w
		}
	}
	return best
}

// planTransfers matches live workers above target with workers still short
// after the free partitions. Requests already recorded come first, so a
// hand-off in progress is finished rather than replaced by another one.
func (p *plan) planTransfers() {
	moving := map[int]bool{}
	for _, w := range p.live {
		for _, idx := range p.owned[w] {
			to := p.rows[idx].NextOwner
			if to == "" || to == w || p.excess[w] == 0 || p.short[to] == 0 {
				continue
			}
			p.transfers = append(p.transfers, transfer{partition: idx, from: w, to: to, requested: true})
			moving[idx] = true
			p.excess[w]--
			p.short[to]--
		}
	}
	for {
		from, to := p.mostExcess(), p.mostShort()
		if from == "" || to == "" {
			return
		}
		for _, idx := range p.owned[from] {
			if !moving[idx] {
				p.transfers = append(p.transfers, transfer{partition: idx, from: from, to: to})
				moving[idx] = true
				break
			}
		}
		p.excess[from]--
		p.short[to]--
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
