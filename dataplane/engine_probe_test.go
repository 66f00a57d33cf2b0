package dataplane_test

import (
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// TestEngineProbeRoundTrip sends a probe request from a to b; b's OnProbe
// sees it with what b received on that path, answers with a reply carrying
// those counters, and a's OnProbe gets the reply with its timestamp.
func TestEngineProbeRoundTrip(t *testing.T) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(100)})
	replies := make(chan dataplane.ProbeEvent, 1)
	bErr := make(chan error, 1)
	a.e = rebuild(t, a, func(ev *dataplane.ProbeEvent) { replies <- *ev })
	b.e = rebuild(t, b, func(ev *dataplane.ProbeEvent) {
		if ev.Probe.Kind != dataplane.ProbeRequest {
			return
		}
		r := ev.Probe
		r.Kind, r.RxPackets, r.RxBytes, r.HoldMicros = dataplane.ProbeReply, ev.Received.Packets, ev.Received.Bytes, 1
		bErr <- b.e.SendProbe(b.out, ev.Path.ID, nil, r, 0)
	})
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
		if p.Kind != dataplane.ProbeReply || p.Seq != 5 || p.Timestamp != sent || p.HoldMicros != 1 {
			t.Fatalf("reply %+v", p)
		}
		if p.RxPackets != 11 {
			t.Fatalf("b counted %d packets on the path, want 10 data + 1 probe", p.RxPackets)
		}
		if p.RxBytes < 10*100 {
			t.Fatalf("b counted %d bytes", p.RxBytes)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no probe reply")
	}
	if err := <-bErr; err != nil {
		t.Fatal(err)
	}
	if b.e.Stats.Probes.Load() != 1 || b.e.Stats.Dummies.Load() != 0 || len(b.tun.Writes()) != 0 {
		t.Fatalf("b: %d probes, %d dummies, %d TUN writes after the data", b.e.Stats.Probes.Load(), b.e.Stats.Dummies.Load(), len(b.tun.Writes()))
	}
	if src := b.e.InboundSources(b.in.SPI()); len(src) != 1 || src[0].From != a.conn.LocalAddr() {
		t.Fatalf("b's inbound sources %+v", src)
	}
	if err := a.e.SendProbe(a.out, 9, nil, dataplane.Probe{Kind: dataplane.ProbeRequest}, 0); err == nil {
		t.Fatal("probe on a path that does not exist was sent")
	}
}

// rebuild replaces s's engine with one that has OnProbe set, keeping its
// socket, TUN, routes and inbound SA.
func rebuild(t *testing.T, s *side, onProbe func(*dataplane.ProbeEvent)) *dataplane.Engine {
	t.Helper()
	e, err := dataplane.NewEngine(dataplane.EngineConfig{
		Queues:  []wgtun.Device{s.tun},
		Paths:   s.e.Paths(),
		OnProbe: onProbe,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.SetRoutes(s.e.Routes())
	if err := e.AddInbound(s.in, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
		t.Fatal(err)
	}
	return e
}
