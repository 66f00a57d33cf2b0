package dataplane_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// delayRelay forwards UDP datagrams to dst after a fixed delay: a slow
// path on loopback.
func delayRelay(t *testing.T, dst netip.AddrPort, delay time.Duration) netip.AddrPort {
	t.Helper()
	in, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	out, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	in.SetReadBuffer(8 << 20)
	type dgram struct {
		b  []byte
		at time.Time
	}
	queue := make(chan dgram, 100000)
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			b := make([]byte, 2048)
			n, err := in.Read(b)
			if err != nil {
				close(queue)
				return
			}
			queue <- dgram{b[:n], time.Now().Add(delay)}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for d := range queue {
			time.Sleep(time.Until(d.at))
			out.Write(d.b)
		}
	}()
	t.Cleanup(func() {
		in.Close()
		<-done
		<-done
		out.Close()
	})
	return netip.MustParseAddrPort(in.LocalAddr().String())
}

// restoreOrderOverTwoPaths makes s's inbound SA restore order over two
// paths 3 ms apart, with waits long enough that a busy machine makes no
// gap time out.
func restoreOrderOverTwoPaths(t *testing.T, s *side) {
	t.Helper()
	if err := s.e.RestoreOrder(s.in.SPI(), scheduler.ResequencerConfig{MinWait: 200 * time.Millisecond, MaxWait: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := s.e.SetOrderDelays(s.in.SPI(), 3*time.Millisecond, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.e.SetOrderPaths(s.in.SPI(), 2); err != nil {
		t.Fatal(err)
	}
}

// injectNumbered injects n UDP packets into s's TUN device, each carrying
// its index, pausing after every `every`.
func injectNumbered(t *testing.T, s *side, n, every int, pause time.Duration) {
	t.Helper()
	for i := range n {
		payload := make([]byte, 64)
		binary.BigEndian.PutUint32(payload, uint32(i))
		s.tun.Inject(udpPacket(t, "10.0.0.1:1000", "10.0.0.2:2000", payload))
		if i%every == every-1 {
			time.Sleep(pause)
		}
	}
}

// TestRestoreOrderAcrossPaths sends one SA's packets alternately over a
// direct path and a path 3 ms slower. Without resequencing the receiver
// sees a quarter or more of them out of order; with it, under 1% (none on
// an idle machine) and all of them.
func TestRestoreOrderAcrossPaths(t *testing.T) {
	for _, restore := range []bool{false, true} {
		name := map[bool]string{false: "arrival order", true: "restored"}[restore]
		t.Run(name, func(t *testing.T) {
			a, b := newPair(t, pairConfig{tunB: tun.MemoryConfig{RecordWrites: 5000}})
			slow := delayRelay(t, b.conn.LocalAddr(), 3*time.Millisecond)
			group := dataplane.NewPathGroup(&alternate{},
				dataplane.GroupMember{Path: 0},
				dataplane.GroupMember{Path: 0, Remote: mustEndpoint(t, a.conn, slow)})
			a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
			if restore {
				restoreOrderOverTwoPaths(t, b)
			}
			run(t, a, b)
			const n = 2000
			// A pause every 20 keeps them inside the socket buffers.
			injectNumbered(t, a, n, 20, time.Millisecond)
			var got [][]byte
			timeout := time.After(10 * time.Second)
		collect:
			for len(got) < n {
				select {
				case p := <-b.tun.Writes():
					got = append(got, p)
				case <-timeout:
					stats, held, _ := b.e.OrderStats(b.in.SPI())
					t.Fatalf("received %d of %d packets; resequencer %+v, %d held; rx %d; too old %d replayed %d; b path rx %d", len(got), n, stats, held, b.e.Stats.RxPackets.Load(), b.e.Stats.Drops.Get(dataplane.DropTooOld), b.e.Stats.Drops.Get(dataplane.DropReplayed), b.e.Paths()[0].Stats.RxPackets.Load())
					break collect
				}
			}
			inversions := 0
			last := -1
			seen := map[int]bool{}
			for _, p := range got {
				i := int(binary.BigEndian.Uint32(p[28:]))
				if i < last {
					inversions++
				}
				last = max(last, i)
				seen[i] = true
			}
			if len(seen) != n {
				stats, held, _ := b.e.OrderStats(b.in.SPI())
				time.Sleep(100 * time.Millisecond)
				t.Fatalf("received %d distinct packets of %d; %d more writes; %+v held %d; drops %v", len(seen), n, len(b.tun.Writes()), stats, held, b.e.Stats.Drops.Get(dataplane.DropTooOld))
			}
			stats, held, ok := b.e.OrderStats(b.in.SPI())
			t.Logf("%d of %d packets out of order; resequencer %+v, held %d", inversions, n, stats, held)
			switch {
			case !restore && inversions < n/4:
				t.Fatalf("the slow path reordered only %d packets: the test shows nothing", inversions)
			case restore && uint64(inversions) > stats.Late:
				t.Fatalf("%d packets out of order but only %d counted late", inversions, stats.Late)
			case restore && inversions >= n/20:
				// On an idle machine none is late: nothing is lost, so a
				// gap waits for the slow path, not for the timeout (long
				// here so that a stalled relay goroutine on a loaded
				// machine makes no packet late). 5% is a broken
				// resequencer.
				t.Fatalf("%d packets out of order with resequencing", inversions)
			case restore && (!ok || stats.Held == 0 || held != 0):
				t.Fatalf("resequencer did not work as expected: %+v, %d still held", stats, held)
			}
		})
	}
}

// TestRestoreOrderMidFlow: order is restored on an SA that already
// carries traffic (a gateway does so once a client announces its second
// path). A packet still missing then, in flight on the slower path, is
// waited for: the packets after it are held until it comes, not written
// before it and it after them.
func TestRestoreOrderMidFlow(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(100)})
	run(t, b)
	sender, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.conn.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	// a's engine does not run: its outbound SA seals each packet with the
	// sequence number the test chooses, and the test sends it.
	send := func(seqs ...uint64) {
		t.Helper()
		for _, seq := range seqs {
			inner := udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", []byte{byte(seq)})
			buf := make([]byte, dataplane.Headroom+len(inner)+dataplane.Tailroom)
			copy(buf[dataplane.Headroom:], inner)
			pkt, err := a.out.SealWithSequence(buf, len(inner), dataplane.NextHeaderIPv4, seq)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sender.Write(pkt); err != nil {
				t.Fatal(err)
			}
		}
	}
	seqOf := func(pkt []byte) uint64 { return uint64(pkt[len(pkt)-1]) }
	// Before: 1-10 and 12 arrive and are written as they come; 11 is on
	// its way.
	send(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12)
	receiveAll(t, b.tun, 11)
	if err := b.e.RestoreOrder(b.in.SPI(), scheduler.ResequencerConfig{MaxWait: 5 * time.Second, ExpectedPaths: 2}); err != nil {
		t.Fatal(err)
	}
	send(13, 14)
	select {
	case p := <-b.tun.Writes():
		t.Fatalf("packet %d written while 11 is missing", seqOf(p))
	case <-time.After(200 * time.Millisecond):
	}
	send(11)
	var got []uint64
	for _, p := range receiveAll(t, b.tun, 3) {
		got = append(got, seqOf(p))
	}
	if got[0] != 11 || got[1] != 13 || got[2] != 14 {
		t.Fatalf("written in the order %v, want [11 13 14]", got)
	}
	if st, _, _ := b.e.OrderStats(b.in.SPI()); st.Late != 0 {
		t.Fatalf("resequencer counted %d late packets: %+v", st.Late, st)
	}
}

// TestRestoreOrderWritesThroughOneQueue: an SA that restores order writes
// every packet through one TUN queue, whichever path (and so whichever
// receive worker, each with its own queue) brought it. The kernel steers a
// flow out of a multi-queue TUN through the queue that last wrote its
// other direction: written through two queues, a TCP flow's
// acknowledgements moved its data between two outbound workers, which
// sealed it in either order.
func TestRestoreOrderWritesThroughOneQueue(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tun.MemoryConfig{RecordWrites: 2000}, queuesB: 2})
	addSecondPath(t, a, b)
	// Path 0 (to the worker writing through queue 0) is the slower: its
	// packets fill the gaps, and its worker releases what waited for them.
	slow := delayRelay(t, b.conn.LocalAddr(), 3*time.Millisecond)
	group := dataplane.NewPathGroup(&alternate{},
		dataplane.GroupMember{Path: 0, Remote: mustEndpoint(t, a.conn, slow)}, dataplane.GroupMember{Path: 1})
	a.e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Sources: dataplane.AnyAddress, SA: a.out, Group: group}})
	restoreOrderOverTwoPaths(t, b)
	run(t, a, b)
	const n = 1000
	// A pause every 50 starts a new round of gaps.
	injectNumbered(t, a, n, 50, 5*time.Millisecond)
	got := make([]int, len(b.queues))
	timeout := time.After(10 * time.Second)
	for got[0]+got[1] < n {
		select {
		case <-b.queues[0].Writes():
			got[0]++
		case <-b.queues[1].Writes():
			got[1]++
		case <-timeout:
			t.Fatalf("received %v of %d packets", got, n)
		}
	}
	paths := b.e.Paths()
	if paths[0].Stats.RxPackets.Load() == 0 || paths[1].Stats.RxPackets.Load() == 0 {
		t.Fatalf("the packets did not come over both paths: %d and %d", paths[0].Stats.RxPackets.Load(), paths[1].Stats.RxPackets.Load())
	}
	if want := int(b.in.SPI() % 2); got[want] != n {
		t.Errorf("written through queue 0: %d, queue 1: %d; want all %d through queue %d", got[0], got[1], n, want)
	}
}

