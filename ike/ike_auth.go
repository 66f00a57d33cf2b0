// IKE_AUTH (RFC 7296 §1.2), both roles: authentication by pre-shared key
// or signature, the configuration payload and the first Child SA.

package ike

import (
	"context"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// connect sets up a new IKE SA and its first Child SA.
func (s *Session) connect(ctx context.Context, initialContact bool) error {
	s.adoptMove()
	s.remote, s.natT = s.cfg.Remote, s.cfg.Remote.Port() == 4500
	s.log.Info("connecting", "gateway", s.cfg.Remote)
	init, err := s.initExchange(ctx)
	for redirect := (*redirectError)(nil); errors.As(err, &redirect); {
		if err := s.followRedirect(ctx, redirect.to); err != nil {
			return err
		}
		s.remote, s.natT = s.cfg.Remote, s.cfg.Remote.Port() == 4500
		init, err = s.initExchange(ctx)
	}
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
	octets := initiatorSignedOctets(sa.keys.prf().Sum, init.request, sa.nr, sa.keys.SKpi(), s.cfg.LocalID.PayloadBody())
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
		auth = &wire.Auth{Method: wire.AuthPSK, Data: pSKAuth(sa.keys.prf().Sum, s.cfg.PSK, octets)}
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
	// After a redirect the client asks the new gateway for the addresses
	// it had (redirect.go), so that its connections survive the move.
	ask4, ask6 := wire.CPAttribute{Type: wire.INTERNAL_IP4_ADDRESS}, wire.CPAttribute{Type: wire.INTERNAL_IP6_ADDRESS}
	for _, a := range s.keepAddrs {
		if a.Addr().Is4() {
			ask4.Value = a.Addr().AsSlice()
		} else {
			ask6.Value = append(a.Addr().AsSlice(), 128)
		}
	}
	if s.cfg.RequestIPv4 {
		cp = append(cp, ask4, wire.CPAttribute{Type: wire.INTERNAL_IP4_DNS})
	}
	if s.cfg.RequestIPv6 {
		cp = append(cp, ask6, wire.CPAttribute{Type: wire.INTERNAL_IP6_DNS})
	}
	if len(cp) > 0 {
		cp = append(cp, wire.CPAttribute{Type: wire.INTERNAL_DNS_DOMAIN}) // split DNS (ike/wire/splitdns.go)
		payloads = append(payloads, &wire.CP{CfgType: wire.CFG_REQUEST, Attributes: cp})
	}
	inSPI := randomESPSPI()
	probeSPI, probeOffer := offerProbeSPI(!s.cfg.DisableMIF, randomESPSPI)
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
	s.tellRedirected() // ESP to the gateway we were redirected to (redirect.go)
	if err := s.h.InstallChild(child); err != nil {
		return err
	}
	s.h.SwitchOutbound(child)
	s.redirectedFrom = netip.Addr{} // REDIRECTED_FROM goes only to the gateway we were sent to
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
	octets := responderSignedOctets(sa.keys.prf().Sum, init.response, sa.ni, sa.keys.SKpr(), got.PayloadBody())
	if auth.Method == wire.AuthPSK {
		if len(s.cfg.PSK) == 0 {
			return fmt.Errorf("%w: the gateway authenticated with a pre-shared key, we expect a certificate", ErrAuthFailed)
		}
		if verifyPSKAuth(sa.keys.prf().Sum, s.cfg.PSK, octets, auth.Data) != nil {
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
	tsi, tsr := wire.FindTS(reply, false), wire.FindTS(reply, true)
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

// authFail answers IKE_AUTH with AUTHENTICATION_FAILED and forgets sa once
// the answer is sent.
func (r *Responder) authFail(sa *rSA, from netip.AddrPort, why string, args ...any) ([]wire.Payload, func()) {
	r.log.Warn("client failed to authenticate: "+why, append([]any{"from", from}, args...)...)
	r.failures[FailAuthentication]++
	return []wire.Payload{&wire.Notify{NotifyType: wire.AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
}

// forget removes an IKE SA from the tables and wipes its keys: nothing
// reaches it any more (what it last sent is cached sealed).
func (r *Responder) forget(sa *rSA) {
	r.leaveHalfOpen(sa)
	delete(r.sas, saKey{sa.spiI, sa.spiR})
	sa.wipe()
}

// verifyClient checks the client's AUTH payload over its IKE_SA_INIT
// request, and when that fails, over the other requests the client may
// have signed instead (cookieRetries); the error is the first request's.
func (r *Responder) verifyClient(sa *rSA, id Identity, auth *wire.Auth, req []wire.Payload) error {
	verify, err := r.clientVerifier(id, auth, req, sa.keys.prf().Sum)
	if err != nil {
		return err
	}
	var first error
	if r.signedOver(sa, func(initReq []byte) bool {
		err := verify(initiatorSignedOctets(sa.keys.prf().Sum, initReq, sa.nr, sa.keys.SKpi(), id.PayloadBody()))
		if first == nil {
			first = err
		}
		return err == nil
	}) {
		return nil
	}
	return first
}

// signedOver reports whether check accepts the IKE_SA_INIT request sa was
// made from or, failing that, one of its cookieRetries: the requests the
// client may have signed.
func (r *Responder) signedOver(sa *rSA, check func(initReq []byte) bool) bool {
	if check(sa.half.initReq) {
		return true
	}
	for _, m := range r.cookieRetries(sa) {
		if check(m) {
			return true
		}
	}
	return false
}

// ikeHeaderLen is the length of the IKE header (RFC 7296 §3.1).
const ikeHeaderLen = 28

// cookieRetries are the other requests a client that made sa from its
// IKE_SA_INIT request may have signed: the same request without a cookie
// and with each cookie the gateway may have asked for (current secret,
// then the previous one), all but the one sa was made from. Under load the
// gateway asks a client for a cookie; the client sends its request again
// with the cookie first and every other payload unchanged (RFC 7296 §2.6),
// and from then on signs that one. The gateway, its queue long, may make
// the IKE SA from another copy and the client take its answer for the
// answer to the request it signs:
//   - a copy of the first request, handled once the gateway no longer
//     asked for cookies (TestAuthOverCookieRetry, "late first request");
//   - the retry with the cookie of the secret before the last change, when
//     a copy of the first request handled after the change was asked for
//     the new secret's cookie and the client retried again with that
//     (TestAuthOverCookieRetry, "secret change").
//
// Either way the client's AUTH was refused (AUTHENTICATION_FAILED, "the
// gateway rejected our credentials": 30-413 of 100,000 fleet clients of an
// overloaded gateway, the second case all at the two-minute secret
// changes).
func (r *Responder) cookieRetries(sa *rSA) [][]byte {
	base, ok := withoutCookie(sa.half.initReq)
	if !ok {
		return nil
	}
	from := sa.from.Addr()
	cur, old := r.secret, r.oldSecret
	var out [][]byte
	for _, m := range [][]byte{base, withCookie(base, cookie(cur[:], 1, sa.ni, from, sa.spiI)), withCookie(base, cookie(old[:], 1, sa.ni, from, sa.spiI))} {
		if string(m) != string(sa.half.initReq) {
			out = append(out, m)
		}
	}
	return out
}

// withoutCookie returns the IKE_SA_INIT request m without the COOKIE
// notify that leads its payloads, or m when it has none there; false when
// m's first payload does not fit in it.
func withoutCookie(m []byte) ([]byte, bool) {
	const notifyHeaderLen = 8 // generic payload header, protocol, SPI size, type
	if len(m) < ikeHeaderLen || wire.PayloadType(m[16]) != wire.PayloadNotify {
		return m, len(m) >= ikeHeaderLen
	}
	if len(m) < ikeHeaderLen+notifyHeaderLen {
		return nil, false
	}
	first := m[ikeHeaderLen:]
	n := int(binary.BigEndian.Uint16(first[2:4]))
	if n < notifyHeaderLen || n > len(first) {
		return nil, false
	}
	if first[5] != 0 || wire.NotifyType(binary.BigEndian.Uint16(first[6:8])) != wire.COOKIE {
		return m, true
	}
	b := make([]byte, 0, len(m)-n)
	b = append(b, m[:ikeHeaderLen]...)
	b[16] = first[0]
	binary.BigEndian.PutUint32(b[24:28], uint32(len(m)-n))
	return append(b, first[n:]...), true
}

// withCookie returns the IKE_SA_INIT request m with a COOKIE notify of
// data ck as its first payload and the rest byte for byte as in m: what a
// client sends when asked for a cookie.
func withCookie(m, ck []byte) []byte {
	n := 8 + len(ck) // generic payload header, protocol, SPI size, type, data
	b := make([]byte, 0, len(m)+n)
	b = append(b, m[:ikeHeaderLen]...)
	first := b[16]
	b[16] = byte(wire.PayloadNotify)
	binary.BigEndian.PutUint32(b[24:28], uint32(len(m)+n))
	b = append(b, first, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(wire.COOKIE))
	b = append(b, ck...)
	return append(b, m[ikeHeaderLen:]...)
}

// clientVerifier returns what checks the client's AUTH payload over the
// octets it signed: its identity's pre-shared key, or the public key of
// its certificate, whose chain is verified here, once for every request
// the client may have signed (verifyClient).
func (r *Responder) clientVerifier(id Identity, auth *wire.Auth, req []wire.Payload, prf func(key, data []byte) []byte) (func(octets []byte) error, error) {
	if auth.Method == wire.AuthPSK {
		psk := r.pskFor(id)
		if len(psk) == 0 {
			if len(r.cfg.ClientPSKs) > 0 {
				return nil, errors.New("it used a pre-shared key, the gateway has none for its identity")
			}
			return nil, errors.New("it used a pre-shared key, the gateway expects a certificate")
		}
		return func(octets []byte) error {
			if verifyPSKAuth(prf, psk, octets, auth.Data) != nil {
				return errors.New("its AUTH does not match the pre-shared key")
			}
			return nil
		}, nil
	}
	if r.cfg.CAs == nil {
		return nil, errors.New("it used a certificate, but no CA is configured")
	}
	var certs [][]byte
	for _, p := range req {
		if c, ok := p.(*wire.Cert); ok && c.Encoding == wire.CertX509Signature {
			certs = append(certs, c.Data)
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("it sent no certificate")
	}
	peer, err := r.cfg.CAs.VerifyPeer(certs[0], certs[1:], id, r.cfg.Now())
	if err != nil {
		return nil, err
	}
	return func(octets []byte) error {
		if err := Verify(peer.PublicKey, auth.Method, auth.Data, octets); err != nil {
			return fmt.Errorf("its signature: %w", err)
		}
		return nil
	}, nil
}

// canonicalPSKs checks per-client keys (no empty key, identities that
// parse, no identity named twice in two spellings) and returns a copy
// keyed by the identities' canonical form (Identity.Key).
func canonicalPSKs(keys map[string][]byte) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	for name, psk := range keys {
		if len(psk) == 0 {
			return nil, fmt.Errorf("empty pre-shared key for client %s", Printable(name))
		}
		id, err := ParseIdentity(name)
		if err != nil {
			return nil, fmt.Errorf("pre-shared key for client %s: %w", Printable(name), err)
		}
		k := id.Key()
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("two pre-shared keys for client %s (identities are compared without case and trailing dot)", Printable(k))
		}
		out[k] = slices.Clone(psk)
	}
	return out, nil
}

// CheckClientPSKs checks per-client pre-shared keys as NewResponder
// does (no empty key, identities that parse, no identity given twice in
// two spellings), so that a configuration can be refused before anything
// is set up.
func CheckClientPSKs(keys map[string][]byte) error {
	_, err := canonicalPSKs(keys)
	return err
}

// pskFor returns the pre-shared key a client of identity id authenticates
// with: its own, else the shared one (nil when there is neither).
func (r *Responder) pskFor(id Identity) []byte {
	if psk, ok := r.cfg.ClientPSKs[id.Key()]; ok {
		return psk
	}
	return r.cfg.PSK
}

// SetPSKs replaces the shared and the per-client pre-shared keys (see
// ResponderConfig) while the responder runs. Clients that authenticated
// with a key that is no longer theirs (changed or removed) are told their
// IKE SA is deleted and dropped with their Child SAs and leases; their
// identities are returned. New keys apply to every later IKE_AUTH.
func (r *Responder) SetPSKs(ctx context.Context, shared []byte, perClient map[string][]byte) ([]Identity, error) {
	keys, err := canonicalPSKs(perClient)
	if err != nil {
		return nil, err
	}
	if len(shared) == 0 && len(keys) == 0 && r.cfg.Key == nil {
		return nil, errors.New("no pre-shared key left and no private key to authenticate with")
	}
	var revoked []Identity
	ok := r.do(ctx, func() {
		r.cfg.PSK, r.cfg.ClientPSKs = slices.Clone(shared), keys
		for _, c := range slices.Clone(r.clients) {
			if c.psk == 0 || c.psk == digestPSK(r.pskFor(c.ID)) {
				continue
			}
			r.log.Info("client's pre-shared key changed: deleting its IKE SA", "id", c.ID, "from", c.Remote, "addresses", c.Addresses)
			r.sayGoodbye(c)
			revoked = append(revoked, c.ID)
		}
	})
	if !ok {
		return nil, ctx.Err()
	}
	return revoked, nil
}

// respondAuth answers IKE_AUTH: authenticates the client, leases its inner
// addresses and sets up its first Child SA. A request without AUTH starts
// EAP (ike_auth_eap.go).
func (r *Responder) respondAuth(sa *rSA, req []wire.Payload, from netip.AddrPort) ([]wire.Payload, func()) {
	idi, auth := wire.FindID(req, false), wire.Find[*wire.Auth](req)
	if idi == nil {
		return r.authFail(sa, from, "no IDi")
	}
	if auth == nil {
		return r.startEAP(sa, idi, req, from)
	}
	id := Identity{Type: idi.IDType, Data: idi.Data}
	if len(r.cfg.Peers) > 0 && !slices.ContainsFunc(r.cfg.Peers, func(p Identity) bool { return p.Key() == id.Key() }) {
		return r.authFail(sa, from, "identity not among the allowed peers", "id", id)
	}
	if err := r.verifyClient(sa, id, auth, req); err != nil {
		return r.authFail(sa, from, err.Error(), "id", id)
	}
	var psk []byte
	if auth.Method == wire.AuthPSK {
		psk = r.pskFor(id)
	}
	return r.admit(sa, id, req, from, psk, nil)
}

// admit answers the IKE_AUTH request of a client that authenticated as id
// (with psk, or with EAP and its msk, or with a certificate when both are
// nil): our identity and AUTH, its addresses and first Child SA from req.
// A shared pool's leases take round trips to its store (etcd): they are
// taken beside the loop, which goes on serving other clients, and the
// answer goes out when they come (leasedBeside); admit then returns
// with sa.answering set.
func (r *Responder) admit(sa *rSA, id Identity, req []wire.Payload, from netip.AddrPort, psk, msk []byte) ([]wire.Payload, func()) {
	// From here on the client is known by the canonical form of the
	// identity it authenticated with, for its leases, the limit per
	// identity and INITIAL_CONTACT.
	id = id.Canonical()
	key := id.String()
	replace := wire.FindNotify(req, wire.INITIAL_CONTACT) != nil
	if replace && r.newerThan(key, sa) {
		// The client began another IKE SA after this one, and that one
		// is established: this IKE_AUTH waited in the queue while the
		// client gave up on it and tried again. Its INITIAL_CONTACT
		// would drop the IKE SA the client uses.
		r.log.Info("refusing the IKE_AUTH of an IKE SA the client replaced with a newer one", "id", id, "from", from)
		r.failures[FailSuperseded]++
		return []wire.Payload{&wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}}, func() { r.forget(sa) }
	}
	if limit := r.cfg.MaxSAsPerIdentity; limit > 0 && !replace {
		if held := len(r.byKey[key]); held >= limit {
			return r.authFail(sa, from, "its identity already holds the most IKE SAs allowed", "id", id, "limit", limit)
		}
	}
	// Our AUTH over our IKE_SA_INIT response. After EAP it is keyed with
	// the MSK (RFC 7296 §2.16); IDr and the certificate went with the
	// first response.
	octets := responderSignedOctets(sa.keys.prf().Sum, sa.half.initResp, sa.ni, sa.keys.SKpr(), r.cfg.LocalID.PayloadBody())
	var reply []wire.Payload
	ours := &wire.Auth{}
	switch {
	case msk != nil:
		ours.Method, ours.Data = wire.AuthPSK, pSKAuth(sa.keys.prf().Sum, msk, octets)
	case r.cfg.Key != nil:
		reply = append(reply, r.localIDPayload())
		for _, c := range r.cfg.Certificates {
			reply = append(reply, &wire.Cert{Encoding: wire.CertX509Signature, Data: c.Raw})
		}
		method, data, err := r.sign(sa.half.peerHashes, octets)
		if err != nil {
			r.log.Warn("signing IKE_AUTH", "err", err)
			return []wire.Payload{&wire.Notify{NotifyType: wire.AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
		}
		ours.Method, ours.Data = method, data
	default:
		reply = append(reply, r.localIDPayload())
		ours.Method, ours.Data = wire.AuthPSK, pSKAuth(sa.keys.prf().Sum, r.pskFor(id), octets)
	}
	reply = append(reply, ours)
	a := admission{sa: sa, req: req, from: from, reply: reply, replace: replace}
	if msk != nil && r.radius != nil {
		a.accountAs = sa.half.eap.server.identity
	}
	a.c = &rClient{RemoteClient: RemoteClient{ID: id, Remote: from, Local: sa.reqLocal, IKESPIi: sa.spiI, IKESPIr: sa.spiR}, sa: sa, key: key}
	a.c.psk = digestPSK(psk)
	a.c.redirectOK = sa.redirectOK
	if replace {
		// Before the leases: the older IKE SA's addresses are released,
		// and the client gets them again (sticky leases).
		r.replaceOlder(a.c)
	}
	var fail *wire.Notify
	a.wants, fail = r.addressesWanted(a.c, req)
	if fail != nil || !r.sharedPools {
		if fail == nil {
			a.c.Addresses, fail, _ = r.leaseAddresses(a.c, a.wants)
		}
		return r.admitted(a, fail)
	}
	// Authenticated, the client's IKE SA is no longer half-open: it
	// neither counts towards cookies nor gives way to a newer half-open
	// SA of its source while it waits for its leases.
	r.leaveHalfOpen(sa)
	sa.answering = true
	r.leaseQueue = append(r.leaseQueue, a)
	r.leaseNext()
	return nil, nil
}

// leaseNext starts taking the leases of queued admissions, up to the
// lease window at once, the newest first: when more clients log in than
// the store takes leases for, a queue served in order would answer each
// only after it gave up (and the gateway would set up no one), while
// served from the newest, the clients answered are those still waiting,
// and the oldest give up and try again. One whose IKE SA went while it
// waited (its half-open time ran out) is skipped.
func (r *Responder) leaseNext() {
	for r.leasing < int(r.leaseWindow) && len(r.leaseQueue) > 0 {
		last := len(r.leaseQueue) - 1
		a := r.leaseQueue[last]
		r.leaseQueue[last] = admission{}
		r.leaseQueue = r.leaseQueue[:last]
		if sa := a.sa; r.sas[saKey{sa.spiI, sa.spiR}] != sa || !sa.answering {
			continue
		}
		r.leasing++
		a.leasing = time.Now()
		go func() {
			addrs, fail, later := r.leaseAddresses(a.c, a.wants)
			select {
			case r.besideDone <- func() { r.leasedBeside(a, addrs, fail, later) }:
			case <-r.quit:
				r.releaseAddresses(addrs)
			}
		}()
	}
}

// The lease window is how many IKE_AUTH requests' leases a shared pool
// takes at once; the others wait in Responder.leaseQueue. It grows by
// one per window of leases taken within leaseSlow and halves, once per
// window, when one took longer or failed (additive increase, multiplicative
// decrease, as TCP's congestion window): many at once while the store
// commits them together quickly, few when it is loaded (etcd on busy
// cores answers late, and a request past its timeout makes the gateway
// take etcd for unreachable).
const (
	leaseSlow                      = 250 * time.Millisecond
	minLeaseWindow, maxLeaseWindow = 1, 64
)

// adjustLeaseWindow is the lease window's answer to a lease that began
// at started, took took, and failed or not (a failure is a slow lease:
// etcd may have failed it for want of time).
func (r *Responder) adjustLeaseWindow(started time.Time, took time.Duration, failed bool) {
	if took <= leaseSlow && !failed {
		r.leaseWindow = min(maxLeaseWindow, r.leaseWindow+1/r.leaseWindow)
		return
	}
	if started.After(r.leaseShrunk) { // once for the leases already out
		r.leaseWindow = max(minLeaseWindow, r.leaseWindow/2)
		r.leaseShrunk = time.Now()
	}
}

// admission is an IKE_AUTH request admit answers: its client, not yet
// held, and the reply so far (our identity and AUTH).
type admission struct {
	sa        *rSA
	c         *rClient
	req       []wire.Payload
	from      netip.AddrPort
	reply     []wire.Payload
	replace   bool         // it carried INITIAL_CONTACT
	accountAs string       // the RADIUS user to start an accounting session for
	wants     addressWants // what its CP request asks for
	leasing   time.Time    // when a shared pool's leases began to be taken
}

// leasedBeside answers the request of a once its leases were taken beside
// the loop: addrs, or fail.
func (r *Responder) leasedBeside(a admission, addrs []netip.Prefix, fail *wire.Notify, later bool) {
	r.leasing--
	r.adjustLeaseWindow(a.leasing, time.Since(a.leasing), fail != nil || later)
	r.leaseNext()
	sa := a.sa
	if r.sas[saKey{sa.spiI, sa.spiR}] != sa || !sa.answering {
		r.releaseAddresses(addrs) // the IKE SA went meanwhile
		return
	}
	sa.answering = false
	if later {
		// The pool's store answered too late: the request goes
		// unanswered, as if lost, and its retransmission tries again; the
		// IKE SA is half-open again until then (and expires if none
		// comes).
		r.log.Debug("IKE_AUTH left to its retransmission: the shared pool answered too late", "id", a.c.ID, "from", a.from)
		sa.half.expires = r.cfg.Now().Add(r.cfg.HalfOpenTimeout)
		r.addHalfOpen(sa)
		return
	}
	a.c.Addresses = addrs
	r.answerLater(sa, sa.nextIn, a.from)(r.admitted(a, fail))
}

// newerThan reports whether a client of the identity key was
// established after sa began (its IKE_SA_INIT).
func (r *Responder) newerThan(key string, sa *rSA) bool {
	return slices.ContainsFunc(r.byKey[key], func(o *rClient) bool { return o.established.time().After(sa.created) })
}

// replaceOlder drops the other IKE SAs of c's identity established
// before c's began: its IKE_AUTH carried INITIAL_CONTACT. One
// established since stays (newerThan: c's IKE_AUTH waited for its leases
// meanwhile).
func (r *Responder) replaceOlder(c *rClient) {
	for _, old := range slices.Clone(r.byKey[c.key]) {
		if old == c || old.established.time().After(c.sa.created) {
			continue
		}
		r.log.Info("client reconnected: dropping its older IKE SA", "id", c.ID, "ike_spi_i", fmt.Sprintf("%016x", old.sa.spiI))
		r.dropClient(old)
	}
}

// admitted answers the request of a with its leases taken (in a.c), or
// fail: the client is held from here on, with its first Child SA.
func (r *Responder) admitted(a admission, fail *wire.Notify) ([]wire.Payload, func()) {
	sa, c, id, from, reply := a.sa, a.c, a.c.ID, a.from, a.reply
	// The client is authenticated from here on. The IKE_SA_INIT messages
	// were only needed for the AUTH payloads (a retransmitted IKE_AUTH gets
	// the cached response): a gateway with many clients need not keep
	// them.
	r.leaveHalfOpen(sa)
	sa.dropHalfOpen()
	if a.replace {
		r.replaceOlder(c) // one that logged in while the leases were taken
	}
	c.established = instantOf(r.cfg.Now())
	r.addClient(c, sa)

	var childReply []wire.Payload
	if fail == nil {
		childReply, fail = r.firstChild(c, a.req, a.wants)
	}
	if fail != nil {
		// Nothing of the client stays behind: the IKE SA goes with the
		// answer (the client gives up on it when its first Child SA is
		// refused), and firstChild released the leases.
		r.log.Warn("client authenticated, but no Child SA: dropping it", "id", id, "from", from, "notify", fail.NotifyType)
		r.failures[notifyFailure(fail.NotifyType)]++
		reply = append(reply, fail)
		return reply, func() {
			if r.holds(c) {
				r.dropClient(c)
			}
		}
	}
	reply = append(reply, childReply...)
	// Nor does anything need the IKE_SA_INIT nonces any more: they went
	// into the AUTH payloads and the first Child SA's keys (an IKE SA
	// made by a rekey keeps its own, to settle a rekey collision), nor
	// SK_pi and SK_pr, which went into the AUTH payloads only. The reply
	// is sealed after this, with the crypters pointed at the keys' new
	// place.
	sa.ni, sa.nr = nil, nil
	sa.keys.forgetAuthKeys()
	if r.cfg.Sessions != nil {
		r.cfg.Sessions.ClientUp(&c.RemoteClient)
		c.registered = true
	}
	r.log.Info("client connected", "id", id, "from", from, "ike", sa.suite, "esp", c.child.Algorithm,
		"addresses", c.Addresses, "in_spi", fmt.Sprintf("%#x", c.child.InSPI), "out_spi", fmt.Sprintf("%#x", c.child.OutSPI))
	if weak := WeakAlgorithms(sa.suite, c.child.Algorithm); len(weak) > 0 {
		r.log.Warn("client negotiated weak algorithms", "id", id, "from", from, "weak", weak)
	}
	if a.accountAs != "" {
		r.accountStart(c, a.accountAs)
	}
	return r.authMobility(sa, a.req, reply), nil // MOBIKE, MIF (mobike.go)
}

func (r *Responder) localIDPayload() *wire.ID {
	return &wire.ID{Responder: true, IDType: r.cfg.LocalID.Type, Data: r.cfg.LocalID.Data}
}

// sign signs our AUTH octets for a client that named peerHashes in its
// SIGNATURE_HASH_ALGORITHMS. A client that sent none (the IKEv2 client of
// Windows) can only check method 1 (RSA PKCS #1 v1.5 with SHA-1, RFC 7296
// §3.8) of an RSA key.
func (r *Responder) sign(peerHashes []uint16, octets []byte) (wire.AuthMethod, []byte, error) {
	if _, isRSA := r.cfg.Key.Public().(*rsa.PublicKey); isRSA && len(peerHashes) == 0 {
		return signRSASHA1(r.cfg.Key, octets)
	}
	return Sign(r.cfg.Key, octets, peerHashes)
}

// firstChild builds the first Child SA of client c, whose addresses admit
// leased for the CP request wants, from IKE_AUTH: the CP reply, SA and
// narrowed traffic selectors.
func (r *Responder) firstChild(c *rClient, req []wire.Payload, wants addressWants) ([]wire.Payload, *wire.Notify) {
	saP := wire.Find[*wire.SA](req)
	tsi, tsr := wire.FindTS(req, false), wire.FindTS(req, true)
	if saP == nil || tsi == nil || tsr == nil {
		return nil, &wire.Notify{NotifyType: wire.INVALID_SYNTAX}
	}
	if tooManySelectors(req) {
		return nil, &wire.Notify{NotifyType: wire.TS_UNACCEPTABLE}
	}
	sel, ok := SelectProposalWith(saP.Proposals, r.cfg.ESP, SelectOptions{IgnoreDH: true})
	if !ok {
		return nil, &wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN}
	}
	esp, err := espFromSelection(sel)
	if err != nil {
		return nil, &wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN}
	}
	var reply []wire.Payload
	if len(r.pools) > 0 {
		// admit leased c's addresses for this CP request (wants).
		reply = append(reply, &wire.CP{CfgType: wire.CFG_REPLY, Attributes: r.cpReply(c.Addresses, wants)})
	}
	// The client's side narrows to its leased addresses; without pools, to
	// what it proposed.
	remoteAllowed := []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
	switch {
	case len(r.pools) > 0:
		remoteAllowed = c.Addresses
	case len(r.cfg.RemoteTS) > 0:
		remoteAllowed = r.cfg.RemoteTS
	}
	limit := max(maxChildPrefixes, 2*len(r.cfg.LocalTS))
	remote, okRemote := narrowSelectors(tsi.Selectors, remoteAllowed, limit)
	local, okLocal := narrowSelectors(tsr.Selectors, r.cfg.LocalTS, limit)
	if !okRemote || !okLocal || len(remote) == 0 || len(local) == 0 {
		r.releaseLeases(c)
		return nil, &wire.Notify{NotifyType: wire.TS_UNACCEPTABLE}
	}
	// Most clients get the gateway's whole networks and their own leased
	// addresses: the Child SA then shares those slices (nothing changes a
	// Child SA's selectors in place; capped, so that an append copies)
	// instead of holding copies, some 120 bytes per client.
	if slices.Equal(local, r.cfg.LocalTS) {
		local = slices.Clip(r.cfg.LocalTS)
	}
	if slices.Equal(remote, c.Addresses) {
		remote = slices.Clip(c.Addresses)
	}
	inSPI := r.drawInboundSPI()
	theirs, probed := peerProbeSPI(req)
	probeSPI, probeAnswer := offerProbeSPI(!r.cfg.DisableMIF && peerMIF(req) && probed, r.drawInboundSPI)
	km, err := childKeys(c.sa.ikeSA, esp, nil, c.sa.ni, c.sa.nr, probeSPI != 0)
	if err != nil {
		r.releaseLeases(c)
		return nil, &wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN}
	}
	child := &ChildSA{InSPI: inSPI, OutSPI: esp.spi, Algorithm: esp.alg, InKey: km.iToR, OutKey: km.rToI, ESN: esp.esn,
		LocalTS: local, RemoteTS: remote, Created: r.cfg.Now(), switched: true}
	child.withProbeSA(probeSPI, theirs, km, false)
	transport, mode := answerTransport(req, r.cfg.Transport, local, remote)
	child.Transport = transport
	if err := r.h.InstallChild(&c.RemoteClient, child, true); err != nil {
		r.log.Warn("installing a client's Child SA", "id", c.ID, "err", err)
		r.releaseLeases(c)
		return nil, &wire.Notify{NotifyType: wire.TEMPORARY_FAILURE}
	}
	c.child = child
	chosen := sel.Proposal
	chosen.SPI = binary.BigEndian.AppendUint32(nil, inSPI)
	reply = append(reply, &wire.SA{Proposals: []wire.Proposal{chosen}},
		&wire.TS{Selectors: selectorsFromPrefixes(remote)}, &wire.TS{Responder: true, Selectors: selectorsFromPrefixes(local)})
	reply = append(reply, mode...)
	return append(reply, probeAnswer...), nil
}

// addressWants is what a client's CP request asks for.
type addressWants struct {
	v4, v6, dns4, dns6, domains bool
	asked                       []netip.Addr // addresses it asked for by value
}

func (w addressWants) any() bool { return w.v4 || w.v6 }

func parseAddressWants(cp *wire.CP) addressWants {
	var w addressWants
	if cp == nil {
		return w
	}
	for _, a := range cp.Attributes {
		switch a.Type {
		case wire.INTERNAL_DNS_DOMAIN:
			w.domains = true
		case wire.INTERNAL_IP4_ADDRESS:
			w.v4 = true
			if len(a.Value) == 4 {
				w.asked = append(w.asked, netip.AddrFrom4([4]byte(a.Value)))
			}
		case wire.INTERNAL_IP6_ADDRESS:
			w.v6 = true
			if len(a.Value) == 17 {
				w.asked = append(w.asked, netip.AddrFrom16([16]byte(a.Value[:16])))
			}
		case wire.INTERNAL_IP4_DNS:
			w.dns4 = true
		case wire.INTERNAL_IP6_DNS:
			w.dns6 = true
		}
	}
	return w
}

// addressesWanted reads the inner addresses the IKE_AUTH request req of
// client c asks for, of the families the pools have; without pools,
// none.
func (r *Responder) addressesWanted(c *rClient, req []wire.Payload) (addressWants, *wire.Notify) {
	if len(r.pools) == 0 {
		return addressWants{}, nil
	}
	cp := wire.Find[*wire.CP](req)
	if cp == nil || cp.CfgType != wire.CFG_REQUEST {
		return addressWants{}, &wire.Notify{NotifyType: wire.FAILED_CP_REQUIRED}
	}
	w := parseAddressWants(cp)
	var has4, has6 bool
	for _, p := range r.pools {
		has4, has6 = has4 || p.Prefix().Addr().Is4(), has6 || p.Prefix().Addr().Is6()
	}
	w.v4, w.v6 = w.v4 && has4, w.v6 && has6
	if !w.any() {
		r.log.Warn("leasing an inner address", "id", c.ID, "err", "the client asked for no address of a family the pools have")
		return w, &wire.Notify{NotifyType: wire.INTERNAL_ADDRESS_FAILURE}
	}
	return w, nil
}

// leaseAddresses takes an address from each pool whose family the client
// c wants: one it asked for by value when the pool grants it, else its
// sticky one or a free one. It runs beside the loop for shared pools
// (admit), so it reads only what no one changes meanwhile. later: a
// shared pool's store answered too late (ErrPoolBusy), and the client
// is better asked to try again than refused.
func (r *Responder) leaseAddresses(c *rClient, w addressWants) (_ []netip.Prefix, _ *wire.Notify, later bool) {
	var got []netip.Prefix
	for _, p := range r.pools {
		is4 := p.Prefix().Addr().Is4()
		if (is4 && !w.v4) || (!is4 && !w.v6) {
			continue
		}
		var a netip.Addr
		for _, want := range w.asked {
			if want.Is4() == is4 && p.LeaseRequested(c.key, want) {
				a = want
				break
			}
		}
		if !a.IsValid() {
			var err error
			if a, err = p.LeaseFor(c.key); err != nil {
				r.releaseAddresses(got)
				if errors.Is(err, ErrPoolBusy) {
					return nil, nil, true
				}
				r.log.Warn("leasing an inner address", "id", c.ID, "err", err)
				return nil, &wire.Notify{NotifyType: wire.INTERNAL_ADDRESS_FAILURE}, false
			}
		}
		got = append(got, netip.PrefixFrom(a, a.BitLen()))
	}
	return got, nil, false
}

// cpReply is the CP reply's attributes: the leased addrs, and the DNS
// servers and domains of the families w asked for.
func (r *Responder) cpReply(addrs []netip.Prefix, w addressWants) []wire.CPAttribute {
	var attrs []wire.CPAttribute
	for _, p := range addrs {
		if a := p.Addr(); a.Is4() {
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP4_ADDRESS, Value: a.AsSlice()})
		} else {
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP6_ADDRESS, Value: append(a.AsSlice(), 128)})
		}
	}
	for _, d := range r.cfg.DNS {
		switch {
		case d.Is4() && w.dns4:
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP4_DNS, Value: d.AsSlice()})
		case d.Is6() && w.dns6:
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP6_DNS, Value: d.AsSlice()})
		}
	}
	if w.domains {
		attrs = append(attrs, wire.DNSDomainAttributes(r.cfg.DNSDomains)...)
	}
	return attrs
}

func (r *Responder) releaseLeases(c *rClient) {
	r.releaseAddresses(c.Addresses)
	c.Addresses = nil
}

// releaseAddresses gives addrs back to their pools.
func (r *Responder) releaseAddresses(addrs []netip.Prefix) {
	for _, a := range addrs {
		for _, p := range r.pools {
			if p.Prefix().Contains(a.Addr()) {
				p.Release(a.Addr())
			}
		}
	}
}
