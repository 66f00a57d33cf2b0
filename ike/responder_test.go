package ike

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testenv"
)

// memWire joins initiator Sessions to a Responder in memory.
type memWire struct {
	r        *Responder
	gw       netip.AddrPort
	mu       sync.Mutex
	sessions map[netip.Addr]*Session
	// dropResponse, when set, drops a datagram from the responder when it
	// returns true.
	dropResponse func(b []byte) bool
	seen         []wire.NotifyType   // notifications in unprotected responses
	requests     []wire.ExchangeType // requests the responder sent, in order
	// clientFragments counts the datagrams clients sent that were
	// fragments of a message (RFC 7383).
	clientFragments atomic.Int32
}

type clientSide struct {
	w    *memWire
	addr netip.Addr
}

func (c clientSide) Send(msg []byte, to netip.AddrPort, natT bool) error {
	port := uint16(500)
	if natT {
		port = 4500
	}
	c.w.mu.Lock()
	r := c.w.r
	c.w.mu.Unlock()
	if m, err := wire.Parse(msg); err == nil && len(m.Payloads) > 0 {
		if _, ok := m.Payloads[len(m.Payloads)-1].(*wire.EncryptedFragment); ok {
			c.w.clientFragments.Add(1)
		}
	}
	r.Deliver(msg, to.Addr(), netip.AddrPortFrom(c.addr, port), natT)
	return nil
}

type gatewaySide struct{ w *memWire }

// SendFrom delivers msg to the session at to, from the gateway address
// local (the wire's when local is not given).
func (g gatewaySide) SendFrom(msg []byte, local netip.Addr, to netip.AddrPort, natT bool) error {
	w := g.w
	w.mu.Lock()
	s := w.sessions[to.Addr()]
	drop := w.dropResponse != nil && w.dropResponse(msg)
	if m, err := wire.Parse(msg); err == nil && !m.IsResponse() {
		w.requests = append(w.requests, m.Exchange)
	}
	if m, err := wire.Parse(msg); err == nil && m.Exchange == wire.IKE_SA_INIT {
		for _, n := range wire.FindAll[*wire.Notify](m.Payloads) {
			w.seen = append(w.seen, n.NotifyType)
		}
	}
	w.mu.Unlock()
	if s != nil && !drop {
		if !local.IsValid() || local.IsUnspecified() {
			local = w.gw.Addr()
		}
		s.Deliver(msg, netip.AddrPortFrom(local, to.Port()), natT)
	}
	return nil
}

func (w *memWire) sawNotify(t wire.NotifyType) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.seen, t)
}

// childLog records what a handler was told.
type childLog struct {
	mu        sync.Mutex
	installed []*ChildSA
	removed   []*ChildSA
	switched  []*ChildSA
	addrs     []netip.Prefix
}

func (l *childLog) InstallChild(c *ChildSA) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.installed = append(l.installed, c)
	return nil
}
func (l *childLog) SwitchOutbound(c *ChildSA) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.switched = append(l.switched, c)
}
func (l *childLog) RemoveChild(c *ChildSA) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removed = append(l.removed, c)
}
func (l *childLog) Configured(addrs []netip.Prefix, dns []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs = addrs
	return nil
}

type gwLog struct {
	childLog
	clients []RemoteClient
}

func (l *gwLog) InstallChild(cl *RemoteClient, c *ChildSA, send bool) error {
	l.mu.Lock()
	l.clients = append(l.clients, *cl)
	l.mu.Unlock()
	if send {
		l.childLog.SwitchOutbound(c)
	}
	return l.childLog.InstallChild(c)
}
func (l *gwLog) SwitchOutbound(cl *RemoteClient, c *ChildSA) { l.childLog.SwitchOutbound(c) }
func (l *gwLog) RemoveChild(cl *RemoteClient, c *ChildSA)    { l.childLog.RemoveChild(c) }

func (l *childLog) counts() (installed, removed, switched int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.installed), len(l.removed), len(l.switched)
}

func (l *childLog) last() *ChildSA {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.installed[len(l.installed)-1]
}

func mustProposals(t testing.TB, ike, esp string) ([]ProposalSpec, []ProposalSpec) {
	t.Helper()
	i, err := ParseIKEProposals(ike)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseESPProposals(esp)
	if err != nil {
		t.Fatal(err)
	}
	return i, e
}

func mustID(t testing.TB, s string) Identity {
	t.Helper()
	id, err := ParseIdentity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startResponder runs a responder until the test ends.
func startResponder(t *testing.T, cfg ResponderConfig) (*memWire, *gwLog) {
	t.Helper()
	h := &gwLog{}
	return startResponderWith(t, cfg, h), h
}

// startResponderWith is startResponder with the handler given.
func startResponderWith(t testing.TB, cfg ResponderConfig, h ResponderHandler) *memWire {
	t.Helper()
	w := &memWire{gw: netip.MustParseAddrPort("192.0.2.1:500"), sessions: map[netip.Addr]*Session{}}
	w.runResponder(t, cfg, h)
	return w
}

// runResponder makes a new responder with cfg (completed by the tests'
// defaults) the wire's, until the test ends: a gateway that restarts,
// maybe with other settings.
func (w *memWire) runResponder(t testing.TB, cfg ResponderConfig, h ResponderHandler) {
	t.Helper()
	if cfg.LocalID.Type == 0 {
		cfg.LocalID = mustID(t, "gw.mifsec.test")
	}
	if cfg.IKE == nil {
		cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519,aes128gcm16-prfsha256-ecp256", "aes256gcm16-x25519,aes128gcm16")
	}
	if cfg.Pools == nil {
		cfg.Pools = []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24"), netip.MustParsePrefix("fd03::/64")}
	}
	if cfg.LocalTS == nil {
		cfg.LocalTS = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	}
	cfg.DNS = []netip.Addr{netip.MustParseAddr("10.1.0.53")}
	r, err := NewResponder(cfg, gatewaySide{w}, h)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.r = r
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// newClient makes an initiator session from addr (192.0.2.x) to the
// wire's responder.
func (w *memWire) newClient(t testing.TB, addr string, cfg SessionConfig) (*Session, *childLog) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	cfg.Remote = w.gw
	if cfg.LocalID.Type == 0 {
		cfg.LocalID = mustID(t, "client@mifsec.test")
	}
	if cfg.IKE == nil {
		cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
	}
	cfg.RequestIPv4, cfg.RequestIPv6 = true, true
	cfg.Retransmit = RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 5}
	h := &childLog{}
	return w.attach(t, a, cfg, clientSide{w, a}, h), h
}

// attach makes a session at address a that sends through tr and receives
// what the wire's responder sends to a.
func (w *memWire) attach(t testing.TB, a netip.Addr, cfg SessionConfig, tr Transport, h Handler) *Session {
	t.Helper()
	s, err := NewSession(cfg, tr, h)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.sessions[a] = s
	w.mu.Unlock()
	return s
}

func connect(t testing.TB, s *Session, initialContact bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.connect(ctx, initialContact); err != nil {
		t.Fatal(err)
	}
}

func clients(t *testing.T, w *memWire) []ClientStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.r.Clients(ctx)
}

