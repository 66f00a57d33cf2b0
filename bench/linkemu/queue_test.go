package linkemu

import (
	"bytes"
	"testing"
)

// put reserves, fills and commits one packet of n bytes filled with tag.
func put(t *testing.T, q *queue, n int, deadline int64, tag byte) bool {
	t.Helper()
	b, pos, ok := q.reserve(n)
	if !ok {
		return false
	}
	if len(b) != n {
		t.Fatalf("reserve(%d) returned %d bytes", n, len(b))
	}
	for i := range b {
		b[i] = tag
	}
	q.commit(pos, n, deadline, n, 1)
	return true
}

func TestQueueOrder(t *testing.T) {
	q := newQueue(1000, 8)
	// Deadlines out of order (reordering jitter), two equal ones.
	for i, dl := range []int64{50, 10, 30, 30, 20} {
		if !put(t, q, 100, dl, byte(i)) {
			t.Fatalf("packet %d did not fit", i)
		}
	}
	q.pull()
	if q.waiting() != 0 {
		t.Fatalf("unpublished packets visible")
	}
	q.publish()
	q.pull()
	var tags []byte
	for q.waiting() > 0 {
		d := q.pop()
		tags = append(tags, q.bytes(d)[0])
		q.done(d)
	}
	// By deadline; equal deadlines in arrival order.
	if want := []byte{1, 4, 2, 3, 0}; !bytes.Equal(tags, want) {
		t.Fatalf("sent in order %v, want %v", tags, want)
	}
	if q.released.Load() != 5 || q.head.Load() != 500 {
		t.Fatalf("released %d, head %d after sending all", q.released.Load(), q.head.Load())
	}
}

func TestQueueArenaWrapAndFull(t *testing.T) {
	q := newQueue(1000, 64)
	for i := range 4 {
		if !put(t, q, 300, int64(i), byte(i)) {
			if i < 3 {
				t.Fatalf("packet %d did not fit", i)
			}
			break
		}
		if i == 3 {
			t.Fatalf("1200 bytes fit in a 1000-byte arena")
		}
	}
	q.publish()
	q.pull()
	// Sending the second packet first frees nothing: the first is older.
	first := q.pop()
	second := q.pop()
	q.done(second)
	if q.head.Load() != 0 {
		t.Fatalf("head %d moved past an unsent packet", q.head.Load())
	}
	if put(t, q, 300, 9, 9) {
		t.Fatalf("a packet fit before anything was released")
	}
	q.done(first)
	if q.head.Load() != 600 {
		t.Fatalf("head %d, want 600", q.head.Load())
	}
	// 100 bytes are left at the end of the arena: a 300-byte packet wraps
	// to the start.
	if !put(t, q, 300, 9, 9) {
		t.Fatalf("packet did not wrap around")
	}
	q.publish()
	q.pull()
	q.done(q.pop()) // the third packet
	d := q.pop()
	if got := q.bytes(d); got[0] != 9 || len(got) != 300 || &got[0] != &q.arena[0] {
		t.Fatalf("wrapped packet not at the start of the arena")
	}
	q.done(d)
	if q.waiting() != 0 || q.released.Load() != 4 {
		t.Fatalf("waiting %d, released %d", q.waiting(), q.released.Load())
	}
	if _, _, ok := q.reserve(1001); ok {
		t.Fatalf("reserved more than the arena")
	}
}

func TestQueueDescriptorsFull(t *testing.T) {
	q := newQueue(1<<20, 4)
	for i := range 4 {
		if !put(t, q, 10, 0, byte(i)) {
			t.Fatalf("packet %d did not fit", i)
		}
	}
	if put(t, q, 10, 0, 4) {
		t.Fatalf("a fifth packet fit in four descriptors")
	}
	q.publish()
	q.pull()
	q.done(q.pop())
	if !put(t, q, 10, 0, 4) {
		t.Fatalf("a released descriptor was not reused")
	}
}
