package linkemu

import (
	"errors"
	"math"
	"net"
	"sync"
	"testing"
	"time"
)

// TestTraceCapacity: a link replaying a recorded LTE trace (T-Mobile,
// uplink and downlink), fed by a UDP sender faster than the trace ever is
// in the measured seconds, delivers within 10% of the trace's capacity over
// the same seconds (counted in IP bytes at the receiver in B). The trace is
// restarted in step with the sender (RestartTraces), as the lab does with
// its timeline.
func TestTraceCapacity(t *testing.T) {
	for _, tc := range []struct {
		file     string
		sendRate float64 // bit/s, above the trace's first 7 s
	}{
		{"TMobile-LTE-short.up", 20e6},   // 3.5 to 7 Mbit/s
		{"TMobile-LTE-short.down", 60e6}, // 20 to 32 Mbit/s
	} {
		t.Run(tc.file, func(t *testing.T) { traceCapacity(t, tc.file, tc.sendRate) })
	}
}

func traceCapacity(t *testing.T, file string, sendRate float64) {
	tr, err := ReadTrace("../scenarios/traces/" + file)
	if err != nil {
		t.Fatalf("the built-in scenarios' trace: %v", err)
	}
	const (
		payload = 1472 // 1500-byte IP packets: one opportunity each
		ipBytes = payload + 28
		run     = 7 * time.Second
		bin     = time.Second
	)
	// The measured window leaves out the first half second (the queue
	// fills) and the last (packets still queued at the end).
	from, to := 500*time.Millisecond, 6500*time.Millisecond

	tp := newTopo(t, Config{AtoB: Shape{Trace: tr}})
	p := tp.udpPair(t)
	tp.pingRTTs(t, 1, "0.2") // ARP before the measurement
	start := time.Now().Add(100 * time.Millisecond)
	tp.link.RestartTraces(start)

	// Receiver: IP bytes per bin since start, and within [from, to).
	bins := make([]int64, int(run/bin)+2)
	var inWindow int64
	var rxErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			_ = p.rx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := p.rx.Read(buf)
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					rxErr = err
				}
				return
			}
			if n != payload {
				continue
			}
			at := time.Since(start)
			if at >= from && at < to {
				inWindow += ipBytes
			}
			if i := int(at / bin); at >= 0 && i < len(bins) {
				bins[i] += ipBytes
			}
		}
	})

	// Sender: paced at sendRate from start, in 1 ms steps.
	time.Sleep(time.Until(start))
	msg := make([]byte, payload)
	sent := 0
	for {
		elapsed := time.Since(start)
		if elapsed >= run {
			break
		}
		due := int(elapsed.Seconds() * sendRate / 8 / ipBytes)
		for ; sent < due; sent++ {
			if _, err := p.tx.Write(msg); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if rxErr != nil {
		t.Fatalf("receive: %v", rxErr)
	}
	st := tp.link.Stats().AtoB
	want := tr.Capacity(from, to)
	got := inWindow
	for i := range int(run / bin) {
		lo, hi := time.Duration(i)*bin, time.Duration(i+1)*bin
		t.Logf("second %d: trace %.2f Mbit/s, received %.2f Mbit/s", i, float64(tr.Capacity(lo, hi))*8/bin.Seconds()/1e6, float64(bins[i])*8/bin.Seconds()/1e6)
	}
	secs := (to - from).Seconds()
	t.Logf("%v to %v: trace %.3f Mbit/s (%d bytes), received %.3f Mbit/s (%d bytes), ratio %.3f; sent %d datagrams, %d queue drops, emulator late by at most %v",
		from, to, float64(want)*8/secs/1e6, want, float64(got)*8/secs/1e6, got, float64(got)/float64(want), sent, st.QueueDrops, st.MaxLate)
	if st.QueueDrops == 0 {
		t.Errorf("no queue drops: the sender did not saturate the link, the figure says nothing")
	}
	// The race detector slows the emulator's per-packet path several
	// times: only gross errors are asserted then.
	switch apart := math.Abs(float64(got-want)) / float64(want); {
	case apart > 0.5:
		t.Errorf("received %d bytes in %v to %v, the trace's capacity is %d: more than 50%% apart", got, from, to, want)
	case apart > 0.1 && raceEnabled:
		t.Logf("race detector on: received %d bytes in %v to %v, the trace's capacity is %d: %.0f%% apart, not asserted", got, from, to, want, apart*100)
	case apart > 0.1:
		t.Errorf("received %d bytes in %v to %v, the trace's capacity is %d: more than 10%% apart", got, from, to, want)
	}
}
