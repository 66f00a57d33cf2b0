package dataplane

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// routeTable holds the outbound routes, shaped for the per-packet lookup
// of the outbound workers.
//
// A gateway has one host route per client (the client's leased inner
// address, /32 or /128) and a few wider prefixes; a client has a handful of
// prefixes. Host routes go into a table keyed by address (table.go), so a
// gateway with thousands of clients finds a packet's SA in one hash lookup
// instead of a scan, and the remaining prefixes, few in practice, are
// scanned most specific first. A host route is more specific than any
// other prefix of its family, so checking the hosts first keeps
// longest-prefix-match semantics. Of equal prefixes the first added wins.
//
// Adding or removing a client's routes changes the host table in place
// (O(1), no copy of the other clients' routes); the wide prefixes are
// published as a new slice. A published Route is never changed: a worker
// may hold its pointer for the rest of its batch, and a route whose SA or
// group changes is published anew.
type routeTable struct {
	hosts *table[netip.Addr, *Route] // the first host route of each address
	wide  atomic.Pointer[[]Route]    // the other routes, most specific first

	// The writers' side, under mu: every route in the order added.
	mu       sync.Mutex
	seq      uint64
	hostList map[netip.Addr][]*routeEntry // per address, in the order added
	wideList []*routeEntry                // in the order added
	bySA     map[*SA][]*routeEntry
}

type routeEntry struct {
	Route
	seq uint64 // the order added (kept when the route is published anew)
}

func newRouteTable() *routeTable {
	t := &routeTable{
		hosts:    newTable[netip.Addr, *Route](hashAddr),
		hostList: make(map[netip.Addr][]*routeEntry),
		bySA:     make(map[*SA][]*routeEntry),
	}
	t.wide.Store(&[]Route{})
	return t
}

// lookup returns the most specific route containing dst, or nil. It takes
// no lock and makes no allocation.
func (t *routeTable) lookup(dst netip.Addr) *Route {
	if t.hosts.len() > 0 {
		if r, ok := t.hosts.get(dst); ok {
			return r
		}
	}
	wide := *t.wide.Load()
	for i := range wide {
		if wide[i].Prefix.Contains(dst) {
			return &wide[i]
		}
	}
	return nil
}

// add adds routes after the existing ones.
func (t *routeTable) add(routes []Route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(routes)
}

// addLocked adds routes; mu is held.
func (t *routeTable) addLocked(routes []Route) {
	wide := false
	for _, r := range routes {
		t.seq++
		e := &routeEntry{Route: r, seq: t.seq}
		t.bySA[r.SA] = append(t.bySA[r.SA], e)
		if !r.Prefix.IsSingleIP() {
			t.wideList = append(t.wideList, e)
			wide = true
			continue
		}
		a := r.Prefix.Addr().Unmap()
		t.hostList[a] = append(t.hostList[a], e)
		if len(t.hostList[a]) == 1 {
			t.hosts.set(a, &e.Route)
		}
	}
	if wide {
		t.publishWide()
	}
}

// set replaces every route with routes. An address routed before and
// after has a route throughout.
func (t *routeTable) set(routes []Route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.hostList
	t.hostList = make(map[netip.Addr][]*routeEntry)
	t.wideList = nil
	clear(t.bySA)
	t.addLocked(routes)
	for a := range old {
		if _, kept := t.hostList[a]; !kept {
			t.hosts.delete(a)
		}
	}
	t.publishWide()
}

// removeSA removes every route through sa and reports how many there were.
func (t *routeTable) removeSA(sa *SA) int {
	return t.edit(sa, func(*Route) bool { return false })
}

// change publishes anew, changed by f, every route through sa and reports
// how many there were.
func (t *routeTable) change(sa *SA, f func(*Route)) int {
	return t.edit(sa, func(r *Route) bool { f(r); return true })
}

// edit calls f with a copy of every route through sa: the copy replaces
// the route where f returns true, and the route goes where it returns
// false. It reports how many routes there were.
func (t *routeTable) edit(sa *SA, f func(*Route) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.bySA[sa]
	delete(t.bySA, sa)
	wide := false
	for _, e := range old {
		n := &routeEntry{Route: e.Route, seq: e.seq}
		keep := f(&n.Route)
		if keep {
			t.bySA[n.SA] = append(t.bySA[n.SA], n)
		}
		if !e.Prefix.IsSingleIP() {
			i := slices.Index(t.wideList, e)
			if keep {
				t.wideList[i] = n
			} else {
				t.wideList = slices.Delete(t.wideList, i, i+1)
			}
			wide = true
			continue
		}
		a := e.Prefix.Addr().Unmap()
		list := t.hostList[a]
		i := slices.Index(list, e)
		if keep {
			list[i] = n
		} else {
			list = slices.Delete(list, i, i+1)
		}
		switch {
		case len(list) == 0:
			delete(t.hostList, a)
			t.hosts.delete(a)
		case i == 0:
			t.hostList[a] = list
			t.hosts.set(a, &list[0].Route)
		default:
			t.hostList[a] = list
		}
	}
	if wide {
		t.publishWide()
	}
	return len(old)
}

// publishWide publishes the wide routes, most specific first; mu is held.
func (t *routeTable) publishWide() {
	w := make([]Route, 0, len(t.wideList))
	for _, e := range sortedRoutes(slices.Clone(t.wideList)) {
		w = append(w, e.Route)
	}
	t.wide.Store(&w)
}

// sortedRoutes sorts entries most specific first, then in the order added.
func sortedRoutes(entries []*routeEntry) []*routeEntry {
	slices.SortFunc(entries, func(a, b *routeEntry) int {
		if c := b.Prefix.Bits() - a.Prefix.Bits(); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	return entries
}

// all returns a copy of every route, most specific first.
func (t *routeTable) all() []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	entries := slices.Clone(t.wideList)
	for _, list := range t.hostList {
		entries = append(entries, list...)
	}
	r := make([]Route, 0, len(entries))
	for _, e := range sortedRoutes(entries) {
		r = append(r, e.Route)
	}
	return r
}

// to returns the routes of prefix p exactly, in the order added.
func (t *routeTable) to(p netip.Prefix) []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	var r []Route
	if p.IsSingleIP() {
		for _, e := range t.hostList[p.Addr().Unmap()] {
			if e.Prefix == p {
				r = append(r, e.Route)
			}
		}
		return r
	}
	for _, e := range t.wideList {
		if e.Prefix == p {
			r = append(r, e.Route)
		}
	}
	return r
}
