package mif

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
)

// pathLab is a client namespace with a WLAN-like (wlan0, 10.72.1.2) and a
// cellular-like (wwan0, 10.72.2.2) veth into a gateway namespace, where
// the gateway address 192.0.2.1 sits on lo behind both.
type pathLab struct {
	client, gw string
	hc, hg     *netlink.Handle
}

var pathLabGateway = netip.MustParseAddr("192.0.2.1")

func newPathLab(t *testing.T) *pathLab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	l := &pathLab{client: testenv.NewNamedNetns(t, "path-cl"), gw: testenv.NewNamedNetns(t, "path-gw")}
	for _, c := range [][]string{
		{"ip", "-n", l.client, "link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0p", "netns", l.gw},
		{"ip", "-n", l.client, "link", "add", "wwan0", "type", "veth", "peer", "name", "wwan0p", "netns", l.gw},
		{"ip", "-n", l.gw, "address", "add", "10.72.1.1/24", "dev", "wlan0p"},
		{"ip", "-n", l.gw, "address", "add", "10.72.2.1/24", "dev", "wwan0p"},
		{"ip", "-n", l.gw, "address", "add", "192.0.2.1/32", "dev", "lo"},
		{"ip", "-n", l.gw, "link", "set", "wlan0p", "up"},
		{"ip", "-n", l.gw, "link", "set", "wwan0p", "up"},
		{"ip", "-n", l.client, "address", "add", "10.72.1.2/24", "dev", "wlan0"},
		{"ip", "-n", l.client, "address", "add", "10.72.2.2/24", "dev", "wwan0"},
		{"ip", "-n", l.client, "link", "set", "wlan0", "up"},
		{"ip", "-n", l.client, "link", "set", "wwan0", "up"},
		{"ip", "-n", l.client, "route", "add", "default", "via", "10.72.1.1", "dev", "wlan0", "metric", "100"},
		{"ip", "-n", l.client, "route", "add", "default", "via", "10.72.2.1", "dev", "wwan0", "metric", "200"},
	} {
		testenv.Exec(t, "", c...)
	}
	l.hc, l.hg = handleIn(t, l.client), handleIn(t, l.gw)
	return l
}

func handleIn(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func (l *pathLab) link(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// rxPackets is what the gateway's end of a veth received so far.
func (l *pathLab) rxPackets(t *testing.T, name string) uint64 {
	t.Helper()
	return l.link(t, l.hg, name).Attrs().Statistics.RxPackets
}

// gwListener records the datagrams arriving at the gateway on one port.
type gwListener struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []datagram
	wg   sync.WaitGroup
}

type datagram struct {
	from netip.AddrPort
	data []byte
}

func (l *pathLab) listen(t *testing.T, port uint16) *gwListener {
	t.Helper()
	g := &gwListener{}
	testenv.InNamedNetns(t, l.gw, func() {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pathLabGateway, port)))
		if err != nil {
			t.Fatal(err)
		}
		g.conn = c
	})
	g.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := g.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			g.mu.Lock()
			g.got = append(g.got, datagram{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), data: bytes.Clone(buf[:n])})
			g.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		g.conn.Close()
		g.wg.Wait()
	})
	return g
}

// count returns how many datagrams from src carried data, and resets
// nothing.
func (g *gwListener) count(src netip.AddrPort, data []byte) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, d := range g.got {
		if d.from == src && bytes.Equal(d.data, data) {
			n++
		}
	}
	return n
}

// nextSnapshot waits for a snapshot satisfying ok.
func nextSnapshot(t *testing.T, m *netmon.Monitor, what string, ok func(netmon.Snapshot) bool) netmon.Snapshot {
	t.Helper()
	if s := m.Snapshot(); ok(s) {
		return s
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-m.Updates():
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s: %+v", what, m.Snapshot().Interfaces)
		}
	}
}

