package netmon

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mifsec/mifsec/scheduler"
)

// fakeBackend stands in for netlink in timer tests: the test feeds events
// through the current subscription's channels.
type fakeBackend struct {
	mu     sync.Mutex
	sub    *subscription
	links  []netlink.Link
	addrs  []netlink.Addr
	rts    []netlink.Route
	dumps  int
	closed bool
}

func (b *fakeBackend) subscribe() (*subscription, error) {
	s := newSubscription()
	go func() {
		<-s.done
		close(s.links)
		close(s.addrs)
		close(s.routes)
	}()
	b.mu.Lock()
	b.sub = s
	b.mu.Unlock()
	return s, nil
}

func (b *fakeBackend) current() *subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sub
}

func (b *fakeBackend) dump() ([]netlink.Link, []netlink.Addr, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dumps++
	return b.links, b.addrs, nil
}

func (b *fakeBackend) routes() ([]netlink.Route, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rts, nil
}

// routeGet answers like a table with default routes through every link.
func (b *fakeBackend) routeGet(dst netip.Addr, oif int) ([]netlink.Route, error) {
	return []netlink.Route{{LinkIndex: oif, Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gw: net.IPv4(10, 0, byte(oif), 1)}}, nil
}

func (b *fakeBackend) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

func fakeLink(name string, index int, up bool) netlink.Link {
	a := netlink.NewLinkAttrs()
	a.Name, a.Index, a.MTU, a.EncapType = name, index, 1500, "ether"
	if up {
		a.Flags = net.FlagUp | net.FlagRunning
		a.OperState = netlink.OperUp
	} else {
		a.OperState = netlink.OperDown
	}
	return &netlink.Veth{LinkAttrs: a}
}

func linkEvent(name string, index int, up bool) netlink.LinkUpdate {
	u := netlink.LinkUpdate{Link: fakeLink(name, index, up)}
	u.Header.Type = unix.RTM_NEWLINK
	u.Index = int32(index)
	return u
}

