package linkemu

import (
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/internal/testenv"
)

// BenchmarkThroughput measures iperf3 TCP from A to B through the emulator
// and reports it in Gbit/s and as a ratio to a plain veth between two
// namespaces measured in the same run:
//
//	go test -run '^$' -bench Throughput ./bench/linkemu
func BenchmarkThroughput(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.RequireCommand(b, "iperf3")
	// The plain path: A and B joined by one veth, no emulator.
	plain := &topo{
		nsA:   testenv.NewNamedNetns(b, "plainA"),
		nsB:   testenv.NewNamedNetns(b, "plainB"),
		addrA: netip.MustParseAddr("10.98.0.1"),
		addrB: netip.MustParseAddr("10.98.0.2"),
	}
	testenv.Veth(b, plain.nsA, plain.nsB, netip.PrefixFrom(plain.addrA, 24), netip.PrefixFrom(plain.addrB, 24))
	const secs = 3
	base := plain.iperfReceived(b, secs)
	b.Logf("plain veth: %.2f Gbit/s", base/1e9)
	for _, bc := range []struct {
		name  string
		shape Shape
	}{
		{"passthrough", Shape{}},
		{"delay", Shape{Delay: 1e6}},
		{"per-packet", Shape{Rate: 40e9}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := newTopo(b, Config{AtoB: bc.shape, BtoA: bc.shape})
			var sum float64
			for range b.N {
				sum += tp.iperfReceived(b, secs)
			}
			got := sum / float64(b.N)
			b.ReportMetric(got/1e9, "Gbit/s")
			b.ReportMetric(got/base, "ratio-to-veth")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkIngest measures the receiving half of the per-packet path
// (decision, segmentation, copy into the arena) without sockets.
func BenchmarkIngest(b *testing.B) {
	h, super := frameSpec{payload: 62000, flags: 0x10}.build()
	_, small := frameSpec{payload: 1448, flags: 0x10}.build()
	shaped := Shape{Rate: 10e9, Loss: 0.001}
	for _, bc := range []struct {
		name  string
		shape Shape
		buf   []byte
		step  int64 // between frames; on a trace slow enough that nothing is tail-dropped
	}{
		{"packet", shaped, frameBuf(vnetHdr{}, small), 50000},
		{"super-frame-cut", shaped, frameBuf(h, super), 50000},
		{"super-frame-whole", Shape{}, frameBuf(h, super), 50000},
		// The trace carries about 1.3 packets per millisecond.
		{"packet-trace", Shape{Trace: longTrace(b), Loss: 0.001}, frameBuf(vnetHdr{}, small), 1e6},
		{"super-frame-cut-trace", Shape{Trace: longTrace(b), Loss: 0.001}, frameBuf(h, super), 45e6},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := testDirection(b, Config{AtoB: bc.shape}, -1)
			s := d.shapeNow()
			b.SetBytes(int64(len(bc.buf)))
			b.ReportAllocs()
			b.ResetTimer()
			var now int64
			for range b.N {
				now += bc.step
				d.ingest(s, now, bc.buf, 0, 0)
				drain(d)
			}
			b.StopTimer()
			if st := d.stats(now); bc.shape.Trace != nil && st.QueueDrops+st.ErrorDrops > 0 {
				b.Errorf("%d of %d packets dropped at the queue or the buffer: the benchmark measures drops", st.QueueDrops+st.ErrorDrops, st.Packets)
			}
		})
	}
}
