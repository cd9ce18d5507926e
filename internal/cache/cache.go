// Package cache is the instance cache: orchestrations kept in memory between
// steps (the reference's extended sessions and cursor caching), so a new
// event is applied to a parked orchestrator instead of replaying its history.
//
// The cache is an LRU bounded in bytes, with an idle timeout. An entry is
// taken out while its step runs (Take) and put back after a successful
// commit (Put), so eviction never closes an orchestration that is running.
package cache

import (
	"container/list"
	"sync"
	"time"
)

// Value is what the cache holds.
type Value interface {
	// SizeBytes estimates the memory the value holds.
	SizeBytes() int
	// Close releases the value (ends a parked orchestrator goroutine).
	Close()
}

// Cache is a byte-bounded LRU with idle expiry. The zero value is not usable;
// call New. Safe for concurrent use.
type Cache[V Value] struct {
	mu       sync.Mutex
	maxBytes int
	idle     time.Duration
	bytes    int
	ll       *list.List // front = most recent
	items    map[string]*list.Element
	hits     uint64
	misses   uint64
}

type entry[V Value] struct {
	key     string
	v       V
	size    int
	touched time.Time
}

// New returns a cache bounded by maxBytes (<=0: unbounded) whose entries
// expire after idle (<=0: never).
func New[V Value](maxBytes int, idle time.Duration) *Cache[V] {
	return &Cache[V]{maxBytes: maxBytes, idle: idle, ll: list.New(), items: map[string]*list.Element{}}
}

// Take removes and returns the value for key.
func (c *Cache[V]) Take(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		c.misses++
		var zero V
		return zero, false
	}
	c.hits++
	e := el.Value.(*entry[V])
	c.ll.Remove(el)
	delete(c.items, key)
	c.bytes -= e.size
	return e.v, true
}

// Put stores v under key as most recently used, then evicts least recently
// used entries while the cache is over its bound. A value already stored
// under key is closed and replaced.
func (c *Cache[V]) Put(key string, v V, now time.Time) {
	size := v.SizeBytes()
	var evicted []V
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		old := el.Value.(*entry[V])
		c.ll.Remove(el)
		c.bytes -= old.size
		evicted = append(evicted, old.v)
	}
	c.items[key] = c.ll.PushFront(&entry[V]{key: key, v: v, size: size, touched: now})
	c.bytes += size
	for c.maxBytes > 0 && c.bytes > c.maxBytes && c.ll.Len() > 0 {
		evicted = append(evicted, c.removeOldest())
	}
	c.mu.Unlock()
	for _, v := range evicted {
		v.Close()
	}
}

func (c *Cache[V]) removeOldest() V {
	el := c.ll.Back()
	e := el.Value.(*entry[V])
	c.ll.Remove(el)
	delete(c.items, e.key)
	c.bytes -= e.size
	return e.v
}

// Remove closes and drops the value for key, if any.
func (c *Cache[V]) Remove(key string) {
	if v, ok := c.Take(key); ok {
		v.Close()
	}
}

// ExpireIdle closes entries not used since now-idle. It returns how many.
func (c *Cache[V]) ExpireIdle(now time.Time) int {
	if c.idle <= 0 {
		return 0
	}
	var evicted []V
	c.mu.Lock()
	for el := c.ll.Back(); el != nil; el = c.ll.Back() {
		e := el.Value.(*entry[V])
		if now.Sub(e.touched) < c.idle {
			break
		}
		evicted = append(evicted, c.removeOldest())
	}
	c.mu.Unlock()
	for _, v := range evicted {
		v.Close()
	}
	return len(evicted)
}

// RemoveIf closes and drops every entry whose key matches.
func (c *Cache[V]) RemoveIf(match func(key string) bool) int {
	var evicted []V
	c.mu.Lock()
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*entry[V]); match(e.key) {
			c.ll.Remove(el)
			delete(c.items, e.key)
			c.bytes -= e.size
			evicted = append(evicted, e.v)
		}
		el = next
	}
	c.mu.Unlock()
	for _, v := range evicted {
		v.Close()
	}
	return len(evicted)
}

// Clear closes every entry.
func (c *Cache[V]) Clear() {
	c.mu.Lock()
	var all []V
	for c.ll.Len() > 0 {
		all = append(all, c.removeOldest())
	}
	c.mu.Unlock()
	for _, v := range all {
		v.Close()
	}
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	Entries int
	Bytes   int
	Hits    uint64
	Misses  uint64
}

// Stats returns the cache's counters.
func (c *Cache[V]) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Entries: c.ll.Len(), Bytes: c.bytes, Hits: c.hits, Misses: c.misses}
}
