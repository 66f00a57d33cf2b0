package mif

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

func TestSettleRule(t *testing.T) {
	t0 := time.Unix(1000, 0)
	later := t0.Add(time.Second)
	for _, tc := range []struct {
		name     string
		first    bool
		mine     bool
		mineAt   time.Time
		theirs   bool
		theirsAt time.Time
		want     int32
	}{
		{"none", true, false, time.Time{}, false, time.Time{}, roleNone},
		{"only mine", false, true, t0, false, time.Time{}, roleInitiator},
		{"only theirs", true, false, time.Time{}, true, t0, roleResponder},
		{"both, first keeps its own", true, true, later, true, t0, roleInitiator},
		{"both, first keeps its own set up at the same moment", true, true, t0, true, t0, roleInitiator},
		{"both, second keeps the first's", false, true, t0, true, later, roleResponder},
		{"both, second keeps the first's even when older", false, true, later, true, t0, roleResponder},
		{"both, first sees the other's come after its own: the other lost it", true, true, t0, true, later, roleResponder},
	} {
		if got := settleRule(tc.first, tc.mine, tc.mineAt, tc.theirs, tc.theirsAt); got != tc.want {
			t.Errorf("%s: role %d, want %d", tc.name, got, tc.want)
		}
	}
}

// pipeDevice is a TUN queue over a pipe: reads come from a pollable
// file, as from a real TUN device, so that a read deadline wakes a
// blocked reader.
type pipeDevice struct {
	wgtun.Device // only the methods below are used
	r, w         *os.File
	written      atomic.Int32
}

func (d *pipeDevice) File() *os.File { return d.r }

func (d *pipeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.r.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

func (d *pipeDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.written.Add(int32(len(bufs)))
	return len(bufs), nil
}

// TestTurnQueues: of two roles' views of one queue, only the one whose
// turn it is reads; a change of turn wakes the reader of the role it
// leaves from its read, so that the next packet goes to the other role;
// Close ends a waiting reader with os.ErrClosed; both write at any time.
func TestTurnQueues(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dev := &pipeDevice{r: r, w: w}
	var turn atomic.Int32
	s := &sharedTUN{devs: []wgtun.Device{dev}, turn: &turn}
	views := map[int32]wgtun.Device{roleInitiator: s.queues(roleInitiator)[0], roleResponder: s.queues(roleResponder)[0]}
	got := make(chan int32, 10)
	for role, q := range views {
		go func() {
			bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
			for {
				if _, err := q.Read(bufs, sizes, 0); err != nil {
					if !errors.Is(err, os.ErrClosed) {
						t.Errorf("role %d: %v", role, err)
					}
					got <- -role
					return
				}
				got <- role
			}
		}()
	}
	inject := func() { w.Write([]byte("a packet")) }
	expect := func(want int32) {
		t.Helper()
		select {
		case r := <-got:
			if r != want {
				t.Fatalf("read by %d, want %d", r, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing read, want a read by %d", want)
		}
	}
	inject()
	select {
	case r := <-got:
		t.Fatalf("read by %d before any turn", r)
	case <-time.After(50 * time.Millisecond):
	}
	turn.Store(roleInitiator)
	s.handOver(roleNone)
	expect(roleInitiator)
	// The initiator's reader now waits in the read itself.
	time.Sleep(20 * time.Millisecond)
	turn.Store(roleResponder)
	s.handOver(roleInitiator)
	inject()
	expect(roleResponder)
	inject()
	expect(roleResponder)
	for _, q := range views {
		if _, err := q.Write([][]byte{[]byte("out")}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := dev.written.Load(); n != 2 {
		t.Fatalf("%d writes through the views, want 2", n)
	}
	views[roleInitiator].Close()
	expect(-roleInitiator)
	// The responder's reader is in the read: closing the device ends it.
	r.Close()
	select {
	case v := <-got:
		if v != -roleResponder {
			t.Fatalf("got %d", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the responder's reader did not end with the device")
	}
}
