package scheduler

import (
	"math"
	"testing"
	"time"
)

func TestRTTEstimator(t *testing.T) {
	const msd = time.Millisecond
	tests := []struct {
		name                string
		samples             []time.Duration
		srtt, rttvar, minRT time.Duration
	}{
		{"first sample", []time.Duration{100 * msd}, 100 * msd, 50 * msd, 100 * msd},
		// RFC 6298: RTTVAR = 3/4·50 + 1/4·|100−60| = 47.5; SRTT = 7/8·100 + 1/8·60 = 95.
		{"second sample", []time.Duration{100 * msd, 60 * msd}, 95 * msd, 47500 * time.Microsecond, 60 * msd},
		{"steady", []time.Duration{20 * msd, 20 * msd, 20 * msd, 20 * msd}, 20 * msd, 4218750 * time.Nanosecond, 20 * msd},
		{"non-positive ignored", []time.Duration{0, -5 * msd, 30 * msd}, 30 * msd, 15 * msd, 30 * msd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e rttEstimator
			for i, s := range tc.samples {
				e.Add(s, int64(i)*ms)
			}
			if e.SRTT != tc.srtt || absDur(e.RTTVar-tc.rttvar) > time.Microsecond || e.Min != tc.minRT {
				t.Errorf("SRTT %v RTTVAR %v Min %v, want %v %v %v", e.SRTT, e.RTTVar, e.Min, tc.srtt, tc.rttvar, tc.minRT)
			}
		})
	}
	t.Run("min expires", func(t *testing.T) {
		var e rttEstimator
		e.Add(10*time.Millisecond, 0)
		e.Add(30*time.Millisecond, int64(5*time.Second))
		if e.Min != 10*time.Millisecond {
			t.Fatalf("min %v within the window, want 10ms", e.Min)
		}
		e.Add(30*time.Millisecond, int64(11*time.Second))
		if e.Min != 30*time.Millisecond {
			t.Fatalf("min %v after the window, want 30ms (route got slower)", e.Min)
		}
	})
	t.Run("min of the window, not the latest sample", func(t *testing.T) {
		// A standing queue (40 ms over a 20 ms base) that drains now and
		// then: the base stays the minimum.
		var e rttEstimator
		for i := range 300 {
			r := 60 * time.Millisecond
			if i%70 == 0 {
				r = 20 * time.Millisecond
			}
			e.Add(r, int64(i)*int64(100*time.Millisecond))
			if e.Min != 20*time.Millisecond {
				t.Fatalf("sample %d (%v): min %v, want 20ms", i, r, e.Min)
			}
		}
	})
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func TestRateEstimator(t *testing.T) {
	iv := 100 * time.Millisecond
	t.Run("max of window", func(t *testing.T) {
		var e rateEstimator
		for _, b := range []uint64{100000, 300000, 200000} {
			e.Add(b, iv, false, false, 0)
		}
		if e.Rate != 3e6 {
			t.Fatalf("rate %v, want 3e6 (max of the samples)", e.Rate)
		}
		// The maximum ages out after rateWindow samples.
		for range rateWindow {
			e.Add(100000, iv, false, false, 0)
		}
		if e.Rate != 1e6 {
			t.Fatalf("rate %v after the window, want 1e6", e.Rate)
		}
	})
	t.Run("app-limited only raises", func(t *testing.T) {
		var e rateEstimator
		e.Add(500000, iv, false, false, 0) // 5e6
		for range 3 * rateWindow {
			e.Add(1000, iv, true, false, 0)
		}
		if e.Rate != 5e6 {
			t.Fatalf("rate %v after idle samples, want 5e6 kept", e.Rate)
		}
		e.Add(800000, iv, true, false, 0)
		if e.Rate != 8e6 {
			t.Fatalf("rate %v, an app-limited sample above the estimate should raise it to 8e6", e.Rate)
		}
	})
	t.Run("startup then cycle", func(t *testing.T) {
		var e rateEstimator
		if e.Gain() != 2 || !e.Startup() {
			t.Fatalf("gain %v before samples, want startup gain 2", e.Gain())
		}
		for _, b := range []uint64{100000, 200000, 400000} {
			e.Add(b, iv, false, false, 0)
			if !e.Startup() {
				t.Fatalf("left startup while the rate doubled")
			}
		}
		for range 3 {
			e.Add(400000, iv, false, false, 0)
		}
		if e.Startup() {
			t.Fatalf("still in startup after 3 samples without growth")
		}
		var gains []float64
		for range len(gainCycle) {
			gains = append(gains, e.Gain())
			e.Add(400000, iv, false, false, 0)
		}
		if gains[0] != 1.25 || gains[1] != 0.75 || gains[2] != 1 {
			t.Fatalf("gain cycle %v, want 1.25, 0.75, 1…", gains)
		}
	})
	t.Run("no first fill while the samples grow", func(t *testing.T) {
		// Slow start over a 50 Mbit/s path: what it delivers doubles
		// each round trip, and probes behind the bursts read a queue.
		// At 13 Mbit/s it is not full; once the samples stop growing
		// (the bottleneck passes what it can) it is.
		var e rateEstimator
		now := feedMbps(&e, 0, true, 2, 4, 8, 13)
		if e.Filled(now) {
			t.Fatalf("filled at %.1f Mbit/s while the samples still doubled", e.Rate*8/1e6)
		}
		now = feedMbps(&e, now, true, 26, 50, 50, 50, 50)
		if !e.Filled(now) || e.capacity < 49e6/8 {
			t.Fatalf("filled %v, capacity %.1f Mbit/s after the samples stayed at 50: want filled at 50", e.Filled(now), e.capacity*8/1e6)
		}
		// Filled, a saturated sample above the last ones counts: the
		// capacity is the largest of them.
		now = feedMbps(&e, now, true, 70)
		if e.capacity < 69e6/8 {
			t.Fatalf("capacity %.1f Mbit/s after a saturated sample at 70 on a filled path", e.capacity*8/1e6)
		}
	})
	t.Run("no first fill far below what the path delivered", func(t *testing.T) {
		// A 25 Mbit/s path that carried 32 (a burst) and then, behind a
		// queue it shares with another path, got a trickle through.
		var e rateEstimator
		now := feedMbps(&e, 0, false, 25, 32, 30, 25)
		now = feedMbps(&e, now, true, 0.1, 2, 2, 2)
		if e.Filled(now) {
			t.Fatalf("filled at %.1f Mbit/s, capacity %.1f, after carrying 32", e.Rate*8/1e6, e.capacity*8/1e6)
		}
		// Once it is busy at its rate again, it fills there.
		now = feedMbps(&e, now, true, 25, 25, 25, 25)
		if !e.Filled(now) || e.capacity < 24e6/8 || e.capacity > 26e6/8 {
			t.Fatalf("filled %v at %.1f Mbit/s after saturated samples at 25", e.Filled(now), e.capacity*8/1e6)
		}
	})
	t.Run("saturated samples outrank bursts", func(t *testing.T) {
		// A 25 Mbit/s token bucket: busy intervals read its rate, one
		// after it idled lets its 256 kB bucket through at line rate.
		var e rateEstimator
		rate := 25e6 / 8
		var now int64
		for i := range 3 * rateWindow {
			now = int64(i) * int64(iv)
			if i%4 == 0 {
				e.Add(uint64(rate*iv.Seconds())+256<<10, iv, false, false, now)
				continue
			}
			e.Add(uint64(rate*iv.Seconds()), iv, false, true, now)
		}
		if math.Abs(e.Rate-rate) > 1 {
			t.Fatalf("rate %.0f, want the busy samples' %.0f, not a burst's", e.Rate, rate)
		}
		// With no saturated sample left in the window, the capacity
		// they measured still caps the estimate for minRTTWindow: the
		// path's queue emptied, and its bucket refilled.
		for range rateWindow {
			now += int64(iv)
			e.Add(uint64(2*rate*iv.Seconds()), iv, false, false, now)
		}
		if math.Abs(e.Rate-rate) > 1 {
			t.Fatalf("rate %.0f, want the capacity measured busy (%.0f) while it is recent", e.Rate, rate)
		}
		// Then every sample counts.
		now += int64(minRTTWindow)
		e.Add(uint64(2*rate*iv.Seconds()), iv, false, false, now)
		if math.Abs(e.Rate-2*rate) > 1 {
			t.Fatalf("rate %.0f, want %.0f once the capacity measured busy is older than %v", e.Rate, 2*rate, minRTTWindow)
		}
	})
	t.Run("a dip does not set the capacity", func(t *testing.T) {
		// A cellular link busy at 20 Mbit/s whose capacity dips to 5 for
		// one sample: its queue builds, so the dip's sample is saturated
		// too. The capacity is the largest busy sample of the
		// capacityWindow up to the last one, so once the dip has left the
		// window of samples the estimate is 20 again, not 5 for ten
		// seconds.
		var e rateEstimator
		rate := 20e6 / 8
		var now int64
		step := func(r float64, saturated bool) {
			now += int64(iv)
			e.Add(uint64(r*iv.Seconds()), iv, false, saturated, now)
		}
		for range rateWindow {
			step(rate, true)
		}
		step(rate/4, true)
		for range 2 * rateWindow {
			step(rate, false)
		}
		if math.Abs(e.Rate-rate) > 1 {
			t.Fatalf("rate %.0f after a dip, want the capacity measured busy before it (%.0f)", e.Rate, rate)
		}
		if !e.Filled(now) {
			t.Fatalf("not filled %v after a saturated sample", time.Duration(now-e.saturatedAt))
		}
		// A saturated sample that delivered nothing measures nothing.
		var z rateEstimator
		z.Add(0, iv, false, true, int64(iv))
		z.Add(uint64(rate*iv.Seconds()), iv, false, false, 2*int64(iv))
		if math.Abs(z.Rate-rate) > 1 {
			t.Fatalf("rate %.0f after an empty saturated sample, want %.0f", z.Rate, rate)
		}
	})
	t.Run("a saturated burst caps for capacityWindow, not ten seconds", func(t *testing.T) {
		// A 30 Mbit/s token bucket: the probes met a queue on a hop the
		// paths share while its bucket drained, so a sample at 59 was
		// saturated. Then the path is busy at its rate (saturated, 30)
		// and, between, reads a refilled bucket's burst (55).
		var e rateEstimator
		now := feedMbps(&e, 0, false, 20, 30, 30, 30)
		now = feedMbps(&e, now, true, 30, 30, 59)
		if e.capacity < 58e6/8 {
			t.Fatalf("capacity %.1f Mbit/s after a saturated sample at 59", e.capacity*8/1e6)
		}
		for now < int64(capacityWindow)+int64(time.Second) {
			now = feedMbps(&e, now, true, 30, 30)
			now = feedMbps(&e, now, false, 55)
		}
		if e.Rate > 31e6/8 {
			t.Fatalf("rate %.1f Mbit/s %v after the burst, want at most the busy samples' 30", e.Rate*8/1e6, time.Duration(now))
		}
		if !e.Filled(now) {
			t.Fatalf("not filled while the busy samples go on")
		}
	})
	t.Run("a dip at the end of the busy samples", func(t *testing.T) {
		// Busy at 20 Mbit/s, then one saturated sample at 5 as the
		// capacity dips (the last before the sender backs off), then
		// samples that are not saturated for the rest of minRTTWindow:
		// the capacity stays the largest of the 2 s up to the dip.
		var e rateEstimator
		now := feedMbps(&e, 0, false, 10, 20, 20, 20)
		now = feedMbps(&e, now, true, 20, 20, 20, 20, 20, 20)
		now += int64(capacityWindow) / minRTTBuckets // the dip opens a bucket of its own
		now = feedMbps(&e, now, true, 5)
		for end := now + int64(minRTTWindow) - int64(time.Second); now < end; {
			now = feedMbps(&e, now, false, 20)
			if e.Rate < 19e6/8 {
				t.Fatalf("rate %.1f Mbit/s %v after the dip, want the 20 measured busy before it", e.Rate*8/1e6, time.Duration(now))
			}
		}
	})
	t.Run("zero interval ignored", func(t *testing.T) {
		var e rateEstimator
		e.Add(1000, 0, false, false, 0)
		if e.Rate != 0 {
			t.Fatalf("rate %v from a zero interval", e.Rate)
		}
	})
}

