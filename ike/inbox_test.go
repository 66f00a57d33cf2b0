package ike

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestResponderInbox: IKE_SA_INIT requests and requests within an IKE SA
// queue apart, a full queue drops and counts what arrives, and the loop
// serves the requests within IKE SAs first.
func TestResponderInbox(t *testing.T) {
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	r, err := NewResponder(ResponderConfig{LocalID: mustID(t, "gw.example"), IKE: ikeP, ESP: espP,
		LocalTS:    []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")},
		ClientPSKs: map[string][]byte{"alice.example": []byte("secret")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	from := netip.MustParseAddrPort("192.0.2.7:500")
	init := make([]byte, 28) // SPIr zero: an IKE_SA_INIT
	binary.BigEndian.PutUint64(init, 1)
	within := make([]byte, 28)
	binary.BigEndian.PutUint64(within, 1)
	binary.BigEndian.PutUint64(within[8:], 2)
	for range initsSize + 3 {
		r.Deliver(init, netip.Addr{}, from, false)
	}
	for range inboxSize + 2 {
		r.Deliver(within, netip.Addr{}, from, false)
	}
	if len(r.inits) != initsSize || len(r.inbox) != inboxSize {
		t.Fatalf("queued %d IKE_SA_INIT and %d other requests, want %d and %d", len(r.inits), len(r.inbox), initsSize, inboxSize)
	}
	for len(r.inbox) > 1 { // one left for the order below
		<-r.inbox
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	// The loop serves the queue of requests within IKE SAs before it
	// selects among the others: by the time it runs this call, that
	// queue is empty, whatever of the 1024 IKE_SA_INIT requests waits.
	if f := r.Failures(ctx); f[FailInitQueueFull] != 3 || f[FailInboxFull] != 2 {
		t.Fatalf("failures %v, want %s 3 and %s 2", f, FailInitQueueFull, FailInboxFull)
	}
	if len(r.inbox) != 0 {
		t.Fatalf("%d requests within IKE SAs still queued", len(r.inbox))
	}
}
