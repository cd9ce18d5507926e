package engine

import "sync"

// Notifier tells in-process waiters that an instance's row changed, so
// Client.WaitForCompletion wakes on the commit instead of polling.
type Notifier struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewNotifier returns an empty notifier.
func NewNotifier() *Notifier {
	return &Notifier{waiters: map[string]map[chan struct{}]struct{}{}}
}

// Watch returns a channel that receives a value after each change of
// instanceID, and a function to stop watching.
func (n *Notifier) Watch(instanceID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	set := n.waiters[instanceID]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		n.waiters[instanceID] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(set, ch)
		if len(set) == 0 && n.waiters[instanceID] != nil && len(n.waiters[instanceID]) == 0 {
			delete(n.waiters, instanceID)
		}
		n.mu.Unlock()
	}
}

// Changed wakes the watchers of instanceID.
func (n *Notifier) Changed(instanceID string) {
	n.mu.Lock()
	for ch := range n.waiters[instanceID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	n.mu.Unlock()
}
