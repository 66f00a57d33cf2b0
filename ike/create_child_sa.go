// CREATE_CHILD_SA (RFC 7296 §1.3), both roles: rekeying Child SAs and IKE
// SAs, started by lifetime or volume, answered, and simultaneous rekeys
// settled (§2.8.1, §2.8.2).

package ike

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// respondChildRekey answers the gateway's rekey of the Child SA.
func (s *Session) respondChildRekey(sa *ikeSA, rekey *wire.Notify, req []wire.Payload) ([]wire.Payload, func() error) {
	if rekey.Protocol != wire.ProtoESP || len(rekey.SPI) != 4 {
		return []wire.Payload{&wire.Notify{NotifyType: wire.INVALID_SYNTAX}}, nil
	}
	old := s.childByOutSPI(binary.BigEndian.Uint32(rekey.SPI))
	if old == nil {
		return []wire.Payload{&wire.Notify{Protocol: wire.ProtoESP, SPI: rekey.SPI, NotifyType: wire.CHILD_SA_NOT_FOUND}}, nil
	}
	if s.rekeying == rekeyingIKE || old != s.child {
		// Not while our rekey of the IKE SA is outstanding, nor for an
		// SA being deleted (RFC 7296 §2.25.1): the gateway retries later.
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	reply, child, fail := answerChildRekey(sa, s.cfg.ESP, req, old, s.mob.mif, s.cfg.Now(), randomESPSPI)
	if fail != nil {
		return []wire.Payload{fail}, nil
	}
	if err := s.h.InstallChild(child); err != nil {
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	after := func() error {
		// Send on the new SA once the gateway deletes the old one.
		old.retired = s.cfg.Now()
		s.oldKids = append(s.oldKids, old)
		s.child = child
		s.setStatus(func(st *Status) { st.ChildRekeys++; st.setChild(child) })
		s.log.Info("the gateway rekeyed the Child SA", "in_spi", fmt.Sprintf("%#x", child.InSPI), "out_spi", fmt.Sprintf("%#x", child.OutSPI),
			"old_in_spi", fmt.Sprintf("%#x", old.InSPI))
		return nil
	}
	return reply, after
}

// answerChildRekey is the responder's half of a CREATE_CHILD_SA that
// rekeys the Child SA old (RFC 7296 §2.8), with PFS when the chosen
// proposal has a DH group. It returns the response and the new Child SA,
// or the error notification to answer with. The selectors stay those of
// old, whatever the request says: neither side widens them by rekeying.
// drawSPI draws the new inbound SPIs.
func answerChildRekey(sa *ikeSA, specs []ProposalSpec, req []wire.Payload, old *ChildSA, mif bool, now time.Time, drawSPI func() uint32) ([]wire.Payload, *ChildSA, *wire.Notify) {
	fail := func(t wire.NotifyType, data []byte) ([]wire.Payload, *ChildSA, *wire.Notify) {
		return nil, nil, &wire.Notify{NotifyType: t, Data: data}
	}
	saP, ni, ke := wire.Find[*wire.SA](req), wire.Find[*wire.Nonce](req), wire.Find[*wire.KE](req)
	tsi, tsr := wire.FindTS(req, false), wire.FindTS(req, true)
	if saP == nil || ni == nil || tsi == nil || tsr == nil || checkNonce(sa.suite.PRF, ni.Data) != nil {
		return fail(wire.INVALID_SYNTAX, nil)
	}
	keGroup := uint16(0)
	if ke != nil {
		keGroup = ke.Group
	}
	chosen, esp, ok := selectESP(saP.Proposals, specs, keGroup)
	if !ok {
		return fail(wire.NO_PROPOSAL_CHOSEN, nil)
	}
	nr := nonce()
	var shared []byte
	var kePayload *wire.KE
	if esp.dh != 0 {
		if ke == nil || ke.Group != esp.dh {
			return fail(wire.INVALID_KE_PAYLOAD, binary.BigEndian.AppendUint16(nil, esp.dh))
		}
		kex, err := NewKeyExchange(esp.dh)
		if err != nil {
			return fail(wire.NO_PROPOSAL_CHOSEN, nil)
		}
		if shared, err = kex.SharedSecret(ke.Data); err != nil {
			return fail(wire.INVALID_SYNTAX, nil)
		}
		kePayload = &wire.KE{Group: esp.dh, Data: kex.Public()}
	}
	inSPI := drawSPI()
	chosen.SPI = binary.BigEndian.AppendUint32(nil, inSPI)
	theirs, probed := peerProbeSPI(req)
	probeSPI, probeAnswer := offerProbeSPI(mif && probed, drawSPI)
	// The peer initiated this exchange: its direction's key comes first.
	km, err := childKeys(sa, esp, shared, ni.Data, nr, probeSPI != 0)
	if err != nil {
		return fail(wire.NO_PROPOSAL_CHOSEN, nil)
	}
	child := &ChildSA{InSPI: inSPI, OutSPI: esp.spi, Algorithm: esp.alg, InKey: km.iToR, OutKey: km.rToI, ESN: esp.esn,
		LocalTS: old.LocalTS, RemoteTS: old.RemoteTS, Created: now,
		rekeyOf: old.InSPI, nonces: [2][]byte{slices.Clone(ni.Data), nr}, byPeer: true}
	child.withProbeSA(probeSPI, theirs, km, false)
	// The mode stays that of old: a rekey does not switch to transport.
	var mode []wire.Payload
	child.Transport, mode = answerTransport(req, old.Transport, old.LocalTS, old.RemoteTS)
	reply := append([]wire.Payload{&wire.SA{Proposals: []wire.Proposal{chosen}}, &wire.Nonce{Data: nr}}, probeAnswer...)
	reply = append(reply, mode...)
	if kePayload != nil {
		reply = append(reply, kePayload)
	}
	// The peer initiated: its TSi is its side, our remote.
	reply = append(reply, &wire.TS{Selectors: selectorsFromPrefixes(old.RemoteTS)}, &wire.TS{Responder: true, Selectors: selectorsFromPrefixes(old.LocalTS)})
	return reply, child, nil
}

// respondIKERekey answers the gateway's rekey of the IKE SA (RFC 7296
// §2.18): a new IKE SA whose initiator is the gateway.
func (s *Session) respondIKERekey(sa *ikeSA, req []wire.Payload) ([]wire.Payload, func() error) {
	if s.rekeying == rekeyingChild || sa != s.sa {
		// Not while our Child SA rekey is outstanding, nor for an IKE SA
		// already replaced: the gateway retries later.
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	reply, next, fail := answerIKERekey(sa, s.cfg.IKE, req, s.cfg.Now())
	if fail != nil {
		return []wire.Payload{fail}, nil
	}
	return reply, func() error {
		s.oldSAs = append(s.oldSAs, sa)
		s.sa = next
		s.setStatus(func(st *Status) {
			st.IKERekeys++
			st.IKESPIi, st.IKESPIr = fmt.Sprintf("%016x", next.spiI), fmt.Sprintf("%016x", next.spiR)
		})
		return nil
	}
}

// answerIKERekey is the responder's half of a CREATE_CHILD_SA that rekeys
// the IKE SA sa (RFC 7296 §2.18). It returns the response and the new IKE
// SA (whose initiator is the peer), or the error notification to answer
// with.
func answerIKERekey(sa *ikeSA, specs []ProposalSpec, req []wire.Payload, now time.Time) ([]wire.Payload, *ikeSA, *wire.Notify) {
	fail := func(t wire.NotifyType, data []byte) ([]wire.Payload, *ikeSA, *wire.Notify) {
		return nil, nil, &wire.Notify{NotifyType: t, Data: data}
	}
	saP, ni, ke := wire.Find[*wire.SA](req), wire.Find[*wire.Nonce](req), wire.Find[*wire.KE](req)
	if saP == nil || ni == nil || ke == nil {
		return fail(wire.INVALID_SYNTAX, nil)
	}
	sel, ok := SelectProposalWith(saP.Proposals, specs, SelectOptions{PreferDH: ke.Group})
	if !ok {
		return fail(wire.NO_PROPOSAL_CHOSEN, nil)
	}
	chosen, suite := sel.Proposal, sel.Suite
	if len(sel.PeerSPI) != 8 || checkNonce(suite.PRF, ni.Data) != nil {
		return fail(wire.INVALID_SYNTAX, nil)
	}
	if ke.Group != suite.DHGroup {
		return fail(wire.INVALID_KE_PAYLOAD, binary.BigEndian.AppendUint16(nil, suite.DHGroup))
	}
	kex, err := NewKeyExchange(suite.DHGroup)
	if err != nil {
		return fail(wire.NO_PROPOSAL_CHOSEN, nil)
	}
	shared, err := kex.SharedSecret(ke.Data)
	if err != nil {
		return fail(wire.INVALID_SYNTAX, nil)
	}
	nr := nonce()
	spiI, spiR := binary.BigEndian.Uint64(sel.PeerSPI), randomSPI()
	keys, err := rekeyIKEKeys(sa.keys, suite, shared, ni.Data, nr, spiI, spiR, false)
	if err != nil {
		return fail(wire.NO_PROPOSAL_CHOSEN, nil)
	}
	next := &ikeSA{spiI: spiI, spiR: spiR, initiator: false, suite: suite, keys: keys, ni: slices.Clone(ni.Data), nr: nr,
		lastHeard: now, created: now, fragOK: sa.fragOK, rekeyOf: sa.id()}
	chosen.SPI = binary.BigEndian.AppendUint64(nil, spiR)
	return []wire.Payload{&wire.SA{Proposals: []wire.Proposal{chosen}}, &wire.Nonce{Data: nr}, &wire.KE{Group: suite.DHGroup, Data: kex.Public()}}, next, nil
}

// rekeyChild replaces the Child SA (RFC 7296 §2.8), with PFS when the ESP
// proposal names a DH group. When the gateway rekeyed the same SA
// meanwhile, the collision is settled as RFC 7296 §2.8.1 says
// (settleChildCollision).
func (s *Session) rekeyChild(ctx context.Context) error {
	old := s.child
	sa := s.sa
	s.rekeying = rekeyingChild
	defer func() { s.rekeying = notRekeying }()
	group := firstDHGroup(s.cfg.ESP)
	for attempt := 0; attempt < 2; attempt++ {
		inSPI := randomESPSPI()
		probeSPI, probeOffer := offerProbeSPI(s.mob.mif, randomESPSPI)
		ni := nonce()
		payloads := []wire.Payload{
			&wire.Notify{Protocol: wire.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, old.InSPI), NotifyType: wire.REKEY_SA},
			&wire.SA{Proposals: offerESP(s.cfg.ESP, inSPI, true)},
			&wire.Nonce{Data: ni},
		}
		payloads = append(payloads, probeOffer...)
		var kex KeyExchange
		if group != 0 {
			var err error
			if kex, err = NewKeyExchange(group); err != nil {
				return err
			}
			payloads = append(payloads, &wire.KE{Group: group, Data: kex.Public()})
		}
		payloads = append(payloads, &wire.TS{Selectors: selectorsFromPrefixes(old.LocalTS)}, &wire.TS{Responder: true, Selectors: selectorsFromPrefixes(old.RemoteTS)})
		payloads = append(payloads, transportRequest(old.Transport)...)
		reply, err := s.exchange(ctx, sa, wire.CREATE_CHILD_SA, payloads, s.cfg.Retransmit)
		if err != nil {
			return err
		}
		if n := wire.FindNotify(reply, wire.INVALID_KE_PAYLOAD); n != nil && len(n.Data) == 2 && attempt == 0 && s.child == old {
			group = binary.BigEndian.Uint16(n.Data)
			continue
		}
		if err := firstError(reply, "CREATE_CHILD_SA"); err != nil {
			// TEMPORARY_FAILURE (the gateway is rekeying too) or another
			// refusal: try again later, unless the gateway's rekey of the
			// same SA went through meanwhile.
			if s.child == old {
				s.log.Info("child rekey refused, retrying later", "err", err)
				old.retryLater(s.cfg.Now())
			}
			return nil
		}
		var shared []byte
		if kex != nil {
			ke := wire.Find[*wire.KE](reply)
			if ke == nil || ke.Group != kex.Group() {
				return errors.New("CREATE_CHILD_SA: the gateway's response lacks the KE for PFS")
			}
			if shared, err = kex.SharedSecret(ke.Data); err != nil {
				return fmt.Errorf("CREATE_CHILD_SA: %w", err)
			}
		}
		nr := wire.Find[*wire.Nonce](reply)
		if nr == nil {
			return errors.New("CREATE_CHILD_SA: the gateway's response lacks a nonce")
		}
		if err := checkNonce(sa.suite.PRF, nr.Data); err != nil {
			return fmt.Errorf("CREATE_CHILD_SA: %w", err)
		}
		child, err := s.childFromReply(sa, reply, inSPI, probeSPI, ni, nr.Data, shared, true, old.LocalTS, old.RemoteTS)
		if err != nil {
			return fmt.Errorf("CREATE_CHILD_SA: %w", err)
		}
		child.rekeyOf, child.nonces = old.InSPI, [2][]byte{ni, slices.Clone(nr.Data)}
		child.Transport = agreedTransport(old.Transport, reply, child)
		if s.child != old {
			return s.settleChildCollision(ctx, sa, old, child)
		}
		if err := s.h.InstallChild(child); err != nil {
			return err
		}
		s.h.SwitchOutbound(child)
		child.switched = true
		s.child = child
		s.setStatus(func(st *Status) { st.ChildRekeys++; st.setChild(child) })
		s.log.Info("rekeyed the Child SA", "in_spi", fmt.Sprintf("%#x", child.InSPI), "out_spi", fmt.Sprintf("%#x", child.OutSPI),
			"old_in_spi", fmt.Sprintf("%#x", old.InSPI))
		return s.deleteRekeyedChild(ctx, sa, old)
	}
	return errors.New("CREATE_CHILD_SA: the gateway refused every DH group")
}

// settleChildCollision ends our rekey of old, which produced ours, when
// the gateway rekeyed old too and we answered (RFC 7296 §2.8.1): of the
// two new SAs, the one whose exchange holds the lowest of the four nonces
// is redundant and is deleted by the side that initiated that exchange;
// the side whose SA survives deletes old.
func (s *Session) settleChildCollision(ctx context.Context, sa *ikeSA, old, ours *ChildSA) error {
	theirs := s.child
	if err := s.h.InstallChild(ours); err != nil {
		return err
	}
	now := s.cfg.Now()
	if theirs == nil || !theirs.replaced(old) || lowestNonceIn(ours.nonces, theirs.nonces) {
		// Ours is redundant: the gateway's SA stays, the gateway deletes
		// old, and ours goes now.
		s.log.Info("simultaneous Child SA rekey: the gateway's new SA stays, deleting ours",
			"in_spi", fmt.Sprintf("%#x", ours.InSPI), "old_in_spi", fmt.Sprintf("%#x", old.InSPI))
		ours.retired = now
		s.oldKids = append(s.oldKids, ours)
		return s.deleteRekeyedChild(ctx, sa, ours)
	}
	// The gateway's SA is redundant: it deletes it; ours sends, and old
	// goes now.
	s.log.Info("simultaneous Child SA rekey: our new SA stays, the gateway deletes its own",
		"in_spi", fmt.Sprintf("%#x", ours.InSPI), "old_in_spi", fmt.Sprintf("%#x", old.InSPI))
	s.h.SwitchOutbound(ours)
	ours.switched = true
	theirs.retired = now
	s.oldKids = append(s.oldKids, theirs)
	s.child = ours
	s.setStatus(func(st *Status) { st.setChild(ours) })
	return s.deleteRekeyedChild(ctx, sa, old)
}

// deleteRekeyedChild deletes old at the gateway and then here. Its
// inbound SA stays until the gateway confirms, so packets in flight on it
// still arrive; a Delete the gateway sends for it meanwhile removes it
// once only.
func (s *Session) deleteRekeyedChild(ctx context.Context, sa *ikeSA, old *ChildSA) error {
	if !slices.Contains(s.oldKids, old) {
		old.retired = s.cfg.Now()
		s.oldKids = append(s.oldKids, old)
	}
	_, err := s.exchange(ctx, sa, wire.INFORMATIONAL,
		[]wire.Payload{&wire.Delete{Protocol: wire.ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, old.InSPI)}}}, s.cfg.Retransmit)
	if slices.Contains(s.oldKids, old) {
		s.h.RemoveChild(old)
		old.Wipe()
		s.oldKids = slices.DeleteFunc(s.oldKids, func(o *ChildSA) bool { return o == old })
	}
	return err
}

