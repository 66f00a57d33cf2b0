package netmon

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"

	"github.com/mifsec/mifsec/scheduler"
)

// lab is a namespace with a WLAN-like and a cellular-like veth (named
// wlan0 and wwan0, as the bench lab names them) whose peers sit in a
// second namespace, and a netlink handle to change it from the test.
type lab struct {
	ns, peer string
	h        *netlink.Handle
}

func newLab(t *testing.T) *lab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	l := &lab{ns: testenv.NewNamedNetns(t, "netmon"), peer: testenv.NewNamedNetns(t, "netmon-peer")}
	nsh, err := netns.GetFromName(l.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	if l.h, err = netlink.NewHandleAt(nsh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.h.Close)
	for _, c := range [][]string{
		{"ip", "-n", l.ns, "link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0p", "netns", l.peer},
		{"ip", "-n", l.ns, "link", "add", "wwan0", "type", "veth", "peer", "name", "wwan0p", "netns", l.peer},
		{"ip", "-n", l.peer, "link", "set", "wlan0p", "up"},
		{"ip", "-n", l.peer, "link", "set", "wwan0p", "up"},
		{"ip", "-n", l.ns, "address", "add", "10.71.1.2/24", "dev", "wlan0"},
		{"ip", "-n", l.ns, "address", "add", "10.71.2.2/24", "dev", "wwan0"},
		{"ip", "-n", l.ns, "address", "add", "2001:db8:71:1::2/64", "dev", "wlan0", "nodad"},
		// Deprecated: never a path's source.
		{"ip", "-n", l.ns, "address", "add", "2001:db8:71:1::99/64", "dev", "wlan0", "nodad", "preferred_lft", "0"},
		{"ip", "-n", l.ns, "link", "set", "wlan0", "up"},
		{"ip", "-n", l.ns, "link", "set", "wwan0", "up"},
		{"ip", "-n", l.ns, "route", "add", "default", "via", "10.71.1.1", "dev", "wlan0", "metric", "100"},
		{"ip", "-n", l.ns, "route", "add", "default", "via", "10.71.2.1", "dev", "wwan0", "metric", "200"},
	} {
		testenv.Exec(t, "", c...)
	}
	return l
}

