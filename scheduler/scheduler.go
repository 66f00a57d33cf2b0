package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Policy is how packets are spread over the paths.
type Policy uint8

// Policies (DESIGN.md "Multipath model").
const (
	// PolicySingle: one path at a time, the best by tier (then lowest id);
	// falls over to the next when it fails and returns when it recovers.
	PolicySingle Policy = iota
	// PolicyOffload: the best tier only (WLAN before cellular); lower tiers
	// carry data while every path of the higher tiers is failing or down,
	// or, with Config.OffloadOverflow, when the higher tier's estimated
	// capacity is exceeded.
	PolicyOffload
	// PolicyAggregate: every usable path; each packet takes the path with
	// the earliest expected arrival.
	PolicyAggregate
	// PolicyRedundant: every packet on every usable path.
	PolicyRedundant
	numPolicies
)

var policyNames = [...]string{"single", "offload", "aggregate", "redundant"}

func (p Policy) String() string {
	if p < numPolicies {
		return policyNames[p]
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParsePolicy parses a policy name.
func ParsePolicy(s string) (Policy, error) {
	for i, n := range policyNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return Policy(i), nil
		}
	}
	return 0, fmt.Errorf("scheduler: unknown policy %q (want single, offload, aggregate or redundant)", s)
}

// Config tunes a Scheduler. Zero fields take the defaults.
type Config struct {
	Detector DetectorConfig
	// LossPenalty scales a path's rate for the picker by
	// max(minRateFactor, 1 − LossPenalty·loss): with the default 5 a path
	// losing 2% gets 90% of its rate, one losing 10% half of it.
	LossPenalty float64
	// ProbeShare: one packet in ProbeShare may go to a usable path whose
	// delivery rate is not known yet (aggregate), so that it gets one.
	// Default 32.
	ProbeShare int
	// InitialRate is the rate, bytes per second, assumed for a path before
	// its first delivery-rate sample. Default 125000 (1 Mbit/s).
	InitialRate float64
	// OffloadOverflow lets the offload policy spill to lower tiers when the
	// best tier's virtual queue holds more than OverflowDelay of data.
	OffloadOverflow bool
	OverflowDelay   time.Duration // default 20 ms
	// MaxBacklog bounds the virtual queues: when even the least loaded
	// usable path is more than this far behind (the sender offers more
	// than the paths carry), Tick moves every path's queue back by the
	// excess, keeping their differences. Default 500 ms.
	MaxBacklog time.Duration
}

// minRateFactor is the floor of the loss penalty.
const minRateFactor = 0.05

func (c *Config) fill() {
	c.Detector.fill()
	if c.LossPenalty <= 0 {
		c.LossPenalty = 5
	}
	if c.ProbeShare <= 0 {
		c.ProbeShare = 32
	}
	if c.InitialRate <= 0 {
		c.InitialRate = 125000
	}
	if c.OverflowDelay <= 0 {
		c.OverflowDelay = 20 * time.Millisecond
	}
	if c.MaxBacklog <= 0 {
		c.MaxBacklog = 500 * time.Millisecond
	}
}

// Errors of the control-plane methods.
var (
	ErrPathID       = errors.New("scheduler: path id out of range")
	ErrPathExists   = errors.New("scheduler: path already exists")
	ErrNoPath       = errors.New("scheduler: no such path")
	ErrUnknownProbe = errors.New("scheduler: reply to an unknown probe")
)

// hotPath is what the per-packet decision reads and writes for one path,
// one cache line per path so that workers sending on different paths do
// not share lines.
type hotPath struct {
	// busy is when the path's virtual queue drains (ns): the queue of bytes
	// sent but not yet through the bottleneck, as a time, so that draining
	// at the estimated rate needs no update. Queued bytes = (busy − now) ×
	// rate.
	busy atomic.Int64
	cost atomic.Int64 // picoseconds per byte at the picker's rate
	owd  atomic.Int64 // one-way delay estimate, ns
	_    [40]byte
}

// policySets is what each policy may send on, published by the control
// plane after every change.
type policySets struct {
	primary, overflow atomic.Uint64
}

// ctlPath is a path's control-plane state, guarded by Scheduler.mu.
type ctlPath struct {
	cfg     PathConfig
	state   State
	rtt     rttEstimator
	rate    rateEstimator
	loss    lossEstimator
	det     failureDetector
	owdSet  time.Duration // measured one-way delay (0: SRTT/2)
	probes  [probeRing]probeRec
	pending int64 // send time of the oldest probe unanswered since the last reply (0: none)
	// At the previous reply: its probe's send time and our counters then,
	// and the receiver's counters.
	prevSent    int64
	prevReplied int64 // arrival of the previous reply, less the replier's hold
	prevTx      Counters
	prevRx      Counters
	havePrev    bool
	prevQueued  bool // the previous probe met a queue on its way out (rateEstimator: saturated)
	prevPicked  bool // the previous probe left while the aggregate picked the path (probeRec.picked)
	// The previous probe's arrival at the replier, on its clock (0: not
	// told), and, when it ended a saturated sample, the arrival and the
	// replier's counters at the probe before it.
	prevArrived   int64
	spanArrived   int64
	spanRx        Counters
	prevSaturated bool
	// fwd is the least of the last minRTTWindow of probes' arrival at
	// the replier minus their sending (two clocks: any offset), when the
	// replier tells the arrival.
	fwd      windowMin
	lastTx   Counters // at the last probe sent
	added    int64    // when AddPath added it
	quiet    bool     // at the last probe sent, no path had carried data for QuietAfter
	carrying bool     // data, not only probes, went out on some path within carryingFor of the last probe
	// filled is rate.Filled as of the last reply or tick, for recompute
	// and publishPath, which have no clock.
	filled bool
	// boost (≥ 1) multiplies the picker's rate of a path that carries
	// data without a queue building on it (probeBoost).
	boost      float64
	pickerRate float64
	// allowanceUsed: in the last probe interval the path was sent at
	// least 0.8 of pickerRate.
	allowanceUsed bool
	// sentRate is what the path was sent between the last two probes
	// answered, in bytes per second.
	sentRate float64
	// queueSeen: a probe met a queue on the way out since the path
	// last carried less than a quarter of its rate (pickerGain).
	queueSeen bool
}

