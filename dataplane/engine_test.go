package dataplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	"go.uber.org/goleak"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// side is one end of a tunnel over loopback: an engine, its in-memory TUN
// and its socket.
type side struct {
	e   *dataplane.Engine
	tun *tun.Memory
	// queues are the engine's TUN queues, tun first.
	queues []*tun.Memory
	conn   *udp.Conn
	out    *dataplane.SA
	in     *dataplane.SA
}

type pairConfig struct {
	alg        dataplane.Algorithm
	wrongKey   bool                // b receives with a different key than a seals with
	remoteOfA  dataplane.Selectors // what b accepts as inner source; nil means any
	localOfB   dataplane.Selectors // what b accepts as inner destination; nil means any
	sourcesOfA dataplane.Selectors // the sources a may send from; nil means any
	tunA, tunB tun.MemoryConfig
	// queuesB gives b that many TUN queues (default one), each a memory
	// device configured as tunB.
	queuesB   int
	noOffload bool
	// transportA and transportB, when set, make every SA a transport-mode
	// one between these two addresses: each side's inbound selectors name
	// them (remoteOfA still overrides b's view of a).
	transportA, transportB netip.Addr
}

// newPair builds two engines joined over 127.0.0.1 with SPIs 0x1001 (a→b)
// and 0x2002 (b→a); routes send everything into the tunnel.
func newPair(t testing.TB, pc pairConfig) (a, b *side) {
	t.Helper()
	if pc.alg == 0 {
		pc.alg = dataplane.AES256GCM16
	}
	keyAB, keyBA := make([]byte, pc.alg.KeyLen()), make([]byte, pc.alg.KeyLen())
	rand.Read(keyAB)
	rand.Read(keyBA)
	newSA := func(spi uint32, key []byte) *dataplane.SA {
		sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: spi, Algorithm: pc.alg, Key: key, Transport: pc.transportA.IsValid()})
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	a, b = &side{}, &side{}
	a.out, b.in = newSA(0x1001, keyAB), newSA(0x1001, keyAB)
	b.out, a.in = newSA(0x2002, keyBA), newSA(0x2002, keyBA)
	if pc.wrongKey {
		wrong := make([]byte, pc.alg.KeyLen())
		rand.Read(wrong)
		b.in = newSA(0x1001, wrong)
	}
	for _, s := range []*side{a, b} {
		c, err := udp.Listen(context.Background(), udp.Config{
			Local: netip.MustParseAddrPort("127.0.0.1:0"), NoOffload: pc.noOffload})
		if err != nil {
			t.Fatal(err)
		}
		s.conn = c
	}
	orAny := func(s dataplane.Selectors) dataplane.Selectors {
		if s == nil {
			return dataplane.AnyAddress
		}
		return s
	}
	remoteOfB, localOfA := dataplane.AnyAddress, dataplane.AnyAddress
	if pc.transportA.IsValid() {
		one := func(a netip.Addr) dataplane.Selectors { return dataplane.Selectors{netip.PrefixFrom(a, a.BitLen())} }
		remoteOfB, localOfA = one(pc.transportB), one(pc.transportA)
		if pc.remoteOfA == nil {
			pc.remoteOfA = localOfA
		}
		if pc.localOfB == nil {
			pc.localOfB = remoteOfB
		}
	}
	for _, x := range []struct {
		s, peer                *side
		tcfg                   tun.MemoryConfig
		queues                 int
		remote, local, sources dataplane.Selectors
	}{
		{a, b, pc.tunA, 1, remoteOfB, localOfA, orAny(pc.sourcesOfA)},
		{b, a, pc.tunB, max(pc.queuesB, 1), orAny(pc.remoteOfA), orAny(pc.localOfB), dataplane.AnyAddress},
	} {
		ep, err := x.s.conn.NewEndpoint(x.peer.conn.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		var queues []wgtun.Device
		for range x.queues {
			m, err := tun.NewMemory(x.tcfg)
			if err != nil {
				t.Fatal(err)
			}
			x.s.queues = append(x.s.queues, m)
			queues = append(queues, m)
		}
		x.s.tun = x.s.queues[0]
		e, err := dataplane.NewEngine(dataplane.EngineConfig{
			Queues: queues,
			Paths:  []*dataplane.Path{{ID: 0, Conn: x.s.conn, Remote: ep}},
		})
		if err != nil {
			t.Fatal(err)
		}
		e.SetRoutes([]dataplane.Route{
			{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Sources: x.sources, SA: x.s.out},
			{Prefix: netip.MustParsePrefix("::/0"), Sources: x.sources, SA: x.s.out},
		})
		if err := e.AddInbound(x.s.in, x.s.out, x.remote, x.local); err != nil {
			t.Fatal(err)
		}
		x.s.e = e
	}
	return a, b
}

