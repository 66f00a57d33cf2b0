package dataplane

import (
	"bytes"
	"testing"
	"time"

	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
)

// TestReorderSlotsBounded: what an SA holds waits in buffers of a shared
// pool, returned when released; a buffer grown for an outsized packet (an
// authenticated peer may send 64 KiB in one datagram) is not kept, so an
// SA holds memory only for what it holds now.
func TestReorderSlotsBounded(t *testing.T) {
	mem, err := tun.NewMemory(tun.MemoryConfig{RecordWrites: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	e := &Engine{}
	r, err := newReorder(e, mem, scheduler.ResequencerConfig{Slots: 64, First: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	// Two paths, only one of which delivers so far: a gap waits.
	r.rs.SetExpectedPaths(2)
	r.rs.SetDelays(50*time.Millisecond, 10*time.Millisecond)
	pkt := func(n int, fill byte) []byte {
		b := bytes.Repeat([]byte{fill}, Headroom+n)
		// A minimal IPv4 header so the memory TUN takes it.
		b[Headroom] = 0x45
		b[Headroom+2], b[Headroom+3] = byte(n>>8), byte(n)
		return b
	}
	// 2..9 arrive before 1: held, one of them outsized.
	var held []orderedPacket
	for seq := uint64(2); seq <= 9; seq++ {
		size := 1400
		if seq == 5 {
			size = 60000
		}
		held = append(held, orderedPacket{ro: r, pkt: pkt(size, byte(seq)), seq: seq})
	}
	r.deliver(held)
	inUse := 0
	var big *slotBuf
	for _, sb := range r.slots {
		if sb != nil {
			inUse++
			if cap(sb.b) > slotKeep {
				big = sb
			}
		}
	}
	if inUse != 8 || big == nil {
		t.Fatalf("%d slots in use (want 8), outsized buffer %v", inUse, big != nil)
	}
	// 1 arrives: all nine are written in order and the slots go back.
	r.deliver([]orderedPacket{{ro: r, pkt: pkt(100, 1), seq: 1}})
	for i := 1; i <= 9; i++ {
		got := <-mem.Writes()
		if got[len(got)-1] != byte(i) {
			t.Fatalf("write %d carries %d: out of order", i, got[len(got)-1])
		}
	}
	for i, sb := range r.slots {
		if sb != nil {
			t.Fatalf("slot %d still holds %d bytes after its release", i, len(sb.b))
		}
	}
	// The pool never hands out the outsized buffer again.
	for range 100 {
		sb := slotPool.Get().(*slotBuf)
		if sb == big || cap(sb.b) > slotKeep {
			t.Fatal("an outsized buffer went back to the pool")
		}
		defer slotPool.Put(sb)
	}
}
