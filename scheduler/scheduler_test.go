package scheduler

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// roundTrip sends probe seq on path id at sent, with the sender's counters
// tx, and feeds its reply r (seq filled in) at replied.
func roundTrip(t testing.TB, s *Scheduler, id PathID, seq uint32, tx Counters, sent, replied int64, r ProbeReply) {
	t.Helper()
	if err := s.ProbeSent(id, seq, sent, tx); err != nil {
		t.Fatal(err)
	}
	r.Seq = seq
	if err := s.ProbeReply(id, r, replied); err != nil {
		t.Fatal(err)
	}
}

// verify drives a path through probing with replies every interval whose
// counters show rate bytes per second delivered; it returns the new time.
func verify(t testing.TB, s *Scheduler, id PathID, now int64, rtt time.Duration, rate float64, rounds int) int64 {
	t.Helper()
	const interval = 30 * ms
	info, _ := s.Info(id, now)
	var tx Counters
	if info.RTTSamples > 0 {
		tx = Counters{Packets: uint64(info.RTTSamples) * 1000, Bytes: uint64(info.RTTSamples) * 1000000}
	}
	for i := range rounds {
		seq := uint32(info.RTTSamples + i + 1)
		roundTrip(t, s, id, seq, tx, now, now+int64(rtt), ProbeReply{Rx: tx})
		b := uint64(rate * float64(interval) / 1e9)
		tx.Bytes += b
		tx.Packets += b / 1000
		now += interval
	}
	return now
}

// fill feeds a verified path rounds replies that came back behind a
// queue of 20 ms, with counters showing rate bytes per second delivered:
// saturated samples, after which the path counts as filled (its rate is
// its capacity) for minRTTWindow. It returns the new time.
func fill(t testing.TB, s *Scheduler, id PathID, now int64, rtt time.Duration, rate float64, rounds int) int64 {
	t.Helper()
	now = queuedReplies(t, s, id, now, rtt, rate, rounds)
	// A path whose samples jumped to rate fills once they stop growing
	// (rateEstimator: the first saturated sample must not still ramp up).
	for i := 0; i < rampSamples && !s.paths[id].filled; i++ {
		now = queuedReplies(t, s, id, now, rtt, rate, 1)
	}
	if !s.paths[id].filled {
		t.Fatalf("path %d: not filled after %d replies behind a queue", id, rounds+rampSamples)
	}
	return now
}

// queuedReplies feeds a verified path rounds replies, one every 30 ms,
// that came back behind a queue of 20 ms, with counters showing rate
// bytes per second delivered (at least minSaturatingPackets a round).
// Whether they fill the path is the scheduler's call (fill requires it).
// It returns the new time.
func queuedReplies(t testing.TB, s *Scheduler, id PathID, now int64, rtt time.Duration, rate float64, rounds int) int64 {
	t.Helper()
	const interval = 30 * ms
	info, _ := s.Info(id, now)
	b := uint64(rate * float64(interval) / 1e9)
	tx := s.paths[id].lastTx
	for i := range rounds {
		tx.Bytes += b
		tx.Packets += max(b/1000, minSaturatingPackets)
		seq := uint32(info.RTTSamples + i + 1)
		roundTrip(t, s, id, seq, tx, now, now+int64(rtt+20*time.Millisecond), ProbeReply{Rx: tx})
		now += interval
	}
	return now
}