// run starts both engines and stops them when the test ends.
func run(t testing.TB, sides ...*side) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range sides {
		wg.Go(func() { s.e.Run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func udpPacket(t testing.TB, src, dst string, payload []byte) []byte {
	t.Helper()
	pkt, err := tun.UDPPacket(netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst), payload)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// receiveAll collects n written packets or fails after a timeout.
func receiveAll(t testing.TB, m *tun.Memory, n int) [][]byte {
	t.Helper()
	var got [][]byte
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case p := <-m.Writes():
			got = append(got, p)
		case <-timeout:
			t.Fatalf("received %d of %d packets", len(got), n)
		}
	}
	return got
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEngineCarriesPacketsBothWays(t *testing.T) {
	for _, alg := range dataplane.Algorithms() {
		for _, offload := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/offload=%v", alg, offload), func(t *testing.T) {
				a, b := newPair(t, pairConfig{alg: alg, noOffload: !offload,
					tunA: tun.MemoryConfig{RecordWrites: 1000}, tunB: tun.MemoryConfig{RecordWrites: 1000}})
				run(t, a, b)
				var sent [][]byte
				for i := range 300 {
					payload := bytes.Repeat([]byte{byte(i)}, 1+i*4)
					if i%3 == 0 {
						sent = append(sent, udpPacket(t, "[fd00::1]:1000", "[fd00::2]:2000", payload))
					} else {
						sent = append(sent, udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", payload))
					}
				}
				for _, p := range sent {
					if err := a.tun.Inject(p); err != nil {
						t.Fatal(err)
					}
				}
				got := receiveAll(t, b.tun, len(sent))
				for i := range sent {
					if !bytes.Equal(got[i], sent[i]) {
						t.Fatalf("packet %d differs or out of order:\n got %x\nwant %x", i, got[i], sent[i])
					}
				}
				// And back.
				reply := udpPacket(t, "10.0.0.2:2000", "10.0.0.1:1000", []byte("reply"))
				if err := b.tun.Inject(reply); err != nil {
					t.Fatal(err)
				}
				if back := receiveAll(t, a.tun, 1); !bytes.Equal(back[0], reply) {
					t.Fatalf("reply %x", back[0])
				}
				// The engine counts a batch right after writing it to the
				// TUN device, so the count may trail what was read there.
				testenv.Eventually(2*time.Second, func() bool { return b.e.Stats.RxPackets.Load() >= uint64(len(sent)) })
				if got := b.e.Stats.RxPackets.Load(); got != uint64(len(sent)) {
					t.Fatalf("b received %d packets, want %d", got, len(sent))
				}
				if n := b.in.Stats.Packets.Load(); n != uint64(len(sent)) {
					t.Fatalf("b's inbound SA counted %d packets", n)
				}
			})
		}
	}
}

