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
