// IKE_SA_INIT (RFC 7296 §1.2), both roles: the initiator offers, retries
// with a cookie or another DH group and derives the keys; the responder
// asks for cookies under load and answers.

package ike

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// initResult is what IKE_SA_INIT established.
type initResult struct {
	sa          *ikeSA
	request     []byte // our IKE_SA_INIT request as sent: signed by us
	response    []byte // the gateway's response as received: signed by it
	peerHashes  []uint16
	certReqFrom bool
}

// initExchange runs IKE_SA_INIT, retrying with a cookie or another DH group
// when the gateway asks for one.
func (s *Session) initExchange(ctx context.Context) (*initResult, error) {
	spiI := randomSPI()
	ni := nonce()
	group := firstDHGroup(s.cfg.IKE)
	var cookie []byte
	var kex KeyExchange
	offered := offerIKE(s.cfg.IKE)
	// A source hash that matches no address makes the gateway see a NAT,
	// so that both sides encapsulate ESP in UDP (mifsec's data plane only
	// carries ESP in UDP), as strongSwan's encap=yes does. Drawn once: a
	// retry with a cookie must repeat every other payload (below).
	natSource := randomBytes(20)
	for attempt := 0; ; attempt++ {
		if attempt == 4 {
			return nil, fmt.Errorf("IKE_SA_INIT with %s: the gateway kept asking for another cookie or group", s.cfg.Remote)
		}
		// A retry with a cookie repeats the request unchanged but for the
		// cookie (RFC 7296 §2.6), the key share and the NAT source hash
		// too: a gateway whose queue is long may still answer an earlier
		// copy without the cookie, and that answer must give the same
		// keys, and the gateway, which made the IKE SA from that copy,
		// must be able to tell the request this side signs from it
		// (Responder.cookieRetries). Only another group needs a new key
		// share.
		if kex == nil || kex.Group() != group {
			var err error
			if kex, err = NewKeyExchange(group); err != nil {
				return nil, err
			}
		}
		var payloads []wire.Payload
		if cookie != nil {
			payloads = append(payloads, &wire.Notify{NotifyType: wire.COOKIE, Data: cookie})
		}
		payloads = append(payloads,
			&wire.SA{Proposals: offered},
			&wire.KE{Group: group, Data: kex.Public()},
			&wire.Nonce{Data: ni},
			&wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: natSource},
			&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: nATDetectionHash(spiI, 0, s.remote)},
			&wire.Notify{NotifyType: wire.IKEV2_FRAGMENTATION_SUPPORTED},
			&wire.Notify{NotifyType: wire.SIGNATURE_HASH_ALGORITHMS, Data: SignatureHashAlgorithmsNotifyData()},
		)
		payloads = append(payloads, s.redirectNotify()...) // RFC 5685 (redirect.go)
		req := &wire.Message{SPIi: spiI, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: payloads}
		b, err := req.Marshal()
		if err != nil {
			return nil, fmt.Errorf("building IKE_SA_INIT: %w", err)
		}
		// The response is not protected: anyone on the path can forge
		// one. A response that is an error, or that does not make an IKE
		// SA, is noted and the wait goes on for a valid one until the
		// retransmissions are spent (RFC 7296 §2.21.1); only then does
		// the last such answer become the error.
		var result *initResult
		var redirect *redirectError
		resp, err := s.initRoundTrip(ctx, b, spiI, func(resp *wire.Message, raw []byte) error {
			if n := wire.FindNotify(resp.Payloads, wire.REDIRECT); n != nil {
				r, err := s.initRedirect(n, ni) // a spoofed one is waited past
				redirect = r
				return err
			}
			if n := wire.FindNotify(resp.Payloads, wire.COOKIE); n != nil {
				if cookie != nil && string(n.Data) == string(cookie) {
					// The answer to a copy sent before we had the
					// cookie: this request carries it already.
					return errStaleCookie
				}
				return nil
			}
			if n := wire.FindNotify(resp.Payloads, wire.INVALID_KE_PAYLOAD); n != nil {
				if len(n.Data) != 2 {
					return fmt.Errorf("IKE_SA_INIT: malformed INVALID_KE_PAYLOAD from the gateway")
				}
				want := binary.BigEndian.Uint16(n.Data)
				if !slices.Contains(groupsOf(s.cfg.IKE), want) || want == group {
					return fmt.Errorf("%w: the gateway wants DH group %d, which the IKE proposals (%s) do not offer",
						ErrNoProposalChosen, want, formatProposals(s.cfg.IKE))
				}
				return nil
			}
			if err := firstError(resp.Payloads, "IKE_SA_INIT"); err != nil {
				if strings.Contains(err.Error(), "proposals") {
					return fmt.Errorf("%w; offered %s", err, formatProposals(s.cfg.IKE))
				}
				return err
			}
			if resp.SPIr == 0 {
				return fmt.Errorf("IKE_SA_INIT: the gateway's response has no responder SPI")
			}
			res, err := s.completeInit(resp, raw, b, kex, ni)
			result = res
			return err
		})
		if err != nil {
			return nil, err
		}
		if redirect != nil {
			return nil, redirect
		}
		if n := wire.FindNotify(resp.Payloads, wire.COOKIE); n != nil {
			cookie = slices.Clone(n.Data)
			continue
		}
		if n := wire.FindNotify(resp.Payloads, wire.INVALID_KE_PAYLOAD); n != nil {
			group = binary.BigEndian.Uint16(n.Data)
			continue
		}
		return result, nil
	}
}