func TestLossEstimator(t *testing.T) {
	tests := []struct {
		name string
		feed func(*lossEstimator)
		want float64
	}{
		{"no loss", func(e *lossEstimator) { e.AddInterval(100, 100) }, 0},
		{"10% of one interval", func(e *lossEstimator) { e.AddInterval(100, 90) }, 0.1 * lossAlpha},
		{"too few packets count as a good probe", func(e *lossEstimator) { e.AddInterval(4, 0) }, 0},
		{"missed probe", func(e *lossEstimator) { e.AddMissedProbe() }, lossAlpha},
		{"receiver counted more (probes)", func(e *lossEstimator) { e.AddInterval(10, 11) }, 0},
		{"converges", func(e *lossEstimator) {
			for range 200 {
				e.AddInterval(1000, 980)
			}
		}, 0.02},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e lossEstimator
			tc.feed(&e)
			if math.Abs(e.Loss-tc.want) > 1e-6 {
				t.Errorf("loss %v, want %v", e.Loss, tc.want)
			}
		})
	}
}

// feedMbps feeds e one 30 ms sample per rate in Mbit/s, the first 30 ms
// after now, all saturated or none, and returns the last sample's time.
func feedMbps(e *rateEstimator, now int64, saturated bool, mbps ...float64) int64 {
	for _, m := range mbps {
		now += int64(30 * time.Millisecond)
		e.Add(uint64(m*1e6/8*0.03), 30*time.Millisecond, false, saturated, now)
	}
	return now
}
