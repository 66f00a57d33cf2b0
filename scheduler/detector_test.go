package scheduler

import (
	"testing"
	"time"
)

func TestDetector(t *testing.T) {
	rtt := &rttEstimator{}
	rtt.Add(15*time.Millisecond, 0)
	type step struct {
		ev   byte // 'r' reply, 'm' miss
		want Health
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"new path needs 3 replies", []step{{'r', Down}, {'r', Down}, {'r', Healthy}}},
		{"a miss in verification restarts it", []step{{'r', Down}, {'r', Down}, {'m', Down}, {'r', Down}, {'r', Down}, {'r', Healthy}}},
		{"suspect, failing, down", []step{{'r', Down}, {'r', Down}, {'r', Healthy}, {'m', Suspect}, {'m', Failing}, {'m', Down}}},
		{"one reply clears suspicion", []step{{'r', Down}, {'r', Down}, {'r', Healthy}, {'m', Suspect}, {'m', Failing}, {'r', Healthy}}},
		{"a late reply undoes the misses", []step{{'r', Down}, {'r', Down}, {'r', Healthy}, {'m', Suspect}, {'m', Failing}, {'m', Down}, {'l', Healthy}}},
		{"a new path is verified by three replies in a row as before", []step{{'l', Down}, {'l', Down}, {'m', Down}, {'l', Down}}},
		{"down needs 3 good replies in a row", []step{{'r', Down}, {'r', Down}, {'r', Healthy},
			{'m', Suspect}, {'m', Failing}, {'m', Down}, {'r', Down}, {'r', Down}, {'m', Down}, {'r', Down}, {'r', Down}, {'r', Healthy}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newFailureDetector(DetectorConfig{})
			for i, s := range tc.steps {
				switch now := int64(i+1) * ms; s.ev {
				case 'r':
					d.Reply(now, now)
				case 'l': // late: the reply to a probe sent at the start
					d.Reply(now, 0)
				default:
					d.Miss(now)
				}
				if d.Health() != s.want {
					t.Fatalf("step %d (%c): %v, want %v", i, s.ev, d.Health(), s.want)
				}
			}
		})
	}
}

func TestDetectorSilenceAndIntervals(t *testing.T) {
	rtt := &rttEstimator{}
	rtt.Add(15*time.Millisecond, 0)
	d := newFailureDetector(DetectorConfig{})
	if got := d.ProbeInterval(rtt, true, false); got != 10*time.Millisecond {
		t.Errorf("verifying: interval %v, want the fast 10ms", got)
	}
	for i := range 3 {
		d.Reply(int64(i)*ms, int64(i)*ms)
	}
	if got := d.ProbeInterval(rtt, true, false); got != 30*time.Millisecond {
		t.Errorf("carrying: interval %v, want 30ms", got)
	}
	if got := d.ProbeInterval(rtt, false, false); got != 100*time.Millisecond {
		t.Errorf("idle: interval %v, want 100ms", got)
	}
	if got := d.ProbeInterval(rtt, false, true); got != time.Second {
		t.Errorf("quiet: interval %v, want 1s", got)
	}
	if got := d.MissTimeout(rtt); got != 60*time.Millisecond {
		// 2·15 ms + 4·7.5 ms = 60 ms, above the 40 ms floor.
		t.Errorf("miss timeout %v", got)
	}
	if got := d.FailTimeout(rtt); got != 200*time.Millisecond {
		t.Errorf("fail timeout %v, want the 200ms floor (8·15ms = 120ms)", got)
	}
	const sent = int64(1000 * ms)
	d.Silence(sent+99*ms, sent, rtt)
	if d.Health() != Healthy {
		t.Errorf("99 ms silent: %v, want healthy", d.Health())
	}
	d.Silence(sent+100*ms, sent, rtt)
	if d.Health() != Failing {
		t.Errorf("100 ms silent: %v, want failing", d.Health())
	}
	if got := d.ProbeInterval(rtt, true, false); got != 10*time.Millisecond {
		t.Errorf("failing: interval %v, want 10ms (max(fast, SRTT/2))", got)
	}
	if got := d.ProbeInterval(rtt, false, true); got != 10*time.Millisecond {
		t.Errorf("failing in a quiet session: interval %v, want 10ms: a path in doubt is settled fast", got)
	}
	d.Silence(sent+200*ms, sent, rtt)
	if d.Health() != Down {
		t.Errorf("200 ms silent: %v, want down", d.Health())
	}
	if got := d.ProbeInterval(rtt, true, false); got != 50*time.Millisecond {
		t.Errorf("down: interval %v, want 50ms", got)
	}
	if got := d.ProbeInterval(rtt, false, true); got != time.Second {
		t.Errorf("down in a quiet session: interval %v, want 1s", got)
	}
	d.Silence(sent+300*ms, 0, rtt)
	if d.Health() != Down {
		t.Errorf("nothing outstanding changed health to %v", d.Health())
	}
}
