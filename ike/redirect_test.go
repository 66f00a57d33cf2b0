package ike

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testenv"
)

// bus joins initiator sessions to several responders in memory, each at
// its own address: what a client sends goes to the responder at the
// destination address. It records the notifications of every
// IKE_SA_INIT request by the gateway it went to.
type bus struct {
	mu    sync.Mutex
	gws   map[netip.Addr]*memWire
	inits map[netip.Addr][][]wire.NotifyType
	// forge, when set, may deliver something to the session first, before
	// an IKE_SA_INIT request from it reaches its gateway.
	forge func(s *Session, req *wire.Message)
}

type busClient struct {
	b    *bus
	addr netip.Addr
	s    *Session
}

func (c *busClient) Send(msg []byte, to netip.AddrPort, natT bool) error {
	port := uint16(500)
	if natT {
		port = 4500
	}
	c.b.mu.Lock()
	w := c.b.gws[to.Addr()]
	forge := c.b.forge
	m, err := wire.Parse(msg)
	if err == nil && m.Exchange == wire.IKE_SA_INIT && !m.IsResponse() {
		var ns []wire.NotifyType
		for _, n := range wire.FindAll[*wire.Notify](m.Payloads) {
			ns = append(ns, n.NotifyType)
		}
		c.b.inits[to.Addr()] = append(c.b.inits[to.Addr()], ns)
	}
	c.b.mu.Unlock()
	if forge != nil && err == nil && m.Exchange == wire.IKE_SA_INIT && !m.IsResponse() {
		forge(c.s, m)
	}
	if w == nil {
		return nil // nobody there
	}
	w.mu.Lock()
	r := w.r
	w.mu.Unlock()
	r.Deliver(msg, to.Addr(), netip.AddrPortFrom(c.addr, port), natT)
	return nil
}

// initsTo returns the notifications of the IKE_SA_INIT requests gw got.
func (b *bus) initsTo(gw string) [][]wire.NotifyType {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.inits[netip.MustParseAddr(gw)])
}

// newBus starts a responder at each address (port 500) with cfg of the
// same index.
func newBus(t *testing.T, addrs []string, cfgs ...ResponderConfig) *bus {
	t.Helper()
	b := &bus{gws: map[netip.Addr]*memWire{}, inits: map[netip.Addr][][]wire.NotifyType{}}
	for i, a := range addrs {
		w := &memWire{gw: netip.AddrPortFrom(netip.MustParseAddr(a), 500), sessions: map[netip.Addr]*Session{}}
		w.runResponder(t, cfgs[i], &gwLog{})
		b.gws[w.gw.Addr()] = w
	}
	return b
}

// gw returns the responder at addr.
func (b *bus) gw(addr string) *Responder { return b.gws[netip.MustParseAddr(addr)].r }

// redirectLog is a childLog that records redirects.
type redirectLog struct {
	childLog
	mu2        sync.Mutex
	redirected []netip.AddrPort
}

func (l *redirectLog) Redirected(gw netip.AddrPort) {
	l.mu2.Lock()
	defer l.mu2.Unlock()
	l.redirected = append(l.redirected, gw)
}

func (l *redirectLog) redirects() []netip.AddrPort {
	l.mu2.Lock()
	defer l.mu2.Unlock()
	return slices.Clone(l.redirected)
}

// client makes a session from addr to the gateway at gw.
func (b *bus) client(t *testing.T, addr, gw string, cfg SessionConfig) (*Session, *redirectLog) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	cfg.Remote = netip.AddrPortFrom(netip.MustParseAddr(gw), 500)
	if cfg.LocalID.Type == 0 {
		cfg.LocalID = mustID(t, "client-"+addr+"@mifsec.test")
	}
	cfg.PSK = []byte("redirect test key")
	cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
	cfg.RequestIPv4 = true
	cfg.Retransmit = RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 3}
	h := &redirectLog{}
	tr := &busClient{b: b, addr: a}
	s, err := NewSession(cfg, tr, h)
	if err != nil {
		t.Fatal(err)
	}
	tr.s = s
	for _, w := range b.gws {
		w.mu.Lock()
		w.sessions[a] = s
		w.mu.Unlock()
	}
	return s, h
}

