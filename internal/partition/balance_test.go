package partition

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

var now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// row builds a partition row: held by owner for `left` more time (negative:
// expired that long ago), at the given epoch. An empty owner is a free row.
func row(idx int, owner string, epoch int64, left time.Duration) *backend.Partition {
	r := &backend.Partition{Index: idx, Owner: owner, Epoch: epoch}
	if owner != "" || left != 0 {
		r.LeaseExpiresAt = now.Add(left)
	}
	return r
}

// freeRows returns n never-owned rows.
func freeRows(n int) []*backend.Partition {
	rows := make([]*backend.Partition, n)
	for i := range rows {
		rows[i] = row(i, "", 0, 0)
	}
	return rows
}

func claims(idxEpoch ...int) []Claim {
	var cs []Claim
	for i := 0; i < len(idxEpoch); i += 2 {
		cs = append(cs, Claim{Partition: idxEpoch[i], ExpectEpoch: int64(idxEpoch[i+1])})
	}
	return cs
}

func allClaims(n int) []Claim {
	cs := make([]Claim, n)
	for i := range cs {
		cs[i] = Claim{Partition: i}
	}
	return cs
}

// TestBalanceSingleWorker: alone, a worker takes every partition it may take
// in one go, and only those.
func TestBalanceSingleWorker(t *testing.T) {
	const live = LeaseDurationDefault
	tests := []struct {
		name    string
		rows    []*backend.Partition
		workers []string
		want    Decision
	}{
		{name: "fresh hub of 1", rows: freeRows(1), workers: []string{"me"},
			want: Decision{Acquire: allClaims(1), Target: 1}},
		{name: "fresh hub of 4", rows: freeRows(4), workers: []string{"me"},
			want: Decision{Acquire: allClaims(4), Target: 4}},
		{name: "fresh hub of 16", rows: freeRows(16), workers: []string{"me"},
			want: Decision{Acquire: allClaims(16), Target: 16}},
		{name: "self counts as live when not listed", rows: freeRows(4),
			want: Decision{Acquire: allClaims(4), Target: 4}},
		{name: "released and expired rows keep their epochs",
			rows: []*backend.Partition{
				row(0, "", 7, -time.Minute),         // released
				row(1, "dead", 3, -time.Nanosecond), // expired
				row(2, "dead", 4, 0),                // expires right now: expired
				row(3, "", 9, time.Minute),          // released early: owner cleared wins
			},
			workers: []string{"me"},
			want:    Decision{Acquire: claims(0, 7, 1, 3, 2, 4, 3, 9), Target: 4}},
		{name: "current leases of an unlisted worker are left alone",
			rows: []*backend.Partition{
				row(0, "slow", 2, time.Nanosecond),
				row(1, "slow", 2, live),
				row(2, "", 0, 0),
				row(3, "slow", 5, -time.Second),
			},
			workers: []string{"me"},
			want:    Decision{Acquire: claims(2, 0, 3, 5), Target: 4}},
		{name: "already holding some",
			rows: []*backend.Partition{
				row(0, "me", 1, live),
				row(1, "", 0, 0),
				row(2, "me", 1, live),
				row(3, "", 0, 0),
			},
			workers: []string{"me"},
			want:    Decision{Acquire: claims(1, 0, 3, 0), Target: 4, Owned: 2}},
		{name: "own expired lease is re-acquired, not assumed",
			rows: []*backend.Partition{
				row(0, "me", 6, -time.Second),
				row(1, "me", 2, live),
			},
			workers: []string{"me"},
			want:    Decision{Acquire: claims(0, 6), Target: 2, Owned: 1}},
		{name: "requests by the dead are ignored",
			rows: []*backend.Partition{
				{Index: 0, Owner: "me", Epoch: 1, LeaseExpiresAt: now.Add(live), NextOwner: "gone"},
				{Index: 1, Owner: "", Epoch: 1, LeaseExpiresAt: now, NextOwner: "gone"},
			},
			workers: []string{"me"},
			want:    Decision{Acquire: claims(1, 1), Target: 2, Owned: 1}},
		{name: "rows in any order", rows: []*backend.Partition{row(2, "", 0, 0), row(0, "", 0, 0), row(1, "", 0, 0)},
			workers: []string{"me", "me"},
			want:    Decision{Acquire: allClaims(3), Target: 3}},
		{name: "no partitions", workers: []string{"me"}, want: Decision{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Balance(Snapshot{Now: now, Self: "me", Partitions: tc.rows, Workers: tc.workers})
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Balance =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestBalanceRules covers the hand-off rules with several workers, each case
// from the point of view of one of them.
func TestBalanceRules(t *testing.T) {
	const live = LeaseDurationDefault
	held := func(idx int, owner, next string) *backend.Partition {
		return &backend.Partition{Index: idx, Owner: owner, Epoch: 1, LeaseExpiresAt: now.Add(live), NextOwner: next}
	}
	tests := []struct {
		name    string
		self    string
		rows    []*backend.Partition
		workers []string
		drain   bool
		want    Decision
	}{
		{
			// 4 partitions, 2 workers, a holds all: b asks for two, a waits.
			name: "newcomer asks the loaded worker", self: "b",
			rows:    []*backend.Partition{held(0, "a", ""), held(1, "a", ""), held(2, "a", ""), held(3, "a", "")},
			workers: []string{"a", "b"},
			want:    Decision{Request: []int{0, 1}, Target: 2},
		},
		{
			name: "owner does not give away unasked", self: "a",
			rows:    []*backend.Partition{held(0, "a", ""), held(1, "a", ""), held(2, "a", ""), held(3, "a", "")},
			workers: []string{"a", "b"},
			want:    Decision{Target: 2, Owned: 4},
		},
		{
			name: "owner above target releases what was asked", self: "a",
			rows:    []*backend.Partition{held(0, "a", "b"), held(1, "a", "b"), held(2, "a", ""), held(3, "a", "")},
			workers: []string{"a", "b"},
			want:    Decision{Release: []int{0, 1}, Target: 2, Owned: 4},
		},
		{
			name: "requester does not ask twice", self: "b",
			rows:    []*backend.Partition{held(0, "a", "b"), held(1, "a", "b"), held(2, "a", ""), held(3, "a", "")},
			workers: []string{"a", "b"},
			want:    Decision{Target: 2},
		},
		{
			name: "owner releases no more than its surplus", self: "a",
			rows:    []*backend.Partition{held(0, "a", "b"), held(1, "a", "b"), held(2, "a", "b"), held(3, "a", "")},
			workers: []string{"a", "b"},
			want:    Decision{Release: []int{0, 1}, Target: 2, Owned: 4},
		},
		{
			name: "owner at target ignores a request", self: "a",
			rows:    []*backend.Partition{held(0, "a", "b"), held(1, "a", ""), held(2, "b", ""), held(3, "b", "")},
			workers: []string{"a", "b"},
			want:    Decision{Target: 2, Owned: 2},
		},
		{
			name: "request from a worker no longer live is ignored", self: "a",
			rows:    []*backend.Partition{held(0, "a", "c"), held(1, "a", ""), held(2, "a", ""), held(3, "b", "")},
			workers: []string{"a", "b"},
			want:    Decision{Target: 2, Owned: 3}, // b is short by one and will ask itself
		},
		{
			name: "request from a worker that is not short is ignored", self: "a",
			rows: []*backend.Partition{held(0, "a", "b"), held(1, "a", ""), held(2, "a", ""),
				held(3, "b", ""), held(4, "b", ""), held(5, "c", "")},
			workers: []string{"a", "b", "c"},
			want:    Decision{Target: 2, Owned: 3}, // c is the short one
		},
		{
			name: "a released partition waits for the worker that asked", self: "b",
			rows: []*backend.Partition{
				{Index: 0, Epoch: 4, LeaseExpiresAt: now, NextOwner: "c"},
				held(1, "a", ""), held(2, "a", ""), held(3, "a", ""), held(4, "a", ""), held(5, "a", ""),
			},
			workers: []string{"a", "b", "c"},
			// Without the request b would take 0 (same shortfall, smaller
			// ID). c takes 0 and a's partitions are dealt to whoever
			// misses the most (ties: smallest ID): b, b, c.
			want: Decision{Request: []int{1, 2}, Target: 2},
		},
		{
			name: "the worker that asked takes it", self: "c",
			rows: []*backend.Partition{
				{Index: 0, Epoch: 4, LeaseExpiresAt: now, NextOwner: "c"},
				held(1, "a", ""), held(2, "a", ""), held(3, "a", ""), held(4, "a", ""), held(5, "a", ""),
			},
			workers: []string{"a", "b", "c"},
			want:    Decision{Acquire: claims(0, 4), Request: []int{3}, Target: 2},
		},
		{
			name: "free partitions first, requests only for the rest", self: "b",
			rows:    []*backend.Partition{held(0, "a", ""), held(1, "a", ""), held(2, "a", ""), row(3, "", 2, -time.Second)},
			workers: []string{"a", "b"},
			want:    Decision{Acquire: claims(3, 2), Request: []int{0}, Target: 2},
		},
		{
			name: "leases of a worker missing from the registry wait for expiry", self: "b",
			rows:    []*backend.Partition{held(0, "ghost", ""), held(1, "ghost", ""), held(2, "a", ""), held(3, "a", "")},
			workers: []string{"a", "b"},
			want:    Decision{Target: 2},
		},
		{
			name: "more workers than partitions: the idle one stays idle", self: "c",
			rows:    []*backend.Partition{held(0, "a", ""), held(1, "b", "")},
			workers: []string{"a", "b", "c"},
			want:    Decision{Target: 0},
		},
		{
			name: "more workers than partitions: a free one goes to the first idle ID", self: "c",
			rows:    []*backend.Partition{held(0, "a", ""), row(1, "", 3, -time.Second)},
			workers: []string{"d", "a", "c"},
			want:    Decision{Acquire: claims(1, 3), Target: 1},
		},
		{
			name: "draining releases everything it holds, asked or not", self: "a", drain: true,
			rows:    []*backend.Partition{held(0, "a", ""), held(1, "b", "a"), held(2, "a", "b"), row(3, "a", 1, -time.Second), row(4, "", 0, 0)},
			workers: []string{"a", "b"},
			want:    Decision{Release: []int{0, 2}, Owned: 2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Balance(Snapshot{Now: now, Self: tc.self, Partitions: tc.rows, Workers: tc.workers, Draining: tc.drain})
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Balance =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestBalanceBalancedIsStill: a balanced hub makes no move, whatever
// requests are left on the rows, for every hub size and worker count the
// scenarios use.
func TestBalanceBalancedIsStill(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range []int{1, 4, 16} {
		for _, n := range []int{1, 2, 3, 5, 16, 20} {
			workers := make([]string, n)
			for i := range workers {
				workers[i] = fmt.Sprintf("w%02d", i)
			}
			for trial := range 20 {
				// Deal partitions so counts are within [floor, ceil], in a
				// random order, with random leftover requests.
				order := rng.Perm(n)
				rows := make([]*backend.Partition, p)
				for i := range rows {
					rows[i] = &backend.Partition{Index: i, Owner: workers[order[i%n]], Epoch: int64(1 + rng.IntN(9)),
						LeaseExpiresAt: now.Add(time.Duration(1+rng.IntN(30)) * time.Second)}
					if rng.IntN(2) == 0 {
						rows[i].NextOwner = workers[rng.IntN(n)]
					}
				}
				rng.Shuffle(p, func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
				for _, self := range workers {
					d := Balance(Snapshot{Now: now, Self: self, Partitions: rows, Workers: workers})
					if len(d.Acquire)+len(d.Release)+len(d.Request) != 0 {
						t.Fatalf("P=%d W=%d trial %d: %s moves in a balanced hub: %+v\nrows: %s", p, n, trial, self, d, dump(rows))
					}
				}
			}
		}
	}
}

// TestBalanceSameSnapshot checks decisions on random snapshots: each one
// legal for what was read, all live workers' decisions on one snapshot
// compatible with each other, and none depending on input order.
func TestBalanceSameSnapshot(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for trial := range 3000 {
		rows, workers := randomSnapshot(rng)
		check := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("trial %d: %s\nworkers %v\nrows: %s", trial, fmt.Sprintf(format, args...), workers, dump(rows))
		}
		before := deepCopy(rows)
		claimed := map[int]string{}
		requested := map[int]string{}
		decisions := map[string]Decision{}
		targets := 0
		for _, self := range workers {
			d := Balance(Snapshot{Now: now, Self: self, Partitions: rows, Workers: workers})
			decisions[self] = d
			targets += d.Target
			for _, c := range d.Acquire {
				if prev, ok := claimed[c.Partition]; ok {
					check("%s and %s both acquire %d", prev, self, c.Partition)
				}
				claimed[c.Partition] = self
			}
			for _, idx := range d.Request {
				if prev, ok := requested[idx]; ok {
					check("%s and %s both request %d", prev, self, idx)
				}
				requested[idx] = self
			}
			if len(d.Acquire)+len(d.Request) > 0 && d.Owned+len(d.Acquire)+len(d.Request) > d.Target {
				check("%s would end above target: %+v", self, d)
			}
			if len(d.Release) > 0 && d.Owned-len(d.Release) < d.Target {
				check("%s would end below target: %+v", self, d)
			}
			// Shuffled, duplicated input gives the same decision.
			rows2 := slices.Clone(rows)
			rng.Shuffle(len(rows2), func(i, j int) { rows2[i], rows2[j] = rows2[j], rows2[i] })
			workers2 := append(slices.Clone(workers), workers[rng.IntN(len(workers))])
			rng.Shuffle(len(workers2), func(i, j int) { workers2[i], workers2[j] = workers2[j], workers2[i] })
			if d2 := Balance(Snapshot{Now: now, Self: self, Partitions: rows2, Workers: workers2}); !reflect.DeepEqual(d, d2) {
				check("%s decides %+v, and %+v on the same rows in another order", self, d, d2)
			}
		}
		if !equalRows(before, rows) {
			check("Balance modified its input")
		}
		if targets != len(rows) {
			check("targets sum to %d, not %d", targets, len(rows))
		}
		byIdx := map[int]*backend.Partition{}
		for _, r := range rows {
			byIdx[r.Index] = r
		}
		for _, r := range rows {
			h := holder(r, now)
			if h == "" {
				if _, ok := claimed[r.Index]; !ok {
					check("free partition %d claimed by nobody", r.Index)
				}
				if c := claimed[r.Index]; r.NextOwner != "" && slices.Contains(workers, r.NextOwner) && c != r.NextOwner &&
					decisions[r.NextOwner].Owned+len(decisions[r.NextOwner].Acquire) < decisions[r.NextOwner].Target {
					check("partition %d released for %s went to %s", r.Index, r.NextOwner, c)
				}
				continue
			}
			if c, ok := claimed[r.Index]; ok {
				check("%s acquires %d, held by %s", c, r.Index, h)
			}
			if q, ok := requested[r.Index]; ok {
				owner, isLive := decisions[h]
				if !isLive || q == h || owner.Owned <= owner.Target {
					check("%s requests %d from %s (live %v), which is not above target: %+v", q, r.Index, h, isLive, owner)
				}
			}
		}
		for self, d := range decisions {
			for _, idx := range d.Release {
				r := byIdx[idx]
				if holder(r, now) != self || r.NextOwner == self || !slices.Contains(workers, r.NextOwner) {
					check("%s releases %d (owner %q, next %q)", self, idx, r.Owner, r.NextOwner)
				}
			}
		}
	}
}

// randomSnapshot makes rows in every state a row can be in, with workers
// live or not, and returns the live worker IDs.
func randomSnapshot(rng *rand.Rand) ([]*backend.Partition, []string) {
	pool := make([]string, 1+rng.IntN(20))
	for i := range pool {
		pool[i] = fmt.Sprintf("w%02d", i)
	}
	var workers []string
	for _, w := range pool {
		if rng.IntN(4) != 0 {
			workers = append(workers, w)
		}
	}
	if len(workers) == 0 {
		workers = pool[:1]
	}
	rows := make([]*backend.Partition, 1+rng.IntN(16))
	for i := range rows {
		r := &backend.Partition{Index: i}
		switch rng.IntN(5) {
		case 0: // never owned
		case 1: // released
			r.Epoch = int64(1 + rng.IntN(9))
			r.LeaseExpiresAt = now.Add(-time.Duration(rng.IntN(60)) * time.Second)
		default: // owned, current or expired
			r.Owner = pool[rng.IntN(len(pool))]
			r.Epoch = int64(1 + rng.IntN(9))
			r.LeaseExpiresAt = now.Add(time.Duration(rng.IntN(60)-20) * time.Second)
		}
		if rng.IntN(3) == 0 {
			r.NextOwner = pool[rng.IntN(len(pool))]
		}
		rows[i] = r
	}
	return rows, workers
}

func dump(rows []*backend.Partition) string {
	s := ""
	for _, r := range rows {
		s += fmt.Sprintf("\n  %d owner=%q epoch=%d left=%s next=%q", r.Index, r.Owner, r.Epoch, r.LeaseExpiresAt.Sub(now), r.NextOwner)
	}
	return s
}
