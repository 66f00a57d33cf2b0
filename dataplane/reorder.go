package dataplane

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mifsec/mifsec/scheduler"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// restoreOrderSpan is how far back RestoreOrder looks for a packet still
// missing: what the slower path may have in flight (25 ms of a 100 Mbit/s
// path is about 200 packets), not a gap left long ago.
const restoreOrderSpan = 512

// handleNone marks a sequence number with no packet to write.
const handleNone = scheduler.Handle(1<<32 - 1)

// Held packets are copied into buffers shared by every SA (a pool): an SA
// holds memory only for what it holds now, and a buffer that had to grow
// for an outsized packet (a peer can send up to 64 KiB in one datagram) is
// not kept. slotKeep covers an inner packet of a 1500-byte MTU with room.
const slotKeep = Headroom + 2048

type slotBuf struct{ b []byte }

var slotPool = sync.Pool{New: func() any { return &slotBuf{b: make([]byte, 0, slotKeep)} }}

// putSlot returns sb to the pool, unless it grew past slotKeep.
func putSlot(sb *slotBuf) {
	if cap(sb.b) > slotKeep {
		return
	}
	sb.b = sb.b[:0]
	slotPool.Put(sb)
}

// orderedPacket is one opened packet of an SA that restores order.
type orderedPacket struct {
	ro  *reorder
	pkt []byte // in a worker buffer, Headroom included; nil: nothing to write
	seq uint64
	src scheduler.PathID
}

// reorder is one inbound SA's resequencing state: it restores order across
// paths. When a peer spreads one SA's packets over
// several paths, they arrive out of order: a TCP receiver takes that for
// loss. An inbound SA may therefore restore the ESP sequence order before
// its packets reach the TUN device, with the scheduler's Resequencer
// deciding what waits and for how long.
//
// Shape: the receive workers (one per path socket) decrypt a batch without
// any lock, as for every SA. At the end of the batch, where the packets go
// to the TUN device, a worker takes the SA's reorder lock once, offers the
// batch's packets of that SA to the resequencer in arrival order and writes
// whatever it releases — in order — to the TUN device before it lets go of
// the lock; a timer does the same for gaps given up on time. Writing under
// the lock is what keeps the order: two workers (or a worker and the timer)
// cannot interleave their releases.
//
// Every write of the SA goes through one TUN queue, q, whichever worker
// makes it: the queue of the path the SA first came on, which wrote its
// packets before order was restored. The kernel steers a flow's packets
// out of a multi-queue TUN device through the queue that last wrote the
// flow's packets in the other direction (tun's automatic flow steering):
// a TCP flow's acknowledgements written by two path workers, each through
// its own queue, moved its data from one outbound worker to the other and
// back, the two sealed packets of the flow in either order, and the
// receiver, which restores the ESP sequence, handed TCP the flow out of
// order (gateway-aggregation-down: spurious retransmissions in slow start
// with nothing out of order at the resequencer, and CUBIC's slow growth
// from a window of 150).
//
// Packets released the moment they arrive are written from the worker's
// buffer; only packets that must wait are copied into the SA's slot
// buffers, so in-order traffic costs one uncontended lock per batch and no
// copy.
//
// Packets that occupy a sequence number but go nowhere (probes, dummies,
// packets dropped by the selector check) are offered too, so that they do
// not leave gaps that would be waited for.
//
// mu is taken after the Engine's inMu, never before it.
type reorder struct {
	e *Engine
	q wgtun.Device // where every release of the SA is written

	mu      sync.Mutex
	rs      *scheduler.Resequencer
	slots   []*slotBuf // held packets' copies, by handle; nil when free
	free    []scheduler.Handle
	out     []scheduler.Handle // scratch: what the resequencer released
	writes  [][]byte           // scratch: what goes to the TUN device, in order
	release []scheduler.Handle // scratch: slots to free after the write
	timer   *time.Timer
	closed  bool
}

func newReorder(e *Engine, q wgtun.Device, cfg scheduler.ResequencerConfig) (*reorder, error) {
	rs, err := scheduler.NewResequencer(cfg)
	if err != nil {
		return nil, err
	}
	n := cfg.Slots
	if n == 0 {
		n = 4096
	}
	r := &reorder{e: e, q: q, rs: rs, slots: make([]*slotBuf, n+1), free: make([]scheduler.Handle, 0, n+1),
		out: make([]scheduler.Handle, 0, n+1), writes: make([][]byte, 0, n+1), release: make([]scheduler.Handle, 0, n+1)}
	for h := n; h >= 0; h-- {
		r.free = append(r.free, scheduler.Handle(h))
	}
	r.timer = time.AfterFunc(time.Hour, r.expire)
	r.timer.Stop()
	return r, nil
}

// deliver offers the packets of pkts that belong to r, in order, and
// writes what is released to r.q. It runs on a receive worker.
func (r *reorder) deliver(pkts []orderedPacket) {
	now := scheduler.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range pkts {
		if p.ro != r {
			continue
		}
		h := handleNone
		if p.pkt != nil && len(r.free) > 0 {
			h = r.free[len(r.free)-1] // taken only if the packet is held
		}
		out, dropped := r.rs.Push(p.seq, p.src, now, h, r.out[:0])
		r.out = out
		if dropped {
			continue
		}
		held := p.pkt != nil
		for _, o := range out {
			switch {
			case o == handleNone:
			case o == h && held:
				r.writes = append(r.writes, p.pkt)
				held = false
			default:
				r.writes = append(r.writes, r.slots[o].b)
				r.release = append(r.release, o)
			}
		}
		if held {
			if h == handleNone {
				// No slot: write it now rather than lose it (it cannot
				// happen while the slots outnumber the resequencer's ring).
				r.writes = append(r.writes, p.pkt)
				continue
			}
			r.free = r.free[:len(r.free)-1]
			sb := slotPool.Get().(*slotBuf)
			sb.b = append(sb.b[:0], p.pkt...)
			r.slots[h] = sb
		}
	}
	r.flush(now)
}

