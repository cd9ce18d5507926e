package partition

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// churnSettleBound is how many rounds after the churn stops a hub must be
// balanced within. After the last event, a dead worker's leases and registry
// row run out within lease/interval = 3 rounds (the dead worker renewed at
// most one round before); from then on at most one wave of hand-offs is
// needed, and a hand-off takes 3 rounds (request, release, acquire), 4 in
// stale mode where every step acts on a read one round old. Targets can
// shift while a wave is in flight (they follow who owns the most), so the
// bound allows a second wave: 3 + 2*4 = 11.
const churnSettleBound = 4

// TestChurn runs random sequences of joins, graceful leaves, crashes, pauses
// and resumes, in every read mode, with shuffled turn orders. The simulator
// checks the invariants after every turn; at the end, once the churn stops
// and paused workers come back, the hub must balance within
// churnSettleBound rounds and then stay still.
func TestChurn(t *testing.T) {
	seeds := 600
	if testing.Short() {
		seeds = 100
	}
	worst := 0
	for seed := range uint64(seeds) {
		rounds := churn(t, seed)
		worst = max(worst, rounds)
		if t.Failed() {
			return
		}
	}
	t.Logf("worst settle after churn: %d rounds (bound %d)", worst, churnSettleBound)
}

// churn runs one seeded history and returns how many rounds it took to settle.
func churn(t *testing.T, seed uint64) int {
	rng := rand.New(rand.NewPCG(seed, 0x7a5c))
	var history []string
	say := func(format string, args ...any) { history = append(history, fmt.Sprintf(format, args...)) }
	s := newSim(nil)
	s.fail = func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nhistory:\n  %s\nnow: %s", seed, fmt.Sprintf(format, args...),
			joinLines(history), s.describe())
	}
	s.rng = rng
	s.mode = []mode{sequential, snapshot, stale}[rng.IntN(3)]
	p := 1 + rng.IntN(16)
	s.setPartitions(p)
	say("mode %s, partitions %d", s.mode, p)

	next := 0
	join := func() {
		id := fmt.Sprintf("w%02d", next)
		next++
		if err := s.join(id); err != nil {
			s.fail("%v", err)
		}
		say("join %s", id)
	}
	pick := func(states ...workerState) string {
		var ids []string
		for _, id := range s.ids() {
			for _, st := range states {
				if s.workers[id].state == st {
					ids = append(ids, id)
				}
			}
		}
		if len(ids) == 0 {
			return ""
		}
		return ids[rng.IntN(len(ids))]
	}
	for range 1 + rng.IntN(4) {
		join()
	}
	for range 5 + rng.IntN(30) {
		var err error
		switch op := rng.IntN(10); {
		case op < 3:
			join()
		case op < 5:
			if id := pick(running); id != "" {
				err = s.leave(id)
				say("leave %s", id)
			}
		case op < 6:
			if id := pick(running, draining); id != "" {
				err = s.crash(id)
				say("crash %s", id)
			}
		case op < 7:
			if id := pick(running); id != "" {
				err = s.pause(id)
				say("pause %s", id)
			}
		case op < 8:
			if id := pick(paused); id != "" {
				err = s.resume(id)
				say("resume %s", id)
			}
		default:
			n := 1 + rng.IntN(4)
			for range n {
				s.step()
			}
			say("run %d -> %s", n, s.describe())
		}
		if err != nil {
			s.fail("%v", err)
		}
	}

	// The churn stops: zombies come back, and someone is there.
	for _, id := range s.ids() {
		if s.workers[id].state == paused {
			_ = s.resume(id)
			say("resume %s", id)
		}
	}
	if len(s.running()) == 0 {
		join()
	}
	say("churn stops: %s", s.describe())
	s.stats = stats{}
	for {
		ok, why := s.balanced()
		if ok {
			break
		}
		if s.stats.rounds == churnSettleBound {
			s.fail("not balanced %d rounds after the churn stopped: %s", churnSettleBound, why)
		}
		s.step()
		say("round -> %s", s.describe())
	}
	settled := s.stats.rounds
	if s.mode == stale {
		s.step() // decisions in flight were made on reads from before the balance
	}
	s.stats = stats{}
	for range 10 {
		s.step()
	}
	if st := s.stats; st.acquires+st.releases+st.requests+st.conflicts != 0 {
		s.fail("balanced hub keeps moving: %+v", st)
	}
	if ok, why := s.balanced(); !ok {
		s.fail("hub became unbalanced without churn: %s", why)
	}
	return settled
}

func joinLines(lines []string) string {
	out := ""
	for i, l := range lines {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}
