package scheduler

import "time"

// rttEstimator smooths probe round trips as RFC 6298 §2 does for TCP's
// retransmission timer: SRTT and RTTVAR with gains 1/8 and 1/4, the first
// sample setting SRTT = R and RTTVAR = R/2. It also keeps the minimum
// round trip of the last minRTTWindow, the path's delay without queueing.
type rttEstimator struct {
	SRTT, RTTVar time.Duration
	Last         time.Duration // the latest sample
	Min          time.Duration // minimum over the window (0: no sample yet)
	Samples      int
	mins         windowMin
}

// windowMin is the least of the samples of the last span (the caller's:
// minRTTWindow for delays, capacityWindow for the capacity): it keeps the
// minimum of each span/minRTTBuckets-long slice of time, the newest first,
// and the least of those the window covers.
type windowMin struct {
	buckets [minRTTBuckets]minBucket
}

type minBucket struct {
	min   int64
	start int64
	set   bool
}

// Min returns the minimum of the window of span at now, false when no
// sample is that recent.
func (w *windowMin) Min(now int64, span time.Duration) (int64, bool) {
	m, ok := int64(0), false
	for _, b := range w.buckets {
		if b.set && now-b.start < int64(span) && (!ok || b.min < m) {
			m, ok = b.min, true
		}
	}
	return m, ok
}

// Add feeds sample v taken at now and returns the minimum of the window of
// span; a windowMin is always fed with the same span.
func (w *windowMin) Add(v, now int64, span time.Duration) int64 {
	if b := &w.buckets[0]; !b.set || now-b.start >= int64(span/minRTTBuckets) {
		copy(w.buckets[1:], w.buckets[:len(w.buckets)-1])
		w.buckets[0] = minBucket{min: v, start: now, set: true}
	} else {
		b.min = min(b.min, v)
	}
	m, _ := w.Min(now, span) // the bucket just written is in the window
	return m
}

// minRTTWindow is how long a minimum round trip stays valid: a route change
// that makes the path slower shows after this long. When it lapses, the
// minimum is the least sample of the window, not the latest one: a path
// that carries a standing queue of the session's own traffic (the faster
// path of an aggregate holds one as deep as the other path is slower)
// still dips to its base delay now and then, and taking the latest sample
// instead made that queue vanish from the path's expected delay, so that
// after ten seconds the slower path was starved.
const (
	minRTTWindow  = 10 * time.Second
	minRTTBuckets = 5
)

// Add feeds one round-trip sample measured at now. Non-positive samples
// (a clock step, a bogus reply) are ignored.
func (e *rttEstimator) Add(r time.Duration, now int64) {
	if r <= 0 {
		return
	}
	if e.Samples == 0 {
		e.SRTT, e.RTTVar = r, r/2
	} else {
		d := e.SRTT - r
		if d < 0 {
			d = -d
		}
		e.RTTVar += (d - e.RTTVar) / 4
		e.SRTT += (r - e.SRTT) / 8
	}
	e.Samples++
	e.Last = r
	e.Min = time.Duration(e.mins.Add(int64(r), now, minRTTWindow))
}

