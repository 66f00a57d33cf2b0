package dataplane

import (
	"net/netip"
	"slices"
)

// routeTable is an immutable snapshot of the outbound routes, shaped for
// the per-packet lookup of the outbound workers.
//
// A gateway has one host route per client (the client's leased inner
// address, /32 or /128) and a few wider prefixes; a client has a handful of
// prefixes. Host routes go into a map, so a gateway with thousands of
// clients finds a packet's SA in one hash lookup instead of a scan, and the
// remaining prefixes, few in practice, are scanned most specific first. A
// host route is more specific than any other prefix of its family, so
// checking the map first keeps longest-prefix-match semantics.
//
// Writers build a new table and publish it with one atomic store; the
// workers keep the table they loaded for the rest of their batch.
type routeTable struct {
	all   []Route               // every route, most specific first
	hosts map[netip.Addr]*Route // /32 and /128 routes, into all
	wide  []Route               // the others, most specific first
}

func newRouteTable(routes []Route) *routeTable {
	t := &routeTable{all: routes}
	slices.SortStableFunc(t.all, func(a, b Route) int { return b.Prefix.Bits() - a.Prefix.Bits() })
	for i := range t.all {
		r := &t.all[i]
		if r.Prefix.IsSingleIP() {
			if t.hosts == nil {
				t.hosts = make(map[netip.Addr]*Route)
			}
			a := r.Prefix.Addr().Unmap()
			if _, dup := t.hosts[a]; !dup { // the first of equal prefixes wins, as in the scan
				t.hosts[a] = r
			}
			continue
		}
		t.wide = append(t.wide, *r)
	}
	return t
}

// lookup returns the most specific route containing dst, or nil. It makes
// no allocation.
func (t *routeTable) lookup(dst netip.Addr) *Route {
	if t.hosts != nil {
		if r := t.hosts[dst]; r != nil {
			return r
		}
	}
	for i := range t.wide {
		if t.wide[i].Prefix.Contains(dst) {
			return &t.wide[i]
		}
	}
	return nil
}
