package ike

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testenv"
)

// testPath is one of a client's paths on the in-memory wire: it sends from
// its own address to the responder, and can be cut in either direction.
type testPath struct {
	w        *memWire
	addr     netip.Addr
	sent     atomic.Int32
	lastTo   atomic.Value // netip.AddrPort: where the last datagram went
	upDown   atomic.Bool  // requests are lost
	downLost atomic.Bool  // answers to this address are lost
}

func (p *testPath) Send(msg []byte, to netip.AddrPort, natT bool) error {
	p.sent.Add(1)
	p.lastTo.Store(to)
	if p.upDown.Load() {
		return nil
	}
	port := uint16(500)
	if natT {
		port = 4500
	}
	p.w.r.Deliver(msg, to.Addr(), netip.AddrPortFrom(p.addr, port), natT)
	return nil
}

// cut loses everything on the path, both ways.
func (p *testPath) cut(down bool) { p.upDown.Store(down); p.downLost.Store(down) }

// pathWire is the gateway's transport for a wire with paths: an answer
// to a path whose downlink is cut is lost.
type pathWire struct {
	w     *memWire
	paths []*testPath
}

func (g pathWire) SendFrom(msg []byte, local netip.Addr, to netip.AddrPort, natT bool) error {
	for _, p := range g.paths {
		if p.addr == to.Addr() && p.downLost.Load() {
			return nil
		}
	}
	return gatewaySide{g.w}.SendFrom(msg, local, to, natT)
}

// pathLog is a session Handler that also follows path changes.
type pathLog struct {
	childLog
	changed []Path
}

func (l *pathLog) PathChanged(p Path) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changed = append(l.changed, p)
}

func (l *pathLog) changes() []Path {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.changed)
}

// gwPathLog is a gateway handler that also follows clients' paths.
type gwPathLog struct {
	gwLog
	moved   []RemoteClient
	added   []PathInfo
	removed []uint16
}

func (l *gwPathLog) ClientMoved(c *RemoteClient) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.moved = append(l.moved, *c)
}
func (l *gwPathLog) PathAdded(c *RemoteClient, p PathInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.added = append(l.added, p)
}
func (l *gwPathLog) PathRemoved(c *RemoteClient, id uint16) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removed = append(l.removed, id)
}
func (l *gwPathLog) snapshot() (moved []RemoteClient, added []PathInfo, removed []uint16) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.moved), slices.Clone(l.added), slices.Clone(l.removed)
}

// rig is a Responder and one running Session with two paths.
type rig struct {
	w            *memWire
	gh           *gwPathLog
	s            *Session
	ch           *pathLog
	p1, p2       *testPath
	path1, path2 Path
}

var (
	rigAddr1 = netip.MustParseAddr("192.0.2.10")
	rigAddr2 = netip.MustParseAddr("198.51.100.10")
)

func newRig(t *testing.T, gcfg ResponderConfig, ccfg SessionConfig) *rig {
	t.Helper()
	psk := []byte("a pre-shared key for paths")
	gcfg.PSK, ccfg.PSK = psk, psk
	gcfg.LocalID = mustID(t, "gw.mifsec.test")
	gcfg.IKE, gcfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	gcfg.Pools = []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}
	gcfg.LocalTS = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	rg := &rig{w: &memWire{gw: netip.MustParseAddrPort("192.0.2.1:500"), sessions: map[netip.Addr]*Session{}}, gh: &gwPathLog{}, ch: &pathLog{}}
	rg.p1, rg.p2 = &testPath{w: rg.w, addr: rigAddr1}, &testPath{w: rg.w, addr: rigAddr2}
	r, err := NewResponder(gcfg, pathWire{rg.w, []*testPath{rg.p1, rg.p2}}, rg.gh)
	if err != nil {
		t.Fatal(err)
	}
	rg.w.r = r
	ctx, cancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { r.Run(ctx); close(rdone) }()

	rg.path1 = Path{ID: "eth0", Local: netip.AddrPortFrom(rigAddr1, 4500), Transport: rg.p1, Interface: "eth0"}
	rg.path2 = Path{ID: "wlan0", Local: netip.AddrPortFrom(rigAddr2, 4500), Transport: rg.p2, Interface: "wlan0"}
	ccfg.Remote = rg.w.gw
	ccfg.LocalID = mustID(t, "client@mifsec.test")
	ccfg.IKE, ccfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	ccfg.RequestIPv4 = true
	// Short enough for the dead-path tests, long enough that a loaded
	// test host does not make a live path look dead.
	if ccfg.Retransmit.Timeout == 0 {
		ccfg.Retransmit = RetransmitPolicy{Timeout: 300 * time.Millisecond, Tries: 5}
	}
	if ccfg.PathCheck.Timeout == 0 {
		ccfg.PathCheck = RetransmitPolicy{Timeout: 250 * time.Millisecond, Tries: 3}
	}
	if ccfg.DPD == 0 {
		ccfg.DPD = time.Hour
	}
	p1 := rg.path1
	ccfg.Path = &p1
	s, err := NewSession(ccfg, nil, rg.ch)
	if err != nil {
		t.Fatal(err)
	}
	rg.s = s
	rg.w.mu.Lock()
	rg.w.sessions[rigAddr1], rg.w.sessions[rigAddr2] = s, s
	rg.w.mu.Unlock()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := s.Connect(cctx); err != nil {
		cancel()
		<-rdone
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan struct{})
	go func() { s.Run(sctx); close(sdone) }()
	// The client says goodbye while the gateway still answers.
	t.Cleanup(func() { scancel(); <-sdone; cancel(); <-rdone })
	return rg
}

