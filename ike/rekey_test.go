package ike

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testenv"
)

// live returns how many Child SAs a handler holds: installed minus
// removed.
func (l *childLog) live() int {
	i, r, _ := l.counts()
	return i - r
}

// lastSwitched is the Child SA whose outbound SA sends.
func (l *childLog) lastSwitched() *ChildSA {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.switched) == 0 {
		return nil
	}
	return l.switched[len(l.switched)-1]
}

// sessionState runs f on the session's loop.
func sessionState(t *testing.T, s *Session, f func()) {
	t.Helper()
	if err := s.call(ctxT(t), func(context.Context, *callResult) error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// gatewayClient runs f on the responder's loop with its only client.
func gatewayClient(t *testing.T, r *Responder, f func(c *rClient)) {
	t.Helper()
	ok := r.do(ctxT(t), func() {
		if len(r.clients) != 1 {
			t.Errorf("%d clients at the gateway, want 1", len(r.clients))
			return
		}
		f(r.clients[0])
	})
	if !ok {
		t.Fatal("the responder's loop did not run")
	}
}

// TestSimultaneousChildRekey: the gateway and the client rekey the same
// Child SA at once and each answers the other's request (RFC 7296
// §2.8.1). Whichever exchange holds the lowest nonce, exactly one new
// Child SA pair remains on both sides, it is the one that sends, its keys
// match, and nothing leaks: every SA installed is removed but that one.
// The rekeys repeat until both outcomes were seen.
func TestSimultaneousChildRekey(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	seen := map[bool]int{} // by whether the gateway's new SA survived
	for i := 1; i <= 40 && (seen[true] == 0 || seen[false] == 0); i++ {
		err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error {
			// The gateway's request is in the client's inbox before
			// the client sends its own: the two cross.
			rg.w.r.do(loop, func() { rg.w.r.rekeyChild(rg.w.r.clients[0]) })
			r.set(rg.s.rekeyChild(loop))
			return nil
		})
		if err != nil {
			t.Fatalf("rekey %d: %v", i, err)
		}
		// Each round installs two SAs on each side and removes two: the
		// old one and the redundant one.
		testenv.WaitUntil(t, 5*time.Second, "each side to install two SAs and remove two in this round", func() bool {
			ci, cr, _ := rg.ch.counts()
			gi, gr, _ := rg.gh.counts()
			return ci == 1+2*i && cr == 2*i && gi == 1+2*i && gr == 2*i
		})
		var cur, gcur *ChildSA
		var clientOld, gwOld int
		sessionState(t, rg.s, func() { cur, clientOld = rg.s.child, len(rg.s.oldKids) })
		gatewayClient(t, rg.w.r, func(c *rClient) { gcur, gwOld = c.child, len(c.oldKids) })
		if clientOld != 0 || gwOld != 0 {
			t.Fatalf("rekey %d: %d and %d rekeyed Child SAs left on the client and the gateway", i, clientOld, gwOld)
		}
		pairOK(t, cur, gcur)
		if rg.ch.live() != 1 || rg.gh.live() != 1 {
			t.Fatalf("rekey %d: %d and %d live Child SAs, want 1 and 1", i, rg.ch.live(), rg.gh.live())
		}
		if sw := rg.ch.lastSwitched(); sw == nil || sw.InSPI != cur.InSPI {
			t.Fatalf("rekey %d: the client sends on %+v, not on the surviving SA", i, sw)
		}
		if sw := rg.gh.lastSwitched(); sw == nil || sw.InSPI != gcur.InSPI {
			t.Fatalf("rekey %d: the gateway sends on %+v, not on the surviving SA", i, sw)
		}
		seen[cur.byPeer]++
	}
	if seen[true] == 0 || seen[false] == 0 {
		t.Fatalf("outcomes %v: the lowest nonce never fell to one side", seen)
	}
	if err := rg.ping(t); err != nil {
		t.Fatal(err)
	}
}

// TestSimultaneousIKERekey: both ends rekey the IKE SA at once (RFC 7296
// §2.8.2). One IKE SA remains, with the same SPIs on both sides, the
// Child SA is untouched, and liveness checks work both ways on it.
func TestSimultaneousIKERekey(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	seen := map[bool]int{} // by whether the gateway's new IKE SA survived
	for i := 1; i <= 40 && (seen[true] == 0 || seen[false] == 0); i++ {
		err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error {
			rg.w.r.do(loop, func() { rg.w.r.rekeyIKE(rg.w.r.clients[0]) })
			r.set(rg.s.rekeyIKE(loop))
			return nil
		})
		if err != nil {
			t.Fatalf("rekey %d: %v", i, err)
		}
		testenv.WaitUntil(t, 5*time.Second, "both sides to drop the old SAs", func() bool {
			var oldSAs, sas int
			sessionState(t, rg.s, func() { oldSAs = len(rg.s.oldSAs) })
			rg.w.r.do(ctxT(t), func() { sas = len(rg.w.r.sas) })
			return oldSAs == 0 && sas == 1
		})
		var spiI, spiR uint64
		var byGateway bool
		sessionState(t, rg.s, func() { spiI, spiR, byGateway = rg.s.sa.spiI, rg.s.sa.spiR, !rg.s.sa.initiator })
		gatewayClient(t, rg.w.r, func(c *rClient) {
			if c.sa.spiI != spiI || c.sa.spiR != spiR || c.IKESPIi != spiI || c.IKESPIr != spiR {
				t.Errorf("rekey %d: the gateway's IKE SA %016x/%016x, the client's %016x/%016x", i, c.sa.spiI, c.sa.spiR, spiI, spiR)
			}
			if rg.w.r.sas[saKey{spiI, spiR}] != c.sa {
				t.Errorf("rekey %d: the surviving IKE SA is not in the table", i)
			}
		})
		seen[byGateway]++
		if err := rg.ping(t); err != nil {
			t.Fatalf("rekey %d: the client's liveness check: %v", i, err)
		}
		answered := make(chan bool, 1)
		gatewayClient(t, rg.w.r, func(c *rClient) {
			if err := rg.w.r.request(c, wire.INFORMATIONAL, nil, func(reply []wire.Payload) { answered <- reply != nil }); err != nil {
				t.Errorf("gateway's liveness check: %v", err)
				answered <- false
			}
		})
		select {
		case ok := <-answered:
			if !ok {
				t.Fatalf("rekey %d: the client did not answer the gateway's liveness check", i)
			}
		case <-ctxT(t).Done():
			t.Fatalf("rekey %d: no answer to the gateway's liveness check", i)
		}
	}
	if seen[true] == 0 || seen[false] == 0 {
		t.Fatalf("outcomes %v: the lowest nonce never fell to one side", seen)
	}
	if rg.ch.live() != 1 || rg.gh.live() != 1 {
		t.Fatalf("%d and %d live Child SAs after IKE rekeys, want 1 and 1", rg.ch.live(), rg.gh.live())
	}
	if st := rg.client(t); st.IKERekeys == 0 || st.ChildRekeys != 0 {
		t.Fatalf("gateway status %+v", st)
	}
}

