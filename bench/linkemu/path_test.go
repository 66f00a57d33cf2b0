package linkemu

import (
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testDirection is an A-to-B direction under cfg that sends into the
// socket out (-1: never sends).
func testDirection(t testing.TB, cfg Config, out int) *direction {
	t.Helper()
	l := &Link{done: make(chan struct{}), base: time.Now(), log: slog.Default()}
	l.cfg.Store(&cfg)
	d := newDirection(l, "test", true, -1, out, 8<<20, newShaper(1, 2))
	l.dirs = [2]*direction{d, d}
	return d
}

// frameBuf is a received buffer: virtio-net header, then the frame.
func frameBuf(h vnetHdr, frame []byte) []byte {
	b := make([]byte, vnetHdrLen+len(frame))
	h.encode(b)
	copy(b[vnetHdrLen:], frame)
	return b
}

func drain(d *direction) {
	d.q.publish()
	d.q.pull()
	for d.q.waiting() > 0 {
		d.q.done(d.q.pop())
	}
}

func TestIngestCounts(t *testing.T) {
	h, super := frameSpec{payload: 4000, flags: 0x10}.build()
	_, small := frameSpec{payload: 100, flags: 0x10}.build()
	superBuf, smallBuf := frameBuf(h, super), frameBuf(vnetHdr{}, small)
	for _, tc := range []struct {
		name                         string
		shape                        Shape
		buf                          []byte
		flags                        int32
		pkttype                      uint8
		packets, queued, errs, bytes uint64
	}{
		{"small", Shape{}, smallBuf, 0, unix.PACKET_OTHERHOST, 1, 1, 0, 152},
		{"super passthrough", Shape{Delay: time.Millisecond}, superBuf, 0, unix.PACKET_HOST, 3, 1, 0, 4000 + 3*52},
		{"super segmented", Shape{Rate: 1e9}, superBuf, 0, unix.PACKET_HOST, 3, 3, 0, 4000 + 3*52},
		{"own frame", Shape{}, smallBuf, 0, unix.PACKET_OUTGOING, 0, 0, 0, 0},
		{"truncated", Shape{}, smallBuf, unix.MSG_TRUNC, unix.PACKET_HOST, 1, 0, 1, 0},
		{"runt", Shape{}, smallBuf[:vnetHdrLen+5], 0, unix.PACKET_HOST, 1, 0, 1, 0},
		{"bad super", Shape{Rate: 1e9}, frameBuf(vnetHdr{gsoType: gsoTCPv4, gsoSize: 1000}, small[:30]), 0, unix.PACKET_HOST, 1, 0, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDirection(t, Config{AtoB: tc.shape}, -1)
			d.ingest(d.shapeNow(), 0, tc.buf, tc.flags, tc.pkttype)
			d.q.publish()
			d.q.pull()
			st := d.stats(0)
			if st.Packets != tc.packets || uint64(d.q.waiting()) != tc.queued || st.ErrorDrops != tc.errs || st.Bytes != tc.bytes {
				t.Errorf("packets %d queued %d errors %d bytes %d, want %d %d %d %d",
					st.Packets, d.q.waiting(), st.ErrorDrops, st.Bytes, tc.packets, tc.queued, tc.errs, tc.bytes)
			}
		})
	}
}

func TestIngestZeroAllocs(t *testing.T) {
	h, super := frameSpec{payload: 60000, flags: 0x10}.build()
	_, small := frameSpec{payload: 1000, flags: 0x10}.build()
	superBuf, smallBuf := frameBuf(h, super), frameBuf(vnetHdr{}, small)
	shaped := Shape{Rate: 1e9, Loss: 0.01, Jitter: time.Millisecond, Burst: &GilbertElliott{P: 0.01, R: 0.5, LossBad: 1}}
	for _, tc := range []struct {
		name  string
		shape Shape
		buf   []byte
	}{
		{"small shaped", shaped, smallBuf},
		{"super segmented", shaped, superBuf},
		{"super passthrough", Shape{Delay: 10 * time.Millisecond}, superBuf},
		{"down", Shape{Down: true}, superBuf},
		{"small trace", Shape{Trace: longTrace(t), Loss: 0.01, Delay: 10 * time.Millisecond}, smallBuf},
		{"super segmented trace", Shape{Trace: longTrace(t), QueueBytes: 1 << 20}, superBuf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDirection(t, Config{AtoB: tc.shape}, -1)
			s := d.shapeNow()
			now := int64(0)
			allocs := testing.AllocsPerRun(200, func() {
				now += int64(time.Millisecond)
				d.ingest(s, now, tc.buf, 0, unix.PACKET_HOST)
				drain(d)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per frame, want 0", allocs)
			}
			if d.stats(now).Packets == 0 {
				t.Errorf("nothing counted")
			}
		})
	}
}

