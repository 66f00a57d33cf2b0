package mif

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sync"
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

// cutRelay forwards UDP between one client socket and a server address in
// both directions until cut, then drops everything: a path that fails
// silently.
type cutRelay struct {
	conn   *net.UDPConn
	server netip.AddrPort
	client atomic.Pointer[netip.AddrPort]
	cut    atomic.Bool
	done   chan struct{}
}

func newCutRelay(t *testing.T, server netip.AddrPort) *cutRelay {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	r := &cutRelay{conn: c, server: server, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		b := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			if r.cut.Load() {
				continue
			}
			to := r.server
			if from == r.server {
				cl := r.client.Load()
				if cl == nil {
					continue
				}
				to = *cl
			} else {
				r.client.Store(&from)
			}
			c.WriteToUDPAddrPort(b[:n], to)
		}
	}()
	t.Cleanup(func() { c.Close(); <-r.done })
	return r
}

func (r *cutRelay) addr() netip.AddrPort { return netip.MustParseAddrPort(r.conn.LocalAddr().String()) }

type testPeer struct {
	tun     *tun.Memory
	e       *dataplane.Engine
	out, in *dataplane.SA
	pp      *peerPaths
}

// relayedPeers is a and b with two paths between them over loopback, each
// through its relay, a sending to b under policy, both running until the
// test ends, with both paths verified.
func relayedPeers(t *testing.T, policy scheduler.Policy) (a, b *testPeer, relays [2]*cutRelay) {
	t.Helper()
	return relayedPeersWith(t, policy, scheduler.Config{})
}

// relayedPeersWith is relayedPeers with both peers' schedulers configured
// by sched.
func relayedPeersWith(t *testing.T, policy scheduler.Policy, sched scheduler.Config) (a, b *testPeer, relays [2]*cutRelay) {
	t.Helper()
	listen := func() *udp.Conn {
		c, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a0, a1, b0, b1 := listen(), listen(), listen(), listen()
	relay0, relay1 := newCutRelay(t, b0.LocalAddr()), newCutRelay(t, b1.LocalAddr())
	ep := func(c *udp.Conn, to netip.AddrPort) *udp.Endpoint {
		e, err := c.NewEndpoint(to)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	aOut, aIn, bOut, bIn := saPair(t)
	a, b = &testPeer{out: aOut, in: aIn}, &testPeer{out: bOut, in: bIn}
	build := func(p *testPeer, paths []*dataplane.Path, record int) {
		m, err := tun.NewMemory(tun.MemoryConfig{RecordWrites: record})
		if err != nil {
			t.Fatal(err)
		}
		p.tun = m
		var pp *peerPaths
		e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{m}, Paths: paths,
			OnProbeReply: func(ev *dataplane.ProbeEvent) { pp.HandleReply(ev) }})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.AddInbound(p.in, p.out, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
			t.Fatal(err)
		}
		if err := receiveOverPaths(e, p.in.SPI(), policy); err != nil {
			t.Fatal(err)
		}
		pp = newPeerPaths(peerPathsConfig{Engine: e, Policy: policy, Scheduler: sched})
		pp.SetSAs(p.out, p.in.SPI())
		p.e, p.pp = e, pp
	}
	build(a, []*dataplane.Path{{ID: 0, Conn: a0, Remote: ep(a0, relay0.addr())}, {ID: 1, Conn: a1, Remote: ep(a1, relay1.addr())}}, 0)
	build(b, []*dataplane.Path{{ID: 0, Conn: b0, Remote: ep(b0, relay0.addr())}, {ID: 1, Conn: b1, Remote: ep(b1, relay1.addr())}}, 100000)
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: a.pp.Group()}})
	if err := a.pp.AddPath(0, scheduler.KindEthernet, 0, "eth0", "", dataplane.GroupMember{Path: 0}); err != nil {
		t.Fatal(err)
	}
	if err := a.pp.AddPath(1, scheduler.KindEthernet, 0, "eth1", "", dataplane.GroupMember{Path: 1}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, p := range []*testPeer{a, b} {
		wg.Go(func() { p.e.Run(ctx) })
		wg.Go(func() { p.pp.Run(ctx) })
	}
	testenv.WaitUntil(t, 5*time.Second, "both paths verified", func() bool { return len(a.pp.healthy()) == 2 })
	return a, b, [2]*cutRelay{relay0, relay1}
}

