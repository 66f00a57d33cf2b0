package scheduler

import (
	"errors"
	"fmt"
	"time"
)

// Handle names a packet buffer the caller owns; the resequencer stores
// handles, never packets.
type Handle uint32

// ResequencerConfig sizes and tunes a Resequencer. Zero fields take the
// defaults.
type ResequencerConfig struct {
	// Slots is the number of packets that can be held, a power of two
	// (default 4096, the replay window's default): a packet more than
	// Slots ahead of the first missing one forces the oldest gaps out.
	Slots int
	// MinWait and MaxWait clamp how long a gap is waited for
	// (defaults 1 ms and 100 ms).
	MinWait, MaxWait time.Duration
	// ActiveWindow: a path counts as active for loss inference while it
	// delivered something within this long (default MaxWait).
	ActiveWindow time.Duration
	// ReorderWindow is how long a gap is still waited for once every
	// active path has delivered something beyond it (default 1 ms). A
	// path is nearly FIFO, not quite: a sender whose flow moves between
	// cores, or a virtual link that queues per CPU, swaps a few packets
	// on one path, and a gap given up at once comes out of order. A
	// packet that arrives after its gap was inferred lost teaches a
	// longer window (never longer than the wait), forgotten again after
	// learnedDecay without another.
	ReorderWindow time.Duration
	// First is the first sequence number to expect (ESP starts at 1 on a
	// new SA); 0 starts from the first packet pushed, whatever it is.
	First uint64
	// ExpectedPaths is SetExpectedPaths from the start: a resequencer
	// made once a second path is known must not infer a loss from the
	// first path alone before it is told the count.
	ExpectedPaths int
}

// ResequencerStats counts what a Resequencer did. Every pushed handle is
// returned exactly once except Duplicates, which are returned to the
// caller as dropped.
type ResequencerStats struct {
	InOrder    uint64 // arrived in order, released at once
	Held       uint64 // arrived early and were held
	Released   uint64 // held packets released in order when their gap filled or was given up
	Timeouts   uint64 // gaps given up because the wait expired
	LostEarly  uint64 // gaps given up at once: every active path had delivered something newer
	Overflow   uint64 // gaps given up because the ring was full
	Late       uint64 // arrived after their gap was given up (delivered)
	Reordered  uint64 // of Late: their gap had been inferred lost (LostEarly), so their path reordered
	Duplicates uint64 // already held or delivered (dropped)
}

// Resequencer restores one SA's ESP sequence order at the receiver
// (DESIGN.md "Resequencer"). Packets that arrive ahead of a gap are held
// in a fixed ring; the gap is given up
//
//   - at once when every active path has already delivered a later sequence
//     number (each path delivers in order, so the missing packet is lost,
//     not late),
//   - when the oldest held packet has waited Wait() (the paths' delay
//     difference plus jitter, or what late arrivals and gaps filled near
//     their deadline taught, clamped to MinWait…MaxWait),
//   - when the ring is full.
//
// A packet arriving after its gap was given up is delivered anyway and
// counted Late: TCP copes better with a late segment than with a lost one.
//
// A Resequencer is owned by one goroutine at a time (ordering is a merge
// of all paths, so its state is inherently shared): the receive side
// serialises access per SA. Push and Expire make no allocation; they
// append to the caller's slice, which needs capacity for Slots+1 handles
// in the worst case.
type Resequencer struct {
	cfg   ResequencerConfig
	mask  uint64
	slots []reseqSlot

	next     uint64 // first sequence number not yet released or given up
	started  bool
	highest  uint64 // highest sequence number seen
	held     int
	headWait int64 // arrival of the oldest held packet (0: none held)

	pathMax  [MaxPaths]uint64
	pathSeen [MaxPaths]int64
	pathSet  PathSet // paths that ever delivered
	expected int     // SetExpectedPaths

	base       time.Duration // from SetDelays
	hasBase    bool          // SetDelays was called
	learned    time.Duration // from late arrivals and gaps filled near their deadline
	lastLesson int64         // when learned last grew
	wait       time.Duration

	// Loss inference with a reorder window: evidentAt is when every
	// active path was seen beyond the gap at next (evident says it is
	// known for next); reorder is the window now, reorderLate when a
	// late packet last taught it.
	evident     bool
	evidentAt   int64
	reorder     time.Duration
	reorderLate int64

	Stats ResequencerStats
}

type reseqSlot struct {
	seq     uint64
	arrived int64
	handle  Handle
	state   uint8
}