// rateEstimator estimates a path's delivery rate, in bytes per second, from
// the receiver's per-path byte counters that probe replies carry: each
// reply gives the bytes delivered since the previous reply and the time
// between the two probes. The estimate is the maximum of the last
// rateWindow samples (a bottleneck's rate is what it delivers when it is
// kept busy, so lower samples are noise or an idle sender).
//
// A sample taken while the sender did not push the path to its estimate
// (app-limited) only raises the estimate, never lowers it: an idle path
// has not become slower.
//
// A sample whose interval began and ended with a queue on the path
// (saturated: both probes came back later than the path's minimum round
// trip by more than boostSlack) measured the bottleneck while it was busy
// the whole time (the caller counts a queue only when its own data could
// have made it). For minRTTWindow after such a sample, the estimate is at
// most the largest saturated sample of the capacityWindow up to it (the
// capacity). The others may have caught a burst: a token bucket (tc tbf, an ISP's or a
// cellular network's shaper) that idled lets its bucket's worth through at
// line rate, and a 30 ms sample of a 25 Mbit/s path with a 256 kB bucket
// reads up to 93 Mbit/s; kept by the maximum, it made the picker drain
// that path's virtual queue three times too fast while its real queue
// overflowed. The capacity is the largest saturated sample of two seconds,
// not of the latest samples: a cellular link's capacity dips for
// a few hundred milliseconds now and then, its queue builds at once, and
// the samples that span the dip are saturated and low; taken alone they
// rated the recorded LTE link of lte-aggregation at 6 Mbit/s for ten
// seconds where it carried 20-32. The picker drains a path's virtual queue at the
// estimate times Gain: 2 while starting up (until three samples in a row
// grow less than 25%), then a cycle of 1.25, 0.75 and six times 1, one
// step per sample, so a path whose capacity exceeds the estimate is offered
// more and shows it, and the queue that built up drains again.
type rateEstimator struct {
	samples  [rateWindow]float64
	n, next  int
	Rate     float64 // bytes per second; 0 until the first sample
	startup  bool
	plateau  int
	cycle    int
	prevRate float64
	started  bool
	// capacity is the largest saturated sample of the capacityWindow up
	// to the last one (busyMax, kept negated): what the bottleneck
	// delivered while busy.
	capacity float64
	busyMax  windowMin
	// saturatedAt is when the last saturated sample was taken (0: never).
	saturatedAt int64
}

// capacityWindow is how far back the capacity looks for saturated samples.
// Longer than a cellular link's dips (a few hundred milliseconds: the
// samples that span one are saturated and low), shorter than the ten
// seconds the capacity then holds (minRTTWindow after the last saturated
// sample): a sample can be saturated and still carry a token bucket's
// burst, when the queue the probes met was on a hop the paths share (in a
// flow's slow start, the client's one interface under both of a gateway's
// uplinks), and with the whole min-RTT window the largest such sample was
// the capacity for ten seconds. Over tc tbf 30 + 15 Mbit/s with 128 KiB
// buckets and 10 and 30 ms behind them (gateway-aggregation's topology), the
// 30 Mbit/s uplink was rated 59 and the 15 Mbit/s one 35 from the first
// second to the tenth, the flow lost at the faster uplink's bucket while
// the slower carried 7-9 Mbit/s, and the run gave 0.91-0.93 of the sum;
// the saturated samples that followed read the buckets' rates.
const capacityWindow = 2 * time.Second

// firstFillShare: a path's first saturated sample fills it only if it is
// at least 1/firstFillShare of the estimate (the largest recent sample).
// A token bucket's burst reads up to four times its rate (93 Mbit/s on a
// 25 Mbit/s tbf with a 256 kB bucket), which this must not reject.
const firstFillShare = 8

// rampSamples is how many samples back (in samples, so at most
// rateWindow) a path's first saturated sample is compared with: about
// three probe intervals of an active path, three round trips of a flow's
// slow start on a path of 30 ms.
const rampSamples = 3

// rateWindow is the number of delivery-rate samples the maximum is taken
// over: about 300 ms at the default probe interval of an active path.
const rateWindow = 10

var gainCycle = [...]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