// rekeyIKE replaces the IKE SA (RFC 7296 §2.18) and deletes the old one.
// When the gateway rekeyed the same IKE SA meanwhile, the collision is
// settled as RFC 7296 §2.8.2 says: the new IKE SA of the exchange holding
// the lowest nonce is deleted by its initiator, the survivor's initiator
// deletes the old one. Child SAs are not bound to an IKE SA here: they
// stay, under whichever IKE SA survives.
func (s *Session) rekeyIKE(ctx context.Context) error {
	old := s.sa
	s.rekeying = rekeyingIKE
	defer func() { s.rekeying = notRekeying }()
	spiI := randomSPI()
	ni := nonce()
	kex, err := NewKeyExchange(old.suite.DHGroup)
	if err != nil {
		return err
	}
	offered := offerIKE(s.cfg.IKE)
	for i := range offered {
		offered[i].SPI = binary.BigEndian.AppendUint64(nil, spiI)
	}
	reply, err := s.exchange(ctx, old, wire.CREATE_CHILD_SA, []wire.Payload{&wire.SA{Proposals: offered}, &wire.Nonce{Data: ni}, &wire.KE{Group: kex.Group(), Data: kex.Public()}}, s.cfg.Retransmit)
	if err != nil {
		return err
	}
	if err := firstError(reply, "CREATE_CHILD_SA (IKE rekey)"); err != nil {
		if s.sa == old {
			s.log.Info("IKE rekey refused, retrying later", "err", err)
			old.retryLater(s.cfg.Now())
		}
		return nil
	}
	saP, nr, ke := wire.Find[*wire.SA](reply), wire.Find[*wire.Nonce](reply), wire.Find[*wire.KE](reply)
	if saP == nil || nr == nil || ke == nil || len(saP.Proposals) != 1 || len(saP.Proposals[0].SPI) != 8 {
		return errors.New("IKE rekey: the gateway's response lacks SA, Nonce or KE")
	}
	suite, err := acceptIKE(saP.Proposals[0], s.cfg.IKE)
	if err != nil || ke.Group != kex.Group() {
		return fmt.Errorf("IKE rekey: unacceptable answer: %v", err)
	}
	if err := checkNonce(suite.PRF, nr.Data); err != nil {
		return fmt.Errorf("IKE rekey: %w", err)
	}
	shared, err := kex.SharedSecret(ke.Data)
	if err != nil {
		return fmt.Errorf("IKE rekey: %w", err)
	}
	spiR := binary.BigEndian.Uint64(saP.Proposals[0].SPI)
	keys, err := rekeyIKEKeys(old.keys, suite, shared, ni, nr.Data, spiI, spiR, true)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	next := &ikeSA{spiI: spiI, spiR: spiR, initiator: true, suite: suite, keys: keys, ni: ni, nr: slices.Clone(nr.Data),
		lastHeard: now, created: now, fragOK: old.fragOK, rekeyOf: old.id()}
	if theirs := s.sa; theirs != old {
		if !theirs.replaced(old) || lowestNonceIn([2][]byte{next.ni, next.nr}, [2][]byte{theirs.ni, theirs.nr}) {
			// Ours is redundant: the gateway's stays and the gateway
			// deletes old.
			s.log.Info("simultaneous IKE SA rekey: the gateway's new IKE SA stays, deleting ours",
				"spi_i", fmt.Sprintf("%016x", spiI), "spi_r", fmt.Sprintf("%016x", spiR))
			s.deleteIKE(ctx, next)
			return nil
		}
		s.log.Info("simultaneous IKE SA rekey: our new IKE SA stays, the gateway deletes its own",
			"spi_i", fmt.Sprintf("%016x", spiI), "spi_r", fmt.Sprintf("%016x", spiR))
		s.oldSAs = append(s.oldSAs, theirs)
	} else {
		s.oldSAs = append(s.oldSAs, old)
		s.setStatus(func(st *Status) { st.IKERekeys++ })
		s.log.Info("rekeyed the IKE SA", "spi_i", fmt.Sprintf("%016x", spiI), "spi_r", fmt.Sprintf("%016x", spiR))
	}
	s.sa = next
	s.setStatus(func(st *Status) {
		st.IKESPIi, st.IKESPIr = fmt.Sprintf("%016x", spiI), fmt.Sprintf("%016x", spiR)
	})
	s.deleteIKE(ctx, old)
	return nil
}

