package dataplane_test

import (
	"crypto/rand"
	"sync"
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
		a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", make([]byte, 100)))
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
	// b counts the request answered after it sent the reply.
	testenv.WaitUntil(t, 5*time.Second, "b to count the probe answered", func() bool { return b.e.Stats.Probes.Load() != 0 })
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

// TestEngineProbeSA: with probe SAs (SA.SetProbeSA) a probe and its reply
// travel in them, so the data SAs' sequence numbers and replay windows do
// not move: a receiver restoring the data's order never waits for a
// probe. The probes still count in the data SA's per-path counters, the
// reply reaches OnProbeReply under the data SA's SPI, data sealed in a
// probe SA is dropped, and removing the data SA removes its probe SA.
// Probe SAs given by their configuration (SetProbeSAConfig) are made by
// the first probe each way: data and the idle sweep make none.
func TestEngineProbeSA(t *testing.T) {
	t.Run("given", func(t *testing.T) { testEngineProbeSA(t, false) })
	t.Run("made by the first probe", func(t *testing.T) { testEngineProbeSA(t, true) })
}

func testEngineProbeSA(t *testing.T, lazy bool) {
	a, b := newPair(t, pairConfig{tunB: tunRecording(100)})
	key := func() []byte {
		k := make([]byte, dataplane.AES256GCM16.KeyLen())
		rand.Read(k)
		return k
	}
	keyAB, keyBA := key(), key()
	for _, x := range []struct {
		sa       *dataplane.SA
		spi      uint32
		key      []byte
		outbound bool
	}{{a.out, 0x1101, keyAB, true}, {b.in, 0x1101, keyAB, false}, {b.out, 0x2202, keyBA, true}, {a.in, 0x2202, keyBA, false}} {
		cfg := dataplane.SAConfig{SPI: x.spi, Algorithm: dataplane.AES256GCM16, Key: x.key, Outbound: x.outbound}
		if !x.outbound {
			cfg.ReplayWindow = dataplane.MinReplayWindow
		}
		if lazy {
			if err := x.sa.SetProbeSAConfig(cfg); err != nil {
				t.Fatal(err)
			}
			continue
		}
		probe, err := dataplane.NewSA(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.sa.SetProbeSA(probe); err != nil {
			t.Fatal(err)
		}
	}
	replies := make(chan dataplane.ProbeEvent, 1)
	a.e = rebuild(t, a, a.out, func(ev *dataplane.ProbeEvent) { replies <- *ev })
	b.e = rebuild(t, b, b.out, nil)
	if n, spis := b.e.InboundSAs(), b.e.InboundEntries(); n != 1 || spis != 2 {
		t.Fatalf("b counts %d inbound SAs receiving on %d SPIs, want the data SA alone on 2 (its probe SA goes with it)", n, spis)
	}
	for spi, want := range map[uint32]bool{b.in.SPI(): true, 0x1101: true, 0x2202: false, b.in.SPI() + 1: false} {
		if got := b.e.InboundSPIInUse(spi); got != want {
			t.Errorf("b: SPI %#x in use %v, want %v", spi, got, want)
		}
	}
	run(t, a, b)
	for range 10 {
		a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", make([]byte, 100)))
	}
	receiveAll(t, b.tun, 10)
	if lazy {
		a.e.ReleaseIdleCiphers()
		b.e.ReleaseIdleCiphers()
		for name, sa := range map[string]*dataplane.SA{"a's outbound": a.out, "a's inbound": a.in, "b's outbound": b.out, "b's inbound": b.in} {
			if sa.ProbeSAMade() {
				t.Errorf("%s SA's probe SA was made before any probe", name)
			}
			if sa.ProbeSPI() == 0 {
				t.Errorf("%s SA has no probe SPI", name)
			}
		}
	}
	if err := a.e.SendProbe(a.out, 0, nil, dataplane.Probe{Kind: dataplane.ProbeRequest, Seq: 7}, 200); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-replies:
		if ev.Probe.Kind != dataplane.ProbeReply || ev.Probe.Seq != 7 || ev.Probe.RxPackets != 11 {
			t.Fatalf("reply %+v, want seq 7 with 10 data + 1 probe received", ev.Probe)
		}
		if ev.SPI != a.in.SPI() {
			t.Fatalf("the reply is reported in SA %#x, want the data SA %#x", ev.SPI, a.in.SPI())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no probe reply")
	}
	probeAB := a.out.ProbeSA()
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"a's data SA sent", a.out.LastSequence(), 10},
		{"a's probe SA sent", probeAB.LastSequence(), 1},
		{"b's data SA received up to", b.in.ReplayWindow().Top(), 10},
		{"b's probe SA received up to", b.in.ProbeSA().ReplayWindow().Top(), 1},
		{"b's data SA sent", b.out.LastSequence(), 0},
		{"b's probe SA sent", b.out.ProbeSA().LastSequence(), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s %d, want %d", c.what, c.got, c.want)
		}
	}

	// Data sealed with a probe SA: the receiver drops it.
	routes := a.e.Routes()
	for i := range routes {
		routes[i].SA = probeAB
	}
	a.e.SetRoutes(routes)
	a.tun.Inject(udpPacket(t, "10.0.0.1:1", "10.0.0.2:2", make([]byte, 100)))
	testenv.WaitUntil(t, 5*time.Second, "b to drop data in a probe SA", func() bool {
		return b.e.Stats.Drops.Get(dataplane.DropBadNextHeader) == 1
	})
	if n := len(b.tun.Writes()); n != 0 {
		t.Fatalf("b wrote %d packets that came in a probe SA", n)
	}

	b.e.RemoveInbound(b.in.SPI())
	if n := b.e.InboundEntries(); n != 0 {
		t.Fatalf("b still receives on %d SPIs after its data SA was removed", n)
	}
}

