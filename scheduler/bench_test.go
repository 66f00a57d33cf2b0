package scheduler

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func benchScheduler(b *testing.B, paths int) *Scheduler {
	s := New(Config{})
	for id := range PathID(paths) {
		if err := s.AddPath(PathConfig{ID: id, Tier: 1}, 0); err != nil {
			b.Fatal(err)
		}
		verify(b, s, id, 0, time.Duration(10+5*int(id))*time.Millisecond, mbit(50), 8)
	}
	return s
}

// BenchmarkPick is one worker's per-packet decision under each policy.
func BenchmarkPick(b *testing.B) {
	for _, pol := range []Policy{PolicySingle, PolicyOffload, PolicyAggregate, PolicyRedundant} {
		b.Run(pol.String(), func(b *testing.B) {
			s := benchScheduler(b, 2)
			now := int64(time.Second)
			b.ReportAllocs()
			for b.Loop() {
				now += 200
				s.Decide(pol, 1400, now)
			}
		})
	}
}

// BenchmarkPickParallel is the aggregate decision from every core at once:
// "shared" is the design (one Scheduler for all workers, the virtual
// queues' cache lines move between cores), "per-worker" the alternative
// of one Scheduler per worker with nothing shared, as a bound on what the
// sharing costs.
func BenchmarkPickParallel(b *testing.B) {
	b.Run("shared", func(b *testing.B) {
		s := benchScheduler(b, 2)
		var worker atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			// Each worker reads its own clock, as each engine worker does.
			now := int64(time.Second) + worker.Add(1)
			for pb.Next() {
				now += 200
				s.Decide(PolicyAggregate, 1400, now)
			}
		})
	})
	b.Run("per-worker", func(b *testing.B) {
		var mu sync.Mutex
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			mu.Lock()
			s := benchScheduler(b, 2)
			mu.Unlock()
			now := int64(time.Second)
			for pb.Next() {
				now += 200
				s.Decide(PolicyAggregate, 1400, now)
			}
		})
	})
}

// BenchmarkResequencer is one packet through the resequencer with two
// paths whose packets interleave out of order, 1% lost.
func BenchmarkResequencer(b *testing.B) {
	r, err := NewResequencer(ResequencerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	r.SetDelays(10*time.Millisecond, time.Millisecond)
	out := make([]Handle, 0, 8192)
	var seq uint64
	now := int64(time.Second)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		now += 1000
		s := seq
		switch seq % 4 {
		case 1:
			s = seq + 1
		case 2:
			s = seq - 1
		}
		if seq%100 != 0 {
			out, _ = r.Push(s, PathID(seq%2), now, Handle(s), out[:0])
		}
		if seq%64 == 0 {
			out = r.Expire(now, out[:0])
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	c, err := ParseRules("dscp=ef:redundant, udp/5060-5061:redundant, 10.0.0.0/8+tcp:offload, 2001:db8:1::/48:single", PolicyAggregate)
	if err != nil {
		b.Fatal(err)
	}
	pkt := ipv6("2001:db8:2::5", 6, 0, 1, 443)
	b.ReportAllocs()
	for b.Loop() {
		c.Classify(pkt)
	}
}
