// INFORMATIONAL (RFC 7296 §1.4), both roles: deletes of Child SAs and IKE
// SAs, liveness checks. MOBIKE's and the MIF extension's INFORMATIONAL
// requests are in mobike.go.

package ike

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

func (s *Session) respondInformational(sa *ikeSA, req []wire.Payload) ([]wire.Payload, func() error) {
	var reply []wire.Payload
	var after func() error
	for _, p := range req {
		d, ok := p.(*wire.Delete)
		if !ok {
			continue
		}
		switch d.Protocol {
		case wire.ProtoIKE:
			after = func() error {
				if sa == s.sa {
					return errGatewayDeleted
				}
				s.oldSAs = slices.DeleteFunc(s.oldSAs, func(o *ikeSA) bool { return o == sa })
				sa.wipe() // the reply to the Delete has gone
				return nil
			}
		case wire.ProtoESP:
			var ours [][]byte
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				if c := s.childByOutSPI(binary.BigEndian.Uint32(spi)); c != nil {
					ours = append(ours, binary.BigEndian.AppendUint32(nil, c.InSPI))
					s.deleteChild(c)
				}
			}
			if len(ours) > 0 {
				reply = append(reply, &wire.Delete{Protocol: wire.ProtoESP, SPIs: ours})
			}
		}
	}
	reply = append(reply, s.mobilityReply(sa, req)...) // COOKIE2 echo (mobike.go)
	if redirect := s.informationalRedirect(sa, req); redirect != nil && after == nil {
		after = redirect // RFC 5685 §5 (redirect.go)
	}
	return reply, after
}

// childByOutSPI finds a Child SA by the SPI the gateway receives on.
func (s *Session) childByOutSPI(spi uint32) *ChildSA { return childByOutSPI(s.child, s.oldKids, spi) }

// childByOutSPI finds, among an IKE SA's current Child SA and the rekeyed
// ones still waiting for their Delete, the one whose outbound SPI (the
// peer's inbound) is spi; nil when none is. Both roles look up a peer's
// Delete this way.
func childByOutSPI(current *ChildSA, old []*ChildSA, spi uint32) *ChildSA {
	if current != nil && current.OutSPI == spi {
		return current
	}
	for _, c := range old {
		if c.OutSPI == spi {
			return c
		}
	}
	return nil
}

// deleteChild removes c. When the current Child SA goes, its successor (if
// a rekey just made one) takes over sending.
func (s *Session) deleteChild(c *ChildSA) {
	s.h.RemoveChild(c)
	c.Wipe()
	if c == s.child {
		s.child = nil
		s.setStatus(func(st *Status) { st.setChild(nil) })
		return
	}
	s.oldKids = slices.DeleteFunc(s.oldKids, func(o *ChildSA) bool { return o == c })
	if s.child != nil && !s.child.switched {
		s.h.SwitchOutbound(s.child)
		s.child.switched = true
	}
}

// deleteIKE deletes the IKE SA sa, which is not the current one, at the
// gateway (one exchange on sa) and forgets it.
func (s *Session) deleteIKE(ctx context.Context, sa *ikeSA) {
	if !slices.Contains(s.oldSAs, sa) {
		s.oldSAs = append(s.oldSAs, sa) // so that the answer finds it
	}
	_, err := s.exchange(ctx, sa, wire.INFORMATIONAL, []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}}, s.cfg.Retransmit)
	s.oldSAs = slices.DeleteFunc(s.oldSAs, func(o *ikeSA) bool { return o == sa })
	sa.wipe()
	if err != nil {
		s.log.Debug("deleting a rekeyed IKE SA", "err", err)
	}
}

// deleteIKE asks c to delete sa, an IKE SA of c that is not its current
// one, and forgets it when the client answers (or cannot be asked).
func (r *Responder) deleteIKE(c *rClient, sa *rSA) {
	forget := func([]wire.Payload) { r.forget(sa) }
	if err := r.requestOn(c, sa, netip.Addr{}, netip.AddrPort{}, wire.INFORMATIONAL, []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}}, forget); err != nil {
		forget(nil)
	}
}

// expireOldChildren deletes the first of c's rekeyed Child SAs whose grace
// has passed, when no other request of the gateway is outstanding.
func (r *Responder) expireOldChildren(c *rClient, now time.Time) {
	if c.pending != nil || c.sa == nil {
		return
	}
	for _, old := range c.oldKids {
		if old.retired.IsZero() || now.Sub(old.retired) < oldChildGrace {
			continue
		}
		r.log.Info("deleting a rekeyed Child SA the client did not delete", "id", c.ID, "in_spi", fmt.Sprintf("%#x", old.InSPI))
		r.deleteOldChild(c, old)
		return
	}
}