func TestAddPathErrors(t *testing.T) {
	s := New(Config{})
	if err := s.AddPath(PathConfig{ID: MaxPaths}, 0); !errors.Is(err, ErrPathID) {
		t.Errorf("id %d: %v, want ErrPathID", MaxPaths, err)
	}
	if err := s.AddPath(PathConfig{ID: 3}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPath(PathConfig{ID: 3}, 0); !errors.Is(err, ErrPathExists) {
		t.Errorf("duplicate: %v, want ErrPathExists", err)
	}
	if err := s.ProbeReply(3, ProbeReply{Seq: 9}, 0); !errors.Is(err, ErrUnknownProbe) {
		t.Errorf("reply to nothing: %v, want ErrUnknownProbe", err)
	}
	if err := s.ProbeSent(4, 1, 0, Counters{}); !errors.Is(err, ErrNoPath) {
		t.Errorf("unknown path: %v, want ErrNoPath", err)
	}
	if err := s.RemovePath(3); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPath(PathConfig{ID: 3}, 0); err != nil {
		t.Errorf("re-adding a removed path: %v", err)
	}
}

// TestUnverifiedPathCarriesNothing: a path carries data only once probes
// verified it — except copies under the redundant policy, which cost
// nothing the other paths need.
func TestUnverifiedPathCarriesNothing(t *testing.T) {
	s := New(Config{})
	if err := s.AddPath(PathConfig{ID: 0, Kind: KindWLAN, Tier: 1}, 0); err != nil {
		t.Fatal(err)
	}
	for pol := range numPolicies {
		set := s.Decide(pol, 1000, 0)
		switch {
		case pol == PolicyRedundant && set != SetOf(0):
			t.Errorf("redundant: copies on %v, want the unverified path too", set)
		case pol != PolicyRedundant && !set.Empty():
			t.Errorf("%v: unverified path chosen: %v", pol, set)
		}
	}
	now := verify(t, s, 0, 0, 10*time.Millisecond, 1e6, 3)
	if info, _ := s.Info(0, now); info.State != StateActive {
		t.Fatalf("state %v after 3 replies, want active", info.State)
	}
	for pol := range numPolicies {
		if set := s.Decide(pol, 1000, now); set != SetOf(0) {
			t.Errorf("%v: %v, want {0}", pol, set)
		}
	}
}

func TestPolicies(t *testing.T) {
	newS := func(cfg Config) (*Scheduler, int64) {
		s := New(cfg)
		// 0: ethernet tier 0, 1: WLAN tier 1, 2: cellular tier 2.
		var now int64
		for id, k := range []Kind{KindEthernet, KindWLAN, KindCellular} {
			if err := s.AddPath(PathConfig{ID: PathID(id), Kind: k, Tier: DefaultTier(k)}, 0); err != nil {
				t.Fatal(err)
			}
		}
		for id, r := range []float64{mbit(100), mbit(50), mbit(20)} {
			now = max(now, verify(t, s, PathID(id), 0, time.Duration(10*(id+1))*time.Millisecond, r, 12))
		}
		return s, now
	}
	fail := func(s *Scheduler, id PathID, now int64) int64 {
		for i := range 4 {
			if err := s.ProbeSent(id, 1000+uint32(i), now, Counters{}); err != nil {
				t.Fatal(err)
			}
			now += 300 * ms
			s.Tick(now)
		}
		return now
	}
	t.Run("single prefers the best tier and fails over", func(t *testing.T) {
		s, now := newS(Config{})
		if set := s.Decide(PolicySingle, 1000, now); set != SetOf(0) {
			t.Fatalf("single: %v, want {0}", set)
		}
		now = fail(s, 0, now)
		if set := s.Decide(PolicySingle, 1000, now); set != SetOf(1) {
			t.Fatalf("single after path 0 failed: %v, want {1}", set)
		}
		if id, ok := s.Pick(PolicySingle, 1000, now); !ok || id != 1 {
			t.Fatalf("Pick single: %d %v", id, ok)
		}
	})
	t.Run("offload uses the best tier only", func(t *testing.T) {
		s, now := newS(Config{})
		for i := range 1000 {
			if set := s.Decide(PolicyOffload, 1400, now+int64(i)*1000); set != SetOf(0) {
				t.Fatalf("offload packet %d: %v, want {0}", i, set)
			}
		}
		now = fail(s, 0, now)
		if set := s.Decide(PolicyOffload, 1400, now); set != SetOf(1) {
			t.Fatalf("offload after tier 0 failed: %v, want {1}", set)
		}
	})
	t.Run("redundant sends on all", func(t *testing.T) {
		s, now := newS(Config{})
		if set := s.Decide(PolicyRedundant, 1000, now); set != SetOf(0, 1, 2) {
			t.Fatalf("redundant: %v", set)
		}
	})
	t.Run("aggregate splits by rate", func(t *testing.T) {
		s, now := newS(Config{})
		// The paths are full: a queue shows in their round trips, so the
		// picker trusts their measured rates (no probe boost).
		for id := range PathID(3) {
			info, _ := s.Info(id, now)
			seq := uint32(info.RTTSamples + 1)
			// No counters: a round trip only, no rate sample.
			roundTrip(t, s, id, seq, Counters{}, now, now+int64(info.MinRTT)+int64(20*time.Millisecond), ProbeReply{})
		}
		count := map[PathID]int{}
		// Offer more than the paths carry (their rates × the startup gain
		// 2) for 100 ms: the rates set the split.
		const size = 1250
		step := int64(float64(size) / mbit(600) * 1e9)
		for i := range 6000 {
			id, ok := s.Pick(PolicyAggregate, size, now+int64(i)*step)
			if !ok {
				t.Fatal("no path")
			}
			count[id]++
		}
		t.Logf("split %v", count)
		// 100:50:20 Mbit/s, less what the delays take at the start.
		if !(count[0] > count[1] && count[1] > count[2] && count[2] > 6000*15/170) {
			t.Errorf("split %v: want more on faster paths, some on every path", count)
		}
	})
}

func TestProbingShareForUnknownRate(t *testing.T) {
	s := New(Config{})
	for id := range PathID(2) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	now := verify(t, s, 0, 0, 10*time.Millisecond, mbit(50), 10)
	// Path 1 verified but never carried data: its rate is unknown.
	for i := range 3 {
		roundTrip(t, s, 1, uint32(i+1), Counters{}, now, now+int64(5*time.Millisecond), ProbeReply{})
	}
	const n = 3200
	share := func() (n1 int) {
		for i := range n {
			if id, _ := s.Pick(PolicyAggregate, 1000, now+int64(i)*1000); id == 1 {
				n1++
			}
		}
		return n1
	}
	// Path 0 carries what it is given without a queue: path 1 is not
	// needed, and its packets would make the receiver hold path 0's.
	if n1 := share(); n1 != 0 {
		t.Errorf("path with unknown rate got %d of %d packets while the other showed no queue, want 0", n1, n)
	}
	// Path 0's round trip shows a queue: path 1 gets its share.
	now = verify(t, s, 0, now, 40*time.Millisecond, mbit(50), 2)
	if n1 := share(); n1 != n/s.Config().ProbeShare {
		t.Errorf("path with unknown rate got %d of %d packets, want exactly 1/%d", n1, n, s.Config().ProbeShare)
	}
}

func TestHotPathAllocations(t *testing.T) {
	s := New(Config{})
	for id := range PathID(2) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			t.Fatal(err)
		}
		verify(t, s, id, 0, 10*time.Millisecond, mbit(50), 5)
	}
	now := int64(time.Second)
	p := NewClassPicker(NewFallbackPicker(s, PolicyAggregate, 0), nil)
	for pol := range numPolicies {
		if a := testing.AllocsPerRun(1000, func() { now += 1000; s.Decide(pol, 1400, now) }); a != 0 {
			t.Errorf("Decide(%v): %v allocations", pol, a)
		}
	}
	if a := testing.AllocsPerRun(1000, func() { p.Pick(1400); p.PickSet(1400); p.PickPacket(nil, 1400) }); a != 0 {
		t.Errorf("ClassPicker: %v allocations", a)
	}
	bound, err := ParseRules("udp:redundant@eth1, tcp:aggregate@eth0>eth1", PolicyAggregate)
	if err != nil {
		t.Fatal(err)
	}
	bp := NewClassPicker(NewFallbackPicker(s, PolicyAggregate, 0), bound)
	bp.SetPathInterfaces(map[PathID]string{0: "eth0", 1: "eth1"}, nil)
	udp, tcp := ipv4("10.0.0.1", 17, 0, 1, 2, 0), ipv4("10.0.0.1", 6, 0, 1, 2, 0)
	if a := testing.AllocsPerRun(1000, func() { bp.PickPacket(udp, 1400); bp.PickPacket(tcp, 1400) }); a != 0 {
		t.Errorf("ClassPicker with classes bound to interfaces: %v allocations", a)
	}
}