func socketpair(t testing.TB) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	for _, fd := range fds {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
			t.Fatalf("SO_SNDBUF: %v", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
			t.Fatalf("SO_RCVBUF: %v", err)
		}
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// TestFlushSendsInDeadlineOrder runs the sending half against a socketpair:
// due packets leave by deadline, in one sendmmsg batch, without allocating.
func TestFlushSendsInDeadlineOrder(t *testing.T) {
	a, b := socketpair(t)
	d := testDirection(t, Config{}, a)
	for i, dl := range []int64{3, 1, 2, 1 << 60} {
		buf, pos, ok := d.q.reserve(vnetHdrLen + 20)
		if !ok {
			t.Fatal("reserve failed")
		}
		buf[vnetHdrLen] = byte(i)
		d.q.commit(pos, len(buf), dl, 20, 1)
	}
	d.q.publish()
	d.q.pull()
	d.flush()
	var got []byte
	rb := make([]byte, 100)
	for range 3 {
		n, _, err := unix.Recvfrom(b, rb, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("receiving sent frame %d: %v", len(got), err)
		}
		if n != vnetHdrLen+20 {
			t.Fatalf("frame of %d bytes", n)
		}
		got = append(got, rb[vnetHdrLen])
	}
	if want := []byte{1, 2, 0}; string(got) != string(want) {
		t.Errorf("sent %v, want %v", got, want)
	}
	if _, _, err := unix.Recvfrom(b, rb, unix.MSG_DONTWAIT); err == nil {
		t.Errorf("a packet not yet due was sent")
	}
	if st := d.stats(0); st.DeliveredPackets != 3 || st.DeliveredBytes != 60 || d.q.waiting() != 1 {
		t.Errorf("delivered %d packets %d bytes, %d waiting", st.DeliveredPackets, st.DeliveredBytes, d.q.waiting())
	}

	_, small := frameSpec{payload: 1000}.build()
	smallBuf := frameBuf(vnetHdr{}, small)
	allocs := testing.AllocsPerRun(100, func() {
		for range 32 {
			d.ingest(d.shapeNow(), 0, smallBuf, 0, unix.PACKET_HOST)
		}
		d.q.publish()
		d.q.pull()
		d.flush()
		for range 32 {
			_, _ = unix.Read(b, rb)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch sent, want 0", allocs)
	}
}

// FuzzIngest feeds arbitrary received buffers (virtio-net header and
// frame) through the per-packet path under a shaping and a forwarding
// configuration: every frame is counted, nothing panics, and what is
// queued fits in the arena.
func FuzzIngest(f *testing.F) {
	for _, s := range []frameSpec{{payload: 3000, flags: 0x19}, {v6: true, payload: 2000}, {udp: true, payload: 2800}, {payload: 10}} {
		h, frame := s.build()
		f.Add(frameBuf(h, frame), int32(0), uint8(unix.PACKET_HOST))
	}
	shaped := testDirection(f, Config{AtoB: Shape{Rate: 1e9, Loss: 0.1, Jitter: time.Millisecond}}, -1)
	plain := testDirection(f, Config{AtoB: Shape{Delay: time.Millisecond}}, -1)
	f.Fuzz(func(t *testing.T, buf []byte, flags int32, pkttype uint8) {
		for _, d := range []*direction{shaped, plain} {
			before := d.stats(0)
			d.ingest(d.shapeNow(), 0, buf, flags, pkttype)
			after := d.stats(0)
			counted := after.LossDrops + after.QueueDrops + after.DownDrops + after.ErrorDrops -
				before.LossDrops - before.QueueDrops - before.DownDrops - before.ErrorDrops
			d.q.publish()
			d.q.pull()
			queued := uint64(0)
			for d.q.waiting() > 0 {
				e := d.q.pop()
				if len(d.q.bytes(e)) > len(buf)+vnetHdrLen {
					t.Fatalf("queued %d bytes for a %d-byte buffer", len(d.q.bytes(e)), len(buf))
				}
				queued += uint64(e.pkts)
				d.q.done(e)
			}
			if in := after.Packets - before.Packets; in != counted+queued {
				t.Fatalf("%d packets in, %d dropped + %d queued", in, counted, queued)
			}
		}
	})
}