const probeRing = 32

// minSaturatingPackets is the least a path must have sent between two
// probes (the probe included) for a queue they meet to be its own.
const minSaturatingPackets = 4

type probeRec struct {
	seq  uint32
	sent int64
	tx   Counters
	live bool
	// missed: counted missed, unanswered yet. Its reply may still come:
	// see ProbeReply.
	missed bool
	// queued is the path's virtual queue (ns) when the probe left: what
	// the probe should find ahead of it at the bottleneck.
	queued int64
	// picked: the path was in the aggregate policy's set when the probe
	// left, given packets by its rate rather than only a probing share
	// or nothing.
	picked bool
}

// Scheduler holds the paths of one session, their estimators and failure
// detectors, and makes the per-packet decision for every policy.
//
// Concurrency. The control plane (AddPath, ProbeSent, ProbeReply, Tick, …)
// is called by the session's conductor and serialises on a mutex; it runs a
// few hundred times a second. The per-packet methods (Decide, Pick) take no
// lock: they read the sets and estimates the control plane published with
// atomic stores and account the packet in its path's virtual queue with one
// atomic add (or a compare-and-swap when the queue was empty). All outbound
// workers share one Scheduler, so the virtual queues see every worker's
// packets; per-worker copies would each see a fraction of the load and
// overfill the fast path. BenchmarkPickParallel compares the shared
// design with one Scheduler per worker: on the 2-core development machine
// the two were within the measurement noise of each other (13–95 ns per
// packet while the machine was shared), so the shared, correct accounting
// is kept.
type Scheduler struct {
	cfg Config

	hot     [MaxPaths]hotPath
	sets    [numPolicies]policySets
	probing atomic.Uint64 // usable paths with no rate sample yet
	// probingOpen: every path the aggregate policy picks among shows a
	// queue, so the probing share may go out (recompute).
	probingOpen atomic.Bool
	failed      atomic.Uint64 // verified paths the detector took out of service (Failed)
	usable      atomic.Uint64 // active paths not failing: the paths DecideWithin chooses among
	_           [32]byte      // probing … usable fill a cache line, apart from counter
	counter     atomic.Uint64 // packets while probing is non-empty
	_           [56]byte

	mu    sync.Mutex
	paths [MaxPaths]*ctlPath
	// filledRate is the largest rate of a filled active path, or of a
	// path the aggregate used when the unfilled paths joined it (0:
	// none), as of the last recompute: the least an unfilled path that
	// joins the aggregate is charged at (publishPath).
	filledRate float64
	// joined holds the unfilled paths that joined the aggregate when
	// the paths in use showed a queue, and joinRate the largest rate of
	// those paths then: they stay in, charged at least at joinRate,
	// while the flow goes on (recompute).
	joined   PathSet
	joinRate float64
	// dataSeen is when a probe last found that data had gone out on its
	// path since the one before, or DataSent said so (0: never).
	dataSeen int64
	present  PathSet
	single   PathID // current path of the single policy
	hasSgl   bool
}

// New returns a Scheduler with no paths.
func New(cfg Config) *Scheduler {
	cfg.fill()
	return &Scheduler{cfg: cfg}
}

// Config returns the configuration in use, defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

func (s *Scheduler) path(id PathID) (*ctlPath, error) {
	if id >= MaxPaths {
		return nil, fmt.Errorf("%w: %d (max %d)", ErrPathID, id, MaxPaths-1)
	}
	p := s.paths[id]
	if p == nil {
		return nil, fmt.Errorf("%w: %d", ErrNoPath, id)
	}
	return p, nil
}