const (
	slotEmpty uint8 = iota
	slotHeld
	slotDone        // released
	slotSkipped     // given up on time or for lack of room; arrived holds the moment it was
	slotSkippedLost // given up as lost (every path was past it); arrived holds the moment it was
)

// ErrResequencerConfig reports an invalid configuration.
var ErrResequencerConfig = errors.New("scheduler: bad resequencer config")

// NewResequencer returns an empty resequencer; the first packet pushed
// sets the expected sequence number.
func NewResequencer(cfg ResequencerConfig) (*Resequencer, error) {
	if cfg.Slots == 0 {
		cfg.Slots = 4096
	}
	if cfg.Slots < 2 || cfg.Slots&(cfg.Slots-1) != 0 || cfg.Slots > 1<<20 {
		return nil, fmt.Errorf("%w: slots %d is not a power of two in 2…%d", ErrResequencerConfig, cfg.Slots, 1<<20)
	}
	if cfg.MinWait <= 0 {
		cfg.MinWait = time.Millisecond
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 100 * time.Millisecond
	}
	if cfg.MaxWait < cfg.MinWait {
		return nil, fmt.Errorf("%w: max wait %v below min wait %v", ErrResequencerConfig, cfg.MaxWait, cfg.MinWait)
	}
	if cfg.ActiveWindow <= 0 {
		cfg.ActiveWindow = cfg.MaxWait
	}
	if cfg.ReorderWindow <= 0 {
		cfg.ReorderWindow = time.Millisecond
	}
	r := &Resequencer{cfg: cfg, mask: uint64(cfg.Slots - 1), slots: make([]reseqSlot, cfg.Slots), expected: cfg.ExpectedPaths,
		reorder: cfg.ReorderWindow}
	if cfg.First > 0 {
		r.started, r.next, r.highest = true, cfg.First, cfg.First
	}
	r.updateWait()
	return r, nil
}

// SetDelays sets what the wait is derived from: the difference between the
// slowest and the fastest path's one-way delay, and the delay variation.
// The wait is spread + 2·jitter (at least what late arrivals taught),
// clamped to MinWait…MaxWait.
//
// Until the first SetDelays the wait is MaxWait: the paths' delays are
// not known yet, and a gap given up too early delivers what comes after
// it out of order, which a TCP receiver takes for loss (a sender starts
// on a new path before this side has measured it). Loss is still
// inferred early once every path delivered beyond a gap.
func (r *Resequencer) SetDelays(spread, jitter time.Duration) {
	r.base, r.hasBase = max(spread, 0)+2*max(jitter, 0), true
	r.updateWait()
}

// SetExpectedPaths says over how many paths the sender spreads the SA.
// Loss is inferred early only while at least that many paths are active:
// a path the receiver has not heard from yet, or one that stalled for
// longer than ActiveWindow, may still carry the missing packet, so its
// gap waits for the deadline instead. 0 (the default) infers from
// whatever paths are active.
func (r *Resequencer) SetExpectedPaths(n int) { r.expected = n }

// Wait returns how long a gap is waited for now.
func (r *Resequencer) Wait() time.Duration { return r.wait }

// ReorderWindow returns how long a gap is still waited for once every
// active path is past it.
func (r *Resequencer) ReorderWindow() time.Duration { return min(r.reorder, r.wait) }

func (r *Resequencer) updateWait() {
	if !r.hasBase {
		r.wait = r.cfg.MaxWait
		return
	}
	r.wait = min(max(r.base, r.learned, r.cfg.MinWait), r.cfg.MaxWait)
}

// Held returns the number of packets held.
func (r *Resequencer) Held() int { return r.held }

