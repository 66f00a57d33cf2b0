// IKE_AUTH with EAP (RFC 7296 §2.16), both roles: the client's
// EAP-MSCHAPv2 login, the gateway's local or RADIUS check and accounting.

package ike

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"layeh.com/radius"
)

// eapLogin runs EAP-MSCHAPv2 after the gateway's first IKE_AUTH response
// (first, whose signature verifyGateway checked), then sends AUTH keyed
// with the MSK and checks the gateway's. It returns the last response,
// which carries the configuration, SA and traffic selectors.
func (s *Session) eapLogin(ctx context.Context, init *initResult, first []wire.Payload) ([]wire.Payload, error) {
	sa := init.sa
	client := &eapClient{cred: s.cfg.EAP}
	reply := first
	for round := 0; !client.done; round++ {
		p := wire.Find[*wire.EAP](reply)
		if p == nil {
			return nil, fmt.Errorf("%w: IKE_AUTH: the gateway proved its identity but sent no EAP request (it does not do EAP for us)", ErrAuthFailed)
		}
		if round == maxEAPRounds {
			return nil, fmt.Errorf("IKE_AUTH: the gateway sent more than %d EAP requests", maxEAPRounds)
		}
		answer, err := client.step(p.Data)
		if err != nil {
			return nil, fmt.Errorf("IKE_AUTH with %s: EAP-MSCHAPv2 as %s: %w", s.cfg.Remote, Printable(s.cfg.EAP.Identity), err)
		}
		if answer == nil {
			break
		}
		if reply, err = s.exchange(ctx, sa, wire.IKE_AUTH, []wire.Payload{&wire.EAP{Data: answer}}, s.cfg.Retransmit); err != nil {
			return nil, fmt.Errorf("IKE_AUTH with %s: %w", s.cfg.Remote, err)
		}
		if err := firstError(reply, "IKE_AUTH"); err != nil {
			return nil, err
		}
	}
	msk := client.msk
	defer clear(msk)
	octets := initiatorSignedOctets(sa.keys.prf().Sum, init.request, sa.nr, sa.keys.SKpi(), s.cfg.LocalID.PayloadBody())
	reply, err := s.exchange(ctx, sa, wire.IKE_AUTH, []wire.Payload{&wire.Auth{Method: wire.AuthPSK, Data: pSKAuth(sa.keys.prf().Sum, msk, octets)}}, s.cfg.Retransmit)
	if err != nil {
		return nil, fmt.Errorf("IKE_AUTH with %s: %w", s.cfg.Remote, err)
	}
	if err := firstError(reply, "IKE_AUTH"); err != nil {
		return nil, err
	}
	auth, idr := wire.Find[*wire.Auth](reply), wire.Find[*wire.ID](first)
	if auth == nil || auth.Method != wire.AuthPSK {
		return nil, fmt.Errorf("%w: the gateway's last IKE_AUTH response has no AUTH keyed with the EAP MSK", ErrAuthFailed)
	}
	theirs := responderSignedOctets(sa.keys.prf().Sum, init.response, sa.ni, sa.keys.SKpr(), Identity{Type: idr.IDType, Data: idr.Data}.PayloadBody())
	if verifyPSKAuth(sa.keys.prf().Sum, msk, theirs, auth.Data) != nil {
		return nil, fmt.Errorf("%w: the gateway's AUTH does not match the EAP MSK", ErrAuthFailed)
	}
	return reply, nil
}

// rEAP is the state of an EAP login on a half-open IKE SA.
type rEAP struct {
	server *eapServer
	first  []wire.Payload // the first IKE_AUTH request: its SA, TS and CP make the Child SA
	idi    []byte         // the body of its IDi payload, which the client's AUTH covers
	msk    []byte         // once EAP succeeded
	failed bool           // EAP-Failure sent; the client may still say goodbye
	// Through RADIUS: the server's State and the identifier of the EAP
	// response the Access-Request out carries.
	state     []byte
	relayedID uint8
}

