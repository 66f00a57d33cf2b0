package dataplane_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"

	"github.com/mifsec/mifsec/dataplane"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// TestEngineProbeRoundTrip sends a probe request from a to b; b's engine
// answers it by itself with the SA paired with its inbound one, carrying
// what b received on that path, and a's OnProbeReply gets the reply with
// its timestamp. b's OnProbeReply never sees the request.
func TestEngineProbeRoundTrip(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(100)})
	replies := make(chan dataplane.ProbeEvent, 1)
	var bHandled atomic.Int32
	a.e = rebuild(t, a, a.out, func(ev *dataplane.ProbeEvent) { replies <- *ev })
	b.e = rebuild(t, b, b.out, func(ev *dataplane.ProbeEvent) { bHandled.Add(1) })
	run(t, a, b)
	// Some data first, so the counters are not just the probe.
	for range 10 {
		a.tun.Inject(udp(t, "10.0.0.1:1", "10.0.0.2:2", make([]byte, 100)))
	}
	receiveAll(t, b.tun, 10)
	sent := time.Now().UnixNano()
	if err := a.e.SendProbe(a.out, 0, nil, dataplane.Probe{Kind: dataplane.ProbeRequest, PathID: 0, Seq: 5, Timestamp: sent}, 300); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-replies:
		p := ev.Probe
		if p.Kind != dataplane.ProbeReply || p.Seq != 5 || p.Timestamp != sent || p.HoldMicros != 0 {
			t.Fatalf("reply %+v", p)
		}
		if p.RxPackets != 11 {
			t.Fatalf("b counted %d packets on the path, want 10 data + 1 probe", p.RxPackets)
		}
		if p.RxBytes < 10*100 {
			t.Fatalf("b counted %d bytes", p.RxBytes)
		}
		if ev.SPI != a.in.SPI() {
			t.Fatalf("the reply came in SA %#x, want a's inbound %#x", ev.SPI, a.in.SPI())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no probe reply")
	}
	if n := bHandled.Load(); n != 0 {
		t.Fatalf("b's OnProbeReply saw %d probes: requests are the engine's to answer", n)
	}
	if b.e.Stats.Probes.Load() != 1 || b.e.Stats.ProbesUnanswered.Load() != 0 || b.e.Stats.Dummies.Load() != 0 || len(b.tun.Writes()) != 0 {
		t.Fatalf("b: %d probes answered, %d unanswered, %d dummies, %d TUN writes after the data",
			b.e.Stats.Probes.Load(), b.e.Stats.ProbesUnanswered.Load(), b.e.Stats.Dummies.Load(), len(b.tun.Writes()))
	}
	if src := b.e.InboundSources(b.in.SPI()); len(src) != 1 || src[0].From != a.conn.LocalAddr() {
		t.Fatalf("b's inbound sources %+v", src)
	}
	if err := a.e.SendProbe(a.out, 9, nil, dataplane.Probe{Kind: dataplane.ProbeRequest}, 0); err == nil {
		t.Fatal("probe on a path that does not exist was sent")
	}
}

// TestEngineProbeWithoutPair: a request in an inbound SA that has no
// outbound pair is not answered, and counted.
func TestEngineProbeWithoutPair(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(100)})
	replies := make(chan dataplane.ProbeEvent, 1)
	a.e = rebuild(t, a, a.out, func(ev *dataplane.ProbeEvent) { replies <- *ev })
	b.e = rebuild(t, b, nil, nil)
	run(t, a, b)
	if err := a.e.SendProbe(a.out, 0, nil, dataplane.Probe{Kind: dataplane.ProbeRequest, Seq: 1}, 0); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 5*time.Second, "b to count the request it cannot answer", func() bool { return b.e.Stats.ProbesUnanswered.Load() == 1 })
	select {
	case ev := <-replies:
		t.Fatalf("b answered without an outbound SA: %+v", ev.Probe)
	case <-time.After(100 * time.Millisecond):
	}
	if n := b.e.Stats.Probes.Load(); n != 0 {
		t.Fatalf("b counted %d probes as answered", n)
	}
}

// rebuild replaces s's engine with one that answers probe requests with
// pair and hands replies to onReply, keeping its socket, TUN, routes and
// inbound SA.
func rebuild(t *testing.T, s *side, pair *dataplane.SA, onReply func(*dataplane.ProbeEvent)) *dataplane.Engine {
	t.Helper()
	e, err := dataplane.NewEngine(dataplane.EngineConfig{
		Queues:       []wgtun.Device{s.tun},
		Paths:        s.e.Paths(),
		OnProbeReply: onReply,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.SetRoutes(s.e.Routes())
	if err := e.AddInbound(s.in, pair, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
		t.Fatal(err)
	}
	return e
}