func (rg *rig) client(t *testing.T) ClientStatus {
	t.Helper()
	st := clients(t, rg.w)
	if len(st) != 1 {
		t.Fatalf("%d clients at the gateway, want 1", len(st))
	}
	return st[0]
}

// ping runs a liveness check (an empty INFORMATIONAL) on the session's
// loop, as DPD does.
func (rg *rig) ping(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return rg.s.call(ctx, func(loop context.Context, r *callResult) error {
		_, err := rg.s.exchange(loop, rg.s.sa, wire.INFORMATIONAL, nil, rg.s.cfg.Retransmit)
		r.set(err)
		return nil
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMOBIKENegotiation(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		clientOff, gatewayOff  bool
		clientMIF, gatewayMIF  bool // disabled
		wantMOBIKE, wantMIFNeg bool
	}{
		{name: "both", wantMOBIKE: true, wantMIFNeg: true},
		{name: "client without MOBIKE", clientOff: true, wantMIFNeg: true},
		{name: "gateway without MOBIKE", gatewayOff: true, wantMIFNeg: true},
		{name: "client without MIF", clientMIF: true, wantMOBIKE: true},
		{name: "gateway without MIF", gatewayMIF: true, wantMOBIKE: true},
		{name: "neither", clientOff: true, gatewayOff: true, clientMIF: true, gatewayMIF: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gcfg := ResponderConfig{MobilityConfig: MobilityConfig{DisableMOBIKE: tc.gatewayOff, DisableMIF: tc.gatewayMIF,
				AdditionalAddresses: []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")}}}
			ccfg := SessionConfig{MobilityConfig: MobilityConfig{DisableMOBIKE: tc.clientOff, DisableMIF: tc.clientMIF,
				AdditionalAddresses: []netip.Addr{rigAddr2}}}
			rg := newRig(t, gcfg, ccfg)
			st := rg.s.Status()
			if rg.s.MOBIKE() != tc.wantMOBIKE || st.MIF != tc.wantMIFNeg {
				t.Fatalf("client: MOBIKE %v MIF %v, want %v %v", rg.s.MOBIKE(), st.MIF, tc.wantMOBIKE, tc.wantMIFNeg)
			}
			if st.Path != "eth0" || st.PathLocal != "192.0.2.10:4500" {
				t.Fatalf("client path %q %q", st.Path, st.PathLocal)
			}
			c := rg.client(t)
			if c.MOBIKE != tc.wantMOBIKE || c.MIF != tc.wantMIFNeg {
				t.Fatalf("gateway: MOBIKE %v MIF %v, want %v %v", c.MOBIKE, c.MIF, tc.wantMOBIKE, tc.wantMIFNeg)
			}
			wantGW, wantCl := []string(nil), []string(nil)
			if tc.wantMOBIKE {
				wantGW, wantCl = []string{"203.0.113.1", "2001:db8::1"}, []string{rigAddr2.String()}
			}
			if !slices.Equal(st.GatewayAddresses, wantGW) || !slices.Equal(c.ClientAddresses, wantCl) {
				t.Fatalf("additional addresses: client learnt %v, gateway learnt %v", st.GatewayAddresses, c.ClientAddresses)
			}
		})
	}
}

// TestMOBIKEAddressesPerClient: a gateway with several addresses tells
// each client the ones it did not reach the gateway on.
func TestMOBIKEAddressesPerClient(t *testing.T) {
	var asked []netip.Addr
	gcfg := ResponderConfig{MobilityConfig: MobilityConfig{
		AdditionalAddresses: []netip.Addr{netip.MustParseAddr("198.51.100.99")}, // replaced
		AdditionalAddressesFor: func(local netip.Addr) []netip.Addr {
			asked = append(asked, local)
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}
		}}}
	rg := newRig(t, gcfg, SessionConfig{})
	if want := rg.w.gw.Addr(); len(asked) != 1 || asked[0] != want {
		t.Fatalf("the gateway asked for the addresses other than %v, want once other than %s", asked, want)
	}
	if got := rg.s.Status().GatewayAddresses; !slices.Equal(got, []string{"203.0.113.7"}) {
		t.Fatalf("the client learnt the gateway's addresses %v, want [203.0.113.7]", got)
	}
}

// TestMOBIKEAnnounceAddresses: when the gateway's addresses change it
// tells its MOBIKE clients the new list in an INFORMATIONAL request (RFC
// 4555 §3.6), NO_ADDITIONAL_ADDRESSES when none is left.
func TestMOBIKEAnnounceAddresses(t *testing.T) {
	var mu sync.Mutex
	addrs := []netip.Addr{netip.MustParseAddr("203.0.113.7")}
	gcfg := ResponderConfig{MobilityConfig: MobilityConfig{AdditionalAddressesFor: func(netip.Addr) []netip.Addr {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(addrs)
	}}}
	rg := newRig(t, gcfg, SessionConfig{})
	for _, want := range [][]string{{"203.0.113.7", "198.51.100.77"}, nil} {
		mu.Lock()
		addrs = nil
		for _, a := range want {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		mu.Unlock()
		if err := rg.w.r.AnnounceAddresses(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		testenv.WaitUntil(t, 5*time.Second, fmt.Sprintf("the client to learn the gateway's addresses %v", want), func() bool {
			return slices.Equal(rg.s.Status().GatewayAddresses, want)
		})
	}
}

func TestMOBIKEUpdateAddresses(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	before := rg.s.Status()
	if c := rg.client(t); c.Remote != "192.0.2.10:4500" {
		t.Fatalf("gateway has the client at %s", c.Remote)
	}

	// A path test leaves on path 2 and moves nothing.
	sent2 := rg.p2.sent.Load()
	rtt, err := rg.s.CheckPath(ctxT(t), rg.path2)
	if err != nil {
		t.Fatal(err)
	}
	if rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("path test RTT %v", rtt)
	}
	if rg.p2.sent.Load() < sent2+1 { // more only when a loaded host delays the answer
		t.Fatalf("the path test sent %d datagrams on path 2, want 1", rg.p2.sent.Load()-sent2)
	}
	if c := rg.client(t); c.Remote != "192.0.2.10:4500" || c.Moves != 0 {
		t.Fatalf("a path test moved the client to %s (moves %d): MOBIKE forbids implicit updates", c.Remote, c.Moves)
	}
	if rg.s.Status().Path != "eth0" {
		t.Fatal("a path test changed the session's path")
	}

	start := time.Now()
	if err := rg.s.UpdateAddresses(ctxT(t), rg.path2); err != nil {
		t.Fatal(err)
	}
	t.Logf("UpdateAddresses took %v in memory", time.Since(start))
	st := rg.s.Status()
	// The gateway moves once its return routability check came back.
	testenv.WaitUntil(t, 5*time.Second, "the gateway to move the client once", func() bool { return rg.client(t).Moves == 1 })
	if st.Path != "wlan0" || st.PathUpdates != 1 || st.IKESPIi != before.IKESPIi || st.IKESPIr != before.IKESPIr {
		t.Fatalf("after the update: path %q updates %d SPIs %s/%s (were %s/%s)", st.Path, st.PathUpdates, st.IKESPIi, st.IKESPIr, before.IKESPIi, before.IKESPIr)
	}
	if ch := rg.ch.changes(); len(ch) != 1 || ch[0].ID != "wlan0" {
		t.Fatalf("PathChanged calls %+v", ch)
	}
	c := rg.client(t)
	if c.Remote != "198.51.100.10:4500" || c.Moves != 1 || c.IKESPIi != before.IKESPIi {
		t.Fatalf("gateway after the update: %+v", c)
	}
	moved, _, _ := rg.gh.snapshot()
	if len(moved) != 1 || moved[0].Remote != netip.MustParseAddrPort("198.51.100.10:4500") {
		t.Fatalf("ClientMoved calls %+v", moved)
	}

	// IKE now uses path 2 only: cut path 1, DPD still works.
	rg.p1.cut(true)
	sent1, sent2 := rg.p1.sent.Load(), rg.p2.sent.Load()
	if err := rg.ping(t); err != nil {
		t.Fatal(err)
	}
	if rg.p1.sent.Load() != sent1 || rg.p2.sent.Load() < sent2+1 {
		t.Fatalf("liveness check sent %d on path 1 and %d on path 2", rg.p1.sent.Load()-sent1, rg.p2.sent.Load()-sent2)
	}
	// So does a Child SA rekey, started by the client.
	ctx := ctxT(t)
	if err := rg.s.call(ctx, func(loop context.Context, r *callResult) error { r.set(rg.s.rekeyChild(loop)); return nil }); err != nil {
		t.Fatal(err)
	}
	pairOK(t, rg.ch.last(), rg.gh.last())
}

func TestMOBIKEDeadPath(t *testing.T) {
	for _, tc := range []struct {
		name        string
		up, down    bool // cut requests, answers
		wantRecords bool
	}{
		{name: "path dead", up: true, down: true},
		{name: "answers lost", down: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A short path check: every path test here is meant to fail.
			rg := newRig(t, ResponderConfig{}, SessionConfig{MobilityConfig: MobilityConfig{PathCheck: RetransmitPolicy{Timeout: 50 * time.Millisecond, Tries: 2}}})
			rg.p2.upDown.Store(tc.up)
			rg.p2.downLost.Store(tc.down)
			if _, err := rg.s.CheckPath(ctxT(t), rg.path2); !errors.Is(err, ErrPathSilent) {
				t.Fatalf("CheckPath on a dead path: %v, want ErrPathSilent", err)
			}
			// The message IDs are still in step: the next request works.
			if err := rg.ping(t); err != nil {
				t.Fatalf("after a failed path test: %v", err)
			}
			if err := rg.s.UpdateAddresses(ctxT(t), rg.path2); !errors.Is(err, ErrPathSilent) {
				t.Fatalf("UpdateAddresses on a dead path: %v, want ErrPathSilent", err)
			}
			if st := rg.s.Status(); st.Path != "eth0" || st.PathUpdates != 0 || st.State != "established" {
				t.Fatalf("after a failed update: %+v", st.MobilityStatus)
			}
			// Wherever the update got to, the gateway points at path 1
			// again.
			if c := rg.client(t); c.Remote != "192.0.2.10:4500" {
				t.Fatalf("gateway has the client at %s after a failed update", c.Remote)
			}
			if err := rg.ping(t); err != nil {
				t.Fatalf("after a failed update: %v", err)
			}
			if len(rg.ch.changes()) != 0 {
				t.Fatal("PathChanged after a failed update")
			}
		})
	}
}

// UpdateAddresses while a request is outstanding on a path that died: the
// request is retransmitted on the new path and the session survives.
func TestMOBIKEUpdateWhileRequestPending(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{Retransmit: RetransmitPolicy{Timeout: 300 * time.Millisecond, Tries: 4},
		DPD: 200 * time.Millisecond})
	before := rg.s.Status()
	rg.p1.cut(true)
	// DPD runs every second tick: wait until it retransmits on path 1.
	sent := rg.p1.sent.Load()
	testenv.WaitUntil(t, 5*time.Second, "two more datagrams on path 1", func() bool { return rg.p1.sent.Load() >= sent+2 })
	start := time.Now()
	if err := rg.s.UpdateAddresses(ctxT(t), rg.path2); err != nil {
		t.Fatal(err)
	}
	t.Logf("update with a request outstanding on a dead path took %v", time.Since(start))
	st := rg.s.Status()
	if st.Reconnects != 0 || st.IKESPIi != before.IKESPIi || st.Path != "wlan0" {
		t.Fatalf("after the update: reconnects %d, SPI %s (was %s), path %q", st.Reconnects, st.IKESPIi, before.IKESPIi, st.Path)
	}
	// The gateway moves once its return routability check came back.
	testenv.WaitUntil(t, 5*time.Second, "the gateway to move the client to 198.51.100.10:4500", func() bool { return rg.client(t).Remote == "198.51.100.10:4500" })
	if err := rg.ping(t); err != nil {
		t.Fatal(err)
	}
}

func TestMOBIKENotNegotiated(t *testing.T) {
	rg := newRig(t, ResponderConfig{MobilityConfig: MobilityConfig{DisableMOBIKE: true}}, SessionConfig{})
	if err := rg.s.UpdateAddresses(ctxT(t), rg.path2); !errors.Is(err, ErrNoMOBIKE) {
		t.Fatalf("UpdateAddresses without MOBIKE: %v", err)
	}
	// Without MOBIKE the gateway follows the client's requests (RFC 7296
	// §2.23): a path test moves it.
	if _, err := rg.s.CheckPath(ctxT(t), rg.path2); err != nil {
		t.Fatal(err)
	}
	if c := rg.client(t); c.Remote != "198.51.100.10:4500" {
		t.Fatalf("gateway without MOBIKE has the client at %s", c.Remote)
	}
}

func TestMOBIKENoNATsAllowed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		local netip.AddrPort
		ok    bool
	}{
		{"no NAT", netip.AddrPortFrom(rigAddr2, 4500), true},
		{"NAT on the path", netip.MustParseAddrPort("10.0.0.2:4500"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, ResponderConfig{}, SessionConfig{MobilityConfig: MobilityConfig{NoNATsAllowed: true}})
			p := rg.path2
			p.Local = tc.local
			err := rg.s.UpdateAddresses(ctxT(t), p)
			if (err == nil) != tc.ok {
				t.Fatalf("UpdateAddresses: %v, want ok=%v", err, tc.ok)
			}
			want := "198.51.100.10:4500"
			if !tc.ok {
				want = "192.0.2.10:4500"
			}
			// A move waits for the gateway's return routability check.
			testenv.WaitUntil(t, 5*time.Second, "the gateway to move the client", func() bool { return rg.client(t).Remote == want })
		})
	}
}