// AddPath adds a path in StateProbing: it carries data once it has answered
// Detector.RecoverReplies probes.
func (s *Scheduler) AddPath(pc PathConfig, now int64) error {
	if pc.ID >= MaxPaths {
		return fmt.Errorf("add path: %w: %d (max %d)", ErrPathID, pc.ID, MaxPaths-1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paths[pc.ID] != nil {
		return fmt.Errorf("add path %d: %w", pc.ID, ErrPathExists)
	}
	p := &ctlPath{cfg: pc, state: StateProbing, det: *newFailureDetector(s.cfg.Detector), added: now}
	s.paths[pc.ID] = p
	s.present = s.present.With(pc.ID)
	h := &s.hot[pc.ID]
	h.busy.Store(now)
	s.publishPath(p)
	s.recompute()
	return nil
}

// RemovePath removes a path at once. The conductor removes a path when its
// interface or address is already gone, so nothing is left to drain: a
// planned removal (an interface taken down) loses no packet inside the
// tunnel (`mifsec bench planned`), and packets in flight on a path that
// died silently are for the failure detector and the peer's resequencer.
func (s *Scheduler) RemovePath(id PathID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.path(id); err != nil {
		return fmt.Errorf("remove path: %w", err)
	}
	s.paths[id].state = StateRemoved
	s.paths[id] = nil
	s.present = s.present.Without(id)
	s.recompute()
	return nil
}

// SetOneWayDelay sets a measured one-way delay for a path (0 returns to
// the SRTT/2 estimate).
func (s *Scheduler) SetOneWayDelay(id PathID, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.path(id)
	if err != nil {
		return fmt.Errorf("set one-way delay: %w", err)
	}
	p.owdSet = max(d, 0)
	s.publishPath(p)
	return nil
}

// ProbeSent records a probe request sent on a path at now, with the
// path's cumulative transmit counters at that moment (the engine's
// per-path TxPackets/TxBytes), this probe and every earlier one included:
// the peer's receive counters, echoed in replies, count the probes too.
func (s *Scheduler) ProbeSent(id PathID, seq uint32, now int64, tx Counters) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.path(id)
	if err != nil {
		return fmt.Errorf("probe sent: %w", err)
	}
	r := &p.probes[seq%probeRing]
	if r.live {
		// Overwritten before it was answered or timed out: missed.
		s.miss(p, now)
	}
	*r = probeRec{seq: seq, sent: now, tx: tx, live: true,
		queued: max(s.hot[id].busy.Load()-now, 0),
		picked: s.aggregateSet().Has(id)}
	if p.pending == 0 {
		p.pending = now
	}
	// Data went out only if more than one packet did since the last
	// probe: a path that carries nothing but its probes gains exactly
	// one between two of them. Counted as data, every probe made an
	// idle path look busy: it was probed every ActiveInterval for ever,
	// and an idle client with two paths sent and answered 66 packets a
	// second on each interface (its gateway as many), where the idle
	// interval asks for a third of that.
	if tx.Packets-p.lastTx.Packets > 1 {
		s.dataSeen = now
	}
	// Every path counts as carrying while any did lately: the picker may
	// put the next packet on any of them, and one stuck on a path probed
	// at the idle pace holds the whole flow at the receiver until the
	// detector sees it. (Paced by its own data, a recorded LTE link that
	// took a packet now and then beside WLAN was probed every 100 ms
	// between them, its outages were seen late, and the simulated flow
	// fell to a quarter of WLAN alone in two seeds of six.)
	p.carrying = s.dataSeen != 0 && now-s.dataSeen < int64(carryingFor)
	p.quiet = now-max(s.dataSeen, p.added) >= int64(p.det.cfg.QuietAfter)
	p.lastTx = tx
	s.afterHealth(p)
	return nil
}

// DataSent tells the scheduler that data went out at now on some path,
// before a probe could find it: the conductor calls it when the data plane
// wakes it after a quiet spell (dataplane.PathGroup.SetWake). Every path
// counts as carrying from now on, and is probed at the active pace from
// its next probe, whichever path the data took.
func (s *Scheduler) DataSent(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataSeen = max(s.dataSeen, now)
	for set := s.present; !set.Empty(); {
		p := s.paths[set.Next()]
		p.carrying, p.quiet = true, false
	}
}

// Quiet returns the paths whose last probe found no data sent on any path
// for the detector's QuietAfter: they are probed every QuietInterval
// while healthy or down.
func (s *Scheduler) Quiet() PathSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	var quiet PathSet
	for set := s.present; !set.Empty(); {
		id := set.Next()
		if s.paths[id].quiet {
			quiet = quiet.With(id)
		}
	}
	return quiet
}

// carryingFor is how long after a probe last found data sent on its path
// every path of the session counts as carrying data (probed at the
// detector's ActiveInterval).
const carryingFor = time.Second

func (s *Scheduler) miss(p *ctlPath, now int64) {
	p.det.Miss(now)
	p.loss.AddMissedProbe()
}

// missProbe counts the unanswered probe o missed; its reply may still
// come (ProbeReply).
func (s *Scheduler) missProbe(p *ctlPath, o *probeRec, now int64) {
	o.live, o.missed = false, true
	s.miss(p, now)
}