// TestGrowReplayWindow: an inbound SA's window and its probe SA's start
// small and GrowReplayWindow makes both their full size, whether the
// probe SA was made before or is made after; an unknown SPI is an error.
func TestGrowReplayWindow(t *testing.T) {
	for _, probeMadeFirst := range []bool{false, true} {
		e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{newMemoryTUN(t)}})
		if err != nil {
			t.Fatal(err)
		}
		key := make([]byte, dataplane.AES256GCM16.KeyLen())
		in, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x4000, Algorithm: dataplane.AES256GCM16, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if err := in.SetProbeSAConfig(dataplane.SAConfig{SPI: 0x4001, Algorithm: dataplane.AES256GCM16, Key: key, ReplayWindow: 1024, ReplayWindowStart: 128}); err != nil {
			t.Fatal(err)
		}
		out, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x5000, Algorithm: dataplane.AES256GCM16, Key: key, Outbound: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := out.SetProbeSAConfig(dataplane.SAConfig{SPI: 0x5001, Algorithm: dataplane.AES256GCM16, Key: key, Outbound: true}); err != nil {
			t.Fatal(err)
		}
		if err := e.AddInbound(in, out, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
			t.Fatal(err)
		}
		if probeMadeFirst {
			if got := in.ProbeSA().ReplayWindow().Size(); got != 128 {
				t.Fatalf("the probe SA's window starts at %d packets, want 128", got)
			}
		}
		if got := in.ReplayWindow().Size(); got >= dataplane.DefaultReplayWindow {
			t.Fatalf("a new SA's window is already %d packets", got)
		}
		if err := e.GrowReplayWindow(in.SPI()); err != nil {
			t.Fatal(err)
		}
		if got := in.ReplayWindow().Size(); got != dataplane.DefaultReplayWindow {
			t.Errorf("window %d packets after GrowReplayWindow, want %d", got, dataplane.DefaultReplayWindow)
		}
		if got := in.ProbeSA().ReplayWindow().Size(); got != 1024 {
			t.Errorf("probe SA made first %v: its window %d packets after GrowReplayWindow, want 1024", probeMadeFirst, got)
		}
		if err := e.GrowReplayWindow(in.SPI() + 7); err == nil {
			t.Fatal("growing the window of an unknown SPI succeeded")
		}
	}
}