// rekeyWhenDue starts a rekey of c's Child SA or IKE SA when one is due
// and no other request of the gateway is outstanding.
func (r *Responder) rekeyWhenDue(c *rClient, now time.Time) {
	if c.pending != nil || c.sa == nil {
		return
	}
	if k := c.child; k != nil && k.switched && len(c.oldKids) == 0 &&
		k.rekeyDue(r.cfg.ChildRekey, r.cfg.RekeySequences, r.h, now) {
		r.rekeyChild(c)
		return
	}
	if c.sa.rekeyDue(r.cfg.IKERekey, now) {
		r.rekeyIKE(c)
	}
}

// rekeyChild starts a CREATE_CHILD_SA that replaces c's Child SA (RFC 7296
// §2.8), with PFS when an ESP proposal names a DH group. The new SA
// receives and sends once the client answers; the old one receives until
// the client confirms its deletion.
func (r *Responder) rekeyChild(c *rClient) {
	r.startChildRekey(c, c.child, firstDHGroup(r.cfg.ESP), true)
}

func (r *Responder) startChildRekey(c *rClient, old *ChildSA, group uint16, retryKE bool) {
	sa := c.sa
	inSPI := r.drawInboundSPI()
	probeSPI, probeOffer := offerProbeSPI(c.mob.mif, r.drawInboundSPI)
	ni := nonce()
	payloads := []wire.Payload{
		&wire.Notify{Protocol: wire.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, old.InSPI), NotifyType: wire.REKEY_SA},
		&wire.SA{Proposals: offerESP(r.cfg.ESP, inSPI, true)},
		&wire.Nonce{Data: ni},
	}
	payloads = append(payloads, probeOffer...)
	var kex KeyExchange
	if group != wire.DH_NONE {
		var err error
		if kex, err = r.keys.take(group); err != nil {
			r.log.Warn("rekeying a client's Child SA", "id", c.ID, "err", err)
			return
		}
		payloads = append(payloads, &wire.KE{Group: group, Data: kex.Public()})
	}
	payloads = append(payloads, &wire.TS{Selectors: selectorsFromPrefixes(old.LocalTS)}, &wire.TS{Responder: true, Selectors: selectorsFromPrefixes(old.RemoteTS)})
	payloads = append(payloads, transportRequest(old.Transport)...)
	later := func(why string, args ...any) {
		if c.child != old {
			return // the client's rekey of the same SA went through
		}
		r.log.Info("child rekey failed, retrying later: "+why, append([]any{"id", c.ID}, args...)...)
		old.retryLater(r.cfg.Now())
	}
	err := r.request(c, wire.CREATE_CHILD_SA, payloads, func(reply []wire.Payload) {
		if sa.client != c || !r.holds(c) {
			return // the client went meanwhile
		}
		if reply == nil {
			later("no answer")
			return
		}
		if n := wire.FindNotify(reply, wire.INVALID_KE_PAYLOAD); n != nil && len(n.Data) == 2 && retryKE && c.child == old {
			r.startChildRekey(c, old, binary.BigEndian.Uint16(n.Data), false)
			return
		}
		if err := firstError(reply, "CREATE_CHILD_SA"); err != nil {
			later(err.Error())
			return
		}
		saP, nr := wire.Find[*wire.SA](reply), wire.Find[*wire.Nonce](reply)
		if saP == nil || len(saP.Proposals) != 1 || nr == nil {
			later("the response lacks SA or Nonce")
			return
		}
		if err := checkNonce(sa.suite.PRF, nr.Data); err != nil {
			later(err.Error())
			return
		}
		esp, err := acceptESP(saP.Proposals[0], r.cfg.ESP, true)
		if err != nil {
			later(err.Error())
			return
		}
		var shared []byte
		if esp.dh != wire.DH_NONE {
			ke := wire.Find[*wire.KE](reply)
			if kex == nil || ke == nil || ke.Group != kex.Group() || esp.dh != kex.Group() {
				later("the response lacks the KE for PFS")
				return
			}
			if shared, err = kex.SharedSecret(ke.Data); err != nil {
				later(err.Error())
				return
			}
		}
		theirs, probed := peerProbeSPI(reply)
		km, err := childKeys(sa.ikeSA, esp, shared, ni, nr.Data, probeSPI != 0 && probed)
		if err != nil {
			later(err.Error())
			return
		}
		child := &ChildSA{InSPI: inSPI, OutSPI: esp.spi, Algorithm: esp.alg, InKey: km.rToI, OutKey: km.iToR, ESN: esp.esn,
			LocalTS: old.LocalTS, RemoteTS: old.RemoteTS, Created: r.cfg.Now(),
			rekeyOf: old.InSPI, nonces: [2][]byte{ni, nr.Data}}
		child.withProbeSA(probeSPI, theirs, km, true)
		child.Transport = agreedTransport(old.Transport, reply, child)
		if c.child != old {
			r.settleChildCollision(c, old, child)
			return
		}
		if err := r.h.InstallChild(&c.RemoteClient, child, true); err != nil {
			later(err.Error())
			return
		}
		child.switched = true
		old.retired = r.cfg.Now()
		c.oldKids = append(c.oldKids, old)
		c.child = child
		c.childRekeys++
		r.log.Debug("rekeyed a client's Child SA", "id", c.ID, "in_spi", fmt.Sprintf("%#x", inSPI), "out_spi", fmt.Sprintf("%#x", esp.spi))
		r.deleteOldChild(c, old)
	})
	if err != nil {
		r.log.Debug("rekeying a client's Child SA", "id", c.ID, "err", err)
		return
	}
	c.pending.rekey = rekeyingChild
}

