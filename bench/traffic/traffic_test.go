package traffic

import (
	"context"
	"encoding/binary"
	"math"
	"net"
	"strings"
	"testing"
	"time"
)

// loopback returns a listener on 127.0.0.1 and a Dial function for it,
// MPTCP on both when mptcp is true.
func loopback(t *testing.T, mptcp bool) (net.Listener, func(ctx context.Context) (net.Conn, error)) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(mptcp)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var d net.Dialer
	d.SetMultipathTCP(mptcp)
	addr := ln.Addr().String()
	return ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

func TestBulkOverLoopback(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		streams int
		mptcp   bool
	}{
		{Up, 1, false},
		{Down, 3, false},
		{Up, 2, true},
	} {
		name := tc.dir + "-" + strings.Repeat("s", tc.streams)
		if tc.mptcp {
			name += "-mptcp"
		}
		t.Run(name, func(t *testing.T) {
			ln, dial := loopback(t, tc.mptcp)
			b := &Bulk{Streams: tc.streams, Direction: tc.dir, Duration: 500 * time.Millisecond, Dial: dial, Listener: ln}
			res, err := b.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Incomplete != "" {
				t.Fatalf("incomplete: %s", res.Incomplete)
			}
			if res.Bytes <= 0 || res.Mbps <= 0 {
				t.Fatalf("moved %d bytes at %g Mbit/s", res.Bytes, res.Mbps)
			}
			if res.Streams != tc.streams || res.Direction != tc.dir {
				t.Errorf("result for %d streams %s, want %d %s", res.Streams, res.Direction, tc.streams, tc.dir)
			}
			// About 5 intervals of 100 ms (the sampler stops with the
			// receivers, shortly after the senders).
			if n := len(res.Intervals); n < 4 || n > 10 {
				t.Errorf("%d goodput intervals for 500 ms, want about 5", n)
			}
			var sum float64
			for _, in := range res.Intervals {
				sum += in.Mbps * 0.1 * 1e6 / 8
			}
			if sum < 0.8*float64(res.Bytes) || sum > 1.2*float64(res.Bytes) {
				t.Errorf("the intervals add up to %.0f bytes, the receivers got %d", sum, res.Bytes)
			}
			last := res.Progress[len(res.Progress)-1]
			// The senders' acknowledged bytes follow what the receivers read
			// (the last acknowledgements may still be on their way; the hello, SYN
			// and FIN count too).
			if float64(last.Acked) < 0.95*float64(res.Bytes) || last.Acked > uint64(res.Bytes)+uint64(8*tc.streams) {
				t.Errorf("senders report %d bytes acknowledged, receivers got %d", last.Acked, res.Bytes)
			}
			if res.RTTMeanMs <= 0 {
				t.Errorf("no RTT from TCP_INFO: %+v", res)
			}
			if tc.mptcp && !res.MultipathTCP {
				t.Logf("MPTCP not negotiated on this kernel (fallback to TCP): %+v", res)
			}
		})
	}
}

func TestBulkDialFailure(t *testing.T) {
	ln, _ := loopback(t, false)
	b := &Bulk{Streams: 2, Direction: Up, Duration: time.Second, Listener: ln,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", "127.0.0.1:1") // nothing listens
		}}
	if _, err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "connect stream 0") {
		t.Fatalf("Run = %v, want a connect error", err)
	}
	// The listener is usable again afterwards.
	b2 := &Bulk{Streams: 1, Direction: Up, Duration: 200 * time.Millisecond, Listener: ln,
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}}
	if res, err := b2.Run(context.Background()); err != nil || res.Bytes == 0 {
		t.Fatalf("second run on the same listener: %v, %+v", err, res)
	}
}

func TestBulkRejectsBadSpec(t *testing.T) {
	ln, dial := loopback(t, false)
	for _, b := range []*Bulk{
		{Streams: 0, Direction: Up, Duration: time.Second, Dial: dial, Listener: ln},
		{Streams: 1, Direction: "sideways", Duration: time.Second, Dial: dial, Listener: ln},
		{Streams: 1, Direction: Up, Duration: 0, Dial: dial, Listener: ln},
		{Streams: 1, Direction: Up, Duration: time.Second, Listener: ln},
	} {
		if _, err := b.Run(context.Background()); err == nil {
			t.Errorf("Run(%+v) = nil error", b)
		}
	}
}

