// Redirect (RFC 5685), both roles: a gateway that is full or draining
// sends new clients elsewhere in its IKE_SA_INIT response and its
// established clients with an INFORMATIONAL request; the initiator
// follows, connecting to the new gateway before it deletes the old IKE
// SA (make before break).

package ike

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// Redirector names the gateway a full or draining Responder sends a client
// to. A registry of gateways (the least-loaded member of a cluster)
// implements it as well as StaticRedirector does. It runs on the
// Responder's loop, for every IKE_SA_INIT it redirects: it must not block.
type Redirector interface {
	// RedirectTarget returns the gateway the client at client should use
	// instead of this one; false when there is none (the client is then
	// refused, or stays until the drain deletes its IKE SA).
	RedirectTarget(client netip.AddrPort) (netip.Addr, bool)
}

// StaticRedirector sends clients to a fixed list of gateways in turn
// (round robin, so that a draining gateway's clients spread over all of
// them rather than fill the first).
type StaticRedirector struct {
	targets []netip.Addr
	next    atomic.Uint64
}

// NewStaticRedirector returns a redirector over targets; it refuses an
// empty list or an address that is not one host's.
func NewStaticRedirector(targets []netip.Addr) (*StaticRedirector, error) {
	if len(targets) == 0 {
		return nil, errors.New("no gateway to redirect to")
	}
	for _, a := range targets {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("cannot redirect clients to %s", a)
		}
	}
	out := make([]netip.Addr, len(targets))
	for i, a := range targets {
		out[i] = a.Unmap()
	}
	return &StaticRedirector{targets: out}, nil
}

// RedirectTarget implements Redirector: the next gateway of the list.
func (s *StaticRedirector) RedirectTarget(netip.AddrPort) (netip.Addr, bool) {
	n := s.next.Add(1) - 1
	return s.targets[n%uint64(len(s.targets))], true
}

// defaultDrainTimeout is how long a draining gateway waits for its
// redirected clients to delete their IKE SAs before it deletes them.
const defaultDrainTimeout = 10 * time.Second

// RedirectStatus is what `mifsec status` shows of redirects.
type RedirectStatus struct {
	Draining bool `json:"draining,omitempty"`
	// Redirected counts the IKE_SA_INIT requests answered with REDIRECT
	// and the established clients sent an INFORMATIONAL REDIRECT.
	Redirected uint64 `json:"redirected,omitempty"`
}

// refusesNew reports whether the gateway takes no new IKE SAs: it drains,
// or its clients and half-open IKE SAs reach MaxClients.
func (r *Responder) refusesNew() bool {
	return r.draining || (r.cfg.MaxClients > 0 && len(r.clients)+len(r.halfOpen) >= r.cfg.MaxClients)
}

// redirectInit answers an IKE_SA_INIT request the gateway does not take
// with REDIRECT (RFC 5685 §4.1: the new gateway and the client's nonce Ni,
// so that an attacker off the path cannot forge it) when the client
// supports redirects and the Redirector names a gateway, else with
// TEMPORARY_FAILURE. Either answer keeps no state and costs no more than
// a cookie: no Diffie-Hellman, one small message.
func (r *Responder) redirectInit(m *wire.Message, in inbound, ni []byte) {
	why := "full"
	if r.draining {
		why = "draining"
	}
	if supportsRedirect(m.Payloads) && r.cfg.Redirector != nil {
		if to, ok := r.cfg.Redirector.RedirectTarget(in.from); ok {
			data, err := wire.AppendRedirectData(nil, wire.RedirectGateway{Addr: to}, ni)
			if err == nil {
				r.log.Debug("redirecting a new client", "from", in.from, "to", to, "gateway", why)
				r.redirected++
				r.answerInit(m, in, &wire.Notify{NotifyType: wire.REDIRECT, Data: data})
				return
			}
			r.log.Warn("redirecting a new client", "to", to, "err", err)
		}
	}
	r.log.Debug("refusing IKE_SA_INIT: the gateway is "+why, "from", in.from, "redirect_supported", supportsRedirect(m.Payloads))
	r.answerInit(m, in, &wire.Notify{NotifyType: wire.TEMPORARY_FAILURE})
}

