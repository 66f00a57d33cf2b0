package ike

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// EAP logins at the gateway (RFC 7296 §2.16). A client that sends IKE_AUTH
// without AUTH asks for EAP: the gateway answers with its identity,
// certificate and AUTH (signed as the client can check) and an
// EAP-Identity request, then runs EAP-MSCHAPv2 over further IKE_AUTH
// exchanges. After EAP-Success the client sends AUTH keyed with the MSK,
// the gateway checks it and answers with its own MSK-keyed AUTH and the
// configuration, SA and traffic selectors the first request asked for.
// The IKE SA stays half-open (bounded by HalfOpenTimeout) until then.

// rEAP is the state of an EAP login on a half-open IKE SA.
type rEAP struct {
	server *eapServer
	first  []Payload // the first IKE_AUTH request: its SA, TS and CP make the Child SA
	idi    []byte    // the body of its IDi payload, which the client's AUTH covers
	msk    []byte    // once EAP succeeded
	failed bool      // EAP-Failure sent; the client may still say goodbye
}

var errEAPNeedsKey = errors.New("EAP users need the gateway's certificate and key: EAP clients check the gateway by its certificate")

// eapFailureLinger is how long an IKE SA whose EAP login failed waits for
// the client's INFORMATIONAL (RFC 7296 §2.21.2) before it is dropped.
const eapFailureLinger = 10 * time.Second

// startEAP answers an IKE_AUTH request without AUTH.
func (r *Responder) startEAP(sa *rSA, idi *ID, req []Payload, from netip.AddrPort) ([]Payload, func()) {
	if r.cfg.EAPUsers == nil {
		return r.authFail(sa, from, "it asked for EAP (no AUTH), the gateway has no EAP users", "id", Identity{Type: idi.IDType, Data: idi.Data})
	}
	octets := responderSignedOctets(sa.keys.prf.Sum, sa.initResp, sa.ni, sa.keys.SKpr, r.cfg.LocalID.PayloadBody())
	method, data, err := r.sign(sa, octets)
	if err != nil {
		r.log.Warn("signing IKE_AUTH", "err", err)
		return []Payload{&Notify{NotifyType: AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
	}
	reply := []Payload{r.localIDPayload()}
	for _, c := range r.cfg.Certificates {
		reply = append(reply, &Cert{Encoding: CertX509Signature, Data: c.Raw})
	}
	server, first := newEAPServer(r.cfg.EAPUsers, r.cfg.LocalID.Display())
	server.lockedOut = func(name string) string { return r.eapLimits.lockedOut(name, from, r.cfg.Now()) }
	sa.eap = &rEAP{server: server, first: req, idi: Identity{Type: idi.IDType, Data: idi.Data}.PayloadBody()}
	r.log.Debug("client asked for EAP", "from", from, "idi", Identity{Type: idi.IDType, Data: idi.Data}, "auth_method", method)
	return append(reply, &Auth{Method: method, Data: data}, &EAP{Data: first}), nil
}

// continueEAP answers an IKE_AUTH request of an EAP login under way.
func (r *Responder) continueEAP(sa *rSA, req []Payload, from netip.AddrPort) ([]Payload, func()) {
	e := sa.eap
	if e.failed {
		return r.authFail(sa, from, "IKE_AUTH after its EAP login failed")
	}
	if e.msk != nil {
		auth := Find[*Auth](req)
		if auth == nil || auth.Method != AuthPSK {
			return r.authFail(sa, from, "no shared-key AUTH after EAP-Success", "eap_id", Printable(e.server.identity))
		}
		octets := initiatorSignedOctets(sa.keys.prf.Sum, sa.initReq, sa.nr, sa.keys.SKpi, e.idi)
		if verifyPSKAuth(sa.keys.prf.Sum, e.msk, octets, auth.Data) != nil {
			return r.authFail(sa, from, "its AUTH does not match the EAP MSK", "eap_id", Printable(e.server.identity))
		}
		r.eapLimits.succeeded(e.server.identity, from)
		first, msk := e.first, e.msk
		reply, after := r.admit(sa, eapIdentity(e.server.identity), first, from, nil, msk)
		clear(msk)
		return r.authMobility(sa, first, reply), after
	}
	p := Find[*EAP](req)
	if p == nil {
		return r.authFail(sa, from, "no EAP payload in its EAP login")
	}
	out, result, err := e.server.step(p.Data)
	switch result {
	case eapFailed:
		args := []any{"from", from}
		if e.server.guessed {
			args = append(args, "locked_out_for", r.eapLimits.failed(e.server.identity, from, r.cfg.Now()))
		}
		r.log.Warn("client failed to authenticate: EAP: "+err.Error(), args...)
		r.failures[FailAuthentication]++
		e.failed = true
		sa.expires = r.cfg.Now().Add(eapFailureLinger)
		return []Payload{&EAP{Data: out}, &Notify{NotifyType: AUTHENTICATION_FAILED}}, nil
	case eapSucceeded:
		e.msk = e.server.msk
	}
	return []Payload{&EAP{Data: out}}, nil
}

// abandonEAP answers an INFORMATIONAL request on the half-open IKE SA of
// an EAP login (a client that gives up sends N(AUTHENTICATION_FAILED) or
// a Delete there) and drops the IKE SA.
func (r *Responder) abandonEAP(sa *rSA, req []Payload, from netip.AddrPort) ([]Payload, func()) {
	if !sa.eap.failed {
		r.log.Info("client gave up its EAP login", "from", from, "authentication_failed", FindNotify(req, AUTHENTICATION_FAILED) != nil)
	}
	return nil, func() { r.forget(sa) }
}

// eapIdentity is the identity of a client that logged in as EAP user
// name: as --local-id would read it, else a key ID.
func eapIdentity(name string) Identity {
	if id, err := ParseIdentity(name); err == nil && id.Type != IDDN {
		return id
	}
	return Identity{Type: IDKeyID, Data: []byte(name)}
}

// SetEAPUsers replaces the EAP users while the responder runs: later
// logins check the new passwords; clients logged in stay. Nil stops EAP.
func (r *Responder) SetEAPUsers(ctx context.Context, users *EAPUsers) error {
	if users != nil && r.cfg.Key == nil {
		return errEAPNeedsKey
	}
	if !r.do(ctx, func() { r.cfg.EAPUsers = users }) {
		return ctx.Err()
	}
	return nil
}
