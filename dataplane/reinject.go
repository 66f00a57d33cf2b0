package dataplane

import (
	"cmp"
	"slices"
	"sync"

	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
)

// Reinjection: when a path fails silently, the datagrams it took in the
// last round trip before the failure was seen are lost with it, and the
// flows they belonged to would wait for their own retransmission timers
// (hundreds of milliseconds, and a collapsed congestion window). Each
// outbound worker therefore keeps copies of the last sentRingSlots
// datagrams it sent alone on one member of a group that keeps them
// (PathGroup.KeepSent); when the conductor declares a member failed,
// Engine.Reinject sends the copies sent on it since the last moment the
// peer confirmed, in their order, on the members the group's picker
// chooses now. They are the same sealed packets (same SA, same sequence
// numbers): the peer's replay window drops the copies of what did arrive
// (DropReplayed) and its resequencer puts the rest back in place, so the
// flows see a delay instead of a loss.
//
// The ring is the worker's: it writes to it with its lock taken once per
// batch (never per packet, and uncontended but for a Reinject), copying
// each datagram (a memcpy of at most sentSlotSize bytes next to its
// encryption). Datagrams sent on several members at once (the redundant
// policy) are not kept: they have their copies already.

const (
	// sentRingSlots is how many datagrams a worker keeps: about 0.3 s of a
	// 100 Mbit/s flow of 1400-byte packets, more than a failure takes to
	// detect plus a round trip on the paths mifsec is built for.
	sentRingSlots = 2048
	// sentSlotSize bounds the datagrams kept: a TUN MTU up to about 1900
	// bytes. Larger datagrams (jumbo MTUs) are not kept.
	sentSlotSize = 2048
)

// sentRing is one outbound worker's copies of its recent datagrams. The
// data is allocated when the first datagram is kept, so engines whose
// groups keep nothing (a gateway's single-path clients) pay nothing.
type sentRing struct {
	mu   sync.Mutex
	data []byte     // sentRingSlots × sentSlotSize
	meta []sentMeta // sentRingSlots
	next uint64     // datagrams kept so far; slot next%sentRingSlots is the oldest
}

type sentMeta struct {
	group  *PathGroup
	member GroupMember
	at     int64 // scheduler.Now() of the batch it went out in
	size   int32 // 0: slot empty
}

// keep copies pkt, sent to member m of g at now. The caller holds r.mu.
func (r *sentRing) keep(g *PathGroup, m GroupMember, pkt []byte, now int64) {
	if len(pkt) > sentSlotSize {
		return
	}
	if r.data == nil {
		r.data, r.meta = make([]byte, sentRingSlots*sentSlotSize), make([]sentMeta, sentRingSlots)
	}
	i := r.next % sentRingSlots
	copy(r.data[i*sentSlotSize:], pkt)
	r.meta[i] = sentMeta{group: g, member: m, at: now, size: int32(len(pkt))}
	r.next++
}

// sentCopy is a kept datagram copied out of a ring for reinjection.
type sentCopy struct {
	at  int64
	pkt []byte
}

// collect appends copies of the datagrams sent to member m of g at or
// after since, oldest first, and forgets them: a datagram is reinjected
// at most once.
func (r *sentRing) collect(g *PathGroup, m GroupMember, since int64, out []sentCopy) []sentCopy {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.meta == nil {
		return out
	}
	start := r.next - min(r.next, sentRingSlots)
	for n := start; n < r.next; n++ {
		i := n % sentRingSlots
		md := &r.meta[i]
		if md.size == 0 || md.group != g || md.member != m || md.at < since {
			continue
		}
		out = append(out, sentCopy{at: md.at, pkt: slices.Clone(r.data[i*sentSlotSize : i*sentSlotSize+uint64(md.size)])})
		md.size = 0
	}
	return out
}

// forget drops every kept datagram of group g (the group is going away).
func (r *sentRing) forget(g *PathGroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.meta {
		if r.meta[i].group == g {
			r.meta[i] = sentMeta{}
		}
	}
}

// KeepSent makes the engine keep copies of what this group sends alone on
// one member, for Engine.Reinject; off by default.
func (g *PathGroup) KeepSent(on bool) { g.keep.Store(on) }

// Reinject sends again, at once, on the members g's picker chooses now,
// the datagrams sent alone to member failed at or after since
// (scheduler.Now clock) that the workers still keep, oldest first, and
// returns how many left. The caller has already made the picker stop
// choosing failed; a datagram for which it has nothing else is not
// resent. Each datagram is reinjected at most once.
func (e *Engine) Reinject(g *PathGroup, failed GroupMember, since int64) int {
	var copies []sentCopy
	for _, r := range e.sentRings() {
		copies = r.collect(g, failed, since, copies)
	}
	if len(copies) == 0 {
		return 0
	}
	// Each worker's copies are in order; a flow's packets all come from
	// one worker's queue, so ordering by send time keeps every flow in
	// sequence order.
	slices.SortStableFunc(copies, func(a, b sentCopy) int { return cmp.Compare(a.at, b.at) })

	paths, st := e.paths.Load(), g.state.Load()
	senders := map[scheduler.PathID]*udp.Sender{}
	for _, c := range copies {
		for set := st.choose(len(c.pkt)); !set.Empty(); {
			m := st.members[set.Next()]
			p := paths.get(m.Path)
			if m == failed || p == nil {
				continue
			}
			snd := senders[m.Path]
			if snd == nil {
				snd = p.Conn.NewSender(len(copies))
				senders[m.Path] = snd
			}
			snd.Add(c.pkt, remoteOf(m, p))
		}
	}
	sent := 0
	for id, snd := range senders {
		queued := uint64(snd.Len())
		before := snd.Errors
		snd.Flush()
		ok := queued - min(queued, snd.Errors-before)
		e.Stats.SendErrors.Add(queued - ok)
		paths.get(id).Stats.TxPackets.Add(ok)
		sent += int(ok)
	}
	e.Stats.Reinjected.Add(uint64(sent))
	return sent
}

// ForgetSent drops the copies kept for g: call it when the group's peer is
// gone, so that its datagrams do not stay in memory.
func (e *Engine) ForgetSent(g *PathGroup) {
	for _, r := range e.sentRings() {
		r.forget(g)
	}
}

// sentRings returns the outbound workers' rings.
func (e *Engine) sentRings() []*sentRing {
	e.ringMu.Lock()
	defer e.ringMu.Unlock()
	return slices.Clone(e.rings)
}
