package mif

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
)

// The prober measures the paths of one peer with ESP probes (docs/mif.md):
// every path sends a probe request at the interval the scheduler asks for,
// the peer answers on the same path with what it received there, and each
// reply or timeout becomes a probeSample for the scheduler's estimators and
// failure detector. Requests from the peer never come here: the data
// plane answers them itself, with the outbound SA paired with the inbound
// one (dataplane.Engine.AddInbound).
//
// Replies arrive on receive workers; they are handed to the prober's
// goroutine through a buffered channel (a full channel drops the reply and
// counts it: a late sample is worth less than a free receive worker), so
// that the per-path state has one owner and needs no lock.

// probeSample is one probe's outcome on one path.
type probeSample struct {
	Path scheduler.PathID
	Seq  uint32
	// Lost is true when no reply came within the timeout; the other
	// fields are then zero.
	Lost bool
	RTT  time.Duration // request sent to reply received, minus the peer's hold time
	// PeerRxPackets and PeerRxBytes are what the peer had received on this
	// path when it answered (its per-source counters): their growth
	// between samples is the path's delivery rate.
	PeerRxPackets, PeerRxBytes uint64
	// PeerArrived is when the request reached the peer, on the peer's
	// clock (ns); 0 when the peer does not tell it.
	PeerArrived int64
	At          time.Time // when the reply arrived (or the timeout struck)
}

// probeSender is the data plane's side of probing (dataplane.Engine).
type probeSender interface {
	SendProbe(out *dataplane.SA, id scheduler.PathID, remote *udp.Endpoint, p dataplane.Probe, size int) error
}

// proberPath is what the prober knows of one path.
type proberPath struct {
	id       scheduler.PathID
	remote   *udp.Endpoint // nil: the path's own remote
	seq      uint32
	nextSend time.Time
	sent     [probeWindow]sentProbe // by seq % probeWindow
}

type sentProbe struct {
	seq     uint32
	at      time.Time
	pending bool
}

// probeWindow bounds the requests of one path awaiting a reply.
const probeWindow = 64

// pathProberConfig sets up a prober.
type pathProberConfig struct {
	// Outbound returns the SA that seals probes now (it changes with
	// rekeys); nil means none yet, and nothing is sent.
	Outbound func() *dataplane.SA
	// Interval returns how often path id wants a probe now; 0 means
	// 100 ms.
	Interval func(id scheduler.PathID) time.Duration
	// Timeout is how long a request waits for its reply; 0 means 1 s.
	Timeout time.Duration
	// Size pads requests to this many bytes (0: unpadded).
	Size int
	// Sample receives every outcome, on the prober's goroutine.
	Sample func(probeSample)
	// Send, when set, sends a request instead of the engine's SendProbe
	// to the path's remote (a path group member counts it, for example).
	Send func(out *dataplane.SA, id scheduler.PathID, p dataplane.Probe, size int) error
	// Sent, when set, is told of every request sent, on the prober's
	// goroutine, right after it left.
	Sent   func(id scheduler.PathID, seq uint32, at time.Time)
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// pathProber probes the paths of one peer.
type pathProber struct {
	cfg     pathProberConfig
	engine  probeSender
	log     *slog.Logger
	replies chan dataplane.ProbeEvent
	calls   chan func()
	paths   map[scheduler.PathID]*proberPath
	epoch   time.Time

	// DroppedReplies counts replies the prober's goroutine was too busy
	// to take.
	DroppedReplies atomic.Uint64
}

// newPathProber returns a prober sending through engine. Run starts it; feed
// the engine's OnProbeReply events to HandleReply.
func newPathProber(engine probeSender, cfg pathProberConfig) *pathProber {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Interval == nil {
		cfg.Interval = func(scheduler.PathID) time.Duration { return 100 * time.Millisecond }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &pathProber{cfg: cfg, engine: engine, log: cfg.Logger,
		replies: make(chan dataplane.ProbeEvent, 256), calls: make(chan func(), 16),
		paths: map[scheduler.PathID]*proberPath{}, epoch: cfg.Now()}
}

// AddPath starts probing path id (towards remote; nil means the path's own
// remote endpoint). The first probe goes at once.
func (p *pathProber) AddPath(id scheduler.PathID, remote *udp.Endpoint) {
	p.do(func() {
		p.paths[id] = &proberPath{id: id, remote: remote, nextSend: p.cfg.Now()}
	})
}

// RemovePath stops probing path id; its pending requests are forgotten.
func (p *pathProber) RemovePath(id scheduler.PathID) {
	p.do(func() { delete(p.paths, id) })
}

// ProbeNow sends the next request of path id at once (a path that looks
// broken gets its verdict sooner).
func (p *pathProber) ProbeNow(id scheduler.PathID) {
	p.do(func() {
		if pp := p.paths[id]; pp != nil {
			pp.nextSend = p.cfg.Now()
		}
	})
}

// do runs f on the prober's goroutine (or queues it until Run starts).
func (p *pathProber) do(f func()) { p.calls <- f }

// HandleReply takes a probe reply the engine received and hands it to the
// prober's goroutine. It runs on a receive worker and never blocks: a full
// channel drops the reply and counts it.
func (p *pathProber) HandleReply(ev *dataplane.ProbeEvent) {
	select {
	case p.replies <- *ev:
	default:
		p.DroppedReplies.Add(1)
	}
}

// Run probes until ctx ends.
func (p *pathProber) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-p.calls:
			f()
		case ev := <-p.replies:
			p.reply(ev)
		case <-timer.C:
		}
		next := p.tick()
		timer.Reset(max(next.Sub(p.cfg.Now()), 0))
	}
}

