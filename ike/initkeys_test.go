package ike

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

// onlyHalfOpen is the rig's one half-open IKE SA.
func (rig *fuzzRig) onlyHalfOpen(t *testing.T) *rSA {
	t.Helper()
	if len(rig.r.halfOpen) != 1 {
		t.Fatalf("%d half-open IKE SAs, want 1", len(rig.r.halfOpen))
	}
	for _, sa := range rig.r.halfOpen {
		return sa
	}
	return nil
}

// TestInitKeysBeside: an IKE_SA_INIT's keys are derived beside the loop
// and the client's IKE_AUTH finds them, whoever derived them: a worker
// before it arrived, a worker while the loop waits, or the loop itself
// when no worker took the job. The keys are the client's (the IKE_AUTH
// opens and the client accepts the answer).
func TestInitKeysBeside(t *testing.T) {
	for _, tc := range []struct {
		name   string
		worker func(j *initKeys) // what a worker does before the IKE_AUTH
	}{
		{"worker first", func(j *initKeys) {
			if !j.take() {
				t.Error("the worker could not take a queued job")
			}
		}},
		{"worker under way", func(j *initKeys) {
			var wg sync.WaitGroup
			wg.Go(func() { j.take() })
			t.Cleanup(wg.Wait)
		}},
		{"no worker", func(*initKeys) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newFuzzRig(t)
			rig.halfOpen(t)
			sa := rig.onlyHalfOpen(t)
			j := sa.half.pendingKeys
			if j == nil || sa.keys != nil {
				t.Fatalf("after IKE_SA_INIT: pending %v, keys %v; want the keys pending", j, sa.keys)
			}
			if got := <-rig.r.initJobs; got != j {
				t.Fatal("the job was not queued for the workers")
			}
			tc.worker(j)
			if err := rig.s.authExchange(context.Background(), rig.init, true); err != nil {
				t.Fatalf("IKE_AUTH: %v", err)
			}
			if sa.half != nil || sa.keys == nil || len(rig.r.clients) != 1 {
				t.Fatalf("after IKE_AUTH: half-open state %v, keys %v, %d clients", sa.half, sa.keys, len(rig.r.clients))
			}
			if !bytes.Equal(sa.keys.SKd(), rig.init.sa.keys.SKd()) || !bytes.Equal(sa.keys.SKer(), rig.init.sa.keys.SKer()) {
				t.Fatal("the gateway's SK_d or SK_er differs from the client's")
			}
			if sa.keys.SKpi() != nil || rig.init.sa.keys.SKpi() == nil {
				t.Fatal("the gateway kept SK_pi after IKE_AUTH, or the client has none")
			}
			if j.state.Load() != initDerived || j.kex != nil {
				t.Fatalf("job state %d, private value kept %v", j.state.Load(), j.kex != nil)
			}
		})
	}
}

// TestInitKeysInvalidPublicValue: a public value of the right length that
// is not one of the group's (x25519's zero point) shows only when the
// shared secret is computed: the IKE SA is then dropped at the client's
// next message, counted as a malformed request, and nothing answers it.
func TestInitKeysInvalidPublicValue(t *testing.T) {
	rig := newFuzzRig(t)
	specs, err := ParseIKEProposals("aes256gcm16-prfsha256-x25519")
	if err != nil {
		t.Fatal(err)
	}
	req, err := (&wire.Message{SPIi: 42, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: []wire.Payload{
		&wire.SA{Proposals: offerIKE(specs)}, &wire.KE{Group: wire.DH_CURVE25519, Data: make([]byte, 32)}, &wire.Nonce{Data: make([]byte, 32)},
	}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rig.deliver(req, false)
	sa := rig.onlyHalfOpen(t)
	// The client's next message: any request within the IKE SA.
	next, err := (&wire.Message{SPIi: 42, SPIr: sa.spiR, Exchange: wire.IKE_AUTH, Flags: wire.FlagInitiator, MessageID: 1,
		Payloads: []wire.Payload{&wire.Encrypted{}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sent := len(rig.sent)
	rig.deliver(next, false)
	if len(rig.r.halfOpen) != 0 || len(rig.r.sas) != 0 {
		t.Fatalf("%d half-open, %d IKE SAs left after a failed Diffie-Hellman", len(rig.r.halfOpen), len(rig.r.sas))
	}
	if got := rig.r.failures[FailInvalidSyntax]; got != 1 {
		t.Fatalf("%s counted %d times, want 1", FailInvalidSyntax, got)
	}
	if len(rig.sent) != sent {
		t.Fatal("the request of an IKE SA without keys was answered")
	}
	// A public value of the wrong length is refused at once, as before.
	short, err := (&wire.Message{SPIi: 43, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: []wire.Payload{
		&wire.SA{Proposals: offerIKE(specs)}, &wire.KE{Group: wire.DH_CURVE25519, Data: make([]byte, 31)}, &wire.Nonce{Data: make([]byte, 32)},
	}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	n := len(rig.sent)
	rig.deliver(short, false)
	if _, ke, notify := rig.initAnswer(t, netip.AddrPortFrom(rig.clientAddr, 500), n); ke || notify != wire.INVALID_SYNTAX {
		t.Fatalf("31-byte x25519 value: IKE SA %v, notify %d; want INVALID_SYNTAX", ke, notify)
	}
}

// TestInitKeysCancelled: a half-open IKE SA that goes before its keys
// were derived takes its job with it (a worker skips it and the private
// value is dropped); one a worker holds has its keys wiped when done.
func TestInitKeysCancelled(t *testing.T) {
	rig := newFuzzRig(t)
	rig.halfOpen(t)
	sa := rig.onlyHalfOpen(t)
	j := sa.half.pendingKeys
	sa.wipe()
	if sa.half.pendingKeys != nil || j.state.Load() != initCancelled || j.kex != nil {
		t.Fatalf("after wipe: pending %v, state %d, private value kept %v", sa.half.pendingKeys, j.state.Load(), j.kex != nil)
	}
	if j.take() {
		t.Fatal("a worker derived the keys of a cancelled job")
	}

	// A worker took the job; the SA goes while it derives.
	rig = newFuzzRig(t)
	rig.halfOpen(t)
	sa = rig.onlyHalfOpen(t)
	j = sa.half.pendingKeys
	if !j.state.CompareAndSwap(initQueued, initTaken) {
		t.Fatal("the worker could not take a queued job")
	}
	sa.wipe()
	j.derive()
	<-j.done
	if j.state.Load() != initAbandoned || j.keys == nil || !bytes.Equal(j.keys.SKpi(), make([]byte, len(j.keys.SKpi()))) {
		t.Fatalf("keys derived for an abandoned job: state %d, keys %v, not wiped", j.state.Load(), j.keys)
	}

	// The keys were derived; the SA goes before the loop took them.
	rig = newFuzzRig(t)
	rig.halfOpen(t)
	sa = rig.onlyHalfOpen(t)
	j = sa.half.pendingKeys
	j.take()
	sa.wipe()
	if !bytes.Equal(j.keys.SKpi(), make([]byte, len(j.keys.SKpi()))) {
		t.Fatal("keys derived for a half-open SA that went were not wiped")
	}
}
