package ike

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// gatedPool is a SharedPool whose leases wait for the test: each
// LeaseFor says it began (began) and waits for a token (gate).
type gatedPool struct {
	began chan string
	gate  chan struct{}
	// busy: LeaseFor fails this many times with ErrPoolBusy first.
	busy int

	mu       sync.Mutex
	pool     *AddressPool
	released []netip.Addr
}

func newGatedPool(t *testing.T, p netip.Prefix) *gatedPool {
	pool, err := NewAddressPool(p)
	if err != nil {
		t.Fatal(err)
	}
	return &gatedPool{began: make(chan string, 16), gate: make(chan struct{}), pool: pool}
}

func (p *gatedPool) Shared()              {}
func (p *gatedPool) Prefix() netip.Prefix { return p.pool.Prefix() }
func (p *gatedPool) LeaseFor(id string) (netip.Addr, error) {
	p.began <- id
	<-p.gate
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy > 0 {
		p.busy--
		return netip.Addr{}, fmt.Errorf("etcd: %w", ErrPoolBusy)
	}
	return p.pool.LeaseFor(id)
}
func (p *gatedPool) LeaseRequested(id string, want netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pool.LeaseRequested(id, want)
}
func (p *gatedPool) Release(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.released = append(p.released, a)
	p.pool.Release(a)
}

// releasedSince is what was released after the first n releases.
func (p *gatedPool) releasedSince(n int) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.released[min(n, len(p.released)):])
}

func (p *gatedPool) Leased() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pool.Leased()
}

func (p *gatedPool) waitBegan(t *testing.T) string {
	t.Helper()
	select {
	case id := <-p.began:
		return id
	case <-time.After(5 * time.Second):
		t.Fatal("no lease began")
		return ""
	}
}