// TestEngineReleasesIdleCiphers: a sweep drops the expanded ciphers of the
// SAs (inbound and its outbound pair) that carried nothing since the
// previous sweep, and packets go on both ways after it, each SA expanding
// its key again; SAs that carried a packet in between keep theirs.
func TestEngineReleasesIdleCiphers(t *testing.T) {
	a, b := newPair(t, pairConfig{tunA: tun.MemoryConfig{RecordWrites: 10}, tunB: tun.MemoryConfig{RecordWrites: 10}})
	run(t, a, b)
	exchange := func(i byte) {
		t.Helper()
		there := udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", []byte{i})
		back := udpPacket(t, "10.0.0.2:2000", "10.0.0.1:1000", []byte{i, i})
		if err := a.tun.Inject(there); err != nil {
			t.Fatal(err)
		}
		if got := receiveAll(t, b.tun, 1); !bytes.Equal(got[0], there) {
			t.Fatalf("exchange %d: b got %x", i, got[0])
		}
		if err := b.tun.Inject(back); err != nil {
			t.Fatal(err)
		}
		if got := receiveAll(t, a.tun, 1); !bytes.Equal(got[0], back) {
			t.Fatalf("exchange %d: a got %x", i, got[0])
		}
	}
	expanded := func(s *side) [2]bool { return [2]bool{s.in.CipherExpanded(), s.out.CipherExpanded()} }
	exchange(1)
	for _, s := range []*side{a, b} {
		if got := expanded(s); got != [2]bool{true, true} {
			t.Fatalf("after traffic: in, out expanded %v", got)
		}
		if n := s.e.ReleaseIdleCiphers(); n != 0 {
			t.Fatalf("the first sweep released %d ciphers", n)
		}
	}
	exchange(2)
	if n := a.e.ReleaseIdleCiphers(); n != 0 {
		t.Fatalf("a sweep after traffic released %d ciphers", n)
	}
	if n := a.e.ReleaseIdleCiphers(); n != 2 || expanded(a) != [2]bool{} {
		t.Fatalf("a sweep of an idle engine released %d ciphers (want 2), in, out expanded %v", n, expanded(a))
	}
	exchange(3)
	exchange(4)
	if got := expanded(a); got != [2]bool{true, true} {
		t.Fatalf("after traffic again: in, out expanded %v", got)
	}
	for _, s := range []*side{a, b} {
		if got := s.in.Stats.Drops.Snapshot(); len(got) != 0 {
			t.Fatalf("drops %v", got)
		}
	}
}

func TestEngineWrongKeyCountsBadICV(t *testing.T) {
	a, b := newPair(t, pairConfig{wrongKey: true, tunB: tun.MemoryConfig{RecordWrites: 10}})
	run(t, a, b)
	for range 50 {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("secret")))
	}
	testenv.WaitUntil(t, 10*time.Second, "50 bad-ICV drops", func() bool { return b.e.Stats.Drops.Get(dataplane.DropBadICV) == 50 })
	if b.e.Stats.RxPackets.Load() != 0 || len(b.tun.Writes()) != 0 {
		t.Fatal("packets with a bad ICV reached the TUN")
	}
}

func TestEnginePolicyDropsForeignSource(t *testing.T) {
	a, b := newPair(t, pairConfig{remoteOfA: dataplane.Selectors{netip.MustParsePrefix("10.0.0.0/24")},
		tunB: tun.MemoryConfig{RecordWrites: 10}})
	run(t, a, b)
	a.tun.Inject(udpPacket(t, "10.9.9.9:1", "10.0.0.2:2", []byte("spoofed")))
	a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("fine")))
	receiveAll(t, b.tun, 1)
	testenv.WaitUntil(t, 10*time.Second, "1 policy drop", func() bool { return b.e.Stats.Drops.Get(dataplane.DropPolicy) == 1 })
}

// TestEnginePolicyDropsForeignDestination: a peer that sends to an address
// outside this side's selectors (the gateway's management network, another
// client) gets nothing through (RFC 4301 §5.2).
func TestEnginePolicyDropsForeignDestination(t *testing.T) {
	a, b := newPair(t, pairConfig{localOfB: dataplane.Selectors{netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::2/128")},
		tunB: tun.MemoryConfig{RecordWrites: 10}})
	run(t, a, b)
	a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.3:2", []byte("next door")))
	a.tun.Inject(udpPacket(t, "10.0.0.1:1", "192.168.1.1:22", []byte("management")))
	a.tun.Inject(udpPacket(t, "[fd00::1]:1", "[fd00::3]:2", []byte("v6 next door")))
	fine := udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("fine"))
	a.tun.Inject(fine)
	got := receiveAll(t, b.tun, 1)
	testenv.WaitUntil(t, 10*time.Second, "3 policy drops", func() bool { return b.e.Stats.Drops.Get(dataplane.DropPolicy) == 3 })
	if !bytes.Equal(got[0], fine) {
		t.Fatalf("b's TUN got %x, want the packet to its own address", got[0])
	}
	// The counter follows the TUN write.
	testenv.WaitUntil(t, 10*time.Second, "a packet through", func() bool { return b.e.Stats.RxPackets.Load() >= 1 })
	if n := b.e.Stats.RxPackets.Load(); n != 1 {
		t.Fatalf("%d packets reached b's TUN, want 1", n)
	}
}