// TestPeerPathsFailover: two paths to a peer over loopback, each through
// a relay. Both are verified by probes; under the aggregate policy a flow
// that does not fill the quicker path stays on it alone (the other would
// make the receiver wait for its packets), under single it takes the first
// path. When the relay of the path carrying the flow silently drops
// everything, the scheduler declares that path failed and the data moves
// to the other; what the failed path took from the cut on is reinjected on
// the other, so that every packet arrives: under single too, where the
// receiver restores no order but its replay window must take copies far
// behind what the other path carried meanwhile.
func TestPeerPathsFailover(t *testing.T) {
	for _, policy := range []scheduler.Policy{scheduler.PolicyAggregate, scheduler.PolicySingle} {
		t.Run(policy.String(), func(t *testing.T) { testPeerPathsFailover(t, policy) })
	}
}

func testPeerPathsFailover(t *testing.T, policy scheduler.Policy) {
	a, b, relays := relayedPeers(t, policy)
	// Steady traffic, a numbered packet every 200 µs, until stopped.
	flow := startNumberedFlow(t, a, b, 200*time.Microsecond)
	rx := func(id int) uint64 { return b.e.Paths()[id].Stats.RxPackets.Load() }
	testenv.WaitUntil(t, 5*time.Second, "both paths verified, data flowing", func() bool {
		return len(a.pp.healthy()) == 2 && rx(0)+rx(1) > 400
	})
	// The path that carries the flow now is the one to cut: the
	// quicker of two loopback paths changes now and then, so the one
	// that carried most of the last 20 ms, cut at once.
	r0, r1 := rx(0), rx(1)
	time.Sleep(20 * time.Millisecond)
	victim, other := 0, 1
	if rx(1)-r1 > rx(0)-r0 {
		victim, other = 1, 0
	}
	relays[victim].cut.Store(true)
	cut := time.Now()
	testenv.WaitUntil(t, 5*time.Second, "the cut path failed", func() bool { return len(a.pp.healthy()) == 1 })
	detected := time.Since(cut)
	before := rx(victim)
	time.Sleep(200 * time.Millisecond)
	afterOther := rx(other)
	time.Sleep(200 * time.Millisecond)
	if got := rx(victim); got != before {
		t.Fatalf("path %d still receives after the cut: %d then %d", victim, before, got)
	}
	if rx(other) <= afterOther {
		t.Fatalf("path %d does not carry the data", other)
	}
	t.Logf("silent failure of path %d detected and traffic moved %v after the cut", victim, detected)
	if detected > 2*time.Second {
		t.Fatalf("failure detected only after %v", detected)
	}
	last := flow.stop()
	missing := func() int { return flow.missing(last) }
	testenv.Eventually(2*time.Second, func() bool { return missing() == 0 })
	t.Logf("%d packets sent, %d reinjected; the receiver's drops: %v", last, a.pp.reinjected.Load(), b.e.Stats.Drops.Snapshot())
	if n := missing(); n != 0 {
		t.Fatalf("%d of %d packets never arrived: what the failed path took was not reinjected", n, last)
	}
	if a.pp.reinjected.Load() == 0 {
		t.Fatal("nothing reinjected")
	}
}

// TestPeerPathsReinjectionWaitsForAPath: the second path is out of service
// (its relay drops everything) when the first fails too. Reinjecting then
// would send nothing (the picker falls back to the failed path), so the
// first path's datagrams wait; when the second comes back they are sent on
// it, and every packet arrives.
func TestPeerPathsReinjectionWaitsForAPath(t *testing.T) {
	a, b, relays := relayedPeers(t, scheduler.PolicyAggregate)
	// A packet every millisecond: the engine's copies (2048 per worker)
	// cover the whole outage.
	flow := startNumberedFlow(t, a, b, time.Millisecond)
	rx := func(id int) uint64 { return b.e.Paths()[id].Stats.RxPackets.Load() }
	testenv.WaitUntil(t, 5*time.Second, "both paths verified, data flowing", func() bool {
		return len(a.pp.healthy()) == 2 && rx(0)+rx(1) > 200
	})

	relays[1].cut.Store(true)
	testenv.WaitUntil(t, 5*time.Second, "path 1 failed", func() bool { return slices.Equal(a.pp.healthy(), []scheduler.PathID{0}) })
	relays[0].cut.Store(true)
	testenv.WaitUntil(t, 5*time.Second, "path 0 failed too", func() bool { return len(a.pp.healthy()) == 0 })
	before := a.pp.reinjected.Load()
	relays[1].cut.Store(false)
	testenv.WaitUntil(t, 5*time.Second, "path 1 back", func() bool { return slices.Equal(a.pp.healthy(), []scheduler.PathID{1}) })
	testenv.WaitUntil(t, 2*time.Second, "path 0's datagrams reinjected on path 1", func() bool { return a.pp.reinjected.Load() > before })

	last := flow.stop()
	missing := func() int { return flow.missing(last) }
	testenv.Eventually(2*time.Second, func() bool { return missing() == 0 })
	t.Logf("%d packets sent, %d reinjected (%d once path 1 was back)", last, a.pp.reinjected.Load(), a.pp.reinjected.Load()-before)
	if n := missing(); n != 0 {
		t.Fatalf("%d of %d packets never arrived", n, last)
	}
}