func leased(t *testing.T, w *memWire) int {
	n := 0
	w.r.do(context.Background(), func() {
		for _, p := range w.r.pools {
			n += p.Leased()
		}
	})
	return n
}

// pairOK checks that a client's and the gateway's Child SA are the two
// halves of one pair.
func pairOK(t *testing.T, c, g *ChildSA) {
	t.Helper()
	if c.InSPI != g.OutSPI || c.OutSPI != g.InSPI || !bytes.Equal(c.InKey, g.OutKey) || !bytes.Equal(c.OutKey, g.InKey) || c.Algorithm != g.Algorithm {
		t.Fatalf("Child SAs do not match:\nclient  %+v\ngateway %+v", c, g)
	}
	cp, gp := c.Probe, g.Probe
	switch {
	case (cp == nil) != (gp == nil):
		t.Fatalf("one side has a probe SA: client %+v, gateway %+v", cp, gp)
	case cp == nil:
	case cp.InSPI != gp.OutSPI || cp.OutSPI != gp.InSPI || !bytes.Equal(cp.InKey, gp.OutKey) || !bytes.Equal(cp.OutKey, gp.InKey):
		t.Fatalf("probe SAs do not match:\nclient  %+v\ngateway %+v", cp, gp)
	case cp.InSPI == c.InSPI || cp.OutSPI == c.OutSPI || bytes.Equal(cp.InKey, c.InKey) || bytes.Equal(cp.OutKey, c.OutKey) || len(cp.InKey) != len(c.InKey):
		t.Fatalf("the probe SA shares an SPI or a key with its Child SA, or differs in key length:\nChild SA %+v\nprobe SA %+v", c, cp)
	}
}

func TestResponderPSKLifecycle(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	w, gh := startResponder(t, ResponderConfig{PSK: psk})
	s, ch := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test")})
	connect(t, s, true)

	want := []netip.Prefix{netip.MustParsePrefix("10.3.0.2/32"), netip.MustParsePrefix("fd03::2/128")}
	if !slices.Equal(ch.addrs, want) {
		t.Fatalf("client got addresses %v, want %v", ch.addrs, want)
	}
	c, g := ch.last(), gh.last()
	pairOK(t, c, g)
	if !slices.Equal(g.RemoteTS, want) || !slices.Equal(g.LocalTS, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}) {
		t.Fatalf("gateway selectors: local %v remote %v", g.LocalTS, g.RemoteTS)
	}
	if !slices.Equal(c.LocalTS, want) || !slices.Equal(c.RemoteTS, g.LocalTS) {
		t.Fatalf("client selectors: local %v remote %v", c.LocalTS, c.RemoteTS)
	}
	if gh.clients[0].Remote != netip.MustParseAddrPort("192.0.2.10:4500") {
		t.Fatalf("client endpoint %v: it should have floated to 4500", gh.clients[0].Remote)
	}
	st := clients(t, w)
	if len(st) != 1 || st[0].ID != "client@mifsec.test" || len(st[0].Addresses) != 2 {
		t.Fatalf("status %+v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Child SA rekey with PFS, then the IKE SA, then a liveness check on
	// the new IKE SA.
	if err := s.rekeyChild(ctx); err != nil {
		t.Fatal(err)
	}
	pairOK(t, ch.last(), gh.last())
	if err := s.rekeyIKE(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.exchange(ctx, s.sa, wire.INFORMATIONAL, nil, s.cfg.Retransmit); err != nil {
		t.Fatal(err)
	}
	if err := s.rekeyChild(ctx); err != nil {
		t.Fatal(err)
	}
	pairOK(t, ch.last(), gh.last())
	st = clients(t, w)
	if len(st) != 1 || st[0].IKERekeys != 1 || st[0].ChildRekeys != 2 || st[0].IKESPIi != s.Status().IKESPIi {
		t.Fatalf("status after rekeys %+v", st)
	}
	installed, removed, _ := gh.counts()
	if installed != 3 || removed != 2 {
		t.Fatalf("gateway installed %d and removed %d Child SAs, want 3 and 2", installed, removed)
	}

	s.shutdown()
	testenv.WaitUntil(t, 5*time.Second, "the gateway to forget every client", func() bool { return len(clients(t, w)) == 0 })
	if n := leased(t, w); n != 0 {
		t.Fatalf("%d addresses still leased after the client left", n)
	}
	if _, removed, _ := gh.counts(); removed != 3 {
		t.Fatalf("gateway removed %d Child SAs, want 3", removed)
	}
}

func TestResponderWrongPSK(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("the gateway's key")})
	s, _ := w.newClient(t, "192.0.2.13", SessionConfig{PSK: []byte("another key")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.connect(ctx, true); err == nil || !errorsIs(err, ErrAuthFailed) {
		t.Fatalf("connect: %v, want an authentication failure", err)
	}
	if n := len(clients(t, w)); n != 0 {
		t.Fatalf("%d clients after a failed authentication", n)
	}
	w.r.do(ctx, func() {
		if len(w.r.sas) != 0 || len(w.r.halfOpen) != 0 {
			t.Errorf("%d IKE SAs, %d half-open left after a failed authentication", len(w.r.sas), len(w.r.halfOpen))
		}
	})
}

// TestResponderClientPSKs: a client with a key of its own authenticates
// with that key only (and the gateway answers with it); other clients use
// the shared key, when there is one.
func TestResponderClientPSKs(t *testing.T) {
	own := map[string][]byte{"alice@mifsec.test": []byte("k-alice-91c2"), "bob.mifsec.test": []byte("k-bob-44d0")}
	for _, tc := range []struct {
		name   string
		shared string // the gateway's shared key, "" for none
		id     string
		psk    string
		ok     bool
	}{
		{name: "own key", shared: "k-shared-7f3a", id: "alice@mifsec.test", psk: "k-alice-91c2", ok: true},
		{name: "own key, no shared key", id: "bob.mifsec.test", psk: "k-bob-44d0", ok: true},
		{name: "listed client with the shared key", shared: "k-shared-7f3a", id: "alice@mifsec.test", psk: "k-shared-7f3a"},
		{name: "another client's key", shared: "k-shared-7f3a", id: "bob.mifsec.test", psk: "k-alice-91c2"},
		{name: "unlisted client, shared key", shared: "k-shared-7f3a", id: "carol@mifsec.test", psk: "k-shared-7f3a", ok: true},
		{name: "unlisted client, no shared key", id: "carol@mifsec.test", psk: "k-alice-91c2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			w, _ := startResponder(t, ResponderConfig{PSK: []byte(tc.shared), ClientPSKs: own,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			s, _ := w.newClient(t, "192.0.2.14", SessionConfig{LocalID: mustID(t, tc.id), PSK: []byte(tc.psk)})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := s.connect(ctx, true)
			switch {
			case tc.ok && err != nil:
				// The client checks the gateway's AUTH with its key too.
				t.Fatalf("connect: %v", err)
			case !tc.ok && !errorsIs(err, ErrAuthFailed):
				t.Fatalf("connect: %v, want an authentication failure", err)
			case !tc.ok && len(clients(t, w)) != 0:
				t.Fatal("a client that failed to authenticate is listed")
			case tc.ok && (len(clients(t, w)) != 1 || clients(t, w)[0].ID != tc.id):
				t.Fatalf("clients %+v, want %s", clients(t, w), tc.id)
			}
			for _, key := range []string{"k-shared-7f3a", "k-alice-91c2", "k-bob-44d0"} {
				if strings.Contains(logs.String(), key) {
					t.Fatalf("a pre-shared key (%q) in the log:\n%s", key, logs.String())
				}
			}
		})
	}
	if _, err := NewResponder(ResponderConfig{ClientPSKs: map[string][]byte{"x.test": nil}, LocalID: mustID(t, "gw.test"),
		LocalTS: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}, nil, &gwLog{}); err == nil {
		t.Error("an empty client key was accepted")
	}
}

// TestResponderSetPSKs changes the keys of a running responder: clients
// whose key is no longer theirs get a Delete and are dropped, the others
// stay; later authentications use the new keys.
func TestResponderSetPSKs(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k-shared-1"),
		ClientPSKs: map[string][]byte{"alice@mifsec.test": []byte("k-alice-1"), "bob@mifsec.test": []byte("k-bob-1")}})
	up := func(addr, id, psk string) *Session {
		s, _ := w.newClient(t, addr, SessionConfig{LocalID: mustID(t, id), PSK: []byte(psk), ReconnectDelay: time.Hour})
		connect(t, s, true)
		return s
	}
	up("192.0.2.21", "alice@mifsec.test", "k-alice-1")
	bob := up("192.0.2.22", "bob@mifsec.test", "k-bob-1")
	up("192.0.2.23", "carol@mifsec.test", "k-shared-1")
	ctx, cancel := context.WithCancel(context.Background())
	bobDone := make(chan struct{})
	go func() { bob.Run(ctx); close(bobDone) }()
	t.Cleanup(func() { cancel(); <-bobDone })
	ids := func() []string {
		var out []string
		for _, c := range clients(t, w) {
			out = append(out, c.ID)
		}
		slices.Sort(out)
		return out
	}

	// Bob's key changes; alice's and the shared one stay.
	revoked, err := w.r.SetPSKs(context.Background(), []byte("k-shared-1"),
		map[string][]byte{"alice@mifsec.test": []byte("k-alice-1"), "bob@mifsec.test": []byte("k-bob-2")})
	if err != nil || len(revoked) != 1 || revoked[0].String() != "bob@mifsec.test" {
		t.Fatalf("SetPSKs: revoked %v, %v; want bob", revoked, err)
	}
	if got := ids(); !slices.Equal(got, []string{"alice@mifsec.test", "carol@mifsec.test"}) {
		t.Fatalf("clients after bob's key changed: %v", got)
	}
	testenv.WaitUntil(t, 5*time.Second, "bob to hear the Delete and reconnect", func() bool { return bob.Status().State == "reconnecting" }) // it heard the Delete
	if n := leased(t, w); n != 4 {
		t.Fatalf("%d addresses leased, want alice's and carol's 4", n)
	}

	// The shared key goes: carol is dropped, alice stays.
	if revoked, err = w.r.SetPSKs(context.Background(), nil, map[string][]byte{"alice@mifsec.test": []byte("k-alice-1"),
		"bob@mifsec.test": []byte("k-bob-2")}); err != nil || len(revoked) != 1 || revoked[0].String() != "carol@mifsec.test" {
		t.Fatalf("SetPSKs: revoked %v, %v; want carol", revoked, err)
	}
	if got := ids(); !slices.Equal(got, []string{"alice@mifsec.test"}) {
		t.Fatalf("clients after the shared key went: %v", got)
	}

	// Later authentications use the new keys.
	c, _ := w.newClient(t, "192.0.2.24", SessionConfig{LocalID: mustID(t, "bob@mifsec.test"), PSK: []byte("k-bob-1")})
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if err := c.connect(cctx, true); !errorsIs(err, ErrAuthFailed) {
		t.Fatalf("bob's old key: %v, want an authentication failure", err)
	}
	up("192.0.2.25", "bob@mifsec.test", "k-bob-2")

	for _, bad := range []map[string][]byte{{"bob@mifsec.test": {}}, nil} {
		if _, err := w.r.SetPSKs(context.Background(), nil, bad); err == nil {
			t.Errorf("SetPSKs(nil, %v) accepted", bad)
		}
	}
	if got := ids(); !slices.Equal(got, []string{"alice@mifsec.test", "bob@mifsec.test"}) {
		t.Fatalf("refused SetPSKs calls changed the clients: %v", got)
	}
}

