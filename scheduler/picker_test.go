package scheduler

import (
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

func TestPolicyPicker(t *testing.T) {
	s := New(Config{})
	now := int64(0)
	cp := NewPolicyPicker(s, PolicyOffload, 7)
	cp.clock = func() int64 { return now }
	var p Picker = cp
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
	if got := p.Pick(1400); got != 2 {
		t.Fatalf("only cellular verified: %d, want 2", got)
	}
	now = verify(t, s, 1, now, 10*time.Millisecond, 1e6, 3)
	if got := p.Pick(1400); got != 1 {
		t.Fatalf("WLAN verified: %d, want 1 (offload prefers WLAN)", got)
	}
}