// ProbeReply feeds a probe reply that arrived at now: it updates the
// round-trip, rate and loss estimators and the failure detector. Probes
// sent on the same path before this one and still unanswered are missed
// (a path delivers in order).
func (s *Scheduler) ProbeReply(id PathID, r ProbeReply, now int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.path(id)
	if err != nil {
		return fmt.Errorf("probe reply: %w", err)
	}
	rec := &p.probes[r.Seq%probeRing]
	if !(rec.live || rec.missed) || rec.seq != r.Seq {
		return fmt.Errorf("probe reply on path %d: %w (seq %d)", id, ErrUnknownProbe, r.Seq)
	}
	// A reply to a probe already counted missed is taken all the same:
	// the path is alive, only slower than the miss timeout allowed, and
	// its round trip is what the timeout must learn. Dropped, a queue
	// that grew faster than the smoothed round trip (a token bucket's
	// 50 ms filled by a flow's slow start on a path of 1 ms) had every
	// probe missed, none of their round trips counted, and the path
	// declared down while it delivered: the IKE SA moved off it and
	// the flow lost the path's share.
	rec.live, rec.missed = false, false
	for i := range p.probes {
		o := &p.probes[i]
		if o.live && int32(o.seq-r.Seq) < 0 {
			s.missProbe(p, o, now)
		}
	}
	p.rtt.Add(time.Duration(now-rec.sent)-max(r.Hold, 0), now)
	roundTripQueued := p.rtt.Last > queueShows(&p.rtt)
	queued := roundTripQueued // on the way out
	if r.PeerArrived != 0 {
		// The round trip shows a queue on either way; only one on the way
		// out is this side's data. A queue on the way back (the peer's
		// upload on the same link, or a queue left by it) made the
		// gateway's probes on an idle downlink read "saturated" at the
		// few hundred kbit/s of background it carried: the path was rated
		// a filled 0.3 Mbit/s for the next ten seconds, and a TCP flow
		// over it and a 50 Mbit/s path got 50-58 Mbit/s of their 100
		// (TestMultipathAggregate, download after upload).
		fwd := r.PeerArrived - rec.sent
		base := p.fwd.Add(fwd, now, minRTTWindow)
		queued = queued && time.Duration(fwd-base) > boostSlack(p.rtt.Min)
	}

	saturated := false
	if p.havePrev && rec.sent > p.prevSent && r.Rx.Bytes >= p.prevRx.Bytes && r.Rx.Packets >= p.prevRx.Packets &&
		rec.tx.Bytes >= p.prevTx.Bytes && rec.tx.Packets >= p.prevTx.Packets {
		// As BBR does: the longer of the send and the reply intervals, so
		// that a burst of replies (queueing that drained) does not
		// inflate the rate.
		interval := time.Duration(max(rec.sent-p.prevSent, now-int64(max(r.Hold, 0))-p.prevReplied))
		sent := rec.tx.Bytes - p.prevTx.Bytes
		sendSeconds := time.Duration(rec.sent - p.prevSent).Seconds()
		offered := p.rate.Rate * sendSeconds
		appLimited := p.rate.Rate > 0 && float64(sent) < 0.8*offered
		// The boost grows only while the path takes what the picker
		// allows it: unused, it would let the picker pour a burst on the
		// path the moment the others fill up, at many times the rate
		// the path was ever seen to carry.
		p.allowanceUsed = float64(sent) >= 0.8*p.pickerRate*sendSeconds
		p.sentRate = float64(sent) / sendSeconds
		if sent > 0 || p.rate.Rate > 0 {
			hadRate := p.rate.Rate > 0
			// A queue counts as this side's only when its data could
			// have made it: a path that carried nothing but the probes
			// meets one now and then all the same (a cellular
			// scheduler's gap between delivery opportunities, cross
			// traffic), and read as saturated at the rate of its probes,
			// the recorded LTE link of lte-aggregation was rated a
			// filled 0.2 Mbit/s before the flow began, and took 1.5 s
			// to grow from there.
			//
			// Nor while the path took no more than the probing share
			// (or nothing) of the aggregate: what it carried then was
			// not paced by its rate, and the queue it met was most
			// likely another path's on a hop they share. At a flow's
			// start the client's one interface, under both of a
			// gateway's uplinks, queued the flow's first bursts; the
			// uplink not yet in use met that queue with its probing
			// share, was rated filled at what that carried (1.6-2.8
			// Mbit/s where polled), and was held there for the
			// capacity's ten seconds while its 25 Mbit/s went unused
			// (gateway-aggregation over tc tbf 40 + 25 Mbit/s, up:
			// 43-58 of 64.8 in three runs of fifteen).
			saturated = queued && p.prevQueued && rec.picked && p.prevPicked &&
				rec.tx.Packets-p.prevTx.Packets >= minSaturatingPackets
			delivered := r.Rx.Bytes - p.prevRx.Bytes
			if saturated && p.prevSaturated && p.spanArrived != 0 && r.PeerArrived > p.spanArrived {
				// What the replier counted between two probes' arrivals
				// took their distance on its clock to deliver. The
				// sending interval is longer when the queue shrank
				// between them, and a saturated sample read over it
				// rated the path below what it delivered while busy,
				// for as long as the capacity holds: a tenth of the
				// samples 15% or more under the uplink's rate in
				// gateway-aggregation. The reading spans the last two
				// intervals, both saturated: the replier stamps a probe
				// when its receive worker reaches it, a few
				// milliseconds late now and then, and over one 30 ms
				// interval that read a 50 Mbit/s uplink at up to 56.
				// (Both samples passed the counters' checks above, so
				// the replier's counters grew over the two.)
				delivered = r.Rx.Bytes - p.spanRx.Bytes
				interval = time.Duration(r.PeerArrived - p.spanArrived)
			}
			p.rate.Add(delivered, interval, appLimited, saturated, now)
			if !hadRate && p.rate.Rate > 0 {
				// The virtual queue was kept at InitialRate, a guess:
				// at the path's first measured rate it is meaningless.
				s.hot[p.cfg.ID].busy.Store(now)
			}
		}
		p.loss.AddInterval(rec.tx.Packets-p.prevTx.Packets, r.Rx.Packets-p.prevRx.Packets)
	} else {
		p.loss.AddInterval(0, 0)
		p.allowanceUsed = false
		p.sentRate = 0
	}
	if !p.havePrev || rec.sent > p.prevSent {
		// (A late reply that a later probe's overtook is one round
		// trip, not the start of the next interval.)
		p.spanArrived, p.spanRx = p.prevArrived, p.prevRx
		p.prevSent, p.prevTx, p.prevRx, p.havePrev, p.prevQueued, p.prevPicked = rec.sent, rec.tx, r.Rx, true, queued, rec.picked
		// Seen busy while it carries: forgotten once it is sent less
		// than a quarter of its rate (the flow on it stopped).
		p.queueSeen = queued || (p.queueSeen && p.sentRate >= p.rate.Rate/4)
		p.prevReplied = now - int64(max(r.Hold, 0))
		p.prevArrived, p.prevSaturated = r.PeerArrived, saturated
	}

	p.filled = p.rate.Filled(now)
	// Forgetting wants the whole round trip free of a queue, not only the
	// way out: with a queue on the way back the arrival times alone let
	// it forget, and one TCP flow each way over the lab's aggregation
	// links (both directions loaded) ran at 31-35 Mbit/s in three runs
	// of four, 39-47 without (docs/lab.md, "Both directions loaded at
	// once").
	if !roundTripQueued && p.loss.Loss < 0.001 && !p.filled {
		s.forgetUnrealQueue(p, rec.queued, now)
	}
	p.boost = probeBoost(p)
	p.det.Reply(now, rec.sent)
	p.pending = 0
	for i := range p.probes {
		if o := &p.probes[i]; o.live && (p.pending == 0 || o.sent < p.pending) {
			p.pending = o.sent
		}
	}
	s.publishPath(p)
	s.afterHealth(p)
	return nil
}

