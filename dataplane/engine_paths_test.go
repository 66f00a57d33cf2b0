package dataplane_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// alternate picks members 0, 1, 0, 1, ... (safe for concurrent use).
type alternate struct{ n atomic.Uint64 }

func (a *alternate) Pick(int) scheduler.PathID { return scheduler.PathID(a.n.Add(1) % 2) }

// addSecondPath joins a and b by a second pair of loopback sockets, path 1
// on both sides, and returns a's and b's socket.
func addSecondPath(t *testing.T, a, b *side) (a2, b2 *udp.Conn) {
	t.Helper()
	a2, b2 = listenLoopback(t), listenLoopback(t)
	if err := a.e.AddPath(&dataplane.Path{ID: 1, Conn: a2, Remote: mustEndpoint(t, a2, b2.LocalAddr())}); err != nil {
		t.Fatal(err)
	}
	if err := b.e.AddPath(&dataplane.Path{ID: 1, Conn: b2, Remote: mustEndpoint(t, b2, a2.LocalAddr())}); err != nil {
		t.Fatal(err)
	}
	return a2, b2
}

func listenLoopback(t *testing.T) *udp.Conn {
	t.Helper()
	c, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEnginePathsAtRunTime adds a second path to both running engines,
// spreads one route over both with a PathGroup, then removes one: packets
// keep arriving in full, the per-path counters show the split, and a
// packet routed to a removed path is counted, not sent.
func TestEnginePathsAtRunTime(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(2000)})
	run(t, a, b)

	// A second socket on each side, added while the engines run.
	a2, b2 := addSecondPath(t, a, b)
	if err := a.e.AddPath(&dataplane.Path{ID: 1, Conn: a2, Remote: mustEndpoint(t, a2, b2.LocalAddr())}); err == nil {
		t.Fatal("AddPath accepted a second path 1")
	}
	group := dataplane.NewPathGroup(&alternate{}, dataplane.GroupMember{Path: 0}, dataplane.GroupMember{Path: 1})
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})

	const n = 400
	for i := range n {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i), byte(i >> 8)}))
	}
	receiveAll(t, b.tun, n)
	paths := b.e.Paths()
	if len(paths) != 2 {
		t.Fatalf("b has %d paths", len(paths))
	}
	// A receive worker counts its batch after writing it to the TUN.
	testenv.WaitUntil(t, 10*time.Second, "b's paths to count every datagram received", func() bool { return paths[0].Stats.RxPackets.Load()+paths[1].Stats.RxPackets.Load() == n })
	for _, p := range paths {
		if got := p.Stats.RxPackets.Load(); got < n/4 {
			t.Errorf("path %d received %d of %d packets: not spread", p.ID, got, n)
		}
	}
	// A sender counts its batch after the flush returns, which may be
	// after the peer has read it.
	sentByA := func() (sent uint64) {
		for _, p := range a.e.Paths() {
			sent += p.Stats.TxPackets.Load()
		}
		return sent
	}
	testenv.WaitUntil(t, 10*time.Second, "a's paths to count every datagram sent", func() bool { return sentByA() >= n })
	if sent := sentByA(); sent != n {
		t.Fatalf("a's paths sent %d datagrams, want %d", sent, n)
	}
	for _, m := range group.Members() {
		if packets, bytes := group.MemberTx(m); packets != n/2 || bytes < packets*dataplane.HeaderLen {
			t.Fatalf("member %+v counted %d packets, %d bytes; want %d packets", m, packets, bytes, n/2)
		}
	}

	// Remove path 1 on a: the group still names it, so half the packets
	// now have no path and are counted; the rest arrive.
	if err := a.e.RemovePath(1); err != nil {
		t.Fatal(err)
	}
	if err := a.e.RemovePath(1); err == nil {
		t.Fatal("removing a removed path succeeded")
	}
	for i := range 100 {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i)}))
	}
	testenv.WaitUntil(t, 10*time.Second, "half the packets to be dropped for want of a path", func() bool { return a.e.Stats.NoPath.Load() == 50 })
	receiveAll(t, b.tun, 50)

	// Back to one member: nothing is lost any more.
	group.Set(nil, dataplane.GroupMember{Path: 0})
	for i := range 100 {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i)}))
	}
	receiveAll(t, b.tun, 100)
	if got := a.e.Stats.NoPath.Load(); got != 50 {
		t.Fatalf("NoPath = %d after the group dropped the removed path", got)
	}
}

