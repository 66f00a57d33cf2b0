package ike

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
)

// TestTransportModeNegotiation: USE_TRANSPORT_MODE gives a transport-mode
// Child SA only when the initiator asks, the responder allows it and the
// selectors name one address on each side; otherwise tunnel mode, with
// the notification absent from the response. A rekey by either side
// keeps the mode.
func TestTransportModeNegotiation(t *testing.T) {
	one := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	for _, tc := range []struct {
		name              string
		ask, allow        bool
		local, remote, gw []netip.Prefix // the client's selectors, the gateway's LocalTS
		want              bool
		gwRemote          []netip.Prefix // the gateway's RemoteTS
	}{
		{"narrowed by the gateway", true, true, one("0.0.0.0/0"), one("10.7.0.2/32"), one("10.7.0.2/32"), true, one("10.7.0.1/32")},
		{"agreed", true, true, one("10.7.0.1/32"), one("10.7.0.2/32"), one("10.7.0.2/32"), true, nil},
		{"gateway refuses", true, false, one("10.7.0.1/32"), one("10.7.0.2/32"), one("10.7.0.2/32"), false, nil},
		{"not asked", false, true, one("10.7.0.1/32"), one("10.7.0.2/32"), one("10.7.0.2/32"), false, nil},
		{"a network behind the gateway", true, true, one("10.7.0.1/32"), one("10.7.0.0/24"), one("10.7.0.0/24"), false, nil},
		{"two families", true, true, one("10.7.0.1/32"), one("fd07::2/128"), one("fd07::2/128"), false, nil},
		{"IPv6", true, true, one("fd07::1/128"), one("fd07::2/128"), one("fd07::2/128"), true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			psk := []byte("a pre-shared key of some length")
			w, gh := startResponder(t, ResponderConfig{PSK: psk, Pools: []netip.Prefix{}, LocalTS: tc.gw, RemoteTS: tc.gwRemote, Transport: tc.allow})
			s, ch := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test"),
				LocalTS: tc.local, RemoteTS: tc.remote, Transport: tc.ask})
			connect(t, s, true)
			c, g := ch.last(), gh.last()
			pairOK(t, c, g)
			if tc.gwRemote != nil && (!slices.Equal(c.LocalTS, tc.gwRemote) || !slices.Equal(g.RemoteTS, tc.gwRemote)) {
				t.Fatalf("the client's side narrowed to %v (gateway %v), want %v", c.LocalTS, g.RemoteTS, tc.gwRemote)
			}
			if c.Transport != tc.want || g.Transport != tc.want {
				t.Fatalf("transport mode: client %v, gateway %v, want %v (selectors %v ⇄ %v)", c.Transport, g.Transport, tc.want, c.LocalTS, c.RemoteTS)
			}
			if mode := s.Status().Child.Mode; mode != c.mode() {
				t.Fatalf("status says %q", mode)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.rekeyChild(ctx); err != nil {
				t.Fatal(err)
			}
			if c, g := ch.last(), gh.last(); c.Transport != tc.want || g.Transport != tc.want {
				t.Fatalf("after the client's rekey: client %v, gateway %v", c.Transport, g.Transport)
			}
			// The client's loop answers the gateway's rekey.
			runCtx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { s.Run(runCtx); close(done) }()
			t.Cleanup(func() { stop(); <-done })
			w.r.do(ctx, func() { w.r.rekeyChild(w.r.clients[0]) })
			testenv.WaitUntil(t, 5*time.Second, "the gateway's rekey", func() bool { installed, _, _ := gh.counts(); return installed == 3 })
			if c, g := ch.last(), gh.last(); c.Transport != tc.want || g.Transport != tc.want {
				t.Fatalf("after the gateway's rekey: client %v, gateway %v", c.Transport, g.Transport)
			}
		})
	}
}

func TestTransportSelectors(t *testing.T) {
	p := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		local, remote []netip.Prefix
		want          bool
	}{
		{p("10.0.0.1/32"), p("10.0.0.2/32"), true},
		{p("fd00::1/128"), p("fd00::2/128"), true},
		{p("10.0.0.1/32"), p("10.0.0.0/31"), false},
		{p("10.0.0.1/32", "fd00::1/128"), p("10.0.0.2/32"), false},
		{p("::ffff:10.0.0.1/128"), p("::ffff:10.0.0.2/128"), false},
		{nil, p("10.0.0.2/32"), false},
	} {
		if got := transportSelectors(tc.local, tc.remote); got != tc.want {
			t.Errorf("%v ⇄ %v: %v, want %v", tc.local, tc.remote, got, tc.want)
		}
	}
}

// TestResponderPeers: a responder with Peers lets only those identities
// in, whatever key they prove.
func TestResponderPeers(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	w, _ := startResponder(t, ResponderConfig{PSK: psk, Pools: []netip.Prefix{}, Peers: []Identity{mustID(t, "b.example")}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stranger, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, LocalID: mustID(t, "c.example"), RemoteID: mustID(t, "gw.mifsec.test")})
	if err := stranger.connect(ctx, true); !errorsIs(err, ErrAuthFailed) {
		t.Fatalf("an identity not among the peers: %v, want %v", err, ErrAuthFailed)
	}
	peer, _ := w.newClient(t, "192.0.2.11", SessionConfig{PSK: psk, LocalID: mustID(t, "B.example."), RemoteID: mustID(t, "gw.mifsec.test")})
	connect(t, peer, true)
}

// TestSessionWaitToConnectAndDrop: a session that runs without Connect
// first waits for WaitToConnect, connects, and after Drop deletes its IKE
// SA at the responder and waits again before a new one; the responder's
// Disconnect sends it back to waiting too.
func TestSessionWaitToConnectAndDrop(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	w, _ := startResponder(t, ResponderConfig{PSK: psk, Pools: []netip.Prefix{}})
	waits := make(chan chan struct{})
	s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test"), ReconnectDelay: 10 * time.Millisecond,
		WaitToConnect: func(ctx context.Context) error {
			release := make(chan struct{})
			select {
			case waits <- release:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	next := func(what string) chan struct{} {
		t.Helper()
		select {
		case r := <-waits:
			return r
		case <-time.After(5 * time.Second):
			t.Fatalf("no WaitToConnect %s", what)
			return nil
		}
	}
	established := func() bool { return s.Status().State == "established" }
	release := next("before the first connection")
	time.Sleep(50 * time.Millisecond)
	if established() || len(clients(t, w)) != 0 {
		t.Fatal("connected before WaitToConnect returned")
	}
	close(release)
	testenv.WaitUntil(t, 5*time.Second, "established", established)
	first := s.Status().IKESPIi

	s.Drop()
	release = next("after Drop")
	testenv.WaitUntil(t, 5*time.Second, "the responder to forget the dropped IKE SA", func() bool { return len(clients(t, w)) == 0 })
	close(release)
	testenv.WaitUntil(t, 5*time.Second, "established again", func() bool { return established() && s.Status().IKESPIi != first })

	if n, err := w.r.Disconnect(ctx, mustID(t, "client@mifsec.test"), "the test says so"); n != 1 || err != nil {
		t.Fatalf("Disconnect: %d, %v", n, err)
	}
	close(next("after the responder's Disconnect"))
	testenv.WaitUntil(t, 5*time.Second, "established a third time", func() bool { return established() && len(clients(t, w)) == 1 })
}