// The virtual queue models the bytes waiting at the path's bottleneck,
// kept as the time they take to drain at the picker's rate. When that
// rate is too low, as it is whenever the estimate came from traffic that
// never filled the path, the model holds a queue the path does not: a
// few hundred kbit/s of background traffic rated a 50 Mbit/s path at
// that, and a new flow's first packets, each charged a millisecond or
// more, built a virtual queue of 400 ms on a path with none. The picker
// then spread the flow's first round trips over a slower path, the
// receiver held the packets behind them, and HyStart ended the flow's
// slow start at a fraction of what the faster path carries alone (mifsec
// bench gateway-aggregation, downlink: 10-25 Mbit/s on the 50 Mbit/s
// path for 1.7 s, the slower one unused for 7 s; 75 Mbit/s of the 98.8
// the two carry). A probe that comes back without a queue (its round
// trip within boostSlack of the minimum) met none at the bottleneck, so
// what the virtual queue held beyond that slack when the probe left was
// never there, and it is taken off now. The model is then wrong for at
// most a round trip and a probe interval, whatever the estimate. Only
// on a path that has not been filled for minRTTWindow (no saturated rate
// sample): once its bottleneck was seen busy, the estimate is its
// capacity and the virtual queue runs ahead of the real one on purpose,
// under the loss penalty and the gain cycle's 0.75
// (TestSimAggregateLossyPath), and while a token bucket spends its
// burst, which showing no queue would have the picker pour onto the path
// until it overflows (TestSimAggregateTokenBucket).
//
// forgetUnrealQueue takes off p's virtual queue what it held beyond
// boostSlack when a probe that met no queue left (held, ns).
func (s *Scheduler) forgetUnrealQueue(p *ctlPath, held int64, now int64) {
	h := &s.hot[p.cfg.ID]
	d := held - int64(boostSlack(p.rtt.Min))
	if d <= 0 {
		return
	}
	for {
		busy := h.busy.Load()
		if busy <= now {
			return
		}
		if h.busy.CompareAndSwap(busy, max(busy-d, now)) {
			return
		}
	}
}

// Tick applies the timeouts at now: probes unanswered for the miss
// timeout are missed, silent paths fail, and the virtual queues are kept
// within MaxBacklog. The conductor calls it at least every few
// milliseconds while paths are probed (at least as often as the fastest
// probe interval).
func (s *Scheduler) Tick(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for set := s.present; !set.Empty(); {
		p := s.paths[set.Next()]
		mt := int64(p.det.MissTimeout(&p.rtt))
		for i := range p.probes {
			if o := &p.probes[i]; o.live && now-o.sent > mt {
				s.missProbe(p, o, now)
			}
		}
		p.det.Silence(now, p.pending, &p.rtt)
		p.filled = p.rate.Filled(now)
		s.afterHealth(p)
	}
	s.rebase(now)
}

// aggregateSet returns the paths the aggregate policy picks among, as
// recompute last published them.
func (s *Scheduler) aggregateSet() PathSet { return PathSet(s.sets[PolicyAggregate].primary.Load()) }

// rebase moves every virtual queue back by the excess of the least loaded
// usable path over MaxBacklog.
func (s *Scheduler) rebase(now int64) {
	set := s.aggregateSet()
	if set.Empty() {
		return
	}
	least := int64(1<<63 - 1)
	for c := set; !c.Empty(); {
		least = min(least, s.hot[c.Next()].busy.Load()-now)
	}
	if excess := least - int64(s.cfg.MaxBacklog); excess > 0 {
		for c := s.present; !c.Empty(); {
			s.hot[c.Next()].busy.Add(-excess)
		}
	}
}

// afterHealth moves a path between Probing/Active/Failed after its
// detector changed, and republishes the sets.
func (s *Scheduler) afterHealth(p *ctlPath) {
	h := p.det.Health()
	switch p.state {
	case StateProbing, StateFailed:
		if h != Down {
			p.state = StateActive
		}
	case StateActive:
		if h == Down {
			p.state = StateFailed
		}
	}
	s.recompute()
}

// Probe boost. A path's delivery rate is measured from what it was given:
// a path the picker gives little to (its rate estimate is low, so its
// virtual queue fills at once) delivers little and keeps its low
// estimate, and a sender that clocks itself by its acknowledgements, as a
// loss-based TCP does, never offers the excess that would make the picker
// spill onto it. Measured in mifsec lab with cubic: cellular stuck at 2.4
// Mbit/s of its 20 while WLAN carried the flow alone. So a path that
// carries data while no queue builds on it (its smoothed and its latest
// RTT within boostSlack of its minimum, no loss) has more room than its estimate
// says: the picker trusts it with boostStep more at every such reply, up
// to maxBoost, and back to its estimate once a queue shows. Its delivery
// rate then follows what it is given, and the estimate with it.
const (
	boostStep  = 1.25
	boostDecay = 0.8
	maxBoost   = 16
)

// boostSlack is how far above its minimum a path's smoothed RTT may be
// with no queue counted: jitter, and the probe's own transmission.
func boostSlack(min time.Duration) time.Duration { return max(3*time.Millisecond, min/8) }

// queueShows is the round trip above which a path holds a queue: its
// minimum plus boostSlack.
func queueShows(r *rttEstimator) time.Duration { return r.Min + boostSlack(r.Min) }

// probeBoost returns p's boost after a reply.
func probeBoost(p *ctlPath) float64 {
	queued := queueShows(&p.rtt)
	if !p.carrying || p.rtt.Samples < 4 || p.loss.Loss > 0.01 || p.rtt.SRTT > queued || p.rtt.Last > queued {
		return 1
	}
	if !p.allowanceUsed {
		return max(p.boost*boostDecay, 1)
	}
	return min(max(p.boost, 1)*boostStep, maxBoost)
}

// pickerGain returns the factor the picker applies to p's rate: the
// estimator's once p is filled. Before, at least 2 (startup's), its rate
// being a lower bound of what it carries, unless a probe met a queue on
// the way out while it carried a flow (queueSeen): its bottleneck is busy
// and the rate is what it passes, so 1 until the samples that fill it.
// At twice that, the picker built no virtual queue on the quicker path
// while its real queue grew by 20 ms a round trip (a flow in slow start:
// 82 Mbit/s sent into a 50 Mbit/s uplink), gave the slower path next to
// nothing, and the quicker one overflowed (gateway-aggregation, both
// directions). Back to 2 each time that queue drained (the slower path
// took the excess), it poured 120 Mbit/s into the same uplink the next
// round trip.
func pickerGain(p *ctlPath) float64 {
	switch {
	case p.filled:
		return p.rate.Gain()
	case p.queueSeen:
		return 1
	}
	return max(p.rate.Gain(), 2)
}

