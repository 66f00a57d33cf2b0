package dataplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/internal/inetsum"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// transportPair is newPair with transport-mode SAs between a and b's
// stable addresses.
func transportPair(t *testing.T, a, b string, pc pairConfig) (*side, *side) {
	pc.transportA, pc.transportB = netip.MustParseAddr(a), netip.MustParseAddr(b)
	pc.tunA.RecordWrites, pc.tunB.RecordWrites = 100, 100
	return newPair(t, pc)
}

// TestTransportModeCarriesPackets: the receiver rebuilds exactly the packet
// the sender's stack wrote (the stack's TTL 64, DF, no ToS), and the TCP
// and UDP checksums computed over the stable addresses verify, both
// families, both directions.
func TestTransportModeCarriesPackets(t *testing.T) {
	for _, fam := range []struct{ a, b string }{{"10.0.0.1", "10.0.0.2"}, {"fd00::1", "fd00::2"}} {
		t.Run(fam.a, func(t *testing.T) {
			a, b := transportPair(t, fam.a, fam.b, pairConfig{})
			run(t, a, b)
			ap := func(addr string, port uint16) netip.AddrPort {
				return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
			}
			var sent [][]byte
			for i := range 20 {
				payload := bytes.Repeat([]byte{byte(i)}, 1+i*70)
				var pkt []byte
				var err error
				if i%2 == 0 {
					pkt, err = tun.UDPPacket(ap(fam.a, 1000), ap(fam.b, 2000), payload)
				} else {
					pkt, err = tun.TCPPacket(ap(fam.a, 1000), ap(fam.b, 22), 0x18, nil, payload)
				}
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, pkt)
				a.tun.Inject(pkt)
			}
			got := receiveAll(t, b.tun, len(sent))
			for i := range sent {
				if !bytes.Equal(got[i], sent[i]) {
					t.Fatalf("packet %d rebuilt differently:\n got %x\nwant %x", i, got[i], sent[i])
				}
			}
			reply, _ := tun.UDPPacket(ap(fam.b, 2000), ap(fam.a, 1000), []byte("reply"))
			b.tun.Inject(reply)
			if back := receiveAll(t, a.tun, 1); !bytes.Equal(back[0], reply) {
				t.Fatalf("reply rebuilt as %x, want %x", back[0], reply)
			}
		})
	}
}

// TestTransportModeLeavesTheHeaderOut: the ESP packets of a transport-mode
// SA are shorter than tunnel mode's by exactly the inner IP header.
func TestTransportModeLeavesTheHeaderOut(t *testing.T) {
	for _, fam := range []struct {
		a, b   string
		header uint64
	}{{"10.0.0.1", "10.0.0.2", 20}, {"fd00::1", "fd00::2", 40}} {
		t.Run(fam.a, func(t *testing.T) {
			wire := func(transport bool) uint64 {
				var a, b *side
				if transport {
					a, b = transportPair(t, fam.a, fam.b, pairConfig{noOffload: true})
				} else {
					a, b = newPair(t, pairConfig{noOffload: true, tunB: tun.MemoryConfig{RecordWrites: 100}})
				}
				run(t, a, b)
				const n = 10
				for range n {
					src, dst := netip.AddrPortFrom(netip.MustParseAddr(fam.a), 1), netip.AddrPortFrom(netip.MustParseAddr(fam.b), 2)
					pkt, _ := tun.UDPPacket(src, dst, make([]byte, 1372))
					a.tun.Inject(pkt)
				}
				receiveAll(t, b.tun, n)
				p := a.e.Paths()[0]
				testenv.WaitUntil(t, 5*time.Second, "the send counted", func() bool { return p.Stats.TxPackets.Load() == n })
				return p.Stats.TxBytes.Load() / n
			}
			tunnel, transport := wire(false), wire(true)
			if tunnel-transport != fam.header {
				t.Fatalf("ESP datagrams of %d bytes in transport mode, %d in tunnel mode: want %d less", transport, tunnel, fam.header)
			}
		})
	}
}