func redirectCfg(maxClients int, to ...string) ResponderConfig {
	cfg := ResponderConfig{PSK: []byte("redirect test key"), MaxClients: maxClients, DrainTimeout: 2 * time.Second}
	var targets []netip.Addr
	for _, a := range to {
		targets = append(targets, netip.MustParseAddr(a))
	}
	if len(targets) > 0 {
		r, err := NewStaticRedirector(targets)
		if err != nil {
			panic(err)
		}
		cfg.Redirector = r
	}
	return cfg
}

// state counts a responder's IKE SAs (established and half-open) and
// clients.
func state(r *Responder) (sas, halfOpen, clients int) {
	r.do(context.Background(), func() { sas, halfOpen, clients = len(r.sas), len(r.halfOpen), len(r.clients) })
	return
}

func has(ns []wire.NotifyType, t wire.NotifyType) bool { return slices.Contains(ns, t) }

// TestRedirectFullGateway: a full gateway sends a client that supports
// redirects to the gateway its Redirector names, keeping no state for it;
// the client connects there, naming the first gateway in REDIRECTED_FROM.
// A client that does not support redirects is refused with
// TEMPORARY_FAILURE.
func TestRedirectFullGateway(t *testing.T) {
	b := newBus(t, []string{"192.0.2.1", "192.0.2.2"}, redirectCfg(1, "192.0.2.2"), redirectCfg(0))
	first, _ := b.client(t, "198.51.100.1", "192.0.2.1", SessionConfig{})
	connect(t, first, true)
	if st := first.Status(); st.Gateway != "192.0.2.1:500" || st.Redirects != 0 {
		t.Fatalf("first client: gateway %s, %d redirects; want the first gateway, none", st.Gateway, st.Redirects)
	}
	sas, _, _ := state(b.gw("192.0.2.1"))

	second, h := b.client(t, "198.51.100.2", "192.0.2.1", SessionConfig{})
	connect(t, second, true)
	st := second.Status()
	if st.Gateway != "192.0.2.2:500" || st.RedirectedFrom != "192.0.2.1:500" || st.Redirects != 1 || st.State != "established" {
		t.Fatalf("second client: %s at %s, redirected from %q %d times; want established at 192.0.2.2:500 from 192.0.2.1:500 once",
			st.State, st.Gateway, st.RedirectedFrom, st.Redirects)
	}
	if got := h.redirects(); !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.2:500")}) {
		t.Errorf("handler told of redirects %v", got)
	}
	if sas2, half, n := state(b.gw("192.0.2.1")); sas2 != sas || half != 0 || n != 1 {
		t.Errorf("full gateway: %d IKE SAs (was %d), %d half-open, %d clients after the redirect; want no new state", sas2, sas, half, n)
	}
	if _, _, n := state(b.gw("192.0.2.2")); n != 1 {
		t.Errorf("the second gateway has %d clients, want 1", n)
	}
	// No Diffie-Hellman for the redirected client: its source never drew
	// on the budgets (as for a cookie).
	var budgeted bool
	b.gw("192.0.2.1").do(context.Background(), func() {
		_, budgeted = b.gw("192.0.2.1").budgets[sourceOf(netip.MustParseAddrPort("198.51.100.2:500"))]
	})
	if budgeted {
		t.Error("the full gateway spent Diffie-Hellman budget on the client it redirected")
	}
	inits1, inits2 := b.initsTo("192.0.2.1"), b.initsTo("192.0.2.2")
	if len(inits1) != 2 || !has(inits1[1], wire.REDIRECT_SUPPORTED) || has(inits1[1], wire.REDIRECTED_FROM) {
		t.Errorf("IKE_SA_INIT requests to the first gateway: %v; want two with REDIRECT_SUPPORTED", inits1)
	}
	if len(inits2) != 1 || !has(inits2[0], wire.REDIRECTED_FROM) || has(inits2[0], wire.REDIRECT_SUPPORTED) {
		t.Errorf("IKE_SA_INIT requests to the second gateway: %v; want one with REDIRECTED_FROM", inits2)
	}
	if st := b.gw("192.0.2.1").RedirectStatus(context.Background()); st.Redirected != 1 || st.Draining {
		t.Errorf("first gateway's redirect status %+v", st)
	}

	// One that does not follow redirects is told the gateway is unavailable.
	third, _ := b.client(t, "198.51.100.3", "192.0.2.1", SessionConfig{DisableRedirect: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := third.connect(ctx, true)
	if !errors.Is(err, ErrUnavailable) || errorFailure(err) != FailUnavailable {
		t.Fatalf("a client without redirects: %v, want ErrUnavailable", err)
	}
	if inits := b.initsTo("192.0.2.1"); has(inits[len(inits)-1], wire.REDIRECT_SUPPORTED) {
		t.Error("REDIRECT_SUPPORTED sent though disabled")
	}
	if f := b.gw("192.0.2.1").Failures(context.Background()); f[FailUnavailable] == 0 {
		t.Errorf("refusal not counted: %v", f)
	}
	if _, half, n := state(b.gw("192.0.2.1")); half != 0 || n != 1 {
		t.Errorf("full gateway holds %d half-open IKE SAs, %d clients after a refusal", half, n)
	}
}

// TestRedirectNonce: a REDIRECT in the response to IKE_SA_INIT is followed
// only when it carries our nonce; one that does not (spoofed by someone
// who saw no more than our address) is ignored and the real gateway's
// answer taken.
func TestRedirectNonce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nonce  func(ni []byte) []byte
		wantGW string
	}{
		{"our nonce", func(ni []byte) []byte { return ni }, "192.0.2.2:500"},
		{"another nonce", func(ni []byte) []byte { return bytes.Repeat([]byte{0x5a}, len(ni)) }, "192.0.2.1:500"},
		{"our nonce cut short", func(ni []byte) []byte { return ni[:16] }, "192.0.2.1:500"},
		{"no nonce", func([]byte) []byte { return nil }, "192.0.2.1:500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBus(t, []string{"192.0.2.1", "192.0.2.2"}, redirectCfg(0), redirectCfg(0))
			forged := 0
			b.forge = func(s *Session, req *wire.Message) {
				if forged > 0 {
					return // only the first request (to the first gateway)
				}
				ni := wire.Find[*wire.Nonce](req.Payloads).Data
				data, err := wire.AppendRedirectData(nil, wire.RedirectGateway{Addr: netip.MustParseAddr("192.0.2.2")}, tc.nonce(ni))
				if err != nil {
					t.Error(err)
					return
				}
				resp := &wire.Message{SPIi: req.SPIi, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagResponse,
					Payloads: []wire.Payload{&wire.Notify{NotifyType: wire.REDIRECT, Data: data}}}
				raw, err := resp.Marshal()
				if err != nil {
					t.Error(err)
					return
				}
				forged++
				s.Deliver(raw, netip.MustParseAddrPort("192.0.2.1:500"), false)
			}
			s, _ := b.client(t, "198.51.100.1", "192.0.2.1", SessionConfig{})
			connect(t, s, true)
			if forged != 1 {
				t.Fatalf("%d forged responses, want 1", forged)
			}
			if st := s.Status(); st.Gateway != tc.wantGW {
				t.Fatalf("connected to %s, want %s", st.Gateway, tc.wantGW)
			}
		})
	}
}