// TestMIFPathToAnotherGatewayAddress: a path is a pair of addresses, so a
// client adds a path from the address its IKE SA uses to another address
// of the gateway, and may move its IKE SA there; the same pair twice is
// still refused.
func TestMIFPathToAnotherGatewayAddress(t *testing.T) {
	second := netip.MustParseAddr("192.0.2.2")
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	onSecond := rg.path1
	onSecond.Gateway = second
	if err := rg.s.AddPath(ctxT(t), onSecond, 3, wire.PathKindEthernet, 0); err != nil {
		t.Fatalf("a path from the IKE SA's own address to another gateway address: %v", err)
	}
	want := PathInfo{ID: 3, Kind: wire.PathKindEthernet, Remote: netip.MustParseAddrPort("192.0.2.10:4500"), Local: second, Interface: "eth0"}
	testenv.WaitUntil(t, 5*time.Second, "the gateway's handler to learn the path", func() bool { _, added, _ := rg.gh.snapshot(); return len(added) > 0 })
	if _, added, _ := rg.gh.snapshot(); len(added) != 1 || added[0] != want {
		t.Fatalf("PathAdded calls %+v, want %+v", added, want)
	}
	if err := rg.s.AddPath(ctxT(t), onSecond, 4, wire.PathKindEthernet, 0); err == nil {
		t.Fatal("a second path over the same pair of addresses was accepted")
	}
	if err := rg.s.UpdateAddresses(ctxT(t), onSecond); err != nil {
		t.Fatalf("moving the IKE SA to the gateway's other address: %v", err)
	}
	testenv.WaitUntil(t, 5*time.Second, "the gateway to move the client", func() bool { return rg.client(t).Local == second.String() })
	if moved, _, _ := rg.gh.snapshot(); len(moved) != 1 || moved[0].Local != second {
		t.Fatalf("ClientMoved calls %+v, want one to %v", moved, second)
	}
}

