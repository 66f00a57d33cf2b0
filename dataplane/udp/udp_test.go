package udp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	"github.com/vishvananda/netlink"
)

func listenLoopback(t *testing.T, noOffload bool) *Conn {
	t.Helper()
	c, err := Listen(context.Background(), Config{Local: netip.MustParseAddrPort("127.0.0.1:0"), NoOffload: noOffload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGSOTrainArrivesCoalesced sends a train of equal datagrams and a shorter
// last one through one Sender batch: on loopback the kernel keeps the GSO
// message whole and hands it to the GRO socket as one message.
func TestGSOTrainArrivesCoalesced(t *testing.T) {
	tx, rx := listenLoopback(t, false), listenLoopback(t, false)
	if gso, _ := tx.Offloads(); !gso {
		t.Skip("kernel has no UDP_SEGMENT: needs Linux 4.18 or later")
	}
	if _, gro := rx.Offloads(); !gro {
		t.Skip("kernel has no UDP_GRO: needs Linux 5.0 or later")
	}
	ep, err := tx.NewEndpoint(rx.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	s := tx.NewSender(64)
	var want []byte
	for i := range 10 {
		size := 1000
		if i == 9 {
			size = 300
		}
		d := bytes.Repeat([]byte{byte(i + 1)}, size)
		want = append(want, d...)
		if !s.Add(d, ep) {
			t.Fatal("batch full")
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.nmsgs != 1 {
		t.Fatalf("built %d messages, want one GSO message", s.nmsgs)
	}
	const headroom = 16
	r := rx.NewReceiver(8, headroom)
	var got []byte
	for len(got) < len(want) {
		m, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		for i := range m {
			buf, n, seg, from := r.Message(i)
			if from != tx.LocalAddr() {
				t.Fatalf("from %v, want %v", from, tx.LocalAddr())
			}
			if m == 1 && n == len(want) && seg != 1000 {
				t.Fatalf("coalesced message with segment size %d, want 1000", seg)
			}
			got = append(got, buf[headroom:headroom+n]...)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("datagrams arrived changed")
	}
}

func TestSenderGrouping(t *testing.T) {
	c := listenLoopback(t, false)
	c.gso.Store(true)
	ep1, _ := c.NewEndpoint(netip.MustParseAddrPort("127.0.0.1:9"))
	ep2, _ := c.NewEndpoint(netip.MustParseAddrPort("127.0.0.2:9"))
	mk := func(n int) []byte { return make([]byte, n) }
	tests := []struct {
		name  string
		sizes []int
		eps   []*Endpoint
		msgs  int
	}{
		{"equal sizes", []int{100, 100, 100}, []*Endpoint{ep1, ep1, ep1}, 1},
		{"shorter last", []int{100, 100, 40}, []*Endpoint{ep1, ep1, ep1}, 1},
		{"shorter ends the train", []int{100, 40, 100}, []*Endpoint{ep1, ep1, ep1}, 2},
		{"larger starts a new train", []int{100, 200, 200}, []*Endpoint{ep1, ep1, ep1}, 2},
		{"other destination", []int{100, 100, 100}, []*Endpoint{ep1, ep2, ep2}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := c.NewSender(70)
			for i, n := range tc.sizes {
				s.Add(mk(n), tc.eps[i])
			}
			s.build(0, true)
			if s.nmsgs != tc.msgs {
				t.Fatalf("%d messages, want %d", s.nmsgs, tc.msgs)
			}
		})
	}
	t.Run("at most 64 segments", func(t *testing.T) {
		s := c.NewSender(70)
		for range 70 {
			s.Add(mk(100), ep1)
		}
		s.build(0, true)
		if s.nmsgs != 2 || s.firstPacketOf(1) != maxGSOSegments {
			t.Fatalf("%d messages, second starts at %d", s.nmsgs, s.firstPacketOf(1))
		}
	})
}

// TestGSONarrowPath: a route whose MTU (1280) is smaller than the segments
// of a GSO message makes the kernel refuse the message. The Sender sends
// the datagrams one per message instead, which the kernel fragments, and
// stops coalescing datagrams that large to that endpoint.
func TestGSONarrowPath(t *testing.T) {
	testenv.WithNetns(t, func() {
		// The narrow route leads into a TUN device, and the test reads
		// what reaches it: a veth would hand the frames to its peer
		// through the per-CPU backlog, which other tests' traffic on the
		// same machine can fill, dropping frames this test counts.
		dev, err := tun.Create(tun.Config{Name: "narrow", MTU: 1500, Queues: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if err := errors.Join(dev.AddAddress(netip.MustParsePrefix("192.0.2.1/24")), dev.SetUp()); err != nil {
			t.Fatal(err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: dev.Index(), Dst: &net.IPNet{IP: net.ParseIP("192.0.2.9"), Mask: net.CIDRMask(32, 32)}, MTU: 1280}); err != nil {
			t.Fatal(err)
		}
		var fragments atomic.Int64 // IPv4 fragments to 192.0.2.9 read from the TUN
		go func() {
			q := dev.Queues()[0]
			bufs, sizes := [][]byte{make([]byte, 65535+tun.VirtioNetHdrLen)}, []int{0}
			for {
				n, err := q.Read(bufs, sizes, tun.VirtioNetHdrLen)
				if err != nil {
					return
				}
				for i := range n {
					p := bufs[i][tun.VirtioNetHdrLen : tun.VirtioNetHdrLen+sizes[i]]
					if len(p) >= 20 && p[0]>>4 == 4 && netip.AddrFrom4([4]byte(p[16:20])) == netip.MustParseAddr("192.0.2.9") &&
						binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 { // MF or a fragment offset
						fragments.Add(1)
					}
				}
			}
		}()
		c, err := Listen(context.Background(), Config{Local: netip.MustParseAddrPort("192.0.2.1:0")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if gso, _ := c.Offloads(); !gso {
			t.Skip("kernel has no UDP_SEGMENT: needs Linux 4.18 or later")
		}
		ep, err := c.NewEndpoint(netip.MustParseAddrPort("192.0.2.9:4500"))
		if err != nil {
			t.Fatal(err)
		}
		s := c.NewSender(64)
		send := func(n, size int) {
			t.Helper()
			for range n {
				s.Add(make([]byte, size), ep)
			}
			if err := s.Flush(); err != nil {
				t.Fatalf("Flush: %v (send errors %d)", err, s.Errors)
			}
		}
		send(10, 1400)
		if s.Errors != 0 || s.nmsgs != 10 {
			t.Fatalf("%d send errors, %d messages at the end; want 0 errors and one message per datagram", s.Errors, s.nmsgs)
		}
		if got := ep.maxGSOSegment(scheduler.Now()); got != 1399 {
			t.Errorf("GSO limit to the endpoint %d, want 1399", got)
		}
		// Each 1400-byte datagram left as two fragments.
		var got int64
		testenv.Eventually(time.Second, func() bool { got = fragments.Load(); return got >= 20 })
		if got != 20 {
			t.Errorf("%d fragments reached the device, want 20 (10 datagrams in two fragments each)", got)
		}
		// The next batch goes one per message at once; smaller datagrams
		// are still coalesced.
		send(10, 1400)
		if s.nmsgs != 10 {
			t.Errorf("%d messages for 10 datagrams over the limit, want 10", s.nmsgs)
		}
		send(10, 1000)
		if s.nmsgs != 1 {
			t.Errorf("%d messages for 10 datagrams under the limit, want one GSO message", s.nmsgs)
		}
		// The limit expires with the kernel's memory of the path MTU.
		if got := ep.maxGSOSegment(scheduler.Now() + int64(gsoLimitTime)); got != 0 {
			t.Errorf("GSO limit %d after %v, want none", got, gsoLimitTime)
		}
	})
}