// publishPath stores the picker's rate and delay for p.
func (s *Scheduler) publishPath(p *ctlPath) {
	rate := p.rate.Rate
	if rate <= 0 {
		rate = s.cfg.InitialRate
	}
	rate *= pickerGain(p) * max(p.boost, 1)
	if !p.filled {
		// A path rated only by what it was given joins the aggregate
		// once the paths in use show a queue (recompute), and must take
		// the sender's excess at once: a flow in slow start fills the
		// quicker path's queue within a round trip, and a path that
		// joined at the few hundred kbit/s its background traffic
		// showed, doubling each probe interval, came too late (the
		// quicker path overflowed, CUBIC cut its window and took 5-7 s
		// to return to it: gateway-aggregation downlink at 80 of 98.8
		// Mbit/s). So it is charged at the capacity it was last seen
		// filled at, or, never filled, as if it were as fast as the
		// fastest filled path, until a queue on it shows its own rate;
		// what it takes meanwhile is the excess the others do not
		// carry, for a round trip and a probe interval. (Charged at the
		// fastest path's rate whatever its own history, the recorded
		// LTE path of lte-aggregation, 7-32 Mbit/s, overflowed beside
		// 50 Mbit/s WLAN: 0.96 of WLAN alone.)
		floor := s.filledRate
		if c := p.rate.capacity; c > 0 {
			floor = c
		}
		rate = max(rate, floor)
	}
	rate *= max(minRateFactor, 1-s.cfg.LossPenalty*p.loss.Loss)
	p.pickerRate = rate
	h := &s.hot[p.cfg.ID]
	h.cost.Store(int64(1e12/rate) + 1)
	owd := p.owdSet
	if owd == 0 {
		// Half the quietest round trip each way, and the queue (what the
		// smoothed round trip has above it) all on the way out: a queue
		// builds where the sender's data goes. A sender clocked by its
		// acknowledgements keeps a standing queue on the path it uses
		// that the virtual queue, which drains at the path's rate, never
		// sees; counted here, it makes the next packet's arrival later on
		// that path, and the others take their share before the queue
		// overflows.
		owd = p.rtt.Min/2 + max(p.rtt.SRTT-p.rtt.Min, 0)
	}
	h.owd.Store(int64(owd))
}

// recompute publishes every policy's sets from the paths' states.
func (s *Scheduler) recompute() {
	var usable, failing, down, probing, unfilled, unverified PathSet
	s.filledRate = 0
	for set := s.present; !set.Empty(); {
		id := set.Next()
		p := s.paths[id]
		switch p.state {
		case StateProbing:
			unverified = unverified.With(id)
		case StateActive:
			if p.filled {
				s.filledRate = max(s.filledRate, p.rate.Rate)
			}
			if p.det.Health() == Failing {
				failing = failing.With(id)
			} else {
				usable = usable.With(id)
				if p.rate.Rate == 0 {
					probing = probing.With(id)
				} else if !p.filled {
					unfilled = unfilled.With(id)
				}
			}
		case StateFailed:
			down = down.With(id)
		}
	}
	s.failed.Store(uint64(failing | down))
	s.usable.Store(uint64(usable))
	// When nothing is usable, sending on a failing or down path beats
	// dropping: on the one that answered last, which is the likeliest to
	// work. A path whose queue delays its probes after it took over a
	// dead one's traffic can miss enough of them to look down while the
	// dead one, silent for longer, is only failing yet.
	any := usable
	if any.Empty() && !(failing | down).Empty() {
		any = s.lastAnswered(failing | down)
	}

	// Aggregate: paths with a known rate, plus a probing share. While
	// no path has a rate, the quickest carries the traffic and the
	// others take the probing share: spread at InitialRate, four in
	// ten of a new flow's first packets went to the slower path, the
	// receiver held the rest for them, and the flow's slow start ended
	// (HyStart) at a tenth of what the quicker path alone carries.
	//
	// The same holds for a path rated only by what it was given (not
	// filled lately: no saturated sample in minRTTWindow): background
	// traffic of a few hundred kbit/s rates a 50 Mbit/s path at that,
	// and a new flow spread over two such paths at those rates sent
	// every other packet of its first round trips on the slower one
	// (mifsec bench gateway-aggregation, downlink: slow start ended at
	// 10 Mbit/s in some runs, 70 of the 98.8 Mbit/s the two carry).
	// Such paths join the aggregate once the paths in use show a queue
	// (open, below); the quickest path with a rate is always in use.
	quick := s.quickest(any &^ probing)
	if quick.Empty() {
		quick = s.quickest(any)
	}
	agg := any&^probing&^unfilled | quick
	probing &^= agg
	unfilled &^= agg
	s.probing.Store(uint64(probing))
	// The probing share goes out only once the paths in use show a
	// queue: a flow they carry alone has no use for another path, and
	// each packet on a slower one makes the receiver hold the packets
	// behind it, which a TCP sender in slow start takes for a full pipe
	// (HyStart ends slow start).
	open := true
	for c := agg; !c.Empty(); {
		if r := &s.paths[c.Next()].rtt; r.Samples == 0 || (r.Last <= queueShows(r) && r.SRTT <= queueShows(r)) {
			open = false
		}
	}
	s.probingOpen.Store(open)
	// Once the paths in use show a queue, the unfilled paths join and
	// stay in while the flow goes on, charged from their next reply at
	// least at the rate the paths in use carried then (publishPath;
	// republished at once, whenever that rate changed, the cellular path
	// of aggregation-down came out filled lower: 65.1-65.9 Mbit/s in four
	// runs against 67.6-68.4). Joined only while the queue shows, a
	// path left again as soon as it had drained that queue, and rated by
	// the little it had carried (or, until the quicker path was filled,
	// by nothing), it came back too late: a flow whose slow start ended
	// late overflowed the quicker path 0.1 s after its first queue, and
	// CUBIC took 8 s to regrow the window (gateway-aggregation, both
	// directions: 92.1-93.9 of 99 Mbit/s in some runs). The picker still
	// sends on a joined path only what arrives no later there.
	//
	// The flow goes on while the paths carry at least a quarter of what
	// the quickest carried when the others joined: background traffic
	// alone must not hold a slower path in, or the next flow's first
	// packets would be spread onto it (above).
	var carried float64
	for c := agg | s.joined; !c.Empty(); {
		carried += s.paths[c.Next()].sentRate
	}
	if carried < s.joinRate/4 {
		s.joined, s.joinRate = 0, 0
	}
	if open {
		for c := agg; !c.Empty(); {
			s.joinRate = max(s.joinRate, s.paths[c.Next()].rate.Rate)
		}
		s.joined |= unfilled
	}
	s.joined &= unfilled
	if !s.joined.Empty() {
		agg |= s.joined
		s.filledRate = max(s.filledRate, s.joinRate)
	}
	s.sets[PolicyAggregate].primary.Store(uint64(agg))
	// Redundant keeps failing and failed paths: a copy on a doubtful path
	// costs little and is what the policy is for. On a path that loses
	// one packet in ten, probe round trips fail often enough for the
	// detector to call it down now and then; dropping it from the set
	// would leave the other path alone exactly when copies matter. A path
	// still being verified gets copies too, for the same reason.
	if red := usable | failing | down | unverified; !red.Empty() {
		s.sets[PolicyRedundant].primary.Store(uint64(red))
	} else {
		s.sets[PolicyRedundant].primary.Store(uint64(any))
	}

	// Offload: the best tier of the usable paths; overflow: the others.
	best, found := 0, false
	for c := any; !c.Empty(); {
		t := s.paths[c.Next()].cfg.Tier
		if !found || t < best {
			best, found = t, true
		}
	}
	var top PathSet
	for c := any; !c.Empty(); {
		id := c.Next()
		if s.paths[id].cfg.Tier == best {
			top = top.With(id)
		}
	}
	s.sets[PolicyOffload].primary.Store(uint64(top))
	if s.cfg.OffloadOverflow {
		s.sets[PolicyOffload].overflow.Store(uint64(any &^ top))
	} else {
		s.sets[PolicyOffload].overflow.Store(0)
	}

	// Single: keep the current path while it is usable, unless a better
	// tier is usable again.
	var pick PathID
	ok := false
	for c := any; !c.Empty(); {
		id := c.Next()
		if !ok {
			pick, ok = id, true
			continue
		}
		ti, tp := s.paths[id].cfg.Tier, s.paths[pick].cfg.Tier
		if ti < tp || (ti == tp && s.hasSgl && id == s.single && pick != s.single) {
			pick = id
		}
	}
	if ok {
		s.single, s.hasSgl = pick, true
		s.sets[PolicySingle].primary.Store(uint64(SetOf(pick)))
	} else {
		s.sets[PolicySingle].primary.Store(0)
	}
}

