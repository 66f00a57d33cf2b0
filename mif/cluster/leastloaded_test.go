package cluster

import (
	"net/netip"
	"testing"
)

// TestLeastLoadedSpreads: redirects between two reads of the member list
// go to the member with the fewest clients counting those already sent
// there, so that a drain spreads its clients; this gateway and members
// without an address are never the target.
func TestLeastLoadedSpreads(t *testing.T) {
	b, c, d := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")
	cl := &Cluster{cfg: Config{Name: "a"}, members: []Member{
		{Name: "a", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Clients: 0},
		{Name: "b", Addresses: []netip.Addr{b}, Clients: 10},
		{Name: "c", Addresses: []netip.Addr{c}, Clients: 4},
		{Name: "d", Clients: 0},
	}}
	got := map[netip.Addr]int{}
	for range 20 {
		addr, ok := cl.LeastLoaded()
		if !ok {
			t.Fatal("no target")
		}
		got[addr]++
	}
	// c takes 6 to reach b's 10, then they alternate: 13 and 7.
	if got[c] != 13 || got[b] != 7 || got[d] != 0 || len(got) != 2 {
		t.Fatalf("20 redirects went to %v; want 13 to c, 7 to b", got)
	}
	alone := &Cluster{cfg: Config{Name: "a"}, members: []Member{{Name: "a", Addresses: []netip.Addr{b}}}}
	if _, ok := alone.LeastLoaded(); ok {
		t.Fatal("a cluster of this gateway alone gave a target")
	}
}
