package linkemu

import (
	"math"
	"math/rand/v2"
)

// verdict is what the shaper decided for one packet.
type verdict uint8

const (
	deliver verdict = iota
	dropLoss
	dropQueue
	dropDown
)

// shaper holds the per-direction state of the decisions taken when a packet
// arrives. It is owned by the receiving goroutine of its direction and does
// no I/O: times are nanoseconds on any monotonic clock, passed in.
type shaper struct {
	rng *rand.Rand
	// bad is the Gilbert–Elliott state.
	bad bool
	// lastDepart is when the last accepted packet finished serialisation at
	// the bottleneck; lastDeadline is the latest delivery deadline given.
	lastDepart, lastDeadline int64
}

func newShaper(seed1, seed2 uint64) *shaper {
	return &shaper{rng: rand.New(rand.NewPCG(seed1, seed2))}
}

// admit decides the fate of a packet of wire bytes arriving at now under s,
// and for a delivered packet its delivery deadline.
func (sh *shaper) admit(s *Shape, now int64, wire int) (deadline int64, v verdict) {
	if s.Down {
		sh.restart(now)
		return 0, dropDown
	}
	if b := s.Burst; b != nil {
		lost := sh.rng.Float64() < b.lossProbability(sh.bad)
		if sh.bad {
			sh.bad = !(sh.rng.Float64() < b.R)
		} else {
			sh.bad = sh.rng.Float64() < b.P
		}
		if lost {
			return 0, dropLoss
		}
	}
	if s.Loss > 0 && sh.rng.Float64() < s.Loss {
		return 0, dropLoss
	}
	depart := now
	if s.Rate > 0 {
		start := max(now, sh.lastDepart)
		if backlog := start - now; backlog > 0 {
			queued := float64(backlog) * s.Rate / 8e9
			if queued+float64(wire) > s.queueLimit() {
				return 0, dropQueue
			}
		}
		depart = start + int64(float64(wire)*8e9/s.Rate)
		sh.lastDepart = depart
	}
	deadline = depart + int64(s.Delay)
	if s.Jitter > 0 {
		deadline += sh.rng.Int64N(int64(s.Jitter))
	}
	if !s.Reorder && deadline < sh.lastDeadline {
		deadline = sh.lastDeadline
	}
	sh.lastDeadline = max(sh.lastDeadline, deadline)
	return deadline, deliver
}

// restart empties the bottleneck queue and the delay line at now: nothing
// queued survives a down link.
func (sh *shaper) restart(now int64) {
	sh.lastDepart = min(sh.lastDepart, now)
	sh.lastDeadline = min(sh.lastDeadline, now)
}

// queuedBytes is the bottleneck backlog at now for rate.
func queuedBytes(lastDepart, now int64, rate float64) int64 {
	if rate <= 0 || lastDepart <= now {
		return 0
	}
	return int64(float64(lastDepart-now) * rate / 8e9)
}

func (b *GilbertElliott) lossProbability(bad bool) float64 {
	if bad {
		return b.LossBad
	}
	return b.LossGood
}

func floatBits(f float64) uint64     { return math.Float64bits(f) }
func floatFromBits(b uint64) float64 { return math.Float64frombits(b) }
