package mif

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
)

func TestPeerTable(t *testing.T) {
	var pt peerTable
	a := netip.MustParseAddrPort("192.0.2.1:4500")
	pt.note(a, 1, 1)
	if _, ok := pt.lookup(a); ok {
		t.Fatal("with one listener nothing needs to be remembered")
	}
	pt.note(a, 1, 2)
	if i, ok := pt.lookup(a); !ok || i != 1 {
		t.Fatalf("lookup = %d, %v", i, ok)
	}
	// A flood of other sources: the table stays within two generations
	// and the latest sources are found.
	var last netip.AddrPort
	for i := range 3*maxPeerGeneration + 5 {
		last = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), uint16(i))
		pt.note(last, 0, 2)
	}
	if n := len(pt.cur) + len(pt.prev); n > 2*maxPeerGeneration {
		t.Fatalf("%d entries, bound %d", n, 2*maxPeerGeneration)
	}
	if i, ok := pt.lookup(last); !ok || i != 0 {
		t.Fatalf("latest source not found: %d, %v", i, ok)
	}
	if _, ok := pt.lookup(a); ok {
		t.Fatal("a source three generations old is still remembered")
	}
}

func TestListenerFor(t *testing.T) {
	v4a := &listener{addr: netip.MustParseAddr("192.0.2.2")}
	v4b := &listener{addr: netip.MustParseAddr("198.51.100.2")}
	v6 := &listener{addr: netip.MustParseAddr("2001:db8::2")}
	g := &Gateway{listeners: []*listener{v4a, v4b, v6}}
	known := netip.MustParseAddrPort("203.0.113.9:4500")
	g.peers.note(known, 1, 3)
	for _, tc := range []struct {
		to   string
		want *listener
	}{
		{"203.0.113.9:4500", v4b},    // where its messages arrive
		{"203.0.113.10:4500", v4a},   // unknown: the first of its family
		{"[2001:db8:1::5]:4500", v6}, // unknown IPv6
		{"203.0.113.9:500", v4a},     // another port is another endpoint
	} {
		if got := g.listenerFor(netip.MustParseAddrPort(tc.to)); got != tc.want {
			t.Errorf("listenerFor(%s) = %v, want %v", tc.to, got.addr, tc.want.addr)
		}
	}
	one := &Gateway{listeners: []*listener{v4a}}
	if got := one.listenerFor(netip.MustParseAddrPort("[2001:db8::9]:4500")); got != v4a {
		t.Errorf("one listener: %v", got.addr)
	}
}

// TestListenerForSurvivesSpoofedFlood is L4: the sources an
// authenticated client used keep their listener through a flood of
// IKE_SA_INIT from spoofed sources that churns the unauthenticated table.
func TestListenerForSurvivesSpoofedFlood(t *testing.T) {
	v4a := &listener{addr: netip.MustParseAddr("192.0.2.2")}
	v4b := &listener{addr: netip.MustParseAddr("198.51.100.2")}
	g := &Gateway{listeners: []*listener{v4a, v4b}}
	client := netip.MustParseAddrPort("203.0.113.9:4500")
	g.peers.note(client, 1, 2)
	var _ ike.SourceObserver = g
	g.Confirmed(client)
	unauth := netip.MustParseAddrPort("203.0.113.10:4500") // only ever sent IKE_SA_INIT
	g.peers.note(unauth, 1, 2)
	for i := range 3 * maxPeerGeneration {
		g.peers.note(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 500), 0, 2)
	}
	if got := g.listenerFor(client); got != v4b {
		t.Fatalf("after a spoofed flood the client is answered from %v, want %v", got.addr, v4b.addr)
	}
	if got := g.listenerFor(unauth); got != v4a {
		t.Fatalf("an unauthenticated source kept its entry through the flood: %v", got.addr)
	}
	// A source the responder never vouched for is not confirmed.
	g.Confirmed(netip.MustParseAddrPort("203.0.113.11:4500"))
	if _, ok := g.confirmed.lookup(netip.MustParseAddrPort("203.0.113.11:4500")); ok {
		t.Fatal("a source with no arrival was confirmed")
	}
}

// TestGatewayClientMoved checks that a MOBIKE move re-points every Child
// SA of the client, and only of that client, at its new endpoint.
func TestGatewayClientMoved(t *testing.T) {
	conn, err := dataplane.ListenUDP(context.Background(), dataplane.UDPConfig{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	l := &listener{addr: netip.MustParseAddr("127.0.0.1"), natT: conn, path: &dataplane.Path{ID: 0, Conn: conn}}
	g := &Gateway{listeners: []*listener{l}, kids: map[uint32]*gatewayChild{}, log: slog.New(slog.DiscardHandler)}
	var _ ike.ResponderPathHandler = g
	var _ ike.ResponderActivity = g
	moving := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.10:4500")}
	staying := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.11:4500")}
	for spi, c := range map[uint32]*ike.RemoteClient{1: moving, 2: moving, 3: staying} {
		m, err := g.member(c)
		if err != nil {
			t.Fatal(err)
		}
		g.kids[spi] = &gatewayChild{client: c, group: dataplane.NewPathGroup(nil, m)}
	}
	moving.Remote = netip.MustParseAddrPort("198.51.100.7:4501")
	g.ClientMoved(moving)
	for spi, want := range map[uint32]string{1: "198.51.100.7:4501", 2: "198.51.100.7:4501", 3: "192.0.2.11:4500"} {
		ms := g.kids[spi].group.Members()
		if len(ms) != 1 || ms[0].Remote.AddrPort().String() != want {
			t.Errorf("Child SA %d sends to %v, want %s", spi, ms, want)
		}
	}
}
