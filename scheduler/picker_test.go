package scheduler

import "testing"

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