// TestConcurrentPick runs the per-packet methods from several goroutines
// while the control plane updates estimates (run with -race).
func TestConcurrentPick(t *testing.T) {
	s := New(Config{})
	for id := range PathID(3) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			t.Fatal(err)
		}
		verify(t, s, id, 0, 10*time.Millisecond, mbit(50), 5)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 20000 {
				set := s.Decide(Policy(w%int(numPolicies)), 1400, int64(i)*1000)
				if set.Empty() {
					t.Error("no path")
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			s.Tick(int64(i) * ms)
			_ = s.ProbeSent(PathID(i%3), uint32(100+i), int64(i)*ms, Counters{})
		}
	})
	wg.Wait()
}

func TestPathSet(t *testing.T) {
	s := SetOf(0, 5, 63, 64)
	if s.Len() != 3 || !s.Has(63) || s.Has(64) || s.String() != "{0,5,63}" {
		t.Fatalf("set %v len %d", s, s.Len())
	}
	if f, ok := s.First(); !ok || f != 0 {
		t.Fatalf("first %d", f)
	}
	if s.Without(0).With(7).String() != "{5,7,63}" {
		t.Fatalf("with/without: %v", s.Without(0).With(7))
	}
	var ids []PathID
	for c := s; !c.Empty(); {
		ids = append(ids, c.Next())
	}
	if len(ids) != 3 || ids[2] != 63 {
		t.Fatalf("iteration %v", ids)
	}
}

func TestParsePolicyAndKind(t *testing.T) {
	for _, n := range []string{"single", "offload", "aggregate", "redundant", " Aggregate "} {
		if _, err := ParsePolicy(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	if _, err := ParsePolicy("roundrobin"); err == nil {
		t.Error("roundrobin accepted")
	}
	for in, want := range map[string]Kind{"wifi": KindWLAN, "LTE": KindCellular, "ethernet": KindEthernet, "": KindOther} {
		if k, err := ParseKind(in); err != nil || k != want {
			t.Errorf("%q: %v %v", in, k, err)
		}
	}
	if _, err := ParseKind("carrier-pigeon"); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := ParseKind("wlan0"); err == nil {
		t.Error("ParseKind accepted an interface name")
	}
	for k := KindOther; k <= KindVirtual; k++ {
		if got, err := ParseKind(k.String()); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), got, err)
		}
	}
}

func TestTickBoundsBacklog(t *testing.T) {
	s := New(Config{MaxBacklog: 100 * time.Millisecond})
	for id := range PathID(2) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	var now int64
	for id := range PathID(2) {
		now = max(now, verify(t, s, id, 0, 10*time.Millisecond, mbit(10), 8))
		now = max(now, fill(t, s, id, now, 10*time.Millisecond, mbit(10), 3))
	}
	// 10 s worth of data in an instant.
	for range 20000 {
		s.Decide(PolicyAggregate, 1250, now)
	}
	q0, q1 := s.hot[0].busy.Load()-now, s.hot[1].busy.Load()-now
	if min(q0, q1) < int64(time.Second) {
		t.Fatalf("backlogs %v %v: the test did not overload", time.Duration(q0), time.Duration(q1))
	}
	s.Tick(now)
	r0, r1 := s.hot[0].busy.Load()-now, s.hot[1].busy.Load()-now
	if min(r0, r1) != int64(100*time.Millisecond) || r0-r1 != q0-q1 {
		t.Errorf("after Tick: backlogs %v %v (before %v %v): want the smaller at 100ms, difference kept",
			time.Duration(r0), time.Duration(r1), time.Duration(q0), time.Duration(q1))
	}
}