// TestChildRekeyDuringIKERekey: a Child SA rekey by the gateway crosses
// an IKE SA rekey by the client. As strongSwan does, each side refuses
// the other's rekey of the other kind with TEMPORARY_FAILURE (RFC 7296
// §2.25) and schedules its own for a retry a random 2-10 s later; nothing
// breaks, nothing leaks, and both rekeys go through when retried.
func TestChildRekeyDuringIKERekey(t *testing.T) {
	rg := newRig(t, ResponderConfig{}, SessionConfig{})
	var ikeRetry instant
	err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error {
		rg.w.r.do(loop, func() { rg.w.r.rekeyChild(rg.w.r.clients[0]) })
		err := rg.s.rekeyIKE(loop)
		ikeRetry = rg.s.sa.retryAt
		r.set(err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var childRetry instant
	testenv.WaitUntil(t, 5*time.Second, "the gateway to hold off another Child SA rekey", func() bool {
		gatewayClient(t, rg.w.r, func(c *rClient) { childRetry = c.child.retryAt })
		return !childRetry.IsZero()
	})
	if ikeRetry.IsZero() {
		t.Fatal("the client's refused IKE SA rekey is not scheduled for a retry")
	}
	if st := rg.client(t); st.IKERekeys != 0 || st.ChildRekeys != 0 {
		t.Fatalf("status %+v, want both rekeys refused", st)
	}
	if rg.ch.live() != 1 || rg.gh.live() != 1 {
		t.Fatalf("%d and %d live Child SAs, want 1 and 1", rg.ch.live(), rg.gh.live())
	}
	// The retries, one after the other.
	if err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error { r.set(rg.s.rekeyIKE(loop)); return nil }); err != nil {
		t.Fatal(err)
	}
	gatewayClient(t, rg.w.r, func(c *rClient) { rg.w.r.rekeyChild(c) })
	testenv.WaitUntil(t, 5*time.Second, "one IKE and one Child SA rekey, one live Child SA on each side", func() bool {
		st := rg.client(t)
		return st.IKERekeys == 1 && st.ChildRekeys == 1 && rg.ch.live() == 1 && rg.gh.live() == 1
	})
	pairOK(t, rg.ch.last(), rg.gh.last())
	if err := rg.ping(t); err != nil {
		t.Fatal(err)
	}
}

// seqCounter reports sequence numbers past any limit for the Child SA
// whose inbound SPI is hot, none for the others.
type seqCounter struct{ hot atomic.Uint32 }

func (q *seqCounter) Sequences(c *ChildSA) (sent, received uint64) {
	if c.InSPI == q.hot.Load() {
		return 1 << 32, 1<<32 - 1
	}
	return 0, 0
}

type seqGwLog struct {
	gwLog
	seqCounter
}

type seqClientLog struct {
	childLog
	seqCounter
}

// TestVolumeRekey: a Child SA without ESN whose sequence numbers pass
// the soft limit is rekeyed once, by the gateway or by the client, with
// time-based rekeys off. An ESN Child SA is not.
func TestVolumeRekey(t *testing.T) {
	for _, side := range []string{"gateway", "client"} {
		t.Run(side, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				psk := []byte("a pre-shared key of some length")
				gh := &seqGwLog{}
				w := startResponderWith(t, ResponderConfig{PSK: psk, RekeySequences: 1000}, gh)
				ch := &seqClientLog{}
				cfg := SessionConfig{Remote: w.gw, PSK: psk, LocalID: mustID(t, "client@mifsec.test"), RemoteID: mustID(t, "gw.mifsec.test"),
					RequestIPv4: true, RekeySequences: 1000, DPD: time.Hour}
				cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
				a := rigAddr1
				s, err := NewSession(cfg, clientSide{w, a}, ch)
				if err != nil {
					t.Fatal(err)
				}
				w.mu.Lock()
				w.sessions[a] = s
				w.mu.Unlock()
				connect(t, s, true)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { s.Run(ctx); close(done) }()
				t.Cleanup(func() { cancel(); <-done })

				first := ch.last()
				if first.ESN {
					t.Fatal("ESN negotiated without being offered")
				}
				time.Sleep(10 * time.Second)
				if n := s.Status().ChildRekeys; n != 0 {
					t.Fatalf("%d Child SA rekeys before any SA ran low", n)
				}
				if side == "gateway" {
					gh.hot.Store(first.OutSPI) // the gateway's inbound SPI
				} else {
					ch.hot.Store(first.InSPI)
				}
				time.Sleep(30 * time.Second)
				synctest.Wait()
				if n := s.Status().ChildRekeys; n != 1 {
					t.Fatalf("%d Child SA rekeys after the %s's SA ran low, want 1", n, side)
				}
				if ch.live() != 1 || gh.live() != 1 {
					t.Fatalf("%d and %d live Child SAs, want 1 and 1", ch.live(), gh.live())
				}
				pairOK(t, ch.last(), gh.last())
			})
		})
	}
}