// errStaleCookie is a COOKIE demand for the cookie the request already
// carries: the answer to a copy sent before the client had it.
var errStaleCookie = errors.New("IKE_SA_INIT: the gateway asked again for the cookie this request carries")

// initRoundTrip sends an IKE_SA_INIT request and waits for a response
// that accept takes (returns nil for). A response accept refuses does
// not end the wait; when the retransmissions are spent, the last refusal
// is the error.
func (s *Session) initRoundTrip(ctx context.Context, req []byte, spiI uint64, accept func(resp *wire.Message, raw []byte) error) (*wire.Message, error) {
	policy := s.cfg.Retransmit
	timeout := policy.Timeout
	s.transmit([][]byte{req})
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var refused error
	for tries := 1; ; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case in := <-s.inbox:
			m, err := wire.Parse(in.data)
			if err != nil || m.Exchange != wire.IKE_SA_INIT || m.Flags&wire.FlagResponse == 0 || m.SPIi != spiI {
				continue
			}
			if err := accept(m, in.data); err != nil {
				s.log.Debug("IKE_SA_INIT: waiting on after an unusable response", "from", in.from, "err", err)
				if !errors.Is(err, errStaleCookie) { // no refusal: the request may still be queued, or lost
					refused = err
				}
				continue
			}
			return m, nil
		case <-timer.C:
			if tries == policy.Tries {
				if refused != nil {
					return nil, refused
				}
				return nil, fmt.Errorf("%w: %s did not answer IKE_SA_INIT after %d tries", ErrTimeout, s.cfg.Remote, tries)
			}
			tries++
			s.log.Info("no answer from the gateway yet, sending again", "gateway", s.cfg.Remote, "try", tries, "of", policy.Tries)
			s.transmit([][]byte{req})
			timeout = time.Duration(float64(timeout) * policy.Backoff)
			timer.Reset(timeout)
		}
	}
}

