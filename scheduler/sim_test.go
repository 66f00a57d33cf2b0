package scheduler

import (
	"container/heap"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file is a discrete-event simulator of a multipath session: a sender
// whose Scheduler picks a path per packet, synthetic paths (a bottleneck
// with a rate and a queue limit, one-way delay, jitter, random loss, an
// up/down switch for silent cuts), probes and their replies feeding the
// estimators, and a receiver with a replay filter and a Resequencer. It
// does no I/O and starts no goroutine; time is the event clock.

const ms = int64(time.Millisecond)

type simLink struct {
	rate       float64 // bytes per second at the bottleneck
	owd        int64   // one-way delay, ns
	jitter     int64   // extra delay, uniform in [0, jitter)
	loss       float64 // random loss probability, each direction
	queueLimit int     // bytes the bottleneck queue holds
	standing   int64   // extra forward delay: a queue other traffic keeps full (bufferbloat)
	burst      float64 // token bucket (tc tbf) depth in bytes: after an idle spell this much leaves at once
	up         bool
	drops      int // packets the full queue refused

	freeAt     int64 // bottleneck busy until
	lastArrive int64 // keeps the path FIFO despite jitter
	lastBack   int64

	// trace, when set, replaces rate: the bottleneck's delivery
	// opportunities over one period of a recorded link (ns from the
	// period's start, each traceMTU bytes; mahimahi's format, replayed
	// in a loop as mahimahi does). opp is the opportunity the next packet
	// leaves in, oppUsed the bytes of it already taken.
	trace   []int64
	period  int64
	opp     int64
	oppUsed int
}

// traceMTU is the bytes one delivery opportunity of a recorded link
// carries.
const traceMTU = 1500

// newTraceLink returns a link that replays the mahimahi trace file (one
// millisecond timestamp per delivery opportunity) with the given round
// trip and jitter and a queue of queueTime at the trace's mean rate.
func newTraceLink(t *testing.T, file string, rtt, jitter, queueTime time.Duration) *simLink {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading trace: %v", err)
	}
	l := &simLink{owd: int64(rtt) / 2, jitter: int64(jitter), up: true}
	for _, f := range strings.Fields(string(b)) {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("trace %s: %v", file, err)
		}
		l.trace = append(l.trace, v*ms)
	}
	if len(l.trace) == 0 || l.trace[len(l.trace)-1] <= 0 {
		t.Fatalf("trace %s: no opportunities", file)
	}
	l.period = l.trace[len(l.trace)-1]
	l.rate = float64(len(l.trace)*traceMTU) / (float64(l.period) / 1e9)
	l.queueLimit = int(l.rate * queueTime.Seconds())
	return l
}

// oppTime returns when opportunity k (counted from the first period's
// first) comes.
func (l *simLink) oppTime(k int64) int64 {
	n := int64(len(l.trace))
	return k/n*l.period + l.trace[k%n]
}

// firstOpp returns the first opportunity at or after now.
func (l *simLink) firstOpp(now int64) int64 {
	n := int64(len(l.trace))
	cycle, within := now/l.period, now%l.period
	return cycle*n + int64(sort.Search(len(l.trace), func(i int) bool { return l.trace[i] >= within }))
}

// sendTrace is send for a recorded link: the packet leaves in the first
// opportunity, not before now, with room left for it after the packets
// queued ahead.
func (l *simLink) sendTrace(now int64, size int, rng *rand.Rand) (int64, bool) {
	first := l.firstOpp(now)
	if l.opp < first {
		l.opp, l.oppUsed = first, 0
	}
	if int(l.opp-first)*traceMTU+l.oppUsed+size > l.queueLimit {
		l.drops++
		return 0, false
	}
	if l.oppUsed+size > traceMTU {
		l.opp, l.oppUsed = l.opp+1, 0
	}
	l.oppUsed += size
	if l.loss > 0 && rng.Float64() < l.loss {
		return 0, false
	}
	arr := l.oppTime(l.opp) + l.owd
	if l.jitter > 0 {
		arr += rng.Int64N(l.jitter)
	}
	arr = max(arr, l.lastArrive)
	l.lastArrive = arr
	return arr, true
}

// simProbeSize is a probe's size on the wire in the simulator.
const simProbeSize = 64

func mbit(m float64) float64 { return m * 1e6 / 8 }

func newLink(rateMbit float64, rtt time.Duration, jitter time.Duration, loss float64) *simLink {
	l := &simLink{rate: mbit(rateMbit), owd: int64(rtt) / 2, jitter: int64(jitter), loss: loss, up: true}
	l.queueLimit = max(int(l.rate*0.05), 30000) // 50 ms of queue
	return l
}

