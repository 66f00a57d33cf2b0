package ike

import (
	"context"
	"net/netip"
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

// activeChildLog is childLog with an inbound ESP counter (Activity).
type activeChildLog struct {
	childLog
	received atomic.Uint64
	reads    atomic.Int64 // calls of Received
}

func (l *activeChildLog) Received(*ChildSA) uint64 {
	l.reads.Add(1)
	return l.received.Load()
}

// informationalCount is a client transport that counts the INFORMATIONAL
// requests the session sends.
type informationalCount struct {
	clientSide
	n atomic.Int64
}

func (c *informationalCount) Send(msg []byte, to netip.AddrPort, natT bool) error {
	if m, err := wire.Parse(msg); err == nil && !m.IsResponse() && m.Exchange == wire.INFORMATIONAL {
		c.n.Add(1)
	}
	return c.clientSide.Send(msg, to, natT)
}

// runActiveSession connects a session whose Handler counts inbound ESP
// (activeChildLog, as mif.Client does) with liveness checks after dpd,
// and runs it until the test ends; its transport counts the
// INFORMATIONAL requests it sends. Inside a synctest bubble.
func runActiveSession(t *testing.T, dpd time.Duration) (*Session, *informationalCount, *activeChildLog) {
	psk := []byte("k")
	w, _ := startResponder(t, ResponderConfig{PSK: psk})
	a := netip.MustParseAddr("192.0.2.41")
	tr := &informationalCount{clientSide: clientSide{w, a}}
	h := &activeChildLog{}
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
	s := w.attach(t, a, SessionConfig{Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), RemoteID: mustID(t, "gw.mifsec.test"),
		PSK: psk, IKE: ikeP, ESP: espP, RequestIPv4: true, DPD: dpd,
		Retransmit: RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 5}}, tr, h)
	connect(t, s, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, tr, h
}

// TestSessionESPIsASignOfLife: a session whose Handler counts inbound ESP
// (mif.Client does) sends no liveness check while the gateway's packets
// keep coming, and one an interval after they stop.
func TestSessionESPIsASignOfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const dpd = 10 * time.Second
		s, tr, h := runActiveSession(t, dpd)
		// A minute of ESP from the gateway, half a second off the
		// session's reads: at the same instant of the bubble's clock,
		// which of the two comes first is not fixed.
		time.Sleep(time.Second / 2)
		for range 60 {
			time.Sleep(time.Second)
			h.received.Add(1)
		}
		synctest.Wait()
		if n := tr.n.Load(); n != 0 {
			t.Errorf("%d liveness checks while the gateway's ESP arrived", n)
		}
		time.Sleep(dpd + 2*time.Second)
		synctest.Wait()
		if n := tr.n.Load(); n != 1 {
			t.Errorf("%d liveness checks %v after the gateway's ESP stopped, want 1", n, dpd+2*time.Second)
		}
		if st := s.Status(); st.State != "established" || st.Reconnects != 0 {
			t.Errorf("session %s with %d reconnects, want established, none", st.State, st.Reconnects)
		}
	})
}

// TestSessionIdleWakesPerInterval: an idle session's timer waits for its
// next liveness check, not a second at a time (one fleet process holding
// 15,000 idle sessions used 11-13% of a core ticking); a packet that ends
// the idleness just after the session looked still brings the check an
// interval and a second after it at most; and packets that go on after
// an idle spell count as signs of life again, with no checks.
func TestSessionIdleWakesPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const dpd = 10 * time.Second
		_, tr, h := runActiveSession(t, dpd)

		// A minute of silence, then half an interval: checks at 10, 20,
		// ... 60 s.
		time.Sleep(60*time.Second + dpd/2)
		synctest.Wait()
		checks, reads := tr.n.Load(), h.reads.Load()
		if checks < 5 || checks > 7 {
			t.Errorf("%d liveness checks in %v of silence with a %v interval, want 6", checks, 60*time.Second+dpd/2, dpd)
		}
		if reads > 2*checks+2 {
			t.Errorf("the ESP counters were read %d times for %d liveness checks: the idle session wakes more than once per interval", reads, checks)
		}

		// One packet from the gateway a millisecond after the check at
		// 70 s, then silence: the next check comes within an interval
		// and a second of it.
		time.Sleep(dpd/2 + time.Millisecond)
		synctest.Wait()
		h.received.Add(1)
		before := tr.n.Load()
		time.Sleep(dpd + time.Second)
		synctest.Wait()
		if n := tr.n.Load(); n <= before {
			t.Errorf("no liveness check %v after the gateway's last packet (interval %v)", dpd+time.Second, dpd)
		}

		// Then a packet a second for a minute: no check.
		before = tr.n.Load()
		for range 60 {
			time.Sleep(time.Second)
			h.received.Add(1)
		}
		synctest.Wait()
		if n := tr.n.Load() - before; n != 0 {
			t.Errorf("%d liveness checks in a minute of the gateway's ESP after an idle spell, want none", n)
		}
	})
}
