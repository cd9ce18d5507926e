package partition

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var scriptTrace = flag.Bool("script.trace", false, "log every backend call the scenario scripts make")

// TestScripts runs the lease scenarios in testdata/*.txt through the
// simulator. The invariants (no two workers holding one partition, beliefs
// matching rows, decisions legal for what was read) are checked after every
// worker's turn of every round; the scripts' own checks add what a scenario
// is about.
//
// Script commands, one per line, "#" starts a comment:
//
//	reset                     start over with a new hub (several scenarios in a file)
//	partitions N              create the Partitions table (before any join)
//	lease D | interval D      lease duration, round length (default 30s, 10s)
//	heartbeat-ttl D           registry rows older than D are not live (30s)
//	mode sequential|snapshot|stale
//	join W...                 start workers (registered at once); an ID may
//	                          come back only after a graceful leave
//	leave W...                graceful: unregister, release everything, stop
//	crash W...                stop without releasing
//	pause W... | resume W...  freeze and thaw (a zombie that comes back)
//	run N                     run N rounds
//	settle N                  run until balanced, failing after N rounds
//	mark                      zero the counters
//	print                     log the table
//	check balanced            every partition held by a running worker, each
//	                          running worker within [floor(P/W), ceil(P/W)]
//	check all-owned           every partition held by a running worker
//	check no-double-ownership the per-turn invariants, once more
//	check max-per-worker N
//	check owner-count W N     W holds exactly N partitions
//	check counts W=N...       exact counts, every holder listed
//	check idle W...           the workers hold nothing
//	check free N              exactly N partitions have no current lease
//	check quiet               no acquire, release, request or lost CAS since mark
//	check COUNTER OP N        COUNTER since mark: acquires conflicts releases
//	                          requests overrides (a request replacing
//	                          another's) rounds; OP: = < <= > >=
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenario in testdata/")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			runScript(t, f)
		})
	}
}

