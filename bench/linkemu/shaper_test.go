package linkemu

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape Shape
		want  string // substring of the error; empty: valid
	}{
		{"zero", Shape{}, ""},
		{"full", Shape{Rate: 10e6, QueueTime: 50 * time.Millisecond, Delay: time.Millisecond, Jitter: time.Millisecond, Reorder: true, Loss: 0.5, Burst: &GilbertElliott{P: 0.1, R: 0.5, LossBad: 1}}, ""},
		{"negative rate", Shape{Rate: -1}, "rate"},
		{"NaN rate", Shape{Rate: math.NaN()}, "rate"},
		{"infinite rate", Shape{Rate: math.Inf(1)}, "rate"},
		{"tiny rate", Shape{Rate: 10}, "rate"},
		{"negative queue", Shape{QueueBytes: -1}, "queue"},
		{"negative queue time", Shape{QueueTime: -time.Second}, "queue time"},
		{"negative delay", Shape{Delay: -time.Millisecond}, "delay"},
		{"negative jitter", Shape{Jitter: -time.Millisecond}, "jitter"},
		{"huge delay", Shape{Delay: MaxDelay, Jitter: time.Second}, "at most"},
		{"loss above 1", Shape{Loss: 1.5}, "loss"},
		{"negative loss", Shape{Loss: -0.1}, "loss"},
		{"NaN loss", Shape{Loss: math.NaN()}, "loss"},
		{"burst P", Shape{Burst: &GilbertElliott{P: 2}}, "burst P"},
		{"burst R", Shape{Burst: &GilbertElliott{R: -1}}, "burst R"},
		{"burst LossBad", Shape{Burst: &GilbertElliott{LossBad: math.NaN()}}, "burst LossBad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cfg := range []struct {
				c   Config
				dir string
			}{{Config{AtoB: tc.shape}, "AtoB"}, {Config{BtoA: tc.shape}, "BtoA"}} {
				err := cfg.c.Validate()
				switch {
				case tc.want == "" && err != nil:
					t.Errorf("%s: unexpected error %v", cfg.dir, err)
				case tc.want != "" && err == nil:
					t.Errorf("%s: no error, want one about %q", cfg.dir, tc.want)
				case tc.want != "" && (!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), cfg.dir)):
					t.Errorf("%s: error %q does not name %q and the direction", cfg.dir, err, tc.want)
				}
			}
		})
	}
}

func TestConfigCloneIsDeep(t *testing.T) {
	b := &GilbertElliott{P: 0.1}
	c := Config{AtoB: Shape{Burst: b}}.clone()
	b.P = 0.9
	if c.AtoB.Burst == b || c.AtoB.Burst.P != 0.1 {
		t.Fatalf("clone shares the Burst of the original")
	}
}

const ms = int64(time.Millisecond)

func TestShaperRateAndQueue(t *testing.T) {
	// 1500-byte packets at 12 Mbit/s take 1 ms each; the queue limit
	// 4500 bytes holds three of them.
	for _, tc := range []struct {
		name  string
		shape Shape
	}{
		{"bytes", Shape{Rate: 12e6, QueueBytes: 4500, Delay: 10 * time.Millisecond}},
		{"time", Shape{Rate: 12e6, QueueTime: 3 * time.Millisecond, Delay: 10 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := newShaper(1, 2)
			var got []int64
			for range 5 {
				d, v := sh.admit(&tc.shape, 0, 1500)
				if v == dropQueue {
					got = append(got, -1)
					continue
				}
				got = append(got, d)
			}
			want := []int64{11 * ms, 12 * ms, 13 * ms, -1, -1}
			if !equal(got, want) {
				t.Fatalf("deadlines %v, want %v (-1: tail drop)", got, want)
			}
			if q := queuedBytes(sh.lastDepart, 0, tc.shape.Rate); q != 4500 {
				t.Errorf("queued %d bytes at 0, want 4500", q)
			}
			if q := queuedBytes(sh.lastDepart, 2*ms, tc.shape.Rate); q != 1500 {
				t.Errorf("queued %d bytes at 2 ms, want 1500", q)
			}
			// At 1.5 ms one and a half packets left: there is room again.
			if d, v := sh.admit(&tc.shape, 1500*1000, 1500); v != deliver || d != 14*ms {
				t.Errorf("packet at 1.5 ms: deadline %v verdict %v, want 14 ms, deliver", d, v)
			}
			// An idle link sends at once.
			if d, v := sh.admit(&tc.shape, 100*ms, 750); v != deliver || d != 100*ms+ms/2+10*ms {
				t.Errorf("packet on an idle link: deadline %v verdict %v, want 110.5 ms", d, v)
			}
		})
	}
}

