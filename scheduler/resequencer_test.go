package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

type push struct {
	seq  uint64
	path PathID
	at   int64 // ms
}

func TestResequencer(t *testing.T) {
	tests := []struct {
		name   string
		pushes []push
		expire int64 // ms, 0: none
		want   []uint64
		check  func(t *testing.T, s ResequencerStats)
	}{
		{"in order", []push{{1, 0, 0}, {2, 0, 0}, {3, 1, 0}}, 0, []uint64{1, 2, 3},
			func(t *testing.T, s ResequencerStats) {
				if s.InOrder != 3 || s.Held != 0 {
					t.Errorf("%+v", s)
				}
			}},
		{"gap filled", []push{{1, 1, 0}, {3, 0, 1}, {4, 0, 2}, {2, 1, 3}}, 0, []uint64{1, 2, 3, 4},
			func(t *testing.T, s ResequencerStats) {
				if s.Held != 2 || s.Released != 2 {
					t.Errorf("%+v", s)
				}
			}},
		{"gap held while the other path may still bring it", []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 1}}, 0, []uint64{1, 2},
			nil},
		{"gap lost: every active path is past it, after the reorder window", []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 1}, {5, 1, 2}}, 3, []uint64{1, 2, 4, 5},
			func(t *testing.T, s ResequencerStats) {
				if s.LostEarly != 1 || s.Timeouts != 0 {
					t.Errorf("%+v", s)
				}
			}},
		{"idle path does not block loss inference", []push{{1, 1, 0}, {2, 0, 200}, {4, 0, 201}}, 202, []uint64{1, 2, 4},
			func(t *testing.T, s ResequencerStats) {
				if s.LostEarly != 1 {
					t.Errorf("%+v", s)
				}
			}},
		{"timeout gives the gap up", []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 10}, {5, 0, 11}}, 10 + 100, []uint64{1, 2, 4, 5},
			func(t *testing.T, s ResequencerStats) {
				if s.Timeouts != 1 {
					t.Errorf("%+v", s)
				}
			}},
		{"late packet delivered and counted", []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 10}, {5, 0, 11}, {3, 1, 150}}, 10 + 100, []uint64{1, 2, 4, 5, 3},
			func(t *testing.T, s ResequencerStats) {
				if s.Late != 1 || s.Reordered != 0 { // given up on time: not a path's reordering
					t.Errorf("%+v", s)
				}
			}},
		{"duplicates dropped", []push{{1, 0, 0}, {1, 1, 0}, {3, 0, 1}, {3, 1, 1}}, 0, []uint64{1},
			func(t *testing.T, s ResequencerStats) {
				if s.Duplicates != 2 {
					t.Errorf("%+v", s)
				}
			}},
		{"ring overflow forces the oldest gap out", []push{{1, 1, 0}, {3, 0, 0}, {3 + 8, 0, 1}}, 0, []uint64{1, 3},
			func(t *testing.T, s ResequencerStats) {
				if s.Overflow != 1 {
					t.Errorf("%+v", s)
				}
			}},
		{"big jump with nothing held", []push{{1, 0, 0}, {1000, 0, 0}, {1001, 0, 0}}, 1, []uint64{1, 1000, 1001}, nil},
		{"reordered within a path: waited for", []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 1}, {5, 1, 1}, {3, 0, 1}}, 0, []uint64{1, 2, 3, 4, 5},
			func(t *testing.T, s ResequencerStats) {
				if s.LostEarly != 0 || s.Late != 0 {
					t.Errorf("%+v", s)
				}
			}},
		{"every path past the gap: still held within the window", []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 1}, {5, 1, 1}}, 0, []uint64{1, 2}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewResequencer(ResequencerConfig{Slots: 8})
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			out := make([]Handle, 0, 16)
			var pushed []push
			for _, p := range tc.pushes {
				if tc.expire != 0 && p.at >= tc.expire && !slices.Contains(pushed, p) {
					for _, h := range r.Expire(tc.expire*ms, out[:0]) {
						got = append(got, uint64(h))
					}
					tc.expire = 0
				}
				pushed = append(pushed, p)
				res, _ := r.Push(p.seq, p.path, p.at*ms, Handle(p.seq), out[:0])
				for _, h := range res {
					got = append(got, uint64(h))
				}
			}
			if tc.expire != 0 {
				if at, ok := r.NextDeadline(); !ok || at > tc.expire*ms {
					t.Errorf("next deadline %v %v, want by %d ms", time.Duration(at), ok, tc.expire)
				}
				for _, h := range r.Expire(tc.expire*ms, out[:0]) {
					got = append(got, uint64(h))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("released %v, want %v", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, r.Stats)
			}
		})
	}
}