func runScript(t *testing.T, path string) {
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var where string
	s := newSim(func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s", where, fmt.Sprintf(format, args...))
	})
	if *scriptTrace {
		s.trace = t.Logf
	}
	sc := bufio.NewScanner(file)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		where = fmt.Sprintf("%s:%d: %s", path, line, strings.TrimSpace(text))
		if err := s.exec(fields); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if fields[0] == "print" {
			t.Logf("%s: %s", where, s.describe())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// exec runs one script command.
func (s *sim) exec(f []string) error {
	trace := s.trace
	cmd, args := f[0], f[1:]
	switch cmd {
	case "partitions", "lease", "interval", "heartbeat-ttl", "mode", "reset":
	default:
		if s.rows == nil {
			return fmt.Errorf("%s before partitions", cmd)
		}
	}
	switch cmd {
	case "reset":
		*s = *newSim(s.fail)
		s.trace = trace
	case "partitions":
		n, err := intArg(args, 0)
		if err != nil {
			return err
		}
		if n < 1 || n > 16 {
			return fmt.Errorf("partitions %d: a hub has 1 to 16", n)
		}
		if len(s.workers) > 0 {
			return fmt.Errorf("partitions after join")
		}
		s.setPartitions(n)
	case "lease", "interval", "heartbeat-ttl":
		if len(args) != 1 {
			return fmt.Errorf("want one duration")
		}
		d, err := time.ParseDuration(args[0])
		if err != nil || d <= 0 {
			return fmt.Errorf("bad duration %q", args[0])
		}
		*map[string]*time.Duration{"lease": &s.lease, "interval": &s.interval, "heartbeat-ttl": &s.ttl}[cmd] = d
	case "mode":
		if len(args) != 1 {
			return fmt.Errorf("want one mode")
		}
		switch m := mode(args[0]); m {
		case sequential, snapshot, stale:
			s.mode = m
		default:
			return fmt.Errorf("unknown mode %q", args[0])
		}
	case "join", "leave", "crash", "pause", "resume":
		if len(args) == 0 {
			return fmt.Errorf("%s whom?", cmd)
		}
		op := map[string]func(string) error{"join": s.join, "leave": s.leave, "crash": s.crash, "pause": s.pause, "resume": s.resume}[cmd]
		for _, id := range args {
			if err := op(id); err != nil {
				return err
			}
		}
	case "run":
		n, err := intArg(args, 0)
		if err != nil {
			return err
		}
		for range n {
			s.step()
		}
	case "settle":
		n, err := intArg(args, 0)
		if err != nil {
			return err
		}
		for i := 0; ; i++ {
			ok, why := s.balanced()
			if ok {
				break
			}
			if i == n {
				return fmt.Errorf("not balanced after %d rounds: %s", n, why)
			}
			s.step()
		}
	case "mark":
		s.stats = stats{}
	case "print":
	case "check":
		if len(args) == 0 {
			return fmt.Errorf("check what?")
		}
		return s.check(args[0], args[1:])
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

func (s *sim) check(what string, args []string) error {
	switch what {
	case "balanced":
		if ok, why := s.balanced(); !ok {
			return fmt.Errorf("not balanced: %s", why)
		}
	case "all-owned":
		if why := s.allOwned(); why != "" {
			return fmt.Errorf("not all owned: %s", why)
		}
	case "no-double-ownership":
		s.checkInvariants()
	case "max-per-worker":
		n, err := intArg(args, 0)
		if err != nil {
			return err
		}
		for id, c := range s.counts() {
			if c > n {
				return fmt.Errorf("%s holds %d > %d (%s)", id, c, n, s.describe())
			}
		}
	case "owner-count":
		if len(args) != 2 {
			return fmt.Errorf("want: owner-count W N")
		}
		n, err := intArg(args, 1)
		if err != nil {
			return err
		}
		if c := s.counts()[args[0]]; c != n {
			return fmt.Errorf("%s holds %d, want %d (%s)", args[0], c, n, s.describe())
		}
	case "counts":
		want := map[string]int{}
		for _, a := range args {
			id, v, ok := strings.Cut(a, "=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil {
				return fmt.Errorf("want W=N, got %q", a)
			}
			want[id] = n
		}
		got := s.counts()
		for _, id := range sortedKeys(want) {
			if got[id] != want[id] {
				return fmt.Errorf("%s holds %d, want %d (%s)", id, got[id], want[id], s.describe())
			}
		}
		for _, id := range sortedKeys(got) {
			if _, ok := want[id]; !ok {
				return fmt.Errorf("%s holds %d, not listed (%s)", id, got[id], s.describe())
			}
		}
	case "free":
		n, err := intArg(args, 0)
		if err != nil {
			return err
		}
		free := 0
		for _, row := range s.rows {
			if holder(row, s.now) == "" {
				free++
			}
		}
		if free != n {
			return fmt.Errorf("%d partitions free, want %d (%s)", free, n, s.describe())
		}
	case "idle":
		c := s.counts()
		for _, id := range args {
			if c[id] != 0 {
				return fmt.Errorf("%s holds %d, want none (%s)", id, c[id], s.describe())
			}
		}
	case "quiet":
		if st := s.stats; st.acquires+st.releases+st.requests+st.conflicts != 0 {
			return fmt.Errorf("moves since mark: %+v (%s)", st, s.describe())
		}
	case "acquires", "conflicts", "releases", "requests", "overrides", "rounds":
		if len(args) != 2 {
			return fmt.Errorf("want: check %s OP N", what)
		}
		n, err := intArg(args, 1)
		if err != nil {
			return err
		}
		got := map[string]int{"acquires": s.stats.acquires, "conflicts": s.stats.conflicts,
			"releases": s.stats.releases, "requests": s.stats.requests, "overrides": s.stats.overrides,
			"rounds": s.stats.rounds}[what]
		ok, err := compare(got, args[0], n)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s = %d, want %s %d (%s)", what, got, args[0], n, s.describe())
		}
	default:
		return fmt.Errorf("unknown check %q", what)
	}
	return nil
}

func compare(got int, op string, want int) (bool, error) {
	switch op {
	case "=", "==":
		return got == want, nil
	case "<":
		return got < want, nil
	case "<=":
		return got <= want, nil
	case ">":
		return got > want, nil
	case ">=":
		return got >= want, nil
	}
	return false, fmt.Errorf("unknown comparison %q", op)
}

func intArg(args []string, i int) (int, error) {
	if i >= len(args) {
		return 0, fmt.Errorf("missing number")
	}
	n, err := strconv.Atoi(args[i])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad number %q", args[i])
	}
	return n, nil
}