// expire gives up gaps whose wait is over and writes what follows them.
func (r *reorder) expire() {
	now := scheduler.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.out = r.rs.Expire(now, r.out[:0])
	for _, o := range r.out {
		if o != handleNone {
			r.writes = append(r.writes, r.slots[o].b)
			r.release = append(r.release, o)
		}
	}
	r.flush(now)
}

// flush writes r.writes to r.q, frees the written slots and sets the
// timer for the next deadline; r.mu is held.
func (r *reorder) flush(now int64) {
	r.writes = r.e.writeTUN(r.q, r.writes)
	for _, o := range r.release {
		putSlot(r.slots[o])
		r.slots[o] = nil
	}
	r.free = append(r.free, r.release...)
	r.release = r.release[:0]
	if at, ok := r.rs.NextDeadline(); ok && !r.closed {
		r.timer.Reset(time.Duration(max(at-now, 0)))
	}
}

// close stops the timer; what is still held is dropped with the SA.
func (r *reorder) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.timer.Stop()
	for i, sb := range r.slots {
		if sb != nil {
			putSlot(sb)
			r.slots[i] = nil
		}
	}
}

// GrowReplayWindow makes the replay windows of the inbound SA spi and of
// its probe SA their full size now. Use it for an SA whose peer has
// several paths: when a path fails, the peer sends again what it took, and
// those copies can arrive many packets behind what the next path carried
// meanwhile, beyond the window an SA starts with; probes come over every
// path, a slow path's far behind the others'. (RestoreOrder grows them
// too.)
func (e *Engine) GrowReplayWindow(spi uint32) error {
	e.inMu.Lock()
	defer e.inMu.Unlock()
	in := e.dataEntry(spi)
	if in == nil {
		return fmt.Errorf("growing the replay window: no inbound SA %#x", spi)
	}
	in.sa.growWindows()
	return nil
}

// RestoreOrder makes the inbound SA spi deliver its packets in sequence
// order: packets that arrive ahead of a gap wait (bounded by cfg) for the
// gap to fill. Use it for an SA whose peer spreads packets over several
// paths.
func (e *Engine) RestoreOrder(spi uint32, cfg scheduler.ResequencerConfig) error {
	e.inMu.Lock()
	defer e.inMu.Unlock()
	in := e.dataEntry(spi)
	if in == nil {
		return fmt.Errorf("restoring order: no inbound SA %#x", spi)
	}
	if in.reorder.Load() != nil {
		return nil
	}
	// Paths with different delays reorder by many packets: the full
	// windows from now on.
	in.sa.growWindows()
	if cfg.First == 0 {
		// Start at the oldest packet not yet received: on a new SA its
		// first packet, which may not be the first to arrive; on an SA
		// that already carries traffic (a gateway restores order once
		// the client's second path is announced) a packet still in
		// flight on the slower path, which would otherwise be taken for
		// late and reach TCP out of order.
		cfg.First = in.sa.ReplayWindow().FirstMissing(restoreOrderSpan)
	}
	// The queue the SA's packets went through so far, its first path's:
	// a new one would move its flows' other direction to another
	// outbound worker mid-flow, the very reordering this queue avoids.
	q := e.cfg.Queues[int(spi%uint32(len(e.cfg.Queues)))]
	if k := in.sources.first[0].key.Load(); k != nil {
		q = e.queueOf(k.path)
	}
	r, err := newReorder(e, q, cfg)
	if err != nil {
		return fmt.Errorf("restoring order for SA %#x: %w", spi, err)
	}
	in.reorder.Store(r)
	return nil
}

// SetOrderDelays tells the resequencer of SA spi how far apart its paths'
// one-way delays are and how much they vary, which sets how long a gap is
// waited for.
func (e *Engine) SetOrderDelays(spi uint32, spread, jitter time.Duration) error {
	r := e.reorderOf(spi)
	if r == nil {
		return errors.New("setting order delays: SA does not restore order")
	}
	r.mu.Lock()
	r.rs.SetDelays(spread, jitter)
	r.mu.Unlock()
	return nil
}

// SetOrderPaths tells the resequencer of SA spi over how many paths the
// peer spreads it: loss is inferred early only while that many deliver.
func (e *Engine) SetOrderPaths(spi uint32, paths int) error {
	r := e.reorderOf(spi)
	if r == nil {
		return errors.New("setting order paths: SA does not restore order")
	}
	r.mu.Lock()
	r.rs.SetExpectedPaths(paths)
	r.mu.Unlock()
	return nil
}

// OrderStats returns the resequencer counters of SA spi and how many
// packets it holds; ok is false when the SA does not restore order.
func (e *Engine) OrderStats(spi uint32) (stats scheduler.ResequencerStats, held int, ok bool) {
	r := e.reorderOf(spi)
	if r == nil {
		return stats, 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rs.Stats, r.rs.Held(), true
}

func (e *Engine) reorderOf(spi uint32) *reorder {
	in := e.dataEntry(spi)
	if in == nil {
		return nil
	}
	return in.reorder.Load()
}