// reply matches a reply with its request and reports the sample.
func (p *pathProber) reply(ev dataplane.ProbeEvent) {
	pp := p.paths[scheduler.PathID(ev.Probe.PathID)]
	if pp == nil {
		return
	}
	s := &pp.sent[ev.Probe.Seq%probeWindow]
	if !s.pending || s.seq != ev.Probe.Seq || ev.Probe.Timestamp != s.at.Sub(p.epoch).Nanoseconds() {
		return // late (already counted lost), duplicated or forged in an old SA: ignore
	}
	s.pending = false
	now := p.cfg.Now()
	rtt := now.Sub(s.at) - time.Duration(ev.Probe.HoldMicros)*time.Microsecond
	if p.cfg.Sample != nil {
		p.cfg.Sample(probeSample{Path: pp.id, Seq: ev.Probe.Seq, RTT: max(rtt, 0),
			PeerRxPackets: ev.Probe.RxPackets, PeerRxBytes: ev.Probe.RxBytes, PeerArrived: ev.Probe.ArrivedAt, At: now})
	}
}

// tick sends what is due, reports timeouts and returns when it next has
// something to do.
func (p *pathProber) tick() time.Time {
	now := p.cfg.Now()
	next := now.Add(time.Second)
	for _, pp := range p.paths {
		for i := range pp.sent {
			s := &pp.sent[i]
			if !s.pending {
				continue
			}
			if deadline := s.at.Add(p.cfg.Timeout); !now.Before(deadline) {
				s.pending = false
				if p.cfg.Sample != nil {
					p.cfg.Sample(probeSample{Path: pp.id, Seq: s.seq, Lost: true, At: now})
				}
			} else if deadline.Before(next) {
				next = deadline
			}
		}
		if !now.Before(pp.nextSend) {
			p.send(pp, now)
			interval := p.cfg.Interval(pp.id)
			if interval <= 0 {
				interval = 100 * time.Millisecond
			}
			pp.nextSend = now.Add(interval)
		}
		if pp.nextSend.Before(next) {
			next = pp.nextSend
		}
	}
	return next
}

func (p *pathProber) send(pp *proberPath, now time.Time) {
	out := p.cfg.Outbound()
	if out == nil {
		return
	}
	pp.seq++
	s := &pp.sent[pp.seq%probeWindow]
	if s.pending && p.cfg.Sample != nil {
		// The window wrapped over an unanswered request: it is lost.
		p.cfg.Sample(probeSample{Path: pp.id, Seq: s.seq, Lost: true, At: now})
	}
	*s = sentProbe{seq: pp.seq, at: now, pending: true}
	req := dataplane.Probe{Kind: dataplane.ProbeRequest, PathID: uint16(pp.id), Seq: pp.seq,
		Timestamp: now.Sub(p.epoch).Nanoseconds()}
	var err error
	if p.cfg.Send != nil {
		err = p.cfg.Send(out, pp.id, req, p.cfg.Size)
	} else {
		err = p.engine.SendProbe(out, pp.id, pp.remote, req, p.cfg.Size)
	}
	if err != nil {
		p.log.Debug("sending probe", "path", pp.id, "err", err)
		return
	}
	if p.cfg.Sent != nil {
		p.cfg.Sent(pp.id, pp.seq, now)
	}
}