// TestResponderSharedPoolLeasesBeside: a shared pool's leases are taken
// beside the responder's loop: while one waits, the loop answers other
// clients and starts their leases too; the waiting client's
// retransmissions start no second lease; each client gets its own
// address when its lease comes. A lease that comes after the responder
// stopped is released.
func TestResponderSharedPoolLeasesBeside(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	pool := newGatedPool(t, netip.MustParsePrefix("10.3.0.0/24"))
	w := &memWire{gw: netip.MustParseAddrPort("192.0.2.1:500"), sessions: map[netip.Addr]*Session{}}
	cfg := ResponderConfig{PSK: psk, Pools: []netip.Prefix{pool.Prefix()},
		NewPool: func(netip.Prefix) (Pool, error) { return pool, nil }}
	// The responder runs until the test stops it (below), not to its end.
	cfg.LocalID, cfg.DNS = mustID(t, "gw.mifsec.test"), []netip.Addr{netip.MustParseAddr("10.1.0.53")}
	cfg.IKE, cfg.ESP = mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
	cfg.LocalTS = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	r, err := NewResponder(cfg, gatewaySide{w}, &gwLog{})
	if err != nil {
		t.Fatal(err)
	}
	w.r = r
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { r.Run(ctx); close(ran) }()
	defer func() { stop(); <-ran }()

	login := func(addr, id string) (*Session, chan error) {
		s, _ := w.newClient(t, addr, SessionConfig{PSK: psk, LocalID: mustID(t, id)})
		done := make(chan error, 1)
		go func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- s.connect(cctx, true)
		}()
		return s, done
	}
	alice, aliceDone := login("192.0.2.10", "alice@mifsec.test")
	if id := pool.waitBegan(t); id != "alice@mifsec.test" {
		t.Fatalf("lease began for %q, want alice", id)
	}
	// The loop is free: it answers a status request and sets up the
	// next client's IKE SA up to its lease.
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if !r.do(sctx, func() {}) {
		t.Fatal("the loop did not answer while a lease is taken")
	}
	bob, bobDone := login("192.0.2.11", "bob@mifsec.test")
	if id := pool.waitBegan(t); id != "bob@mifsec.test" {
		t.Fatalf("lease began for %q, want bob", id)
	}
	// Alice retransmits her IKE_AUTH every 100 ms: no second lease.
	select {
	case id := <-pool.began:
		t.Fatalf("a second lease began, for %q", id)
	case <-time.After(350 * time.Millisecond):
	}
	pool.gate <- struct{}{}
	pool.gate <- struct{}{}
	for name, done := range map[string]chan error{"alice": aliceDone, "bob": bobDone} {
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	got := map[netip.Addr]bool{}
	for _, s := range []*Session{alice, bob} {
		st := s.Status()
		if len(st.Addresses) != 1 {
			t.Fatalf("client addresses %v", st.Addresses)
		}
		got[netip.MustParsePrefix(st.Addresses[0]).Addr()] = true
	}
	if len(got) != 2 || pool.Leased() != 2 {
		t.Fatalf("clients hold %v, the pool leased %d; want two addresses", got, pool.Leased())
	}

	// A lease that comes after the responder stopped goes back (the
	// responder's goodbyes released alice's and bob's).
	_, carolDone := login("192.0.2.12", "carol@mifsec.test")
	pool.waitBegan(t)
	stop()
	<-ran
	if n := pool.Leased(); n != 0 {
		t.Fatalf("the stopped responder's clients left %d addresses leased", n)
	}
	pool.gate <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for len(pool.releasedSince(2)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := pool.Leased(); n != 0 || len(pool.releasedSince(2)) != 1 {
		t.Errorf("after a lease came to a stopped responder, the pool leased %d (released since %v), want it back", n, pool.releasedSince(2))
	}
	<-carolDone // no answer came: the client gives up
}

// TestLeaseWindow: the lease window grows by one per window of fast
// leases, halves once for the leases out when one is slow or fails, and
// stays within its bounds.
func TestLeaseWindow(t *testing.T) {
	r := &Responder{leaseWindow: 4}
	for range 4 {
		r.adjustLeaseWindow(time.Now(), time.Millisecond, false)
	}
	if r.leaseWindow < 4.9 || r.leaseWindow > 5.1 {
		t.Fatalf("after a window of fast leases: %.2f, want about 5", r.leaseWindow)
	}
	before := time.Now().Add(-time.Second)
	r.adjustLeaseWindow(before, time.Second, false)
	w := r.leaseWindow
	if w < 2.4 || w > 2.6 {
		t.Fatalf("after a slow lease: %.2f, want about 2.5", w)
	}
	r.adjustLeaseWindow(before, time.Second, false) // out at the same time: no second halving
	r.adjustLeaseWindow(before, time.Millisecond, true)
	if r.leaseWindow != w {
		t.Fatalf("leases begun before the halving halved again: %.2f, want %.2f", r.leaseWindow, w)
	}
	r.adjustLeaseWindow(time.Now(), time.Millisecond, true) // a failure, begun since
	if r.leaseWindow != w/2 {
		t.Fatalf("after a failed lease: %.2f, want %.2f", r.leaseWindow, w/2)
	}
	for range 10 {
		r.adjustLeaseWindow(time.Now().Add(time.Hour), time.Second, false)
	}
	if r.leaseWindow != minLeaseWindow {
		t.Fatalf("floor: %.2f", r.leaseWindow)
	}
	for range 10000 {
		r.adjustLeaseWindow(time.Now(), 0, false)
	}
	if r.leaseWindow != maxLeaseWindow {
		t.Fatalf("ceiling: %.2f", r.leaseWindow)
	}
}

// TestResponderSharedPoolBusy: a lease the pool's store answered too late
// (ErrPoolBusy) leaves the IKE_AUTH request unanswered; the client's
// retransmission starts a new lease, which gets it its address.
func TestResponderSharedPoolBusy(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	pool := newGatedPool(t, netip.MustParsePrefix("10.3.0.0/24"))
	pool.busy = 1
	w, _ := startResponder(t, ResponderConfig{PSK: psk, Pools: []netip.Prefix{pool.Prefix()},
		NewPool: func(netip.Prefix) (Pool, error) { return pool, nil }})
	s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, LocalID: mustID(t, "alice@mifsec.test")})
	if err := connectPastBusyLease(t, s, pool); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); len(st.Addresses) != 1 || pool.Leased() != 1 {
		t.Fatalf("client addresses %v, pool leased %d; want one", st.Addresses, pool.Leased())
	}
	if f := w.r.Failures(context.Background()); f[FailNoAddress] != 0 {
		t.Errorf("the busy lease counted as a failure: %v", f)
	}
	w.r.do(context.Background(), func() {
		if len(w.r.halfOpen) != 0 || len(w.r.sas) != 1 {
			t.Errorf("%d half-open IKE SAs, %d in all; want the client's alone", len(w.r.halfOpen), len(w.r.sas))
		}
	})
}

// connectPastBusyLease connects s while pool (busy once) answers the first
// lease too late, and lets the lease its IKE_AUTH retransmission starts
// through.
func connectPastBusyLease(t *testing.T, s *Session, pool *gatedPool) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.connect(ctx, true)
	}()
	for range 2 { // the busy lease, then the one the retransmission starts
		pool.waitBegan(t)
		pool.gate <- struct{}{}
	}
	return <-done
}