func TestResponderInvalidKE(t *testing.T) {
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-ecp256", "aes256gcm16")
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), IKE: ikeP, ESP: espP})
	cIKE, cESP := mustProposals(t, "aes256gcm16-prfsha256-x25519-ecp256", "aes256gcm16")
	s, _ := w.newClient(t, "192.0.2.14", SessionConfig{PSK: []byte("k"), IKE: cIKE, ESP: cESP})
	connect(t, s, true)
	if !w.sawNotify(wire.INVALID_KE_PAYLOAD) {
		t.Fatal("no INVALID_KE_PAYLOAD for a KE of a group the gateway does not take")
	}
	if s.sa.suite.DHGroup != wire.DH_ECP_256 {
		t.Fatalf("IKE SA with group %d", s.sa.suite.DHGroup)
	}
}

func TestResponderCookie(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), CookieThreshold: 1})
	// One half-open IKE SA: IKE_SA_INIT without IKE_AUTH.
	half, _ := w.newClient(t, "192.0.2.15", SessionConfig{PSK: []byte("k")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := half.initExchange(ctx); err != nil {
		t.Fatal(err)
	}
	s, ch := w.newClient(t, "192.0.2.16", SessionConfig{PSK: []byte("k")})
	connect(t, s, true)
	if !w.sawNotify(wire.COOKIE) {
		t.Fatal("no COOKIE demanded above the threshold")
	}
	if len(ch.addrs) == 0 {
		t.Fatal("no address after the cookie exchange")
	}
}

// cookieOnce answers the first IKE_SA_INIT request itself with a COOKIE,
// twice (the second as a gateway's answer to a copy of the request sent
// before the client had the cookie), and passes the rest on.
type cookieOnce struct {
	clientSide
	mu     sync.Mutex
	s      *Session
	inits  [][]byte // the IKE_SA_INIT requests sent
	always bool     // every request gets only the cookie, none passes on
}

func (c *cookieOnce) Send(msg []byte, to netip.AddrPort, natT bool) error {
	m, err := wire.Parse(msg)
	if err != nil || m.Exchange != wire.IKE_SA_INIT {
		return c.clientSide.Send(msg, to, natT)
	}
	c.mu.Lock()
	c.inits = append(c.inits, slices.Clone(msg))
	first := len(c.inits) == 1 || c.always
	c.mu.Unlock()
	if !first {
		return c.clientSide.Send(msg, to, natT)
	}
	resp := &wire.Message{SPIi: m.SPIi, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagResponse,
		Payloads: []wire.Payload{&wire.Notify{NotifyType: wire.COOKIE, Data: []byte("a cookie for the test")}}}
	b, err := resp.Marshal()
	if err != nil {
		return err
	}
	c.s.Deliver(b, to, natT)
	c.s.Deliver(b, to, natT)
	return nil
}

// TestSessionCookieRetry: the retry with a cookie is the first request
// with the cookie in front, the key share unchanged (RFC 7296 §2.6), so
// that an answer to a copy of the first request gives the same keys; a
// second demand for the cookie the retry carries makes no third request.
func TestSessionCookieRetry(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
	cfg := SessionConfig{Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), PSK: []byte("k"), RequestIPv4: true,
		Retransmit: RetransmitPolicy{Timeout: 5 * time.Second, Tries: 2}}
	cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	a := netip.MustParseAddr("192.0.2.30")
	tr := &cookieOnce{clientSide: clientSide{w, a}}
	s := w.attach(t, a, cfg, tr, &childLog{})
	tr.s = s
	connect(t, s, true)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.inits) != 2 {
		t.Fatalf("%d IKE_SA_INIT requests, want the first and one retry with the cookie", len(tr.inits))
	}
	first, err := wire.Parse(tr.inits[0])
	if err != nil {
		t.Fatal(err)
	}
	retry, err := wire.Parse(tr.inits[1])
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := retry.Payloads[0].(*wire.Notify); !ok || n.NotifyType != wire.COOKIE || string(n.Data) != "a cookie for the test" {
		t.Fatalf("the retry does not start with the cookie: %v", retry.Payloads[0])
	}
	if retry.SPIi != first.SPIi || len(retry.Payloads) != len(first.Payloads)+1 {
		t.Fatalf("the retry changed the SPI or the payloads: %d payloads after %d", len(retry.Payloads), len(first.Payloads))
	}
	for _, pair := range [][2]wire.Payload{
		{wire.Find[*wire.KE](first.Payloads), wire.Find[*wire.KE](retry.Payloads)},
		{wire.Find[*wire.Nonce](first.Payloads), wire.Find[*wire.Nonce](retry.Payloads)},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("the retry's %T differs from the first request's", pair[0])
		}
	}
}