// startEAP answers an IKE_AUTH request without AUTH.
func (r *Responder) startEAP(sa *rSA, idi *wire.ID, req []wire.Payload, from netip.AddrPort) ([]wire.Payload, func()) {
	if r.cfg.EAPUsers == nil && r.radius == nil {
		return r.authFail(sa, from, "it asked for EAP (no AUTH), the gateway has no EAP users", "id", Identity{Type: idi.IDType, Data: idi.Data})
	}
	octets := responderSignedOctets(sa.keys.prf().Sum, sa.half.initResp, sa.ni, sa.keys.SKpr(), r.cfg.LocalID.PayloadBody())
	method, data, err := r.sign(sa.half.peerHashes, octets)
	if err != nil {
		r.log.Warn("signing IKE_AUTH", "err", err)
		return []wire.Payload{&wire.Notify{NotifyType: wire.AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
	}
	reply := []wire.Payload{r.localIDPayload()}
	for _, c := range r.cfg.Certificates {
		reply = append(reply, &wire.Cert{Encoding: wire.CertX509Signature, Data: c.Raw})
	}
	server, first := newEAPServer(r.cfg.EAPUsers, r.cfg.LocalID.Display())
	server.lockedOut = func(name string) string { return r.eapLimits.lockedOut(name, from, r.cfg.Now()) }
	sa.half.eap = &rEAP{server: server, first: req, idi: Identity{Type: idi.IDType, Data: idi.Data}.PayloadBody()}
	r.log.Debug("client asked for EAP", "from", from, "idi", Identity{Type: idi.IDType, Data: idi.Data}, "auth_method", method)
	return append(reply, &wire.Auth{Method: method, Data: data}, &wire.EAP{Data: first}), nil
}

// continueEAP answers an IKE_AUTH request of an EAP login under way.
func (r *Responder) continueEAP(sa *rSA, req []wire.Payload, from netip.AddrPort) ([]wire.Payload, func()) {
	e := sa.half.eap
	if e.failed {
		return r.authFail(sa, from, "IKE_AUTH after its EAP login failed")
	}
	if e.msk != nil {
		auth := wire.Find[*wire.Auth](req)
		if auth == nil || auth.Method != wire.AuthPSK {
			return r.authFail(sa, from, "no shared-key AUTH after EAP-Success", "eap_id", Printable(e.server.identity))
		}
		ok := r.signedOver(sa, func(initReq []byte) bool {
			octets := initiatorSignedOctets(sa.keys.prf().Sum, initReq, sa.nr, sa.keys.SKpi(), e.idi)
			return verifyPSKAuth(sa.keys.prf().Sum, e.msk, octets, auth.Data) == nil
		})
		if !ok {
			return r.authFail(sa, from, "its AUTH does not match the EAP MSK", "eap_id", Printable(e.server.identity))
		}
		r.eapLimits.succeeded(e.server.identity, from)
		// Our AUTH, keyed with the MSK, is in the reply (or in admit's
		// answer to come). The MSK is wiped with the half-open state
		// (dropHalfOpen, wipe), not here: a request whose leases came too
		// late is checked again with it when the client retransmits.
		return r.admit(sa, eapIdentity(e.server.identity), e.first, from, nil, e.msk)
	}
	p := wire.Find[*wire.EAP](req)
	if p == nil {
		return r.authFail(sa, from, "no EAP payload in its EAP login")
	}
	out, result, err := e.server.step(p.Data)
	switch result {
	case eapFailed:
		return r.refuseEAP(sa, from, out, err, e.server.guessed)
	case eapSucceeded:
		e.msk = e.server.msk
	}
	return []wire.Payload{&wire.EAP{Data: out}}, nil
}

// refuseEAP answers a failed EAP login with failure (an EAP-Failure) and
// AUTHENTICATION_FAILED, logs why once and, when a password was tried
// (guessed), counts it against the name and the source. The IKE SA waits
// eapFailureLinger for the client's goodbye.
func (r *Responder) refuseEAP(sa *rSA, from netip.AddrPort, failure []byte, why error, guessed bool) ([]wire.Payload, func()) {
	args := []any{"from", from}
	if guessed {
		args = append(args, "locked_out_for", r.eapLimits.failed(sa.half.eap.server.identity, from, r.cfg.Now()))
	}
	r.log.Warn("client failed to authenticate: EAP: "+why.Error(), args...)
	r.failures[FailAuthentication]++
	sa.half.eap.failed = true
	sa.half.expires = r.cfg.Now().Add(eapFailureLinger)
	return []wire.Payload{&wire.EAP{Data: failure}, &wire.Notify{NotifyType: wire.AUTHENTICATION_FAILED}}, nil
}

// relaysEAP says whether the client's next EAP packet goes to the RADIUS
// server: with one configured, until it accepted or refused the login.
func (r *Responder) relaysEAP(sa *rSA) bool {
	return r.radius != nil && sa.half.eap.msk == nil && !sa.half.eap.failed
}

// relayEAP sends the EAP packet of the IKE_AUTH request id to the RADIUS
// server, beside the loop; radiusAnswered answers the client. While the
// request is out, its retransmissions are dropped (rSA.answering).
func (r *Responder) relayEAP(sa *rSA, id uint32, req []wire.Payload, from netip.AddrPort) {
	e := sa.half.eap
	p := wire.Find[*wire.EAP](req)
	if p == nil || len(p.Data) < 2 {
		r.answerLater(sa, id, from)(r.authFail(sa, from, "no EAP packet in its EAP login"))
		return
	}
	e.relayedID = p.Data[1]
	if e.server.identity == "" {
		// The first answer is the identity, which names the user to the
		// server and to the lockout (eap_limits.go).
		m, err := parseEAP(p.Data)
		if err != nil || m.Code != eapCodeResponse || m.Type != eapTypeIdentity || len(m.Data) == 0 || len(m.Data) > 253 {
			r.answerLater(sa, id, from)(r.authFail(sa, from, "its first EAP packet is no identity"))
			return
		}
		e.server.identity = string(m.Data)
	}
	if why := r.eapLimits.lockedOut(e.server.identity, from, r.cfg.Now()); why != "" {
		r.answerLater(sa, id, from)(r.refuseEAP(sa, from, eapMessage{Code: eapCodeFailure, ID: e.relayedID}.marshal(), errors.New(why), false))
		return
	}
	sa.answering = true
	user, data, state := e.server.identity, slices.Clone(p.Data), e.state
	go func() {
		a, err := r.radius.authenticate(user, data, state, from)
		select {
		case r.besideDone <- func() { r.radiusAnswered(sa, id, from, a, err) }:
		case <-r.quit:
		}
	}()
}

// radiusAnswered answers the IKE_AUTH request id with what the RADIUS
// server said (or did not).
func (r *Responder) radiusAnswered(sa *rSA, id uint32, from netip.AddrPort, a radiusAnswer, err error) {
	if r.sas[saKey{sa.spiI, sa.spiR}] != sa || sa.eapLogin() == nil || sa.nextIn != id {
		return // the IKE SA went meanwhile
	}
	e := sa.half.eap
	sa.answering = false
	failure := eapMessage{Code: eapCodeFailure, ID: e.relayedID}.marshal()
	if err == nil && len(a.eap) > 0 && a.code == radius.CodeAccessReject {
		failure = a.eap
	}
	answer := r.answerLater(sa, id, from)
	switch {
	case err != nil:
		answer(r.refuseEAP(sa, from, failure, fmt.Errorf("%w; refusing the login of %s", err, Printable(e.server.identity)), false))
	case a.code == radius.CodeAccessReject:
		why := "the RADIUS server refused EAP user " + Printable(e.server.identity)
		if a.reply != "" {
			why += ": " + Printable(a.reply)
		}
		answer(r.refuseEAP(sa, from, failure, errors.New(why), true))
	case len(a.eap) == 0:
		answer(r.refuseEAP(sa, from, failure, fmt.Errorf("the RADIUS server's answer (code %v) has no EAP message", a.code), false))
	case a.code == radius.CodeAccessAccept:
		e.msk = a.msk
		answer([]wire.Payload{&wire.EAP{Data: a.eap}}, nil)
	default:
		e.state = a.state
		answer([]wire.Payload{&wire.EAP{Data: a.eap}}, nil)
	}
}

// answerLater returns what sends the response to the IKE_AUTH request id
// of sa, as handle does for the requests it answers at once.
func (r *Responder) answerLater(sa *rSA, id uint32, from netip.AddrPort) func([]wire.Payload, func()) {
	return func(reply []wire.Payload, after func()) {
		datagrams, err := sealMessage(sa.ikeSA, wire.IKE_AUTH, id, true, reply)
		if err != nil {
			r.log.Warn("building IKE response", "exchange", wire.IKE_AUTH, "err", err)
			return
		}
		sa.lastResp = datagrams
		sa.nextIn++
		r.transmit(sa, sa.reqLocal, from, datagrams)
		if after != nil {
			after()
		}
	}
}

// accountStart records a Start with the accounting server for a client
// the RADIUS server admitted as user.
func (r *Responder) accountStart(c *rClient, user string) {
	s := &radiusSession{id: fmt.Sprintf("%016x%016x", c.IKESPIi, c.IKESPIr), user: user, calling: c.Remote, start: r.cfg.Now()}
	for _, a := range c.Addresses {
		if a.Addr().Is4() {
			s.address = a.Addr()
			break
		}
	}
	c.accounted = s
	r.sendAccounting(*s, false)
}

// accountStop records the Stop of a client's accounting session.
func (r *Responder) accountStop(c *rClient) {
	if c.accounted == nil {
		return
	}
	s := *c.accounted
	c.accounted = nil
	r.sendAccounting(s, true)
}

func (r *Responder) sendAccounting(s radiusSession, stop bool) {
	now := r.cfg.Now()
	r.accounting.Add(1)
	go func() {
		defer r.accounting.Done()
		if err := r.radius.account(s, stop, now); err != nil {
			r.log.Warn("RADIUS accounting", "user", Printable(s.user), "session", s.id, "stop", stop, "err", err)
		}
	}()
}

// waitAccounting waits up to d for the accounting requests in flight.
func (r *Responder) waitAccounting(d time.Duration) {
	done := make(chan struct{})
	go func() { r.accounting.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// abandonEAP answers an INFORMATIONAL request on the half-open IKE SA of
// an EAP login (a client that gives up sends N(AUTHENTICATION_FAILED) or
// a Delete there) and drops the IKE SA.
func (r *Responder) abandonEAP(sa *rSA, req []wire.Payload, from netip.AddrPort) ([]wire.Payload, func()) {
	if !sa.half.eap.failed {
		r.log.Info("client gave up its EAP login", "from", from, "authentication_failed", wire.FindNotify(req, wire.AUTHENTICATION_FAILED) != nil)
	}
	return nil, func() { r.forget(sa) }
}

// eapIdentity is the identity of a client that logged in as EAP user
// name: as --local-id would read it, else a key ID.
func eapIdentity(name string) Identity {
	if id, err := ParseIdentity(name); err == nil && id.Type != wire.IDDN {
		return id
	}
	return Identity{Type: wire.IDKeyID, Data: []byte(name)}
}

// SetEAPUsers replaces the EAP users while the responder runs: later
// logins check the new passwords; clients logged in stay. Nil stops EAP.
func (r *Responder) SetEAPUsers(ctx context.Context, users *EAPUsers) error {
	if users != nil && r.cfg.Key == nil {
		return errEAPNeedsKey
	}
	if users != nil && r.radius != nil {
		return errors.New("the gateway checks EAP logins with its RADIUS server")
	}
	if !r.do(ctx, func() { r.cfg.EAPUsers = users }) {
		return ctx.Err()
	}
	return nil
}

// maxEAPRounds bounds the EAP requests a gateway may send in one login
// (EAP-MSCHAPv2 needs three: Identity, Challenge, Success).
const maxEAPRounds = 8

var errEAPNeedsKey = errors.New("EAP users need the gateway's certificate and key: EAP clients check the gateway by its certificate")

// eapFailureLinger is how long an IKE SA whose EAP login failed waits for
// the client's INFORMATIONAL (RFC 7296 §2.21.2) before it is dropped.
const eapFailureLinger = 10 * time.Second