// TestRedirectLoopLimit: two gateways that send clients to each other; a
// client follows at most maxRedirects redirects within redirectWindow and
// then gives up with an error that says so.
func TestRedirectLoopLimit(t *testing.T) {
	b := newBus(t, []string{"192.0.2.1", "192.0.2.2"}, redirectCfg(0, "192.0.2.2"), redirectCfg(0, "192.0.2.1"))
	for _, a := range []string{"192.0.2.1", "192.0.2.2"} {
		if _, err := b.gw(a).Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := b.client(t, "198.51.100.1", "192.0.2.1", SessionConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.connect(ctx, true)
	if err == nil || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "redirect loop") {
		t.Fatalf("connect: %v; want the redirect loop refused", err)
	}
	if st := s.Status(); st.Redirects != maxRedirects {
		t.Errorf("followed %d redirects, want %d", st.Redirects, maxRedirects)
	}
	if n := len(b.initsTo("192.0.2.1")) + len(b.initsTo("192.0.2.2")); n != maxRedirects+1 {
		t.Errorf("%d IKE_SA_INIT requests, want %d", n, maxRedirects+1)
	}
}

// TestDrainRedirectsEstablished: a draining gateway redirects its
// established client (INFORMATIONAL with REDIRECT); the client sets up its
// IKE SA and Child SA with the other gateway before it deletes the old IKE
// SA, so the old gateway is left without it well before the drain's
// timeout. A client that does not follow redirects has its IKE SA deleted
// at the timeout. New clients are redirected meanwhile.
func TestDrainRedirectsEstablished(t *testing.T) {
	b := newBus(t, []string{"192.0.2.1", "192.0.2.2"}, redirectCfg(0, "192.0.2.2"), redirectCfg(0))
	s, h := b.client(t, "198.51.100.1", "192.0.2.1", SessionConfig{})
	stay, _ := b.client(t, "198.51.100.2", "192.0.2.1", SessionConfig{DisableRedirect: true})
	connect(t, stay, true)
	connect(t, s, true)
	oldChild := h.last()
	if got := s.Status().Addresses; !slices.Equal(got, []string{"10.3.0.3/32"}) {
		t.Fatalf("addresses at the first gateway %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range []*Session{s, stay} {
		wg.Go(func() { c.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	old := b.gw("192.0.2.1")
	start := time.Now()
	n, err := old.Drain(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("Drain: %d clients, %v", n, err)
	}
	waitFor := func(what string, within time.Duration, ok func() bool) time.Duration {
		t.Helper()
		testenv.WaitUntil(t, within, what, ok)
		return time.Since(start)
	}
	moved := waitFor("the redirected client on the second gateway", 3*time.Second, func() bool {
		_, _, n := state(b.gw("192.0.2.2"))
		return n == 1 && s.Status().Gateway == "192.0.2.2:500" && s.Status().State == "established"
	})
	left := waitFor("the redirected client gone from the first gateway", time.Second, func() bool {
		for _, c := range clients(t, b.gws[netip.MustParseAddr("192.0.2.1")]) {
			if strings.Contains(c.ID, "198.51.100.1") {
				return false
			}
		}
		return true
	})
	t.Logf("client moved after %v, left the old gateway after %v", moved, left)
	if left > time.Second {
		t.Errorf("the redirected client left the old gateway only after %v: it should delete its IKE SA itself", left)
	}
	st := s.Status()
	if st.Redirects != 1 || st.RedirectedFrom != "192.0.2.1:500" {
		t.Errorf("status after the redirect: %d redirects from %q", st.Redirects, st.RedirectedFrom)
	}
	// It asked the new gateway for the address it had (10.3.0.3, where
	// the new gateway's pool would have leased 10.3.0.2 first).
	if !slices.Equal(st.Addresses, []string{"10.3.0.3/32"}) {
		t.Errorf("addresses at the new gateway %v, want the old 10.3.0.3/32 kept", st.Addresses)
	}
	if got := h.redirects(); !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.2:500")}) {
		t.Errorf("handler told of redirects %v", got)
	}
	h.mu.Lock()
	removedOld := slices.Contains(h.removed, oldChild)
	h.mu.Unlock()
	if !removedOld || h.last() == oldChild {
		t.Error("the old Child SA was not replaced and removed")
	}
	// New clients are redirected while it drains.
	late, _ := b.client(t, "198.51.100.3", "192.0.2.1", SessionConfig{})
	connect(t, late, true)
	if gw := late.Status().Gateway; gw != "192.0.2.2:500" {
		t.Errorf("a new client during the drain ended at %s", gw)
	}
	// The one that does not follow is deleted after DrainTimeout.
	gone := waitFor("the client that does not follow redirects deleted", 4*time.Second, func() bool {
		_, _, n := state(old)
		return n == 0
	})
	if gone < 2*time.Second {
		t.Errorf("the client without redirects was deleted after %v, before the drain timeout", gone)
	}
	if st := old.RedirectStatus(context.Background()); !st.Draining || st.Redirected != 2 {
		t.Errorf("redirect status %+v, want draining with 2 redirected", st)
	}
}