// settleChildCollision ends the gateway's rekey of old, which produced
// ours, when the client rekeyed old too and the gateway answered (RFC
// 7296 §2.8.1): the new SA whose exchange holds the lowest of the four
// nonces is redundant and is deleted by the side that initiated that
// exchange; the side whose SA survives deletes old. Either way exactly
// one new SA pair remains.
func (r *Responder) settleChildCollision(c *rClient, old, ours *ChildSA) {
	theirs := c.child
	now := r.cfg.Now()
	if theirs == nil || !theirs.replaced(old) || lowestNonceIn(ours.nonces, theirs.nonces) {
		// Ours is redundant: the client's SA stays and the client deletes
		// old. Ours receives until the client confirms its deletion.
		r.log.Info("simultaneous Child SA rekey: the client's new SA stays, deleting the gateway's", "id", c.ID,
			"in_spi", fmt.Sprintf("%#x", ours.InSPI))
		if err := r.h.InstallChild(&c.RemoteClient, ours, false); err != nil {
			r.log.Warn("installing a redundant Child SA", "id", c.ID, "err", err)
			return
		}
		ours.retired = now
		c.oldKids = append(c.oldKids, ours)
		r.deleteOldChild(c, ours)
		return
	}
	// The client's SA is redundant: the client deletes it; ours sends,
	// and old goes now.
	r.log.Info("simultaneous Child SA rekey: the gateway's new SA stays, the client deletes its own", "id", c.ID,
		"in_spi", fmt.Sprintf("%#x", ours.InSPI))
	if err := r.h.InstallChild(&c.RemoteClient, ours, true); err != nil {
		r.log.Warn("installing a rekeyed Child SA", "id", c.ID, "err", err)
		return
	}
	ours.switched = true
	theirs.retired = now
	c.oldKids = append(c.oldKids, theirs)
	c.child = ours
	r.deleteOldChild(c, old)
}

