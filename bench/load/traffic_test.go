package load

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/inetsum"
)

// TestTrafficEcho: a traffic request is a valid echo request of the size
// asked for; its reply counts for the phase under way and never reaches
// the liveness echoes, and a liveness reply is not counted as traffic.
func TestTrafficEcho(t *testing.T) {
	src, dst := netip.MustParseAddr("10.3.0.7"), netip.MustParseAddr("10.1.0.1")
	b := make([]byte, 1500)
	n := echoRequestData(b, src, dst, 5, 77, 1400, trafficMarker)
	p := b[:n]
	if n != 1400 || binary.BigEndian.Uint16(p[2:]) != 1400 || inetsum.Checksum(p[:20]) != 0 || inetsum.Checksum(p[20:]) != 0 {
		t.Fatalf("request of %d bytes, total length %d, checksums %#x %#x", n, binary.BigEndian.Uint16(p[2:]),
			inetsum.Checksum(p[:20]), inetsum.Checksum(p[20:]))
	}
	p[20] = 0 // the reply
	seq, data, ok := echoReply(p, 5)
	if !ok || seq != 77 || len(data) != 1400-28 {
		t.Fatalf("echoReply = %d, %d bytes, %v", seq, len(data), ok)
	}

	c := &fleetClient{}
	tc := &trafficCounters{wake: make(chan struct{}, 1)}
	if !c.countTraffic(data) {
		t.Fatal("a traffic reply outside a phase is not recognised as traffic")
	}
	c.traffic.Store(tc)
	for range 3 {
		if !c.countTraffic(data) {
			t.Fatal("a traffic reply not recognised")
		}
	}
	if got := tc.received.Load(); got != 3 || len(tc.wake) != 1 {
		t.Errorf("received %d, %d wake-ups pending; want 3 and 1", got, len(tc.wake))
	}
	q := make([]byte, 64)
	q = q[:echoRequest(q, src, dst, 5, 1)]
	q[20] = 0
	if _, liveness, _ := echoReply(q, 5); c.countTraffic(liveness) || tc.received.Load() != 3 {
		t.Error("a liveness echo reply counted as traffic")
	}
}

func TestTrafficConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		cfg  TrafficConfig
		want string
	}{
		{TrafficConfig{}, "duration"},
		{TrafficConfig{Duration: time.Second, Size: 40}, "packet size"},
		{TrafficConfig{Duration: time.Second, Size: 9000}, "packet size"},
		{TrafficConfig{Duration: time.Second, Window: -1}, "negative"},
		{TrafficConfig{Duration: time.Second, Clients: -2}, "negative"},
	} {
		err := tc.cfg.Normalize()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
	cfg := TrafficConfig{Duration: time.Second}
	if err := cfg.Normalize(); err != nil || cfg.Size != 1400 || cfg.Window != 256 || cfg.Timeout != 100*time.Millisecond {
		t.Errorf("defaults %+v, %v", cfg, err)
	}
}
