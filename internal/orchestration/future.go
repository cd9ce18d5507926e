package orchestration

import "errors"

// Future is the result of durable work started by orchestrator code. It is
// completed by the step (never by the code), and read with Context.Await.
//
// A Future belongs to one orchestrator; its methods must be called from
// that orchestrator's goroutine.
type Future struct {
	done   bool
	value  []byte
	err    error
	winner int // WhenAny: index+1 of the first future done; 0 otherwise

	// listeners are told when the future completes, in registration order
	// (so combinators and retries react deterministically). A slice rather
	// than closures keeps a fan-in of N futures at N small entries.
	listeners []listenerRef
}

// Done reports whether the future has completed.
func (f *Future) Done() bool { return f.done }

// Winner returns, for a future made by WhenAny, the index of the future that
// completed first; -1 for other futures and before completion.
func (f *Future) Winner() int { return f.winner - 1 }

// listener reacts to the completion of a future it listens to.
type listener interface {
	futureDone(f *Future, index int)
}

type listenerRef struct {
	l     listener
	index int
}

// listen registers l, or calls it at once if f is already done.
func (f *Future) listen(l listener, index int) {
	if f.done {
		l.futureDone(f, index)
		return
	}
	f.listeners = append(f.listeners, listenerRef{l, index})
}

// resolve completes f (once) and notifies its listeners.
func (f *Future) resolve(value []byte, err error) {
	if f.done {
		return
	}
	f.done, f.value, f.err = true, value, err
	ls := f.listeners
	f.listeners = nil
	for _, r := range ls {
		r.l.futureDone(f, r.index)
	}
}

// allListener completes a WhenAll future when its counter reaches zero: each
// child completion costs O(1), and the failure scan runs once at the end.
type allListener struct {
	f         *Future
	children  []*Future
	remaining int
}

func (a *allListener) futureDone(*Future, int) {
	a.remaining--
	if a.remaining > 0 {
		return
	}
	for _, c := range a.children {
		if c.err != nil {
			a.f.resolve(nil, c.err)
			return
		}
	}
	a.f.resolve(nil, nil)
}

// anyListener completes a WhenAny future with the first child to complete.
type anyListener struct{ f *Future }

func (a *anyListener) futureDone(_ *Future, index int) {
	if !a.f.done {
		a.f.winner = index + 1
		a.f.resolve(nil, nil)
	}
}

var errWhenAnyEmpty = errors.New("orchestration: WhenAny of no futures can never complete")

func whenAll(fs []*Future) *Future {
	f := &Future{}
	if len(fs) == 0 {
		f.resolve(nil, nil)
		return f
	}
	a := &allListener{f: f, children: append([]*Future(nil), fs...), remaining: len(fs)}
	for i, c := range a.children {
		c.listen(a, i)
	}
	return f
}

func whenAny(fs []*Future) *Future {
	f := &Future{}
	if len(fs) == 0 {
		f.resolve(nil, errWhenAnyEmpty)
		return f
	}
	a := &anyListener{f: f}
	// Registration in argument order makes the first already-done future
	// win, the same on every replay.
	for i, c := range fs {
		c.listen(a, i)
	}
	return f
}
