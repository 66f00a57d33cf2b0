package dataplane

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// newReplayWindow returns a window of size packets from the start.
func newReplayWindow(size int) (*ReplayWindow, error) {
	return newGrowingReplayWindow(size, size)
}

// receive runs the receiver's two steps, Check before the ICV and Accept
// after it, as Open does.
func receive(w *ReplayWindow, seq uint64) error {
	if err := w.Check(seq); err != nil {
		return err
	}
	return w.Accept(seq)
}

func TestReplayWindowTable(t *testing.T) {
	type step struct {
		seq  uint64
		want error
	}
	const w = 64
	tests := []struct {
		name  string
		steps []step
	}{
		{"zero is never valid", []step{{0, ErrTooOld}}},
		{"in order", []step{{1, nil}, {2, nil}, {3, nil}, {4, nil}}},
		{"duplicate", []step{{1, nil}, {2, nil}, {2, ErrReplayed}, {1, ErrReplayed}}},
		{"reordered within window", []step{{10, nil}, {5, nil}, {9, nil}, {1, nil}, {5, ErrReplayed}, {11, nil}}},
		{"oldest inside window", []step{{100, nil}, {100 - w + 1, nil}, {100 - w, ErrTooOld}}},
		{"far ahead jump", []step{{1, nil}, {1_000_000, nil}, {2, ErrTooOld}, {999_999, nil}, {1_000_000, ErrReplayed}}},
		{"jump by exactly the window", []step{{5, nil}, {5 + w, nil}, {5, ErrTooOld}, {6, nil}}},
		{"slot reuse after wrap", []step{{3, nil}, {3 + 32*4, nil}, {3 + 32*8, nil}, {3 + 32*8 - w + 1, nil}, {3 + 32*4, ErrTooOld}}},
		{"high half change", []step{{1<<32 - 2, nil}, {1<<32 - 1, nil}, {1 << 32, nil}, {1<<32 + 1, nil}, {1<<32 - 1, ErrReplayed}, {1<<32 - 3, nil}}},
		{"top of the 64-bit space", []step{{math.MaxUint64 - 1, nil}, {math.MaxUint64, nil}, {math.MaxUint64, ErrReplayed}, {math.MaxUint64 - w, ErrTooOld}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			win, err := newReplayWindow(w)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				if got := receive(win, s.seq); !errors.Is(got, s.want) {
					t.Fatalf("step %d seq %d: got %v, want %v", i, s.seq, got, s.want)
				}
			}
		})
	}
}

// model is the obvious, slow reference: a set of everything accepted.
type model struct {
	size, top uint64
	seen      map[uint64]bool
}

func (m *model) receive(seq uint64) error {
	switch {
	case seq == 0 || (seq < m.top && m.top-seq >= m.size):
		return ErrTooOld
	case m.seen[seq]:
		return ErrReplayed
	}
	m.seen[seq] = true
	m.top = max(m.top, seq)
	return nil
}

// TestReplayWindowMatchesModel feeds random traffic (reordering, duplicates,
// jumps, ESN boundaries) to the window and to the reference model.
func TestReplayWindowMatchesModel(t *testing.T) {
	for _, size := range []int{MinReplayWindow, 100, DefaultReplayWindow, MaxReplayWindow} {
		for _, start := range []uint64{1, 1<<32 - 5000} {
			t.Run(fmt.Sprintf("size=%d/start=%#x", size, start), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(size), start))
				win, err := newReplayWindow(size)
				if err != nil {
					t.Fatal(err)
				}
				m := &model{size: uint64(size), seen: map[uint64]bool{}}
				next := start
				for i := range 100_000 {
					var seq uint64
					switch r := rng.IntN(100); {
					case r < 60:
						seq = next
						next++
					case r < 85: // late, possibly beyond the window
						seq = next - uint64(rng.IntN(2*size+1)) - 1
					case r < 95: // duplicate of something recent
						seq = next - uint64(rng.IntN(8)) - 1
					case r < 99: // gap ahead
						next += uint64(rng.IntN(3 * size))
						seq = next
					default: // big jump
						next += uint64(rng.IntN(1 << 20))
						seq = next
					}
					if seq > math.MaxUint64/2 { // underflow below start
						continue
					}
					want := m.receive(seq)
					if got := receive(win, seq); !errors.Is(got, want) {
						t.Fatalf("packet %d seq %d (top %d): got %v, want %v", i, seq, m.top, got, want)
					}
				}
			})
		}
	}
}

