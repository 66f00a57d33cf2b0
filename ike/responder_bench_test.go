package ike

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// BenchmarkResponderClients establishes N clients (PSK, X25519, one
// Child SA each, IPv4 and IPv6 leases) through one Responder over the
// in-memory wire, then lets the initiators go, so that what stays on the
// heap is the gateway's: it reports the heap bytes the Responder holds per
// client (HeapInuse after a GC, against the same before the clients) and
// the rate at which the clients were set up (IKE SAs per second, one
// client after another). The handler holds nothing; the data plane's share
// of a real gateway (mif) is not in it. docs/gateway-scale.md (Memory per
// client) has the figures; MIFSEC_HEAP_PROFILE=FILE writes the heap
// profile with the clients held to FILE.N. N is 1,000, 10,000 and
// 100,000; the last takes some 35 s and 350 MB of heap, so pick sizes with
// -bench (e.g. 'BenchmarkResponderClients/clients=1000$').
func BenchmarkResponderClients(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			for b.Loop() {
				perClient, rate := responderClients(b, n)
				b.ReportMetric(perClient, "heapB/client")
				b.ReportMetric(rate, "IKE_SAs/s")
			}
		})
	}
}

// responderClients sets up n clients against a new Responder and returns
// the heap bytes per client it holds and the setup rate.
func responderClients(b *testing.B, n int) (perClient, rate float64) {
	quiet := slog.New(slog.DiscardHandler)
	psk := []byte("a pre-shared key of some length")
	w := &memWire{gw: netip.MustParseAddrPort("192.0.2.1:500"), sessions: map[netip.Addr]*Session{}}
	w.runResponder(b, ResponderConfig{PSK: psk, Logger: quiet,
		Pools: []netip.Prefix{netip.MustParsePrefix("10.64.0.0/10"), netip.MustParsePrefix("fd03::/64")}}, &fuzzHandler{})
	before := heapInuse()
	start := time.Now()
	for i := range n {
		// Each client its own source address and identity: the per-source
		// and per-identity limits stay out of the way.
		addr := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String()
		s, _ := w.newClient(b, addr, SessionConfig{PSK: psk, Logger: quiet, LocalID: mustID(b, fmt.Sprintf("client-%d.fleet.bench", i))})
		connect(b, s, true)
		w.mu.Lock()
		delete(w.sessions, netip.MustParseAddr(addr)) // the initiator is not the gateway's memory
		w.mu.Unlock()
	}
	elapsed := time.Since(start)
	after := heapInuse()
	if path := os.Getenv("MIFSEC_HEAP_PROFILE"); path != "" {
		writeHeapProfile(b, fmt.Sprintf("%s.%d", path, n))
	}
	if got := len(clients(nil, w)); got != n {
		b.Fatalf("the responder has %d clients, want %d", got, n)
	}
	return float64(int64(after)-int64(before)) / float64(n), float64(n) / elapsed.Seconds()
}

// writeHeapProfile writes the heap profile, with the clients held, to
// path: the profile -memprofile writes is taken after the Responder
// stopped.
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatalf("writing the heap profile: %v", err)
	}
}

// heapInuse returns the heap in use after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkResponderTick: the once-a-second tick of a Responder holding N
// established, quiet clients whose handler reads the data plane's counters
// as mif's gateway does (ESP received, sequence numbers: a lock and a map
// lookup each). "quiet": a second in which no client's timer is due, the
// common one, whose cost does not grow with N; "all due": every client
// visited, what each second cost when the tick walked them all (ns/visit
// is its share per client). With liveness checks every 30 s a client is
// visited every 15 s while its ESP flows (timers.go).
func BenchmarkResponderTick(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			quiet := slog.New(slog.DiscardHandler)
			psk := []byte("a pre-shared key of some length")
			w := &memWire{gw: netip.MustParseAddrPort("192.0.2.1:500"), sessions: map[netip.Addr]*Session{}}
			w.runResponder(b, ResponderConfig{PSK: psk, Logger: quiet, DPD: 30 * time.Second,
				Pools: []netip.Prefix{netip.MustParsePrefix("10.64.0.0/10"), netip.MustParsePrefix("fd03::/64")}}, &countingHandler{in: map[uint32]uint64{}})
			for i := range n {
				addr := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String()
				s, _ := w.newClient(b, addr, SessionConfig{PSK: psk, Logger: quiet, LocalID: mustID(b, fmt.Sprintf("client-%d.fleet.bench", i))})
				connect(b, s, true)
				w.mu.Lock()
				delete(w.sessions, netip.MustParseAddr(addr))
				w.mu.Unlock()
			}
			ctx := context.Background()
			w.r.do(ctx, w.r.tick) // the first reads of every client's counters
			b.Run("quiet", func(b *testing.B) {
				for b.Loop() {
					w.r.do(ctx, w.r.tick)
				}
			})
			// Every client due at once: what each second cost before
			// the timers, and what a visit costs (ns/op over N).
			b.Run("all due", func(b *testing.B) {
				for b.Loop() {
					w.r.do(ctx, func() {
						for _, c := range w.r.clients {
							c.due = instantOf(time.Now().Add(-time.Hour))
						}
						heap.Init(&w.r.timers)
						w.r.tick()
					})
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/visit")
			})
		})
	}
}

// countingHandler is a ResponderHandler with the data plane's counters
// behind a lock, as mif.Gateway keeps them.
type countingHandler struct {
	fuzzHandler
	mu sync.Mutex
	in map[uint32]uint64 // ESP packets received, by inbound SPI
}

func (h *countingHandler) InstallChild(c *RemoteClient, k *ChildSA, first bool) error {
	h.mu.Lock()
	h.in[k.InSPI] = 0
	h.mu.Unlock()
	return h.fuzzHandler.InstallChild(c, k, first)
}

func (h *countingHandler) Received(_ *RemoteClient, k *ChildSA) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.in[k.InSPI]++ // ESP keeps coming: no liveness check is due
	return h.in[k.InSPI]
}

func (h *countingHandler) Sequences(k *ChildSA) (sent, received uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.in[k.InSPI], h.in[k.InSPI]
}

// BenchmarkResponderLiveness: one client's liveness check, an empty
// INFORMATIONAL exchange, through the in-memory wire: what each of a
// gateway's held clients costs every --dpd interval (100,000 clients
// checking every 10 s are 10,000 of these a second). The client's side
// (seal the request, open the answer) is in the figure too.
func BenchmarkResponderLiveness(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	psk := []byte("a pre-shared key of some length")
	w := &memWire{gw: netip.MustParseAddrPort("192.0.2.1:500"), sessions: map[netip.Addr]*Session{}}
	w.runResponder(b, ResponderConfig{PSK: psk, Logger: quiet,
		Pools: []netip.Prefix{netip.MustParsePrefix("10.64.0.0/10")}}, &fuzzHandler{})
	s, _ := w.newClient(b, "198.18.0.1", SessionConfig{PSK: psk, Logger: quiet})
	connect(b, s, true)
	ctx := context.Background()
	policy := RetransmitPolicy{Timeout: 5 * time.Second, Backoff: 1, Tries: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.exchange(ctx, s.sa, wire.INFORMATIONAL, nil, policy); err != nil {
			b.Fatal(err)
		}
	}
}
