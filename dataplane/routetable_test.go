package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// scanLookup is the reference: the most specific route containing dst, the
// first of equal prefixes.
func scanLookup(routes []Route, dst netip.Addr) *SA {
	var best *Route
	for i := range routes {
		r := &routes[i]
		if r.Prefix.Contains(dst) && (best == nil || r.Prefix.Bits() > best.Prefix.Bits()) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	return best.SA
}

func TestRouteTableLookup(t *testing.T) {
	sa := func(n uint32) *SA { return &SA{spi: n} }
	defV4, defV6, corp, host, host6, dup := sa(1), sa(2), sa(3), sa(4), sa(5), sa(6)
	routes := []Route{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), SA: defV4},
		{Prefix: netip.MustParsePrefix("::/0"), SA: defV6},
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), SA: corp},
		{Prefix: netip.MustParsePrefix("10.1.2.3/32"), SA: host},
		{Prefix: netip.MustParsePrefix("10.1.2.3/32"), SA: dup}, // the first wins
		{Prefix: netip.MustParsePrefix("fd00::7/128"), SA: host6},
	}
	tab := newRouteTable(routes)
	for _, tc := range []struct {
		dst  string
		want *SA
	}{
		{"192.0.2.1", defV4},
		{"10.9.9.9", corp},
		{"10.1.2.3", host},
		{"10.1.2.4", corp},
		{"2001:db8::1", defV6},
		{"fd00::7", host6},
		{"fd00::8", defV6},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			r := tab.lookup(netip.MustParseAddr(tc.dst))
			if r == nil || r.SA != tc.want {
				t.Fatalf("lookup(%s) = %v, want SA %v", tc.dst, r, tc.want)
			}
		})
	}
	if r := newRouteTable([]Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), SA: corp}}).lookup(netip.MustParseAddr("192.0.2.1")); r != nil {
		t.Fatalf("lookup outside every prefix = %v", r)
	}
	if len(tab.all) != len(routes) {
		t.Fatalf("table keeps %d of %d routes", len(tab.all), len(routes))
	}
}

// TestRouteTableMatchesScan compares the table with a scan on random
// tables of host routes and prefixes of every length.
func TestRouteTableMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(8))})
	}
	for round := range 200 {
		var routes []Route
		for i := range 1 + rng.IntN(40) {
			bits := rng.IntN(33)
			if rng.IntN(2) == 0 {
				bits = 32
			}
			p, _ := addr4().Prefix(bits)
			routes = append(routes, Route{Prefix: p, SA: &SA{spi: uint32(i + 1)}})
		}
		tab := newRouteTable(append([]Route(nil), routes...))
		for range 100 {
			dst := addr4()
			var got *SA
			if r := tab.lookup(dst); r != nil {
				got = r.SA
			}
			if want := scanLookup(routes, dst); got != want {
				t.Fatalf("round %d: lookup(%s) = %v, scan says %v\nroutes %v", round, dst, got, want, routes)
			}
		}
	}
}

func TestRouteTableLookupAllocatesNothing(t *testing.T) {
	routes := hostRoutes(1000)
	tab := newRouteTable(routes)
	dst := netip.MustParseAddr("100.64.1.200")
	if n := testing.AllocsPerRun(100, func() { tab.lookup(dst) }); n != 0 {
		t.Fatalf("%.1f allocations per lookup", n)
	}
}

func hostRoutes(n int) []Route {
	routes := []Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), SA: &SA{spi: 1}}}
	for i := range n {
		a := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		routes = append(routes, Route{Prefix: netip.PrefixFrom(a, 32), SA: &SA{spi: uint32(i + 256)}})
	}
	return routes
}

// BenchmarkRouteLookup shows the cost of finding a gateway client's SA
// among n clients, against the linear scan the table replaces.
func BenchmarkRouteLookup(b *testing.B) {
	for _, n := range []int{1, 200, 5000} {
		routes := hostRoutes(n)
		tab := newRouteTable(append([]Route(nil), routes...))
		last := routes[len(routes)-1].Prefix.Addr()
		b.Run(fmt.Sprintf("table/clients=%d", n), func(b *testing.B) {
			for b.Loop() {
				tab.lookup(last)
			}
		})
		b.Run(fmt.Sprintf("scan/clients=%d", n), func(b *testing.B) {
			for b.Loop() {
				scanLookup(tab.all, last)
			}
		})
	}
}