func TestEngineRejectsBadPaths(t *testing.T) {
	c := listenLoopback(t)
	defer c.Close()
	ep := mustEndpoint(t, c, netip.MustParseAddrPort("127.0.0.1:9"))
	for name, paths := range map[string][]*dataplane.Path{
		"no socket":    {{ID: 0, Remote: ep}},
		"no remote":    {{ID: 0, Conn: c}},
		"duplicate ID": {{ID: 3, Conn: c, Remote: ep}, {ID: 3, Conn: c, Remote: ep}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{newMemoryTUN(t)}, Paths: paths}); err == nil {
				t.Fatal("NewEngine accepted it")
			}
		})
	}
}

func tunRecording(n int) tun.MemoryConfig { return tun.MemoryConfig{RecordWrites: n} }

func newMemoryTUN(t *testing.T) *tun.Memory {
	m, err := tun.NewMemory(tun.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// both sends every packet on members 0 and 1.
type both struct{}

func (both) Pick(int) scheduler.PathID     { return 0 }
func (both) PickSet(int) scheduler.PathSet { return scheduler.SetOf(0, 1) }

// TestEngineRedundantGroup sends every packet on two paths: the receiver
// gets each twice, delivers it once and drops the copy as a replay.
func TestEngineRedundantGroup(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(1000)})
	addSecondPath(t, a, b)
	group := dataplane.NewPathGroup(both{}, dataplane.GroupMember{Path: 0}, dataplane.GroupMember{Path: 1})
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
	run(t, a, b)
	const n = 200
	for i := range n {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i), byte(i >> 8)}))
		if i%50 == 49 {
			time.Sleep(time.Millisecond)
		}
	}
	receiveAll(t, b.tun, n)
	testenv.WaitUntil(t, 10*time.Second, "every replayed packet dropped as replayed or too old", func() bool {
		return b.e.Stats.Drops.Get(dataplane.DropReplayed)+b.e.Stats.Drops.Get(dataplane.DropTooOld) == n
	})
	if extra := len(b.tun.Writes()); extra != 0 {
		t.Fatalf("%d copies reached the TUN", extra)
	}
	for _, m := range group.Members() {
		if packets, _ := group.MemberTx(m); packets != n {
			t.Fatalf("member %+v sent %d packets, want %d", m, packets, n)
		}
	}
	// The sender counts a batch once its datagrams are sent.
	testenv.WaitUntil(t, 5*time.Second, "a to count the packets it sent", func() bool { return a.e.Stats.TxPackets.Load() >= n })
	if got := a.e.Stats.TxPackets.Load(); got != n {
		t.Fatalf("TxPackets %d, want %d inner packets", got, n)
	}
}

// TestEngineRescuesRefusedDatagrams: in a namespace with only loopback,
// path 0 leads to an address without a route, so its socket refuses every
// datagram; with RescueRefused the engine resends them on path 1 and the
// peer gets them all, sequence numbers unchanged.
func TestEngineRescuesRefusedDatagrams(t *testing.T) {
	for _, rescue := range []bool{false, true} {
		// Not t.Run: a subtest's goroutine would leave the namespace.
		testenv.WithNetns(t, func() {
			func() {
				a, b := newPair(t, pairConfig{tunB: tunRecording(1000)})
				dead, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("0.0.0.0:0")})
				if err != nil {
					t.Fatal(err)
				}
				paths := append(a.e.Paths(), &dataplane.Path{ID: 1, Conn: dead,
					Remote: mustEndpoint(t, dead, netip.MustParseAddrPort("192.0.2.1:4500"))})
				// path 0 is the dead one, path 1 the loopback to b.
				paths[0], paths[1] = paths[1], paths[0]
				paths[0].ID, paths[1].ID = 0, 1
				e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{a.tun}, Paths: paths, RescueRefused: rescue})
				if err != nil {
					t.Fatal(err)
				}
				e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out,
					Group: dataplane.NewPathGroup(scheduler.Single(0), dataplane.GroupMember{Path: 0})}})
				a.e = e
				run(t, a, b)
				const n = 100
				for i := range n {
					a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i)}))
				}
				if !rescue {
					testenv.WaitUntil(t, 10*time.Second, "the refused datagrams counted as send errors", func() bool { return e.Stats.SendErrors.Load() == n })
					if e.Stats.Rescued.Load() != 0 || len(b.tun.Writes()) != 0 {
						t.Fatal("refused datagrams arrived without rescue")
					}
					return
				}
				receiveAll(t, b.tun, n)
				// The worker counts a rescue after its flush returns, so
				// the peer may have every datagram before the count.
				testenv.WaitUntil(t, 5*time.Second, "the rescued datagrams counted", func() bool { return e.Stats.Rescued.Load() == n })
				if got := e.Stats.SendErrors.Load(); got != 0 {
					t.Fatalf("%d send errors counted for rescued datagrams", got)
				}
			}()
		})
	}
}