func TestInferSequence(t *testing.T) {
	const w = 64
	tests := []struct {
		name string
		top  uint64
		low  uint32
		want uint64
	}{
		{"fresh window", 0, 5, 5},
		{"same subspace", 1000, 990, 990},
		{"ahead in same subspace", 1000, 5000, 5000},
		{"case A: next subspace", 1<<32 | 0xFFFFFFF0, 3, 2<<32 | 3},
		{"case A: late in same subspace", 1<<32 | 0xFFFFFFF0, 0xFFFFFFE0, 1<<32 | 0xFFFFFFE0},
		{"case B: late from previous subspace", 2<<32 | 10, 0xFFFFFFF0, 1<<32 | 0xFFFFFFF0},
		{"case B: ahead in current subspace", 2<<32 | 10, 20, 2<<32 | 20},
		{"case B in subspace 0", 10, 0xFFFFFFF0, 0xFFFFFFF0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			win, _ := newReplayWindow(w)
			win.top.Store(tc.top)
			if got := win.InferSequence(tc.low); got != tc.want {
				t.Fatalf("InferSequence(%#x) with top %#x = %#x, want %#x", tc.low, tc.top, got, tc.want)
			}
		})
	}
}

// TestESNAcrossEpochs runs an ESN SA across the 2^32 boundary with
// reordering, through Seal and Open.
func TestESNAcrossEpochs(t *testing.T) {
	out, in := newSAPair(t, AES128GCM16, true)
	out.seq.Store(1<<32 - 100)
	in.window.top.Store(1<<32 - 100)
	var pkts [][]byte
	for range 200 {
		pkts = append(pkts, sealPayload(t, out, []byte{0x45, 1, 2, 3}, NextHeaderIPv4))
	}
	// Swap neighbours so the boundary is crossed out of order.
	for i := 0; i+1 < len(pkts); i += 2 {
		pkts[i], pkts[i+1] = pkts[i+1], pkts[i]
	}
	for i, p := range pkts {
		if _, _, err := openPacket(in, p); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	if top := in.window.Top(); top != 1<<32+100 {
		t.Fatalf("top %#x, want %#x", top, uint64(1<<32+100))
	}
	for i, p := range pkts {
		if _, _, err := openPacket(in, p); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay of packet %d: %v", i, err)
		}
	}
}

// TestReplayWindowConcurrent has several goroutines receive overlapping
// sequence numbers, each one several times: every number must be accepted
// exactly once. Run with -race.
func TestReplayWindowConcurrent(t *testing.T) {
	win, err := newReplayWindow(DefaultReplayWindow)
	if err != nil {
		t.Fatal(err)
	}
	const workers, total = 4, 200_000
	accepted := make([]atomic.Int32, total+1)
	var tooOld atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for base := uint64(1); base <= total; base += 64 {
				// Each worker takes the same chunk in its own order.
				for _, i := range rng.Perm(64) {
					seq := base + uint64(i)
					if seq > total {
						continue
					}
					switch err := receive(win, seq); {
					case err == nil:
						accepted[seq].Add(1)
					case errors.Is(err, ErrTooOld):
						tooOld.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	for seq := 1; seq <= total; seq++ {
		if n := accepted[seq].Load(); n > 1 {
			t.Fatalf("seq %d accepted %d times", seq, n)
		} else if n == 0 {
			t.Fatalf("seq %d never accepted (too old %d)", seq, tooOld.Load())
		}
	}
}

// TestOpenConcurrent opens the same SA's packets from several goroutines,
// each packet delivered twice: each is accepted exactly once.
func TestOpenConcurrent(t *testing.T) {
	out, in := newSAPair(t, ChaCha20Poly1305, true)
	in.ReplayWindow().Grow() // goroutines running free reorder by thousands
	const n = 4000
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = sealPayload(t, out, []byte{0x45, byte(i), byte(i >> 8)}, NextHeaderIPv4)
	}
	var ok, replayed atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w % 2; i < n; i += 2 {
				switch _, _, err := openPacket(in, pkts[i]); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrReplayed):
					replayed.Add(1)
				default:
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != n || replayed.Load() != n {
		t.Fatalf("accepted %d, replayed %d; want %d each", ok.Load(), replayed.Load(), n)
	}
	if in.Stats.Drops.Get(DropReplayed) != n || in.Stats.Packets.Load() != n {
		t.Fatalf("stats: %d packets, drops %v", in.Stats.Packets.Load(), in.Stats.Drops.Snapshot())
	}
}

func TestNewReplayWindowBounds(t *testing.T) {
	for _, size := range []int{0, 31, 65537} {
		if _, err := newReplayWindow(size); err == nil {
			t.Errorf("size %d accepted", size)
		}
	}
	for _, size := range []int{32, 33, 4096, 65536} {
		w, err := newReplayWindow(size)
		if err != nil || w.Size() != size {
			t.Errorf("size %d: %v", size, err)
		}
	}
}

// TestReplayWindowFirstMissing: the oldest sequence number not received
// among the last span, or the next one when none is missing.
func TestReplayWindowFirstMissing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		window   int
		accepted []uint64
		span     uint64
		want     uint64
	}{
		{"nothing received", 64, nil, 512, 1},
		{"all received", 64, seqRange(1, 10), 512, 11},
		{"a gap", 64, append(seqRange(1, 3), seqRange(5, 10)...), 512, 4},
		{"the first missing", 64, seqRange(2, 10), 512, 1},
		{"a gap older than the span", 4096, append(seqRange(1, 4), seqRange(6, 1000)...), 512, 1001},
		{"a gap older than the window", 64, append(seqRange(1, 4), seqRange(6, 1000)...), 512, 1001},
		{"a gap inside the span", 4096, append(seqRange(1, 899), seqRange(901, 1000)...), 512, 900},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := newReplayWindow(tc.window)
			if err != nil {
				t.Fatal(err)
			}
			for _, seq := range tc.accepted {
				if err := w.Accept(seq); err != nil {
					t.Fatal(err)
				}
			}
			if got := w.FirstMissing(tc.span); got != tc.want {
				t.Fatalf("FirstMissing(%d) = %d, want %d", tc.span, got, tc.want)
			}
		})
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for q := from; q <= to; q++ {
		s = append(s, q)
	}
	return s
}