// deleteOldChild asks c to delete old, one of c.oldKids, and removes it
// when the client answers (or cannot be asked).
func (r *Responder) deleteOldChild(c *rClient, old *ChildSA) {
	remove := func([]wire.Payload) {
		if slices.Contains(c.oldKids, old) {
			r.h.RemoveChild(&c.RemoteClient, old)
			c.oldKids = slices.DeleteFunc(c.oldKids, func(o *ChildSA) bool { return o == old })
		}
	}
	del := []wire.Payload{&wire.Delete{Protocol: wire.ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, old.InSPI)}}}
	if err := r.request(c, wire.INFORMATIONAL, del, remove); err != nil {
		remove(nil)
	}
}

// rekeyIKE starts a CREATE_CHILD_SA that replaces c's IKE SA (RFC 7296
// §2.18): the gateway initiates the new IKE SA, so the client is its
// responder. Once the client answers, c moves to the new IKE SA with its
// Child SAs and the gateway deletes the old one. When the client rekeyed
// the same IKE SA meanwhile, the new IKE SA of the exchange holding the
// lowest nonce is deleted by its initiator (RFC 7296 §2.8.2).
func (r *Responder) rekeyIKE(c *rClient) {
	old := c.sa
	spiI := randomSPI()
	ni := nonce()
	kex, err := r.keys.take(old.suite.DHGroup)
	if err != nil {
		r.log.Warn("rekeying a client's IKE SA", "id", c.ID, "err", err)
		return
	}
	offered := offerIKE(r.cfg.IKE)
	for i := range offered {
		offered[i].SPI = binary.BigEndian.AppendUint64(nil, spiI)
	}
	later := func(why string) {
		if c.sa == old {
			r.log.Info("IKE rekey failed, retrying later: "+why, "id", c.ID)
			old.retryLater(r.cfg.Now())
		}
	}
	err = r.request(c, wire.CREATE_CHILD_SA, []wire.Payload{&wire.SA{Proposals: offered}, &wire.Nonce{Data: ni}, &wire.KE{Group: kex.Group(), Data: kex.Public()}}, func(reply []wire.Payload) {
		if !r.holds(c) {
			return
		}
		if reply == nil {
			later("no answer")
			return
		}
		if err := firstError(reply, "CREATE_CHILD_SA (IKE rekey)"); err != nil {
			later(err.Error())
			return
		}
		saP, nr, ke := wire.Find[*wire.SA](reply), wire.Find[*wire.Nonce](reply), wire.Find[*wire.KE](reply)
		if saP == nil || nr == nil || ke == nil || len(saP.Proposals) != 1 || len(saP.Proposals[0].SPI) != 8 {
			later("the response lacks SA, Nonce or KE")
			return
		}
		suite, err := acceptIKE(saP.Proposals[0], r.cfg.IKE)
		if err != nil || ke.Group != kex.Group() {
			later(fmt.Sprintf("unacceptable answer: %v", err))
			return
		}
		if err := checkNonce(suite.PRF, nr.Data); err != nil {
			later(err.Error())
		}
		shared, err := kex.SharedSecret(ke.Data)
		if err != nil {
			later(err.Error())
			return
		}
		spiR := binary.BigEndian.Uint64(saP.Proposals[0].SPI)
		keys, err := rekeyIKEKeys(old.keys, suite, shared, ni, nr.Data, spiI, spiR, true)
		if err != nil {
			later(err.Error())
			return
		}
		now := r.cfg.Now()
		next := &rSA{ikeSA: &ikeSA{spiI: spiI, spiR: spiR, initiator: true, suite: suite, keys: keys, ni: ni, nr: nr.Data,
			lastHeard: now, created: now, fragOK: old.fragOK, rekeyOf: old.ikeSA.id()}, from: old.from, local: old.local, natT: old.natT, client: c}
		r.sas[saKey{spiI, spiR}] = next
		r.ownSA(c, next)
		if theirs := c.sa; theirs != old {
			if !theirs.ikeSA.replaced(old.ikeSA) || lowestNonceIn([2][]byte{next.ni, next.nr}, [2][]byte{theirs.ni, theirs.nr}) {
				// Ours is redundant: the client's stays and the client
				// deletes old.
				r.log.Info("simultaneous IKE SA rekey: the client's new IKE SA stays, deleting the gateway's", "id", c.ID)
				r.deleteIKE(c, next)
				return
			}
			// The client's is redundant: the client deletes it.
			r.log.Info("simultaneous IKE SA rekey: the gateway's new IKE SA stays, the client deletes its own", "id", c.ID)
		} else {
			c.ikeRekeys++
			r.log.Debug("rekeyed a client's IKE SA", "id", c.ID, "spi_i", fmt.Sprintf("%016x", spiI), "spi_r", fmt.Sprintf("%016x", spiR))
		}
		c.sa = next
		c.IKESPIi, c.IKESPIr = spiI, spiR
		r.deleteIKE(c, old)
	})
	if err != nil {
		r.log.Debug("rekeying a client's IKE SA", "id", c.ID, "err", err)
		return
	}
	c.pending.rekey = rekeyingIKE
}