func TestOneWayDelayAndSpread(t *testing.T) {
	s := New(Config{})
	for id := range PathID(2) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, known := s.DelaySpread(); known {
		t.Error("delays known before any path answered")
	}
	verify(t, s, 0, 0, 20*time.Millisecond, mbit(10), 8)
	if _, _, known := s.DelaySpread(); known {
		t.Error("delays known while path 1 never answered")
	}
	now := verify(t, s, 1, 0, 60*time.Millisecond, mbit(10), 8)
	if _, _, known := s.DelaySpread(); !known {
		t.Error("delays not known after both paths answered")
	}
	if info, _ := s.Info(1, now); info.OneWayDelay != 30*time.Millisecond {
		t.Errorf("one-way delay %v, want SRTT/2 = 30ms", info.OneWayDelay)
	}
	if spread, _, _ := s.DelaySpread(); spread != 20*time.Millisecond {
		t.Errorf("spread %v, want 30ms − 10ms", spread)
	}
	if err := s.SetOneWayDelay(1, 45*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(1, now); info.OneWayDelay != 45*time.Millisecond {
		t.Errorf("measured one-way delay %v, want 45ms", info.OneWayDelay)
	}
	if err := s.SetOneWayDelay(9, time.Millisecond); !errors.Is(err, ErrNoPath) {
		t.Errorf("unknown path: %v", err)
	}
}

// TestStartupEndsAtCapacity feeds a path exactly what it carries, as an
// ack-clocked TCP flow does once it backs off at the bottleneck: the path
// is then not limited by what it was offered, so the rate estimator must
// leave startup and the picker must not go on rating the path at twice
// its measured rate (which left its virtual queue empty while its real
// one overflowed).
func TestStartupEndsAtCapacity(t *testing.T) {
	s := New(Config{})
	now := int64(time.Second)
	if err := s.AddPath(PathConfig{ID: 0}, now); err != nil {
		t.Fatal(err)
	}
	rate := mbit(50)
	var tx, rx Counters
	for seq := uint32(1); seq <= 200; seq++ {
		if err := s.ProbeSent(0, seq, now, tx); err != nil {
			t.Fatal(err)
		}
		rtt := 48 * time.Millisecond // a standing queue: no probe boost
		if seq == 1 {
			rtt = 40 * time.Millisecond
		}
		if err := s.ProbeReply(0, ProbeReply{Seq: seq, Rx: rx}, now+int64(rtt)); err != nil {
			t.Fatal(err)
		}
		const step = 30 * time.Millisecond
		now += int64(step)
		b := uint64(rate * step.Seconds())
		tx.Bytes, tx.Packets = tx.Bytes+b, tx.Packets+b/1400
		rx.Bytes, rx.Packets = rx.Bytes+b, rx.Packets+b/1400
		s.Tick(now)
	}
	info, ok := s.Info(0, now)
	if !ok {
		t.Fatal("no path 0")
	}
	if info.Gain > 1.25 || info.PickerRate > 1.3*rate {
		t.Errorf("fed its capacity for 6 s: gain %.2f, picker rate %.1f Mbit/s for a %.1f Mbit/s path; want gain ≤ 1.25 and picker rate ≤ 1.3×",
			info.Gain, info.PickerRate*8/1e6, rate*8/1e6)
	}
}

// backgroundPaths returns a scheduler with two verified paths of round
// trips rtt0 and rtt1 rated only by 0.2 Mbit/s of background traffic
// (750 bytes a probe round, no queue), and the time after.
func backgroundPaths(t *testing.T, rtt0, rtt1 time.Duration) (*Scheduler, int64) {
	t.Helper()
	s := New(Config{})
	for id := range PathID(2) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	now := verify(t, s, 0, 0, rtt0, mbit(0.2), 12)
	return s, max(now, verify(t, s, 1, 0, rtt1, mbit(0.2), 12))
}

// TestVirtualQueueForgottenWithoutQueue: a path rated at the little its
// background traffic carried builds a virtual queue of hundreds of
// milliseconds from a burst that its bottleneck passes at once. A probe
// sent behind that burst that comes back without a queue shows the
// virtual queue was not there; it is taken off, and the next packets go
// to the path again instead of to the slower one. A probe that comes
// back behind a queue leaves it, and so does one on a path whose
// bottleneck was seen busy lately (its rate is a capacity then).
func TestVirtualQueueForgottenWithoutQueue(t *testing.T) {
	const rtt0, rtt1 = 20 * time.Millisecond, 40 * time.Millisecond
	tests := []struct {
		name       string
		filled     bool          // path 0's bottleneck was busy (two replies behind a queue) before the burst
		replyQueue time.Duration // the queue the probe sent behind the burst meets
		// backOnly: replyQueue is on the way back, and the replier's
		// arrival times say so.
		backOnly    bool
		wantForgets bool
	}{
		{"probe meets no queue", false, 0, false, true},
		{"probe meets a queue", false, 30 * time.Millisecond, false, false},
		{"probe meets a queue on the way back", false, 30 * time.Millisecond, true, false},
		{"path filled lately", true, 0, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, now := backgroundPaths(t, rtt0, rtt1)
			info, _ := s.Info(0, now)
			seq := uint32(info.RTTSamples)
			tx := Counters{Bytes: 12 * 750} // what verify sent: 750 bytes a round
			probe := func(queue time.Duration, sent Counters) {
				t.Helper()
				seq++
				r := ProbeReply{Rx: sent}
				if tc.backOnly {
					r.PeerArrived = now + int64(rtt0/2)
				}
				roundTrip(t, s, 0, seq, sent, now, now+int64(rtt0+queue), r)
				now += int64(rtt0 + queue)
			}
			if tc.filled {
				for range 3 {
					tx.Bytes += 1200
					tx.Packets += minSaturatingPackets
					probe(30*time.Millisecond, tx)
				}
			}
			// A new flow's first burst: 30 packets at once.
			for range 30 {
				s.Decide(PolicyAggregate, 1400, now)
			}
			before := time.Duration(s.hot[0].busy.Load() - now)
			if before < 50*time.Millisecond {
				t.Fatalf("the burst left a virtual queue of %v on path 0: the test did not build one", before)
			}
			tx.Bytes += 30 * 1400
			tx.Packets += 30
			probe(tc.replyQueue, tx)
			after := time.Duration(max(s.hot[0].busy.Load()-now, 0))
			forgot := after < boostSlack(rtt0)+time.Millisecond
			t.Logf("virtual queue of path 0: %v before the probe, %v after its reply", before, after)
			if forgot != tc.wantForgets {
				t.Errorf("virtual queue after the reply %v (before %v): forgotten %v, want %v", after, before, forgot, tc.wantForgets)
			}
			if tc.wantForgets {
				if set := s.Decide(PolicyAggregate, 1400, now); set != SetOf(0) {
					t.Errorf("next packet takes %v, want path 0 (the quicker, without a queue)", set)
				}
			}
		})
	}
}