// TestDefaultReplayWindowRing: the default window fills a ring of 128
// slots (1 KiB per inbound SA); one packet more would double it. An SA's
// window starts in a ring of 16 (128 bytes).
func TestDefaultReplayWindowRing(t *testing.T) {
	for _, tc := range []struct{ size, slots int }{{DefaultReplayWindow, 128}, {DefaultReplayWindow + 1, 256}, {replayStartWindow, 16}} {
		w, err := newReplayWindow(tc.size)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(w.ring.Load().slots); n != tc.slots {
			t.Fatalf("a window of %d packets has %d slots, want %d", tc.size, n, tc.slots)
		}
	}
}

// growingModel is model with a window that grows as ReplayWindow's does:
// after a packet accepted half the window late, to full, with a floor
// where the smaller ring may have forgotten.
type growingModel struct {
	model
	full, floor, startSlots uint64
}

func (m *growingModel) receive(seq uint64) error {
	if seq < m.floor {
		return ErrTooOld
	}
	err := m.model.receive(seq)
	if err == nil && m.size < m.full && m.top-seq >= m.size/2 {
		m.grow()
	}
	return err
}

func (m *growingModel) grow() {
	if m.size == m.full {
		return
	}
	if topBlock := m.top >> replayBlockShift; topBlock >= m.startSlots {
		m.floor = (topBlock - m.startSlots + 1) << replayBlockShift
	}
	m.size = m.full
}

// TestReplayWindowGrowsMatchesModel: a window that starts small and grows
// (by a late packet, or Grow at a random moment) takes and refuses what the
// reference does, before and after.
func TestReplayWindowGrowsMatchesModel(t *testing.T) {
	for _, tc := range []struct{ start, full int }{{replayStartWindow, DefaultReplayWindow}, {64, 1000}, {MinReplayWindow, MaxReplayWindow}} {
		for _, explicit := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d-%d/grow=%v", tc.start, tc.full, explicit), func(t *testing.T) {
				for trial := range 50 {
					rng := rand.New(rand.NewPCG(uint64(tc.start), uint64(trial)))
					win, err := newGrowingReplayWindow(tc.start, tc.full)
					if err != nil {
						t.Fatal(err)
					}
					m := &growingModel{model: model{size: uint64(tc.start), seen: map[uint64]bool{}},
						full: uint64(tc.full), startSlots: uint64(len(win.ring.Load().slots))}
					growAt := rng.IntN(3000)
					next := uint64(1 + rng.IntN(1<<20))
					for i := range 6000 {
						if explicit && i == growAt {
							win.Grow()
							m.grow()
						}
						var seq uint64
						switch r := rng.IntN(100); {
						case r < 70:
							seq = next
							next++
						case r < 80 && !explicit: // late inside the small window: half of these grow it
							seq = next - uint64(rng.IntN(tc.start)) - 1
						case r < 95: // late, possibly beyond either window
							seq = next - uint64(rng.IntN(2*tc.full+1)) - 1
						case r < 98: // duplicate of something recent
							seq = next - uint64(rng.IntN(8)) - 1
						default: // gap ahead
							next += uint64(rng.IntN(2 * tc.start))
							seq = next
						}
						if seq > math.MaxUint64/2 {
							continue
						}
						want := m.receive(seq)
						if got := receive(win, seq); !errors.Is(got, want) {
							t.Fatalf("trial %d packet %d seq %d (top %d, model size %d floor %d): got %v, want %v",
								trial, i, seq, m.top, m.size, m.floor, got, want)
						}
						if win.Size() != int(m.size) {
							t.Fatalf("trial %d packet %d: window %d, model %d", trial, i, win.Size(), m.size)
						}
					}
					if win.Size() != tc.full {
						t.Fatalf("trial %d: the window never grew (%d)", trial, win.Size())
					}
				}
			})
		}
	}
}

