package netmon

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mifsec/mifsec/scheduler"
)

// Interface is one interface in a Snapshot.
type Interface struct {
	Name     string         `json:"name"`
	Index    int            `json:"index"`
	Kind     scheduler.Kind `json:"kind"`
	LinkType string         `json:"link_type"` // netlink's: device, veth, tuntap, ...
	Priority int            `json:"priority"`  // lower is better
	// Up is true when the interface is administratively up and has a
	// carrier (operational state up, or unknown with the lower layer up,
	// as tun devices and some drivers report).
	Up  bool `json:"up"`
	MTU int  `json:"mtu"`
	// Addrs are the addresses a path may use: global unicast, not
	// tentative (duplicate address detection still running), not
	// deprecated, not failed DAD. Sorted.
	Addrs []netip.Prefix `json:"addrs,omitempty"`
	// Default4 and Default6 are the interface's default routes in the
	// main table (the best metric when there are several).
	Default4 *DefaultRoute `json:"default4,omitempty"`
	Default6 *DefaultRoute `json:"default6,omitempty"`
	// Usable says the interface can carry a path to Config.Gateway: it is
	// up, has an address of the gateway's family, and the routing table
	// reaches the gateway through it (a route with a gateway, or a
	// connected prefix). Source is the local address such a path sends
	// from. Both are zero without Config.Gateway.
	Usable bool       `json:"usable"`
	Source netip.Addr `json:"source,omitzero"`
	// UsableSince is when the interface last became usable, as the
	// monitor saw it: a loss is always published, so an interface that
	// went away and came back between two snapshots a consumer read
	// still shows a new UsableSince. Zero when not usable.
	UsableSince time.Time `json:"usable_since,omitzero"`
}

// DefaultRoute is a default route through an interface.
type DefaultRoute struct {
	Gateway netip.Addr `json:"gateway,omitzero"` // zero for a point-to-point default
	Metric  int        `json:"metric"`
}

// HasAddr reports whether the interface has a usable address of a's
// family (IPv4 or IPv6).
func (i *Interface) HasAddr(is6 bool) bool {
	for _, p := range i.Addrs {
		if p.Addr().Is6() == is6 {
			return true
		}
	}
	return false
}

// Snapshot is the state of the host's interfaces at one moment: the
// admitted interfaces, best priority first, then by name.
type Snapshot struct {
	// Seq counts the snapshots a monitor published, from 1.
	Seq        uint64      `json:"seq"`
	Interfaces []Interface `json:"interfaces"`
}

// Lookup returns the interface named name.
func (s Snapshot) Lookup(name string) (Interface, bool) {
	for _, i := range s.Interfaces {
		if i.Name == name {
			return i, true
		}
	}
	return Interface{}, false
}

// Usable returns the usable interfaces, best priority first.
func (s Snapshot) Usable() []Interface {
	var out []Interface
	for _, i := range s.Interfaces {
		if i.Usable {
			out = append(out, i)
		}
	}
	return out
}

// sameAs reports whether two snapshots describe the same state (Seq
// aside).
func (s Snapshot) sameAs(o Snapshot) bool {
	return slices.EqualFunc(s.Interfaces, o.Interfaces, func(a, b Interface) bool {
		return a.Name == b.Name && a.Index == b.Index && a.Kind == b.Kind && a.LinkType == b.LinkType &&
			a.Priority == b.Priority && a.Up == b.Up && a.MTU == b.MTU && slices.Equal(a.Addrs, b.Addrs) &&
			a.Default4.Equal(b.Default4) && a.Default6.Equal(b.Default6) &&
			a.Usable == b.Usable && a.Source == b.Source
	})
}

// Equal reports whether two default routes (either may be nil: none) are
// the same.
func (r *DefaultRoute) Equal(o *DefaultRoute) bool {
	if r == nil || o == nil {
		return r == o
	}
	return *r == *o
}

// linkState is what the monitor knows of one link from link events.
type linkState struct {
	facts linkFacts
	kind  scheduler.Kind
	up    bool
	mtu   int
}

// state is the monitor's model of the namespace, fed by events. Only the
// monitor's goroutine touches it.
type state struct {
	sysfs string
	links map[int]*linkState
	// addrs holds every address by link index, with whether a path may
	// use it.
	addrs map[int]map[netip.Prefix]bool
}

func newState(sysfs string) *state {
	return &state{sysfs: sysfs, links: map[int]*linkState{}, addrs: map[int]map[netip.Prefix]bool{}}
}

// linkUp reads the operational state the way Interface.Up documents.
func linkUp(a *netlink.LinkAttrs) bool {
	if a.Flags&net.FlagUp == 0 {
		return false
	}
	switch a.OperState {
	case netlink.OperUp:
		return true
	case netlink.OperUnknown:
		return a.RawFlags&unix.IFF_LOWER_UP != 0
	}
	return false
}