// TestSessionStaleCookieIsNoRefusal: a gateway that only ever repeats
// the cookie the retry carries (answers to earlier copies; the retries
// themselves dropped) leaves the client with a timeout, not with a
// refusal.
func TestSessionStaleCookieIsNoRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
		cfg := SessionConfig{Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), PSK: []byte("k"), RequestIPv4: true,
			Retransmit: RetransmitPolicy{Timeout: time.Second, Backoff: 1, Tries: 3}}
		cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
		a := netip.MustParseAddr("192.0.2.37")
		tr := &cookieOnce{clientSide: clientSide{w, a}, always: true}
		s := w.attach(t, a, cfg, tr, &childLog{})
		tr.s = s
		_, err := s.initExchange(context.Background())
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("IKE_SA_INIT answered only with the cookie it carries: %v, want a timeout", err)
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if len(tr.inits) != 4 { // the first, then the retry with the cookie and its two retransmissions
			t.Fatalf("%d IKE_SA_INIT requests, want 4", len(tr.inits))
		}
	})
}

// TestResponderCookieCalmDown: cookies are still demanded for 10 s after
// the half-open IKE SAs were last at the threshold, then no longer.
func TestResponderCookieCalmDown(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	advance := func(d time.Duration) { now.Add(int64(d)) }
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), CookieThreshold: 1, HalfOpenTimeout: time.Second,
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cookies := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := 0
		for _, nt := range w.seen {
			if nt == wire.COOKIE {
				n++
			}
		}
		return n
	}
	halfOpen := func(addr string) {
		t.Helper()
		s, _ := w.newClient(t, addr, SessionConfig{PSK: []byte("k")})
		if _, err := s.initExchange(ctx); err != nil {
			t.Fatal(err)
		}
	}
	expire := func() {
		t.Helper()
		advance(2 * time.Second)
		w.r.do(ctx, w.r.tick)
		w.r.do(ctx, func() {
			if len(w.r.halfOpen) != 0 {
				t.Fatalf("%d half-open IKE SAs left", len(w.r.halfOpen))
			}
		})
	}
	var sighted time.Time // the last request that found the threshold
	for _, step := range []struct {
		addr   string
		cookie bool
	}{
		{"192.0.2.31", false}, // none half-open
		{"192.0.2.32", true},  // one: at the threshold
		{"192.0.2.33", true},  // none again, 2 s later
		{"192.0.2.34", true},  // 4 s later: the last sighting was at the previous step
		{"192.0.2.35", false}, // 12 s after the last sighting, set below
	} {
		before := cookies()
		halfOpen(step.addr)
		if got := cookies() > before; got != step.cookie {
			t.Fatalf("client at %s: cookie demanded %v, want %v", step.addr, got, step.cookie)
		}
		if step.addr == "192.0.2.32" {
			expire()
		} else if step.addr == "192.0.2.34" {
			sighted = time.Unix(0, now.Load())
			expire()
			advance(10 * time.Second)
		}
	}
	// A request that arrived while cookies were demanded gets one even
	// when the loop comes to it after the calm-down: it may be a late copy
	// of a request whose client retries with its cookie already.
	expire()
	before := cookies()
	w.r.do(ctx, func() {
		w.r.handle(inbound{data: initRequest(t, 77, "aes256gcm16-prfsha256-x25519", 32, nil),
			from: netip.MustParseAddrPort("192.0.2.36:500"), at: sighted.Add(5 * time.Second)})
	})
	if cookies() == before {
		t.Fatal("no cookie demanded from a request that arrived within the calm-down")
	}
}

func TestResponderHalfOpenExpiry(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), MaxHalfOpen: 2,
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, a := range []string{"192.0.2.17", "192.0.2.18"} {
		s, _ := w.newClient(t, a, SessionConfig{PSK: []byte("k")})
		if _, err := s.initExchange(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The table is full: a third is dropped.
	s, _ := w.newClient(t, "192.0.2.19", SessionConfig{PSK: []byte("k"), Retransmit: RetransmitPolicy{Timeout: 50 * time.Millisecond, Tries: 1}})
	s.cfg.Retransmit = RetransmitPolicy{Timeout: 50 * time.Millisecond, Backoff: 1, Tries: 1}
	if _, err := s.initExchange(ctx); err == nil {
		t.Fatal("a half-open IKE SA beyond the limit was accepted")
	}
	now.Add(int64(time.Minute))
	w.r.do(ctx, w.r.tick)
	w.r.do(ctx, func() {
		if len(w.r.halfOpen) != 0 || len(w.r.sas) != 0 {
			t.Errorf("half-open IKE SAs left after their timeout: %d", len(w.r.halfOpen))
		}
	})
	s.cfg.Retransmit = RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 5}
	connect(t, s, true)
}