// checkLiveness sends c an empty INFORMATIONAL request when nothing came
// from it for the DPD interval, and drops c when the request goes
// unanswered after every retransmission. ESP counts as a sign of life
// when the handler reports it: the counters are read when c is visited
// (at least every half DPD interval, timers.go), so liveness costs the
// data plane nothing per packet, and a client whose ESP stopped is checked
// between one and one and a half DPD intervals after its last packet
// (strongSwan's charon, which looks at its SAs' use every DPD interval:
// between one and two).
func (r *Responder) checkLiveness(c *rClient, now time.Time) {
	if r.cfg.DPD <= 0 || c.sa == nil {
		return
	}
	if a, ok := r.h.(ResponderActivity); ok {
		var n uint64
		if c.child != nil {
			n += a.Received(&c.RemoteClient, c.child)
		}
		for _, k := range c.oldKids {
			n += a.Received(&c.RemoteClient, k)
		}
		at := instantOf(now)
		if n != c.espSeen {
			c.espSeen, c.lastESP = n, at
		}
		c.espRead = at
	}
	last := c.sa.lastHeard
	if c.lastESP.time().After(last) {
		last = c.lastESP.time()
	}
	if c.pending != nil || now.Sub(last) < r.cfg.DPD {
		return
	}
	sa := c.sa
	drops := r.inboxDrop.Load()
	err := r.request(c, wire.INFORMATIONAL, nil, func(reply []wire.Payload) {
		if reply != nil {
			c.dpdExcused = 0
		}
		if reply != nil || c.sa != sa || !r.holds(c) {
			return // answered, or the client moved to a rekeyed IKE SA or left
		}
		// An overloaded gateway drops datagrams from its full queue, the
		// client's answers among them maybe: then the silence proves
		// nothing and the client is checked again, a few times at most
		// (a dead client must go even while the overload lasts). In a
		// run of 100,000 fleet clients it dropped 56,107 live ones, who
		// came back at once and made the overload worse.
		if r.inboxDrop.Load() != drops && c.dpdExcused < maxDPDExcused {
			c.dpdExcused++
			r.log.Debug("no answer to a liveness check while the gateway dropped requests: checking again", "id", c.ID)
			return
		}
		r.log.Info("client is gone: no answer to a liveness check", "id", c.ID, "from", c.Remote,
			"silent_for", r.cfg.Now().Sub(last).Round(time.Second), "addresses", c.Addresses)
		r.dropClient(c)
	})
	if err != nil {
		r.log.Debug("liveness check", "id", c.ID, "err", err)
		return
	}
	c.dpdChecks++
}

// maxDPDExcused bounds the unanswered liveness checks in a row that a
// gateway dropping requests excuses (checkLiveness).
const maxDPDExcused = 3

// sayGoodbye tells c its IKE SA is deleted (one try, no wait: the gateway
// forgets it at once) and drops it with its Child SAs and leases.
func (r *Responder) sayGoodbye(c *rClient) {
	if sa := c.sa; sa != nil {
		if datagrams, err := sealMessage(sa.ikeSA, wire.INFORMATIONAL, sa.nextOut, false, []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}}); err == nil {
			sa.nextOut++
			r.transmit(sa, c.Local, c.Remote, datagrams)
		}
	}
	r.dropClient(c)
}

// childByOutSPI finds a client's Child SA by the SPI the client receives
// on.
func (c *rClient) childByOutSPI(spi uint32) *ChildSA { return childByOutSPI(c.child, c.oldKids, spi) }

func (r *Responder) respondInformational(sa *rSA, req []wire.Payload) ([]wire.Payload, func()) {
	c := sa.client
	var reply []wire.Payload
	var after func()
	for _, p := range req {
		d, ok := p.(*wire.Delete)
		if !ok {
			continue
		}
		switch d.Protocol {
		case wire.ProtoIKE:
			after = func() {
				if c.sa == sa {
					r.log.Info("client disconnected", "id", c.ID, "addresses", c.Addresses)
					r.dropClient(c)
					return
				}
				r.forget(sa) // a rekeyed IKE SA
			}
		case wire.ProtoESP:
			var ours [][]byte
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				k := c.childByOutSPI(binary.BigEndian.Uint32(spi))
				if k == nil {
					continue
				}
				ours = append(ours, binary.BigEndian.AppendUint32(nil, k.InSPI))
				r.h.RemoveChild(&c.RemoteClient, k)
				if k == c.child {
					c.child = nil
					continue
				}
				c.oldKids = slices.DeleteFunc(c.oldKids, func(o *ChildSA) bool { return o == k })
				if c.child != nil && !c.child.switched {
					r.h.SwitchOutbound(&c.RemoteClient, c.child)
					c.child.switched = true
				}
			}
			if len(ours) > 0 {
				reply = append(reply, &wire.Delete{Protocol: wire.ProtoESP, SPIs: ours})
			}
		}
	}
	return reply, after
}