// monitor starts a monitor inside the lab's namespace.
func (l *lab) monitor(t *testing.T, cfg Config) *Monitor {
	t.Helper()
	var m *Monitor
	var err error
	testenv.InNamedNetns(t, l.ns, func() { m, err = New(cfg) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (l *lab) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	link, err := l.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// waitFor returns the first snapshot satisfying ok, failing after 5 s.
func waitFor(t *testing.T, m *Monitor, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.After(5 * time.Second)
	last := m.Snapshot()
	if ok(last) {
		return last
	}
	for {
		select {
		case s, open := <-m.Updates():
			if !open {
				t.Fatalf("waiting for %s: updates closed", what)
			}
			if ok(s) {
				return s
			}
			last = s
		case <-deadline:
			t.Fatalf("waiting for %s; last snapshot: %+v", what, last.Interfaces)
		}
	}
}

var labGateway = netip.MustParseAddr("192.0.2.1")

func TestMonitorLab(t *testing.T) {
	l := newLab(t)
	m := l.monitor(t, Config{Gateway: labGateway})

	s := waitFor(t, m, "both links usable", func(s Snapshot) bool { return len(s.Usable()) == 2 })
	if len(s.Interfaces) != 2 {
		t.Errorf("interfaces (loopback must be left out): %+v", s.Interfaces)
	}
	w, _ := s.Lookup("wlan0")
	c, _ := s.Lookup("wwan0")
	if w.Kind != scheduler.KindWLAN || w.Priority != 1 || !w.Up || w.LinkType != "veth" || w.MTU != 1500 {
		t.Errorf("wlan0: %+v", w)
	}
	if c.Kind != scheduler.KindCellular || c.Priority != 2 || !c.Up {
		t.Errorf("wwan0: %+v", c)
	}
	wantAddrs := []netip.Prefix{netip.MustParsePrefix("10.71.1.2/24"), netip.MustParsePrefix("2001:db8:71:1::2/64")}
	if len(w.Addrs) != 2 || w.Addrs[0] != wantAddrs[0] || w.Addrs[1] != wantAddrs[1] {
		t.Errorf("wlan0 addresses %v, want %v (link-local and deprecated left out)", w.Addrs, wantAddrs)
	}
	if w.Default4 == nil || w.Default4.Gateway != netip.MustParseAddr("10.71.1.1") || w.Default4.Metric != 100 {
		t.Errorf("wlan0 default route %+v", w.Default4)
	}
	if c.Default4 == nil || c.Default4.Metric != 200 || w.Default6 != nil {
		t.Errorf("wwan0 default %+v, wlan0 default6 %+v", c.Default4, w.Default6)
	}
	if w.Source != netip.MustParseAddr("10.71.1.2") || c.Source != netip.MustParseAddr("10.71.2.2") {
		t.Errorf("sources %v %v", w.Source, c.Source)
	}
	if u := s.Usable(); u[0].Name != "wlan0" {
		t.Errorf("best usable is %s, want wlan0", u[0].Name)
	}

	// The goal is 50 ms; on a loaded machine one of five may miss it, so
	// the best of five must meet it and none may take a second.
	t.Run("down is published within 50 ms", func(t *testing.T) {
		link := l.link(t, "wlan0")
		best := time.Hour
		for range 5 {
			if err := l.h.LinkSetDown(link); err != nil {
				t.Fatal(err)
			}
			// From the kernel's answer: the kernel notifies its
			// listeners once it took the link down, which on a loaded
			// machine may itself take tens of milliseconds.
			start := time.Now()
			s := waitFor(t, m, "wlan0 down", func(s Snapshot) bool { i, _ := s.Lookup("wlan0"); return !i.Up })
			d := time.Since(start)
			t.Logf("link down published after %v", d)
			best = min(best, d)
			if d > time.Second {
				t.Errorf("link down published after %v, want well under a second", d)
			}
			if i, _ := s.Lookup("wlan0"); i.Usable || i.Default4 != nil {
				t.Errorf("wlan0 down but %+v", i)
			}
			if err := l.h.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
			waitFor(t, m, "wlan0 up", func(s Snapshot) bool { i, _ := s.Lookup("wlan0"); return i.Up })
		}
		if best > 50*time.Millisecond {
			t.Errorf("link down published after %v at best, want < 50 ms", best)
		}
		// The kernel flushed the default route with the link: the
		// interface is up but reaches the gateway no more.
		s := m.Snapshot()
		if i, _ := s.Lookup("wlan0"); i.Usable || i.Default4 != nil {
			t.Errorf("wlan0 usable without a route: %+v", i)
		}
		if err := l.h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("10.71.1.1"), Priority: 100}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, m, "wlan0 usable again", func(s Snapshot) bool { i, _ := s.Lookup("wlan0"); return i.Usable })
	})

	t.Run("address loss", func(t *testing.T) {
		link := l.link(t, "wwan0")
		a, _ := netlink.ParseAddr("10.71.2.2/24")
		start := time.Now()
		if err := l.h.AddrDel(link, a); err != nil {
			t.Fatal(err)
		}
		s := waitFor(t, m, "wwan0 without its address", func(s Snapshot) bool { i, _ := s.Lookup("wwan0"); return !i.Usable })
		t.Logf("address loss published after %v", time.Since(start))
		if i, _ := s.Lookup("wwan0"); len(i.Addrs) != 0 || !i.Up {
			t.Errorf("wwan0: %+v", i)
		}
		if err := l.h.AddrAdd(link, a); err != nil {
			t.Fatal(err)
		}
		// Connected but no route via a gateway: usable only when the
		// gateway is on the link.
		s = waitFor(t, m, "wwan0 address back", func(s Snapshot) bool { i, _ := s.Lookup("wwan0"); return len(i.Addrs) == 1 })
		if i, _ := s.Lookup("wwan0"); i.Usable {
			t.Errorf("wwan0 usable without a route to %v: %+v", labGateway, i)
		}
		if err := l.h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: labGateway.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gw: net.ParseIP("10.71.2.1")}); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, m, "wwan0 usable through a host route", func(s Snapshot) bool { i, _ := s.Lookup("wwan0"); return i.Usable })
		if i, _ := s.Lookup("wwan0"); i.Default4 != nil || i.Source != netip.MustParseAddr("10.71.2.2") {
			t.Errorf("wwan0: %+v", i)
		}
	})

	t.Run("rename", func(t *testing.T) {
		link := l.link(t, "wwan0")
		idx := link.Attrs().Index
		if err := l.h.LinkSetDown(link); err != nil {
			t.Fatal(err)
		}
		if err := l.h.LinkSetName(link, "eth7"); err != nil {
			t.Fatal(err)
		}
		if err := l.h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		s := waitFor(t, m, "eth7 up", func(s Snapshot) bool { i, ok := s.Lookup("eth7"); return ok && i.Up })
		i, _ := s.Lookup("eth7")
		if _, old := s.Lookup("wwan0"); old || i.Index != idx || i.Kind != scheduler.KindEthernet || i.Priority != 0 {
			t.Errorf("after the rename: %+v", s.Interfaces)
		}
		if s.Interfaces[0].Name != "eth7" {
			t.Errorf("ethernet is not first: %+v", s.Interfaces)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := l.h.LinkDel(l.link(t, "eth7")); err != nil {
			t.Fatal(err)
		}
		s := waitFor(t, m, "eth7 gone", func(s Snapshot) bool { _, ok := s.Lookup("eth7"); return !ok })
		if len(s.Interfaces) != 1 || s.Interfaces[0].Name != "wlan0" {
			t.Errorf("after deleting eth7: %+v", s.Interfaces)
		}
	})
}