func TestResponderRetransmittedRequests(t *testing.T) {
	w, gh := startResponder(t, ResponderConfig{PSK: []byte("k")})
	var dropped atomic.Int32
	w.dropResponse = func(b []byte) bool {
		// The first IKE_SA_INIT, IKE_AUTH and INFORMATIONAL response
		// are lost.
		m, err := wire.Parse(b)
		if err != nil || m.Flags&wire.FlagResponse == 0 || (m.Exchange != wire.IKE_SA_INIT && m.Exchange != wire.IKE_AUTH && m.Exchange != wire.INFORMATIONAL) {
			return false
		}
		bit := int32(1) << (m.Exchange - wire.IKE_SA_INIT)
		for {
			old := dropped.Load()
			if old&bit != 0 {
				return false
			}
			if dropped.CompareAndSwap(old, old|bit) {
				return true
			}
		}
	}
	s, ch := w.newClient(t, "192.0.2.20", SessionConfig{PSK: []byte("k")})
	connect(t, s, true)
	if dropped.Load() != 3 {
		t.Fatal("the test did not drop both responses")
	}
	pairOK(t, ch.last(), gh.last())
	if installed, _, _ := gh.counts(); installed != 1 {
		t.Fatalf("a retransmitted IKE_AUTH installed %d Child SAs", installed)
	}
	w.r.do(context.Background(), func() {
		if len(w.r.sas) != 1 {
			t.Errorf("%d IKE SAs for one client", len(w.r.sas))
		}
	})
	// A liveness check whose empty answer was lost: the gateway keeps no
	// datagram for it (answeredEmpty), seals the answer again for the
	// retransmitted request and keeps that one for further copies.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.exchange(ctx, s.sa, wire.INFORMATIONAL, nil, RetransmitPolicy{Timeout: 100 * time.Millisecond, Backoff: 1, Tries: 5}); err != nil {
		t.Fatalf("a liveness check whose answer was lost once: %v", err)
	}
	if dropped.Load() != 1|2|8 {
		t.Fatalf("dropped %b, want the first response of each exchange", dropped.Load())
	}
	w.r.do(context.Background(), func() {
		for _, sa := range w.r.sas {
			if len(sa.lastResp) != 1 || sa.nextIn != 3 {
				t.Errorf("after an empty INFORMATIONAL answered twice: %d cached datagrams, next request %d", len(sa.lastResp), sa.nextIn)
			}
		}
	})
	// The next one, answered at once, leaves none.
	if _, err := s.exchange(ctx, s.sa, wire.INFORMATIONAL, nil, RetransmitPolicy{Timeout: time.Second, Backoff: 1, Tries: 3}); err != nil {
		t.Fatalf("a liveness check: %v", err)
	}
	w.r.do(context.Background(), func() {
		for _, sa := range w.r.sas {
			if sa.lastResp == nil || len(sa.lastResp) != 0 || sa.nextIn != 4 {
				t.Errorf("after an empty INFORMATIONAL: %d cached datagrams (nil: %v), next request %d", len(sa.lastResp), sa.lastResp == nil, sa.nextIn)
			}
		}
	})
}

func TestResponderInitialContact(t *testing.T) {
	w, gh := startResponder(t, ResponderConfig{PSK: []byte("k")})
	first, _ := w.newClient(t, "192.0.2.21", SessionConfig{PSK: []byte("k")})
	connect(t, first, true)
	other, _ := w.newClient(t, "192.0.2.22", SessionConfig{PSK: []byte("k"), LocalID: mustID(t, "other@mifsec.test")})
	connect(t, other, true)
	// The first client's host restarts and connects again.
	again, _ := w.newClient(t, "192.0.2.21", SessionConfig{PSK: []byte("k")})
	connect(t, again, true)
	st := clients(t, w)
	if len(st) != 2 || st[0].ID != "other@mifsec.test" || st[1].IKESPIi != again.Status().IKESPIi {
		t.Fatalf("clients after a reconnect %+v", st)
	}
	if _, removed, _ := gh.counts(); removed != 1 {
		t.Fatalf("gateway removed %d Child SAs, want the old one", removed)
	}
	if n := leased(t, w); n != 4 {
		t.Fatalf("%d addresses leased for two clients", n)
	}
	w.r.do(context.Background(), func() {
		if len(w.r.sas) != 2 {
			t.Errorf("%d IKE SAs for two clients: the replaced one is still known", len(w.r.sas))
		}
		if _, ok := w.r.sas[saKey{first.sa.spiI, first.sa.spiR}]; ok {
			t.Error("the IKE SA that INITIAL_CONTACT replaced is still known")
		}
	})
	// The old IKE SA is gone at the gateway: a request on it goes
	// unanswered (answers would reach it: the wire maps its address back
	// to it).
	w.mu.Lock()
	w.sessions[netip.MustParseAddr("192.0.2.21")] = first
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first.cfg.Retransmit = RetransmitPolicy{Timeout: 50 * time.Millisecond, Backoff: 1, Tries: 2}
	if _, err := first.exchange(ctx, first.sa, wire.INFORMATIONAL, nil, first.cfg.Retransmit); err == nil {
		t.Fatal("the replaced IKE SA still answers")
	}
}

