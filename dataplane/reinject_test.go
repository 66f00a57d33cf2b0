package dataplane

import (
	"bytes"
	"testing"
)

// TestSentRing checks the ring of kept datagrams: it holds the last
// sentRingSlots, collect returns those of one member of one group sent
// since a moment, oldest first, and each only once; datagrams too large
// for a slot are not kept; forget drops a group's.
func TestSentRing(t *testing.T) {
	var r sentRing
	g1, g2 := &PathGroup{}, &PathGroup{}
	m0, m1 := GroupMember{Path: 0}, GroupMember{Path: 1}
	pkt := func(n int) []byte { return bytes.Repeat([]byte{byte(n)}, 100+n%50) }
	total := sentRingSlots + 500 // wraps around
	r.mu.Lock()
	for n := range total {
		m := m0
		if n%2 == 1 {
			m = m1
		}
		g := g1
		if n%10 == 9 {
			g = g2
		}
		r.keep(g, m, pkt(n), int64(n))
	}
	r.keep(g1, m1, make([]byte, sentSlotSize+1), int64(total)) // too large: not kept
	r.mu.Unlock()

	since := int64(total - 1000)
	got := r.collect(g1, m1, since, nil)
	var want []int
	for n := total - 1000; n < total; n++ {
		if n%2 == 1 && n%10 != 9 {
			want = append(want, n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("collected %d datagrams, want %d", len(got), len(want))
	}
	for i, c := range got {
		if c.at != int64(want[i]) || !bytes.Equal(c.pkt, pkt(want[i])) {
			t.Fatalf("datagram %d: sent at %d, %d bytes; want the one sent at %d", i, c.at, len(c.pkt), want[i])
		}
	}
	if again := r.collect(g1, m1, since, nil); len(again) != 0 {
		t.Fatalf("collected %d datagrams a second time", len(again))
	}
	// The oldest were overwritten: from 0, only what the ring still holds.
	all := r.collect(g1, m0, 0, nil)
	if len(all) == 0 {
		t.Fatal("nothing collected from the start")
	}
	if all[0].at < int64(total-sentRingSlots) {
		t.Fatalf("the first datagram collected was sent at %d: older than the ring holds", all[0].at)
	}
	r.forget(g2)
	if left := r.collect(g2, m1, 0, nil); len(left) != 0 {
		t.Fatalf("%d datagrams of a forgotten group", len(left))
	}
	var empty sentRing
	if got := empty.collect(g1, m0, 0, nil); len(got) != 0 {
		t.Fatal("an empty ring returned datagrams")
	}
	empty.forget(g1)
}