// TestEngineSourcePolicy: an outbound packet from a source outside the
// route's selectors is not sealed.
func TestEngineSourcePolicy(t *testing.T) {
	a, b := newPair(t, pairConfig{sourcesOfA: dataplane.Selectors{netip.MustParsePrefix("10.0.0.1/32")},
		tunB: tun.MemoryConfig{RecordWrites: 10}})
	run(t, a, b)
	a.tun.Inject(udpPacket(t, "10.0.0.9:1", "10.0.0.2:2", []byte("not mine")))
	fine := udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("fine"))
	a.tun.Inject(fine)
	receiveAll(t, b.tun, 1)
	testenv.WaitUntil(t, 10*time.Second, "1 source-policy drop", func() bool { return a.e.Stats.SourcePolicy.Load() == 1 })
	if n := a.out.Stats.Packets.Load(); n != 1 {
		t.Fatalf("a sealed %d packets, want 1", n)
	}
}

func TestEngineNoRoute(t *testing.T) {
	a, b := newPair(t, pairConfig{})
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Sources: dataplane.AnyAddress, SA: a.out}})
	run(t, a, b)
	a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.2.0.2:2", []byte("nowhere")))
	a.tun.Inject([]byte{0x00, 0x01}) // not IP
	testenv.WaitUntil(t, 10*time.Second, "2 no-route drops", func() bool { return a.e.Stats.NoRoute.Load() == 2 })
	if a.e.Stats.TxPackets.Load() != 0 {
		t.Fatal("sent a packet without a route")
	}
}

