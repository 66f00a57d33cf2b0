package ike

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// TestKeyPool: the pool makes pairs for the groups of the proposals
// (not DH_NONE), fills up while it runs, hands each pair out once, and
// falls back to a pair made on the spot when empty or not pooled; its
// pairs agree on shared secrets; its goroutines end with the context.
func TestKeyPool(t *testing.T) {
	specs := []ProposalSpec{{DHGroups: []uint16{wire.DH_CURVE25519, wire.DH_NONE}}, {DHGroups: []uint16{wire.DH_ECP_256}}}
	p := newKeyPool(4, specs)
	if len(p.pairs) != 2 || p.pairs[wire.DH_CURVE25519] == nil || p.pairs[wire.DH_ECP_256] == nil {
		t.Fatalf("pooled groups %v", p.pairs)
	}
	if newKeyPool(4, []ProposalSpec{{DHGroups: []uint16{wire.DH_NONE}}}) != nil {
		t.Error("a pool for no group")
	}
	var nilPool *keyPool
	if k, err := nilPool.take(wire.DH_CURVE25519); err != nil || len(k.Public()) != 32 {
		t.Fatalf("no pool: %v", err)
	}
	if k, err := p.take(wire.DH_MODP_2048); err != nil || k.Group() != wire.DH_MODP_2048 {
		t.Fatalf("a group not pooled: %v", err)
	}
	if _, err := p.take(9999); err == nil {
		t.Error("an unknown group was made")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.fill(ctx, &wg)
	// A group's pairs are made once a client used it.
	time.Sleep(50 * time.Millisecond)
	if n := len(p.pairs[wire.DH_CURVE25519]) + len(p.pairs[wire.DH_ECP_256]); n != 0 {
		t.Fatalf("%d pairs made before any was taken", n)
	}
	if _, err := p.take(wire.DH_CURVE25519); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(p.pairs[wire.DH_CURVE25519]) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d pairs 10 s after the first take, want 4", len(p.pairs[wire.DH_CURVE25519]))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(p.pairs[wire.DH_ECP_256]); n != 0 {
		t.Errorf("%d ECP-256 pairs made, none taken", n)
	}
	seen := map[string]bool{}
	var pairs []KeyExchange
	for range 12 {
		k, err := p.take(wire.DH_CURVE25519)
		if err != nil || k.Group() != wire.DH_CURVE25519 {
			t.Fatalf("take: %v", err)
		}
		if seen[string(k.Public())] {
			t.Fatal("a key pair handed out twice")
		}
		seen[string(k.Public())] = true
		pairs = append(pairs, k)
	}
	a, b := pairs[0], pairs[11]
	ab, err1 := a.SharedSecret(b.Public())
	ba, err2 := b.SharedSecret(a.Public())
	if err1 != nil || err2 != nil || string(ab) != string(ba) {
		t.Fatalf("pooled pairs disagree: %v, %v", err1, err2)
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the pool's goroutines did not end with the context")
	}
}

// BenchmarkHandleInit is the Responder loop's time for one IKE_SA_INIT
// (X25519), each from its own address: with a key pair made on the spot,
// and with one from the pool, filled meanwhile on another core. The loop
// answers every IKE_SA_INIT of the gateway, so its time per request
// bounds the rate at which clients are set up (docs/gateway-scale.md).
// The shared secret and the keys are derived beside the loop
// (initkeys.go) and are not in it: no worker runs here.
func BenchmarkHandleInit(b *testing.B) {
	for _, pooled := range []bool{false, true} {
		name := "on-the-spot"
		if pooled {
			name = "pool"
		}
		b.Run(name, func(b *testing.B) {
			rig := newFuzzRigWith(b, func(c *ResponderConfig) {
				c.CookieThreshold, c.MaxHalfOpen, c.MaxHalfOpenPerSource = 1<<30, 1<<30, 1<<30
				c.SourceDHBudget, c.DHBudget = time.Hour, time.Hour
			})
			if !pooled {
				rig.r.keys = nil
			} else {
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				rig.r.keys.fill(ctx, &wg)
				b.Cleanup(func() { cancel(); wg.Wait() })
				if _, err := rig.r.keys.take(wire.DH_CURVE25519); err != nil { // starts the group's filler
					b.Fatal(err)
				}
				for len(rig.r.keys.pairs[wire.DH_CURVE25519]) < keyPoolSize {
					time.Sleep(time.Millisecond)
				}
			}
			reqs := make([][]byte, 4096)
			for i := range reqs {
				reqs[i] = initRequest(b, uint64(i+1), "aes256gcm16-prfsha256-x25519", 32, nil)
			}
			for i := 0; b.Loop(); i++ {
				from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 500)
				rig.r.handle(inbound{data: reqs[i%len(reqs)], from: from})
				rig.sent = rig.sent[:0]
			}
		})
	}
}