// TestGatewayRekeysIKESA: with IKERekey set, the gateway's tick rekeys
// each client's IKE SA (the client is the new SA's responder), keeps the
// Child SA and deletes the old IKE SA; both ends then talk on the new one.
func TestGatewayRekeysIKESA(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		psk := []byte("a pre-shared key of some length")
		w, gh := startResponder(t, ResponderConfig{PSK: psk, IKERekey: time.Minute})
		s, ch := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test"), DPD: time.Hour})
		connect(t, s, true)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		before := s.Status()

		time.Sleep(53 * time.Second) // less than the lifetime less 10%
		synctest.Wait()
		if n := s.Status().IKERekeys; n != 0 {
			t.Fatalf("%d IKE SA rekeys before the lifetime less jitter", n)
		}
		time.Sleep(9 * time.Second)
		synctest.Wait()
		after := s.Status()
		if after.IKERekeys != 1 || after.IKESPIi == before.IKESPIi {
			t.Fatalf("after a minute: %d IKE SA rekeys, SPIs %s/%s (before %s/%s)", after.IKERekeys, after.IKESPIi, after.IKESPIr, before.IKESPIi, before.IKESPIr)
		}
		st := clients(t, w)
		if len(st) != 1 || st[0].IKERekeys != 1 || st[0].IKESPIi != after.IKESPIi || st[0].IKESPIr != after.IKESPIr {
			t.Fatalf("gateway status %+v, client %s/%s", st, after.IKESPIi, after.IKESPIr)
		}
		var tables, oldSAs int
		w.r.do(ctxT(t), func() { tables = len(w.r.sas) })
		sessionState(t, s, func() { oldSAs = len(s.oldSAs) })
		if tables != 1 || oldSAs != 0 {
			t.Fatalf("%d IKE SAs at the gateway and %d old ones at the client, want 1 and 0", tables, oldSAs)
		}
		if ch.live() != 1 || gh.live() != 1 {
			t.Fatalf("%d and %d live Child SAs, want 1 and 1", ch.live(), gh.live())
		}
		// The client rekeys a Child SA on the gateway's new IKE SA.
		if err := s.call(ctxT(t), func(loop context.Context, r *callResult) error { r.set(s.rekeyChild(loop)); return nil }); err != nil {
			t.Fatal(err)
		}
		pairOK(t, ch.last(), gh.last())
		// And in the second minute, once more.
		time.Sleep(60 * time.Second)
		synctest.Wait()
		if n := s.Status().IKERekeys; n != 2 {
			t.Fatalf("%d IKE SA rekeys after two minutes, want 2", n)
		}
	})
}