func TestAddressPool(t *testing.T) {
	p, err := NewAddressPool(netip.MustParsePrefix("10.3.0.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	if g := p.GatewayAddress(); g != netip.MustParsePrefix("10.3.0.1/30") {
		t.Fatalf("gateway address %v", g)
	}
	a, err := p.Lease()
	if err != nil || a != netip.MustParseAddr("10.3.0.2") {
		t.Fatalf("lease %v %v", a, err)
	}
	if _, err := p.Lease(); err == nil {
		t.Fatal("leased the broadcast address")
	}
	p.Release(a)
	if b, err := p.Lease(); err != nil || b != a {
		t.Fatalf("after release: %v %v", b, err)
	}
	p6, err := NewAddressPool(netip.MustParsePrefix("fd03::/126"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fd03::2", "fd03::3"} {
		if a, err := p6.Lease(); err != nil || a != netip.MustParseAddr(want) {
			t.Fatalf("lease %v %v, want %s", a, err, want)
		}
	}
	if _, err := p6.Lease(); err == nil {
		t.Fatal("an exhausted pool leased")
	}
	if _, err := NewAddressPool(netip.MustParsePrefix("10.0.0.0/31")); err == nil {
		t.Fatal("a /31 pool was accepted")
	}
}

// TestAddressPoolSticky: a client that comes back gets its address again,
// and addresses remembered for others go out only when nothing else is
// free.
func TestAddressPoolSticky(t *testing.T) {
	p, err := NewAddressPool(netip.MustParsePrefix("10.4.0.0/29")) // 10.4.0.2 … .6
	if err != nil {
		t.Fatal(err)
	}
	lease := func(id string) netip.Addr {
		t.Helper()
		a, err := p.LeaseFor(id)
		if err != nil {
			t.Fatalf("lease for %q: %v", id, err)
		}
		return a
	}
	alice := lease("alice")
	bob := lease("bob")
	p.Release(alice)
	if carol := lease("carol"); carol == alice {
		t.Fatalf("carol got alice's remembered address %v while others were free", carol)
	}
	if again := lease("alice"); again != alice {
		t.Fatalf("alice came back to %v, had %v", again, alice)
	}
	// Exhaust the pool: the last free addresses may be ones remembered
	// for others.
	p.Release(bob)
	for _, id := range []string{"dave", "erin"} {
		lease(id)
	}
	if _, err := p.LeaseFor("frank"); err != nil {
		t.Fatalf("frank: %v (bob's remembered address is free)", err)
	}
	if _, err := p.LeaseFor("grace"); err == nil {
		t.Fatal("leased from an exhausted pool")
	}
	if a, err := p.LeaseFor("bob"); err == nil {
		t.Fatalf("bob got %v from an exhausted pool", a)
	}
}

func TestNarrow(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct{ offered, allowed, want []netip.Prefix }{
		{pp("0.0.0.0/0", "::/0"), pp("10.1.0.0/24"), pp("10.1.0.0/24")},
		{pp("10.1.0.5/32"), pp("10.1.0.0/24"), pp("10.1.0.5/32")},
		{pp("10.2.0.0/24"), pp("10.1.0.0/24"), nil},
		{pp("0.0.0.0/0", "::/0"), pp("10.3.0.2/32", "fd03::2/128"), pp("10.3.0.2/32", "fd03::2/128")},
	} {
		if got := narrow(tc.offered, tc.allowed); !slices.Equal(got, tc.want) {
			t.Errorf("narrow(%v, %v) = %v, want %v", tc.offered, tc.allowed, got, tc.want)
		}
	}
}

type x509Cert = x509.Certificate

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// activeLog is a gateway handler whose data plane reports the ESP packets
// its Child SAs received.
type activeLog struct {
	gwLog
	received atomic.Uint64
}

func (l *activeLog) Received(*RemoteClient, *ChildSA) uint64 { return l.received.Load() }

// inboxDropped counts a datagram dropped from the responder's full queue,
// as Deliver does.
func (w *memWire) inboxDropped() { w.r.inboxDrop.Add(1) }

func (w *memWire) requestsOf(e wire.ExchangeType) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, x := range w.requests {
		if x == e {
			n++
		}
	}
	return n
}

// TestResponderDPD checks the gateway's liveness checks in fake time: 30 s
// without a sign of life bring an empty INFORMATIONAL; a client that
// answers stays, ESP counts as a sign of life, and a client that answers
// nothing is dropped with its Child SA and leases after the request's
// retransmissions (1 s, ×1.8, 5 sends: sent at 30 s, given up at 54 s on
// the 1 s tick).
// TestReconnectBacksOff (issue 18, acceptance 6): the gateway restarts
// with another key, so that every reconnection is refused; the client
// doubles its pause after each refusal, up to MaxReconnectDelay, instead of
// trying once a second. Ten minutes of fake time hold a dozen attempts,
// not six hundred.
func TestReconnectBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, _ := startResponder(t, ResponderConfig{PSK: []byte("the key of the first year")})
		s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: []byte("the key of the first year"),
			RemoteID: mustID(t, "gw.mifsec.test"), DPD: 5 * time.Second})
		connect(t, s, true)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })

		w.runResponder(t, ResponderConfig{PSK: []byte("the key of the second year")}, &gwLog{})
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		st := s.Status()
		attempts := st.Failures[FailAuthentication]
		t.Logf("in 10 minutes: %d refused attempts, state %s", attempts, st.State)
		// After DPD gives up: pauses of about 2, 4, ... 64 s, then 120 s.
		if attempts < 5 || attempts > 14 {
			t.Errorf("%d refused reconnection attempts in 10 minutes, want 5 to 14 (doubling pauses up to 2 min)", attempts)
		}
		if st.State != "reconnecting" {
			t.Errorf("state %s, want reconnecting", st.State)
		}
	})
}

// TestCheckAliveReconnectsAtOnce: a liveness check asked for (the machine
// woke, the route changed) that the gateway answers changes nothing; one
// that a restarted gateway, which lost the IKE SA, leaves unanswered makes
// the session reconnect within 2 s, where DPD would take its interval.
func TestCheckAliveReconnectsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		psk := []byte("a key that outlives a restart")
		w, _ := startResponder(t, ResponderConfig{PSK: psk})
		s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test"), DPD: time.Hour})
		connect(t, s, true)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })

		if err := s.CheckAlive(ctxT(t)); err != nil {
			t.Fatalf("CheckAlive with the gateway up: %v", err)
		}
		if st := s.Status(); st.Reconnects != 0 || st.State != "established" {
			t.Fatalf("after a passed check: %s, %d reconnects", st.State, st.Reconnects)
		}

		w.runResponder(t, ResponderConfig{PSK: psk}, &gwLog{}) // restarted: no IKE SA
		start := time.Now()
		if err := s.CheckAlive(ctxT(t)); !errors.Is(err, ErrTimeout) {
			t.Fatalf("CheckAlive after the gateway lost the IKE SA: %v, want a timeout", err)
		}
		time.Sleep(2*time.Second - time.Since(start))
		synctest.Wait()
		if st := s.Status(); st.Reconnects != 1 || st.State != "established" {
			t.Fatalf("2 s after the failed check: %s, %d reconnects, want established again", st.State, st.Reconnects)
		}
		if err := s.CheckAlive(context.Background()); err != nil {
			t.Fatalf("CheckAlive on the new IKE SA: %v", err)
		}
	})
}

// TestCheckAliveDuringDPD: a liveness check asked for while the session's
// own DPD request waits out a long retransmission schedule (a gateway just
// gone) does not queue behind it: the outstanding request retransmits as
// the check, and the session reconnects within a check's second.
func TestCheckAliveDuringDPD(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		psk := []byte("k")
		w, _ := startResponder(t, ResponderConfig{PSK: psk})
		s, _ := w.newClient(t, "192.0.2.11", SessionConfig{PSK: psk, DPD: 10 * time.Second})
		connect(t, s, true)
		// strongSwan's schedule, as the fleet's clients use: a minute and more.
		s.cfg.Retransmit = RetransmitPolicy{Timeout: 2 * time.Second, Backoff: 1.8, Tries: 6}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })

		w.runResponder(t, ResponderConfig{PSK: psk}, &gwLog{}) // restarted: no IKE SA
		w.mu.Lock()
		w.dropResponse = func([]byte) bool { return true } // and silent
		w.mu.Unlock()
		time.Sleep(12 * time.Second) // the DPD went out at 10 or 11 s
		synctest.Wait()
		start := time.Now()
		err := s.CheckAlive(context.Background())
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("CheckAlive during an unanswered DPD: %v, want a timeout", err)
		}
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Fatalf("CheckAlive took %v behind the DPD's retransmissions", took)
		}
		w.mu.Lock()
		w.dropResponse = nil
		w.mu.Unlock()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := s.Status(); st.Reconnects != 1 || st.State != "established" {
			t.Fatalf("2 s after the failed check: %s, %d reconnects, want established again", st.State, st.Reconnects)
		}
		// A check with no request outstanding leaves no hurry behind: the
		// next DPD keeps its own schedule.
		if err := s.CheckAlive(context.Background()); err != nil {
			t.Fatalf("CheckAlive on the new IKE SA: %v", err)
		}
		if len(s.hurry) != 0 {
			t.Fatal("a passed check left its hurry queued")
		}
	})
}