// TestReplayWindowStart: an SA's window starts where its config says,
// within bounds; an outbound SA takes no start.
func TestReplayWindowStart(t *testing.T) {
	key := make([]byte, dataplane.AES256GCM16.KeyLen())
	for _, tc := range []struct {
		window, start, want int // want 0: refused
		outbound            bool
	}{
		{0, 0, 480, false},
		{1024, 0, 480, false},
		{128, 0, 128, false},
		{1024, 128, 128, false},
		{0, 4064, 4064, false},
		{1024, 1024, 1024, false},
		{1024, 2048, 0, false},
		{1024, 16, 0, false},
		{0, 128, 0, true},
	} {
		sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x4000, Algorithm: dataplane.AES256GCM16, Key: key,
			ReplayWindow: tc.window, ReplayWindowStart: tc.start, Outbound: tc.outbound})
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("window %d starting at %d (outbound %v): accepted", tc.window, tc.start, tc.outbound)
		case tc.want != 0 && err != nil:
			t.Errorf("window %d starting at %d: %v", tc.window, tc.start, err)
		case tc.want != 0 && sa.ReplayWindow().Size() != tc.want:
			t.Errorf("window %d starting at %d: starts at %d", tc.window, tc.start, sa.ReplayWindow().Size())
		}
	}
}
