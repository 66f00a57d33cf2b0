package load

import (
	"net/netip"
	"testing"
)

// TestRoamGateways: client i starts at gateway i mod n, moves on to one
// of the others (spread by its number), accepts datagrams from every
// gateway of the list and from none else; without a list it keeps to
// Gateway as before.
func TestRoamGateways(t *testing.T) {
	gws := []netip.AddrPort{netip.MustParseAddrPort("198.18.1.2:500"), netip.MustParseAddrPort("198.18.2.2:500"),
		netip.MustParseAddrPort("198.18.3.2:500")}
	cfg := &ClientsConfig{Gateway: gws[0], Gateways: gws}
	next := map[netip.AddrPort]int{}
	for i := range 6 {
		c := &fleetClient{i: i, cfg: cfg}
		c.startAt()
		if c.gateway() != gws[i%3] {
			t.Fatalf("client %d starts at %v, want %v", i, c.gateway(), gws[i%3])
		}
		n := c.nextGateway()
		if n == c.gateway() {
			t.Errorf("client %d moves on from %v to the same gateway", i, n)
		}
		if i%3 == 0 {
			next[n]++
		}
		if !c.accepts(gws[2].Addr()) || c.accepts(netip.MustParseAddr("192.0.2.9")) {
			t.Errorf("client %d accepts the wrong sources", i)
		}
	}
	if next[gws[1]] != 1 || next[gws[2]] != 1 {
		t.Errorf("the first gateway's clients move on to %v, want one to each other gateway", next)
	}
	c := &fleetClient{i: 4, cfg: &ClientsConfig{Gateway: gws[1]}}
	c.startAt()
	if c.gateway() != gws[1] || c.accepts(gws[0].Addr()) {
		t.Errorf("without Gateways: at %v, accepting %v", c.gateway(), gws[0])
	}
	// A redirect moves it; its history records the new gateway for the
	// IKE SA configured just before.
	c.roam.configured([]netip.Prefix{netip.MustParsePrefix("10.3.0.7/32")}, c.gateway())
	c.Redirected(gws[2])
	if c.gateway() != gws[2] || !c.accepts(gws[2].Addr()) || c.roam.redirects != 1 || c.roam.gateways[0] != gws[2] {
		t.Errorf("after a redirect: at %v, %d redirects, history %v", c.gateway(), c.roam.redirects, c.roam.gateways)
	}
}
