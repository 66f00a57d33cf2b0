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
	reply, child, fail := answerChildRekey(sa, s.cfg.ESP, req, old, s.mob.mif, s.cfg.Now())
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
func answerChildRekey(sa *ikeSA, specs []ProposalSpec, req []wire.Payload, old *ChildSA, mif bool, now time.Time) ([]wire.Payload, *ChildSA, *wire.Notify) {
	fail := func(t wire.NotifyType, data []byte) ([]wire.Payload, *ChildSA, *wire.Notify) {
		return nil, nil, &wire.Notify{NotifyType: t, Data: data}
	}
	saP, ni, ke := wire.Find[*wire.SA](req), wire.Find[*wire.Nonce](req), wire.Find[*wire.KE](req)
	tsi, tsr := findTS(req, false), findTS(req, true)
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
	inSPI := randomESPSPI()
	chosen.SPI = binary.BigEndian.AppendUint32(nil, inSPI)
	theirs, probed := peerProbeSPI(req)
	probeSPI, probeAnswer := offerProbeSPI(mif && probed)
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
		probeSPI, probeOffer := offerProbeSPI(s.mob.mif)
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