// numberedFlow is a's packets to b, numbered, one every interval, and the
// numbers b's TUN device received.
type numberedFlow struct {
	sent   atomic.Uint32
	cancel context.CancelFunc
	sender sync.WaitGroup
	mu     sync.Mutex
	seen   map[uint32]bool
}

// startNumberedFlow starts sending until stop.
func startNumberedFlow(t *testing.T, a, b *testPeer, interval time.Duration) *numberedFlow {
	f := &numberedFlow{seen: map[uint32]bool{}}
	ctx, cancel := context.WithCancel(t.Context())
	f.cancel = cancel
	f.sender.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		payload := make([]byte, 1000)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				binary.BigEndian.PutUint32(payload, f.sent.Add(1))
				pkt, err := tun.UDPPacket(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), payload)
				if err != nil {
					panic(err)
				}
				a.tun.Inject(pkt)
			}
		}
	})
	go func() {
		for p := range b.tun.Writes() {
			f.mu.Lock()
			f.seen[binary.BigEndian.Uint32(p[28:])] = true
			f.mu.Unlock()
		}
	}()
	return f
}

// stop ends the sending and returns the last number sent.
func (f *numberedFlow) stop() uint32 {
	f.cancel()
	f.sender.Wait()
	return f.sent.Load()
}

// missing counts the numbers up to last that b did not receive.
func (f *numberedFlow) missing(last uint32) (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := uint32(1); i <= last; i++ {
		if !f.seen[i] {
			n++
		}
	}
	return n
}