// TestProbeSANegotiated: a Child SA has a probe SA (MIF_PROBE_SPI) when
// both ends speak MIF, from IKE_AUTH and after every rekey whichever side
// starts it, with matching SPIs and keys of its own on both ends; with
// MIF off on either end, none, and the Child SA works as before.
func TestProbeSANegotiated(t *testing.T) {
	for _, tc := range []struct {
		name             string
		gwOff, clientOff bool
	}{
		{"both speak MIF", false, false},
		{"gateway without MIF", true, false},
		{"client without MIF", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, ResponderConfig{MobilityConfig: MobilityConfig{DisableMIF: tc.gwOff}},
				SessionConfig{MobilityConfig: MobilityConfig{DisableMIF: tc.clientOff}})
			want := !tc.gwOff && !tc.clientOff
			check := func(when string) {
				t.Helper()
				var cur, gcur *ChildSA
				sessionState(t, rg.s, func() { cur = rg.s.child })
				gatewayClient(t, rg.w.r, func(c *rClient) { gcur = c.child })
				pairOK(t, cur, gcur)
				if got := cur.Probe != nil; got != want {
					t.Fatalf("%s: probe SA %v, want %v", when, got, want)
				}
				testenv.WaitUntil(t, 5*time.Second, "both statuses to show the current Child SA", func() bool {
					st := rg.s.Status()
					return st.Child != nil && st.Child.InSPI == fmt.Sprintf("%08x", cur.InSPI) && rg.client(t).InSPI == fmt.Sprintf("%08x", gcur.InSPI)
				})
				if st := rg.s.Status(); (st.Child.ProbeInSPI != "") != want || (st.Child.ProbeOutSPI != "") != want {
					t.Fatalf("%s: client status %+v, want a probe SA %v", when, st.Child, want)
				}
				if got := rg.client(t).ProbeSA; got != want {
					t.Fatalf("%s: the gateway's status says probe SA %v, want %v", when, got, want)
				}
			}
			check("after IKE_AUTH")
			for i, byGateway := range []bool{false, true, false} {
				installed, _, _ := rg.ch.counts()
				err := rg.s.call(ctxT(t), func(loop context.Context, r *callResult) error {
					if byGateway {
						rg.w.r.do(loop, func() { rg.w.r.rekeyChild(rg.w.r.clients[0]) })
						return nil
					}
					r.set(rg.s.rekeyChild(loop))
					return nil
				})
				if err != nil {
					t.Fatalf("rekey %d: %v", i, err)
				}
				testenv.WaitUntil(t, 5*time.Second, "the rekeyed Child SA on both sides", func() bool {
					ci, _, _ := rg.ch.counts()
					return ci == installed+1 && rg.ch.live() == 1 && rg.gh.live() == 1
				})
				check(map[bool]string{false: "after the client's rekey", true: "after the gateway's rekey"}[byGateway])
			}
			if err := rg.ping(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}