// send offers a packet to the forward direction at now and returns when it
// arrives, or false when it is dropped.
func (l *simLink) send(now int64, size int, rng *rand.Rand) (int64, bool) {
	if !l.up {
		return 0, false
	}
	if l.trace != nil {
		return l.sendTrace(now, size, rng)
	}
	// A token bucket is a queue served at rate whose packets may leave up
	// to burst/rate ahead of that schedule, never before they come (the
	// GCRA form of tc tbf); burst 0 is a plain FIFO bottleneck.
	credit := int64(l.burst / l.rate * 1e9)
	start := max(now, l.freeAt-credit)
	if backlog := float64(start-now) / 1e9 * l.rate; int(backlog)+size > l.queueLimit {
		l.drops++
		return 0, false
	}
	l.freeAt = max(l.freeAt, start) + int64(float64(size)/l.rate*1e9)
	if credit > 0 {
		arr := start + l.owd + l.standing
		arr = max(arr, l.lastArrive)
		l.lastArrive = arr
		if l.loss > 0 && rng.Float64() < l.loss {
			return 0, false
		}
		return arr, true
	}
	if l.loss > 0 && rng.Float64() < l.loss {
		return 0, false
	}
	arr := l.freeAt + l.owd + l.standing
	if l.jitter > 0 {
		arr += rng.Int64N(l.jitter)
	}
	arr = max(arr, l.lastArrive)
	l.lastArrive = arr
	return arr, true
}

// back carries a small reply in the reverse direction (no bottleneck).
func (l *simLink) back(now int64, rng *rand.Rand) (int64, bool) {
	if !l.up || (l.loss > 0 && rng.Float64() < l.loss) {
		return 0, false
	}
	arr := now + l.owd
	if l.jitter > 0 {
		arr += rng.Int64N(l.jitter)
	}
	arr = max(arr, l.lastBack)
	l.lastBack = arr
	return arr, true
}

type evKind uint8

const (
	evSend evKind = iota
	evArrive
	evProbeArrive
	evReplyArrive
	evProbeTimer
	evTick
	evAction
)

type simEvent struct {
	at   int64
	n    uint64 // insertion order, for determinism
	kind evKind
	path PathID
	seq  uint64
	size int
	rx   Counters
	fn   func()
}

type eventHeap []simEvent

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].n < h[j].n
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type simPath struct {
	cfg  PathConfig
	link *simLink
}

type sim struct {
	t      *testing.T
	now    int64
	events eventHeap
	n      uint64
	rng    *rand.Rand

	s      *Scheduler
	pol    Policy
	links  []*simLink
	tx, rx []Counters
	pseq   []uint32
	// shared, when set, is a hop every path's packets cross first, in
	// the order they were sent (one interface under several paths: a
	// client's, under both of a gateway's uplinks); its delay is its
	// queue and jitter, no propagation.
	shared *simLink

	size    int
	offered float64 // bytes per second
	seq     uint64

	reseq     *Resequencer
	out       []Handle
	seen      []bool // replay filter: sequence numbers received
	maxOut    uint64
	released  uint64
	reordered uint64 // released below an already released sequence number
	dups      uint64

	// Per window measurements, reset by mark().
	sentOn         []uint64 // data bytes sent per path
	deliveredBytes uint64   // unique bytes that reached the receiver
	sentPackets    uint64
	markAt         int64

	onSend func(now int64, set PathSet)
	// onRelease, when set, sees every sequence number the resequencer
	// releases (the closed-loop sender's receiver).
	onRelease func(seq uint64)

	// Reinjection, as the data plane does it (dataplane/reinject.go):
	// the last second of datagrams sent alone on one path, and those sent
	// again when their path enters Scheduler.Failed.
	reinject   bool
	sentLog    []sentRec
	failed     PathSet
	pending    []sentRec // to send again
	firstPath  []PathID  // by sequence number: the path it was first sent on
	reinjected uint64
}

type sentRec struct {
	seq  uint64
	path PathID
	at   int64
}

