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
// 256 (2 KiB), on every inbound SA of a gateway's clients.
const (
	MinReplayWindow     = 32
	MaxReplayWindow     = 65536
	DefaultReplayWindow = 4064
)

// ReplayWindow is the anti-replay window of one inbound SA (RFC 4303 §3.4.3),
// kept as a ring of bitmap blocks in the manner of RFC 6479.
//
// It is shaped for receivers on several cores opening packets of the same SA
// at once, without a lock: each ring slot is one atomic 64-bit word holding
// the number of the 32-packet block it currently describes (high half) and
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
// The tag keeps the low 32 bits of the block number. A slot is judged against
// the window's top (see slotState), which is exact unless a slot goes
// untouched while the sequence number advances by 2^37; even then a mismatch
// can only reject a packet, never accept a replay.
type ReplayWindow struct {
	size  uint64 // W: sequence numbers top-W+1..top are inside the window
	mask  uint64 // number of slots - 1 (a power of two)
	top   atomic.Uint64
	slots []atomic.Uint64
}

const (
	replayBlockBits  = 32
	replayBlockShift = 5
)

// newReplayWindow returns a window of size packets, between MinReplayWindow
// and MaxReplayWindow.
func newReplayWindow(size int) (*ReplayWindow, error) {
	if size < MinReplayWindow || size > MaxReplayWindow {
		return nil, fmt.Errorf("replay window of %d packets: must be between %d and %d", size, MinReplayWindow, MaxReplayWindow)
	}
	// One block more than the window covers, so that the oldest sequence
	// number inside the window never shares a slot with the newest.
	blocks := (size+replayBlockBits-1)/replayBlockBits + 1
	n := 1
	for n < blocks {
		n <<= 1
	}
	return &ReplayWindow{size: uint64(size), mask: uint64(n - 1), slots: make([]atomic.Uint64, n)}, nil
}

// Size returns the window size in packets.
func (w *ReplayWindow) Size() int { return int(w.size) }

// Top returns the highest sequence number accepted so far (0 if none).
func (w *ReplayWindow) Top() uint64 { return w.top.Load() }

// Check reports whether seq may be accepted: nil, ErrReplayed or ErrTooOld.
// It changes nothing.
func (w *ReplayWindow) Check(seq uint64) error {
	block := seq >> replayBlockShift
	v := w.slots[block&w.mask].Load()
	top := w.top.Load() // after the slot: see Accept
	if w.tooOld(seq, top) {
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
// not be. Call it only for packets whose ICV verified.
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
	block := seq >> replayBlockShift
	bit := uint64(1) << (seq & (replayBlockBits - 1))
	slot := &w.slots[block&w.mask]
	for {
		v := slot.Load()
		top := w.top.Load()
		if w.tooOld(seq, top) {
			return ErrTooOld
		}
		var next uint64
		switch slotState(v, block, top>>replayBlockShift) {
		case slotNewer:
			return ErrTooOld
		case slotSame:
			if v&bit != 0 {
				return ErrReplayed
			}
			next = v | bit
		case slotOlder:
			next = uint64(uint32(block))<<32 | bit
		}
		if slot.CompareAndSwap(v, next) {
			return nil
		}
	}
}

// tooOld reports whether seq lies left of the window whose top is top.
// Sequence number 0 is never sent (RFC 4303 §3.3.3).
func (w *ReplayWindow) tooOld(seq, top uint64) bool {
	return seq == 0 || (seq < top && top-seq >= w.size)
}

const (
	slotOlder = iota // describes an older block (or none): free to re-tag
	slotSame         // describes block
	slotNewer        // describes a newer block: block has left the window
)

// slotState tells what a slot word v means for block, given the block of the
// window's top. The tag holds only the low 32 bits of a block number: a
// newer block can only lie between block and topBlock, so a tag is newer
// exactly when its distance above block fits in that range.
func slotState(v, block, topBlock uint64) int {
	tag := uint32(v >> 32)
	switch {
	case tag == uint32(block):
		return slotSame
	case block < topBlock && uint64(tag-uint32(block)) <= topBlock-block:
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
	span = min(span, w.size)
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
	topHigh, topLow := uint32(top>>32), uint32(top)
	bottom := topLow - uint32(w.size) + 1 // may wrap: that is case B
	high := topHigh
	if topLow >= uint32(w.size)-1 {
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