// TestQueueOnTheWayBack: a path that carries only background traffic
// (0.2 Mbit/s in small packets, four per probe interval) and whose probes
// come back 20 ms late. Without the peer's arrival times the queue is
// taken for the path's own, and its samples rate it a filled 0.2 Mbit/s;
// with them, a queue on the way back (the peer's upload on the same
// link) leaves it unfilled, and one on the way out still fills it. A
// path that sent nothing but its probes made no queue, wherever it is.
func TestQueueOnTheWayBack(t *testing.T) {
	const rtt = 20 * time.Millisecond
	const offset = int64(7e15) // the peer's clock, far from this side's
	for _, tc := range []struct {
		name       string
		timed      bool
		queueOut   bool // the 20 ms are on the way out; else on the way back
		probesOnly bool // one packet per interval: the probe
		wantFilled bool
	}{
		{"no arrival times", false, false, false, true},
		{"queue on the way back", true, false, false, false},
		{"queue on the way out", true, true, false, true},
		{"queue on the way out, probes only", true, true, true, false},
		{"no arrival times, probes only", false, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, now := backgroundPaths(t, rtt, 2*rtt)
			info, _ := s.Info(0, now)
			seq := uint32(info.RTTSamples)
			tx := s.paths[0].lastTx
			// A few round trips without a queue give the one-way minimum.
			probe := func(queue time.Duration) {
				t.Helper()
				seq++
				if tc.probesOnly {
					tx.Bytes += 56
					tx.Packets++
				} else {
					tx.Bytes += 750
					tx.Packets += minSaturatingPackets
				}
				arrived := now + int64(rtt/2) + offset
				if tc.queueOut {
					arrived += int64(queue)
				}
				r := ProbeReply{Rx: tx}
				if tc.timed {
					r.PeerArrived = arrived
				}
				roundTrip(t, s, 0, seq, tx, now, now+int64(rtt+queue), r)
				now += int64(30 * time.Millisecond)
			}
			for range 4 {
				probe(0)
			}
			for range 6 {
				probe(20 * time.Millisecond)
			}
			if got := s.paths[0].filled; got != tc.wantFilled {
				t.Errorf("filled %v, want %v (rate %.2f Mbit/s)", got, tc.wantFilled, s.paths[0].rate.Rate*8/1e6)
			}
		})
	}
}

// TestUnfilledPathsWaitForAQueue: two paths rated only by the little
// background traffic they carried (never filled). A new flow's first
// burst goes on the quicker one alone: spread at those rates, every
// other packet took the slower path, and the receiver held the quicker
// path's packets for them. Once the quicker path shows a queue, the
// other joins, charged at the filled path's rate; a path seen filled is
// aggregated from the start.
func TestUnfilledPathsWaitForAQueue(t *testing.T) {
	const rtt0, rtt1 = 20 * time.Millisecond, 40 * time.Millisecond
	for _, filled := range []bool{false, true} {
		s, now := backgroundPaths(t, rtt0, rtt1)
		if filled {
			// Path 1 fills only once the aggregate picks it: path 0
			// shows a queue first (TestQueueOfAPathNotPicked).
			now = fill(t, s, 0, now, rtt0, mbit(0.2), 3)
			now = fill(t, s, 1, now, rtt1, mbit(0.2), 3)
		}
		on := map[PathSet]int{}
		for range 30 {
			on[s.Decide(PolicyAggregate, 1400, now)]++
		}
		if !filled && on[SetOf(0)] != 30 {
			t.Errorf("unfilled paths: the burst went %v, want all 30 on path 0 (the quicker)", on)
		}
		if filled && on[SetOf(1)] == 0 {
			t.Errorf("path 1 filled: the burst went %v, want some on path 1", on)
		}
		if filled {
			continue
		}
		// Path 0 fills (its probes come back behind a queue, at
		// 50 Mbit/s): path 1 joins, charged as if it were as fast
		// until a queue on it shows its own rate, and takes a share of
		// the next packets, not one packet per probe interval.
		now = fill(t, s, 0, now, rtt0, mbit(50), 3)
		info1, _ := s.Info(1, now)
		tx1 := s.paths[1].lastTx
		tx1.Bytes += 750 // the background traffic's 0.2 Mbit/s
		roundTrip(t, s, 1, uint32(info1.RTTSamples+1), tx1, now, now+int64(rtt1), ProbeReply{Rx: tx1})
		now += int64(rtt1)
		if r := s.paths[1].rate.Rate; r > mbit(1) {
			t.Fatalf("path 1 rated %.1f Mbit/s: the test lost its background rate", r*8/1e6)
		}
		now += int64(2 * time.Second) // the first burst's virtual queue has drained
		on = map[PathSet]int{}
		for range 30 {
			on[s.Decide(PolicyAggregate, 1400, now)]++
		}
		if on[SetOf(1)] < 5 {
			t.Errorf("path 0 filled and queued: the next packets went %v, want at least 5 of 30 on path 1", on)
		}
	}
}