func newSim(t *testing.T, pol Policy, cfg Config, seed uint64, paths ...simPath) *sim {
	t.Helper()
	rs, err := NewResequencer(ResequencerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m := &sim{t: t, rng: rand.New(rand.NewPCG(seed, 0x5eed)), s: New(cfg), pol: pol, size: 1400, reseq: rs,
		out: make([]Handle, 0, 8192)}
	m.now = int64(time.Second) // the clock does not start at 0
	for _, p := range paths {
		m.links = append(m.links, p.link)
		if err := m.s.AddPath(p.cfg, m.now); err != nil {
			t.Fatal(err)
		}
	}
	m.tx = make([]Counters, len(paths))
	m.rx = make([]Counters, len(paths))
	m.pseq = make([]uint32, len(paths))
	m.sentOn = make([]uint64, len(paths))
	for i := range paths {
		m.at(m.now+int64(i)*ms, evProbeTimer, PathID(i))
	}
	m.at(m.now, evTick, 0)
	m.markAt = m.now
	return m
}

func (m *sim) at(t int64, k evKind, path PathID) {
	m.n++
	heap.Push(&m.events, simEvent{at: t, n: m.n, kind: k, path: path})
}

func (m *sim) push(e simEvent) {
	m.n++
	e.n = m.n
	heap.Push(&m.events, e)
}

// do runs fn at time t (relative to the start of the run).
func (m *sim) do(t int64, fn func()) { m.push(simEvent{at: t, kind: evAction, fn: fn}) }

// startSender offers load (Mbit/s) from now on.
func (m *sim) startSender(loadMbit float64) {
	m.offered = mbit(loadMbit)
	m.at(m.now, evSend, 0)
}

// mark starts a new measurement window.
func (m *sim) mark() {
	for i := range m.sentOn {
		m.sentOn[i] = 0
	}
	m.deliveredBytes, m.sentPackets, m.markAt = 0, 0, m.now
}

// goodput returns the unique delivered rate in the window, Mbit/s.
func (m *sim) goodput() float64 {
	return float64(m.deliveredBytes) * 8 / (float64(m.now-m.markAt) / 1e9) / 1e6
}

func (m *sim) share(id PathID) float64 {
	var tot uint64
	for _, b := range m.sentOn {
		tot += b
	}
	if tot == 0 {
		return 0
	}
	return float64(m.sentOn[id]) / float64(tot)
}

// run processes events until the clock passes end.
func (m *sim) run(d time.Duration) {
	end := m.now + int64(d)
	for len(m.events) > 0 && m.events[0].at <= end {
		e := heap.Pop(&m.events).(simEvent)
		m.now = e.at
		m.handle(e)
	}
	m.now = end
}

func (m *sim) handle(e simEvent) {
	switch e.kind {
	case evAction:
		e.fn()
	case evTick:
		m.s.Tick(m.now)
		if m.reinject {
			m.reinjectFailed()
		}
		m.out = m.reseq.Expire(m.now, m.out[:0])
		m.deliver()
		if (m.now/ms)%50 == 0 {
			spread, jitter, _ := m.s.DelaySpread()
			m.reseq.SetDelays(spread, jitter)
		}
		m.at(m.now+ms, evTick, 0)
	case evSend:
		m.sendData()
		m.at(m.now+int64(float64(m.size)/m.offered*1e9), evSend, 0)
	case evArrive:
		m.rx[e.path].Packets++
		m.rx[e.path].Bytes += uint64(e.size)
		for uint64(len(m.seen)) <= e.seq {
			m.seen = append(m.seen, make([]bool, 65536)...)
		}
		if m.seen[e.seq] {
			m.dups++ // the replay window drops the copy
			return
		}
		m.seen[e.seq] = true
		m.deliveredBytes += uint64(e.size)
		var dropped bool
		m.out, dropped = m.reseq.Push(e.seq, e.path, m.now, Handle(e.seq), m.out[:0])
		if dropped {
			m.t.Fatalf("resequencer dropped seq %d that the replay filter passed", e.seq)
		}
		m.deliver()
	case evProbeTimer:
		id := e.path
		m.pseq[id]++
		// The probe counts in the path's counters both ends, as the
		// data plane counts it.
		m.tx[id].Packets++
		m.tx[id].Bytes += simProbeSize
		if err := m.s.ProbeSent(id, m.pseq[id], m.now, m.tx[id]); err != nil {
			m.t.Fatal(err)
		}
		if arr, ok := m.sendThrough(id, simProbeSize); ok {
			m.push(simEvent{at: arr, kind: evProbeArrive, path: id, seq: uint64(m.pseq[id])})
		}
		m.at(m.now+int64(m.s.ProbeInterval(id)), evProbeTimer, id)
	case evProbeArrive:
		m.rx[e.path].Packets++
		m.rx[e.path].Bytes += simProbeSize
		if arr, ok := m.links[e.path].back(m.now, m.rng); ok {
			m.push(simEvent{at: arr, kind: evReplyArrive, path: e.path, seq: e.seq, rx: m.rx[e.path]})
		}
	case evReplyArrive:
		// A reply may come after its probe was given up: ErrUnknownProbe.
		_ = m.s.ProbeReply(e.path, ProbeReply{Seq: uint32(e.seq), Rx: e.rx}, m.now)
	}
}

// sendData sends the next data packet where the policy decides and
// returns its sequence number.
func (m *sim) sendData() uint64 {
	m.seq++
	m.sentPackets++
	set := m.s.Decide(m.pol, m.size, m.now)
	if m.onSend != nil {
		m.onSend(m.now, set)
	}
	m.sendOn(set, m.seq)
	first, _ := set.First()
	m.firstPath = append(m.firstPath, first) // m.seq starts at 1
	if id, ok := set.First(); ok && set.Len() == 1 && m.reinject {
		m.sentLog = append(m.sentLog, sentRec{seq: m.seq, path: id, at: m.now})
		if old := m.sentLog[0]; m.now-old.at > int64(time.Second) {
			m.sentLog = m.sentLog[1:]
		}
	}
	return m.seq
}

// sendOn sends data packet seq on every path of set.
func (m *sim) sendOn(set PathSet, seq uint64) {
	for c := set; !c.Empty(); {
		id := c.Next()
		m.tx[id].Packets++
		m.tx[id].Bytes += uint64(m.size)
		m.sentOn[id] += uint64(m.size)
		if arr, ok := m.sendThrough(id, m.size); ok {
			m.push(simEvent{at: arr, kind: evArrive, path: id, seq: seq, size: m.size})
		}
	}
}

// sendThrough offers a packet of size to path id at now, through the
// shared hop first when there is one, and returns when it arrives.
// The shared hop is FIFO, so each path's link is offered its packets in
// the order of their times.
func (m *sim) sendThrough(id PathID, size int) (int64, bool) {
	at := m.now
	if m.shared != nil {
		var ok bool
		if at, ok = m.shared.send(m.now, size, m.rng); !ok {
			return 0, false
		}
	}
	return m.links[id].send(at, size, m.rng)
}

// reinjectFailed sends again, at once and in order, what the paths that
// just failed took since Unconfirmed, on the paths the policy picks now.
func (m *sim) reinjectFailed() {
	now := m.s.Failed()
	for set := now &^ m.failed; !set.Empty(); {
		id := set.Next()
		since, ok := m.s.Unconfirmed(id)
		if !ok {
			m.t.Fatalf("no Unconfirmed for failed path %d", id)
		}
		kept := m.sentLog[:0]
		for _, r := range m.sentLog {
			if r.path != id || r.at < since {
				kept = append(kept, r)
				continue
			}
			m.pending = append(m.pending, r)
		}
		m.sentLog = kept
	}
	m.failed = now
	for len(m.pending) > 0 {
		r := m.pending[0]
		m.pending = m.pending[1:]
		if again := m.s.Decide(m.pol, m.size, m.now).Without(r.path); !again.Empty() {
			m.sendOn(again, r.seq)
			m.reinjected++
		}
	}
}

// lost counts the sequence numbers from..upTo first sent on path that
// never arrived.
func (m *sim) lost(path PathID, from, upTo uint64) (n uint64) {
	for s := from; s <= upTo; s++ {
		if m.firstPath[s-1] == path && (s >= uint64(len(m.seen)) || !m.seen[s]) {
			n++
		}
	}
	return n
}

func (m *sim) deliver() {
	for _, h := range m.out {
		s := uint64(h)
		if s < m.maxOut {
			m.reordered++
		} else {
			m.maxOut = s
		}
		m.released++
		if m.onRelease != nil {
			m.onRelease(s)
		}
	}
}

func (m *sim) outOfOrder() float64 {
	if m.released == 0 {
		return 0
	}
	return float64(m.reordered) / float64(m.released)
}

func wlan(id PathID, l *simLink) simPath {
	return simPath{cfg: PathConfig{ID: id, Kind: KindWLAN, Tier: DefaultTier(KindWLAN)}, link: l}
}

func cellular(id PathID, l *simLink) simPath {
	return simPath{cfg: PathConfig{ID: id, Kind: KindCellular, Tier: DefaultTier(KindCellular)}, link: l}
}

// aggregateRun runs aggregate over 50 Mbit/s/15 ms + 20 Mbit/s/40 ms with
// the given loss on the second path and offered load; it returns the
// goodput (Mbit/s) and the second path's share over the measured window.
func aggregateRun(t *testing.T, loss2, load float64) (*sim, float64, float64) {
	m := newSim(t, PolicyAggregate, Config{}, 1,
		wlan(0, newLink(50, 15*time.Millisecond, time.Millisecond, 0)),
		cellular(1, newLink(20, 40*time.Millisecond, 2*time.Millisecond, loss2)))
	m.run(200 * time.Millisecond) // paths verified
	m.startSender(load)
	m.run(3 * time.Second) // estimators converge
	m.mark()
	m.run(10 * time.Second)
	return m, m.goodput(), m.share(1)
}

func TestSimAggregateCapacity(t *testing.T) {
	for _, load := range []float64{70, 80} {
		m, gp, sh := aggregateRun(t, 0, load)
		for id := PathID(0); id < 2; id++ {
			info, _ := m.s.Info(id, m.now)
			t.Logf("load %v: path %d: rate %.1f Mbit/s srtt %v loss %.3f state %v/%v", load, id, info.Rate*8/1e6, info.SRTT, info.Loss, info.State, info.Health)
		}
		t.Logf("load %v Mbit/s: goodput %.1f Mbit/s, share of 20 Mbit/s path %.3f, out of order %.4f%%, reseq %+v",
			load, gp, sh, m.outOfOrder()*100, m.reseq.Stats)
		if gp < 0.9*70 {
			t.Errorf("load %v: goodput %.1f Mbit/s < 90%% of 70 Mbit/s", load, gp)
		}
		if o := m.outOfOrder(); o >= 0.01 {
			t.Errorf("load %v: %.2f%% released out of order, want < 1%%", load, o*100)
		}
	}
}

func TestSimAggregateLossyPath(t *testing.T) {
	_, gpClean, shClean := aggregateRun(t, 0, 70)
	m, gpLossy, shLossy := aggregateRun(t, 0.02, 70)
	t.Logf("loss-free: goodput %.1f share %.3f; 2%% loss: goodput %.1f share %.3f", gpClean, shClean, gpLossy, shLossy)
	if shLossy >= shClean {
		t.Errorf("lossy path share %.3f, loss-free %.3f: want smaller", shLossy, shClean)
	}
	if gpLossy < 50 {
		t.Errorf("goodput with a lossy path %.1f Mbit/s, below the better path alone (50)", gpLossy)
	}
	if o := m.outOfOrder(); o >= 0.01 {
		t.Errorf("%.2f%% released out of order", o*100)
	}
}

// switchTracker records, per packet, which path the sender used, and the
// changes of that path.
type switchTracker struct {
	last     PathID
	started  bool
	switches []struct {
		at int64
		to PathID
	}
}

func (s *switchTracker) see(now int64, set PathSet) {
	id, ok := set.First()
	if !ok {
		return
	}
	if s.started && id != s.last {
		s.switches = append(s.switches, struct {
			at int64
			to PathID
		}{now, id})
	}
	s.last, s.started = id, true
}

// firstSwitchTo returns the first switch to path id at or after t.
func (s *switchTracker) firstSwitchTo(id PathID, t int64) (int64, bool) {
	for _, w := range s.switches {
		if w.at >= t && w.to == id {
			return w.at, true
		}
	}
	return 0, false
}

func TestSimOffloadFailoverAndReturn(t *testing.T) {
	// The detector's target: probes every 20–50 ms while traffic flows.
	// The cut falls at several phases of the probe schedule.
	for _, iv := range []time.Duration{20 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond} {
		for phase := time.Duration(0); phase < iv; phase += iv / 5 {
			t.Run(iv.String()+"/"+phase.String(), func(t *testing.T) { offloadFailover(t, iv, phase) })
		}
	}
}

func offloadFailover(t *testing.T, probeInterval, phase time.Duration) {
	wl := newLink(50, 15*time.Millisecond, time.Millisecond, 0)
	cell := newLink(20, 60*time.Millisecond, 5*time.Millisecond, 0)
	m := newSim(t, PolicyOffload, Config{Detector: DetectorConfig{ActiveInterval: probeInterval}}, 2, wlan(0, wl), cellular(1, cell))
	var tr switchTracker
	m.onSend = tr.see
	m.run(300 * time.Millisecond)
	m.startSender(10)
	m.run(3 * time.Second)
	if sh := m.share(1); sh >= 0.01 {
		t.Errorf("healthy WLAN: %.2f%% of the bytes on cellular, want < 1%%", sh*100)
	}
	if len(tr.switches) != 0 {
		t.Errorf("healthy WLAN: %d path switches, want 0", len(tr.switches))
	}

	// A silent cut: WLAN stays "up" for the host but drops everything.
	m.run(phase)
	cut := m.now
	wl.up = false
	m.run(time.Second)
	moved, ok := tr.firstSwitchTo(1, cut)
	if !ok {
		t.Fatalf("traffic did not move to cellular after the WLAN cut")
	}
	t.Logf("moved to cellular %v after the cut", time.Duration(moved-cut))
	if d := time.Duration(moved - cut); d > 300*time.Millisecond {
		t.Errorf("moved to cellular %v after the cut, want ≤ 300 ms", d)
	}
	if info, _ := m.s.Info(0, m.now); info.State != StateFailed {
		t.Errorf("WLAN state %v after 1 s of silence, want failed", info.State)
	}
	m.mark()
	m.run(time.Second)
	if sh := m.share(1); sh < 0.999 {
		t.Errorf("WLAN down: cellular carries %.3f of the bytes, want all", sh)
	}

	restored := m.now
	wl.up = true
	m.run(3 * time.Second)
	back, ok := tr.firstSwitchTo(0, restored)
	if !ok {
		t.Fatalf("traffic did not return to WLAN after it recovered")
	}
	t.Logf("back on WLAN %v after recovery; switches %d", time.Duration(back-restored), len(tr.switches))
	if d := time.Duration(back - restored); d > time.Second {
		t.Errorf("back on WLAN %v after it recovered, want ≤ 1 s", d)
	}
	if len(tr.switches) != 2 {
		t.Errorf("%d path switches, want 2 (away and back): flapping", len(tr.switches))
	}
	m.mark()
	m.run(time.Second)
	if sh := m.share(1); sh >= 0.01 {
		t.Errorf("after recovery: %.2f%% of the bytes on cellular, want < 1%%", sh*100)
	}
}

func TestSimOffloadLossyWLANDoesNotFlap(t *testing.T) {
	// 2% random loss on WLAN, probes included, must not make traffic
	// wander to cellular.
	m := newSim(t, PolicyOffload, Config{}, 3,
		wlan(0, newLink(50, 15*time.Millisecond, time.Millisecond, 0.02)),
		cellular(1, newLink(20, 60*time.Millisecond, 5*time.Millisecond, 0)))
	var tr switchTracker
	m.onSend = tr.see
	m.run(300 * time.Millisecond)
	m.startSender(10)
	m.mark()
	m.run(20 * time.Second)
	t.Logf("2%% loss on WLAN: %.3f%% of the bytes on cellular, %d switches in 20 s", m.share(1)*100, len(tr.switches))
	if sh := m.share(1); sh >= 0.01 {
		t.Errorf("2%% loss on WLAN: %.2f%% of the bytes on cellular, want < 1%%", sh*100)
	}
	if len(tr.switches) > 2 {
		t.Errorf("%d path switches in 20 s on a lossy but working WLAN: flapping", len(tr.switches))
	}
}

func TestSimOffloadOverflow(t *testing.T) {
	// With overflow on, 60 Mbit/s offered over a 50 Mbit/s WLAN spills
	// the excess to cellular; without, cellular stays idle.
	for _, overflow := range []bool{false, true} {
		m := newSim(t, PolicyOffload, Config{OffloadOverflow: overflow}, 4,
			wlan(0, newLink(50, 15*time.Millisecond, time.Millisecond, 0)),
			cellular(1, newLink(20, 60*time.Millisecond, 5*time.Millisecond, 0)))
		m.run(300 * time.Millisecond)
		m.startSender(60)
		m.run(3 * time.Second)
		m.mark()
		m.run(5 * time.Second)
		gp, sh := m.goodput(), m.share(1)
		t.Logf("overflow %v: goodput %.1f Mbit/s, cellular share %.3f", overflow, gp, sh)
		if !overflow && sh > 0.01 {
			t.Errorf("overflow off: cellular share %.3f, want ~0", sh)
		}
		if overflow && (sh < 0.1 || gp < 55) {
			t.Errorf("overflow on: cellular share %.3f, goodput %.1f: want the excess carried", sh, gp)
		}
	}
}

func TestSimRedundantHalvesNothingButLoss(t *testing.T) {
	m := newSim(t, PolicyRedundant, Config{}, 5,
		wlan(0, newLink(50, 15*time.Millisecond, time.Millisecond, 0.10)),
		cellular(1, newLink(20, 40*time.Millisecond, 2*time.Millisecond, 0.10)))
	m.run(300 * time.Millisecond)
	m.startSender(5)
	m.run(time.Second)
	startSeq := m.seq
	m.run(10 * time.Second)
	// Packets sent in the last 200 ms may still be in flight.
	endSeq := m.seq - uint64(0.2*m.offered/float64(m.size))
	var lost uint64
	for s := startSeq + 1; s <= endSeq; s++ {
		if !m.seen[s] {
			lost++
		}
	}
	loss := float64(lost) / float64(endSeq-startSeq)
	t.Logf("redundant, 10%% loss on each path: %d sent, %d lost, end-to-end loss %.2f%%, copies dropped %d",
		endSeq-startSeq, lost, loss*100, m.dups)
	if loss > 0.02 {
		t.Errorf("end-to-end loss %.2f%%, want ≤ 2%%", loss*100)
	}
	if m.dups == 0 {
		t.Errorf("no duplicate was dropped: packets did not go on both paths")
	}
}

func TestSimSingleFailsOver(t *testing.T) {
	a := newLink(50, 15*time.Millisecond, time.Millisecond, 0)
	b := newLink(20, 40*time.Millisecond, time.Millisecond, 0)
	m := newSim(t, PolicySingle, Config{}, 6,
		simPath{PathConfig{ID: 0, Kind: KindEthernet, Tier: 0}, a},
		simPath{PathConfig{ID: 1, Kind: KindWLAN, Tier: 1}, b})
	var tr switchTracker
	m.onSend = tr.see
	m.run(300 * time.Millisecond)
	m.startSender(10)
	m.mark()
	m.run(2 * time.Second)
	if sh := m.share(1); sh != 0 {
		t.Errorf("single: %.3f of the bytes on the second path while the first is healthy", sh)
	}
	cut := m.now
	a.up = false
	m.run(2 * time.Second)
	moved, ok := tr.firstSwitchTo(1, cut)
	if !ok {
		t.Fatal("single did not fail over")
	}
	t.Logf("failed over %v after the cut", time.Duration(moved-cut))
	if d := time.Duration(moved - cut); d > 300*time.Millisecond {
		t.Errorf("failed over after %v, want ≤ 300 ms", d)
	}
	if len(tr.switches) != 1 {
		t.Errorf("%d switches, want 1", len(tr.switches))
	}
}

func TestSimAggregateBufferbloatedPath(t *testing.T) {
	// Two equal 30 Mbit/s paths, 30 Mbit/s offered; on the second, other
	// traffic keeps 100 ms of queue standing. It must get less than its
	// loss-free, bloat-free share.
	run := func(standing time.Duration) (*sim, float64) {
		b := newLink(30, 20*time.Millisecond, time.Millisecond, 0)
		b.standing = int64(standing)
		m := newSim(t, PolicyAggregate, Config{}, 7,
			wlan(0, newLink(30, 20*time.Millisecond, time.Millisecond, 0)), wlan(1, b))
		m.run(300 * time.Millisecond)
		m.startSender(30)
		m.run(3 * time.Second)
		m.mark()
		m.run(5 * time.Second)
		return m, m.share(1)
	}
	_, clean := run(0)
	m, bloated := run(100 * time.Millisecond)
	t.Logf("share of the second path: %.3f without, %.3f with 100 ms of standing queue; goodput %.1f Mbit/s, out of order %.3f%%",
		clean, bloated, m.goodput(), m.outOfOrder()*100)
	// The quickest path takes a load it can carry alone (the other gets
	// the probing share only where it would arrive no later), so the
	// clean share may itself be near 0.
	if bloated > max(clean/2, 0.02) {
		t.Errorf("bufferbloated path share %.3f, want well below its fair share %.3f (or 2%%)", bloated, clean)
	}
	if gp := m.goodput(); gp < 0.9*30 {
		t.Errorf("goodput %.1f Mbit/s, want ≥ 27", gp)
	}
}

// TestSimReinjection: a silent cut of the WLAN path while both paths
// carry an aggregated flow loses what was in flight on it. With
// reinjection every packet sent on WLAN still arrives (the flow sees a
// delay, not a loss) when the cellular queue holds the reinjected burst,
// and the receiver drops few copies (what had arrived before the cut).
// Without reinjection, the packets in flight stay lost. With a cellular
// queue shorter than the burst, the burst overflows it: this sender keeps
// its pace through the cut (TCP stops when acknowledgements do), and the
// queue drops part of the burst, so only most of it is saved.
func TestSimReinjection(t *testing.T) {
	lostWithout := map[time.Duration]uint64{}
	for _, tc := range []struct {
		reinject   bool
		cellQueue  time.Duration
		maxLostPct float64 // of the least lost without reinjection (the case before)
	}{
		{false, 200 * time.Millisecond, 0}, {true, 200 * time.Millisecond, 0},
		{false, 50 * time.Millisecond, 0}, {true, 50 * time.Millisecond, 60},
	} {
		for _, phase := range []time.Duration{0, 7 * time.Millisecond, 19 * time.Millisecond} {
			wl := newLink(50, 15*time.Millisecond, time.Millisecond, 0)
			cell := newLink(20, 40*time.Millisecond, 2*time.Millisecond, 0)
			cell.queueLimit = int(cell.rate * tc.cellQueue.Seconds())
			m := newSim(t, PolicyAggregate, Config{}, 7, wlan(0, wl), cellular(1, cell))
			m.reinject = tc.reinject
			m.reseq, _ = NewResequencer(ResequencerConfig{MaxWait: 200 * time.Millisecond}) // mif's orderConfig
			m.run(200 * time.Millisecond)
			m.startSender(16) // what cellular alone carries: no loss but the cut's
			m.run(3*time.Second + phase)
			cutSeq := m.seq
			wl.up = false
			m.run(2 * time.Second)
			lost := m.lost(0, cutSeq-500, m.seq-200)
			t.Logf("cellular queue %v, reinjection %v, phase %v: lost %d of those sent on WLAN around the cut, reinjected %d, copies dropped %d, resequencer %+v",
				tc.cellQueue, tc.reinject, phase, lost, m.reinjected, m.dups, m.reseq.Stats)
			if !tc.reinject {
				if lost < 50 {
					t.Errorf("without reinjection %d lost: the cut did not hit traffic in flight", lost)
				}
				if least, ok := lostWithout[tc.cellQueue]; !ok || lost < least {
					lostWithout[tc.cellQueue] = lost
				}
				continue
			}
			if limit := uint64(tc.maxLostPct / 100 * float64(lostWithout[tc.cellQueue])); lost > limit {
				t.Errorf("cellular queue %v, phase %v: %d of WLAN's packets lost with reinjection, want at most %d", tc.cellQueue, phase, lost, limit)
			}
			if m.reinjected == 0 || m.dups > m.reinjected {
				t.Errorf("phase %v: reinjected %d, %d copies dropped", phase, m.reinjected, m.dups)
			}
			// The copies are what WLAN delivered between its last
			// confirmed probe and the cut: at most a probe interval and
			// a round trip of the flow (16 Mbit/s, 1400-byte packets).
			if limit := uint64(16_000_000 / 8 / 1400 / 10); m.dups > limit {
				t.Errorf("phase %v: %d copies dropped, want at most %d (100 ms of WLAN)", phase, m.dups, limit)
			}
		}
	}
}

// TestSimAggregateTokenBucket: two paths shaped by token buckets, as ISPs
// and cellular networks shape (tc tbf 60 and 25 Mbit/s, 256 kB buckets,
// 50 ms queues, no delay to speak of), loaded near their sum. A bucket
// that idled passes its depth at line rate, so a rate sample that caught
// it reads far above the shaper's rate; if the picker drains the virtual
// queues that much too fast, the real queues overflow. Saturated samples
// measure the shaper's rate, and what they measured caps the estimate for
// minRTTWindow after they left the window. Eight seeds: without that
// memory the 25 Mbit/s path ended rated at 33-80 Mbit/s, by bursts read
// while its queue was empty, in five of them (seven once queue-free
// probes made the picker forget its virtual queue), and 96-98.8% of the
// load was delivered; this test ran seed 7 alone, one of the good ones.
func TestSimAggregateTokenBucket(t *testing.T) {
	tbf := func(rateMbit float64) *simLink {
		l := newLink(rateMbit, 2*time.Millisecond, 500*time.Microsecond, 0)
		l.burst = 256 << 10
		return l
	}
	for seed := uint64(1); seed <= 8; seed++ {
		m := newSim(t, PolicyAggregate, Config{}, seed, wlan(0, tbf(60)), cellular(1, tbf(25)))
		m.run(200 * time.Millisecond)
		m.startSender(80)
		m.run(3 * time.Second)
		m.mark()
		m.run(10 * time.Second)
		gp := m.goodput()
		for id, want := range []float64{60, 25} {
			info, _ := m.s.Info(PathID(id), m.now)
			got := info.Rate * 8 / 1e6
			t.Logf("seed %d, path %d: rate %.1f Mbit/s (shaper %v), picker %.1f, srtt %v, loss %.3f, queue drops %d",
				seed, id, got, want, info.PickerRate*8/1e6, info.SRTT, info.Loss, m.links[id].drops)
			if got > 1.3*want || got < 0.5*want {
				t.Errorf("seed %d, path %d: estimated %.1f Mbit/s, the shaper's rate is %v", seed, id, got, want)
			}
		}
		t.Logf("seed %d: goodput %.1f Mbit/s of 80 offered, out of order %.3f%%, reseq %+v", seed, gp, m.outOfOrder()*100, m.reseq.Stats)
		if gp < 0.97*80 {
			t.Errorf("seed %d: goodput %.1f Mbit/s, want ≥ 97%% of the 80 offered", seed, gp)
		}
		if o := m.outOfOrder(); o >= 0.01 {
			t.Errorf("seed %d: %.2f%% released out of order, want < 1%%", seed, o*100)
		}
	}
}