// lastAnswered returns the path of set whose last probe reply is the most
// recent; s.mu is held.
func (s *Scheduler) lastAnswered(set PathSet) PathSet {
	var best PathID
	var at int64
	found := false
	for c := set; !c.Empty(); {
		id := c.Next()
		if d := s.paths[id].det; !found || d.lastReply > at {
			best, at, found = id, d.lastReply, true
		}
	}
	return SetOf(best)
}

// quickest returns the path of set with the least smoothed round trip
// (the first of set when none has one yet).
func (s *Scheduler) quickest(set PathSet) PathSet {
	best, found := PathID(0), false
	for c := set; !c.Empty(); {
		id := c.Next()
		if !found {
			best, found = id, true
			continue
		}
		p, b := &s.paths[id].rtt, &s.paths[best].rtt
		if p.Samples > 0 && (b.Samples == 0 || p.SRTT < b.SRTT) {
			best = id
		}
	}
	if !found {
		return 0
	}
	return SetOf(best)
}

// Decide returns the paths a packet of size bytes (as it goes on the wire)
// takes at now under policy pol: one path, every usable path for
// PolicyRedundant, or the empty set when the scheduler has no path. It
// makes no allocation and takes no lock.
func (s *Scheduler) Decide(pol Policy, size int, now int64) PathSet {
	switch pol {
	case PolicySingle:
		return PathSet(s.sets[PolicySingle].primary.Load())
	case PolicyRedundant:
		set := PathSet(s.sets[PolicyRedundant].primary.Load())
		for c := set; !c.Empty(); {
			s.account(c.Next(), size, now)
		}
		return set
	}
	if id, ok := s.pick(pol, size, now); ok {
		return 1 << id
	}
	return 0
}

// DecideWithin is Decide among the usable paths of within (active, not
// failing): the empty set when within has none, so that the caller can
// try another set. Under single and offload, whose chosen path or tier
// may lie outside within, it takes the path of within where the packet
// arrives first. No allocation, no lock.
func (s *Scheduler) DecideWithin(pol Policy, size int, now int64, within PathSet) PathSet {
	usable := PathSet(s.usable.Load()) & within
	if usable.Empty() {
		return 0
	}
	if pol == PolicyRedundant {
		for c := usable; !c.Empty(); {
			s.account(c.Next(), size, now)
		}
		return usable
	}
	set := usable
	if pol < numPolicies {
		if p := PathSet(s.sets[pol].primary.Load()) & usable; !p.Empty() {
			set = p
		}
	}
	id, _, _, ok := s.earliest(set, size, now)
	if !ok {
		return 0
	}
	s.account(id, size, now)
	return SetOf(id)
}

// Pick returns the one path a packet takes under pol (for PolicyRedundant,
// the path where it would arrive first); ok is false when there is none.
func (s *Scheduler) Pick(pol Policy, size int, now int64) (PathID, bool) {
	switch pol {
	case PolicySingle:
		return PathSet(s.sets[PolicySingle].primary.Load()).First()
	case PolicyRedundant:
		id, _, _, ok := s.earliest(PathSet(s.sets[PolicyRedundant].primary.Load()), size, now)
		return id, ok
	}
	return s.pick(pol, size, now)
}