// Add feeds one sample taken at now: delivered bytes over interval.
// appLimited says the sender offered the path clearly less than its
// estimate in that interval.
func (e *rateEstimator) Add(delivered uint64, interval time.Duration, appLimited, saturated bool, now int64) {
	if !e.started {
		e.started, e.startup = true, true
	}
	if interval <= 0 {
		// Measured nothing, not even a busy bottleneck.
		return
	}
	s := float64(delivered) / interval.Seconds()
	if saturated && !e.Filled(now) && !e.settled(s) {
		// The first saturated sample while what the path delivers still
		// grows (by a quarter in three samples, or too few samples to
		// tell) is a burst's queue, not a busy bottleneck's: in slow
		// start the sender's data comes in bursts once a round trip, and
		// two probes in a row behind bursts rated a 50 Mbit/s uplink
		// carrying 13 a filled 13, held there for the capacity's ten
		// seconds (gateway-aggregation, down: 84 of 98.8 Mbit/s). A
		// bottleneck that is busy delivers what it can and no more, so
		// its samples stop growing.
		//
		// Nor one far below what the path delivered in the last samples:
		// the path's packets were a trickle in a queue it shares with
		// another path (the client's one interface under both of a
		// gateway's uplinks, flooded by a flow's slow start), or the
		// path stalled. Taken as the capacity, such a sample read the
		// 25 Mbit/s tbf uplink of gateway-aggregation-tbf-up, which
		// had just carried 32, at 2 Mbit/s, and held it there for ten
		// seconds: the picker offers a filled path little more than
		// its capacity, so nothing showed it wrong (56 of 64.8 Mbit/s
		// in two runs of six).
		saturated = false
	}
	if saturated {
		e.saturatedAt = now
	}
	if appLimited && s < e.Rate {
		e.cycle++
		return
	}
	e.samples[e.next] = s
	e.next = (e.next + 1) % rateWindow
	if e.n < rateWindow {
		e.n++
	}
	all := 0.0
	for _, v := range e.samples[:e.n] {
		all = max(all, v)
	}
	e.Rate = all
	// A saturated sample that delivered nothing (the replies of an
	// interval came back out of order, or the receiver's counters
	// lagged) measured no capacity.
	// The capacity changes only with a saturated sample: between them it
	// is the largest of the capacityWindow up to the last one. Read at
	// each sample, the window would shrink to its newest bucket as the
	// older ones aged out, and a dip's sample alone in that bucket would
	// be the capacity for the rest of minRTTWindow.
	if saturated && s > 0 {
		e.capacity = -float64(e.busyMax.Add(-int64(s), now, capacityWindow))
	}
	if e.Filled(now) && e.capacity > 0 {
		e.Rate = min(all, e.capacity)
	}
	e.cycle++
	if e.startup && !appLimited {
		if e.Rate >= e.prevRate*1.25 {
			e.plateau, e.prevRate = 0, e.Rate
		} else if e.plateau++; e.plateau >= 3 {
			e.startup = false
			e.cycle = 0
		}
	}
}

// settled reports whether a path's first saturated sample s measures its
// capacity (Add): enough samples to tell, no longer growing by more than a
// quarter over rampSamples, and not far below the estimate.
func (e *rateEstimator) settled(s float64) bool {
	return e.n >= rampSamples && s <= 1.25*e.samples[(e.next-rampSamples+rateWindow)%rateWindow] && s >= e.Rate/firstFillShare
}

// Filled reports whether a saturated sample was taken within
// minRTTWindow of now: Rate is then the path's capacity, not only what it
// was given.
func (e *rateEstimator) Filled(now int64) bool {
	return e.saturatedAt != 0 && now-e.saturatedAt <= int64(minRTTWindow)
}

// Gain returns the factor the picker applies to Rate now.
func (e *rateEstimator) Gain() float64 {
	if e.startup || !e.started {
		return 2
	}
	return gainCycle[e.cycle%len(gainCycle)]
}

// Startup reports whether the estimator is still growing its first estimate.
func (e *rateEstimator) Startup() bool { return e.startup || !e.started }

// lossEstimator is an exponentially weighted moving average (gain Alpha) of
// a path's loss: each probe reply contributes the data loss of its
// interval, 1 − (packets the receiver counted) / (packets sent), when at
// least minLossPackets were sent, and otherwise 0 for the probe that made
// it; each missed probe contributes 1.
type lossEstimator struct {
	Loss    float64
	Samples int
}

// Loss estimator constants.
const (
	lossAlpha      = 1.0 / 8
	minLossPackets = 8
)

// AddInterval feeds a probe reply's interval: sent and received packets.
func (e *lossEstimator) AddInterval(sent, received uint64) {
	s := 0.0
	if sent >= minLossPackets {
		if received < sent {
			s = float64(sent-received) / float64(sent)
		}
	}
	e.add(s)
}

// AddMissedProbe feeds one probe that got no reply.
func (e *lossEstimator) AddMissedProbe() { e.add(1) }

func (e *lossEstimator) add(s float64) {
	e.Loss += (s - e.Loss) * lossAlpha
	e.Samples++
}
