package backoff

import (
	"math"
	"testing"
	"time"
)

func constRand(v float64) func() float64 { return func() float64 { return v } }

func TestPollerSequence(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name string
		rnd  float64 // jitter factor = 0.8 + 0.4*rnd
		want []time.Duration
	}{
		{"no jitter", 0.5, []time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 12800 * ms, 25600 * ms, 30 * time.Second, 30 * time.Second}},
		{"low jitter", 0, []time.Duration{40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, 1280 * ms, 2560 * ms, 5120 * ms, 10240 * ms, 20480 * ms, 30 * time.Second, 30 * time.Second}},
		// 25.6 s × 1.2 would pass the cap.
		{"high jitter", 0.99, []time.Duration{59800 * time.Microsecond, 119600 * time.Microsecond, 239200 * time.Microsecond, 478400 * time.Microsecond, 956800 * time.Microsecond, 1913600 * time.Microsecond, 3827200 * time.Microsecond, 7654400 * time.Microsecond, 15308800 * time.Microsecond, 30 * time.Second, 30 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := New(0, 0, constRand(tc.rnd))
			for k, want := range tc.want {
				got := p.Next()
				if diff := got - want; diff < -time.Microsecond || diff > time.Microsecond {
					t.Fatalf("poll %d: %v, want %v", k+1, got, want)
				}
			}
		})
	}
}

func TestPollerJitterBounds(t *testing.T) {
	// Sweep rnd over [0, 1) and check each wait stays in
	// [0.8, 1.2) × the exponential delay, capped.
	base, maxWait := 50*time.Millisecond, 30*time.Second
	for i := range 1000 {
		r := float64(i) / 1000
		p := New(base, maxWait, constRand(r))
		exp := base
		for k := 1; k <= 15; k++ {
			got := p.Next()
			lo := min(time.Duration(float64(exp)*0.8), maxWait)
			hi := min(time.Duration(float64(exp)*1.2), maxWait)
			if got < lo || got > hi || got > maxWait {
				t.Fatalf("rnd %.3f poll %d: %v outside [%v, %v]", r, k, got, lo, hi)
			}
			exp *= 2
		}
	}

	// A real random source: waits vary, and stay in bounds.
	p := New(base, maxWait, nil)
	seen := map[time.Duration]bool{}
	for range 100 {
		p.Reset()
		d := p.Next()
		if d < 40*time.Millisecond || d >= 60*time.Millisecond {
			t.Fatalf("first wait %v outside [40ms, 60ms)", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct waits in 100 draws: no jitter?", len(seen))
	}

	// A misbehaving rnd cannot produce negative or oversized waits.
	for _, r := range []float64{-5, 7, math.NaN()} {
		d := New(base, maxWait, constRand(r)).Next()
		if d < 40*time.Millisecond || d > 60*time.Millisecond {
			t.Errorf("rnd %v: wait %v", r, d)
		}
	}
}

func TestPollerCap(t *testing.T) {
	p := New(time.Second, 5*time.Second, constRand(0.5))
	var got []time.Duration
	for range 100 {
		got = append(got, p.Next())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("poll %d: %v, want %v", i+1, got[i], w)
		}
	}
	for i, d := range got[len(want):] {
		if d != 5*time.Second {
			t.Fatalf("poll %d after the cap: %v", i+len(want)+1, d)
		}
	}

	// Many empty polls do not overflow the delay even with a huge cap.
	p = New(time.Nanosecond, math.MaxInt64, constRand(0.5))
	prev := time.Duration(0)
	for k := range 200 {
		d := p.Next()
		if d < prev || d <= 0 {
			t.Fatalf("poll %d: %v after %v", k+1, d, prev)
		}
		prev = d
	}

	// A base above the cap is lowered to it.
	if d := New(time.Minute, time.Second, constRand(0.5)).Next(); d != time.Second {
		t.Fatalf("base above cap: %v", d)
	}
}

func TestPollerReset(t *testing.T) {
	p := New(10*time.Millisecond, time.Second, constRand(0.5))
	for range 5 {
		p.Next()
	}
	if d := p.Next(); d != 320*time.Millisecond {
		t.Fatalf("6th poll: %v", d)
	}
	p.Reset()
	for _, want := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond} {
		if d := p.Next(); d != want {
			t.Fatalf("after Reset: %v, want %v", d, want)
		}
	}
}

func TestDelay(t *testing.T) {
	s := time.Second
	cases := []struct {
		attempt   int
		base, max time.Duration
		want      time.Duration
	}{
		{1, s, time.Minute, s},
		{0, s, time.Minute, s},
		{-3, s, time.Minute, s},
		{2, s, time.Minute, 2 * s},
		{6, s, time.Minute, 32 * s},
		{7, s, time.Minute, time.Minute},
		{1 << 30, s, time.Minute, time.Minute},
		{math.MaxInt, time.Millisecond, 0, math.MaxInt64},
		{3, 0, time.Minute, 0},
		{1, time.Hour, time.Minute, time.Minute},
	}
	for _, tc := range cases {
		if got := Delay(tc.attempt, tc.base, tc.max); got != tc.want {
			t.Errorf("Delay(%d, %v, %v) = %v, want %v", tc.attempt, tc.base, tc.max, got, tc.want)
		}
	}
}

func TestAbandonDelay(t *testing.T) {
	s := time.Second
	cases := map[int]time.Duration{
		-1:          s,
		0:           s,
		1:           2 * s,
		2:           4 * s,
		9:           512 * s,
		10:          600 * s,
		30:          600 * s,
		63:          600 * s,
		64:          600 * s,
		1000:        600 * s,
		math.MaxInt: 600 * s,
	}
	for n, want := range cases {
		if got := AbandonDelay(n); got != want {
			t.Errorf("AbandonDelay(%d) = %v, want %v", n, got, want)
		}
	}
}
