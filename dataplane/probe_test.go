package dataplane

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/mifsec/mifsec/scheduler"
)

func TestProbeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Probe
		size int
		want int
	}{
		{"request", Probe{Kind: ProbeRequest, PathID: 3, Seq: 1 << 31, Timestamp: -5}, 0, probeRequestLen},
		{"padded request", Probe{Kind: ProbeRequest, PathID: 65535, Seq: 7, Timestamp: 1e18}, 1200, 1200},
		{"reply", Probe{Kind: ProbeReply, PathID: 1, Seq: 9, Timestamp: 42, RxPackets: 1 << 40, RxBytes: 1<<63 + 1, HoldMicros: 77}, 10, probeReplyLen},
		{"reply with arrival time", Probe{Kind: ProbeReply, PathID: 1, Seq: 9, Timestamp: 42, RxBytes: 5, ArrivedAt: -1 << 40}, 0, probeReplyTimedLen},
		{"padded reply with arrival time", Probe{Kind: ProbeReply, Seq: 1, ArrivedAt: 7}, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := appendProbe([]byte("prefix"), tc.p, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) || len(b)-6 != tc.want {
				t.Fatalf("encoded %d bytes after the prefix, want %d", len(b)-6, tc.want)
			}
			got, err := parseProbe(b[6:])
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.p {
				t.Fatalf("decoded %+v, want %+v", got, tc.p)
			}
		})
	}
}

func TestParseProbeRejects(t *testing.T) {
	req, _ := appendProbe(nil, Probe{Kind: ProbeRequest}, 0)
	reply, _ := appendProbe(nil, Probe{Kind: ProbeReply}, 0)
	badKind := bytes.Clone(req)
	badKind[3] = 9
	badVersion := bytes.Clone(req)
	badVersion[2] = 2
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errProbeTooShort},
		{"TFC padding", make([]byte, 64), errNotProbe},
		{"other version", badVersion, errNotProbe},
		{"unknown kind", badKind, errProbeKind},
		{"short request", req[:probeRequestLen-1], errProbeTooShort},
		{"short reply", reply[:probeReplyLen-1], errProbeTooShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseProbe(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("ParseProbe = %v, want %v", err, tc.want)
			}
		})
	}
	// A reply whose arrival flag is set but that ends before the arrival
	// time parses without one; one without the flag reads the bytes after
	// the hold time as padding (a peer that knows no arrival time).
	timed, _ := appendProbe(nil, Probe{Kind: ProbeReply, ArrivedAt: 99}, 0)
	if p, err := parseProbe(timed[:probeReplyTimedLen-1]); err != nil || p.ArrivedAt != 0 {
		t.Fatalf("truncated timed reply: %+v, %v", p, err)
	}
	untimed := bytes.Clone(timed)
	untimed[probeFlagsOffset+1] = 0
	if p, err := parseProbe(untimed); err != nil || p.ArrivedAt != 0 {
		t.Fatalf("reply without the flag: %+v, %v", p, err)
	}
	if _, err := appendProbe(nil, Probe{Kind: 7}, 0); !errors.Is(err, errProbeKind) {
		t.Fatalf("AppendProbe of kind 7: %v", err)
	}
	if _, err := appendProbe(nil, Probe{Kind: ProbeRequest}, 10000); err == nil {
		t.Fatal("AppendProbe padded to 10000 bytes")
	}
}

func FuzzParseProbe(f *testing.F) {
	req, _ := appendProbe(nil, Probe{Kind: ProbeRequest, PathID: 1, Seq: 2, Timestamp: 3}, 0)
	reply, _ := appendProbe(nil, Probe{Kind: ProbeReply, PathID: 1, Seq: 2, Timestamp: 3, RxPackets: 4, RxBytes: 5, HoldMicros: 6}, 64)
	f.Add(req)
	f.Add(reply)
	timed, _ := appendProbe(nil, Probe{Kind: ProbeReply, PathID: 1, Seq: 2, Timestamp: 3, ArrivedAt: 7}, 0)
	f.Add(timed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseProbe(b)
		if err != nil {
			return
		}
		// What parses re-encodes to the same leading bytes.
		again, err := appendProbe(nil, p, 0)
		if err != nil {
			t.Fatalf("parsed %+v does not encode: %v", p, err)
		}
		if !bytes.Equal(again[:4], b[:4]) || !bytes.Equal(again[4:6], b[4:6]) || !bytes.Equal(again[8:], b[8:len(again)]) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b[:len(again)], again)
		}
	})
}

// TestSourceCountersConcurrent has several workers count packets from a
// few sources at once: every packet is counted once, per source, the
// third source's slot made by whichever worker came first. Two sources
// make no slots beyond the SA's own.
func TestSourceCountersConcurrent(t *testing.T) {
	var two sourceCounters
	for i := range 10 {
		two.count(scheduler.PathID(i%2), netip.MustParseAddrPort("192.0.2.1:4500"), 10)
	}
	if two.more.Load() != nil || two.get(1, netip.MustParseAddrPort("192.0.2.1:4500")).Packets != 5 {
		t.Fatalf("two sources: extra slots made %v, path 1 counted %d", two.more.Load() != nil, two.get(1, netip.MustParseAddrPort("192.0.2.1:4500")).Packets)
	}
	var c sourceCounters
	sources := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:4500"),
		netip.MustParseAddrPort("198.51.100.1:4500"),
		netip.MustParseAddrPort("[2001:db8::1]:4500"),
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 3000 {
				c.count(0, sources[(i+w)%len(sources)], 100)
			}
		})
	}
	wg.Wait()
	var total uint64
	for _, s := range sources {
		got := c.get(0, s)
		if got.Packets != 4000 || got.Bytes != 400000 {
			t.Errorf("%s: %d packets %d bytes, want 4000 and 400000", s, got.Packets, got.Bytes)
		}
		total += got.Packets
	}
	if other := c.get(1, sources[0]); other.Packets != 0 {
		t.Errorf("path 1 counted %d packets it never saw", other.Packets)
	}
	for i := range maxSources {
		c.count(9, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(i)), 1)
	}
	if c.overflow.Load() != uint64(len(sources)) {
		t.Fatalf("overflow %d, want %d (slots beyond %d)", c.overflow.Load(), len(sources), maxSources)
	}
}