// TestSessionAnswersWhereTheRequestCameFrom: a gateway that asks from
// another of its addresses (the one the IKE SA uses went away) gets the
// answer there (RFC 7296 §2.11), not at the address that is gone.
func TestSessionAnswersWhereTheRequestCameFrom(t *testing.T) {
	second := netip.MustParseAddr("192.0.2.2")
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	r := rg.w.r
	answered := make(chan []wire.Payload, 1)
	if !r.do(ctxT(t), func() {
		c := r.clients[0]
		if err := r.requestTo(c, second, c.Remote, wire.INFORMATIONAL, nil, func(reply []wire.Payload) { answered <- reply }); err != nil {
			t.Error(err)
		}
	}) {
		t.Fatal("the responder does not serve")
	}
	select {
	case reply := <-answered:
		if reply == nil {
			t.Fatal("no answer")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer within 5s")
	}
	if to, _ := rg.p1.lastTo.Load().(netip.AddrPort); to.Addr() != second {
		t.Fatalf("the session answered to %v, want %v (where the request came from)", to, second)
	}
}

func TestMIFPaths(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	if err := rg.s.AddPath(ctxT(t), rg.path2, 0, wire.PathKindWLAN, 0); err == nil {
		t.Fatal("path 0 was accepted")
	}
	if err := rg.s.AddPath(ctxT(t), rg.path2, 7, wire.PathKindWLAN, 1); err != nil {
		t.Fatal(err)
	}
	want := PathInfo{ID: 7, Kind: wire.PathKindWLAN, Priority: 1, Remote: netip.MustParseAddrPort("198.51.100.10:4500"), Local: rg.w.gw.Addr(), Interface: "wlan0"}
	// The handler runs once the gateway's return routability check of
	// the new address came back.
	testenv.WaitUntil(t, 5*time.Second, "the gateway's handler to learn a path", func() bool { _, added, _ := rg.gh.snapshot(); return len(added) > 0 })
	c := rg.client(t)
	if _, added, _ := rg.gh.snapshot(); len(added) != 1 || added[0] != want {
		t.Fatalf("PathAdded calls %+v, want %+v", added, want)
	}
	if len(c.Paths) != 1 || c.Paths[0] != (PathStatus{ID: 7, Kind: "wlan", Priority: 1, Local: "192.0.2.1", Remote: "198.51.100.10:4500"}) {
		t.Fatalf("gateway status paths %+v", c.Paths)
	}
	if c.Remote != "192.0.2.10:4500" {
		t.Fatalf("adding a path moved the IKE SA to %s", c.Remote)
	}
	st := rg.s.Status()
	if len(st.Paths) != 1 || st.Paths[0].Name != "wlan0" || st.Paths[0].ID != 7 || st.Path != "eth0" {
		t.Fatalf("client status %+v", st.MobilityStatus)
	}

	// A path whose request only arrives when retransmitted on the IKE
	// SA's own path is refused, not recorded with the wrong address.
	p3 := &testPath{w: rg.w, addr: netip.MustParseAddr("203.0.113.10")}
	p3.cut(true)
	if err := rg.s.AddPath(ctxT(t), Path{ID: "wwan0", Transport: p3}, 8, wire.PathKindCellular, 5); !errors.Is(err, ErrPathSilent) {
		t.Fatalf("AddPath on a dead path: %v", err)
	}
	if c := rg.client(t); len(c.Paths) != 1 {
		t.Fatalf("gateway recorded a dead path: %+v", c.Paths)
	}

	if err := rg.s.RemovePath(ctxT(t), 99); err == nil {
		t.Fatal("removed an unknown path")
	}
	if err := rg.s.RemovePath(ctxT(t), 7); err != nil {
		t.Fatal(err)
	}
	if c := rg.client(t); len(c.Paths) != 0 {
		t.Fatalf("gateway paths after removal %+v", c.Paths)
	}
	if _, _, removed := rg.gh.snapshot(); !slices.Equal(removed, []uint16{7}) {
		t.Fatalf("PathRemoved calls %v", removed)
	}
	if st := rg.s.Status(); len(st.Paths) != 0 {
		t.Fatalf("client paths after removal %+v", st.Paths)
	}
}

func TestMIFNotNegotiated(t *testing.T) {
	rg := newRig(t, ResponderConfig{MobilityConfig: MobilityConfig{DisableMIF: true}}, SessionConfig{})
	if err := rg.s.AddPath(ctxT(t), rg.path2, 1, wire.PathKindWLAN, 0); !errors.Is(err, ErrNoMIF) {
		t.Fatalf("AddPath without MIF: %v", err)
	}
}

// A gateway ignores MIF_PATH_ADD from a client that did not negotiate
// MIF, and refuses a malformed one from one that did.
func TestResponderMIFRequests(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	for _, tc := range []struct {
		name string
		req  []wire.Payload
		want wire.NotifyType // error expected in the answer, 0 for none
	}{
		{"path add without COOKIE2", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_ADD, Data: wire.PathAdd{ID: 3}.Marshal()}}, wire.INVALID_SYNTAX},
		{"short path add", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_ADD, Data: []byte{1}}, &wire.Notify{NotifyType: wire.COOKIE2, Data: newCookie2()}}, wire.INVALID_SYNTAX},
		{"short COOKIE2", []wire.Payload{&wire.Notify{NotifyType: wire.COOKIE2, Data: []byte{1, 2, 3}}}, wire.INVALID_SYNTAX},
		{"path add from the IKE path", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_ADD, Data: wire.PathAdd{ID: 3}.Marshal()}, &wire.Notify{NotifyType: wire.COOKIE2, Data: newCookie2()}}, wire.UNACCEPTABLE_ADDRESSES},
		{"bad NO_NATS_ALLOWED", []wire.Payload{&wire.Notify{NotifyType: wire.NO_NATS_ALLOWED, Data: []byte{1}}}, wire.INVALID_SYNTAX},
		{"remove unknown path", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_REMOVE, Data: wire.PathRemoveData(5)}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reply []wire.Payload
			err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error {
				var err error
				reply, err = rg.s.exchange(loop, rg.s.sa, wire.INFORMATIONAL, tc.req, rg.s.cfg.Retransmit)
				r.set(err)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var got wire.NotifyType
			for _, n := range wire.FindAll[*wire.Notify](reply) {
				if n.NotifyType.IsError() {
					got = n.NotifyType
				}
			}
			if got != tc.want {
				t.Fatalf("answer's error %d, want %d (%+v)", got, tc.want, reply)
			}
		})
	}
	rg.client(t)
	if _, added, removed := rg.gh.snapshot(); len(added) != 0 || len(removed) != 0 {
		t.Fatalf("handler told of paths: added %v removed %v", added, removed)
	}
}

