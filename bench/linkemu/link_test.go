package linkemu

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mifsec/mifsec/internal/testenv"
)

func TestStartRejects(t *testing.T) {
	if err := func() error {
		_, err := Start("x", "a", "b", Config{BtoA: Shape{Loss: 2}})
		return err
	}(); err == nil || !strings.Contains(err.Error(), "BtoA") {
		t.Errorf("invalid config: error %v", err)
	}
	if _, err := Start("x", "a", "a", Config{}); err == nil {
		t.Errorf("same interface twice: no error")
	}
	if _, err := Start("x", "a", "b", Config{}, WithBufferSize(1000)); err == nil {
		t.Errorf("tiny buffer: no error")
	}
	testenv.RequireRoot(t)
	if _, err := Start("mifsectest-does-not-exist", "a", "b", Config{}); err == nil || !strings.Contains(err.Error(), "mifsectest-does-not-exist") {
		t.Errorf("missing namespace: error %v", err)
	}
	ns := testenv.NewNamedNetns(t, "emuErr")
	if _, err := Start(ns, "nosuch0", "nosuch1", Config{}); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("missing interface: error %v", err)
	}
}

// TestCloseLeavesNothing: Close ends every goroutine and closes the sockets,
// also with packets still queued; a second Close is harmless.
func TestCloseLeavesNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	tp := newTopo(t, Config{AtoB: Shape{Delay: 200 * time.Millisecond}, BtoA: Shape{Delay: 200 * time.Millisecond}})
	p := tp.udpPair(t)
	p.send(t, 0, 100) // still in the delay line at Close
	time.Sleep(20 * time.Millisecond)
	if err := tp.link.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tp.link.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	tp.link.Update(Config{}) // harmless after Close
	if err := goleak.Find(ignore); err != nil {
		t.Fatalf("goroutines left after Close: %v", err)
	}
}

func TestSetAndUpdate(t *testing.T) {
	var logs bytes.Buffer
	tp := newTopo(t, Config{AtoB: Shape{Delay: time.Millisecond}}, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	good := Config{AtoB: Shape{Rate: 10e6, Burst: &GilbertElliott{P: 0.1, R: 0.5, LossBad: 1}}, BtoA: Shape{Loss: 0.1}}
	if err := tp.link.Set(good); err != nil {
		t.Fatalf("Set: %v", err)
	}
	good.AtoB.Burst.P = 0.9 // the link keeps its own copy
	got := tp.link.Config()
	if got.AtoB.Rate != 10e6 || got.AtoB.Burst.P != 0.1 || got.BtoA.Loss != 0.1 {
		t.Fatalf("Config after Set: %+v", got)
	}
	got.AtoB.Burst.P = 0.7 // nor does Config share it
	if tp.link.Config().AtoB.Burst.P != 0.1 {
		t.Fatalf("Config shares memory with the link")
	}
	if err := tp.link.Set(Config{AtoB: Shape{Delay: -1}}); err == nil {
		t.Fatalf("Set accepted a negative delay")
	}
	tp.link.Update(Config{BtoA: Shape{Loss: -1}})
	if tp.link.Config().AtoB.Rate != 10e6 {
		t.Fatalf("invalid Update replaced the configuration")
	}
	if !strings.Contains(logs.String(), "ignoring invalid configuration") {
		t.Errorf("invalid Update not logged: %q", logs.String())
	}
}

// TestBufferbloat: a UDP burst into a slow link fills the queue up to
// QueueTime at Rate, tail-drops the rest, and the queue shows in Stats.
//
// The link is slow (125 bytes per millisecond) so that how long the
// emulator takes to read the burst on a loaded machine hardly changes the
// figures: 40 ms late drain 5 kB of the 100 kB queue.
func TestBufferbloat(t *testing.T) {
	const rate, queueTime = 1e6, 800 * time.Millisecond // 100 kB of queue
	tp := newTopo(t, Config{})
	p := tp.udpPair(t)
	tp.pingRTTs(t, 1, "0.2")
	tp.link.Update(Config{AtoB: Shape{Rate: rate, QueueTime: queueTime}})
	entered := tp.link.Stats().AtoB.Packets
	var b [1000]byte
	for i := range 400 { // 400 kB at once
		binary.BigEndian.PutUint32(b[:], uint32(i))
		if _, err := p.tx.Write(b[:]); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	// Wait until the emulator has read the whole burst, not a fixed time.
	var st DirectionStats
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		st = tp.link.Stats().AtoB
		if st.Packets-entered >= 400 || time.Now().After(deadline) {
			break
		}
	}
	limit := int64(rate / 8 * queueTime.Seconds())
	t.Logf("after a 400 kB burst: %d of 400 entered, %d bytes queued (limit %d), %d queue drops",
		st.Packets-entered, st.QueuedBytes, limit, st.QueueDrops)
	if st.Packets-entered < 400 {
		t.Fatalf("%d of 400 datagrams reached the emulator", st.Packets-entered)
	}
	if st.QueuedBytes > limit || st.QueuedBytes < limit*3/4 {
		t.Errorf("queued %d bytes, want close to the limit %d", st.QueuedBytes, limit)
	}
	if st.QueueDrops < 250 || st.QueueDrops > 320 {
		t.Errorf("%d queue drops, want about 300", st.QueueDrops)
	}
	got := p.receive(t, 300*time.Millisecond)
	st = tp.link.Stats().AtoB
	if want := 400 - int(st.QueueDrops); len(got) != want {
		t.Errorf("received %d datagrams, want the %d that were not dropped", len(got), want)
	}
}
