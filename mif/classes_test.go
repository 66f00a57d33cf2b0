package mif

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
)

// TestClassPicker: traffic classes pick per packet — SIP copies on every
// path (redundant), the rest by the default policy (which has no verified
// path yet, so the fallback path) — without allocating.
func TestClassPicker(t *testing.T) {
	classes, err := scheduler.ParseRules("udp/5060:redundant", scheduler.PolicyOffload)
	if err != nil {
		t.Fatal(err)
	}
	pp := newPeerPaths(peerPathsConfig{Engine: &dataplane.Engine{}, Policy: scheduler.PolicyOffload, Classes: classes})
	for id := range scheduler.PathID(2) {
		if err := pp.sched.AddPath(scheduler.PathConfig{ID: id, Kind: scheduler.KindWLAN, Tier: int(id)}, scheduler.Now()); err != nil {
			t.Fatal(err)
		}
	}
	pp.SetFallback(1)
	cp, ok := pp.groupPicker.(scheduler.PacketPicker)
	if !ok {
		t.Fatalf("the group's picker %T does not choose by packet", pp.groupPicker)
	}
	sip, err := tun.UDPPacket(netip.MustParseAddrPort("10.0.0.1:5060"), netip.MustParseAddrPort("10.0.0.2:5060"), []byte("INVITE"))
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := tun.UDPPacket(netip.MustParseAddrPort("10.0.0.1:4000"), netip.MustParseAddrPort("10.0.0.2:4001"), make([]byte, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if got := cp.PickPacket(sip, 100); got != scheduler.SetOf(0, 1) {
		t.Errorf("SIP went to %v, want copies on both paths", got)
	}
	if got := cp.PickPacket(bulk, 1100); got != scheduler.SetOf(1) {
		t.Errorf("bulk went to %v, want the fallback path 1 (offload has no verified path yet)", got)
	}
	if n := testing.AllocsPerRun(100, func() { cp.PickPacket(sip, 100); cp.PickPacket(bulk, 1100) }); n != 0 {
		t.Errorf("%.1f allocations per pick", n)
	}
	// Without classes the group's picker is the plain one.
	plain := newPeerPaths(peerPathsConfig{Engine: &dataplane.Engine{}, Policy: scheduler.PolicyOffload})
	if _, ok := plain.groupPicker.(scheduler.PacketPicker); ok {
		t.Error("a peer without classes classifies every packet")
	}
}

// TestTickPace: the conductor applies the scheduler's timeouts every 5 ms
// while a path is being verified (or carries data, or is in doubt), and
// only every 20 ms once every path is idle and healthy, so that a
// gateway's idle clients cost few wake-ups.
func TestTickPace(t *testing.T) {
	pp := newPeerPaths(peerPathsConfig{Engine: &dataplane.Engine{}, Policy: scheduler.PolicyOffload})
	now := scheduler.Now()
	if err := pp.sched.AddPath(scheduler.PathConfig{ID: 0, Kind: scheduler.KindWLAN}, now); err != nil {
		t.Fatal(err)
	}
	if got := pp.tickEvery(pp.sched.Quiet()); got != tickInterval {
		t.Fatalf("a path being verified: tick every %v, want %v", got, tickInterval)
	}
	for seq := uint32(1); seq <= 5; seq++ {
		now += int64(100 * time.Millisecond)
		if err := pp.sched.ProbeSent(0, seq, now, scheduler.Counters{}); err != nil {
			t.Fatal(err)
		}
		if err := pp.sched.ProbeReply(0, scheduler.ProbeReply{Seq: seq}, now+int64(10*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if got := pp.tickEvery(pp.sched.Quiet()); got != idleTickInterval {
		t.Fatalf("an idle verified path: tick every %v, want %v (probe interval %v)", got, idleTickInterval, pp.sched.ProbeInterval(0))
	}
}