// TestReplayWindowGrowsUnderConcurrentReceivers: four receivers take the
// same packets, each chunk of 64 in its own order, while the window grows
// in the middle of a chunk: every packet is accepted exactly once, before,
// during and after the growth (none is lost, none replayed).
func TestReplayWindowGrowsUnderConcurrentReceivers(t *testing.T) {
	const workers, chunk, chunks = 4, 64, 40
	for trial := range 300 {
		rng := rand.New(rand.NewPCG(uint64(trial), 11))
		win, err := newGrowingReplayWindow(MinReplayWindow*4, DefaultReplayWindow)
		if err != nil {
			t.Fatal(err)
		}
		growAt := rng.IntN(chunks)
		first := uint64(1 + rng.IntN(5000))
		accepted := make([]atomic.Int32, chunks*chunk)
		for c := range chunks {
			var wg sync.WaitGroup
			for w := range workers {
				order := rng.Perm(chunk)
				growAfter := -1
				if c == growAt && w == 0 {
					growAfter = rng.IntN(chunk)
				}
				wg.Go(func() {
					for k, i := range order {
						if k == growAfter {
							win.Grow()
						}
						seq := first + uint64(c*chunk+i)
						if err := receive(win, seq); err == nil {
							accepted[c*chunk+i].Add(1)
						} else if !errors.Is(err, ErrReplayed) {
							t.Errorf("trial %d seq %d: %v", trial, seq, err)
						}
					}
				})
			}
			wg.Wait()
		}
		if win.Size() != DefaultReplayWindow {
			t.Fatalf("trial %d: window %d after Grow", trial, win.Size())
		}
		for i := range accepted {
			if n := accepted[i].Load(); n != 1 {
				t.Fatalf("trial %d (grew in chunk %d): seq %d accepted %d times", trial, growAt, first+uint64(i), n)
			}
		}
	}
}

// TestReplayWindowGrowsKeepsWhatItKnew: a packet half the small window
// late grows it; after that a replay of a packet the small ring took is
// refused, one it had not seen is taken, one older than its ring could
// remember is too old, and the full window takes packets the small one
// would have called too old.
func TestReplayWindowGrowsKeepsWhatItKnew(t *testing.T) {
	win, err := newGrowingReplayWindow(64, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 300; seq++ {
		if seq != 265 && seq != 290 {
			if err := receive(win, seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := receive(win, 200); !errors.Is(err, ErrTooOld) {
		t.Fatalf("before growing, a packet 100 late: %v", err)
	}
	if err := receive(win, 290); err != nil || win.Size() != 64 {
		t.Fatalf("a packet 10 late: %v, window %d", err, win.Size())
	}
	if err := receive(win, 265); err != nil || win.Size() != 1000 {
		t.Fatalf("a packet 35 late (half the window is 32): %v, window %d", err, win.Size())
	}
	// The small window's ring of four slots held blocks 6 to 9 (192-319).
	for _, tc := range []struct {
		seq  uint64
		want error
	}{{299, ErrReplayed}, {265, ErrReplayed}, {290, ErrReplayed}, {200, ErrReplayed}, {192, ErrReplayed}, {191, ErrTooOld},
		{1301, nil}, {301, ErrTooOld}, {302, nil}, {302, ErrReplayed}} {
		if got := receive(win, tc.seq); !errors.Is(got, tc.want) {
			t.Fatalf("after growing, seq %d: %v, want %v", tc.seq, got, tc.want)
		}
	}
}