// TestSetProbeSARefuses: a probe SA needs an SPI of its own and no probe
// SA of its own, and an inbound SA with one needs an outbound pair with
// one to answer with.
func TestSetProbeSARefuses(t *testing.T) {
	newSA := func(spi uint32) *dataplane.SA {
		sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: spi, Algorithm: dataplane.AES128GCM16, Key: make([]byte, dataplane.AES128GCM16.KeyLen())})
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	data, probe, chained := newSA(0x1000), newSA(0x1001), newSA(0x1002)
	if err := chained.SetProbeSA(newSA(0x1003)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		probe *dataplane.SA
	}{{"nil", nil}, {"itself", data}, {"same SPI", newSA(0x1000)}, {"with a probe SA", chained}} {
		if err := data.SetProbeSA(c.probe); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	// The same refusals for a probe SA made later from its configuration,
	// and what it would be made with checked now.
	key := make([]byte, dataplane.AES128GCM16.KeyLen())
	for _, c := range []struct {
		name string
		cfg  dataplane.SAConfig
	}{
		{"same SPI", dataplane.SAConfig{SPI: 0x1000, Algorithm: dataplane.AES128GCM16, Key: key}},
		{"SPI 0", dataplane.SAConfig{SPI: 0, Algorithm: dataplane.AES128GCM16, Key: key}},
		{"another algorithm", dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES256GCM16, Key: make([]byte, dataplane.AES256GCM16.KeyLen())}},
		{"ESN where the data SA has none", dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES128GCM16, Key: key, ESN: true}},
		{"transport mode", dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES128GCM16, Key: key, Transport: true}},
		{"short key", dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES128GCM16, Key: key[:16]}},
		{"outbound with a window", dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES128GCM16, Key: key, Outbound: true, ReplayWindow: 64}},
		{"window too small", dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES128GCM16, Key: key, ReplayWindow: 8}},
	} {
		if err := data.SetProbeSAConfig(c.cfg); err == nil {
			t.Errorf("configuration, %s: accepted", c.name)
		}
	}
	if data.ProbeSPI() != 0 || data.ProbeSA() != nil {
		t.Fatalf("refused probe SAs left SPI %#x", data.ProbeSPI())
	}
	if err := chained.SetProbeSAConfig(dataplane.SAConfig{SPI: 0x1004, Algorithm: dataplane.AES128GCM16, Key: key}); err == nil {
		t.Error("a second probe SA was accepted")
	}
	if err := data.SetProbeSA(probe); err != nil {
		t.Fatal(err)
	}
	e, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{newMemoryTUN(t)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddInbound(data, newSA(0x2000), dataplane.AnyAddress, dataplane.AnyAddress); err == nil {
		t.Error("an inbound SA with a probe SA was installed with a pair that has none")
	}
	sealer, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x3000, Algorithm: dataplane.AES128GCM16, Key: key, Outbound: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddInbound(sealer, nil, dataplane.AnyAddress, dataplane.AnyAddress); err == nil {
		t.Error("an SA made to seal only was installed to receive")
	}
	pair := newSA(0x2000)
	if err := pair.SetProbeSA(newSA(0x2001)); err != nil {
		t.Fatal(err)
	}
	if err := e.AddInbound(newSA(0x1001), nil, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
		t.Fatal(err)
	}
	if err := e.AddInbound(data, pair, dataplane.AnyAddress, dataplane.AnyAddress); err == nil {
		t.Error("a probe SA whose SPI is in use was installed")
	}
}