func pathNames(ps []pathInfo) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// The path set opens a path per usable interface, bound to it, with its
// own keepalives and IKE sockets, and closes it when the interface goes.
func TestPathSetFollowsInterfaces(t *testing.T) {
	l := newPathLab(t)
	nat := l.listen(t, 4500)
	ike := l.listen(t, 500)
	before := goleak.IgnoreCurrent()

	engine := memoryEngine(t)
	var mon *netmon.Monitor
	var err error
	var ps *pathSet
	ctx := context.Background()
	testenv.InNamedNetns(t, l.client, func() {
		if mon, err = netmon.New(netmon.Config{Gateway: pathLabGateway}); err != nil {
			t.Fatal(err)
		}
		ps, err = newPathSet(pathSetConfig{Gateway: pathLabGateway, IKEPort: 500, Keepalive: 20 * time.Millisecond, NoOffload: true}, engine)
		if err != nil {
			t.Fatal(err)
		}
		snap := nextSnapshot(t, mon, "two usable", func(s netmon.Snapshot) bool { return len(s.Usable()) == 2 })
		ch, err := ps.update(ctx, snap, time.Now())
		if err != nil || len(ch.Added) != 2 {
			t.Fatalf("first update: %+v, %v", ch, err)
		}
	})
	paths := ps.list()
	if names := pathNames(paths); len(names) != 2 || names[0] != "wlan0" || names[1] != "wwan0" {
		t.Fatalf("paths %v, want wlan0 then wwan0", names)
	}
	wlan := netip.MustParseAddrPort("10.72.1.2:4500")
	wwan := netip.MustParseAddrPort("10.72.2.2:4500")
	if paths[0].Local != wlan || paths[1].Local != wwan || paths[0].Kind != scheduler.KindWLAN || paths[1].Priority != 2 {
		t.Errorf("paths %+v", paths)
	}
	if got := len(engine.Paths()); got != 2 {
		t.Errorf("engine has %d paths, want 2", got)
	}

	t.Run("keepalives on every path", func(t *testing.T) {
		testenv.WaitUntil(t, 5*time.Second, "keepalives from both interfaces", func() bool {
			return nat.count(wlan, []byte{0xff}) >= 3 && nat.count(wwan, []byte{0xff}) >= 3
		})
	})

	t.Run("bound to the interface", func(t *testing.T) {
		// The routing table prefers wlan0; the wwan0 path's datagrams
		// still leave on wwan0.
		rxWLAN, rxWWAN := l.rxPackets(t, "wlan0p"), l.rxPackets(t, "wwan0p")
		kaWLAN := nat.count(wlan, []byte{0xff}) // the wlan0 path's own keepalives also cross wlan0p
		msg := []byte("ike on port 500")
		for range 20 {
			if err := ps.send("wwan0", msg, netip.AddrPortFrom(pathLabGateway, 500), false); err != nil {
				t.Fatal(err)
			}
		}
		testenv.WaitUntil(t, 5*time.Second, "20 datagrams from wwan0:500", func() bool {
			return ike.count(netip.MustParseAddrPort("10.72.2.2:500"), msg) == 20
		})
		if d := l.rxPackets(t, "wwan0p") - rxWWAN; d < 20 {
			t.Errorf("wwan0p received %d packets, want >= 20", d)
		}
		if d, ka := int(l.rxPackets(t, "wlan0p")-rxWLAN), nat.count(wlan, []byte{0xff})-kaWLAN; d-ka >= 20 {
			t.Errorf("wlan0p received %d packets besides %d keepalives: the wwan0 path left on wlan0", d-ka, ka)
		}
		// Behind the non-ESP marker on 4500.
		if err := ps.send("wlan0", msg, netip.AddrPortFrom(pathLabGateway, 4500), true); err != nil {
			t.Fatal(err)
		}
		testenv.WaitUntil(t, 5*time.Second, "a marked message from wlan0:4500", func() bool {
			return nat.count(wlan, append([]byte{0, 0, 0, 0}, msg...)) == 1
		})
		if err := ps.send("eth9", msg, netip.AddrPortFrom(pathLabGateway, 500), false); err == nil {
			t.Error("sending on a path that does not exist succeeded")
		}
	})

	t.Run("closed when the interface goes down, reopened when back", func(t *testing.T) {
		wlanLink := l.link(t, l.hc, "wlan0")
		down := time.Now()
		if err := l.hc.LinkSetDown(wlanLink); err != nil {
			t.Fatal(err)
		}
		snap := nextSnapshot(t, mon, "wlan0 down", func(s netmon.Snapshot) bool { return len(s.Usable()) == 1 })
		ch, err := ps.update(ctx, snap, time.Now())
		if err != nil || len(ch.Removed) != 1 || ch.Removed[0] != "wlan0" {
			t.Fatalf("update after down: %+v, %v", ch, err)
		}
		if ep := engine.Paths(); len(ep) != 1 || ep[0].ID != 1 {
			t.Errorf("engine paths after down: %v", ep)
		}
		// Keepalives in flight land: wait until the count holds still.
		n := nat.count(wlan, []byte{0xff})
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			m := nat.count(wlan, []byte{0xff})
			if m == n {
				break
			}
			n = m
		}
		time.Sleep(300 * time.Millisecond)
		if m := nat.count(wlan, []byte{0xff}); m != n {
			t.Errorf("keepalives from the closed path continue: %d -> %d", n, m)
		}

		if err := l.hc.LinkSetUp(wlanLink); err != nil {
			t.Fatal(err)
		}
		// The kernel flushed the default route with the link.
		if err := l.hc.RouteAdd(&netlink.Route{LinkIndex: wlanLink.Attrs().Index, Gw: net.ParseIP("10.72.1.1"), Priority: 100}); err != nil {
			t.Fatal(err)
		}
		snap = nextSnapshot(t, mon, "wlan0 back", func(s netmon.Snapshot) bool { return len(s.Usable()) == 2 })
		ch, err = ps.update(ctx, snap, time.Now())
		if err != nil || len(ch.Added) != 1 {
			t.Fatalf("update after up: %+v, %v", ch, err)
		}
		p, ok := ps.get("wlan0")
		i, _ := snap.Lookup("wlan0")
		if !ok || p.ID != 0 || !p.UsableSince.Equal(i.UsableSince) || !p.UsableSince.After(down) {
			t.Errorf("reopened path %+v (ID 0 is reused, usable since %v, after the down at %v)", p, i.UsableSince, down)
		}
		before := nat.count(wlan, []byte{0xff})
		testenv.WaitUntil(t, 5*time.Second, "keepalives on the reopened path", func() bool { return nat.count(wlan, []byte{0xff}) > before })
	})

	t.Run("address change replaces the path", func(t *testing.T) {
		link := l.link(t, l.hc, "wwan0")
		old, _ := netlink.ParseAddr("10.72.2.2/24")
		nu, _ := netlink.ParseAddr("10.72.2.3/24")
		// (Deleting a primary address deletes its secondaries: the old
		// one goes first.)
		if err := l.hc.AddrDel(link, old); err != nil {
			t.Fatal(err)
		}
		if err := l.hc.AddrAdd(link, nu); err != nil {
			t.Fatal(err)
		}
		if err := l.hc.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("10.72.2.1"), Priority: 200}); err != nil {
			t.Fatal(err)
		}
		snap := nextSnapshot(t, mon, "wwan0 on its new address", func(s netmon.Snapshot) bool {
			i, _ := s.Lookup("wwan0")
			return i.Usable && i.Source == netip.MustParseAddr("10.72.2.3")
		})
		ch, err := ps.update(ctx, snap, time.Now())
		if err != nil || len(ch.Added) != 1 || len(ch.Removed) != 1 {
			t.Fatalf("update after the address change: %+v, %v", ch, err)
		}
		if p, _ := ps.get("wwan0"); p.Local != netip.MustParseAddrPort("10.72.2.3:4500") {
			t.Errorf("wwan0 path local %v", p.Local)
		}
	})

	ps.close()
	if n := len(engine.Paths()); n != 0 {
		t.Errorf("%d engine paths after close", n)
	}
	if _, err := ps.update(ctx, mon.Snapshot(), time.Now()); err == nil {
		t.Error("update after close succeeded")
	}
	mon.Close()
	engine.Close()
	goleak.VerifyNone(t, before)
}
