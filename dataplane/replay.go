package dataplane

import (
	"fmt"
	"sync/atomic"
)

// Replay window limits and default (RFC 4303 §3.4.3 asks for at least 32;
// several paths of one SA arrive with a skew of many packets, so the default
// is far larger than the 64 of a single-path IPsec stack). The default is
// 4064 rather than 4096: 127 blocks of 32 and the spare block fit a ring of
// 128 slots (1 KiB), where 4096 packets need 129 blocks and so a ring of
// 256 (2 KiB).
//
// An SA's window starts at no more than replayStartWindow (15 blocks in a
// ring of 16 slots, 128 bytes), or where SAConfig.ReplayWindowStart says,
// and grows to its full size (Grow) once its peer sends over several paths
// (Engine.RestoreOrder, Engine.GrowReplayWindow) or a packet arrives half
// the smaller window late: one path, even from a sender that
// seals on several cores, reorders by a batch or two of packets (128 each,
// conn.IdealBatchSize), well inside 480, and most of a gateway's clients
// have one path.
const (
	MinReplayWindow     = 32
	MaxReplayWindow     = 65536
	DefaultReplayWindow = 4064
	replayStartWindow   = 480
)

// ReplayWindow is the anti-replay window of one inbound SA (RFC 4303 §3.4.3),
// kept as a ring of bitmap blocks in the manner of RFC 6479.
//
// It is shaped for receivers on several cores opening packets of the same SA
// at once, without a lock: each ring slot is one atomic 64-bit word holding
// the number of the 32-packet block it currently describes (bits 32-62) and
// that block's bitmap (low half). Because the tag travels with the bits in one
// word, a slot is re-tagged for a newer block and its bits cleared in a single
// compare-and-swap: there is no moment in which a stale bitmap can be read for
// a new block or a cleared bitmap for an old one, which is what makes a plain
// RFC 6479 ring unsafe without a lock. The highest accepted sequence number is
// a separate atomic that only grows.
//
// A receiver calls Check before spending work on the ICV and Accept only after
// the ICV verified, so forged packets never move the window. Accept re-checks
// atomically: when two cores race with the same sequence number, exactly one
// wins.
//
// Growing replaces the ring with a larger one while receivers go on: every
// slot of the old ring is frozen (bit 63, one compare-and-swap: an Accept
// that finds its slot frozen starts again on the new ring) and its bits
// carried over; the new ring accepts nothing before the carrying is done,
// and whoever finds it unfinished finishes it (the work is idempotent). What
// the old ring may have forgotten, the blocks it had reused a slot for
// before it froze, lies below the new ring's floor: older packets are too
// old, as they were before the ring grew.
//
// The tag keeps the low 31 bits of the block number. A slot is judged against
// the window's top (see slotState), which is exact unless a slot goes
// untouched while the sequence number advances by 2^36; even then a mismatch
// can only reject a packet, never accept a replay.
type ReplayWindow struct {
	top  atomic.Uint64
	ring atomic.Pointer[replayRing]
	full uint32 // the size Grow grows the ring to
}

// replayRing is one ring of a ReplayWindow.
type replayRing struct {
	size  uint32 // W: sequence numbers top-W+1..top are inside the window
	floor atomic.Uint64
	// from is the smaller ring this one grew from, until its slots were
	// carried over (carryOver); this ring accepts nothing before.
	from  atomic.Pointer[replayRing]
	slots []atomic.Uint64 // a power of two of them
}

// slot returns the slot of block.
func (r *replayRing) slot(block uint64) *atomic.Uint64 {
	return &r.slots[block&uint64(len(r.slots)-1)]
}

const (
	replayBlockBits  = 32
	replayBlockShift = 5
	replayFrozen     = 1 << 63 // a slot of a ring that grew: go to the new one
	replayTagMask    = 1<<31 - 1
)

// newGrowingReplayWindow returns a window of start packets that Grow
// makes size packets (start ≤ size).
func newGrowingReplayWindow(start, size int) (*ReplayWindow, error) {
	if err := checkReplayWindowSize(size); err != nil {
		return nil, err
	}
	if start < MinReplayWindow || start > size {
		return nil, fmt.Errorf("replay window starting at %d packets: must be between %d and %d", start, MinReplayWindow, size)
	}
	w := &ReplayWindow{full: uint32(size)}
	w.ring.Store(newReplayRing(start))
	return w, nil
}

