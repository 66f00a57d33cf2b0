package ike

import (
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/mifsec/mifsec/ike/wire"
)

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
// request.
func (r *Responder) verifyClient(sa *rSA, id Identity, auth *wire.Auth, req []wire.Payload) error {
	octets := initiatorSignedOctets(sa.keys.prf.Sum, sa.initReq, sa.nr, sa.keys.SKpi, id.PayloadBody())
	if auth.Method == wire.AuthPSK {
		psk := r.pskFor(id)
		if len(psk) == 0 {
			if len(r.cfg.ClientPSKs) > 0 {
				return errors.New("it used a pre-shared key, the gateway has none for its identity")
			}
			return errors.New("it used a pre-shared key, the gateway expects a certificate")
		}
		if verifyPSKAuth(sa.keys.prf.Sum, psk, octets, auth.Data) != nil {
			return errors.New("its AUTH does not match the pre-shared key")
		}
		return nil
	}
	if r.cfg.CAs == nil {
		return errors.New("it used a certificate, but no CA is configured")
	}
	var certs [][]byte
	for _, p := range req {
		if c, ok := p.(*wire.Cert); ok && c.Encoding == wire.CertX509Signature {
			certs = append(certs, c.Data)
		}
	}
	if len(certs) == 0 {
		return errors.New("it sent no certificate")
	}
	peer, err := r.cfg.CAs.VerifyPeer(certs[0], certs[1:], id, r.cfg.Now())
	if err != nil {
		return err
	}
	if err := Verify(peer.PublicKey, auth.Method, auth.Data, octets); err != nil {
		return fmt.Errorf("its signature: %w", err)
	}
	return nil
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
			if c.psk == nil || subtle.ConstantTimeCompare(c.psk, r.pskFor(c.ID)) == 1 {
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
// EAP (responder_eap.go).
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
func (r *Responder) admit(sa *rSA, id Identity, req []wire.Payload, from netip.AddrPort, psk, msk []byte) ([]wire.Payload, func()) {
	// From here on the client is known by the canonical form of the
	// identity it authenticated with, for its leases, the limit per
	// identity and INITIAL_CONTACT.
	id = id.Canonical()
	key := id.String()
	replace := wire.FindNotify(req, wire.INITIAL_CONTACT) != nil
	if limit := r.cfg.MaxSAsPerIdentity; limit > 0 && !replace {
		held := 0
		for _, c := range r.clients {
			if c.key == key {
				held++
			}
		}
		if held >= limit {
			return r.authFail(sa, from, "its identity already holds the most IKE SAs allowed", "id", id, "limit", limit)
		}
	}
	// Our AUTH over our IKE_SA_INIT response. After EAP it is keyed with
	// the MSK (RFC 7296 §2.16); IDr and the certificate went with the
	// first response.
	octets := responderSignedOctets(sa.keys.prf.Sum, sa.initResp, sa.ni, sa.keys.SKpr, r.cfg.LocalID.PayloadBody())
	var reply []wire.Payload
	ours := &wire.Auth{}
	switch {
	case msk != nil:
		ours.Method, ours.Data = wire.AuthPSK, pSKAuth(sa.keys.prf.Sum, msk, octets)
	case r.cfg.Key != nil:
		reply = append(reply, r.localIDPayload())
		for _, c := range r.cfg.Certificates {
			reply = append(reply, &wire.Cert{Encoding: wire.CertX509Signature, Data: c.Raw})
		}
		method, data, err := r.sign(sa, octets)
		if err != nil {
			r.log.Warn("signing IKE_AUTH", "err", err)
			return []wire.Payload{&wire.Notify{NotifyType: wire.AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
		}
		ours.Method, ours.Data = method, data
	default:
		reply = append(reply, r.localIDPayload())
		ours.Method, ours.Data = wire.AuthPSK, pSKAuth(sa.keys.prf.Sum, r.pskFor(id), octets)
	}
	reply = append(reply, ours)

	// The client is authenticated from here on. The IKE_SA_INIT messages
	// were only needed for the AUTH payloads (a retransmitted IKE_AUTH gets
	// the cached response): a gateway with many clients need not keep
	// them.
	r.leaveHalfOpen(sa)
	sa.initReq, sa.initResp = nil, nil
	sa.eap = nil
	if replace {
		for _, old := range slices.Clone(r.clients) {
			if old.key == key {
				r.log.Info("client reconnected: dropping its older IKE SA", "id", id, "ike_spi_i", fmt.Sprintf("%016x", old.sa.spiI))
				r.dropClient(old)
			}
		}
	}
	c := &rClient{RemoteClient: RemoteClient{ID: id, Remote: from, Local: sa.reqLocal, IKESPIi: sa.spiI, IKESPIr: sa.spiR}, sa: sa, key: key, established: r.cfg.Now()}
	c.psk = psk
	sa.client = c
	r.clients = append(r.clients, c)

	childReply, fail := r.firstChild(c, req)
	if fail != nil {
		// Nothing of the client stays behind: the IKE SA goes with the
		// answer (the client gives up on it when its first Child SA is
		// refused), and firstChild released the leases.
		r.log.Warn("client authenticated, but no Child SA: dropping it", "id", id, "from", from, "notify", fail.NotifyType)
		r.failures[notifyFailure(fail.NotifyType)]++
		reply = append(reply, fail)
		return reply, func() {
			if slices.Contains(r.clients, c) {
				r.dropClient(c)
			}
		}
	}
	reply = append(reply, childReply...)
	r.log.Info("client connected", "id", id, "from", from, "ike", sa.suite, "esp", c.child.Algorithm,
		"addresses", c.Addresses, "in_spi", fmt.Sprintf("%#x", c.child.InSPI), "out_spi", fmt.Sprintf("%#x", c.child.OutSPI))
	if weak := WeakAlgorithms(sa.suite, c.child.Algorithm); len(weak) > 0 {
		r.log.Warn("client negotiated weak algorithms", "id", id, "from", from, "weak", weak)
	}
	return reply, nil
}

func (r *Responder) localIDPayload() *wire.ID {
	return &wire.ID{Responder: true, IDType: r.cfg.LocalID.Type, Data: r.cfg.LocalID.Data}
}

// sign signs our AUTH octets for the client of sa. A client that sent no
// SIGNATURE_HASH_ALGORITHMS (the IKEv2 client of Windows) can only check
// method 1 (RSA PKCS #1 v1.5 with SHA-1, RFC 7296 §3.8) of an RSA key.
func (r *Responder) sign(sa *rSA, octets []byte) (wire.AuthMethod, []byte, error) {
	if _, isRSA := r.cfg.Key.Public().(*rsa.PublicKey); isRSA && len(sa.peerHashes) == 0 {
		return signRSASHA1(r.cfg.Key, octets)
	}
	return Sign(r.cfg.Key, octets, sa.peerHashes)
}

// firstChild leases the client's addresses and builds its first Child SA
// from IKE_AUTH: the CP reply, SA and narrowed traffic selectors.
func (r *Responder) firstChild(c *rClient, req []wire.Payload) ([]wire.Payload, *wire.Notify) {
	saP := wire.Find[*wire.SA](req)
	tsi, tsr := findTS(req, false), findTS(req, true)
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
		cp := wire.Find[*wire.CP](req)
		if cp == nil || cp.CfgType != wire.CFG_REQUEST {
			return nil, &wire.Notify{NotifyType: wire.FAILED_CP_REQUIRED}
		}
		attrs, err := r.lease(c, cp)
		if err != nil {
			r.log.Warn("leasing an inner address", "id", c.ID, "err", err)
			return nil, &wire.Notify{NotifyType: wire.INTERNAL_ADDRESS_FAILURE}
		}
		reply = append(reply, &wire.CP{CfgType: wire.CFG_REPLY, Attributes: attrs})
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
	inSPI := randomESPSPI()
	theirs, probed := peerProbeSPI(req)
	probeSPI, probeAnswer := offerProbeSPI(!r.cfg.DisableMIF && peerMIF(req) && probed)
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

// lease takes an address from each pool whose family the client asked for
// and returns the CP reply's attributes.
func (r *Responder) lease(c *rClient, cp *wire.CP) ([]wire.CPAttribute, error) {
	var want4, want6, dns4, dns6, domains bool
	for _, a := range cp.Attributes {
		switch a.Type {
		case wire.INTERNAL_DNS_DOMAIN:
			domains = true
		case wire.INTERNAL_IP4_ADDRESS:
			want4 = true
		case wire.INTERNAL_IP6_ADDRESS:
			want6 = true
		case wire.INTERNAL_IP4_DNS:
			dns4 = true
		case wire.INTERNAL_IP6_DNS:
			dns6 = true
		}
	}
	var attrs []wire.CPAttribute
	for _, p := range r.pools {
		is4 := p.Prefix().Addr().Is4()
		if (is4 && !want4) || (!is4 && !want6) {
			continue
		}
		a, err := p.LeaseFor(c.key)
		if err != nil {
			r.releaseLeases(c)
			return nil, err
		}
		if is4 {
			c.Addresses = append(c.Addresses, netip.PrefixFrom(a, 32))
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP4_ADDRESS, Value: a.AsSlice()})
		} else {
			c.Addresses = append(c.Addresses, netip.PrefixFrom(a, 128))
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP6_ADDRESS, Value: append(a.AsSlice(), 128)})
		}
	}
	if len(attrs) == 0 {
		return nil, errors.New("the client asked for no address of a family the pools have")
	}
	for _, d := range r.cfg.DNS {
		switch {
		case d.Is4() && dns4:
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP4_DNS, Value: d.AsSlice()})
		case d.Is6() && dns6:
			attrs = append(attrs, wire.CPAttribute{Type: wire.INTERNAL_IP6_DNS, Value: d.AsSlice()})
		}
	}
	if domains {
		attrs = append(attrs, wire.DNSDomainAttributes(r.cfg.DNSDomains)...)
	}
	return attrs, nil
}

func (r *Responder) releaseLeases(c *rClient) {
	for _, a := range c.Addresses {
		for _, p := range r.pools {
			if p.Prefix().Contains(a.Addr()) {
				p.Release(a.Addr())
			}
		}
	}
	c.Addresses = nil
}