// The session echoes a gateway's COOKIE2 (a return routability check of
// the gateway, RFC 4555 §3.5) and answers its NAT detection.
func TestSessionEchoesCookie2(t *testing.T) {
	s := &Session{remote: netip.MustParseAddrPort("192.0.2.1:4500")}
	s.mob.mobike = true
	sa := &ikeSA{spiI: 1, spiR: 2}
	cookie := bytes.Repeat([]byte{9}, 32)
	reply := s.mobilityReply(sa, []wire.Payload{&wire.Notify{NotifyType: wire.COOKIE2, Data: cookie},
		&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: make([]byte, 20)}})
	if n := wire.FindNotify(reply, wire.COOKIE2); n == nil || !bytes.Equal(n.Data, cookie) {
		t.Fatalf("no COOKIE2 echo in %+v", reply)
	}
	if n := wire.FindNotify(reply, wire.NAT_DETECTION_DESTINATION_IP); n == nil || !bytes.Equal(n.Data, nATDetectionHash(1, 2, s.remote)) {
		t.Fatalf("NAT detection answer %+v", reply)
	}
	if got := s.mobilityReply(sa, []wire.Payload{&wire.Notify{NotifyType: wire.COOKIE2, Data: []byte{1}}}); len(got) != 0 {
		t.Fatalf("a malformed COOKIE2 was echoed: %+v", got)
	}
}