// checkReplayWindowSize refuses a window size out of bounds.
func checkReplayWindowSize(size int) error {
	if size < MinReplayWindow || size > MaxReplayWindow {
		return fmt.Errorf("replay window of %d packets: must be between %d and %d", size, MinReplayWindow, MaxReplayWindow)
	}
	return nil
}

func newReplayRing(size int) *replayRing {
	// One block more than the window covers, so that the oldest sequence
	// number inside the window never shares a slot with the newest.
	blocks := (size+replayBlockBits-1)/replayBlockBits + 1
	n := 1
	for n < blocks {
		n <<= 1
	}
	return &replayRing{size: uint32(size), slots: make([]atomic.Uint64, n)}
}

// Size returns the window's size in packets now (Grow may make it larger).
func (w *ReplayWindow) Size() int { return int(w.ring.Load().size) }

// Top returns the highest sequence number accepted so far (0 if none, and
// for the nil window of an outbound SA).
func (w *ReplayWindow) Top() uint64 {
	if w == nil {
		return 0
	}
	return w.top.Load()
}

// Check reports whether seq may be accepted: nil, ErrReplayed or ErrTooOld.
// It changes nothing. While the ring grows it says nil: Accept decides.
func (w *ReplayWindow) Check(seq uint64) error {
	r := w.ring.Load()
	if r.from.Load() != nil {
		return nil
	}
	block := seq >> replayBlockShift
	v := r.slot(block).Load()
	top := w.top.Load() // after the slot: see Accept
	if r.tooOld(seq, top) {
		return ErrTooOld
	}
	switch slotState(v, block, top>>replayBlockShift) {
	case slotNewer:
		return ErrTooOld
	case slotSame:
		if v&(1<<(seq&(replayBlockBits-1))) != 0 {
			return ErrReplayed
		}
	}
	return nil
}

// Accept marks seq as received, or returns ErrReplayed or ErrTooOld if it may
// not be. Call it only for packets whose ICV verified. A packet accepted half
// the window late grows a window that may grow.
func (w *ReplayWindow) Accept(seq uint64) error {
	if seq == 0 {
		return ErrTooOld
	}
	// Raise the top before touching the slot. A slot is then only ever
	// re-tagged for a block the top already covers, so whoever loads a slot
	// and then the top sees a top at least as new as the slot's tag, which
	// is what slotState relies on. A packet that turns out to be a replay
	// does not move the top: a replayed number is never above it.
	for {
		top := w.top.Load()
		if seq <= top || w.top.CompareAndSwap(top, seq) {
			break
		}
	}
	for {
		r := w.ring.Load()
		if r.from.Load() != nil {
			w.carryOver(r)
		}
		moved, err := r.accept(&w.top, seq)
		if moved {
			continue // the ring grew meanwhile
		}
		if err == nil && r.size < w.full && w.top.Load()-seq >= uint64(r.size/2) {
			w.Grow()
		}
		return err
	}
}

// accept is Accept on ring r; moved says r grew and seq must go to the
// new ring.
func (r *replayRing) accept(topp *atomic.Uint64, seq uint64) (moved bool, err error) {
	block := seq >> replayBlockShift
	bit := uint64(1) << (seq & (replayBlockBits - 1))
	slot := r.slot(block)
	for {
		v := slot.Load()
		if v&replayFrozen != 0 {
			return true, nil
		}
		top := topp.Load()
		if r.tooOld(seq, top) {
			return false, ErrTooOld
		}
		var next uint64
		switch slotState(v, block, top>>replayBlockShift) {
		case slotNewer:
			return false, ErrTooOld
		case slotSame:
			if v&bit != 0 {
				return false, ErrReplayed
			}
			next = v | bit
		case slotOlder:
			next = slotWord(block, bit)
		}
		if slot.CompareAndSwap(v, next) {
			return false, nil
		}
	}
}

// Grow makes the window its full size if it is smaller, and returns once
// it is (another core may be growing it too). Packets go on being checked
// and accepted meanwhile, on the old ring or the new one.
func (w *ReplayWindow) Grow() {
	if r := w.ring.Load(); r.size < w.full {
		n := newReplayRing(int(w.full))
		n.from.Store(r)
		w.ring.CompareAndSwap(r, n)
	}
	w.carryOver(w.ring.Load())
}