func TestStall(t *testing.T) {
	// Progress every 10 ms; nothing acknowledged from 1.00 to 1.35 s, a
	// shorter gap from 2.0 to 2.1 s; retransmissions at 1.2 and 3.0 s.
	r := &Result{}
	acked := uint64(0)
	for i := 0; i <= 400; i++ {
		tt := float64(i) / 100
		stalled := tt > 1.0 && tt < 1.35 || tt > 2.0 && tt < 2.1
		if !stalled {
			acked += 1000
		}
		var retrans uint32
		if tt >= 1.2 {
			retrans = 5
		}
		if tt >= 3.0 {
			retrans = 9
		}
		r.Progress = append(r.Progress, Progress{T: tt, Acked: acked, Retransmits: retrans})
	}
	st, ok := r.Stall(0.95, 4)
	if !ok {
		t.Fatal("no stall found")
	}
	if st.Seconds < 0.34 || st.Seconds > 0.36 || st.StartS != 1.0 || !st.Recovered {
		t.Errorf("stall = %+v, want 0.35 s from 1.0 s, recovered", st)
	}
	// Retransmissions until a second after the stall: the 5 at 1.2 s, not
	// the 4 more at 3.0 s.
	if st.Retransmits != 5 {
		t.Errorf("retransmits = %d, want 5", st.Retransmits)
	}
	// The window after the first stall sees only the second.
	st, _ = r.Stall(1.5, 4)
	if st.Seconds < 0.09 || st.Seconds > 0.11 {
		t.Errorf("stall after 1.5 s = %+v, want 0.1 s", st)
	}
	// A flow that never resumes: stalled to the window's end.
	r2 := &Result{Progress: []Progress{{T: 0, Acked: 0}, {T: 0.5, Acked: 10}, {T: 1, Acked: 10}, {T: 2, Acked: 10}}}
	st, _ = r2.Stall(0.6, 2)
	if st.Recovered || st.Seconds != 1.4 {
		t.Errorf("stall of a dead flow = %+v, want 1.4 s, not recovered", st)
	}
	if _, ok := r2.Stall(3, 4); ok {
		t.Error("a window after the transfer has a stall")
	}
}

func TestUDPStream(t *testing.T) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	u := &UDP{Sender: tx, Receiver: rx, Rate: 2e6, Size: 1000, Duration: 500 * time.Millisecond, Grace: 200 * time.Millisecond}
	res, err := u.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// 2 Mbit/s of 1000-byte datagrams for 0.5 s: 125.
	if res.Sent != 125 {
		t.Errorf("sent %d datagrams, want 125", res.Sent)
	}
	if res.Received == 0 || res.Received > res.Sent {
		t.Errorf("received %d of %d", res.Received, res.Sent)
	}
	if res.LossPercent < 0 || res.LossPercent > 100 {
		t.Errorf("loss %g%%", res.LossPercent)
	}
	if _, err := (&UDP{Sender: tx, Receiver: rx, Rate: 1e6, Size: 4, Duration: time.Second}).Run(context.Background()); err == nil {
		t.Error("a 4-byte size was accepted")
	}
}

func TestParseUDPHeader(t *testing.T) {
	b := make([]byte, 20)
	binary.BigEndian.PutUint32(b, udpMagic)
	binary.BigEndian.PutUint64(b[4:], 42)
	if seq, ok := parseUDPHeader(b); !ok || seq != 42 {
		t.Errorf("parseUDPHeader = %d, %v; want 42, true", seq, ok)
	}
	if _, ok := parseUDPHeader(b[:udpHeaderLen-1]); ok {
		t.Error("a short datagram parsed")
	}
	b[0] ^= 1
	if _, ok := parseUDPHeader(b); ok {
		t.Error("a datagram with another magic parsed")
	}
	// The receiver's per-datagram work allocates nothing.
	if allocs := testing.AllocsPerRun(100, func() { parseUDPHeader(b) }); allocs != 0 {
		t.Errorf("parseUDPHeader allocates %v times", allocs)
	}
}

func FuzzParseUDPHeader(f *testing.F) {
	b := make([]byte, udpHeaderLen)
	binary.BigEndian.PutUint32(b, udpMagic)
	f.Add(b)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, ok := parseUDPHeader(b)
		if ok && (len(b) < udpHeaderLen || binary.BigEndian.Uint32(b) != udpMagic || binary.BigEndian.Uint64(b[4:]) != seq) {
			t.Fatalf("accepted % x", b)
		}
	})
}

func TestLowGoodput(t *testing.T) {
	// 10 Mbit/s on average; from 2.0 to 3.0 s only a trickle (0.5 and
	// 1.5 Mbit/s), a single slow interval at 5.0 s.
	r := &Result{Mbps: 10}
	for k := 1; k <= 80; k++ {
		tt := float64(k) / 10
		mbps := 12.0
		switch {
		case tt > 2.0 && tt <= 3.0:
			mbps = 0.5 + float64(k%2)
		case tt > 4.9 && tt <= 5.0:
			mbps = 0
		}
		r.Intervals = append(r.Intervals, Interval{T: tt, Mbps: mbps})
	}
	s, start := r.LowGoodput(1.5, 8, 0.2)
	if math.Abs(s-1.0) > 1e-9 || math.Abs(start-2.0) > 1e-9 {
		t.Errorf("LowGoodput = %v s from %v, want 1.0 s from 2.0", s, start)
	}
	// From 2.5 s: the part of the trickle after the event.
	if s, _ := r.LowGoodput(2.5, 8, 0.2); math.Abs(s-0.5) > 1e-9 {
		t.Errorf("LowGoodput from 2.5 s = %v, want 0.5", s)
	}
	if s, _ := r.LowGoodput(3.5, 8, 0.2); math.Abs(s-0.1) > 1e-9 {
		t.Errorf("LowGoodput from 3.5 s = %v, want the single 0.1 s interval", s)
	}
	if s, _ := (&Result{}).LowGoodput(0, 8, 0.2); s != 0 {
		t.Errorf("a transfer without goodput has a low stretch of %v", s)
	}
}