// supportsRedirect reports whether an IKE_SA_INIT request says its sender
// follows redirects: REDIRECT_SUPPORTED, or REDIRECTED_FROM, which a
// redirected client sends instead (RFC 5685 §4.1).
func supportsRedirect(ps []wire.Payload) bool {
	return wire.FindNotify(ps, wire.REDIRECT_SUPPORTED) != nil || wire.FindNotify(ps, wire.REDIRECTED_FROM) != nil
}

// Drain makes the gateway take no new client (IKE_SA_INIT is redirected
// or refused) and redirects its established clients that support it to
// the gateways the Redirector names (INFORMATIONAL with REDIRECT, RFC 5685
// §5). A client that leaves deletes its IKE SA; the gateway deletes the
// ones still there after DrainTimeout. It returns how many clients are
// asked to leave; calling it again changes nothing.
func (r *Responder) Drain(ctx context.Context) (int, error) {
	n := 0
	ok := r.do(ctx, func() {
		if !r.draining {
			r.draining = true
			r.drainUntil = r.cfg.Now().Add(r.cfg.DrainTimeout)
			r.log.Info("draining: new clients are redirected, established ones asked to move", "clients", len(r.clients),
				"deleted_after", r.cfg.DrainTimeout)
		}
		for _, c := range slices.Clone(r.clients) {
			r.redirectClient(c)
		}
		n = len(r.clients)
	})
	if !ok {
		return 0, ctx.Err()
	}
	return n, nil
}

// RedirectStatus returns whether the gateway drains and how many clients
// it redirected.
func (r *Responder) RedirectStatus(ctx context.Context) RedirectStatus {
	var st RedirectStatus
	r.do(ctx, func() { st = RedirectStatus{Draining: r.draining, Redirected: r.redirected} })
	return st
}

// redirectClient sends c an INFORMATIONAL request with REDIRECT once, when
// c supports redirects, the Redirector names a gateway and no other
// request of the gateway is outstanding (else the next tick tries again).
func (r *Responder) redirectClient(c *rClient) {
	if c.redirectSent || !c.redirectOK || c.pending != nil || c.sa == nil || r.cfg.Redirector == nil {
		return
	}
	to, ok := r.cfg.Redirector.RedirectTarget(c.Remote)
	if !ok {
		return
	}
	data, err := wire.AppendRedirectData(nil, wire.RedirectGateway{Addr: to}, nil)
	if err != nil {
		r.log.Warn("redirecting a client", "id", c.ID, "to", to, "err", err)
		return
	}
	err = r.request(c, wire.INFORMATIONAL, []wire.Payload{&wire.Notify{NotifyType: wire.REDIRECT, Data: data}}, func(reply []wire.Payload) {
		if reply == nil {
			r.log.Info("redirected client did not answer", "id", c.ID, "to", to)
		}
	})
	if err != nil {
		r.log.Debug("redirecting a client", "id", c.ID, "err", err)
		return
	}
	c.redirectSent = true
	r.redirected++
	r.log.Info("redirecting client", "id", c.ID, "from", c.Remote, "to", to)
}

// drainTick redirects the clients not asked yet and deletes, once the
// drain's time is up, the IKE SAs of those still there.
func (r *Responder) drainTick(now time.Time) {
	if !r.draining {
		return
	}
	late := !now.Before(r.drainUntil)
	for _, c := range slices.Clone(r.clients) {
		if late {
			r.log.Info("draining: deleting the IKE SA of a client still here", "id", c.ID, "from", c.Remote, "redirected", c.redirectSent)
			r.sayGoodbye(c)
			continue
		}
		r.redirectClient(c)
	}
}

// Loop protection of the initiator (RFC 5685 §4.1, §10): at most
// maxRedirects redirects are followed within redirectWindow.
const (
	maxRedirects   = 5
	redirectWindow = 5 * time.Minute
)

// redirectError ends an IKE_SA_INIT exchange or the service of an IKE SA
// whose gateway redirected us to to.
type redirectError struct{ to wire.RedirectGateway }

func (e *redirectError) Error() string { return "the gateway redirected us to " + e.to.String() }

// RedirectHandler is implemented by a Handler that follows the session to
// another gateway (RFC 5685): ESP goes to gateway from now on. It runs on
// the session's loop, just before the Child SA with the new gateway is
// installed.
type RedirectHandler interface {
	Redirected(gateway netip.AddrPort)
}