// respondChildRekey answers a client's rekey of its Child SA. The new SA
// receives at once and sends once the client deletes the old one.
func (r *Responder) respondChildRekey(sa *rSA, rekey *wire.Notify, req []wire.Payload) ([]wire.Payload, func()) {
	c := sa.client
	if rekey.Protocol != wire.ProtoESP || len(rekey.SPI) != 4 {
		return []wire.Payload{&wire.Notify{NotifyType: wire.INVALID_SYNTAX}}, nil
	}
	old := c.childByOutSPI(binary.BigEndian.Uint32(rekey.SPI))
	if old == nil {
		return []wire.Payload{&wire.Notify{Protocol: wire.ProtoESP, SPI: rekey.SPI, NotifyType: wire.CHILD_SA_NOT_FOUND}}, nil
	}
	if tooManySelectors(req) {
		return []wire.Payload{&wire.Notify{NotifyType: wire.TS_UNACCEPTABLE}}, nil
	}
	if old != c.child || (c.pending != nil && c.pending.rekey == rekeyingIKE) {
		// Not for an SA being deleted (RFC 7296 §2.25.1), nor while our
		// rekey of the IKE SA is outstanding: the client retries later.
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	if len(c.oldKids) >= maxOldChildren {
		// A client that rekeys without deleting what it replaced would
		// grow the gateway's SAs without bound.
		r.log.Info("client rekeys its Child SA again before deleting the ones it replaced: refused", "id", c.ID, "old", len(c.oldKids))
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	reply, child, fail := answerChildRekey(sa.ikeSA, r.cfg.ESP, req, old, c.mob.mif, r.cfg.Now(), r.drawInboundSPI)
	if fail != nil {
		return []wire.Payload{fail}, nil
	}
	if err := r.h.InstallChild(&c.RemoteClient, child, false); err != nil {
		r.log.Warn("installing a rekeyed Child SA", "id", c.ID, "err", err)
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	return reply, func() {
		old.retired = r.cfg.Now()
		c.oldKids = append(c.oldKids, old)
		c.child = child
		c.childRekeys++
	}
}

// respondIKERekey answers a client's rekey of its IKE SA.
func (r *Responder) respondIKERekey(sa *rSA, req []wire.Payload) ([]wire.Payload, func()) {
	c := sa.client
	if sa != c.sa || (c.pending != nil && c.pending.rekey == rekeyingChild) {
		// Not for an IKE SA already replaced, nor while our rekey of a
		// Child SA is outstanding: the client retries later.
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, nil
	}
	reply, next, fail := answerIKERekey(sa.ikeSA, r.cfg.IKE, req, r.cfg.Now())
	if fail != nil {
		return []wire.Payload{fail}, nil
	}
	return reply, func() {
		n := &rSA{ikeSA: next, from: sa.from, local: sa.local, natT: sa.natT, client: c}
		r.sas[saKey{next.spiI, next.spiR}] = n
		r.ownSA(c, n)
		c.sa = n
		c.IKESPIi, c.IKESPIr = next.spiI, next.spiR
		c.ikeRekeys++
	}
}
