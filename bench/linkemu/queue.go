package linkemu

import "sync/atomic"

// queue hands packets from the receiving goroutine of a direction (the only
// producer) to its sending goroutine (the only consumer) without locks.
//
// Packet bytes live in a byte arena used as a ring: the producer appends at
// tail, the consumer releases from head in arrival order. Descriptors live in
// a ring of fixed size. The consumer may send out of arrival order (jitter
// with reordering); it then marks descriptors sent and releases memory only
// up to the oldest unsent one.
type queue struct {
	arena []byte
	descs []desc
	mask  uint64

	// Producer side.
	tail uint64 // arena position after the last packet
	next uint64 // index of the next descriptor

	// Shared: published by the producer / by the consumer.
	produced atomic.Uint64 // descriptors [0, produced) are filled in
	released atomic.Uint64 // descriptors [0, released) are free again
	head     atomic.Uint64 // arena bytes before head are free again

	// Consumer side.
	pulled uint64 // descriptors [released, pulled) are in the heap or sent
	heap   []uint64
}

// desc describes one packet in the arena: the virtio-net header and the
// frame, contiguous.
type desc struct {
	start, end uint64 // arena positions (monotonic, not wrapped)
	deadline   int64
	wire       uint32 // wire bytes counted for statistics
	pkts       uint32 // wire-size packets it stands for (a super-frame counts as its segments)
	sent       bool
}

func newQueue(arenaSize, descs int) *queue {
	n := 1
	for n < descs {
		n <<= 1
	}
	return &queue{
		arena: make([]byte, arenaSize),
		descs: make([]desc, n),
		mask:  uint64(n - 1),
		heap:  make([]uint64, 0, n),
	}
}

// reserve returns room for n bytes and its arena position, or ok false when
// the arena or the descriptor ring is full. The caller fills the bytes and
// calls commit.
func (q *queue) reserve(n int) (buf []byte, pos uint64, ok bool) {
	size := uint64(len(q.arena))
	if uint64(n) > size || q.next-q.released.Load() >= uint64(len(q.descs)) {
		return nil, 0, false
	}
	pos = q.tail
	off := pos % size
	if off+uint64(n) > size {
		pos += size - off // skip the end of the arena
		off = 0
	}
	if pos+uint64(n)-q.head.Load() > size {
		return nil, 0, false
	}
	return q.arena[off : off+uint64(n)], pos, true
}

// commit adds a descriptor for n bytes written at pos (from reserve). It
// becomes visible to the consumer at publish.
func (q *queue) commit(pos uint64, n int, deadline int64, wire, pkts int) {
	d := &q.descs[q.next&q.mask]
	*d = desc{start: pos, end: pos + uint64(n), deadline: deadline, wire: uint32(wire), pkts: uint32(pkts)}
	q.next++
	q.tail = pos + uint64(n)
}

// publish makes the committed descriptors visible to the consumer.
func (q *queue) publish() { q.produced.Store(q.next) }

// pull moves newly published descriptors into the consumer's heap.
func (q *queue) pull() {
	p := q.produced.Load()
	for ; q.pulled < p; q.pulled++ {
		q.push(q.pulled)
	}
}

// earliest is the descriptor with the smallest deadline (ties: the oldest).
func (q *queue) earliest() (*desc, bool) {
	if len(q.heap) == 0 {
		return nil, false
	}
	return &q.descs[q.heap[0]&q.mask], true
}

// bytes returns the arena bytes of d.
func (q *queue) bytes(d *desc) []byte {
	size := uint64(len(q.arena))
	off := d.start % size
	return q.arena[off : off+(d.end-d.start)]
}

// pop removes the earliest descriptor from the heap; the caller marks it
// done once its bytes are no longer needed.
func (q *queue) pop() *desc {
	idx := q.heap[0]
	last := len(q.heap) - 1
	q.heap[0] = q.heap[last]
	q.heap = q.heap[:last]
	q.down(0)
	return &q.descs[idx&q.mask]
}

// done marks d sent (or dropped) and frees everything up to the oldest
// descriptor still waiting.
func (q *queue) done(d *desc) {
	d.sent = true
	r := q.released.Load()
	end := q.head.Load()
	advanced := false
	for r < q.pulled {
		o := &q.descs[r&q.mask]
		if !o.sent {
			break
		}
		end = o.end
		r++
		advanced = true
	}
	if advanced {
		q.head.Store(end)
		q.released.Store(r)
	}
}

// waiting is the number of descriptors in the heap.
func (q *queue) waiting() int { return len(q.heap) }

func (q *queue) less(a, b uint64) bool {
	da, db := q.descs[a&q.mask].deadline, q.descs[b&q.mask].deadline
	return da < db || (da == db && a < b)
}

func (q *queue) push(idx uint64) {
	q.heap = append(q.heap, idx)
	i := len(q.heap) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !q.less(q.heap[i], q.heap[parent]) {
			break
		}
		q.heap[i], q.heap[parent] = q.heap[parent], q.heap[i]
		i = parent
	}
}

func (q *queue) down(i int) {
	n := len(q.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && q.less(q.heap[r], q.heap[l]) {
			m = r
		}
		if !q.less(q.heap[m], q.heap[i]) {
			return
		}
		q.heap[i], q.heap[m] = q.heap[m], q.heap[i]
		i = m
	}
}