// Push offers packet seq, which arrived on path at now, and appends to out
// the handles that may go to the TUN device now, in order. dropped is true
// when the packet was a duplicate: its handle is not appended and the
// caller reuses the buffer.
func (r *Resequencer) Push(seq uint64, path PathID, now int64, h Handle, out []Handle) (_ []Handle, dropped bool) {
	if path < MaxPaths {
		if seq > r.pathMax[path] || !r.pathSet.Has(path) {
			r.pathMax[path] = seq
		}
		r.pathSeen[path] = now
		r.pathSet = r.pathSet.With(path)
	}
	if !r.started {
		r.started, r.next, r.highest = true, seq, seq
	}
	switch {
	case seq < r.next:
		return r.late(seq, h, now, out)
	case seq == r.next:
		if r.held > 0 {
			r.gapFilled(time.Duration(now-r.headWait), now)
		}
		r.Stats.InOrder++
		out = append(out, h)
		r.next++
		r.slots[seq&r.mask] = reseqSlot{seq: seq, state: slotDone}
		return r.advance(now, out), false
	}
	// Ahead of a gap.
	if seq > r.highest {
		r.highest = seq
	}
	if seq-r.next >= uint64(len(r.slots)) {
		// No room: give up the oldest gaps until seq fits.
		out = r.forceTo(seq-uint64(len(r.slots))+1, out, &r.Stats.Overflow, now)
		if seq == r.next {
			r.Stats.InOrder++
			out = append(out, h)
			r.next++
			return r.advance(now, out), false
		}
	}
	sl := &r.slots[seq&r.mask]
	if sl.state == slotHeld && sl.seq == seq {
		r.Stats.Duplicates++
		return out, true
	}
	*sl = reseqSlot{seq: seq, arrived: now, handle: h, state: slotHeld}
	r.held++
	r.Stats.Held++
	if r.headWait == 0 || now < r.headWait {
		r.headWait = now
	}
	return r.advance(now, out), false
}

// late handles a packet below next: a duplicate if it was released, late
// if its gap was given up (or it is older than the ring remembers).
func (r *Resequencer) late(seq uint64, h Handle, now int64, out []Handle) ([]Handle, bool) {
	var lateBy time.Duration // behind its gap's skip, when known
	if r.next-seq <= uint64(len(r.slots)) {
		sl := &r.slots[seq&r.mask]
		if sl.seq == seq && sl.state == slotDone {
			r.Stats.Duplicates++
			return out, true
		}
		if sl.seq == seq && sl.state == slotSkippedLost {
			// Inferred lost, but its path had only reordered it: a
			// longer reorder window would have waited for it (a quarter
			// more than it was late by), and forget that again after
			// learnedDecay without another.
			sl.state = slotDone
			r.reorder = min(max(r.reorder, time.Duration(now-sl.arrived)*5/4), r.cfg.MaxWait)
			r.reorderLate = now
			// The gap's deadline must not cut the window short.
			r.learn(r.reorder, now)
			r.Stats.Reordered++
			r.Stats.Late++
			return append(out, h), false
		}
		if sl.seq == seq && sl.state == slotSkipped {
			sl.state = slotDone
			// As late as it was, and a quarter more: a path whose queue
			// grew faster than the delays said makes the next packets
			// as late, and one step at a time would deliver each of them
			// out of order.
			lateBy = time.Duration(now - sl.arrived)
		}
	}
	// The gap should have been waited for longer: learn, and forget
	// again after learnedDecay without a new lesson.
	r.learn(max(r.learned*3/2, r.wait*3/2, lateBy*5/4), now)
	r.Stats.Late++
	return append(out, h), false
}

// gapFilled learns from a gap that filled after packets behind it had
// waited waited: one that took more than half the wait is a near miss, and
// the wait becomes twice as long as it took. The delays SetDelays is fed
// are smoothed over many probes, and while a TCP sender fills a path's
// queue the gaps' fill times grow faster than they follow: at the start of
// gateway-aggregation-down the gaps took 9, then 12.5, then 15.6 ms to
// fill within 60 ms under a 12–15 ms wait from the delays, the next four
// were given up and arrived 0.4–2.2 ms after, out of order: a spurious
// retransmission and a window cut in the flow's first second. Every gap that fills is a
// measurement of how long the wait must be, thousands a second, so the
// wait keeps ahead of a queue that grows, instead of learning only from
// the packets it already delivered out of order.
func (r *Resequencer) gapFilled(waited time.Duration, now int64) {
	if min(2*waited, r.cfg.MaxWait) <= max(r.base, r.learned) {
		return
	}
	r.learn(2*waited, now)
}

// learn raises the learned wait to d (at most MaxWait) as of now, the
// moment learnedDecay counts from.
func (r *Resequencer) learn(d time.Duration, now int64) {
	r.learned, r.lastLesson = min(max(r.learned, d), r.cfg.MaxWait), now
	r.updateWait()
}

// learnedDecay is how long a wait learned from late packets and near
// misses lasts without a new lesson. A recorded LTE link is late in
// bursts some ten seconds apart (its capacity gaps): with a 10 s lesson
// each burst found the wait forgotten again, every packet of it was given
// up and came after its gap, and each such burst cost the TCP flow a
// spurious retransmission and a window cut. Waiting longer for a gap
// costs a hold on a path that really went silent, which failure detection
// and reinjection end anyway.
const learnedDecay = 30 * time.Second

