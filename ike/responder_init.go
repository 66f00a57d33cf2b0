package ike

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/mifsec/mifsec/ike/wire"
)

// cookie is the stateless COOKIE for an IKE_SA_INIT request (RFC 7296
// §2.6): a version byte and HMAC-SHA-256(secret, Ni | IPi | SPIi).
func cookie(secret []byte, version byte, ni []byte, from netip.Addr, spiI uint64) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(ni)
	a := from.Unmap().AsSlice()
	h.Write(a)
	h.Write(binary.BigEndian.AppendUint64(nil, spiI))
	return h.Sum([]byte{version})
}

// cookieOK checks a cookie against the current and the previous secret.
func (r *Responder) cookieOK(got, ni []byte, from netip.Addr, spiI uint64) bool {
	if len(got) != 1+sha256.Size {
		return false
	}
	cur, old := r.secret, r.oldSecret
	return hmac.Equal(got, cookie(cur[:], got[0], ni, from, spiI)) || hmac.Equal(got, cookie(old[:], got[0], ni, from, spiI))
}

// answerInit sends an unprotected IKE_SA_INIT response that creates no
// state: a cookie or an error.
func (r *Responder) answerInit(m *wire.Message, in inbound, n *wire.Notify) {
	// A client that offered another group than the one chosen retries
	// with it: that is no failure.
	if n.NotifyType.IsError() && n.NotifyType != wire.INVALID_KE_PAYLOAD {
		r.failures[notifyFailure(n.NotifyType)]++
	}
	resp := &wire.Message{SPIi: m.SPIi, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagResponse, Payloads: []wire.Payload{n}}
	b, err := resp.Marshal()
	if err != nil {
		return
	}
	if err := r.tr.SendFrom(b, in.local, in.from, in.natT); err != nil {
		r.log.Debug("sending IKE_SA_INIT response", "to", in.from, "err", err)
	}
}

