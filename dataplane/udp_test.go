package dataplane

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
)

func listenLoopback(t *testing.T, noOffload bool) *UDPConn {
	t.Helper()
	c, err := ListenUDP(context.Background(), UDPConfig{Local: netip.MustParseAddrPort("127.0.0.1:0"), NoOffload: noOffload})
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
	r := rx.NewReceiver(8)
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
			got = append(got, buf[scratchLen:scratchLen+n]...)
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
