package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func routeTableOf(routes []Route) *routeTable {
	t := newRouteTable()
	t.add(routes)
	return t
}

// lookupSA is the SA of tab's route to dst, nil when none.
func lookupSA(tab *routeTable, dst netip.Addr) *SA {
	if r := tab.lookup(dst); r != nil {
		return r.SA
	}
	return nil
}

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
	tab := routeTableOf(routes)
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
	if r := routeTableOf([]Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), SA: corp}}).lookup(netip.MustParseAddr("192.0.2.1")); r != nil {
		t.Fatalf("lookup outside every prefix = %v", r)
	}
	if all := tab.all(); len(all) != len(routes) {
		t.Fatalf("table keeps %d of %d routes", len(all), len(routes))
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
		tab := routeTableOf(routes)
		for range 100 {
			dst := addr4()
			if got, want := lookupSA(tab, dst), scanLookup(routes, dst); got != want {
				t.Fatalf("round %d: lookup(%s) = %v, scan says %v\nroutes %v", round, dst, got, want, routes)
			}
		}
	}
}

func TestRouteTableLookupAllocatesNothing(t *testing.T) {
	routes := hostRoutes(1000)
	tab := routeTableOf(routes)
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
		tab := routeTableOf(routes)
		all := tab.all()
		last := routes[len(routes)-1].Prefix.Addr()
		b.Run(fmt.Sprintf("table/clients=%d", n), func(b *testing.B) {
			for b.Loop() {
				tab.lookup(last)
			}
		})
		b.Run(fmt.Sprintf("scan/clients=%d", n), func(b *testing.B) {
			for b.Loop() {
				scanLookup(all, last)
			}
		})
	}
}

// TestRouteTableChanges adds, removes, re-points and replaces routes at
// random and compares every lookup, and the listing, with a scan of the
// routes that should be there.
func TestRouteTableChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	addr4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(2)), byte(rng.IntN(4)), byte(rng.IntN(16))})
	}
	sas := make([]*SA, 30)
	for i := range sas {
		sas[i] = &SA{spi: uint32(i + 256)}
	}
	tab := newRouteTable()
	var want []Route // in the order added
	for step := range 3000 {
		switch op := rng.IntN(10); {
		case op < 5:
			bits := 32
			if rng.IntN(4) == 0 {
				bits = 8 + rng.IntN(25)
			}
			p, _ := addr4().Prefix(bits)
			r := Route{Prefix: p, SA: sas[rng.IntN(len(sas))]}
			tab.add([]Route{r})
			want = append(want, r)
		case op < 8:
			sa := sas[rng.IntN(len(sas))]
			n := len(want)
			want = slices.DeleteFunc(want, func(r Route) bool { return r.SA == sa })
			if got := tab.removeSA(sa); got != n-len(want) {
				t.Fatalf("step %d: removeSA reports %d routes, had %d", step, got, n-len(want))
			}
		case op < 9:
			from, to := sas[rng.IntN(len(sas))], sas[rng.IntN(len(sas))]
			n := 0
			for i := range want {
				if want[i].SA == from {
					want[i].SA = to
					n++
				}
			}
			if got := tab.change(from, func(r *Route) { r.SA = to }); got != n {
				t.Fatalf("step %d: change reports %d routes, had %d", step, got, n)
			}
		default:
			keep := want[:rng.IntN(len(want)+1)]
			want = slices.Clone(keep)
			tab.set(slices.Clone(keep))
		}
		for range 20 {
			dst := addr4()
			if got, w := lookupSA(tab, dst), scanLookup(want, dst); got != w {
				t.Fatalf("step %d: lookup(%s) = %v, scan says %v", step, dst, got, w)
			}
		}
		if got := tab.all(); len(got) != len(want) {
			t.Fatalf("step %d: table lists %d routes, want %d", step, len(got), len(want))
		}
	}
}

// TestRouteTableConcurrent looks routes up while another goroutine adds
// and removes clients' routes (run with -race): a route that is never
// removed is always found.
func TestRouteTableConcurrent(t *testing.T) {
	tab := routeTableOf(hostRoutes(10))
	stay := netip.MustParseAddr("100.64.0.5")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5000 {
			sa := &SA{spi: uint32(i + 1000)}
			a := netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)})
			tab.add([]Route{{Prefix: netip.PrefixFrom(a, 32), SA: sa}})
			if i%2 == 0 {
				tab.removeSA(sa)
			}
		}
	}()
	for {
		select {
		case <-done:
			if n := tab.hosts.len(); n != 10+2500 {
				t.Fatalf("%d host routes, want %d", n, 10+2500)
			}
			return
		default:
		}
		if r := tab.lookup(stay); r == nil || r.SA.spi != 5+256 {
			t.Fatalf("lookup(%s) = %v while others changed", stay, r)
		}
	}
}

// BenchmarkAddRoutes is the cost of adding one client's host route to a
// table of n clients' (it used to copy the whole table).
func BenchmarkAddRoutes(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			tab := routeTableOf(hostRoutes(n))
			sa := &SA{spi: 7}
			r := Route{Prefix: netip.MustParsePrefix("100.100.0.1/32"), SA: sa}
			b.ReportAllocs()
			for b.Loop() {
				tab.add([]Route{r})
				tab.removeSA(sa)
			}
		})
	}
}