func TestCookie2Length(t *testing.T) {
	for n, ok := range map[int]bool{0: false, 7: false, 8: true, 16: true, 64: true, 65: false} {
		if err := checkCookie2(make([]byte, n)); (err == nil) != ok {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
	if a, b := newCookie2(), newCookie2(); bytes.Equal(a, b) || checkCookie2(a) != nil {
		t.Fatal("COOKIE2 values repeat or are malformed")
	}
}

func TestPathCheckPolicy(t *testing.T) {
	s := &Session{cfg: SessionConfig{Retransmit: RetransmitPolicy{Timeout: 2 * time.Second, Backoff: 1.5, Tries: 5}}}
	if p := s.pathCheckPolicy(); p != (RetransmitPolicy{Timeout: 2 * time.Second, Backoff: 1.5, Tries: 3}) {
		t.Fatalf("default path check policy %+v", p)
	}
	s.cfg.PathCheck = RetransmitPolicy{Timeout: time.Second, Backoff: 2, Tries: 1}
	if p := s.pathCheckPolicy(); p != s.cfg.PathCheck {
		t.Fatalf("configured path check policy %+v", p)
	}
}

// A call made while no IKE SA is up fails cleanly, and a caller's context
// bounds the wait for a loop that is not serving.
func TestPathCallsWithoutSA(t *testing.T) {
	s, err := NewSession(SessionConfig{Remote: netip.MustParseAddrPort("192.0.2.1:500"), PSK: []byte("k"),
		LocalID: mustID(t, "c@x"), IKE: mustIKE(t), ESP: mustESP(t)}, &testPath{}, &childLog{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.CheckPath(ctx, Path{ID: "x", Transport: &testPath{}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CheckPath without a running loop: %v", err)
	}
	if _, err := s.CheckPath(context.Background(), Path{ID: "x"}); err == nil {
		t.Fatal("a path without a transport was accepted")
	}
	// Served but not connected.
	var wg sync.WaitGroup
	lctx, lcancel := context.WithCancel(context.Background())
	wg.Go(func() {
		select {
		case f := <-s.mob.calls:
			f(lctx)
		case <-lctx.Done():
		}
	})
	if err := s.UpdateAddresses(ctxT(t), Path{ID: "x", Transport: &testPath{}}); !errors.Is(err, ErrNotEstablished) {
		t.Fatalf("UpdateAddresses without an IKE SA: %v", err)
	}
	lcancel()
	wg.Wait()
}

func mustIKE(t *testing.T) []ProposalSpec {
	i, _ := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	return i
}

func mustESP(t *testing.T) []ProposalSpec {
	_, e := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	return e
}

// A path test on a dead path gives up after exactly the PathCheck
// schedule and finishes its exchange on the current path at once (virtual
// time).
func TestPathExchangeSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rg := newRig(t, ResponderConfig{}, SessionConfig{
			Retransmit:     RetransmitPolicy{Timeout: 5 * time.Second, Backoff: 2, Tries: 3},
			MobilityConfig: MobilityConfig{PathCheck: RetransmitPolicy{Timeout: time.Second, Backoff: 2, Tries: 3}}})
		rg.p2.cut(true)
		start := time.Now()
		if _, err := rg.s.CheckPath(context.Background(), rg.path2); !errors.Is(err, ErrPathSilent) {
			t.Fatalf("CheckPath: %v", err)
		}
		if d := time.Since(start); d != 7*time.Second {
			t.Fatalf("gave up after %v, want 1s+2s+4s", d)
		}
		if n := rg.p2.sent.Load(); n != 3 {
			t.Fatalf("%d sends on the dead path, want 3", n)
		}
		// Both paths dead: the session gives the gateway up after the
		// path schedule and the full retransmission schedule.
		rg.p1.cut(true)
		start = time.Now()
		_, err := rg.s.CheckPath(context.Background(), rg.path2)
		if err == nil || time.Since(start) != 7*time.Second+(5+10+20)*time.Second {
			t.Fatalf("with both paths dead: %v after %v", err, time.Since(start))
		}
	})
}

// TestMOBIKEUpdateNeedsReturnRoutability: an authenticated
// UPDATE_SA_ADDRESSES from an address where the client does not receive (a
// spoofed source, or a path whose downlink is dead) does not move the
// gateway's SAs there: the gateway checks the address first (RFC 4555
// §5.2), so nobody can point its traffic at a third party.
func TestMOBIKEUpdateNeedsReturnRoutability(t *testing.T) {
	rg := newRig(t, ResponderConfig{Retransmit: RetransmitPolicy{Timeout: 50 * time.Millisecond, Tries: 2}},
		SessionConfig{MobilityConfig: MobilityConfig{PathCheck: RetransmitPolicy{Timeout: 50 * time.Millisecond, Tries: 2}}})
	// Requests from 203.0.113.66 reach the gateway; nothing it sends there
	// arrives (no session behind that address on the wire).
	victim := &testPath{w: rg.w, addr: netip.MustParseAddr("203.0.113.66")}
	path := Path{ID: "spoofed", Local: netip.AddrPortFrom(victim.addr, 4500), Transport: victim}
	if err := rg.s.UpdateAddresses(ctxT(t), path); !errors.Is(err, ErrPathSilent) {
		t.Fatalf("UpdateAddresses from an address that receives nothing: %v, want ErrPathSilent", err)
	}
	// Long enough for the gateway's check to give up (2 tries of 50 ms
	// on its 1 s tick).
	time.Sleep(2500 * time.Millisecond)
	moved, _, _ := rg.gh.snapshot()
	for _, c := range moved {
		if c.Remote.Addr() == victim.addr {
			t.Fatalf("the gateway moved the client's SAs to %s, which never answered", c.Remote)
		}
	}
	if c := rg.client(t); c.Remote != "192.0.2.10:4500" {
		t.Fatalf("gateway has the client at %s", c.Remote)
	}
	if err := rg.ping(t); err != nil {
		t.Fatalf("after the refused update: %v", err)
	}
}

// TestMIFPathLimits: path IDs are bounded and a client cannot make the
// gateway track more than MaxClientPaths paths.
func TestMIFPathLimits(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	for i := 1; i <= MaxClientPaths+1; i++ {
		tp := &testPath{w: rg.w, addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})}
		rg.w.mu.Lock()
		rg.w.sessions[tp.addr] = rg.s
		rg.w.mu.Unlock()
		err := rg.s.AddPath(ctxT(t), Path{ID: fmt.Sprintf("if%d", i), Local: netip.AddrPortFrom(tp.addr, 4500), Transport: tp}, uint16(i), wire.PathKindWLAN, 1)
		if i <= MaxClientPaths && err != nil {
			t.Fatalf("path %d: %v", i, err)
		}
		if i > MaxClientPaths && err == nil {
			t.Fatalf("path %d of at most %d accepted", i, MaxClientPaths)
		}
		if i <= MaxClientPaths {
			testenv.WaitUntil(t, 5*time.Second, "the gateway to record the client's paths", func() bool { return len(rg.client(t).Paths) == i })
		}
	}
	if n := len(rg.client(t).Paths); n != MaxClientPaths {
		t.Fatalf("gateway tracks %d paths, want %d", n, MaxClientPaths)
	}
	// An ID out of range is malformed.
	var reply []wire.Payload
	err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error {
		var err error
		reply, err = rg.s.exchange(loop, rg.s.sa, wire.INFORMATIONAL, []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_ADD, Data: wire.PathAdd{ID: 2000}.Marshal()},
			&wire.Notify{NotifyType: wire.COOKIE2, Data: newCookie2()}}, rg.s.cfg.Retransmit)
		r.set(err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := wire.FindNotify(reply, wire.INVALID_SYNTAX); n == nil {
		t.Fatalf("path ID 2000 not refused as malformed: %+v", reply)
	}
}

// TestMIFClassesAnnounced: a client's traffic classes reach the gateway
// in IKE_AUTH with the interface of its IKE SA's path, and each MIF path
// names its interface.
func TestMIFClassesAnnounced(t *testing.T) {
	const rules = "icmp:single@wlan0>eth0"
	rg := newRig(t, ResponderConfig{}, SessionConfig{MobilityConfig: MobilityConfig{MIFClasses: rules}})
	var peerClasses, pathIface string
	rg.w.r.do(ctxT(t), func() { peerClasses, pathIface = rg.w.r.clients[0].PeerClasses, rg.w.r.clients[0].PathInterface })
	if peerClasses != rules || pathIface != "eth0" {
		t.Fatalf("the gateway learnt classes %q on interface %q, want %q on eth0", peerClasses, pathIface, rules)
	}
	if err := rg.s.AddPath(ctxT(t), rg.path2, 7, wire.PathKindWLAN, 1); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 5*time.Second, "the gateway's handler to learn a path", func() bool { _, added, _ := rg.gh.snapshot(); return len(added) > 0 })
	if _, added, _ := rg.gh.snapshot(); added[0].Interface != "wlan0" {
		t.Fatalf("path added with interface %q, want wlan0", added[0].Interface)
	}
}