func TestDefaultQueue(t *testing.T) {
	for _, tc := range []struct {
		shape Shape
		want  float64
	}{
		{Shape{Rate: 1e6}, MinQueueBytes},
		{Shape{Rate: 100e6}, 100e6 / 8 * DefaultQueueTime.Seconds()},
		{Shape{Rate: 100e6, QueueTime: time.Millisecond}, 12500},
		{Shape{Rate: 1e6, QueueTime: time.Millisecond}, 125},
		{Shape{Rate: 100e6, QueueBytes: 3000, QueueTime: time.Second}, 3000},
	} {
		if got := tc.shape.queueLimit(); math.Abs(got-tc.want) > 1e-6 {
			t.Errorf("%+v: queue limit %v, want %v", tc.shape, got, tc.want)
		}
	}
}

func TestShaperJitterOrder(t *testing.T) {
	const n = 5000
	for _, reorder := range []bool{false, true} {
		s := Shape{Delay: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: reorder}
		sh := newShaper(3, 4)
		var last int64
		reordered := 0
		for i := range n {
			now := int64(i) * ms / 10 // one packet per 0.1 ms
			d, v := sh.admit(&s, now, 100)
			if v != deliver {
				t.Fatalf("verdict %v", v)
			}
			if d < now+20*ms {
				t.Fatalf("deadline %d before the fixed delay %d", d, now+20*ms)
			}
			if reorder && d >= now+30*ms {
				t.Fatalf("deadline %d beyond delay+jitter %d", d, now+30*ms)
			}
			if d < last {
				reordered++
			}
			last = max(last, d)
		}
		switch {
		case !reorder && reordered != 0:
			t.Errorf("Reorder false: %d packets overtaken", reordered)
		case reorder && reordered < n/4:
			t.Errorf("Reorder true: only %d of %d packets overtaken", reordered, n)
		}
	}
}

func TestShaperDown(t *testing.T) {
	sh := newShaper(1, 1)
	up := Shape{Rate: 12e6}
	for range 3 {
		sh.admit(&up, 0, 1500)
	}
	if _, v := sh.admit(&Shape{Rate: 12e6, Down: true}, ms, 1500); v != dropDown {
		t.Fatalf("verdict %v on a down link", v)
	}
	// What was queued was dropped: the queue restarts empty.
	if d, v := sh.admit(&up, ms, 1500); v != deliver || d != 2*ms {
		t.Fatalf("after down: deadline %v verdict %v, want 2 ms", d, v)
	}
}

func TestShaperRandomLoss(t *testing.T) {
	const n = 200000
	for _, p := range []float64{0, 0.01, 0.1, 0.5, 1} {
		sh := newShaper(7, 8)
		s := Shape{Loss: p}
		lost := 0
		for range n {
			if _, v := sh.admit(&s, 0, 100); v == dropLoss {
				lost++
			}
		}
		tol := 4.5 * math.Sqrt(n*p*(1-p))
		if math.Abs(float64(lost)-n*p) > tol {
			t.Errorf("loss %v: lost %d of %d, want %.0f ± %.0f", p, lost, n, n*p, tol)
		}
	}
}

func TestGilbertElliott(t *testing.T) {
	const n = 1000000
	for _, ge := range []GilbertElliott{
		{P: 0.01, R: 0.25, LossBad: 1},
		{P: 0.05, R: 0.5, LossBad: 1},
		{P: 0.001, R: 0.1, LossBad: 1},
	} {
		sh := newShaper(11, 12)
		s := Shape{Burst: &ge}
		lost, bursts, inBurst := 0, 0, false
		for range n {
			_, v := sh.admit(&s, 0, 100)
			l := v == dropLoss
			if l {
				lost++
				if !inBurst {
					bursts++
				}
			}
			inBurst = l
		}
		rate := float64(lost) / n
		wantRate := ge.P / (ge.P + ge.R)
		mean := float64(lost) / float64(bursts)
		// Burst lengths are geometric: standard deviation sqrt(1-R)/R.
		tol := 4.5 * math.Sqrt(1-ge.R) / ge.R / math.Sqrt(float64(bursts))
		if math.Abs(mean-1/ge.R) > tol {
			t.Errorf("%+v: mean burst %.3f, want %.3f ± %.3f", ge, mean, 1/ge.R, tol)
		}
		if math.Abs(rate-wantRate) > 0.1*wantRate {
			t.Errorf("%+v: loss rate %.4f, want %.4f ± 10%%", ge, rate, wantRate)
		}
	}
}

func TestShaperSeedReproducible(t *testing.T) {
	s := Shape{Loss: 0.3, Jitter: time.Millisecond, Reorder: true, Burst: &GilbertElliott{P: 0.1, R: 0.3, LossBad: 0.8, LossGood: 0.01}}
	run := func(seed uint64) []int64 {
		sh := newShaper(seed, 1)
		var out []int64
		for i := range 1000 {
			d, v := sh.admit(&s, int64(i)*ms, 100)
			out = append(out, d*10+int64(v))
		}
		return out
	}
	if a, b := run(5), run(5); !equal(a, b) {
		t.Errorf("same seed, different decisions")
	}
	if a, b := run(5), run(6); equal(a, b) {
		t.Errorf("different seeds, same decisions")
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