// TestJoinedPathStaysWhileTheFlowGoesOn: the quicker path, rated only by
// what it carried, comes back behind a queue once, at 50 Mbit/s: it is
// not filled yet (that takes two saturated samples), but its bottleneck
// is busy, and the picker charges it at its rate, without startup's
// gain. The slower path joins at once, charged at least at that rate
// from its next reply, and stays in when the quicker path's queue
// drains (the slower one took the excess), until the flow stops. Joined
// only while the queue showed, it left again at once, and the quicker
// path overflowed before it came back (gateway-aggregation: 92.1-93.9 of
// 99 Mbit/s in some runs).
func TestJoinedPathStaysWhileTheFlowGoesOn(t *testing.T) {
	const rtt0, rtt1 = 20 * time.Millisecond, 40 * time.Millisecond
	s, now := backgroundPaths(t, rtt0, rtt1)
	info, _ := s.Info(0, now)
	tx := s.paths[0].lastTx
	seq := uint32(info.RTTSamples)
	round := func(rate float64, queue time.Duration) {
		b := uint64(rate * 0.03)
		tx.Bytes += b
		tx.Packets += b/1400 + 1
		seq++
		roundTrip(t, s, 0, seq, tx, now, now+int64(rtt0+queue), ProbeReply{Rx: tx})
		now += int64(30 * time.Millisecond)
	}
	round(mbit(50), 0)
	if s.aggregateSet().Has(1) {
		t.Fatal("path 1 in the aggregate before path 0 showed a queue: the test does not test")
	}
	round(mbit(50), 20*time.Millisecond)
	if s.paths[0].filled {
		t.Fatal("path 0 filled by one reply behind a queue: the test does not test")
	}
	if !s.aggregateSet().Has(1) {
		t.Fatal("path 1 left out after path 0 showed a queue")
	}
	r0 := s.paths[0].rate.Rate
	if r0 < mbit(40) {
		t.Fatalf("path 0 rated %.1f Mbit/s after carrying 50: the test does not test", r0*8/1e6)
	}
	// Path 1's next reply (its background traffic only) charges it at
	// least at the rate path 0 carried when it joined.
	info1, _ := s.Info(1, now)
	tx1 := s.paths[1].lastTx
	tx1.Bytes += 750
	roundTrip(t, s, 1, uint32(info1.RTTSamples+1), tx1, now, now+int64(rtt1), ProbeReply{Rx: tx1})
	if got := s.paths[1].pickerRate; got < r0 {
		t.Errorf("path 1 charged at %.1f Mbit/s once path 0 showed a queue at %.1f: want at least that", got*8/1e6, r0*8/1e6)
	}
	// Path 0's bottleneck is busy: the picker charges it at what it
	// passes, not at startup's twice that, or it would build no virtual
	// queue there and send the excess nowhere else.
	if got := s.paths[0].pickerRate; got > 1.05*r0 {
		t.Errorf("path 0 charged at %.1f Mbit/s behind a queue, rated %.1f: want its rate (gain 1)", got*8/1e6, r0*8/1e6)
	}
	round(mbit(50), 0)
	if !s.aggregateSet().Has(1) {
		t.Error("path 1 left the aggregate when path 0's queue drained while the flow went on")
	}
	round(mbit(0.2), 0)
	round(mbit(0.2), 0)
	if s.aggregateSet().Has(1) {
		t.Error("path 1 still in the aggregate after the flow stopped: the next flow would be spread onto it")
	}
}

// TestQueueOfAPathNotPicked: a path the aggregate leaves out (it waits
// for the quicker one's queue) whose probes come back behind a queue,
// with a few packets between them, is not filled: what it carried was
// not paced by its rate, and the queue was most likely the quicker
// path's on a hop they share. Filled, it was held at that rate for the
// capacity's ten seconds. Once the aggregate picks it, the same replies
// fill it.
func TestQueueOfAPathNotPicked(t *testing.T) {
	const rtt0, rtt1 = 20 * time.Millisecond, 40 * time.Millisecond
	s, now := backgroundPaths(t, rtt0, rtt1)
	const little = 0.32 // Mbit/s: 1200 bytes and minSaturatingPackets a round
	if s.aggregateSet().Has(1) {
		t.Fatal("path 1 is in the aggregate before path 0 shows a queue: the test does not test")
	}
	now = queuedReplies(t, s, 1, now, rtt1, mbit(little), 3)
	if s.paths[1].filled {
		t.Errorf("path 1 filled at %.2f Mbit/s by a queue it met while the aggregate left it out", s.paths[1].rate.Rate*8/1e6)
	}
	now = fill(t, s, 0, now, rtt0, mbit(50), 3)
	if !s.aggregateSet().Has(1) {
		t.Fatal("path 1 is not in the aggregate after path 0 showed a queue")
	}
	queuedReplies(t, s, 1, now, rtt1, mbit(little), 3)
	if !s.paths[1].filled {
		t.Error("path 1 not filled by replies behind a queue while the aggregate picked it")
	}
}

