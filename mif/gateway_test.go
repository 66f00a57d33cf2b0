package mif

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/ike"
)

func TestListenerAt(t *testing.T) {
	v4a := &listener{addr: netip.MustParseAddr("192.0.2.2")}
	v4b := &listener{addr: netip.MustParseAddr("198.51.100.2")}
	v6 := &listener{addr: netip.MustParseAddr("2001:db8::2")}
	wild := &listener{addr: netip.IPv4Unspecified()}
	g := &Gateway{listeners: []*listener{v4a, v4b, v6, wild}}
	var _ ike.ResponderTransport = g
	for _, tc := range []struct {
		local, to string
		want      *listener
	}{
		{"198.51.100.2", "203.0.113.9:4500", v4b},   // the address it talks to
		{"192.0.2.2", "203.0.113.9:4500", v4a},      // the same client, another path
		{"0.0.0.0", "203.0.113.9:4500", wild},       // arrived on the wildcard socket
		{"203.0.113.1", "203.0.113.10:4500", v4a},   // not an address of ours: the first of its family
		{"", "[2001:db8:1::5]:4500", v6},            // unknown, IPv6
		{"2001:db8::2", "[2001:db8:1::5]:4500", v6}, // IPv6
	} {
		var local netip.Addr
		if tc.local != "" {
			local = netip.MustParseAddr(tc.local)
		}
		if got := g.listenerAt(local, netip.MustParseAddrPort(tc.to)); got != tc.want {
			t.Errorf("listenerAt(%s, %s) = %v, want %v", tc.local, tc.to, got.addr, tc.want.addr)
		}
	}
	one := &Gateway{listeners: []*listener{v4a}}
	if got := one.listenerAt(netip.Addr{}, netip.MustParseAddrPort("[2001:db8::9]:4500")); got != v4a {
		t.Errorf("one listener: %v", got.addr)
	}
	if got := g.otherAddresses(v4a.addr); len(got) != 2 || got[0] != v4b.addr || got[1] != v6.addr {
		t.Errorf("addresses announced to a client of %v: %v, want the other specific ones", v4a.addr, got)
	}
}

// TestGatewayClientMoved checks that a MOBIKE move re-points every Child
// SA of the client, and only of that client, at its new endpoint.
func TestGatewayClientMoved(t *testing.T) {
	conn, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	l := &listener{addr: netip.MustParseAddr("127.0.0.1"), natT: conn, path: &dataplane.Path{ID: 0, Conn: conn}}
	g := &Gateway{listeners: []*listener{l}, kids: map[uint32]*gatewayChild{}, clients: map[*ike.RemoteClient]*gatewayClient{}, log: slog.New(slog.DiscardHandler)}
	var _ ike.ResponderPathHandler = g
	var _ ike.ResponderActivity = g
	var _ ike.InboundSPIs = g
	moving := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.10:4500")}
	staying := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.11:4500")}
	for spi, c := range map[uint32]*ike.RemoteClient{1: moving, 2: moving, 3: staying} {
		m, err := g.member(c)
		if err != nil {
			t.Fatal(err)
		}
		k := &gatewayChild{client: c, group: dataplane.NewPathGroup(nil, m)}
		g.kids[spi] = k
		if g.clients[c] == nil {
			g.clients[c] = &gatewayClient{}
		}
		g.clients[c].kids = append(g.clients[c].kids, k)
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