// setLink records a link as a dump or an RTM_NEWLINK describes it and
// reports whether the change is a loss (the link was up and is not).
func (s *state) setLink(l netlink.Link) (loss bool) {
	a := l.Attrs()
	ls := &linkState{
		facts: linkFacts{Name: a.Name, Index: a.Index, LinkType: l.Type(), Encap: a.EncapType},
		up:    linkUp(a),
		mtu:   a.MTU,
	}
	ls.kind = classify(s.sysfs, ls.facts)
	old := s.links[a.Index]
	s.links[a.Index] = ls
	return old != nil && old.up && !ls.up
}

// deleteLink forgets a link (RTM_DELLINK) and its addresses.
func (s *state) deleteLink(index int) (loss bool) {
	old := s.links[index]
	delete(s.links, index)
	delete(s.addrs, index)
	return old != nil && old.up
}

// applyLink applies a link event.
func (s *state) applyLink(u netlink.LinkUpdate) (loss bool) {
	if u.Header.Type == unix.RTM_DELLINK {
		return s.deleteLink(int(u.Index))
	}
	return s.setLink(u.Link)
}

// addrUsable says whether a path may send from an address with these
// flags and preferred lifetime.
func addrUsable(p netip.Prefix, flags, preferredLft int) bool {
	if !p.Addr().IsGlobalUnicast() {
		return false
	}
	if flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DEPRECATED|unix.IFA_F_DADFAILED) != 0 {
		return false
	}
	return preferredLft != 0
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// setAddr records an address and reports whether it was usable and is
// no longer (a loss).
func (s *state) setAddr(index int, n *net.IPNet, flags, preferredLft int, present bool) (loss bool) {
	p, ok := prefixOf(n)
	if !ok {
		return false
	}
	m := s.addrs[index]
	was := m[p]
	if !present {
		delete(m, p)
		return was
	}
	if m == nil {
		m = map[netip.Prefix]bool{}
		s.addrs[index] = m
	}
	now := addrUsable(p, flags, preferredLft)
	m[p] = now
	return was && !now
}

// applyAddr applies an address event.
func (s *state) applyAddr(u netlink.AddrUpdate) (loss bool) {
	return s.setAddr(u.LinkIndex, &u.LinkAddress, u.Flags, u.PreferedLft, u.NewAddr)
}

// reset replaces the whole model with a dump.
func (s *state) reset(links []netlink.Link, addrs []netlink.Addr) {
	s.links = map[int]*linkState{}
	s.addrs = map[int]map[netip.Prefix]bool{}
	for _, l := range links {
		s.setLink(l)
	}
	for _, a := range addrs {
		s.setAddr(a.LinkIndex, a.IPNet, a.Flags, a.PreferedLft, true)
	}
}

// defaultRoutes picks, per link and family, the best default route of a
// main-table dump.
func defaultRoutes(routes []netlink.Route) (v4, v6 map[int]DefaultRoute) {
	v4, v6 = map[int]DefaultRoute{}, map[int]DefaultRoute{}
	add := func(family, link int, gw net.IP, metric int) {
		m := v4
		if family == unix.AF_INET6 {
			m = v6
		}
		r := DefaultRoute{Metric: metric}
		if a, ok := netip.AddrFromSlice(gw); ok {
			r.Gateway = a.Unmap()
		}
		if old, ok := m[link]; !ok || metric < old.Metric {
			m[link] = r
		}
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		if r.Type != 0 && r.Type != unix.RTN_UNICAST {
			continue // unreachable, blackhole, prohibit
		}
		family := r.Family
		if len(r.MultiPath) > 0 {
			for _, nh := range r.MultiPath {
				add(family, nh.LinkIndex, nh.Gw, r.Priority)
			}
			continue
		}
		if r.LinkIndex != 0 {
			add(family, r.LinkIndex, r.Gw, r.Priority)
		}
	}
	return v4, v6
}

// build turns the model into a snapshot (without Seq, Usable and Source).
func (s *state) build(f *Filter, routes []netlink.Route) Snapshot {
	v4, v6 := defaultRoutes(routes)
	var snap Snapshot
	for idx, l := range s.links {
		if !f.Admits(l.facts.Name, l.kind) {
			continue
		}
		i := Interface{Name: l.facts.Name, Index: idx, Kind: l.kind, LinkType: l.facts.LinkType,
			Priority: f.Priority(l.facts.Name, l.kind), Up: l.up, MTU: l.mtu}
		for p, ok := range s.addrs[idx] {
			if ok {
				i.Addrs = append(i.Addrs, p)
			}
		}
		slices.SortFunc(i.Addrs, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
		if r, ok := v4[idx]; ok {
			i.Default4 = &r
		}
		if r, ok := v6[idx]; ok {
			i.Default6 = &r
		}
		snap.Interfaces = append(snap.Interfaces, i)
	}
	slices.SortFunc(snap.Interfaces, func(a, b Interface) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Index, b.Index))
	})
	return snap
}
