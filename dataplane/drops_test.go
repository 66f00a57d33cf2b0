package dataplane

import (
	"sync"
	"testing"
)

// TestDropCountersLazy: counters hold nothing until the first drop, and
// goroutines whose first drops race all count: the one that allocates
// the counters first wins and no drop is lost with a losing allocation.
func TestDropCountersLazy(t *testing.T) {
	var c DropCounters
	if c.Get(DropRunt) != 0 || len(c.Snapshot()) != 0 || c.counts.Load() != nil {
		t.Fatalf("zero counters: %v, allocated %v", c.Snapshot(), c.counts.Load() != nil)
	}
	const goroutines, each = 8, 1000
	for range 20 {
		c = DropCounters{}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range each {
					c.Add(DropReason(i % 2))
				}
			}()
		}
		close(start)
		wg.Wait()
		if got := c.Get(0) + c.Get(1); got != goroutines*each {
			t.Fatalf("%d drops counted, want %d", got, goroutines*each)
		}
	}
	c.Add(numDropReasons) // out of range: ignored
	if got := c.Snapshot(); len(got) != 2 || got[DropReason(0).String()] != goroutines/2*each {
		t.Fatalf("snapshot %v", got)
	}
}