// byPort sends UDP to port 2001 on member 1 and everything else on member
// 0, reading the inner packet as a traffic classifier does.
type byPort struct{}

func (byPort) Pick(int) scheduler.PathID { return 0 }
func (byPort) PickPacket(inner []byte, sealed int) scheduler.PathSet {
	if len(inner) >= 24 && inner[9] == 17 && inner[22] == 2001>>8 && inner[23] == 2001&0xff {
		return scheduler.SetOf(1)
	}
	return scheduler.SetOf(0)
}

// TestEnginePacketPicker: a group whose picker chooses by the packet sees
// the inner packet before it is sealed.
func TestEnginePacketPicker(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(1000)})
	addSecondPath(t, a, b)
	group := dataplane.NewPathGroup(byPort{}, dataplane.GroupMember{Path: 0}, dataplane.GroupMember{Path: 1})
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
	run(t, a, b)
	for i := range 60 {
		port := 2000 + i%3 // a third to 2001
		a.tun.Inject(udpPacket(t, "10.0.0.1:1000", fmt.Sprintf("10.0.0.2:%d", port), []byte{byte(i)}))
	}
	receiveAll(t, b.tun, 60)
	p0, _ := group.MemberTx(dataplane.GroupMember{Path: 0})
	p1, _ := group.MemberTx(dataplane.GroupMember{Path: 1})
	if p0 != 40 || p1 != 20 {
		t.Fatalf("member 0 sent %d, member 1 %d; want 40 and 20 (port 2001 on member 1)", p0, p1)
	}
}