// TestEngineClampsMSS: a SYN announcing a 1460-byte MSS crosses from an
// engine whose TUN MTU is 1400 to one whose MTU is 1300. The sender lowers
// the MSS to 1360 as it seals, the receiver to 1260 as it opens: each end
// clamps to its own tunnel, in both directions of travel.
func TestEngineClampsMSS(t *testing.T) {
	a, b := newPair(t, pairConfig{tunA: tun.MemoryConfig{MTU: 1400}, tunB: tun.MemoryConfig{MTU: 1300, RecordWrites: 1}})
	run(t, a, b)
	mss := []byte{2, 4, 0x05, 0xb4} // 1460
	syn, err := tun.TCPPacket(netip.MustParseAddrPort("10.3.0.2:40000"), netip.MustParseAddrPort("10.1.0.7:443"), 0x02, mss, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.tun.Inject(syn)
	got := receiveAll(t, b.tun, 1)[0]
	if announced := int(got[20+22])<<8 | int(got[20+23]); announced != 1260 {
		t.Errorf("MSS %d after the tunnel, want 1260", announced)
	}
	if a.e.Stats.MSSClamped.Load() != 1 || b.e.Stats.MSSClamped.Load() != 1 {
		t.Errorf("clamped %d times on the way out and %d on the way in, want once each",
			a.e.Stats.MSSClamped.Load(), b.e.Stats.MSSClamped.Load())
	}
}

// TestEngineDemux sends what else arrives on port 4500: keepalives, IKE,
// runts and unknown SPIs are told apart and counted.
func TestEngineDemux(t *testing.T) {
	a, b := newPair(t, pairConfig{})
	var mu sync.Mutex
	var ike [][]byte
	b.e, _ = dataplane.NewEngine(dataplane.EngineConfig{
		Queues: []wgtun.Device{b.tun},
		Paths:  []*dataplane.Path{{ID: 0, Conn: b.conn, Remote: mustEndpoint(t, b.conn, a.conn.LocalAddr())}},
		Control: func(msg []byte, from netip.AddrPort, p *dataplane.Path) {
			mu.Lock()
			ike = append(ike, bytes.Clone(msg))
			mu.Unlock()
		},
	})
	run(t, a, b)
	raw, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.conn.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	unknown := append([]byte{0xde, 0xad, 0xbe, 0xef}, make([]byte, 40)...)
	for _, d := range [][]byte{{0xff}, {0, 0, 0, 0, 'i', 'k', 'e'}, {1, 2}, unknown} {
		if _, err := raw.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitUntil(t, 10*time.Second, "a keepalive, an IKE message, a runt and an unknown SPI counted", func() bool {
		s := &b.e.Stats
		return s.Keepalives.Load() == 1 && s.IKEMessages.Load() == 1 &&
			s.Drops.Get(dataplane.DropRunt) == 1 && s.Drops.Get(dataplane.DropUnknownSPI) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(ike) != 1 || string(ike[0]) != "ike" {
		t.Fatalf("control got %q", ike)
	}
}

// TestEngineZeroAllocations drives one outbound batch and its receipt
// synchronously and counts allocations per packet.
func TestEngineZeroAllocations(t *testing.T) {
	for _, tc := range []struct {
		offload, restoreOrder bool
		alg                   dataplane.Algorithm
		keepSent              bool // copies for reinjection
		transport             bool
	}{{true, false, 0, false, false}, {false, false, 0, false, false}, {true, true, 0, false, false}, {true, false, dataplane.AES256SHA256, false, false},
		{false, true, dataplane.AES128SHA1, false, false}, {true, true, 0, true, false}, {true, true, 0, false, true}, {false, false, dataplane.AES256SHA256, false, true}} {
		offload := tc.offload
		t.Run(fmt.Sprintf("offload=%v/restore-order=%v/%v/keep-sent=%v/transport=%v", tc.offload, tc.restoreOrder, tc.alg, tc.keepSent, tc.transport), func(t *testing.T) {
			tmpl := udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", make([]byte, 1372))
			pc := pairConfig{alg: tc.alg, noOffload: !offload, tunA: tun.MemoryConfig{Template: tmpl}}
			if tc.transport {
				pc.transportA, pc.transportB = netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
			}
			a, b := newPair(t, pc)
			defer a.e.Close()
			defer b.e.Close()
			if tc.restoreOrder {
				if err := b.e.RestoreOrder(b.in.SPI(), scheduler.ResequencerConfig{}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.keepSent {
				g := dataplane.NewPathGroup(nil, dataplane.GroupMember{Path: 0})
				g.KeepSent(true)
				a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: g}})
			}
			out := a.e.OutboundWorker(a.tun)
			in := b.e.ReceiveWorker(0, b.tun)
			step := func() {
				if !out.Step() {
					t.Fatal("outbound stopped")
				}
				for b.tun.Stats().WrittenPackets < a.tun.Stats().ReadPackets {
					if !in.Step() {
						t.Fatal("receive stopped")
					}
				}
			}
			step() // warm up
			allocs := testing.AllocsPerRun(50, step)
			batch := a.tun.BatchSize()
			if allocs != 0 {
				t.Fatalf("%.2f allocations per batch of %d packets", allocs, batch)
			}
			if b.e.Stats.RxPackets.Load() < uint64(50*batch) {
				t.Fatalf("only %d packets went through", b.e.Stats.RxPackets.Load())
			}
		})
	}
}

func mustEndpoint(t testing.TB, c *udp.Conn, ap netip.AddrPort) *udp.Endpoint {
	ep, err := c.NewEndpoint(ap)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestEngineSequenceExhaustedCounted: an SA that has handed out its last
// sequence number drops what it would send, counted (not one log line
// per batch), and sends nothing with a wrapped number.
func TestEngineSequenceExhaustedCounted(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tun.MemoryConfig{RecordWrites: 10}})
	if _, err := a.out.ReserveSequence(1<<32 - 2); err != nil {
		t.Fatal(err)
	}
	run(t, a, b)
	a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("the last one")))
	receiveAll(t, b.tun, 1)
	for range 5 {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("too late")))
	}
	testenv.WaitUntil(t, 10*time.Second, "5 packets refused for exhausted sequence numbers", func() bool { return a.e.Stats.SequenceExhausted.Load() == 5 })
	if n := a.out.Stats.Packets.Load(); n != 1 {
		t.Fatalf("a sealed %d packets, want 1", n)
	}
	if got := a.out.LastSequence(); got != 1<<32-1 {
		t.Fatalf("last sequence %d, want 2^32-1", got)
	}
}
