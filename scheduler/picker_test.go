package scheduler

import (
	"strings"
	"testing"
	"time"
)

func TestSingleAlwaysPicksItsPath(t *testing.T) {
	for _, id := range []PathID{0, 1, 7, 65535} {
		p := Picker(Single(id))
		for _, size := range []int{0, 60, 1500, 65535} {
			if got := p.Pick(size); got != id {
				t.Fatalf("Single(%d).Pick(%d) = %d", id, size, got)
			}
		}
	}
}

// setClock moves the origin of Now so that it reads now (plus the time
// the test takes from here): pickers read the clock themselves.
func setClock(now int64) { clockEpoch = time.Now().Add(-time.Duration(now)) }

func TestFallbackPicker(t *testing.T) {
	s := New(Config{})
	now := int64(0)
	var p Picker = NewFallbackPicker(s, PolicyOffload, 7)
	setClock(now)
	if got := p.Pick(1400); got != 7 {
		t.Fatalf("no paths: %d, want the fallback 7", got)
	}
	if err := s.AddPath(PathConfig{ID: 2, Kind: KindCellular, Tier: DefaultTier(KindCellular)}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPath(PathConfig{ID: 1, Kind: KindWLAN, Tier: DefaultTier(KindWLAN)}, 0); err != nil {
		t.Fatal(err)
	}
	now = verify(t, s, 2, 0, 50*time.Millisecond, 1e6, 3)
	setClock(now)
	if got := p.Pick(1400); got != 2 {
		t.Fatalf("only cellular verified: %d, want 2", got)
	}
	now = verify(t, s, 1, now, 10*time.Millisecond, 1e6, 3)
	setClock(now)
	if got := p.Pick(1400); got != 1 {
		t.Fatalf("WLAN verified: %d, want 1 (offload prefers WLAN)", got)
	}
}

// TestClassBoundToInterfaces: a class bound to interfaces sends only on
// the paths of the first that has a usable one — never on another while
// that one's path is usable — then on the next in its order when it
// fails, then on any path when none is left; unbound classes use every
// path.
func TestClassBoundToInterfaces(t *testing.T) {
	s := New(Config{})
	now := int64(0)
	names := map[PathID]string{0: "wlan0", 1: "eth0", 2: "wwan0", 3: "wwan1"}
	for id := range PathID(4) {
		if err := s.AddPath(PathConfig{ID: id, Kind: KindOther, Tier: 0}, now); err != nil {
			t.Fatal(err)
		}
	}
	for id := range PathID(4) {
		now = verify(t, s, id, now, 10*time.Millisecond, 1e6, 3)
		now = fill(t, s, id, now, 10*time.Millisecond, 1e6, 3)
	}
	classes, err := ParseRules("tcp/22:offload@wlan0>eth0, udp/5060:redundant@wwan*, icmp:single@eth0", PolicyAggregate)
	if err != nil {
		t.Fatal(err)
	}
	cp := NewClassPicker(NewFallbackPicker(s, PolicyAggregate, 63), classes)
	cp.SetPathInterfaces(names, nil)
	ssh := ipv4("10.0.0.1", 6, 0, 40000, 22, 0)
	sip := ipv4("10.0.0.1", 17, 0, 5060, 5060, 0)
	ping := ipv4("10.0.0.1", 1, 0, 0, 0, 0)
	other := ipv4("10.0.0.1", 17, 0, 1000, 2000, 0)
	count := func(pkt []byte) map[PathSet]int {
		setClock(now)
		got := map[PathSet]int{}
		for range 500 {
			got[cp.PickPacket(pkt, 1400)]++
		}
		return got
	}
	expectOnly := func(what string, pkt []byte, want PathSet) {
		t.Helper()
		if got := count(pkt); len(got) != 1 || got[want] != 500 {
			t.Fatalf("%s: picked %v, want only %b", what, got, want)
		}
	}
	expectOnly("ssh on wlan0", ssh, SetOf(0))
	expectOnly("SIP on both wwan paths, redundant", sip, SetOf(2, 3))
	expectOnly("ping on eth0 (single, whose own path is wlan0's)", ping, SetOf(1))
	if got := count(other); len(got) < 2 {
		t.Fatalf("unbound traffic on %v, want it spread (aggregate)", got)
	}

	// wlan0 goes silent: ssh falls back to eth0, the next in its order.
	for seq := uint32(100); seq < 140; seq++ {
		s.ProbeSent(0, seq, now, Counters{})
		for id := PathID(1); id < 4; id++ {
			s.ProbeSent(id, seq, now, Counters{})
			s.ProbeReply(id, ProbeReply{Seq: seq}, now+int64(10*time.Millisecond))
		}
		now += int64(30 * time.Millisecond)
		s.Tick(now)
	}
	if !s.Failed().Has(0) {
		t.Fatal("wlan0's path did not fail")
	}
	expectOnly("ssh with wlan0 failed", ssh, SetOf(1))
	// eth0 goes away: nothing of ssh's list is left, any path will do.
	s.RemovePath(1)
	delete(names, 1)
	cp.SetPathInterfaces(names, nil)
	if got := count(ssh); got[SetOf(0)] != 0 || got[SetOf(1)] != 0 || got[SetOf(2)]+got[SetOf(3)] != 500 {
		t.Fatalf("ssh with neither of its interfaces: %v, want the usable wwan paths", got)
	}
	expectOnly("ping with eth0 gone: any usable path, single's", ping, SetOf(2))
}

// TestPeerRules: rules the peer announced come first, match the inner
// source where the peer's matched the destination, and bind to the
// paths whose far end is on the peer's interfaces.
func TestPeerRules(t *testing.T) {
	own, err := ParseRules("icmp:redundant", PolicyOffload)
	if err != nil {
		t.Fatal(err)
	}
	c, err := own.WithPeerRules("192.0.2.0/24+icmp:single@wlan0, default:redundant", PolicyAggregate)
	if err != nil {
		t.Fatal(err)
	}
	if c.Default() != PolicyOffload || len(c.Rules()) != 2 || !c.Rules()[0].Peer || c.Rules()[1].Peer {
		t.Fatalf("merged %s", c)
	}
	if p2, err := ParseRules(c.String(), PolicyAggregate); err != nil || p2.String() != c.String() {
		t.Fatalf("round trip of %s: %v %v", c, p2, err)
	}
	// Our packets to the peer's side come from 192.0.2.1 (ipv4's source).
	if pol, rule := c.ClassifyRule(ipv4("10.9.9.9", 1, 0, 0, 0, 0)); pol != PolicySingle || rule != 0 {
		t.Fatalf("ping from 192.0.2.1: %v (rule %d), want the peer's single", pol, rule)
	}
	if pol, rule := c.ClassifyRule(ipv6("2001:db8::9", 58, 0, 0, 0)); pol != PolicyOffload || rule != -1 {
		t.Fatalf("ICMPv6 from elsewhere: %v (rule %d), want the default", pol, rule)
	}
	if _, err := own.WithPeerRules(strings.Repeat("tcp:single,", maxPeerRules+1), PolicyAggregate); err == nil {
		t.Fatal("too many peer rules accepted")
	}
	if _, err := own.WithPeerRules("tcp:nonsense", PolicyAggregate); err == nil {
		t.Fatal("a bad peer rule accepted")
	}

	s := New(Config{})
	now := int64(0)
	for id := range PathID(3) {
		s.AddPath(PathConfig{ID: id, Tier: 0}, now)
		now = verify(t, s, id, now, 10*time.Millisecond, 1e6, 3)
	}
	cp := NewClassPicker(NewFallbackPicker(s, PolicyAggregate, 63), c)
	// Our eth0 on every path; the peer's wlan0 at the far end of path 2.
	cp.SetPathInterfaces(map[PathID]string{0: "eth0", 1: "eth0", 2: "eth0"}, map[PathID]string{0: "eth0", 1: "wwan0", 2: "wlan0"})
	setClock(now)
	for range 100 {
		if got := cp.PickPacket(ipv4("10.9.9.9", 1, 0, 0, 0, 0), 1400); got != SetOf(2) {
			t.Fatalf("picked %b, want path 2 (the peer's wlan0)", got)
		}
	}
}