// TestCapacityWhileTheQueueShrinks: a path held below what its bottleneck
// delivers (its capacity was read low) builds a queue only in the gain
// cycle's 1.25 step, and the samples that see the queue at both ends are
// those of the steps after it, while the queue shrinks by 5 ms per 30 ms
// probe interval. The bottleneck delivers 50 Mbit/s without a pause all
// the while: what the replier counts between two probes took their
// distance in arrival, 25 ms, to deliver. Read over the 30 ms between
// their sending it rated the path at 42 Mbit/s, below what the path had
// been given, so the low capacity stood. With the replier's arrival
// times the capacity is the bottleneck's rate, and a probe stamped 3 ms
// late (the replier's receive worker was busy) moves it by little: the
// reading spans two intervals.
func TestCapacityWhileTheQueueShrinks(t *testing.T) {
	const rtt = 20 * time.Millisecond
	const interval = 30 * time.Millisecond
	const offset = int64(3e15) // the peer's clock
	rate := mbit(50)
	for _, tc := range []struct {
		name          string
		timed         bool
		lateStamp     time.Duration // how late the replier stamps the seventh probe
		wantMin, want float64       // the capacity's bounds, as a fraction of rate
	}{
		{"arrival times", true, 0, 0.98, 1.02},
		{"a late stamp", true, 3 * time.Millisecond, 0.98, 1.07},
		{"no arrival times", false, 0, 0.8, 0.85},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{})
			if err := s.AddPath(PathConfig{ID: 0, Tier: 1}, 0); err != nil {
				t.Fatal(err)
			}
			var now, lastArrival int64
			var tx, rx Counters
			for i := range 10 {
				// No queue for the first four probes (the minima), then
				// 30 ms that shrink by 5 ms each interval.
				queue := time.Duration(0)
				if i >= 4 {
					queue = 30*time.Millisecond - time.Duration(i-4)*5*time.Millisecond
				}
				arrival := now + int64(rtt/2+queue)
				if i >= 4 {
					// The bottleneck delivered at its rate between the
					// two arrivals.
					b := uint64(rate * float64(arrival-lastArrival) / 1e9)
					rx.Bytes += b
					rx.Packets += b / 1000
				}
				lastArrival = arrival
				tx.Bytes, tx.Packets = tx.Bytes+uint64(rate*interval.Seconds()), tx.Packets+50
				r := ProbeReply{Rx: rx}
				if tc.timed {
					r.PeerArrived = arrival + offset
					if i == 6 {
						r.PeerArrived += int64(tc.lateStamp)
					}
				}
				roundTrip(t, s, 0, uint32(i+1), tx, now, now+int64(rtt+queue), r)
				now += int64(interval)
			}
			p := s.paths[0]
			if !p.filled {
				t.Fatal("the path was not filled by probes behind a queue")
			}
			if got := p.rate.capacity / rate; got < tc.wantMin || got > tc.want {
				t.Errorf("capacity %.1f Mbit/s, %.2f of the bottleneck's 50, want %.2f-%.2f", p.rate.capacity*8/1e6, got, tc.wantMin, tc.want)
			}
		})
	}
}

// TestLateRepliesKeepAQueuedPathUp: a path of 2 ms whose queue grows to
// 60 ms at once (a token bucket's queue filled by a flow's slow start).
// Each reply comes after its probe's miss timeout, learnt on 2 ms round
// trips, and the third miss declares the path down a millisecond before
// the first reply comes. The replies are taken all the same: the first
// brings the path back at once (its probe left before the path was
// declared down), and the miss timeout learns the new round trip, so
// that the path stays up. Dropped, the path stayed down while it
// delivered every probe.
func TestLateRepliesKeepAQueuedPathUp(t *testing.T) {
	const base, queue = 2 * time.Millisecond, 60 * time.Millisecond
	s := New(Config{})
	if err := s.AddPath(PathConfig{ID: 0, Tier: 1}, 0); err != nil {
		t.Fatal(err)
	}
	now := verify(t, s, 0, 0, base, mbit(10), 6)
	if info, _ := s.Info(0, now); info.State != StateActive {
		t.Fatalf("path %v after verification, want active", info.State)
	}
	tx := s.paths[0].lastTx
	type reply struct {
		seq uint32
		at  int64
	}
	var due []reply
	failed := 0 // ms
	seq := uint32(100)
	start := now
	for now < start+int64(time.Second) {
		if (now-start)%int64(10*time.Millisecond) == 0 {
			seq++
			tx.Bytes += 12500 // 10 Mbit/s
			tx.Packets += 10
			if err := s.ProbeSent(0, seq, now, tx); err != nil {
				t.Fatal(err)
			}
			due = append(due, reply{seq, now + int64(base+queue)})
		}
		for len(due) > 0 && due[0].at <= now {
			// The replier counted what was sent a queue ago.
			err := s.ProbeReply(0, ProbeReply{Seq: due[0].seq, Rx: tx}, now)
			if err != nil {
				t.Fatalf("reply %d at %v: %v", due[0].seq, time.Duration(now-start), err)
			}
			due = due[1:]
		}
		s.Tick(now)
		if info, _ := s.Info(0, now); info.State == StateFailed {
			failed++
		}
		now += int64(time.Millisecond)
	}
	if failed > 2 {
		t.Errorf("path failed for %d ms of the second after its queue grew to %v, while every probe was answered", failed, queue)
	}
	if info, _ := s.Info(0, now); info.SRTT < queue {
		t.Errorf("SRTT %v after a second of %v round trips", info.SRTT, base+queue)
	}
}