// handleInit answers an IKE_SA_INIT request.
func (r *Responder) handleInit(m *wire.Message, in inbound) {
	saP, ke, ni := wire.Find[*wire.SA](m.Payloads), wire.Find[*wire.KE](m.Payloads), wire.Find[*wire.Nonce](m.Payloads)
	if saP == nil || ke == nil || ni == nil || len(ni.Data) < MinNonceLen || len(ni.Data) > MaxNonceLen {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.INVALID_SYNTAX})
		return
	}
	// A retransmission, a copy of the request from where it came, gets
	// the response already sent (limits.go).
	if sa := r.initIndex[initKey{m.SPIi, in.from}]; sa != nil && string(sa.initReq) == string(in.data) {
		if sa.resends < maxResends {
			sa.resends++
			r.transmit(sa, in.local, in.from, [][]byte{sa.initResp})
		}
		return
	}
	src := sourceOf(in.from)
	atSourceLimit := len(r.perSource[src]) >= r.cfg.MaxHalfOpenPerSource
	if len(r.halfOpen) >= r.cfg.MaxHalfOpen && !atSourceLimit {
		r.log.Debug("dropping IKE_SA_INIT: too many half-open IKE SAs", "from", in.from)
		r.failures[FailHalfOpenLimit]++
		return
	}
	if len(r.halfOpen) >= r.cfg.CookieThreshold || atSourceLimit {
		n := wire.FindNotify(m.Payloads, wire.COOKIE)
		if n == nil || !r.cookieOK(n.Data, ni.Data, in.from.Addr(), m.SPIi) {
			cur := r.secret
			r.answerInit(m, in, &wire.Notify{NotifyType: wire.COOKIE, Data: cookie(cur[:], 1, ni.Data, in.from.Addr(), m.SPIi)})
			return
		}
	}
	sel, ok := SelectProposalWith(saP.Proposals, r.cfg.IKE, SelectOptions{PreferDH: ke.Group})
	if !ok {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN})
		return
	}
	suite := sel.Suite
	if ke.Group != suite.DHGroup {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, suite.DHGroup)})
		return
	}
	if err := checkNonce(suite.PRF, ni.Data); err != nil {
		r.log.Debug("refusing IKE_SA_INIT", "from", in.from, "err", err)
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.INVALID_SYNTAX})
		return
	}
	now := r.cfg.Now()
	if atSourceLimit {
		// The source proved its address with the cookie: its own oldest
		// half-open IKE SA makes room if it waited long for its IKE_AUTH
		// (abandoned, or planted by a spoofer); one still in its
		// handshake is not cut short.
		oldest := r.perSource[src][0]
		if now.Sub(oldest.created) < staleHalfOpen {
			r.log.Debug("dropping IKE_SA_INIT: its source has the most half-open IKE SAs allowed", "from", in.from)
			r.failures[FailHalfOpenLimit]++
			return
		}
		r.leaveHalfOpen(oldest)
		delete(r.sas, saKey{oldest.spiI, oldest.spiR})
		oldest.wipe()
	}
	if !r.takeDH(src, dhCost(suite.DHGroup), now) {
		r.log.Debug("dropping IKE_SA_INIT: Diffie-Hellman budget spent", "from", in.from, "group", suite.DHGroup)
		r.failures[FailDHBudget]++
		return
	}
	kex, err := NewKeyExchange(suite.DHGroup)
	if err != nil {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN})
		return
	}
	shared, err := kex.SharedSecret(ke.Data)
	if err != nil {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.INVALID_SYNTAX})
		return
	}
	nr := nonce()
	spiR := randomSPI()
	keys, err := deriveIKEKeys(suite, shared, ni.Data, nr, m.SPIi, spiR, false)
	if err != nil {
		r.log.Warn("deriving IKE SA keys", "err", err)
		return
	}
	fragOK := wire.FindNotify(m.Payloads, wire.IKEV2_FRAGMENTATION_SUPPORTED) != nil
	payloads := []wire.Payload{
		&wire.SA{Proposals: []wire.Proposal{sel.Proposal}},
		&wire.KE{Group: suite.DHGroup, Data: kex.Public()},
		&wire.Nonce{Data: nr},
		// A source hash that matches no address tells the client we are
		// behind a NAT: it floats to port 4500 and encapsulates ESP in
		// UDP, the only ESP the data plane carries.
		&wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: randomBytes(20)},
		&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: nATDetectionHash(m.SPIi, spiR, in.from)},
	}
	if fragOK {
		payloads = append(payloads, &wire.Notify{NotifyType: wire.IKEV2_FRAGMENTATION_SUPPORTED})
	}
	payloads = append(payloads, &wire.Notify{NotifyType: wire.SIGNATURE_HASH_ALGORITHMS, Data: SignatureHashAlgorithmsNotifyData()})
	if r.cfg.CAs != nil {
		payloads = append(payloads, &wire.CertReq{Encoding: wire.CertX509Signature, Data: r.cfg.CAs.CertReqData()})
	}
	resp := &wire.Message{SPIi: m.SPIi, SPIr: spiR, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagResponse, Payloads: payloads}
	b, err := resp.Marshal()
	if err != nil {
		r.log.Warn("building IKE_SA_INIT response", "err", err)
		return
	}
	sa := &rSA{ikeSA: &ikeSA{spiI: m.SPIi, spiR: spiR, suite: suite, keys: keys, ni: slices.Clone(ni.Data), nr: nr,
		nextIn: 1, lastHeard: now, created: now, fragOK: fragOK},
		from: in.from, local: in.local, natT: in.natT, initReq: slices.Clone(in.data), initResp: b, expires: now.Add(r.cfg.HalfOpenTimeout)}
	if n := wire.FindNotify(m.Payloads, wire.SIGNATURE_HASH_ALGORITHMS); n != nil {
		sa.peerHashes, _ = ParseSignatureHashAlgorithms(n.Data)
	}
	r.addHalfOpen(sa)
	r.transmit(sa, in.local, in.from, [][]byte{b})
}