// healthy returns the IDs of the paths the scheduler considers usable.
func (pp *peerPaths) healthy() []scheduler.PathID {
	var ids []scheduler.PathID
	for _, info := range pp.Paths() {
		if info.State == scheduler.StateActive {
			ids = append(ids, info.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestPerPacketPickingIsTheSchedulers checks that what the data plane
// calls per packet for a peer's paths is the scheduler's picker, not code
// of this package (issue 20: the data plane does not climb into mif per
// packet), with and without traffic classes.
func TestPerPacketPickingIsTheSchedulers(t *testing.T) {
	classes, err := scheduler.ParseRules("udp/5060:redundant", scheduler.PolicyOffload)
	if err != nil {
		t.Fatal(err)
	}
	schedulerPkg := reflect.TypeFor[scheduler.Picker]().PkgPath()
	for _, c := range []*scheduler.Classifier{nil, classes} {
		pp := newPeerPaths(peerPathsConfig{Engine: &dataplane.Engine{}, Policy: scheduler.PolicyAggregate, Classes: c})
		typ := reflect.TypeOf(pp.groupPicker)
		if typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.PkgPath() != schedulerPkg {
			t.Errorf("classes %v: the path group picks with %v, want a type of %s", c != nil, typ, schedulerPkg)
		}
	}
}

// TestReceiveOverPaths: whatever the policy, the inbound SA of a peer
// with several paths takes copies far behind its newest packet, and its
// probe SA probes far behind the others' (both replay windows at full
// size); aggregate and redundant also restore order. (The failover test
// under single catches a window too small only when the failure is
// detected slowly; this one always.)
func TestReceiveOverPaths(t *testing.T) {
	for _, tc := range []struct {
		policy  scheduler.Policy
		ordered bool
	}{
		{scheduler.PolicySingle, false},
		{scheduler.PolicyOffload, false},
		{scheduler.PolicyAggregate, true},
		{scheduler.PolicyRedundant, true},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			e := memoryEngine(t)
			t.Cleanup(e.Close)
			key := make([]byte, dataplane.AES256GCM16.KeyLen())
			newSA := func(cfg dataplane.SAConfig, probe dataplane.SAConfig) *dataplane.SA {
				cfg.Algorithm, cfg.Key, probe.Algorithm, probe.Key = dataplane.AES256GCM16, key, dataplane.AES256GCM16, key
				sa, err := dataplane.NewSA(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := sa.SetProbeSAConfig(probe); err != nil {
					t.Fatal(err)
				}
				return sa
			}
			// The probe SAs as NewChildSAs configures them.
			in := newSA(dataplane.SAConfig{SPI: 0x1001}, dataplane.SAConfig{SPI: 0x1002, ReplayWindow: probeReplayWindow, ReplayWindowStart: probeReplayWindowStart})
			out := newSA(dataplane.SAConfig{SPI: 0x2001, Outbound: true}, dataplane.SAConfig{SPI: 0x2002, Outbound: true})
			if err := e.AddInbound(in, out, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
				t.Fatal(err)
			}
			if got := in.ProbeSA().ReplayWindow().Size(); got != probeReplayWindowStart {
				t.Fatalf("the probe SA's window starts at %d packets, want %d", got, probeReplayWindowStart)
			}
			if err := receiveOverPaths(e, in.SPI(), tc.policy); err != nil {
				t.Fatal(err)
			}
			if got := in.ReplayWindow().Size(); got != dataplane.DefaultReplayWindow {
				t.Errorf("replay window %d packets, want %d", got, dataplane.DefaultReplayWindow)
			}
			if got := in.ProbeSA().ReplayWindow().Size(); got != probeReplayWindow {
				t.Errorf("the probe SA's replay window %d packets, want %d", got, probeReplayWindow)
			}
			// Telling the resequencer how many paths there are works
			// only where order is restored.
			if err := e.SetOrderPaths(in.SPI(), 2); (err == nil) != tc.ordered {
				t.Errorf("order restored: %v, want %v", err == nil, tc.ordered)
			}
			if err := receiveOverPaths(e, in.SPI()+1, tc.policy); err == nil {
				t.Error("an unknown SPI was readied")
			}
		})
	}
}

// memoryEngine is a data plane over a memory TUN device, without paths.
func memoryEngine(t *testing.T) *dataplane.Engine {
	t.Helper()
	m, err := tun.NewMemory(tun.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{m}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestQuietPeerWakesOnData: once no data went out for the detector's
// QuietAfter, a peer probes its paths every QuietInterval (here 10 s, so
// that a probe due anyway cannot pass the test) and its conductor ticks at
// the quiet pace; the first data sent after that wakes it through the
// path group, and every path is probed at once and is back at the active
// pace within a fraction of the quiet interval.
func TestQuietPeerWakesOnData(t *testing.T) {
	const quietInterval = 10 * time.Second
	a, b, _ := relayedPeersWith(t, scheduler.PolicyAggregate, scheduler.Config{
		Detector: scheduler.DetectorConfig{QuietAfter: 300 * time.Millisecond, QuietInterval: quietInterval}})
	testenv.WaitUntil(t, 5*time.Second, "a quiet and armed", func() bool {
		return a.pp.tickEvery(a.pp.sched.Quiet()) == quietTickInterval && a.pp.group.Armed()
	})
	for _, id := range []scheduler.PathID{0, 1} {
		if got := a.pp.sched.ProbeInterval(id); got != quietInterval {
			t.Fatalf("quiet: path %d probed every %v, want %v", id, got, quietInterval)
		}
	}
	// Quiet: what a sends on a path is its own probes and its answers to
	// b's, one each per QuietInterval.
	tx := func(id int) uint64 { return a.e.Paths()[id].Stats.TxPackets.Load() }
	t0, t1 := tx(0), tx(1)
	time.Sleep(time.Second)
	if n0, n1 := tx(0)-t0, tx(1)-t1; n0 > 4 || n1 > 4 {
		t.Fatalf("quiet for a second: %d and %d packets sent on the paths, want at most 4 (two probes and two answers)", n0, n1)
	}

	// Replies counted so far on each path: the wake must bring a new
	// one on both at once, not at their next quiet probe.
	replies := func(id scheduler.PathID) int {
		info, _ := a.pp.sched.Info(id, scheduler.Now())
		return info.RTTSamples
	}
	r0, r1 := replies(0), replies(1)
	start := time.Now()
	flow := startNumberedFlow(t, a, b, time.Millisecond)
	defer flow.stop()
	testenv.WaitUntil(t, 5*time.Second, "both paths probed again and at the active pace", func() bool {
		return replies(0) > r0 && replies(1) > r1 &&
			a.pp.sched.ProbeInterval(0) < idleProbeEvery && a.pp.sched.ProbeInterval(1) < idleProbeEvery
	})
	woke := time.Since(start)
	t.Logf("data after a quiet spell: both paths probed and active again after %v", woke)
	if woke > quietInterval/10 {
		t.Fatalf("both paths probed and active %v after data began, want within %v: the data did not wake the conductor", woke, quietInterval/10)
	}
	if a.pp.group.Armed() {
		t.Fatal("the group is still armed after data went through it")
	}
}
