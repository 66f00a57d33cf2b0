package dataplane_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// BenchmarkPipeline runs the whole data plane between two engines over
// loopback UDP: in-memory TUN queues produce 1400-byte packets as fast as
// they are read, the sender seals and sends them, the receiver opens them
// and writes them to an in-memory TUN that counts them. With w workers each
// engine has w TUN queues and w paths (one receive worker each). It reports
// packets per second delivered end to end, per worker, and the share lost
// to full socket buffers. The transport variants carry the same packets
// in transport-mode SAs (the receiver rebuilds each IP header): compare
// with the tunnel-mode run of the same algorithm and workers.
func BenchmarkPipeline(b *testing.B) {
	for _, workers := range []int{1, 2} {
		for _, alg := range []dataplane.Algorithm{dataplane.AES256GCM16, dataplane.ChaCha20Poly1305} {
			b.Run(fmt.Sprintf("%s/workers=%d", alg, workers), func(b *testing.B) {
				benchmarkPipeline(b, alg, workers, false)
			})
			b.Run(fmt.Sprintf("%s/workers=%d/transport", alg, workers), func(b *testing.B) {
				benchmarkPipeline(b, alg, workers, true)
			})
		}
	}
}

func benchmarkPipeline(b *testing.B, alg dataplane.Algorithm, workers int, transport bool) {
	const payload = 1400
	tmpl, err := tun.UDPPacket(netip.MustParseAddrPort("10.0.0.1:1000"), netip.MustParseAddrPort("10.0.0.2:2000"), make([]byte, payload-28))
	if err != nil {
		b.Fatal(err)
	}
	key := make([]byte, alg.KeyLen())
	rand.Read(key)
	out, _ := dataplane.NewSA(dataplane.SAConfig{SPI: 0x1001, Algorithm: alg, Key: key, Transport: transport})
	in, _ := dataplane.NewSA(dataplane.SAConfig{SPI: 0x1001, Algorithm: alg, Key: key, ReplayWindow: dataplane.MaxReplayWindow, Transport: transport})
	remote, local := dataplane.AnyAddress, dataplane.AnyAddress
	if transport {
		remote, local = dataplane.Selectors{netip.MustParsePrefix("10.0.0.1/32")}, dataplane.Selectors{netip.MustParsePrefix("10.0.0.2/32")}
	}

	perQueue := uint64(b.N/workers + 1)
	var srcQueues, sinkQueues []wgtun.Device
	var sinks []*tun.Memory
	var srcPaths, sinkPaths []*dataplane.Path
	for range workers {
		src, _ := tun.NewMemory(tun.MemoryConfig{Template: tmpl, SourceLimit: perQueue})
		sink, _ := tun.NewMemory(tun.MemoryConfig{})
		srcQueues, sinkQueues, sinks = append(srcQueues, src), append(sinkQueues, sink), append(sinks, sink)
		tx, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			b.Fatal(err)
		}
		rx, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			b.Fatal(err)
		}
		srcPaths = append(srcPaths, &dataplane.Path{ID: 0, Conn: tx, Remote: mustEndpoint(b, tx, rx.LocalAddr())})
		sinkPaths = append(sinkPaths, &dataplane.Path{ID: 0, Conn: rx, Remote: mustEndpoint(b, rx, tx.LocalAddr())})
	}
	// Worker i's queue sends on path i: one engine per worker on the
	// sending side, so each queue's packets take its own socket.
	var engines []*dataplane.Engine
	for i := range workers {
		e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: srcQueues[i : i+1], Paths: srcPaths[i : i+1]})
		if err != nil {
			b.Fatal(err)
		}
		e.SetRoutes([]dataplane.Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Sources: dataplane.AnyAddress, SA: out}})
		engines = append(engines, e)
		r, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: sinkQueues[i : i+1], Paths: sinkPaths[i : i+1]})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.AddInbound(in, nil, remote, local); err != nil {
			b.Fatal(err)
		}
		engines = append(engines, r)
	}
	delivered := func() uint64 {
		var n uint64
		for _, s := range sinks {
			n += s.Stats().WrittenPackets
		}
		return n
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.SetBytes(payload)
	for _, e := range engines {
		wg.Go(func() { e.Run(ctx) })
	}
	// Measure from the first delivered packet (engines allocate their
	// buffers first) until the sources ran dry and nothing more arrives.
	deadline := time.Now().Add(10 * time.Second)
	for delivered() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("nothing delivered within 10s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.ResetTimer()
	start, first := time.Now(), delivered()
	last, lastChange := first, start
	for {
		time.Sleep(2 * time.Millisecond)
		if n := delivered(); n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > 50*time.Millisecond {
			break
		}
	}
	elapsed := lastChange.Sub(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	sent := perQueue * uint64(workers)
	pps := float64(last-first) / elapsed.Seconds()
	b.ReportMetric(pps, "pkt/s")
	b.ReportMetric(pps/float64(workers), "pkt/s/worker")
	b.ReportMetric(pps*payload*8/1e6, "Mbit/s")
	b.ReportMetric(100*float64(sent-min(sent, last))/float64(sent), "%lost")
}