// redirectNotify is what our IKE_SA_INIT request says about redirects:
// REDIRECTED_FROM naming the gateway that sent us here, or
// REDIRECT_SUPPORTED; nothing when the configuration disables them.
func (s *Session) redirectNotify() []wire.Payload {
	if s.cfg.DisableRedirect {
		return nil
	}
	if s.redirectedFrom.IsValid() {
		data, err := wire.AppendRedirectData(nil, wire.RedirectGateway{Addr: s.redirectedFrom}, nil)
		if err == nil {
			return []wire.Payload{&wire.Notify{NotifyType: wire.REDIRECTED_FROM, Data: data}}
		}
	}
	return []wire.Payload{&wire.Notify{NotifyType: wire.REDIRECT_SUPPORTED}}
}

// initRedirect checks a REDIRECT in an IKE_SA_INIT response: it must carry
// our nonce ni (compared in constant time), else anyone who saw no more
// than our address could send us elsewhere (RFC 5685 §4.1).
func (s *Session) initRedirect(n *wire.Notify, ni []byte) (*redirectError, error) {
	if s.cfg.DisableRedirect {
		return nil, errors.New("IKE_SA_INIT: a REDIRECT, which we did not say we support")
	}
	g, nonce, err := wire.ParseRedirectData(n.Data)
	if err != nil {
		return nil, fmt.Errorf("IKE_SA_INIT: malformed REDIRECT: %w", err)
	}
	if len(nonce) != len(ni) || subtle.ConstantTimeCompare(nonce, ni) != 1 {
		s.log.Warn("ignoring a REDIRECT that does not carry our nonce (spoofed?)", "to", g)
		return nil, errors.New("IKE_SA_INIT: a REDIRECT without our nonce")
	}
	return &redirectError{to: g}, nil
}

// followRedirect points the session at the gateway to, which the current
// one redirected us to, if the loop protection allows another redirect.
func (s *Session) followRedirect(ctx context.Context, to wire.RedirectGateway) error {
	now := s.cfg.Now()
	s.redirects = slices.DeleteFunc(s.redirects, func(t time.Time) bool { return now.Sub(t) >= redirectWindow })
	if len(s.redirects) >= maxRedirects {
		return fmt.Errorf("%w: redirected %d times within %v (a redirect loop?); not following the redirect to %s",
			ErrUnavailable, len(s.redirects), redirectWindow, to)
	}
	addr := to.Addr
	if !addr.IsValid() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", to.Name)
		cancel()
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("resolving %s, the gateway we were redirected to: %v", to.Name, err)
		}
		addr = addrs[0]
	}
	addr = addr.Unmap()
	from := s.cfg.Remote
	if addr == from.Addr() {
		return fmt.Errorf("%w: the gateway %s redirected us to itself", ErrUnavailable, from.Addr())
	}
	if !addr.IsValid() || addr.IsUnspecified() || addr.IsMulticast() {
		return fmt.Errorf("the gateway %s redirected us to %s, which is no gateway", from.Addr(), addr)
	}
	s.redirects = append(s.redirects, now)
	s.redirectedFrom = from.Addr()
	s.cfg.Remote = netip.AddrPortFrom(addr, from.Port())
	if p := s.mob.path; p != nil && p.Gateway.IsValid() {
		// The path led to another address of the old gateway: it leads
		// to the new one now.
		moved := *p
		moved.Gateway = netip.Addr{}
		s.mob.path = &moved
	}
	s.log.Info("redirected by the gateway", "from", from.Addr(), "to", s.cfg.Remote, "gateway_named", to)
	s.setStatus(func(st *Status) {
		st.Gateway, st.RedirectedFrom = s.cfg.Remote.String(), from.String()
		st.Redirects++
	})
	return nil
}

// tellRedirected tells the handler where ESP goes when the session now
// talks to another gateway than it last told.
func (s *Session) tellRedirected() {
	h, ok := s.h.(RedirectHandler)
	if !ok || s.toldGateway == s.cfg.Remote {
		return
	}
	s.toldGateway = s.cfg.Remote
	h.Redirected(s.cfg.Remote)
}