// advance releases held packets from next on and gives up gaps known lost.
func (r *Resequencer) advance(now int64, out []Handle) []Handle {
	if r.learned > 0 && now-r.lastLesson > int64(learnedDecay) {
		r.learned = 0
		r.updateWait()
	}
	if r.reorder > r.cfg.ReorderWindow && now-r.reorderLate > int64(learnedDecay) {
		r.reorder = r.cfg.ReorderWindow
	}
	released := false
	for r.held > 0 {
		sl := &r.slots[r.next&r.mask]
		if sl.state == slotHeld && sl.seq == r.next {
			out = append(out, sl.handle)
			sl.state = slotDone
			r.held--
			r.Stats.Released++
			r.next++
			released = true
			r.evident = false
			continue
		}
		if !r.lostEarly(now) {
			r.evident = false
			break
		}
		if !r.evident {
			r.evident, r.evidentAt = true, now
		}
		if now-r.evidentAt < int64(r.ReorderWindow()) {
			break
		}
		// Lost. The next gap, if every path is past it too, was most
		// likely lost with it (one burst): evident stays, from the same
		// moment.
		sl.seq, sl.arrived, sl.state = r.next, now, slotSkippedLost
		r.Stats.LostEarly++
		r.next++
	}
	if r.held == 0 {
		r.headWait = 0
	} else if released {
		// The packets still held wait from their own arrival.
		r.headWait = r.oldestHeld()
	}
	return out
}

// lostEarly reports whether every active path delivered something beyond
// next, so next will not come.
func (r *Resequencer) lostEarly(now int64) bool {
	n := 0
	for c := r.pathSet; !c.Empty(); {
		id := c.Next()
		if now-r.pathSeen[id] > int64(r.cfg.ActiveWindow) {
			continue
		}
		if r.pathMax[id] <= r.next {
			return false
		}
		n++
	}
	return n > 0 && n >= r.expected
}

// skip gives up next, counting it in c.
func (r *Resequencer) skip(c *uint64, now int64) {
	sl := &r.slots[r.next&r.mask]
	*sl = reseqSlot{seq: r.next, arrived: now, state: slotSkipped}
	*c++
	r.next++
	r.evident = false
}

// forceTo gives up every gap and releases every held packet below seq.
func (r *Resequencer) forceTo(seq uint64, out []Handle, c *uint64, now int64) []Handle {
	for r.next < seq {
		sl := &r.slots[r.next&r.mask]
		if sl.state == slotHeld && sl.seq == r.next {
			out = append(out, sl.handle)
			sl.state = slotDone
			r.held--
			r.Stats.Released++
			r.next++
			continue
		}
		if r.held == 0 {
			// Nothing held: jump over the rest at once.
			*c += seq - r.next
			r.next = seq
			break
		}
		r.skip(c, now)
	}
	return out
}

// NextDeadline returns when Expire has work (the oldest held packet's wait
// ends, or the reorder window of a gap every path is past); ok is false
// when nothing is held.
func (r *Resequencer) NextDeadline() (at int64, ok bool) {
	if r.held == 0 {
		return 0, false
	}
	at = r.headWait + int64(r.wait)
	if r.evident {
		at = min(at, r.evidentAt+int64(r.ReorderWindow()))
	}
	return at, true
}

// Expire gives up the gaps in front of packets that have waited Wait() by
// now, and those every path is past whose reorder window is over, and
// appends the handles that may go out.
func (r *Resequencer) Expire(now int64, out []Handle) []Handle {
	if r.evident {
		out = r.advance(now, out)
	}
	for r.held > 0 && now >= r.headWait+int64(r.wait) {
		// Give up gaps up to the next held packet, release the run that
		// follows, then see how long the rest has waited.
		for {
			sl := &r.slots[r.next&r.mask]
			if sl.state == slotHeld && sl.seq == r.next {
				break
			}
			r.skip(&r.Stats.Timeouts, now)
		}
		out = r.advance(now, out)
	}
	return out
}

// oldestHeld returns the earliest arrival among held packets (0: none). It
// scans the ring from next; it runs only when a wait expired.
func (r *Resequencer) oldestHeld() int64 {
	if r.held == 0 {
		return 0
	}
	var t int64
	found := 0
	for s := r.next; s <= r.highest && found < r.held; s++ {
		sl := &r.slots[s&r.mask]
		if sl.state == slotHeld && sl.seq == s {
			if found == 0 || sl.arrived < t {
				t = sl.arrived
			}
			found++
		}
	}
	return t
}
