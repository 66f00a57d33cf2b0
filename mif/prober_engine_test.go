package mif

import (
	"context"
	"crypto/rand"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// TestProberOverEngines runs two real engines over loopback, each with a
// prober: every request is answered by the other side's engine, and
// each side's samples show a round trip and the peer's counters.
func TestProberOverEngines(t *testing.T) {
	type end struct {
		conn    *udp.Conn
		e       *dataplane.Engine
		out, in *dataplane.SA
		prober  *pathProber
		mu      sync.Mutex
		samples []probeSample
	}
	aOut, aIn, bOut, bIn := saPair(t)
	a, b := &end{out: aOut, in: aIn}, &end{out: bOut, in: bIn}
	for _, x := range []*end{a, b} {
		c, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			t.Fatal(err)
		}
		x.conn = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, x := range [][2]*end{{a, b}, {b, a}} {
		me, peer := x[0], x[1]
		ep, err := me.conn.NewEndpoint(peer.conn.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		m, err := tun.NewMemory(tun.MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		e, err := dataplane.NewEngine(dataplane.EngineConfig{
			Queues:       []wgtun.Device{m},
			Paths:        []*dataplane.Path{{ID: 0, Conn: me.conn, Remote: ep}},
			OnProbeReply: func(ev *dataplane.ProbeEvent) { me.prober.HandleReply(ev) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.AddInbound(me.in, me.out, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
			t.Fatal(err)
		}
		me.e = e
		me.prober = newPathProber(e, pathProberConfig{
			Outbound: func() *dataplane.SA { return me.out },
			Interval: func(scheduler.PathID) time.Duration { return 20 * time.Millisecond },
			Sample: func(s probeSample) {
				me.mu.Lock()
				me.samples = append(me.samples, s)
				me.mu.Unlock()
			},
		})
	}
	for _, x := range []*end{a, b} {
		wg.Go(func() { x.e.Run(ctx) })
		wg.Go(func() { x.prober.Run(ctx) })
		x.prober.AddPath(0, nil)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.mu.Lock()
		b.mu.Lock()
		na, nb := len(a.samples), len(b.samples)
		a.mu.Unlock()
		b.mu.Unlock()
		if na >= 10 && nb >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("samples after 5 s: a %d, b %d", na, nb)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for name, x := range map[string]*end{"a": a, "b": b} {
		x.mu.Lock()
		for i, s := range x.samples {
			if s.Lost || s.RTT <= 0 || s.RTT > time.Second {
				t.Errorf("%s sample %d: %+v", name, i, s)
			}
			// The peer counted at least this request and every earlier one.
			if s.PeerRxPackets < uint64(s.Seq) {
				t.Errorf("%s sample %d: peer received %d packets by request %d", name, i, s.PeerRxPackets, s.Seq)
			}
		}
		x.mu.Unlock()
		if n := x.e.Stats.ProbesUnanswered.Load(); n != 0 {
			t.Errorf("%s: %d requests not answered", name, n)
		}
	}
}

// saPair returns the SAs of a tunnel between a and b with fresh keys:
// SPI 0x1001 carries a to b, 0x2002 b to a.
func saPair(t *testing.T) (aOut, aIn, bOut, bIn *dataplane.SA) {
	t.Helper()
	keyAB, keyBA := make([]byte, 36), make([]byte, 36)
	rand.Read(keyAB)
	rand.Read(keyBA)
	newSA := func(spi uint32, key []byte) *dataplane.SA {
		sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: spi, Algorithm: dataplane.AES256GCM16, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	return newSA(0x1001, keyAB), newSA(0x2002, keyBA), newSA(0x2002, keyBA), newSA(0x1001, keyAB)
}