func (s *Scheduler) pick(pol Policy, size int, now int64) (PathID, bool) {
	if pol >= numPolicies {
		pol = PolicyAggregate
	}
	id, eat, queue, ok := s.earliest(PathSet(s.sets[pol].primary.Load()), size, now)
	if pol == PolicyAggregate && s.probingOpen.Load() {
		if pr := PathSet(s.probing.Load()); !pr.Empty() {
			n := s.counter.Add(1)
			if share := uint64(s.cfg.ProbeShare); n%share == 0 {
				k := int(n/share) % pr.Len()
				for ; k > 0; k-- {
					pr.Next()
				}
				// Only where it arrives no later than on the paths in
				// use: earlier, the receiver would hold theirs for it.
				if p := pr.Next(); !ok || now+s.hot[p].owd.Load() <= eat {
					s.account(p, size, now)
					return p, true
				}
			}
		}
	}
	if pol == PolicyOffload && (!ok || queue > int64(s.cfg.OverflowDelay)) {
		if ov := PathSet(s.sets[pol].overflow.Load()); !ov.Empty() {
			if id2, eat2, _, ok2 := s.earliest(ov, size, now); ok2 && (!ok || eat2 < eat) {
				id, ok = id2, true
			}
		}
	}
	if ok {
		s.account(id, size, now)
	}
	return id, ok
}

// earliest returns the path of set where a packet of size bytes sent at now
// is expected to arrive first: when its virtual queue has drained, plus the
// packet's own transmission time, plus the one-way delay. queue is the
// chosen path's virtual queue delay.
func (s *Scheduler) earliest(set PathSet, size int, now int64) (id PathID, eat, queue int64, ok bool) {
	for c := set; !c.Empty(); {
		i := c.Next()
		h := &s.hot[i]
		start := max(h.busy.Load(), now)
		t := start + int64(size)*h.cost.Load()/1000 + h.owd.Load()
		if !ok || t < eat {
			id, eat, queue, ok = i, t, start-now, true
		}
	}
	return
}

// account adds a packet to a path's virtual queue.
func (s *Scheduler) account(id PathID, size int, now int64) {
	h := &s.hot[id]
	d := int64(size) * h.cost.Load() / 1000
	for {
		old := h.busy.Load()
		if old >= now {
			h.busy.Add(d)
			return
		}
		if h.busy.CompareAndSwap(old, now+d) {
			return
		}
	}
}

// Info returns a snapshot of a path's state and estimates at now.
func (s *Scheduler) Info(id PathID, now int64) (PathInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.path(id)
	if err != nil {
		return PathInfo{}, false
	}
	h := &s.hot[id]
	q := max(h.busy.Load()-now, 0)
	return PathInfo{
		PathConfig: p.cfg, State: p.state, Health: p.det.Health(), Misses: p.det.Misses(),
		SRTT: p.rtt.SRTT, RTTVar: p.rtt.RTTVar, MinRTT: p.rtt.Min,
		OneWayDelay: time.Duration(h.owd.Load()), Rate: p.rate.Rate, Gain: pickerGain(p), PickerRate: p.pickerRate,
		Loss: p.loss.Loss, Queued: int64(float64(q) * p.pickerRate / 1e9),
		ProbeInterval: p.det.ProbeInterval(&p.rtt, p.carrying, p.quiet), Transitions: p.det.Transitions,
		RTTSamples: p.rtt.Samples, RateSamples: p.rate.Rate > 0,
	}, true
}

// ProbeInterval returns how long the conductor should wait before the
// next probe on a path: faster while it is being verified or is suspect.
// 0 for an unknown path.
func (s *Scheduler) ProbeInterval(id PathID) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.path(id)
	if err != nil {
		return 0
	}
	return p.det.ProbeInterval(&p.rtt, p.carrying, p.quiet)
}

// Failed returns the verified paths the failure detector took out of
// service: Failing or Down, so that policies send elsewhere when they can.
// A path entering this set has lost what was in flight on it since
// Unconfirmed; the conductor has it sent again on the others
// (dataplane.Engine.Reinject).
func (s *Scheduler) Failed() PathSet { return PathSet(s.failed.Load()) }

// Unconfirmed returns the time (the Now clock) from which what was sent on
// path id is not known to have arrived: the arrival of its last probe
// reply, which counted what the peer had received when it left, less a
// smoothed round trip and its variation; 0 (everything) when the path
// never answered. ok is false for an unknown path.
func (s *Scheduler) Unconfirmed(id PathID) (since int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.path(id)
	if err != nil {
		return 0, false
	}
	if !p.det.everReply {
		return 0, true
	}
	return p.det.lastReply - int64(p.rtt.SRTT+p.rtt.RTTVar), true
}

// Paths returns the ids of the paths present.
func (s *Scheduler) Paths() PathSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.present
}

// DelaySpread returns, over the paths that answered a probe and have not
// failed, the difference between the largest and the smallest one-way
// delay estimate and the largest RTT variation: what a resequencer on the
// other side should wait for (ResequencerConfig / Resequencer.SetDelays).
// known is false while a path present and not failed has not answered
// yet: the spread covers only part of the paths, and a resequencer is
// better left at its initial wait.
func (s *Scheduler) DelaySpread() (spread, jitter time.Duration, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every path with a round-trip sample that has not failed: the peer
	// may send on one before this side has verified it (a new path gets a
	// probing share as soon as the peer trusts it), and its packets are
	// the ones the receiver must wait for.
	var lo, hi time.Duration
	first, known := true, true
	for c := s.present; !c.Empty(); {
		id := c.Next()
		if p := s.paths[id]; p.rtt.Samples == 0 || p.state == StateFailed {
			known = known && p.state == StateFailed
			continue
		}
		o := time.Duration(s.hot[id].owd.Load())
		if first || o < lo {
			lo = o
		}
		if first || o > hi {
			hi = o
		}
		first = false
		if p := s.paths[id]; p != nil {
			jitter = max(jitter, p.rtt.RTTVar)
		}
	}
	return hi - lo, jitter, known
}
