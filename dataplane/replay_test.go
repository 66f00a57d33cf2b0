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
// slots (1 KiB per inbound SA); one packet more would double it.
func TestDefaultReplayWindowRing(t *testing.T) {
	for _, tc := range []struct{ size, slots int }{{DefaultReplayWindow, 128}, {DefaultReplayWindow + 1, 256}} {
		w, err := newReplayWindow(tc.size)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.slots) != tc.slots {
			t.Fatalf("a window of %d packets has %d slots, want %d", tc.size, len(w.slots), tc.slots)
		}
	}
}