func TestResponderDPD(t *testing.T) {
	const dpd = 30 * time.Second
	t.Run("answering client stays", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), DPD: dpd})
			s, _ := w.newClient(t, "192.0.2.30", SessionConfig{PSK: []byte("k"), DPD: time.Hour})
			connect(t, s, true)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { s.Run(ctx); close(done) }()
			time.Sleep(29 * time.Second)
			synctest.Wait()
			if n := w.requestsOf(wire.INFORMATIONAL); n != 0 {
				t.Errorf("%d liveness checks before %v of silence", n, dpd)
			}
			time.Sleep(71 * time.Second) // 100 s: checks at 30, 60 and 90 s
			synctest.Wait()
			st := clients(t, w)
			if len(st) != 1 || st[0].DPDChecks != 3 {
				t.Errorf("after 100 s: clients %+v, want one with 3 liveness checks", st)
			}
			if n := w.requestsOf(wire.INFORMATIONAL); n != 3 {
				t.Errorf("%d INFORMATIONAL requests sent, want 3 (one per check, none retransmitted)", n)
			}
			cancel()
			<-done
		})
	})
	t.Run("silent client is dropped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w, gh := startResponder(t, ResponderConfig{PSK: []byte("k"), DPD: dpd})
			s, _ := w.newClient(t, "192.0.2.31", SessionConfig{PSK: []byte("k")})
			connect(t, s, true) // its session never runs: nothing answers
			time.Sleep(53 * time.Second)
			synctest.Wait()
			if n := len(clients(t, w)); n != 1 {
				t.Fatalf("%d clients at 53 s, before the retransmissions ran out", n)
			}
			if n := w.requestsOf(wire.INFORMATIONAL); n != 5 {
				t.Errorf("%d INFORMATIONAL requests sent, want 5 (the check and 4 retransmissions)", n)
			}
			time.Sleep(2 * time.Second)
			synctest.Wait()
			if n := len(clients(t, w)); n != 0 {
				t.Fatalf("%d clients at 55 s: the silent client was not dropped", n)
			}
			if n := leased(t, w); n != 0 {
				t.Errorf("%d addresses still leased", n)
			}
			if _, removed, _ := gh.counts(); removed != 1 {
				t.Errorf("%d Child SAs removed, want 1", removed)
			}
			w.r.do(context.Background(), func() {
				if len(w.r.sas) != 0 {
					t.Errorf("%d IKE SAs left", len(w.r.sas))
				}
			})
		})
	})
	t.Run("overloaded gateway checks again", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), DPD: dpd})
			s, _ := w.newClient(t, "192.0.2.33", SessionConfig{PSK: []byte("k")})
			connect(t, s, true) // its session never runs: nothing answers
			// The gateway's queue keeps overflowing: any answer might
			// have been lost there.
			overloaded := func(d time.Duration) {
				for range int(d / time.Second) {
					w.inboxDropped()
					time.Sleep(time.Second)
				}
			}
			overloaded(55 * time.Second)
			synctest.Wait()
			if n := len(clients(t, w)); n != 1 {
				t.Fatalf("%d clients at 55 s: a check the gateway's full queue may have swallowed dropped the client", n)
			}
			// Three checks excused, the fourth not: a dead client goes
			// while the overload lasts.
			overloaded(3 * 60 * time.Second)
			synctest.Wait()
			if n := len(clients(t, w)); n != 0 {
				t.Fatalf("%d clients after 235 s of overload: the silent client was never dropped", n)
			}
			if n := w.requestsOf(wire.INFORMATIONAL); n != 20 {
				t.Errorf("%d INFORMATIONAL requests sent, want 20 (four checks of five tries)", n)
			}
		})
	})
	t.Run("ESP is a sign of life", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := &activeLog{}
			w := startResponderWith(t, ResponderConfig{PSK: []byte("k"), DPD: dpd}, h)
			s, _ := w.newClient(t, "192.0.2.32", SessionConfig{PSK: []byte("k")})
			connect(t, s, true) // no IKE from here on
			for range 20 {      // 100 s of ESP, a packet every 5 s
				time.Sleep(5 * time.Second)
				h.received.Add(1)
			}
			synctest.Wait()
			if n := w.requestsOf(wire.INFORMATIONAL); n != 0 {
				t.Errorf("%d liveness checks while ESP arrived", n)
			}
			// The ESP stops: the check within one and one and a half
			// DPD intervals (the counters are read every half
			// interval), 24 s later the drop.
			time.Sleep(dpd - time.Second)
			synctest.Wait()
			if n := w.requestsOf(wire.INFORMATIONAL); n != 0 {
				t.Errorf("%d liveness checks %v after the last ESP", n, dpd-time.Second)
			}
			time.Sleep(dpd/2 + 27*time.Second)
			synctest.Wait()
			if n := len(clients(t, w)); n != 0 || w.requestsOf(wire.INFORMATIONAL) != 5 {
				t.Errorf("%d clients and %d INFORMATIONAL requests 71 s after the last ESP, want 0 and 5", n, w.requestsOf(wire.INFORMATIONAL))
			}
		})
	})
	t.Run("off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
			s, _ := w.newClient(t, "192.0.2.33", SessionConfig{PSK: []byte("k")})
			connect(t, s, true)
			time.Sleep(10 * time.Minute)
			synctest.Wait()
			if n := len(clients(t, w)); n != 1 || w.requestsOf(wire.INFORMATIONAL) != 0 {
				t.Errorf("without DPD: %d clients, %d liveness checks", n, w.requestsOf(wire.INFORMATIONAL))
			}
		})
	})
}

