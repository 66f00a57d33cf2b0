package ike

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// readCounting is activeLog that counts the reads of the ESP counters.
type readCounting struct {
	activeLog
	reads atomic.Int64
}

func (l *readCounting) Received(c *RemoteClient, k *ChildSA) uint64 {
	l.reads.Add(1)
	return l.activeLog.Received(c, k)
}

// TestResponderVisitsOnlyDueClients: a client whose ESP keeps coming is
// visited every half DPD interval, not every second (the tick walked every
// client each second, reading each one's counters: 60 reads a minute
// here), and is never checked; once its ESP stops it is checked within
// one and one and a half intervals (its session does not run: the check
// goes unanswered).
func TestResponderVisitsOnlyDueClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const dpd = 20 * time.Second
		h := &readCounting{}
		w := startResponderWith(t, ResponderConfig{PSK: []byte("k"), DPD: dpd}, h)
		s, _ := w.newClient(t, "192.0.2.40", SessionConfig{PSK: []byte("k")})
		connect(t, s, true)
		for range 60 { // a minute of ESP
			time.Sleep(time.Second)
			h.received.Add(1)
		}
		synctest.Wait()
		if n := h.reads.Load(); n < 4 || n > 7 {
			t.Errorf("the counters were read %d times in a minute, want 4-7 (every %v, and a visit or two more)", n, dpd/2)
		}
		if n := w.requestsOf(wire.INFORMATIONAL); n != 0 {
			t.Errorf("%d liveness checks while ESP arrived", n)
		}
		time.Sleep(dpd - time.Second)
		synctest.Wait()
		if n := w.requestsOf(wire.INFORMATIONAL); n != 0 {
			t.Errorf("a liveness check %v after the last ESP", dpd-time.Second)
		}
		time.Sleep(dpd/2 + time.Second)
		synctest.Wait()
		if st := clients(t, w); len(st) != 1 || st[0].DPDChecks != 1 {
			t.Errorf("%v after the last ESP: clients %+v, want one with a liveness check", dpd+dpd/2, st)
		}
	})
}
