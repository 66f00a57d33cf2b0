package ike

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// connect sets up a new IKE SA and its first Child SA.
func (s *Session) connect(ctx context.Context, initialContact bool) error {
	s.adoptMove()
	s.remote, s.natT = s.cfg.Remote, s.cfg.Remote.Port() == 4500
	s.log.Info("connecting", "gateway", s.cfg.Remote)
	init, err := s.initExchange(ctx)
	if err != nil {
		return err
	}
	s.log.Info("the gateway answered; authenticating", "gateway", s.cfg.Remote, "ike", init.sa.suite)
	if !s.natT {
		// Float to the encapsulation port for everything after
		// IKE_SA_INIT (RFC 7296 §2.23): ESP always travels in UDP.
		s.remote, s.natT = netip.AddrPortFrom(s.remote.Addr(), 4500), true
	}
	return s.authExchange(ctx, init, initialContact)
}

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
	offered := offerIKE(s.cfg.IKE)
	for attempt := 0; ; attempt++ {
		if attempt == 4 {
			return nil, fmt.Errorf("IKE_SA_INIT with %s: the gateway kept asking for another cookie or group", s.cfg.Remote)
		}
		kex, err := NewKeyExchange(group)
		if err != nil {
			return nil, err
		}
		var payloads []wire.Payload
		if cookie != nil {
			payloads = append(payloads, &wire.Notify{NotifyType: wire.COOKIE, Data: cookie})
		}
		payloads = append(payloads,
			&wire.SA{Proposals: offered},
			&wire.KE{Group: group, Data: kex.Public()},
			&wire.Nonce{Data: ni},
			// A source hash that matches no address makes the gateway
			// see a NAT, so that both sides encapsulate ESP in UDP
			// (mifsec's data plane only carries ESP in UDP), as
			// strongSwan's encap=yes does.
			&wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: randomBytes(20)},
			&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: nATDetectionHash(spiI, 0, s.remote)},
			&wire.Notify{NotifyType: wire.IKEV2_FRAGMENTATION_SUPPORTED},
			&wire.Notify{NotifyType: wire.SIGNATURE_HASH_ALGORITHMS, Data: SignatureHashAlgorithmsNotifyData()},
		)
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
		resp, err := s.initRoundTrip(ctx, b, spiI, func(resp *wire.Message, raw []byte) error {
			if wire.FindNotify(resp.Payloads, wire.COOKIE) != nil {
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
				refused = err
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

// authExchange runs IKE_AUTH: authenticates both sides, gets the inner
// addresses and sets up the first Child SA.
func (s *Session) authExchange(ctx context.Context, init *initResult, initialContact bool) (err error) {
	sa := init.sa
	// Responses are matched to the IKE SA they belong to.
	s.sa = sa
	defer func() {
		if err != nil {
			s.sa = nil
		}
	}()
	idi := &wire.ID{IDType: s.cfg.LocalID.Type, Data: s.cfg.LocalID.Data}
	octets := initiatorSignedOctets(sa.keys.prf.Sum, init.request, sa.nr, sa.keys.SKpi, s.cfg.LocalID.PayloadBody())
	var payloads []wire.Payload
	payloads = append(payloads, idi)
	// With EAP the request has no AUTH (RFC 7296 §2.16): the gateway
	// proves itself first, then EAP runs, then AUTH keyed with its MSK.
	var auth *wire.Auth
	switch {
	case s.cfg.EAP != nil:
	case s.cfg.Key != nil:
		for _, c := range s.cfg.Certificates {
			payloads = append(payloads, &wire.Cert{Encoding: wire.CertX509Signature, Data: c.Raw})
		}
		method, data, err := Sign(s.cfg.Key, octets, init.peerHashes)
		if err != nil {
			return fmt.Errorf("IKE_AUTH: signing: %w", err)
		}
		auth = &wire.Auth{Method: method, Data: data}
	default:
		auth = &wire.Auth{Method: wire.AuthPSK, Data: pSKAuth(sa.keys.prf.Sum, s.cfg.PSK, octets)}
	}
	if s.cfg.CAs != nil {
		payloads = append(payloads, &wire.CertReq{Encoding: wire.CertX509Signature, Data: s.cfg.CAs.CertReqData()})
	}
	if s.cfg.RemoteID.Type != 0 {
		payloads = append(payloads, &wire.ID{Responder: true, IDType: s.cfg.RemoteID.Type, Data: s.cfg.RemoteID.Data})
	}
	if auth != nil {
		payloads = append(payloads, auth)
	}
	if initialContact {
		payloads = append(payloads, &wire.Notify{NotifyType: wire.INITIAL_CONTACT})
	}
	payloads = append(payloads, s.authNotifies()...) // MOBIKE, MIF (mobike.go)
	var cp []wire.CPAttribute
	if s.cfg.RequestIPv4 {
		cp = append(cp, wire.CPAttribute{Type: wire.INTERNAL_IP4_ADDRESS}, wire.CPAttribute{Type: wire.INTERNAL_IP4_DNS})
	}
	if s.cfg.RequestIPv6 {
		cp = append(cp, wire.CPAttribute{Type: wire.INTERNAL_IP6_ADDRESS}, wire.CPAttribute{Type: wire.INTERNAL_IP6_DNS})
	}
	if len(cp) > 0 {
		cp = append(cp, wire.CPAttribute{Type: wire.INTERNAL_DNS_DOMAIN}) // split DNS (splitdns.go)
		payloads = append(payloads, &wire.CP{CfgType: wire.CFG_REQUEST, Attributes: cp})
	}
	inSPI := randomESPSPI()
	probeSPI, probeOffer := offerProbeSPI(!s.cfg.DisableMIF)
	payloads = append(payloads,
		&wire.SA{Proposals: offerESP(s.cfg.ESP, inSPI, false)},
		&wire.TS{Selectors: selectorsFromPrefixes(s.localTS())},
		&wire.TS{Responder: true, Selectors: selectorsFromPrefixes(s.cfg.RemoteTS)},
	)
	payloads = append(payloads, probeOffer...)
	payloads = append(payloads, transportRequest(s.cfg.Transport)...)
	reply, err := s.exchange(ctx, sa, wire.IKE_AUTH, payloads, s.cfg.Retransmit)
	if err != nil {
		return fmt.Errorf("IKE_AUTH with %s: %w", s.cfg.Remote, err)
	}
	if wire.Find[*wire.Auth](reply) != nil {
		// The gateway authenticated itself: its side of the IKE SA is
		// established, whatever we make of the rest (a refused Child SA,
		// an identity we do not accept). Giving up must not leave it
		// there, holding a lease until its liveness checks give up.
		defer func() {
			if err != nil {
				s.deleteIKESA(sa)
			}
		}()
	}
	if err := firstError(reply, "IKE_AUTH"); err != nil {
		return err
	}
	if err := s.verifyGateway(init, reply); err != nil {
		return err
	}
	if s.cfg.EAP != nil {
		if reply, err = s.eapLogin(ctx, init, reply); err != nil {
			return err
		}
	}
	addrs, dns := configReply(reply)
	child, err := s.childFromReply(sa, reply, inSPI, probeSPI, sa.ni, sa.nr, nil, false, s.localTS(), s.cfg.RemoteTS)
	if err != nil {
		return fmt.Errorf("IKE_AUTH: %w", err)
	}
	if child.Transport = agreedTransport(s.cfg.Transport, reply, child); s.cfg.Transport && !child.Transport {
		s.log.Info("the peer chose tunnel mode: transport mode needs its consent and one address on each side", "local_ts", child.LocalTS, "remote_ts", child.RemoteTS)
	}
	if h, ok := s.h.(DNSDomainsHandler); ok {
		h.ConfiguredDNSDomains(wire.ConfigDomains(reply))
	}
	if err := s.h.Configured(addrs, dns); err != nil {
		return err
	}
	if err := s.h.InstallChild(child); err != nil {
		return err
	}
	s.h.SwitchOutbound(child)
	child.switched = true
	s.sa, s.child = sa, child
	s.authAccepted(reply) // MOBIKE, MIF (mobike.go)
	s.setStatus(func(st *Status) {
		st.State, st.Established, st.LastError = "established", sa.created, ""
		st.IKESPIi, st.IKESPIr, st.IKESuite = fmt.Sprintf("%016x", sa.spiI), fmt.Sprintf("%016x", sa.spiR), sa.suite.String()
		st.Addresses, st.DNS = nil, nil
		for _, a := range addrs {
			st.Addresses = append(st.Addresses, a.String())
		}
		for _, d := range dns {
			st.DNS = append(st.DNS, d.String())
		}
		st.setChild(child)
		st.Weak = WeakAlgorithms(sa.suite, child.Algorithm)
	})
	s.log.Info("connected", "gateway", s.cfg.Remote, "ike", sa.suite, "esp", child.Algorithm,
		"in_spi", fmt.Sprintf("%#x", child.InSPI), "out_spi", fmt.Sprintf("%#x", child.OutSPI), "addresses", addrs)
	if weak := WeakAlgorithms(sa.suite, child.Algorithm); len(weak) > 0 {
		s.log.Warn("session negotiated weak algorithms", "gateway", s.cfg.Remote, "weak", weak)
	}
	return nil
}

func (st *Status) setChild(c *ChildSA) {
	if c == nil {
		st.Child = nil
		return
	}
	st.Child = &ChildStatus{InSPI: fmt.Sprintf("%08x", c.InSPI), OutSPI: fmt.Sprintf("%08x", c.OutSPI), Algorithm: c.Algorithm, Mode: c.mode()}
	if c.Probe != nil {
		st.Child.ProbeInSPI, st.Child.ProbeOutSPI = fmt.Sprintf("%08x", c.Probe.InSPI), fmt.Sprintf("%08x", c.Probe.OutSPI)
	}
	for _, p := range c.LocalTS {
		st.Child.LocalTS = append(st.Child.LocalTS, p.String())
	}
	for _, p := range c.RemoteTS {
		st.Child.RemoteTS = append(st.Child.RemoteTS, p.String())
	}
}

// localTS is what we propose as our side's selectors: with a
// configuration request, everything (the gateway narrows it to the
// assigned address).
func (s *Session) localTS() []netip.Prefix { return s.cfg.LocalTS }

// verifyGateway checks the gateway's identity and AUTH payload.
func (s *Session) verifyGateway(init *initResult, reply []wire.Payload) error {
	sa := init.sa
	idr := wire.Find[*wire.ID](reply)
	auth := wire.Find[*wire.Auth](reply)
	if idr == nil || !idr.Responder || auth == nil {
		return fmt.Errorf("IKE_AUTH: the gateway's response lacks IDr or AUTH")
	}
	got := Identity{Type: idr.IDType, Data: idr.Data}
	octets := responderSignedOctets(sa.keys.prf.Sum, init.response, sa.ni, sa.keys.SKpr, got.PayloadBody())
	if auth.Method == wire.AuthPSK {
		if len(s.cfg.PSK) == 0 {
			return fmt.Errorf("%w: the gateway authenticated with a pre-shared key, we expect a certificate", ErrAuthFailed)
		}
		if verifyPSKAuth(sa.keys.prf.Sum, s.cfg.PSK, octets, auth.Data) != nil {
			return fmt.Errorf("%w: the gateway's AUTH does not match the pre-shared key", ErrAuthFailed)
		}
		if s.cfg.RemoteID.Type != 0 && !got.Equal(s.cfg.RemoteID) {
			return fmt.Errorf("%w: the gateway identifies as %s, expected %s", ErrAuthFailed, got, s.cfg.RemoteID)
		}
		return nil
	}
	if s.cfg.CAs == nil {
		return fmt.Errorf("%w: the gateway authenticated with a certificate, but no CA is configured", ErrAuthFailed)
	}
	var certs [][]byte
	for _, p := range reply {
		if c, ok := p.(*wire.Cert); ok && c.Encoding == wire.CertX509Signature {
			certs = append(certs, c.Data)
		}
	}
	// Any certificate of a trusted CA proves only that its holder is
	// someone the CA vouched for: without the name we expect, a colleague's
	// certificate would do. So a certificate-authenticated gateway must
	// prove the configured identity, with a certificate meant for a server.
	if s.cfg.RemoteID.Type == 0 {
		return fmt.Errorf("%w: the gateway authenticated with a certificate but no identity is configured to check it against (set the gateway's identity)", ErrAuthFailed)
	}
	if !got.Equal(s.cfg.RemoteID) {
		return fmt.Errorf("%w: the gateway identifies as %s, expected %s", ErrAuthFailed, got, s.cfg.RemoteID)
	}
	if len(certs) == 0 {
		return fmt.Errorf("%w: the gateway sent no certificate", ErrAuthFailed)
	}
	peer, err := s.cfg.CAs.VerifyGateway(certs[0], certs[1:], s.cfg.RemoteID, s.cfg.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAuthFailed, err)
	}
	if err := Verify(peer.PublicKey, auth.Method, auth.Data, octets); err != nil {
		return fmt.Errorf("%w: the gateway's signature: %v", ErrAuthFailed, err)
	}
	return nil
}

// childFromReply builds the Child SA a response (IKE_AUTH or
// CREATE_CHILD_SA) agreed to. We initiated the exchange: keys for our
// outbound direction come first in the key material. The gateway may only
// narrow the selectors we proposed (local, remote; RFC 7296 §2.9): what it
// answers is intersected with them, and nothing left is an error.
// probeSPI is the SPI we offered for its probe SA (MIF_PROBE_SPI), 0 for
// none.
func (s *Session) childFromReply(sa *ikeSA, reply []wire.Payload, inSPI, probeSPI uint32, ni, nr, shared []byte, withDH bool, local, remote []netip.Prefix) (*ChildSA, error) {
	saP := wire.Find[*wire.SA](reply)
	if saP == nil || len(saP.Proposals) != 1 {
		return nil, fmt.Errorf("the gateway's response has no single Child SA proposal")
	}
	esp, err := acceptESP(saP.Proposals[0], s.cfg.ESP, withDH)
	if err != nil {
		return nil, err
	}
	tsi, tsr := findTS(reply, false), findTS(reply, true)
	if tsi == nil || tsr == nil {
		return nil, fmt.Errorf("the gateway's response lacks traffic selectors")
	}
	gotLocal, gotRemote := prefixesFromSelectors(tsi.Selectors), prefixesFromSelectors(tsr.Selectors)
	grantedLocal, grantedRemote, widened, err := grantedSelectors(gotLocal, gotRemote, local, remote)
	if err != nil {
		return nil, err
	}
	if widened {
		s.log.Warn("the gateway widened the traffic selectors we proposed; using the intersection",
			"granted_local", gotLocal, "granted_remote", gotRemote, "using_local", grantedLocal, "using_remote", grantedRemote)
	}
	theirs, probed := peerProbeSPI(reply)
	km, err := childKeys(sa, esp, shared, ni, nr, probeSPI != 0 && probed)
	if err != nil {
		return nil, err
	}
	child := &ChildSA{InSPI: inSPI, OutSPI: esp.spi, Algorithm: esp.alg, InKey: km.rToI, OutKey: km.iToR, ESN: esp.esn,
		LocalTS: grantedLocal, RemoteTS: grantedRemote, Created: s.cfg.Now()}
	child.withProbeSA(probeSPI, theirs, km, true)
	return child, nil
}

// grantedSelectors intersects the selectors a gateway answered (got*) with
// those we proposed: a responder may narrow them, never widen them (RFC
// 7296 §2.9). widened says it tried; nothing left is an error.
func grantedSelectors(gotLocal, gotRemote, local, remote []netip.Prefix) (grantedLocal, grantedRemote []netip.Prefix, widened bool, err error) {
	grantedLocal, grantedRemote = narrow(gotLocal, local), narrow(gotRemote, remote)
	if len(grantedLocal) == 0 || len(grantedRemote) == 0 {
		return nil, nil, false, fmt.Errorf("the gateway's traffic selectors %v ⇄ %v lie outside what we proposed (%v ⇄ %v)", gotLocal, gotRemote, local, remote)
	}
	widened = !allIn(gotLocal, grantedLocal) || !allIn(gotRemote, grantedRemote)
	return grantedLocal, grantedRemote, widened, nil
}

// allIn reports whether every prefix of ps is in set.
func allIn(ps, set []netip.Prefix) bool {
	for _, p := range ps {
		if !slices.Contains(set, p) {
			return false
		}
	}
	return true
}

// configReply reads the addresses and DNS servers of a CFG_REPLY.
func configReply(ps []wire.Payload) (addrs []netip.Prefix, dns []netip.Addr) {
	cp := wire.Find[*wire.CP](ps)
	if cp == nil || cp.CfgType != wire.CFG_REPLY {
		return nil, nil
	}
	for _, a := range cp.Attributes {
		switch {
		case a.Type == wire.INTERNAL_IP4_ADDRESS && len(a.Value) == 4:
			addrs = append(addrs, netip.PrefixFrom(netip.AddrFrom4([4]byte(a.Value)), 32))
		case a.Type == wire.INTERNAL_IP6_ADDRESS && len(a.Value) == 17:
			// The prefix length puts a route on the TUN device: a short
			// one would pull a whole range (or all of IPv6) into the
			// tunnel without traffic selectors saying so. Below /64 it is
			// taken as the address alone.
			bits := int(a.Value[16])
			if bits < 64 || bits > 128 {
				bits = 128
			}
			addrs = append(addrs, netip.PrefixFrom(netip.AddrFrom16([16]byte(a.Value[:16])), bits))
		case a.Type == wire.INTERNAL_IP4_DNS && len(a.Value) == 4:
			dns = append(dns, netip.AddrFrom4([4]byte(a.Value)))
		case a.Type == wire.INTERNAL_IP6_DNS && len(a.Value) == 16:
			dns = append(dns, netip.AddrFrom16([16]byte(a.Value)))
		}
	}
	return addrs, dns
}

// firstError returns the first error notification of a response as the
// error a user reads.
func firstError(ps []wire.Payload, exchange string) error {
	for _, p := range ps {
		if n, ok := p.(*wire.Notify); ok && n.NotifyType.IsError() {
			return notifyError(n, exchange)
		}
	}
	return nil
}

func findTS(ps []wire.Payload, responder bool) *wire.TS {
	for _, p := range ps {
		if ts, ok := p.(*wire.TS); ok && ts.Responder == responder {
			return ts
		}
	}
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
