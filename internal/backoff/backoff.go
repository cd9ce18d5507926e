// Package backoff computes the waits between queue polls and retries.
//
// Queue listeners poll with random exponential back-off, as the reference
// implementation does: after the k-th empty poll in a row they wait
// base × 2^(k−1) × a random factor in [0.8, 1.2), at most max, and start over
// when a poll finds a message. The jitter keeps many workers from polling a
// queue in lock step.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of New.
const (
	// BaseDefault is the wait after the first empty poll.
	BaseDefault = 50 * time.Millisecond
	// MaxDefault caps the wait (maxQueuePollingInterval).
	MaxDefault = 30 * time.Second
)

// Jitter bounds: a wait is the exponential delay times a factor in
// [JitterMin, JitterMax).
const (
	JitterMin = 0.8
	JitterMax = 1.2
)

// Poller is the back-off state of one polling loop. It is not safe for
// concurrent use: each loop owns its Poller.
type Poller struct {
	base, maxWait time.Duration
	rnd           func() float64
	// delay is base × 2^(k−1) for the next empty poll k. It stops doubling
	// once even the lowest jitter would reach maxWait (every later wait is
	// maxWait), so it never overflows.
	delay time.Duration
}

// New returns a Poller waiting base after the first empty poll and at most
// maxWait. rnd returns numbers in [0, 1) for the jitter (values outside are
// clamped); nil uses math/rand/v2. A base or maxWait of zero or less means
// BaseDefault or MaxDefault; a base above maxWait is lowered to it.
func New(base, maxWait time.Duration, rnd func() float64) *Poller {
	if base <= 0 {
		base = BaseDefault
	}
	if maxWait <= 0 {
		maxWait = MaxDefault
	}
	if base > maxWait {
		base = maxWait
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	return &Poller{base: base, maxWait: maxWait, rnd: rnd, delay: base}
}

// Next returns the wait after one more empty poll: for the k-th since the
// last Reset, min(base × 2^(k−1) × jitter, maxWait) with jitter in
// [0.8, 1.2).
func (p *Poller) Next() time.Duration {
	r := p.rnd()
	if !(r >= 0) { // also NaN
		r = 0
	}
	factor := JitterMin + (JitterMax-JitterMin)*min(r, 1)
	d := p.maxWait
	if w := float64(p.delay) * factor; w < float64(p.maxWait) {
		d = time.Duration(w)
	}
	if float64(p.delay)*JitterMin < float64(p.maxWait) && p.delay <= math.MaxInt64/2 {
		p.delay *= 2
	}
	return d
}

// Reset starts the sequence over: call it when a poll finds a message.
func (p *Poller) Reset() { p.delay = p.base }

// Delay is a deterministic exponential back-off for retrying failed calls
// (storage errors): base × 2^(attempt−1), at most maxDelay. Attempts below 1
// count as 1. A base of zero or less gives zero; a maxDelay of zero or less
// means no cap (the result still saturates instead of overflowing).
func Delay(attempt int, base, maxDelay time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	if maxDelay <= 0 {
		maxDelay = math.MaxInt64
	}
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		if d > math.MaxInt64/2 {
			return maxDelay
		}
		d *= 2
	}
	return min(d, maxDelay)
}

// AbandonDelayMax caps AbandonDelay.
const AbandonDelayMax = 600 * time.Second

// AbandonDelay is how long an abandoned message stays invisible before it is
// retried: min(2^dequeueCount, 600) seconds. Counts below zero count as 0.
func AbandonDelay(dequeueCount int) time.Duration {
	// 2^10 s already passes the cap; stopping there avoids overflow.
	if dequeueCount >= 10 {
		return AbandonDelayMax
	}
	return min(time.Second<<max(dequeueCount, 0), AbandonDelayMax)
}