// carryOver freezes every slot of the ring n grew from, merges each one's
// bits into n, sets n's floor and then lets n accept. It is idempotent:
// every caller computes the same floor from the same frozen slots.
func (w *ReplayWindow) carryOver(n *replayRing) {
	from := n.from.Load()
	if from == nil {
		return
	}
	topBlock := w.top.Load() >> replayBlockShift
	var newest uint64
	for i := range from.slots {
		s := &from.slots[i]
		v := s.Load()
		for v&replayFrozen == 0 {
			if s.CompareAndSwap(v, v|replayFrozen) {
				v |= replayFrozen
				break
			}
			v = s.Load()
		}
		if uint32(v) == 0 {
			continue // no packet of the block it names: nothing to carry
		}
		// A slot is only ever tagged for a block the top covers, so
		// the block lies at or below the top's.
		block := topBlock - uint64((uint32(topBlock)-slotTag(v))&replayTagMask)
		newest = max(newest, block)
		n.merge(block, uint32(v), topBlock)
	}
	// Tags only grow, so the old ring never took a packet of a block above
	// the newest it names, and a block within len(slots) of that one kept
	// its slot; older ones may have lost theirs.
	if oldBlocks := uint64(len(from.slots)); newest >= oldBlocks {
		n.floor.Store((newest - oldBlocks + 1) << replayBlockShift)
	}
	n.from.CompareAndSwap(from, nil)
}

// merge sets bits, the bitmap of block, in r.
func (r *replayRing) merge(block uint64, bits uint32, topBlock uint64) {
	slot := r.slot(block)
	for {
		v := slot.Load()
		var next uint64
		switch slotState(v, block, topBlock) {
		case slotNewer:
			return
		case slotSame:
			next = v | uint64(bits)
		case slotOlder:
			next = slotWord(block, uint64(bits))
		}
		if next == v || slot.CompareAndSwap(v, next) {
			return
		}
	}
}

// tooOld reports whether seq lies left of the window whose top is top.
// Sequence number 0 is never sent (RFC 4303 §3.3.3).
func (r *replayRing) tooOld(seq, top uint64) bool {
	return seq == 0 || (seq < top && top-seq >= uint64(r.size)) || seq < r.floor.Load()
}

const (
	slotOlder = iota // describes an older block (or none): free to re-tag
	slotSame         // describes block
	slotNewer        // describes a newer block: block has left the window
)

// slotWord is the slot word of block with bitmap bits.
func slotWord(block, bits uint64) uint64 {
	return uint64(uint32(block)&replayTagMask)<<32 | bits
}

// slotTag returns the block tag of slot word v (without the frozen bit).
func slotTag(v uint64) uint32 { return uint32(v>>32) & replayTagMask }

// slotState tells what a slot word v means for block, given the block of the
// window's top. The tag holds only the low 31 bits of a block number: a
// newer block can only lie between block and topBlock, so a tag is newer
// exactly when its distance above block fits in that range.
func slotState(v, block, topBlock uint64) int {
	tag := slotTag(v)
	own := uint32(block) & replayTagMask
	switch {
	case tag == own:
		return slotSame
	case block < topBlock && uint64((tag-own)&replayTagMask) <= topBlock-block:
		return slotNewer
	}
	return slotOlder
}

// FirstMissing returns the lowest sequence number among the last span
// below the top (and inside the window) that has not been accepted, or
// top+1 when every one of them was; 1 before anything was accepted.
// Packets may arrive meanwhile: it is a snapshot.
func (w *ReplayWindow) FirstMissing(span uint64) uint64 {
	top := w.top.Load()
	if top == 0 {
		return 1
	}
	span = min(span, uint64(w.ring.Load().size))
	low := uint64(1)
	if top > span {
		low = top - span + 1
	}
	for seq := low; seq <= top; seq++ {
		if w.Check(seq) == nil {
			return seq
		}
	}
	return top + 1
}

// InferSequence reconstructs the 64-bit extended sequence number of a packet
// from the 32 bits on the wire, as in RFC 4303 Appendix A2.2: the high half
// is the one that places seq inside or just ahead of the window.
func (w *ReplayWindow) InferSequence(low uint32) uint64 {
	top := w.top.Load()
	size := w.ring.Load().size
	topHigh, topLow := uint32(top>>32), uint32(top)
	bottom := topLow - size + 1 // may wrap: that is case B
	high := topHigh
	if topLow >= size-1 {
		// Case A: the window lies within one 2^32 subspace.
		if low < bottom {
			high = topHigh + 1
		}
	} else if low >= bottom && topHigh > 0 {
		// Case B: the window spans two subspaces and low is in the older one.
		high = topHigh - 1
	}
	return uint64(high)<<32 | uint64(low)
}