// TestOvertakenReply: a reply overtaken by the next probe's (the path
// reordered them) is one round trip more, and the rate sample's interval
// still starts at the later probe.
func TestOvertakenReply(t *testing.T) {
	const rtt = 10 * time.Millisecond
	s := New(Config{})
	if err := s.AddPath(PathConfig{ID: 0, Tier: 1}, 0); err != nil {
		t.Fatal(err)
	}
	now := verify(t, s, 0, 0, rtt, mbit(10), 6)
	tx := s.paths[0].lastTx
	for seq := uint32(50); seq < 52; seq++ {
		tx.Bytes += 1000
		if err := s.ProbeSent(0, seq, now+int64(seq-50)*int64(ms), tx); err != nil {
			t.Fatal(err)
		}
	}
	later := now + int64(ms)
	if err := s.ProbeReply(0, ProbeReply{Seq: 51, Rx: tx}, later+int64(rtt)); err != nil {
		t.Fatal(err)
	}
	samples := s.paths[0].rtt.Samples
	if err := s.ProbeReply(0, ProbeReply{Seq: 50, Rx: tx}, later+int64(rtt)+int64(ms)); err != nil {
		t.Fatalf("the overtaken reply: %v", err)
	}
	if got := s.paths[0].rtt.Samples; got != samples+1 {
		t.Errorf("%d round-trip samples after the overtaken reply, want %d", got, samples+1)
	}
	if got := s.paths[0].prevSent; got != later {
		t.Errorf("the next rate sample starts at %v, want the later probe's %v", time.Duration(got), time.Duration(later))
	}
	if err := s.ProbeReply(0, ProbeReply{Seq: 50, Rx: tx}, later+int64(rtt)+int64(2*ms)); !errors.Is(err, ErrUnknownProbe) {
		t.Errorf("the same reply again: %v, want ErrUnknownProbe", err)
	}
}

// TestProbeIntervalCountsOnlyData: the counters ProbeSent gets include the
// probes themselves (the peer's, echoed in replies, count them too), so a
// path whose counters grow by one packet per probe carries nothing and is
// probed at the detector's idle pace; data on any path of the session
// makes every path active for carryingFor, the picker being free to put
// the next packet on any of them.
func TestProbeIntervalCountsOnlyData(t *testing.T) {
	const (
		active = 30 * time.Millisecond
		idle   = 100 * time.Millisecond
	)
	tests := []struct {
		name string
		// dataOn0 and dataOn1: data packets each path sends between two
		// probes, beside its probe.
		dataOn0, dataOn1 uint64
		want0, want1     time.Duration
	}{
		{"only probes", 0, 0, idle, idle},
		{"one data packet between probes", 1, 0, active, active},
		{"data on the other path", 0, 40, active, active},
		{"data on both", 20, 20, active, active},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{})
			now := int64(time.Second)
			var tx [2]Counters
			var seq [2]uint32
			step := func(id PathID, data uint64) {
				tx[id].Packets += data + 1 // the data, then the probe
				tx[id].Bytes += data*1400 + 64
				seq[id]++
				roundTrip(t, s, id, seq[id], tx[id], now, now+int64(20*time.Millisecond), ProbeReply{Rx: tx[id]})
			}
			for id := range PathID(2) {
				if err := s.AddPath(PathConfig{ID: id, Kind: KindWLAN}, now); err != nil {
					t.Fatal(err)
				}
			}
			for range 10 {
				now += int64(active)
				step(0, tc.dataOn0)
				step(1, tc.dataOn1)
			}
			if got := s.ProbeInterval(0); got != tc.want0 {
				t.Errorf("path 0: probe every %v, want %v", got, tc.want0)
			}
			if got := s.ProbeInterval(1); got != tc.want1 {
				t.Errorf("path 1: probe every %v, want %v", got, tc.want1)
			}
			// Then only probes for longer than carryingFor: both idle.
			for range int(carryingFor/idle) + 2 {
				now += int64(idle)
				step(0, 0)
				step(1, 0)
			}
			for id := range PathID(2) {
				if got := s.ProbeInterval(id); got != idle {
					t.Errorf("path %d after %v of probes alone: probe every %v, want %v", id, carryingFor, got, idle)
				}
			}
			// Then quiet: no data for QuietAfter.
			quiet := s.Config().Detector.QuietInterval
			for range int(s.Config().Detector.QuietAfter / idle) {
				now += int64(idle)
				step(0, 0)
				step(1, 0)
			}
			for id := range PathID(2) {
				if got := s.ProbeInterval(id); got != quiet {
					t.Errorf("path %d after %v without data: probe every %v, want %v", id, s.Config().Detector.QuietAfter, got, quiet)
				}
			}
			if got := s.Quiet(); got != SetOf(0, 1) {
				t.Errorf("Quiet() = %v, want both paths", got)
			}
			// Data on path 1 only, and the conductor, woken by it,
			// probes path 0 first: path 0 must not find the session
			// quiet still (its probe shows no data of its own).
			now += int64(quiet)
			s.DataSent(now)
			if got := s.Quiet(); !got.Empty() {
				t.Errorf("Quiet() after DataSent = %v, want none", got)
			}
			step(0, 0)
			step(1, 3)
			for id := range PathID(2) {
				if got := s.ProbeInterval(id); got != active {
					t.Errorf("path %d after data on path 1: probe every %v, want %v", id, got, active)
				}
			}
		})
	}
}

// TestQuietNeverFasterThanIdle: a QuietInterval below IdleInterval is
// raised to it.
func TestQuietNeverFasterThanIdle(t *testing.T) {
	s := New(Config{Detector: DetectorConfig{IdleInterval: 200 * time.Millisecond, QuietInterval: 50 * time.Millisecond}})
	if got := s.Config().Detector.QuietInterval; got != 200*time.Millisecond {
		t.Fatalf("QuietInterval %v, want the idle 200ms", got)
	}
}
