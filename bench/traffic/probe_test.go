package traffic

import (
	"bytes"
	"math"
	"testing"
	"time"
)

// syntheticRecord is a 10 ms probe stream of n probes, each delivered
// after delay, except the sequence numbers in lost.
func syntheticRecord(n int, delay time.Duration, lost func(seq int) bool) *probeRecord {
	r := newProbeRecord(n, 10*time.Millisecond)
	for i := range n {
		r.sent[i] = int64(i) * int64(10*time.Millisecond)
		if !lost(i) {
			r.received[i] = r.sent[i] + int64(delay) + int64(i%10)*int64(time.Millisecond)
		}
	}
	return r
}

func TestProbeSummary(t *testing.T) {
	// 1000 probes over 10 s; 200..399 lost (2 s outage from 2.0 s), two
	// single losses (not an outage), and 950.. lost until the end.
	r := syntheticRecord(1000, 20*time.Millisecond, func(i int) bool {
		return i >= 200 && i < 400 || i == 500 || i == 501 || i >= 950
	})
	s := r.summarize()
	if s.Sent != 1000 || s.Received != 748 || s.Lost != 252 {
		t.Errorf("sent %d received %d lost %d; want 1000, 748, 252", s.Sent, s.Received, s.Lost)
	}
	if s.LossPercent != 25.2 {
		t.Errorf("loss %.2f%%, want 25.2%%", s.LossPercent)
	}
	if s.DelayMinMs != 20 || s.DelayMaxMs != 29 {
		t.Errorf("delay min %v max %v, want 20 and 29", s.DelayMinMs, s.DelayMaxMs)
	}
	if s.DelayP50Ms < 23 || s.DelayP50Ms > 25 {
		t.Errorf("median delay %v, want about 24.5", s.DelayP50Ms)
	}
	if len(s.Outages) != 2 {
		t.Fatalf("outages = %+v, want 2", s.Outages)
	}
	first := s.Outages[0]
	if first.StartS != 2 || first.EndS != 4 || first.Seconds != 2 || first.Lost != 200 || !first.Recovered {
		t.Errorf("first outage %+v, want 2 s from 2.0 s, 200 lost, recovered", first)
	}
	last := s.Outages[1]
	if last.Recovered || last.StartS != 9.5 || last.Lost != 50 || math.Abs(last.Seconds-0.5) > 1e-9 {
		t.Errorf("last outage %+v, want 0.5 s from 9.5 s, not recovered", last)
	}
	if o, ok := s.OutageAt(1.9); !ok || o.StartS != 2 {
		t.Errorf("outageAt(1.9) = %+v, %v; want the outage from 2.0 s", o, ok)
	}
	if o, ok := s.OutageAt(9.4); !ok || o.StartS != 9.5 {
		t.Errorf("outageAt(9.4) = %+v, %v; want the outage from 9.5 s", o, ok)
	}
	if _, ok := s.OutageAt(3); ok {
		t.Error("outageAt(3) matched an outage that began a second earlier")
	}
	if _, ok := s.OutageAt(5); ok {
		t.Error("outageAt(5) found an outage where none was")
	}
}

func TestProbeRecord(t *testing.T) {
	r := newProbeRecord(4, 10*time.Millisecond)
	buf := make([]byte, 64)
	encodeProbe(buf, 2, 12345)
	r.record(buf, 99)
	r.record(buf, 100)                  // duplicate
	r.record(buf[:ProbeHeaderLen-1], 1) // short
	encodeProbe(buf, 9, 1)              // out of range
	r.record(buf, 1)
	if r.received[2] != 99 || r.duplicates != 1 || r.foreign != 2 {
		t.Errorf("received %v, duplicates %d, foreign %d", r.received, r.duplicates, r.foreign)
	}
	// The receive path runs once per packet: it must not allocate.
	encodeProbe(buf, 1, 5)
	if allocs := testing.AllocsPerRun(1000, func() { r.record(buf, 7) }); allocs != 0 {
		t.Errorf("record allocates %v times per packet", allocs)
	}
}

func FuzzParseProbe(f *testing.F) {
	b := make([]byte, ProbeHeaderLen)
	encodeProbe(b, 7, 1234)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte("MLPB"))
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, sent, ok := parseProbe(data)
		if !ok {
			return
		}
		if sent < 0 {
			t.Fatalf("negative send time %d accepted", sent)
		}
		out := make([]byte, ProbeHeaderLen)
		encodeProbe(out, seq, sent)
		if !bytes.Equal(out, data[:ProbeHeaderLen]) {
			t.Fatalf("re-encoding %x gives %x", data[:ProbeHeaderLen], out)
		}
		r := newProbeRecord(16, time.Millisecond)
		r.record(data, 1)
	})
}
