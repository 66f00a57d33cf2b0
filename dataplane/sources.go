package dataplane

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
)

// maxSources is how many (path, source address) pairs an inbound SA counts
// separately: the paths of one peer. Packets from further sources are
// counted only in the SA's overflow counter.
const maxSources = 8

// sourceKey is where an inbound SA's packets came from: the local path
// (socket) and the peer's address on it. A client's paths differ by
// socket, a gateway's client's paths by the client's address.
type sourceKey struct {
	path scheduler.PathID
	from netip.AddrPort
}

type sourceSlot struct {
	key            atomic.Pointer[sourceKey]
	packets, bytes atomic.Uint64
}

// sourceCounters count an inbound SA's packets per source. Receive
// workers of different paths update them at once: a slot is claimed with a
// compare-and-swap of its key, and only a new source allocates (its key).
// The first inlineSources slots are the SA's own; the others are made
// (one compare-and-swap) when a third source comes: most of a gateway's
// clients have one path, and the full set would be some 140 bytes more
// per client.
type sourceCounters struct {
	first    [inlineSources]sourceSlot
	more     atomic.Pointer[[maxSources - inlineSources]sourceSlot]
	overflow atomic.Uint64
}

// inlineSources is how many sources an inbound SA counts without an
// allocation: one path, or a client's two during a handover.
const inlineSources = 2

// at returns slot i (below maxSources); nil for one beyond the first
// when they were never made and grow is false.
func (c *sourceCounters) at(i int, grow bool) *sourceSlot {
	if i < inlineSources {
		return &c.first[i]
	}
	m := c.more.Load()
	if m == nil {
		if !grow {
			return nil
		}
		c.more.CompareAndSwap(nil, new([maxSources - inlineSources]sourceSlot))
		m = c.more.Load() // ours or the one another worker made first
	}
	return &m[i-inlineSources]
}

// slot returns the slot counting (path, from) and its index, claiming a
// free one for a new source; nil and -1 when all are taken by others.
func (c *sourceCounters) slot(path scheduler.PathID, from netip.AddrPort) (*sourceSlot, int) {
	for i := range maxSources {
		s := c.at(i, true)
		k := s.key.Load()
		if k == nil {
			if s.key.CompareAndSwap(nil, &sourceKey{path, from}) {
				return s, i
			}
			k = s.key.Load() // another worker took it: check whose
		}
		if k.path == path && k.from == from {
			return s, i
		}
	}
	return nil, -1
}

// count counts one packet and returns the index of its source (what the
// resequencer calls its path), maxSources for a source beyond the slots.
func (c *sourceCounters) count(path scheduler.PathID, from netip.AddrPort, bytes int) scheduler.PathID {
	s, i := c.slot(path, from)
	if s == nil {
		c.overflow.Add(1)
		return maxSources
	}
	s.packets.Add(1)
	s.bytes.Add(uint64(bytes))
	return scheduler.PathID(i)
}

// all yields the slots that count a source.
func (c *sourceCounters) all(yield func(*sourceKey, *sourceSlot) bool) {
	for i := range maxSources {
		s := c.at(i, false)
		if s == nil {
			return
		}
		if k := s.key.Load(); k != nil && !yield(k, s) {
			return
		}
	}
}

func (c *sourceCounters) get(path scheduler.PathID, from netip.AddrPort) SourceStats {
	for k, s := range c.all {
		if k.path == path && k.from == from {
			return SourceStats{Path: path, From: from, Packets: s.packets.Load(), Bytes: s.bytes.Load()}
		}
	}
	return SourceStats{Path: path, From: from}
}

// SourceStats is what an inbound SA received from one source on one path:
// ESP packets that opened (data, probes and dummies) and their ESP bytes.
type SourceStats struct {
	Path    scheduler.PathID
	From    netip.AddrPort
	Packets uint64
	Bytes   uint64
}

// InboundSources returns the per-source counters of the inbound SA spi.
func (e *Engine) InboundSources(spi uint32) []SourceStats {
	in := e.dataEntry(spi)
	if in == nil {
		return nil
	}
	var out []SourceStats
	for k, s := range in.sources.all {
		out = append(out, SourceStats{Path: k.path, From: k.from, Packets: s.packets.Load(), Bytes: s.bytes.Load()})
	}
	return out
}