// completeInit checks the gateway's IKE_SA_INIT response and derives the
// IKE SA's keys.
func (s *Session) completeInit(resp *wire.Message, raw, req []byte, kex KeyExchange, ni []byte) (*initResult, error) {
	saP := wire.Find[*wire.SA](resp.Payloads)
	ke := wire.Find[*wire.KE](resp.Payloads)
	nr := wire.Find[*wire.Nonce](resp.Payloads)
	if saP == nil || ke == nil || nr == nil || len(saP.Proposals) != 1 {
		return nil, fmt.Errorf("IKE_SA_INIT: the gateway's response lacks SA, KE or Nonce")
	}
	suite, err := acceptIKE(saP.Proposals[0], s.cfg.IKE)
	if err != nil {
		return nil, fmt.Errorf("IKE_SA_INIT: %w", err)
	}
	if ke.Group != kex.Group() {
		return nil, fmt.Errorf("IKE_SA_INIT: the gateway answered with DH group %d, we sent %d", ke.Group, kex.Group())
	}
	shared, err := kex.SharedSecret(ke.Data)
	if err != nil {
		return nil, fmt.Errorf("IKE_SA_INIT: %w", err)
	}
	if err := checkNonce(suite.PRF, nr.Data); err != nil {
		return nil, fmt.Errorf("IKE_SA_INIT: %w", err)
	}
	keys, err := deriveIKEKeys(suite, shared, ni, nr.Data, resp.SPIi, resp.SPIr, true)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	sa := &ikeSA{spiI: resp.SPIi, spiR: resp.SPIr, initiator: true, suite: suite, keys: keys, ni: ni, nr: slices.Clone(nr.Data),
		nextOut: 1, lastHeard: now, created: now, fragOK: wire.FindNotify(resp.Payloads, wire.IKEV2_FRAGMENTATION_SUPPORTED) != nil}
	res := &initResult{sa: sa, request: req, response: raw}
	if n := wire.FindNotify(resp.Payloads, wire.SIGNATURE_HASH_ALGORITHMS); n != nil {
		for i := 0; i+1 < len(n.Data); i += 2 {
			res.peerHashes = append(res.peerHashes, binary.BigEndian.Uint16(n.Data[i:]))
		}
	}
	return res, nil
}

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
	if saP == nil || ke == nil || ni == nil || len(ni.Data) < minNonceLen || len(ni.Data) > maxNonceLen {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.INVALID_SYNTAX})
		return
	}
	// A retransmission, a copy of the request from where it came, gets
	// the response already sent (limits.go).
	if sa := r.initIndex[initKey{m.SPIi, in.from}]; sa != nil && sa.half != nil && string(sa.half.initReq) == string(in.data) {
		if sa.resends < maxResends {
			sa.resends++
			r.transmit(sa, in.local, in.from, [][]byte{sa.half.initResp})
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
	if r.refusesNew() {
		r.redirectInit(m, in, ni.Data) // full or draining (redirect.go)
		return
	}
	now := r.cfg.Now()
	if r.demandsCookie(src, atSourceLimit, in.at, now) {
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
	kex, err := r.keys.take(suite.DHGroup)
	if err != nil {
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN})
		return
	}
	if len(ke.Data) != len(kex.Public()) {
		// A public value that is not one of the group's (a point off
		// the curve) shows only in the shared secret, beside the loop
		// (initkeys.go): its IKE_AUTH is then dropped.
		r.answerInit(m, in, &wire.Notify{NotifyType: wire.INVALID_SYNTAX})
		return
	}
	nr := nonce()
	spiR := randomSPI()
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
	sa := &rSA{ikeSA: &ikeSA{spiI: m.SPIi, spiR: spiR, suite: suite, ni: slices.Clone(ni.Data), nr: nr,
		nextIn: 1, lastHeard: now, created: now, fragOK: fragOK},
		redirectOK: supportsRedirect(m.Payloads), from: in.from, local: in.local, natT: in.natT,
		half: &rHalfOpen{initReq: slices.Clone(in.data), initResp: b, expires: now.Add(r.cfg.HalfOpenTimeout)}}
	if n := wire.FindNotify(m.Payloads, wire.SIGNATURE_HASH_ALGORITHMS); n != nil {
		sa.half.peerHashes, _ = ParseSignatureHashAlgorithms(n.Data)
	}
	r.addHalfOpen(sa)
	r.deriveBeside(sa, newInitKeys(kex, slices.Clone(ke.Data), suite, sa.ni, nr, m.SPIi, spiR))
	r.transmit(sa, in.local, in.from, [][]byte{b})
}