// informationalRedirect returns what ends the service of sa when an
// INFORMATIONAL request on it carries a REDIRECT (RFC 5685 §5), nil when
// it carries none we follow.
func (s *Session) informationalRedirect(sa *ikeSA, req []wire.Payload) func() error {
	n := wire.FindNotify(req, wire.REDIRECT)
	if n == nil || sa != s.sa {
		return nil
	}
	if s.cfg.DisableRedirect {
		s.log.Info("ignoring the gateway's REDIRECT: redirects are disabled")
		return nil
	}
	g, _, err := wire.ParseRedirectData(n.Data)
	if err != nil {
		s.log.Warn("ignoring a malformed REDIRECT from the gateway", "err", err)
		return nil
	}
	return func() error { return &redirectError{to: g} }
}

// heldSA is what one IKE SA with its Child SAs holds in a Session,
// set aside while the session connects to another gateway.
type heldSA struct {
	sa                *ikeSA
	oldSAs            []*ikeSA
	child             *ChildSA
	oldKids           []*ChildSA
	remote, cfgRemote netip.AddrPort
	natT              bool
	path              *Path
	redirectedFrom    netip.Addr
	redirects         []time.Time
	status            Status
}

// moveTo follows a REDIRECT of the established IKE SA (RFC 5685 §5) make
// before break: the IKE SA and Child SA with the new gateway are set up
// while the old ones still carry traffic; then the new Child SA takes
// over and the old IKE SA is deleted at the old gateway. When the new
// gateway cannot be reached, the old IKE SA stays as it was.
func (s *Session) moveTo(ctx context.Context, to wire.RedirectGateway) error {
	old := heldSA{sa: s.sa, oldSAs: s.oldSAs, child: s.child, oldKids: s.oldKids, remote: s.remote, cfgRemote: s.cfg.Remote,
		natT: s.natT, path: s.mob.path, redirectedFrom: s.redirectedFrom, redirects: slices.Clone(s.redirects), status: s.Status()}
	restore := func() {
		s.sa, s.oldSAs, s.child, s.oldKids, s.remote, s.cfg.Remote, s.natT = old.sa, old.oldSAs, old.child, old.oldKids, old.remote, old.cfgRemote, old.natT
		s.redirectedFrom, s.redirects, s.mob.path = old.redirectedFrom, old.redirects, old.path
		s.tellRedirected()
		s.setStatus(func(st *Status) { *st = old.status })
	}
	if err := s.followRedirect(ctx, to); err != nil {
		return err
	}
	s.sa, s.oldSAs, s.child, s.oldKids = nil, nil, nil, nil
	s.keepAddrs = nil
	for _, a := range old.status.Addresses {
		if p, err := netip.ParsePrefix(a); err == nil {
			s.keepAddrs = append(s.keepAddrs, p)
		}
	}
	defer func() { s.keepAddrs = nil }()
	start := s.cfg.Now()
	if err := s.connect(ctx, true); err != nil {
		restore()
		return fmt.Errorf("following the redirect to %s: %w", to, err)
	}
	// The new Child SA sends now; the old ones go.
	for _, c := range append(slices.Clone(old.oldKids), old.child) {
		if c != nil {
			s.h.RemoveChild(c)
			c.Wipe()
		}
	}
	for _, sa := range old.oldSAs {
		sa.wipe()
	}
	s.deleteAt(old.sa, old.remote, old.natT, old.path)
	s.log.Info("moved to the gateway we were redirected to", "from", old.cfgRemote, "to", s.cfg.Remote,
		"took", s.cfg.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// deleteAt deletes sa, an IKE SA that is no longer the current one, at the
// gateway at remote (on path, as that IKE SA last used it): one exchange,
// retransmitted briefly, since nothing is lost if that gateway never
// hears it.
func (s *Session) deleteAt(sa *ikeSA, remote netip.AddrPort, natT bool, path *Path) {
	if sa == nil {
		return
	}
	cur, curNatT, curPath := s.remote, s.natT, s.mob.path
	s.remote, s.natT, s.mob.path = remote, natT, path
	s.oldSAs = append(s.oldSAs, sa) // so that the answer finds it
	defer func() {
		s.remote, s.natT, s.mob.path = cur, curNatT, curPath
		s.oldSAs = slices.DeleteFunc(s.oldSAs, func(o *ikeSA) bool { return o == sa })
		sa.wipe()
	}()
	s.deleteIKESA(sa)
}