// TestResponderOldChildrenBounded: a client that rekeys its Child SA
// without deleting the SAs it replaced is refused once maxOldChildren wait,
// and the gateway deletes them itself after oldChildGrace.
func TestResponderOldChildrenBounded(t *testing.T) {
	var offset atomic.Int64 // the responder's clock runs ahead by this much
	psk := []byte("a key for rekeys that never delete")
	w, gh := startResponder(t, ResponderConfig{PSK: psk, Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk})
	connect(t, s, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	_, espSpecs := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes128gcm16") // no PFS: no KE needed
	spi := s.child.InSPI                                                           // the SA the gateway sends on, named by our inbound SPI
	rekey := func() wire.NotifyType {
		t.Helper()
		next := randomESPSPI()
		req := []wire.Payload{
			&wire.Notify{Protocol: wire.ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, spi), NotifyType: wire.REKEY_SA},
			&wire.SA{Proposals: offerESP(espSpecs, next, true)},
			&wire.Nonce{Data: nonce()},
			&wire.TS{Selectors: selectorsFromPrefixes(s.child.LocalTS)}, &wire.TS{Responder: true, Selectors: selectorsFromPrefixes(s.child.RemoteTS)},
		}
		var reply []wire.Payload
		err := s.call(ctxT(t), func(loop context.Context, r *callResult) error {
			var err error
			reply, err = s.exchange(loop, s.sa, wire.CREATE_CHILD_SA, req, s.cfg.Retransmit)
			r.set(err)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range wire.FindAll[*wire.Notify](reply) {
			if n.NotifyType.IsError() {
				return n.NotifyType
			}
		}
		spi = next
		return 0
	}
	for i := range maxOldChildren {
		if got := rekey(); got != 0 {
			t.Fatalf("rekey %d refused with %d", i+1, got)
		}
	}
	if got := rekey(); got != wire.TEMPORARY_FAILURE {
		t.Fatalf("a rekey with %d replaced SAs undeleted answered %d, want TEMPORARY_FAILURE", maxOldChildren, got)
	}
	_, removed, _ := gh.counts()
	if removed != 0 {
		t.Fatalf("%d Child SAs removed before the grace passed", removed)
	}
	current := gh.last()
	offset.Store(int64(oldChildGrace + time.Second))
	testenv.WaitUntil(t, 5*time.Second, "the gateway to delete the old Child SAs", func() bool { _, removed, _ := gh.counts(); return removed >= maxOldChildren })
	gh.mu.Lock()
	defer gh.mu.Unlock()
	for _, k := range gh.removed[:maxOldChildren] {
		if k == current {
			t.Fatal("the gateway deleted the Child SA in use instead of one it replaced")
		}
	}
	// (This client never learnt of its own rekeys, so the gateway's
	// Deletes name the SA it still thinks current: it goes away. A real
	// client deletes what it replaced and never meets the limit.)
}

// sessionLog records what a Responder tells its SessionHook.
type sessionLog struct {
	mu     sync.Mutex
	events []string
}

func (l *sessionLog) note(what string, c *RemoteClient) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf("%s %s %v", what, c.ID, c.Addresses))
}
func (l *sessionLog) ClientUp(c *RemoteClient)   { l.note("up", c) }
func (l *sessionLog) ClientDown(c *RemoteClient) { l.note("down", c) }
func (l *sessionLog) seen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// TestResponderPoolAndSessionHook: the responder leases from the pools
// NewPool makes, and tells its SessionHook of each client that got its
// first Child SA, once up and once down; a client refused for want of an
// address is neither.
func TestResponderPoolAndSessionHook(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	hook := &sessionLog{}
	var made []netip.Prefix
	w, _ := startResponder(t, ResponderConfig{PSK: psk, Sessions: hook,
		Pools: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/30")}, // one client address: 10.3.0.2
		NewPool: func(p netip.Prefix) (Pool, error) {
			made = append(made, p)
			return NewAddressPool(p)
		}})
	if len(made) != 1 || made[0] != netip.MustParsePrefix("10.3.0.0/30") {
		t.Fatalf("NewPool made %v", made)
	}
	first, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, LocalID: mustID(t, "first@mifsec.test")})
	connect(t, first, true)
	second, _ := w.newClient(t, "192.0.2.11", SessionConfig{PSK: psk, LocalID: mustID(t, "second@mifsec.test")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := second.connect(ctx, true); err == nil {
		t.Fatal("a second client got an address from a pool of one")
	}
	if n, err := w.r.Disconnect(ctx, mustID(t, "first@mifsec.test"), "the test says so"); n != 1 || err != nil {
		t.Fatalf("Disconnect: %d, %v", n, err)
	}
	want := []string{"up first@mifsec.test [10.3.0.2/32]", "down first@mifsec.test []"}
	if got := hook.seen(); !slices.Equal(got, want) {
		t.Errorf("the hook saw %q, want %q", got, want)
	}
	if n := leased(t, w); n != 0 {
		t.Errorf("%d addresses leased after the client went", n)
	}
}

// TestClientListRemoval: a departing client's place goes to the last
// client, and every held client's slot names its place, whichever leaves;
// the timers hold exactly the clients held, each at its index.
func TestClientListRemoval(t *testing.T) {
	r := &Responder{byKey: map[string][]*rClient{}, sas: map[saKey]*rSA{}, cfg: ResponderConfig{Now: time.Now}}
	var cs []*rClient
	for i := range 5 {
		c := &rClient{key: fmt.Sprintf("c%d", i)}
		r.addClient(c, &rSA{ikeSA: &ikeSA{spiI: uint64(i + 1), spiR: uint64(i + 1)}})
		cs = append(cs, c)
	}
	check := func(want ...int) {
		t.Helper()
		if len(r.clients) != len(want) {
			t.Fatalf("%d clients, want %d", len(r.clients), len(want))
		}
		for i, c := range r.clients {
			if int(c.slot) != i {
				t.Fatalf("client %s at %d has slot %d", c.key, i, c.slot)
			}
		}
		for _, w := range want {
			if r.clients[cs[w].slot] != cs[w] {
				t.Fatalf("client %d not at its slot", w)
			}
			if c := cs[w]; c.timer == 0 || r.timers[c.timer-1] != c {
				t.Fatalf("client %d not at its place in the timers (%d)", w, c.timer)
			}
		}
		if len(r.timers) != len(want) {
			t.Fatalf("%d clients in the timers, want %d", len(r.timers), len(want))
		}
	}
	r.dropClient(cs[1]) // from the middle: the last moves in
	check(0, 2, 3, 4)
	if r.clients[1] != cs[4] {
		t.Fatalf("the last client did not take the departed one's place")
	}
	r.dropClient(cs[3]) // the last one
	check(0, 2, 4)
	r.dropClient(cs[3]) // again: nothing changes
	check(0, 2, 4)
	r.dropClient(cs[0])
	r.dropClient(cs[2])
	r.dropClient(cs[4])
	check()
	if len(r.byKey) != 0 {
		t.Fatalf("byKey %v after every client left", r.byKey)
	}
}

// spiTakenLog is a gateway handler whose data plane says that the first
// inbound SPIs the Responder asks about are taken.
type spiTakenLog struct {
	gwLog
	taken map[uint32]bool
	asked int
}

func (l *spiTakenLog) InboundSPIInUse(spi uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked++
	if l.asked <= 3 {
		l.taken[spi] = true
	}
	return l.taken[spi]
}

// TestResponderDrawsFreeInboundSPIs: the gateway's data plane shares one
// SPI space among all clients; a Child SA's and its probe SA's inbound
// SPIs are drawn among those it does not use (before, 32 random bits:
// six clients of 100,000 turned away after they authenticated).
func TestResponderDrawsFreeInboundSPIs(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	h := &spiTakenLog{taken: map[uint32]bool{}}
	w := startResponderWith(t, ResponderConfig{PSK: psk}, h)
	s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test")})
	connect(t, s, true)
	g := h.last()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.asked < 5 {
		t.Fatalf("the data plane was asked about %d SPIs, want 3 taken and then the data and probe SA's", h.asked)
	}
	if g.Probe == nil {
		t.Fatal("no probe SA: the probe SPI's draw is not tested")
	}
	for _, spi := range []uint32{g.InSPI, g.Probe.InSPI} {
		if h.taken[spi] {
			t.Errorf("inbound SPI %#x installed although the data plane uses it", spi)
		}
	}
}

// TestDigestPSK: a client's pre-shared key is kept as a digest that tells
// a changed key from the same one (SetPSKs), and 0 only for none.
func TestDigestPSK(t *testing.T) {
	for _, tc := range []struct {
		a, b []byte
		same bool
	}{
		{[]byte("a pre-shared key"), []byte("a pre-shared key"), true},
		{[]byte("a pre-shared key"), []byte("a pre-shared kez"), false},
		{[]byte("k"), []byte("k\x00"), false},
		{[]byte{}, []byte("k"), false},
	} {
		da, db := digestPSK(tc.a), digestPSK(tc.b)
		if da == 0 || db == 0 || (da == db) != tc.same {
			t.Errorf("digests of %q and %q: %x, %x; want the same: %v", tc.a, tc.b, da, db, tc.same)
		}
	}
	if d := digestPSK(nil); d != 0 {
		t.Errorf("digest of no key %x, want 0", d)
	}
}