// TestProbeSAMadeOnce: cores that seal and open their first probes at the
// same moment all get the one probe SA; a probe SA made from its
// configuration opens what one given whole seals; Wipe wipes a probe SA
// made, and one not made yet never is.
func TestProbeSAMadeOnce(t *testing.T) {
	key := make([]byte, dataplane.AES256GCM16.KeyLen())
	rand.Read(key)
	newData := func(spi uint32, outbound bool) *dataplane.SA {
		cfg := dataplane.SAConfig{SPI: spi, Algorithm: dataplane.AES256GCM16, Key: make([]byte, dataplane.AES256GCM16.KeyLen()), Outbound: outbound}
		sa, err := dataplane.NewSA(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	in := newData(0x3000, false)
	if err := in.SetProbeSAConfig(dataplane.SAConfig{SPI: 0x3001, Algorithm: dataplane.AES256GCM16, Key: key, ReplayWindow: 128}); err != nil {
		t.Fatal(err)
	}
	sealer, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x3001, Algorithm: dataplane.AES256GCM16, Key: key, Outbound: true})
	if err != nil {
		t.Fatal(err)
	}
	clear(key) // the SAs keep their own copies
	got := make([]*dataplane.SA, 16)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = in.ProbeSA() })
	}
	wg.Wait()
	for i, p := range got {
		if p == nil || p != got[0] {
			t.Fatalf("core %d got probe SA %p, core 0 %p", i, p, got[0])
		}
	}
	if p := got[0]; p.SPI() != 0x3001 || p.ReplayWindow() == nil || p.ReplayWindow().Size() != 128 || p.ProbeSPI() != 0 {
		t.Fatalf("made probe SA: SPI %#x, window %v, probe SPI %#x", p.SPI(), p.ReplayWindow(), p.ProbeSPI())
	}
	buf := make([]byte, dataplane.Headroom+20+dataplane.Tailroom)
	copy(buf[dataplane.Headroom:], []byte{0x45, 0, 0, 20, 9})
	pkt, err := sealer.Seal(buf, 20, 59)
	if err != nil {
		t.Fatal(err)
	}
	rx := make([]byte, dataplane.Headroom+len(pkt))
	copy(rx[dataplane.Headroom-dataplane.AES256GCM16.HeaderLen():], pkt)
	if plain, nh, err := in.ProbeSA().Open(rx, len(pkt)); err != nil || nh != 59 || plain[4] != 9 {
		t.Fatalf("the probe SA made from its configuration opened %v (next header %d): %v", plain, nh, err)
	}

	in.Wipe()
	if p := in.ProbeSA(); p != got[0] || !p.CipherExpanded() {
		t.Fatal("Wipe dropped the probe SA made, or its cipher")
	}
	out := newData(0x4000, true)
	if err := out.SetProbeSAConfig(dataplane.SAConfig{SPI: 0x4001, Algorithm: dataplane.AES256GCM16, Key: make([]byte, 36), Outbound: true}); err != nil {
		t.Fatal(err)
	}
	out.Wipe()
	if out.ProbeSA() != nil || out.ProbeSAMade() || out.ProbeSPI() != 0x4001 {
		t.Fatalf("wiped before its first probe: probe SA %v, SPI %#x; want none made, the SPI kept", out.ProbeSA(), out.ProbeSPI())
	}
}
