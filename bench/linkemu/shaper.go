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

	// The trace being replayed (nil: none yet) and where it started on the
	// shaper's clock. The bottleneck is a cursor into its delivery
	// opportunities: next is the first one with bytes not yet given to a
	// packet, of which used are given. An opportunity before the one due
	// now found the queue empty: its bytes are lost.
	trace      *Trace
	traceStart int64
	next       int64
	used       int
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
	if s.Trace != nil {
		var ok bool
		if depart, ok = sh.traceDepart(s, now, wire); !ok {
			return 0, dropQueue
		}
	} else if s.Rate > 0 {
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

// traceDepart queues a packet of wire bytes arriving at now on the
// trace-driven bottleneck of s, as mahimahi's link does: every delivery
// opportunity at or after the packet's arrival sends up to
// TraceOpportunityBytes of the queue in order, a packet leaves with the
// opportunity that carries its last byte (a packet larger than what is
// left of an opportunity goes on in the next ones), and bytes of an
// opportunity that finds the queue empty are lost. It returns when the
// packet leaves, or ok false when it does not fit in the queue.
//
// The schedule is deterministic, so the cursor gives the departure at once
// and the backlog is the opportunities' bytes already given between now
// and the cursor. No allocation, O(log n) in the trace's length.
func (sh *shaper) traceDepart(s *Shape, now int64, wire int) (depart int64, ok bool) {
	t := s.Trace
	if t != sh.trace || s.traceStart != sh.traceStart {
		// A new trace (or the same restarted) begins with an empty
		// cursor; what an earlier shape left queued still goes first.
		sh.trace, sh.traceStart = t, s.traceStart
		sh.next, sh.used = t.firstAt(max(now, sh.lastDepart)-sh.traceStart), 0
	}
	due := t.firstAt(now - sh.traceStart)
	if sh.next < due {
		// The queue emptied before now: the cursor's unused bytes and
		// every opportunity since are gone.
		sh.next, sh.used = due, 0
	} else if backlog := (sh.next-due)*TraceOpportunityBytes + int64(sh.used); backlog > 0 &&
		float64(backlog+int64(wire)) > s.queueLimit() {
		return 0, false
	}
	end := int64(sh.used) + int64(wire) // bytes from the start of opportunity next
	last := sh.next + (end-1)/TraceOpportunityBytes
	depart = sh.traceStart + t.at(last)
	if rest := int(end % TraceOpportunityBytes); rest == 0 {
		sh.next, sh.used = last+1, 0
	} else {
		sh.next, sh.used = last, rest
	}
	sh.lastDepart = max(sh.lastDepart, depart)
	return depart, true
}

// restart empties the bottleneck queue and the delay line at now: nothing
// queued survives a down link.
func (sh *shaper) restart(now int64) {
	sh.lastDepart = min(sh.lastDepart, now)
	sh.lastDeadline = min(sh.lastDeadline, now)
	if sh.trace != nil {
		if due := sh.trace.firstAt(now - sh.traceStart); sh.next >= due {
			sh.next, sh.used = due, 0
		}
	}
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