// TestEngineReinject: a group spreads packets over two paths, and path 1
// loses everything it is given (its remote is a socket nobody reads from
// the engine's side). Once the picker no longer chooses path 1, Reinject
// sends what path 1 took since the given moment on path 0: the peer gets
// every packet, once. What path 1 took before that moment stays lost, and
// a second Reinject finds nothing left. When the path had delivered after
// all, the peer's replay window drops the copies.
func TestEngineReinject(t *testing.T) {
	t.Run("lost", func(t *testing.T) {
		a, b := newPair(t, pairConfig{tunB: tunRecording(2000)})
		run(t, a, b)
		hole := listenLoopback(t) // path 1 leads here: nothing reads it
		defer hole.Close()
		a2 := listenLoopback(t)
		if err := a.e.AddPath(&dataplane.Path{ID: 1, Conn: a2, Remote: mustEndpoint(t, a2, hole.LocalAddr())}); err != nil {
			t.Fatal(err)
		}
		members := []dataplane.GroupMember{{Path: 0}, {Path: 1}}
		group := dataplane.NewPathGroup(&alternate{}, members...)
		group.KeepSent(true)
		a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
		send := func(from, n int) {
			for i := from; i < from+n; i++ {
				a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i), byte(i >> 8)}))
			}
		}
		// 100 packets before the moment the peer confirmed, 200 after.
		send(0, 100)
		receiveAll(t, b.tun, 50)
		testenv.WaitUntil(t, 10*time.Second, "path 1 to send its 50", func() bool { return a.e.Paths()[1].Stats.TxPackets.Load() == 50 })
		since := scheduler.Now()
		send(100, 200)
		got := receiveAll(t, b.tun, 100)
		testenv.WaitUntil(t, 10*time.Second, "path 1 to send its 150", func() bool { return a.e.Paths()[1].Stats.TxPackets.Load() == 150 })

		group.Set(scheduler.Single(0), members...) // the path failed
		if n := a.e.Reinject(group, members[1], since); n != 100 {
			t.Fatalf("reinjected %d datagrams, want the 100 path 1 took since the confirmation", n)
		}
		got = append(got, receiveAll(t, b.tun, 100)...)
		seen := map[int]bool{}
		for _, p := range got {
			payload := p[len(p)-2:]
			seen[int(payload[0])|int(payload[1])<<8] = true
		}
		for i := 100; i < 300; i++ {
			if !seen[i] {
				t.Fatalf("packet %d never arrived", i)
			}
		}
		if n := a.e.Reinject(group, members[1], since); n != 0 {
			t.Fatalf("a second Reinject sent %d datagrams: each goes again at most once", n)
		}
		if r := a.e.Stats.Reinjected.Load(); r != 100 {
			t.Fatalf("Stats.Reinjected = %d", r)
		}
		select {
		case p := <-b.tun.Writes():
			t.Fatalf("an extra packet arrived: %x", p)
		case <-time.After(100 * time.Millisecond):
		}
	})
	// twoWorkingPaths sends n packets alternately over two paths that
	// deliver, through a group that keeps copies or not.
	twoWorkingPaths := func(t *testing.T, keep bool, n int) (a, b *side, group *dataplane.PathGroup, members []dataplane.GroupMember) {
		a, b = newPair(t, pairConfig{tunB: tunRecording(2000)})
		run(t, a, b)
		addSecondPath(t, a, b)
		members = []dataplane.GroupMember{{Path: 0}, {Path: 1}}
		group = dataplane.NewPathGroup(&alternate{}, members...)
		group.KeepSent(keep)
		a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
		for i := range n {
			a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i)}))
		}
		receiveAll(t, b.tun, n)
		return a, b, group, members
	}
	t.Run("delivered after all", func(t *testing.T) {
		a, b, group, members := twoWorkingPaths(t, true, 100)
		group.Set(scheduler.Single(0), members...)
		if n := a.e.Reinject(group, members[1], 0); n != 50 {
			t.Fatalf("reinjected %d datagrams, want 50", n)
		}
		testenv.WaitUntil(t, 10*time.Second, "the peer to drop the 50 copies as replayed", func() bool {
			return b.e.Stats.Drops.Get(dataplane.DropReplayed) == 50
		})
		select {
		case p := <-b.tun.Writes():
			t.Fatalf("a copy reached the TUN: %x", p)
		case <-time.After(100 * time.Millisecond):
		}
	})
	t.Run("not kept", func(t *testing.T) {
		a, _, group, members := twoWorkingPaths(t, false, 10)
		if n := a.e.Reinject(group, members[1], 0); n != 0 {
			t.Fatalf("reinjected %d datagrams of a group that keeps none", n)
		}
	})
}

// TestEnginePathGroupWake: a group armed with ArmWake calls its wake
// function once, from the first batch sent through it after the arming,
// with that batch already in the members' counters; unarmed, sending
// calls nothing.
func TestEnginePathGroupWake(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(1000)})
	group := dataplane.NewPathGroup(nil, dataplane.GroupMember{Path: 0})
	var wakes atomic.Int32
	var countedAtWake atomic.Uint64
	group.SetWake(func() {
		packets, _ := group.MemberTx(dataplane.GroupMember{Path: 0})
		countedAtWake.Store(packets)
		wakes.Add(1)
	})
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
	run(t, a, b)
	send := func(n int) {
		for i := range n {
			a.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{byte(i)}))
		}
		receiveAll(t, b.tun, n)
	}
	send(5)
	if n := wakes.Load(); n != 0 {
		t.Fatalf("not armed: woken %d times", n)
	}
	group.ArmWake()
	if !group.Armed() {
		t.Fatal("ArmWake did not arm")
	}
	send(10)
	if n := wakes.Load(); n != 1 {
		t.Fatalf("armed, then 10 packets: woken %d times, want once", n)
	}
	if group.Armed() {
		t.Fatal("still armed after a batch went out")
	}
	if got := countedAtWake.Load(); got <= 5 {
		t.Fatalf("at the wake the member had counted %d packets: the waking batch was not in its counters", got)
	}
	send(10)
	if n := wakes.Load(); n != 1 {
		t.Fatalf("woken %d times without being armed again", n)
	}
	group.ArmWake()
	send(1)
	if n := wakes.Load(); n != 2 {
		t.Fatalf("armed again: woken %d times in all, want 2", n)
	}
}