// handleDummy consumes a next-header-59 packet: a probe request is
// answered here, with the SA's pair, a reply goes to OnProbeReply, and
// anything else is a dummy (RFC 4303 §2.6, e.g. traffic flow
// confidentiality padding) and only counted. Requests are answered on the
// receive worker so that a probe's round trip measures the path, not the
// conductor's scheduling.
func (e *Engine) handleDummy(in *inboundSA, payload []byte, p *Path, from netip.AddrPort) {
	probe, err := parseProbe(payload)
	switch {
	case err != nil:
		e.Stats.Dummies.Add(1)
	case probe.Kind == ProbeRequest:
		if in.pair == nil {
			e.Stats.ProbesUnanswered.Add(1)
			return
		}
		if err := e.answerProbe(in.pair, probe, p, from, in.sources.get(p.ID, from)); err != nil {
			e.Stats.ProbesUnanswered.Add(1)
			e.log.Debug("answering a probe", "path", p.ID, "from", from, "err", err)
			return
		}
		e.Stats.Probes.Add(1)
	case e.cfg.OnProbeReply == nil:
		e.Stats.Dummies.Add(1)
	default:
		e.Stats.Probes.Add(1)
		ev := ProbeEvent{Probe: probe, SPI: in.sa.SPI(), Path: p, From: from, Received: in.sources.get(p.ID, from)}
		e.cfg.OnProbeReply(&ev)
	}
}

type probeBuf struct{ b []byte }

var probeBufs = sync.Pool{New: func() any { return &probeBuf{b: make([]byte, 0, Headroom+256+Tailroom)} }}

// answerProbe answers the probe request req with a reply sealed with out
// (the SA paired with the one it arrived in) carrying what that SA
// received on path p from the request's source, sent back on the same path
// to where the request came from: the path under test is the one the
// request took, whatever address the peer has there now (a path that
// failed and comes back must be answered before it is used again). The
// reply is not padded: its 48-byte payload exceeds the smallest request's
// 20 by 28 bytes, so an authenticated peer that forges its outer source
// gains at most that per request. It carries when the request arrived, on
// this side's clock, so that the requester can tell a queue on its way
// out from one on the way back.
func (e *Engine) answerProbe(out *SA, req Probe, p *Path, from netip.AddrPort, received SourceStats) error {
	r := req
	r.Kind = ProbeReply
	r.RxPackets, r.RxBytes = received.Packets, received.Bytes
	r.HoldMicros = 0 // answered on the receive worker: no measurable hold
	r.ArrivedAt = max(scheduler.Now(), 1)
	_, err := e.sendProbe(out, p, from, r, 0)
	return err
}

// SendProbe seals p, padded to size bytes, with the outbound SA out and
// sends it on path id to remote (nil: the path's Remote). It is not for
// the per-packet path: it takes a lock and one system call.
func (e *Engine) SendProbe(out *SA, id scheduler.PathID, remote *udp.Endpoint, p Probe, size int) error {
	_, err := e.sendProbeOn(out, id, remote, p, size)
	return err
}

// SendGroupProbe is SendProbe through member m of group g, counted in the
// member's sent counters like the data it carries (the peer's per-source
// counters, echoed in replies, count probes too).
func (e *Engine) SendGroupProbe(out *SA, g *PathGroup, m GroupMember, p Probe, size int) error {
	n, err := e.sendProbeOn(out, m.Path, m.Remote, p, size)
	if err == nil {
		g.countTx(m, n)
	}
	return err
}

// sendProbeOn is sendProbe on path id to remote (nil: the path's Remote).
func (e *Engine) sendProbeOn(out *SA, id scheduler.PathID, remote *udp.Endpoint, p Probe, size int) (int, error) {
	path := e.paths.Load().get(id)
	if path == nil {
		return 0, fmt.Errorf("sending probe: no path %d", id)
	}
	if remote == nil {
		remote = path.Remote
	}
	return e.sendProbe(out, path, remote.AddrPort(), p, size)
}

// sendProbe seals p, padded to size bytes, with out and sends it on path
// to to; it returns the datagram's size.
func (e *Engine) sendProbe(out *SA, path *Path, to netip.AddrPort, p Probe, size int) (int, error) {
	id := path.ID
	// A buffer of the pool per probe: no lock is held across the send,
	// so probes of many peers (a gateway's) never queue behind one socket.
	pb := probeBufs.Get().(*probeBuf)
	defer probeBufs.Put(pb)
	b, err := appendProbe(append(pb.b[:0], make([]byte, Headroom)...), p, size)
	if err != nil {
		return 0, fmt.Errorf("sending probe: %w", err)
	}
	n := len(b) - Headroom
	b = append(b, make([]byte, Tailroom)...)
	pb.b = b
	if out.ProbeSPI() != 0 {
		if out = out.ProbeSA(); out == nil { // outside the data's sequence space (SetProbeSA)
			return 0, fmt.Errorf("sending probe on path %d: its probe SA was wiped", id)
		}
	}
	pkt, err := out.Seal(b, n, nextHeaderDummy)
	if err != nil {
		return 0, fmt.Errorf("sending probe on path %d: %w", id, err)
	}
	if err := path.Conn.WriteTo(pkt, to); err != nil {
		return 0, fmt.Errorf("sending probe on path %d: %w", id, err)
	}
	path.Stats.TxPackets.Add(1)
	path.Stats.TxBytes.Add(uint64(len(pkt)))
	return len(pkt), nil
}