func TestResequencerWait(t *testing.T) {
	r, err := NewResequencer(ResequencerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Wait() != 100*time.Millisecond {
		t.Errorf("initial wait %v, want the 100ms cap until the delays are known", r.Wait())
	}
	r.SetDelays(0, 0)
	if r.Wait() != time.Millisecond {
		t.Errorf("wait %v with no delay spread, want the 1ms floor", r.Wait())
	}
	r.SetDelays(25*time.Millisecond, 2*time.Millisecond)
	if r.Wait() != 29*time.Millisecond {
		t.Errorf("wait %v, want 25ms + 2·2ms", r.Wait())
	}
	r.SetDelays(time.Second, 0)
	if r.Wait() != 100*time.Millisecond {
		t.Errorf("wait %v, want the 100ms cap", r.Wait())
	}
	if at, ok := r.NextDeadline(); ok {
		t.Errorf("deadline %v with nothing held", at)
	}
	// A late packet teaches a longer wait.
	r.SetDelays(0, 0)
	out := make([]Handle, 0, 8)
	r.Push(1, 0, 0, 1, out)
	r.Push(3, 0, 0, 3, out)
	r.Push(4, 1, 0, 4, out) // both paths are past 2: lost once the reorder window is over
	if at, ok := r.NextDeadline(); !ok || at != int64(time.Millisecond) {
		t.Fatalf("deadline %v %v, want the 1ms reorder window", time.Duration(at), ok)
	}
	r.Expire(int64(time.Millisecond), out)
	if r.Stats.LostEarly != 1 {
		t.Fatalf("%+v", r.Stats)
	}
	r.Push(2, 1, 5*ms, 2, out)
	if r.Stats.Late != 1 || r.Stats.Reordered != 1 {
		t.Errorf("late packet: stats %+v, want one late, reordered", r.Stats)
	}
	// 4 ms late: the window becomes 5 ms, and the wait at least that.
	if r.ReorderWindow() != 5*time.Millisecond || r.Wait() != 5*time.Millisecond {
		t.Errorf("reorder window %v, wait %v after a packet 4ms late, want 5ms and 5ms", r.ReorderWindow(), r.Wait())
	}
	// And the lesson is forgotten after learnedDecay.
	r.Push(5, 0, 5*ms+int64(learnedDecay)+1, 5, out)
	if r.Wait() != time.Millisecond || r.ReorderWindow() != time.Millisecond {
		t.Errorf("wait %v, reorder window %v after the decay, want 1ms", r.Wait(), r.ReorderWindow())
	}

	// A packet much later than the wait teaches, at once, a wait as long as
	// it was late and a quarter more: its path's queue grew faster than
	// the delays said, and its successors will be as late.
	r, err = NewResequencer(ResequencerConfig{MaxWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.SetDelays(0, 0)
	r.Push(1, 0, 0, 1, out)
	r.Push(2, 1, 0, 2, out)
	r.Push(4, 0, 0, 4, out) // path 1 is not past 3: it waits
	r.Expire(int64(time.Millisecond), out)
	r.Push(3, 1, 41*ms, 3, out)
	if r.Stats.Timeouts != 1 || r.Stats.Late != 1 || r.Stats.Reordered != 0 || r.Wait() != 50*time.Millisecond {
		t.Errorf("a packet 40ms late: stats %+v, wait %v, want one timeout, one late and a 50ms wait", r.Stats, r.Wait())
	}
}

// TestResequencerNearMiss: a gap that fills after more than half the wait
// makes the wait twice as long as the gap took, so a queue that grows on
// the slower path does not outrun the delays the wait was set from.
func TestResequencerNearMiss(t *testing.T) {
	r, err := NewResequencer(ResequencerConfig{First: 1, ExpectedPaths: 2})
	if err != nil {
		t.Fatal(err)
	}
	r.SetDelays(10*time.Millisecond, 0)
	out := make([]Handle, 0, 8)
	// gap fills a gap at seq on the slow path 1 after the packet behind it
	// waited `took` on the fast path 0, calling Expire on the way as the
	// timer would.
	clock := int64(0)
	gap := func(seq uint64, took time.Duration) {
		t.Helper()
		out, _ = r.Push(seq+1, 0, clock, Handle(seq+1), out[:0])
		if at, ok := r.NextDeadline(); ok && at <= clock+int64(took) {
			out = r.Expire(at, out[:0])
		}
		clock += int64(took)
		out, _ = r.Push(seq, 1, clock, Handle(seq), out[:0])
	}
	gap(1, 4*time.Millisecond)
	if r.Wait() != 10*time.Millisecond {
		t.Errorf("wait %v after a gap that took 4ms of 10, want the 10ms from the delays", r.Wait())
	}
	gap(3, 6*time.Millisecond)
	if r.Wait() != 12*time.Millisecond {
		t.Errorf("wait %v after a gap that took 6ms of 10, want 12ms", r.Wait())
	}
	// The queue goes on growing: each gap takes a little longer than the
	// last, beyond the 10ms the delays say, and none is given up.
	for i, took := range []time.Duration{8, 11, 15, 21} {
		gap(uint64(5+2*i), took*time.Millisecond)
	}
	if r.Stats.Timeouts != 0 || r.Stats.Late != 0 || r.Held() != 0 {
		t.Errorf("growing gaps: stats %+v, held %d, want every gap waited for", r.Stats, r.Held())
	}
	if r.Wait() != 42*time.Millisecond {
		t.Errorf("wait %v after a gap that took 21ms, want 42ms", r.Wait())
	}
	// Forgotten after learnedDecay without a new lesson.
	clock += int64(learnedDecay) + 1
	gap(13, time.Millisecond)
	if r.Wait() != 10*time.Millisecond {
		t.Errorf("wait %v after the decay, want the 10ms from the delays", r.Wait())
	}

	// Without the lesson the same growth is given up (the test above can fail).
	r, err = NewResequencer(ResequencerConfig{First: 1, ExpectedPaths: 2})
	if err != nil {
		t.Fatal(err)
	}
	r.SetDelays(10*time.Millisecond, 0)
	r.Push(2, 0, 0, 2, out[:0])
	r.Expire(int64(10*time.Millisecond), out[:0])
	r.Push(1, 1, int64(11*time.Millisecond), 1, out[:0])
	if r.Stats.Timeouts != 1 || r.Stats.Late != 1 {
		t.Errorf("a first gap of 11ms under a 10ms wait: stats %+v, want given up and late", r.Stats)
	}
}

func TestResequencerConfigErrors(t *testing.T) {
	for _, c := range []ResequencerConfig{{Slots: 3}, {Slots: 1}, {Slots: 1 << 21}, {MinWait: time.Second, MaxWait: time.Millisecond}} {
		if _, err := NewResequencer(c); !errors.Is(err, ErrResequencerConfig) {
			t.Errorf("%+v: %v, want ErrResequencerConfig", c, err)
		}
	}
}

func TestResequencerAllocations(t *testing.T) {
	r, err := NewResequencer(ResequencerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r.SetDelays(10*time.Millisecond, time.Millisecond)
	out := make([]Handle, 0, 8192)
	var seq uint64
	var now int64
	a := testing.AllocsPerRun(10000, func() {
		seq++
		now += 10000
		// Every fourth pair swapped, every 100th lost.
		s := seq
		if seq%4 == 1 {
			s = seq + 1
		} else if seq%4 == 2 {
			s = seq - 1
		}
		if seq%100 != 0 {
			out, _ = r.Push(s, PathID(seq%2), now, Handle(s), out[:0])
		}
		out = r.Expire(now, out[:0])
	})
	if a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
	if r.Stats.Held == 0 || r.Stats.LostEarly+r.Stats.Timeouts == 0 {
		t.Errorf("the run exercised nothing: %+v", r.Stats)
	}
}

// TestResequencerExpectedPaths: while fewer paths than the sender uses
// are active (one not heard from yet, or stalled), a gap waits for its
// deadline instead of being declared lost.
func TestResequencerExpectedPaths(t *testing.T) {
	for _, tc := range []struct {
		name      string
		expected  int
		pushes    []push
		want      []uint64
		lostEarly uint64
	}{
		{"second path not heard from yet, no expectation", 0, []push{{1, 0, 0}, {3, 0, 1}}, []uint64{1, 3}, 1},
		{"second path not heard from yet, two expected", 2, []push{{1, 0, 0}, {3, 0, 1}}, []uint64{1}, 0},
		{"second path stalled, two expected", 2, []push{{1, 1, 0}, {2, 0, 200}, {4, 0, 201}}, []uint64{1, 2}, 0},
		{"both paths past the gap, two expected", 2, []push{{1, 0, 0}, {2, 1, 0}, {4, 0, 1}, {5, 1, 2}}, []uint64{1, 2, 4, 5}, 1},
	} {
		// The expectation set after construction, or from the start
		// (ResequencerConfig.ExpectedPaths): the same outcome.
		for _, fromConfig := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/config %v", tc.name, fromConfig), func(t *testing.T) {
				cfg := ResequencerConfig{Slots: 8}
				if fromConfig {
					cfg.ExpectedPaths = tc.expected
				}
				r, err := NewResequencer(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if !fromConfig {
					r.SetExpectedPaths(tc.expected)
				}
				var got []uint64
				out := make([]Handle, 0, 16)
				for _, p := range tc.pushes {
					res, _ := r.Push(p.seq, p.path, p.at*ms, Handle(p.seq), out[:0])
					for _, h := range res {
						got = append(got, uint64(h))
					}
				}
				// After the reorder window, before any wait is over.
				last := tc.pushes[len(tc.pushes)-1].at*ms + int64(r.ReorderWindow())
				for _, h := range r.Expire(last, out[:0]) {
					got = append(got, uint64(h))
				}
				if !slices.Equal(got, tc.want) || r.Stats.LostEarly != tc.lostEarly {
					t.Fatalf("released %v (lost early %d), want %v (%d)", got, r.Stats.LostEarly, tc.want, tc.lostEarly)
				}
			})
		}
	}
}

// TestResequencerFirst: a resequencer told where the SA starts holds a
// packet that overtook the first one instead of starting after it.
func TestResequencerFirst(t *testing.T) {
	for _, tc := range []struct {
		first uint64
		want  []uint64
		late  uint64
	}{
		{0, []uint64{2, 1}, 1},
		{1, []uint64{1, 2}, 0},
	} {
		r, err := NewResequencer(ResequencerConfig{Slots: 8, First: tc.first})
		if err != nil {
			t.Fatal(err)
		}
		r.SetExpectedPaths(2)
		var got []uint64
		out := make([]Handle, 0, 8)
		for _, seq := range []uint64{2, 1} {
			// 2 on the fast path, 1 on the slow one.
			res, _ := r.Push(seq, PathID(seq%2), int64(seq)*ms, Handle(seq), out[:0])
			for _, h := range res {
				got = append(got, uint64(h))
			}
		}
		if !slices.Equal(got, tc.want) || r.Stats.Late != tc.late {
			t.Errorf("First %d: released %v (late %d), want %v (%d)", tc.first, got, r.Stats.Late, tc.want, tc.late)
		}
	}
}
