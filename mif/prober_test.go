package mif

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
)

// loopPaths is a probe sender whose paths answer each request after a
// fixed round-trip time (or never, for a dead path), like a peer's engine.
// It lives inside a synctest bubble.
type loopPaths struct {
	p       *pathProber
	mu      sync.Mutex
	rtt     map[scheduler.PathID]time.Duration // missing: dead
	rx      map[scheduler.PathID]uint64
	timers  []*time.Timer
	padding int
}

func (l *loopPaths) SendProbe(out *dataplane.SA, id scheduler.PathID, remote *udp.Endpoint, p dataplane.Probe, size int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.padding = size
	rtt, alive := l.rtt[id]
	if !alive {
		return nil
	}
	l.rx[id] += 100
	reply := p
	reply.Kind, reply.RxPackets, reply.RxBytes = dataplane.ProbeReply, l.rx[id]/100, l.rx[id]
	l.timers = append(l.timers, time.AfterFunc(rtt, func() {
		l.p.HandleReply(&dataplane.ProbeEvent{Probe: reply})
	}))
	return nil
}

func (l *loopPaths) setRTT(id scheduler.PathID, rtt time.Duration, alive bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if alive {
		l.rtt[id] = rtt
	} else {
		delete(l.rtt, id)
	}
}

func TestProberMeasuresRTTAndLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		paths := &loopPaths{rtt: map[scheduler.PathID]time.Duration{0: 30 * time.Millisecond, 1: 80 * time.Millisecond}, rx: map[scheduler.PathID]uint64{}}
		var mu sync.Mutex
		samples := map[scheduler.PathID][]probeSample{}
		sa := &dataplane.SA{}
		p := newPathProber(paths, pathProberConfig{
			Outbound: func() *dataplane.SA { return sa },
			Interval: func(id scheduler.PathID) time.Duration { return 50 * time.Millisecond },
			Timeout:  200 * time.Millisecond,
			Size:     300,
			Sample: func(s probeSample) {
				mu.Lock()
				samples[s.Path] = append(samples[s.Path], s)
				mu.Unlock()
			},
		})
		paths.p = p
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()
		defer func() {
			cancel()
			<-done
			for _, tm := range paths.timers {
				tm.Stop()
			}
		}()
		p.AddPath(0, nil)
		p.AddPath(1, nil)
		time.Sleep(time.Second)
		synctest.Wait()

		mu.Lock()
		for id, want := range map[scheduler.PathID]time.Duration{0: 30 * time.Millisecond, 1: 80 * time.Millisecond} {
			got := samples[id]
			if len(got) < 15 {
				t.Fatalf("path %d: %d samples in 1 s at 50 ms", id, len(got))
			}
			for i, s := range got {
				if s.Lost || s.RTT != want {
					t.Fatalf("path %d sample %d: %+v, want RTT %v", id, i, s, want)
				}
				if i > 0 && s.PeerRxBytes <= got[i-1].PeerRxBytes {
					t.Fatalf("path %d: peer counters did not grow: %d then %d", id, got[i-1].PeerRxBytes, s.PeerRxBytes)
				}
			}
		}
		if paths.padding != 300 {
			t.Fatalf("requests padded to %d", paths.padding)
		}
		// Path 1 goes silent: its requests time out as lost, 200 ms after
		// each was sent; path 0 is untouched.
		clear(samples)
		mu.Unlock()
		paths.setRTT(1, 0, false)
		died := time.Now()
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		mu.Lock()
		lost := 0
		for _, s := range samples[1] {
			if !s.Lost {
				if s.At.After(died.Add(80 * time.Millisecond)) { // only requests in flight may still come back
					t.Fatalf("path 1 answered after it died: %+v", s)
				}
				continue
			}
			lost++
		}
		if lost < 4 {
			t.Fatalf("path 1: %d lost samples in 500 ms of silence at 50 ms probes, 200 ms timeout", lost)
		}
		for _, s := range samples[0] {
			if s.Lost {
				t.Fatalf("path 0 lost a probe: %+v", s)
			}
		}
		mu.Unlock()

		// ProbeNow sends at once; RemovePath stops.
		p.RemovePath(1)
		p.RemovePath(0)
		synctest.Wait()
	})
}

// TestProberIgnoresUnknownReplies checks that a reply matching no request
// (stale, forged in an old SA, or for an unknown path) is no sample.
func TestProberIgnoresUnknownReplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got []probeSample
		p := newPathProber(&loopPaths{rtt: map[scheduler.PathID]time.Duration{}, rx: map[scheduler.PathID]uint64{}}, pathProberConfig{
			Outbound: func() *dataplane.SA { return &dataplane.SA{} },
			Sample:   func(s probeSample) { got = append(got, s) },
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		p.AddPath(0, nil)
		synctest.Wait()
		// A forged or stale reply: right seq, wrong timestamp.
		p.HandleReply(&dataplane.ProbeEvent{Probe: dataplane.Probe{Kind: dataplane.ProbeReply, PathID: 0, Seq: 1, Timestamp: 12345}})
		// A reply for a path that does not exist.
		p.HandleReply(&dataplane.ProbeEvent{Probe: dataplane.Probe{Kind: dataplane.ProbeReply, PathID: 7, Seq: 1}})
		synctest.Wait()
		for _, s := range got {
			if !s.Lost {
				t.Fatalf("an unmatched reply became a sample: %+v", s)
			}
		}
	})
}