func addrEvent(index int, prefix string, add bool) netlink.AddrUpdate {
	p := netip.MustParsePrefix(prefix)
	return netlink.AddrUpdate{LinkIndex: index, NewAddr: add, PreferedLft: 3600, ValidLft: 3600,
		LinkAddress: net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

func addrOf(index int, prefix string) netlink.Addr {
	p := netip.MustParsePrefix(prefix)
	return netlink.Addr{LinkIndex: index, PreferedLft: 3600, ValidLft: 3600,
		IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

// next returns the snapshot published now, or fails.
func next(t *testing.T, m *Monitor) Snapshot {
	t.Helper()
	synctest.Wait()
	select {
	case s := <-m.Updates():
		return s
	default:
		t.Fatal("no snapshot published")
		return Snapshot{}
	}
}

// none fails if a snapshot is waiting.
func none(t *testing.T, m *Monitor) {
	t.Helper()
	synctest.Wait()
	select {
	case s := <-m.Updates():
		t.Fatalf("unexpected snapshot %d: %+v", s.Seq, s.Interfaces)
	default:
	}
}

func TestCoalescing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := &fakeBackend{
			links: []netlink.Link{fakeLink("wlan0", 2, true)},
			addrs: []netlink.Addr{addrOf(2, "10.0.2.2/24")},
		}
		m, err := start(Config{Gateway: netip.MustParseAddr("192.0.2.1")}, be)
		if err != nil {
			t.Fatal(err)
		}
		first := next(t, m)
		if first.Seq != 1 || len(first.Usable()) != 1 || first.Interfaces[0].Source != netip.MustParseAddr("10.0.2.2") {
			t.Fatalf("first snapshot: %+v", first)
		}

		// A burst over 30 ms is one snapshot, 50 ms after its first event.
		t0 := time.Now()
		sub := be.current()
		sub.links <- linkEvent("wwan0", 3, true)
		time.Sleep(15 * time.Millisecond)
		sub.addrs <- addrEvent(3, "10.0.3.2/24", true)
		time.Sleep(15 * time.Millisecond)
		sub.addrs <- addrEvent(3, "2001:db8::2/64", true)
		time.Sleep(19 * time.Millisecond)
		none(t, m)
		time.Sleep(time.Millisecond)
		s := next(t, m)
		if d := time.Since(t0); d != DefaultSettle {
			t.Errorf("burst published after %v, want %v", d, DefaultSettle)
		}
		w, ok := s.Lookup("wwan0")
		if s.Seq != 2 || !ok || len(w.Addrs) != 2 || !w.Usable || w.Kind != scheduler.KindCellular || w.Priority != 2 {
			t.Fatalf("after the burst: %+v", s)
		}
		if u := s.Usable(); len(u) != 2 || u[0].Name != "wlan0" {
			t.Errorf("usable, best first: %+v", u)
		}
		if wl, _ := s.Lookup("wlan0"); !wl.UsableSince.Equal(first.Interfaces[0].UsableSince) || !w.UsableSince.Equal(t0.Add(DefaultSettle)) {
			t.Errorf("usable since: wlan0 %v (first seen %v), wwan0 %v (published %v)",
				wl.UsableSince, first.Interfaces[0].UsableSince, w.UsableSince, t0.Add(DefaultSettle))
		}

		// An event that changes nothing publishes nothing.
		sub.links <- linkEvent("wwan0", 3, true)
		time.Sleep(time.Second)
		none(t, m)

		// A link going down is published at once, even inside a
		// settling burst.
		sub.addrs <- addrEvent(2, "10.0.2.3/24", true)
		time.Sleep(10 * time.Millisecond)
		t1 := time.Now()
		sub.links <- linkEvent("wlan0", 2, false)
		s = next(t, m)
		if d := time.Since(t1); d != 0 {
			t.Errorf("link down published after %v", d)
		}
		if w, _ := s.Lookup("wlan0"); w.Up || w.Usable || len(w.Addrs) != 2 {
			t.Errorf("wlan0 after down (with the burst's address): %+v", w)
		}
		time.Sleep(time.Second)
		none(t, m) // the burst went out with the loss

		// Back up: usable again, since now. A consumer that missed the
		// down snapshot still sees the interface's return.
		sub.links <- linkEvent("wlan0", 2, true)
		time.Sleep(DefaultSettle)
		if s = next(t, m); !s.Interfaces[0].Usable || !s.Interfaces[0].UsableSince.Equal(time.Now()) {
			t.Errorf("wlan0 back: %+v", s.Interfaces[0])
		}
		sub.links <- linkEvent("wlan0", 2, false)
		synctest.Wait()
		time.Sleep(time.Second)
		sub.links <- linkEvent("wlan0", 2, true)
		time.Sleep(DefaultSettle)
		synctest.Wait()
		if s = <-m.Updates(); !s.Interfaces[0].UsableSince.Equal(time.Now()) {
			t.Errorf("wlan0 after a down and up unseen by the consumer: usable since %v, want now %v", s.Interfaces[0].UsableSince, time.Now())
		}
		sub.links <- linkEvent("wlan0", 2, false)
		next(t, m)

		// Losing the last usable address is published at once too.
		sub.addrs <- addrEvent(3, "10.0.3.2/24", false)
		s = next(t, m)
		if w, _ := s.Lookup("wwan0"); w.Usable || len(w.Addrs) != 1 {
			t.Errorf("wwan0 without its IPv4 address: %+v", w)
		}

		// A deleted link disappears at once.
		del := linkEvent("wwan0", 3, true)
		del.Header.Type = unix.RTM_DELLINK
		sub.links <- del
		if s = next(t, m); len(s.Interfaces) != 1 {
			t.Errorf("after deleting wwan0: %+v", s.Interfaces)
		}

		m.Close()
		synctest.Wait()
		if _, open := <-m.Updates(); open {
			t.Error("Updates still open after Close")
		}
		if !be.closed {
			t.Error("backend not closed")
		}
	})
}

// A subscription that breaks (a netlink receive error, such as an overflow)
// is replaced and the interfaces are listed again.
func TestResyncOnBrokenSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := &fakeBackend{links: []netlink.Link{fakeLink("eth0", 2, true)}}
		m, err := start(Config{}, be)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		next(t, m)
		// The kernel dropped events; the real state now has eth1 too.
		be.mu.Lock()
		be.links = append(be.links, fakeLink("eth1", 3, true))
		be.mu.Unlock()
		be.current().errs <- unix.ENOBUFS
		s := next(t, m)
		if _, ok := s.Lookup("eth1"); !ok || be.dumps != 2 {
			t.Errorf("after the resync (%d dumps): %+v", be.dumps, s.Interfaces)
		}
	})
}