func TestMonitorFilters(t *testing.T) {
	l := newLab(t)
	m := l.monitor(t, Config{
		Gateway: labGateway,
		Filter:  Filter{Exclude: []string{"wl*"}, Ignore: []string{"tun9"}, Priorities: map[string]int{"cellular": 0}},
	})
	s := waitFor(t, m, "wwan0 usable", func(s Snapshot) bool { return len(s.Usable()) == 1 })
	if len(s.Interfaces) != 1 || s.Interfaces[0].Name != "wwan0" || s.Interfaces[0].Priority != 0 {
		t.Errorf("with wl* excluded: %+v", s.Interfaces)
	}
	// A TUN device of the same name as the ignored one never shows.
	testenv.Exec(t, "", "ip", "-n", l.ns, "tuntap", "add", "tun9", "mode", "tun")
	testenv.Exec(t, "", "ip", "-n", l.ns, "tuntap", "add", "tun8", "mode", "tun")
	s = waitFor(t, m, "tun8", func(s Snapshot) bool { _, ok := s.Lookup("tun8"); return ok })
	if _, ok := s.Lookup("tun9"); ok {
		t.Errorf("ignored tun9 reported: %+v", s.Interfaces)
	}
	if i, _ := s.Lookup("tun8"); i.Kind != scheduler.KindVirtual || i.Priority != 3 || i.Usable {
		t.Errorf("tun8: %+v", i)
	}
}

// Close stops the loop and every netlink receiver, and closes Updates.
func TestMonitorCloseLeaksNothing(t *testing.T) {
	l := newLab(t)
	before := goleak.IgnoreCurrent()
	m := l.monitor(t, Config{})
	waitFor(t, m, "the lab", func(s Snapshot) bool { return len(s.Interfaces) == 2 })
	if err := l.h.LinkSetDown(l.link(t, "wlan0")); err != nil {
		t.Fatal(err)
	}
	m.Close()
	for range m.Updates() {
	}
	m.Close() // twice is harmless
	goleak.VerifyNone(t, before)
}

// With an IPv6 gateway only interfaces with a usable IPv6 address and an
// IPv6 route count, and a deprecated address is never the source.
func TestMonitorIPv6Gateway(t *testing.T) {
	l := newLab(t)
	testenv.Exec(t, "", "ip", "-n", l.ns, "-6", "route", "add", "default", "via", "2001:db8:71:1::1", "dev", "wlan0", "metric", "50")
	m := l.monitor(t, Config{Gateway: netip.MustParseAddr("2001:db8:ffff::1")})
	s := waitFor(t, m, "wlan0 usable over IPv6", func(s Snapshot) bool { return len(s.Usable()) == 1 })
	w, _ := s.Lookup("wlan0")
	if w.Source != netip.MustParseAddr("2001:db8:71:1::2") || w.Default6 == nil ||
		w.Default6.Gateway != netip.MustParseAddr("2001:db8:71:1::1") || w.Default6.Metric != 50 {
		t.Errorf("wlan0: %+v (default6 %+v)", w, w.Default6)
	}
	if c, _ := s.Lookup("wwan0"); c.Usable {
		t.Errorf("wwan0 has no IPv6 address but is usable: %+v", c)
	}
}
