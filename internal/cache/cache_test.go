package cache

import (
	"testing"
	"time"
)

type val struct {
	size   int
	closed *int
}

func (v val) SizeBytes() int { return v.size }
func (v val) Close()         { *v.closed++ }

func TestLRUEvictsOldestOverBound(t *testing.T) {
	c := New[val](100, 0)
	closed := map[string]*int{"a": new(int), "b": new(int), "c": new(int)}
	now := time.Unix(0, 0)
	c.Put("a", val{40, closed["a"]}, now)
	c.Put("b", val{40, closed["b"]}, now)
	if _, ok := c.Take("a"); !ok { // a becomes in-use, then most recent
		t.Fatal("a missing")
	}
	c.Put("a", val{40, closed["a"]}, now)
	c.Put("c", val{40, closed["c"]}, now) // over 100: evicts b (least recent)
	if *closed["b"] != 1 || *closed["a"] != 0 || *closed["c"] != 0 {
		t.Fatalf("closed a=%d b=%d c=%d, want only b", *closed["a"], *closed["b"], *closed["c"])
	}
	if s := c.Stats(); s.Entries != 2 || s.Bytes != 80 || s.Hits != 1 {
		t.Fatalf("stats %+v", s)
	}
	if _, ok := c.Take("b"); ok {
		t.Fatal("b should be gone")
	}
}

func TestTakenEntryIsNotEvicted(t *testing.T) {
	c := New[val](50, time.Second)
	n := new(int)
	now := time.Unix(0, 0)
	c.Put("a", val{40, n}, now)
	v, _ := c.Take("a")
	c.Put("b", val{40, new(int)}, now)
	c.ExpireIdle(now.Add(time.Hour))
	if *n != 0 {
		t.Fatal("a taken entry was closed")
	}
	c.Put("a", v, now.Add(time.Hour))
	if got := c.ExpireIdle(now.Add(time.Hour + 2*time.Second)); got != 1 || *n != 1 {
		t.Fatalf("expired %d, closed %d", got, *n)
	}
}

func TestPutReplacesAndClear(t *testing.T) {
	c := New[val](0, 0)
	a1, a2 := new(int), new(int)
	now := time.Unix(0, 0)
	c.Put("a", val{1, a1}, now)
	c.Put("a", val{1, a2}, now)
	if *a1 != 1 {
		t.Fatal("replaced value not closed")
	}
	c.Clear()
	if *a2 != 1 || c.Stats().Entries != 0 {
		t.Fatal("clear did not close")
	}
}

func TestRemoveIf(t *testing.T) {
	c := New[val](0, 0)
	now := time.Unix(0, 0)
	closed := map[string]*int{}
	for _, k := range []string{"a1", "b1", "a2"} {
		closed[k] = new(int)
		c.Put(k, val{1, closed[k]}, now)
	}
	if n := c.RemoveIf(func(k string) bool { return k[0] == 'a' }); n != 2 {
		t.Fatalf("removed %d, want 2", n)
	}
	if *closed["a1"] != 1 || *closed["a2"] != 1 || *closed["b1"] != 0 {
		t.Fatal("wrong entries closed")
	}
	if s := c.Stats(); s.Entries != 1 || s.Bytes != 1 {
		t.Fatalf("stats after RemoveIf: %+v", s)
	}
}