// TestTransportModeWholePackets: an IPv4 fragment and a header with
// options cannot be rebuilt, so they travel whole and arrive unchanged;
// one whose addresses lie outside the selectors is dropped and counted,
// as in tunnel mode, and never reaches the TUN.
func TestTransportModeWholePackets(t *testing.T) {
	a, b := transportPair(t, "10.0.0.1", "10.0.0.2", pairConfig{})
	run(t, a, b)
	frag := udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", make([]byte, 600))
	binary.BigEndian.PutUint16(frag[6:], 0x2000) // more fragments, offset 0
	refreshIPv4Checksum(frag)
	options := withIPv4Options(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("options")))
	spoofed := udpPacket(t, "10.9.9.9:1", "10.0.0.2:2", make([]byte, 100))
	binary.BigEndian.PutUint16(spoofed[6:], 0x2000)
	refreshIPv4Checksum(spoofed)
	for _, p := range [][]byte{frag, spoofed, options} {
		a.tun.Inject(p)
	}
	got := receiveAll(t, b.tun, 2)
	if !bytes.Equal(got[0], frag) || !bytes.Equal(got[1], options) {
		t.Fatalf("whole packets changed on the way:\n got %x\n     %x\nwant %x\n     %x", got[0], got[1], frag, options)
	}
	testenv.WaitUntil(t, 5*time.Second, "the spoofed fragment counted", func() bool { return b.e.Stats.Drops.Get(dataplane.DropPolicy) == 1 })
	if n := len(b.tun.Writes()); n != 0 {
		t.Fatalf("%d more packets reached the TUN", n)
	}
}

// TestTransportModeSourcePolicy: the sender seals nothing whose source is
// not its own stable address.
func TestTransportModeSourcePolicy(t *testing.T) {
	a, b := transportPair(t, "10.0.0.1", "10.0.0.2", pairConfig{sourcesOfA: dataplane.Selectors{netip.MustParsePrefix("10.0.0.1/32")}})
	run(t, a, b)
	a.tun.Inject(udpPacket(t, "10.0.0.7:1", "10.0.0.2:2", []byte("not mine")))
	fine := udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte("fine"))
	a.tun.Inject(fine)
	if got := receiveAll(t, b.tun, 1); !bytes.Equal(got[0], fine) {
		t.Fatalf("got %x", got[0])
	}
	if n := a.e.Stats.SourcePolicy.Load(); n != 1 {
		t.Fatalf("source policy drops %d, want 1", n)
	}
}

// TestTransportModeNeedsOneAddressEachSide: an inbound transport-mode SA
// whose selectors are ranges, several prefixes or two families is refused:
// the header could not be rebuilt.
func TestTransportModeNeedsOneAddressEachSide(t *testing.T) {
	key := make([]byte, dataplane.AES256GCM16.KeyLen())
	rand.Read(key)
	sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x3003, Algorithm: dataplane.AES256GCM16, Key: key, Transport: true})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := tun.NewMemory(tun.MemoryConfig{})
	c, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{m}, Paths: []*dataplane.Path{{ID: 0, Conn: c, Remote: mustEndpoint(t, c, c.LocalAddr())}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	sel := func(ps ...string) dataplane.Selectors {
		var s dataplane.Selectors
		for _, p := range ps {
			s = append(s, netip.MustParsePrefix(p))
		}
		return s
	}
	for _, tc := range []struct {
		remote, local dataplane.Selectors
		ok            bool
	}{
		{sel("10.0.0.1/32"), sel("10.0.0.2/32"), true},
		{sel("10.0.0.0/24"), sel("10.0.0.2/32"), false},
		{sel("10.0.0.1/32", "fd00::1/128"), sel("10.0.0.2/32"), false},
		{sel("10.0.0.1/32"), sel("fd00::2/128"), false},
		{sel("fd00::1/128"), sel("fd00::2/128"), true},
	} {
		err := e.AddInbound(sa, nil, tc.remote, tc.local)
		if (err == nil) != tc.ok {
			t.Errorf("%v -> %v: err %v, want ok=%v", tc.remote, tc.local, err, tc.ok)
		}
		if err == nil {
			e.RemoveInbound(sa.SPI())
		}
	}
}

func refreshIPv4Checksum(p []byte) {
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], inetsum.Checksum(p[:20]))
}

// withIPv4Options returns p with a 4-byte options field (one NOP and an
// end-of-options list, padded) in its header.
func withIPv4Options(p []byte) []byte {
	out := make([]byte, 0, len(p)+4)
	out = append(out, p[:20]...)
	out = append(out, 1, 0, 0, 0)
	out = append(out, p[20:]...)
	out[0] = 0x46
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	refreshIPv4Checksum(out)
	return out
}
