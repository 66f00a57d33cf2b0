package ike

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// RunResponderEAP logs clients in to a gateway that signs with gateway's
// credentials (an RSA key) on the in-memory harness by EAP-MSCHAPv2:
// the right password connects; a wrong one and an unknown user are
// refused with AUTHENTICATION_FAILED and leave no IKE SA behind; the
// right password works again right after; a client that sent no
// SIGNATURE_HASH_ALGORITHMS gets method 1 (RSA with SHA-1).
func RunResponderEAP(t *testing.T, cas *TrustStore, gateway CertifiedPeer) {
	users, err := NewEAPUsers(map[string]string{"carol": "carol's password", "dave": "dave's password"})
	if err != nil {
		t.Fatal(err)
	}
	w, gh := startResponder(t, ResponderConfig{LocalID: gateway.ID, Key: gateway.Key,
		Certificates: []*x509Cert{gateway.Cert}, EAPUsers: users})
	login := func(addr, identity, password string) (*Session, *childLog, error) {
		t.Helper()
		cred, err := NewEAPCredentials(identity, password)
		if err != nil {
			t.Fatal(err)
		}
		s, ch := w.newClient(t, addr, SessionConfig{LocalID: eapIdentity(identity), EAP: cred, CAs: cas, RemoteID: gateway.ID})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return s, ch, s.connect(ctx, true)
	}
	_, ch, err := login("192.0.2.11", "carol", "carol's password")
	if err != nil {
		t.Fatalf("carol with the right password: %v", err)
	}
	pairOK(t, ch.last(), gh.last())
	if cs := clients(t, w); len(cs) != 1 || cs[0].ID != "carol" {
		t.Fatalf("clients %+v, want carol alone", cs)
	}
	for _, tc := range []struct{ addr, identity, password string }{
		{"192.0.2.12", "dave", "carol's password"},
		{"192.0.2.13", "mallory", "anything"},
	} {
		if _, _, err := login(tc.addr, tc.identity, tc.password); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("%s with a wrong password: %v, want ErrAuthFailed", tc.identity, err)
		}
	}
	halfOpen := -1
	w.r.do(context.Background(), func() { halfOpen = len(w.r.halfOpen) })
	if halfOpen != 0 {
		t.Fatalf("%d half-open IKE SAs after the refused logins, want 0 (their INFORMATIONAL answered and dropped)", halfOpen)
	}
	if f := w.r.Failures(context.Background())[FailAuthentication]; f != 2 {
		t.Fatalf("%d authentication failures counted, want 2", f)
	}
	if _, _, err := login("192.0.2.12", "dave", "dave's password"); err != nil {
		t.Fatalf("dave with the right password after a wrong one: %v", err)
	}
	if n := len(clients(t, w)); n != 2 {
		t.Fatalf("%d clients, want 2", n)
	}
	// Guessing: after the free failures the name and the source are
	// locked out, the right password too; others log in.
	for i := 0; i <= eapFreeFailures; i++ {
		if _, _, err := login("192.0.2.14", "dave", "guess"); !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("guess %d: %v", i+1, err)
		}
	}
	if _, _, err := login("192.0.2.14", "dave", "dave's password"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("dave's right password while locked out: %v, want ErrAuthFailed", err)
	}
	if _, _, err := login("192.0.2.15", "carol", "carol's password"); err != nil {
		t.Fatalf("carol from elsewhere while dave is locked out: %v", err)
	}

	octets := []byte("signed octets")
	method, sig, err := w.r.sign(nil, octets)
	if err != nil || method != wire.AuthRSA {
		t.Fatalf("signing for a client without SIGNATURE_HASH_ALGORITHMS: method %d, %v; want 1", method, err)
	}
	sum := sha1.Sum(octets)
	if err := rsa.VerifyPKCS1v15(gateway.Key.Public().(*rsa.PublicKey), crypto.SHA1, sum[:], sig); err != nil {
		t.Fatalf("method 1 signature: %v", err)
	}
	if method, _, _ := w.r.sign([]uint16{wire.HashSHA256}, octets); method != wire.AuthDigitalSignature {
		t.Fatalf("signing for a client that listed SHA-256: method %d, want 14", method)
	}
}

// RunResponderRADIUSSilent logs a client in to a gateway whose RADIUS
// server never answers: the login is refused with AUTHENTICATION_FAILED
// once the RADIUS timeout passed, the reason logged, and the gateway's
// loop keeps serving meanwhile (a PSK client connects while the RADIUS
// request is out).
func RunResponderRADIUSSilent(t *testing.T, cas *TrustStore, gateway CertifiedPeer) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	w, _ := startResponder(t, ResponderConfig{LocalID: gateway.ID, Key: gateway.Key, Certificates: []*x509Cert{gateway.Cert},
		ClientPSKs: map[string][]byte{"psk.client": []byte("a pre-shared key of some length")}, Logger: logger,
		RADIUS: &RADIUSConfig{Server: silent.LocalAddr().String(), Secret: []byte("s"), Timeout: 3 * time.Second}})
	cred, _ := NewEAPCredentials("carol", "pw")
	s, _ := w.newClient(t, "192.0.2.21", SessionConfig{EAP: cred, CAs: cas, RemoteID: gateway.ID})
	// Retransmissions of IKE_AUTH arrive while the RADIUS request is out.
	s.cfg.Retransmit = RetransmitPolicy{Timeout: time.Second, Tries: 3}
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		result <- s.connect(ctx, true)
	}()
	// The Access-Request is out once the server has it.
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := silent.ReadFrom(make([]byte, 4096)); err != nil {
		t.Fatalf("no Access-Request reached the RADIUS server: %v", err)
	}
	other, _ := w.newClient(t, "192.0.2.22", SessionConfig{LocalID: mustID(t, "psk.client"), PSK: []byte("a pre-shared key of some length"), CAs: cas, RemoteID: gateway.ID})
	start := time.Now()
	connect(t, other, true)
	// The gateway logs that the server did not answer when it gives up on
	// it, after the RADIUS timeout: a loop that waited for the server
	// would have logged it before it answered the PSK client.
	mu.Lock()
	gaveUp := strings.Contains(logs.String(), "did not answer")
	mu.Unlock()
	if gaveUp {
		t.Fatalf("a PSK client that came while a RADIUS request was out connected only after the gateway gave up on the server (in %v)", time.Since(start))
	}
	if err := <-result; !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("EAP login with a silent RADIUS server: %v, want ErrAuthFailed", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "did not answer") {
		t.Fatalf("no log line saying the RADIUS server did not answer:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// RunResponderEAPSharedPoolBusy: an EAP login whose last IKE_AUTH met a
// shared pool that answered too late is answered when the client sends
// that request again: the gateway checks its AUTH with the EAP MSK a
// second time, so the MSK must still be there (it is wiped once the
// client is admitted or its IKE SA goes).
func RunResponderEAPSharedPoolBusy(t *testing.T, cas *TrustStore, gateway CertifiedPeer) {
	users, err := NewEAPUsers(map[string]string{"carol": "carol's password"})
	if err != nil {
		t.Fatal(err)
	}
	pool := newGatedPool(t, netip.MustParsePrefix("10.3.0.0/24"))
	pool.busy = 1
	w, _ := startResponder(t, ResponderConfig{LocalID: gateway.ID, Key: gateway.Key, Certificates: []*x509Cert{gateway.Cert}, EAPUsers: users,
		Pools: []netip.Prefix{pool.Prefix()}, NewPool: func(netip.Prefix) (Pool, error) { return pool, nil }})
	cred, err := NewEAPCredentials("carol", "carol's password")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := w.newClient(t, "192.0.2.11", SessionConfig{LocalID: eapIdentity("carol"), EAP: cred, CAs: cas, RemoteID: gateway.ID})
	if err := connectPastBusyLease(t, s, pool); err != nil {
		t.Fatalf("EAP login retried after a busy shared pool: %v", err)
	}
	if cs := clients(t, w); len(cs) != 1 || cs[0].ID != "carol" || pool.Leased() != 1 {
		t.Fatalf("clients %+v, %d addresses leased; want carol with one", cs, pool.Leased())
	}
	if f := w.r.Failures(context.Background())[FailAuthentication]; f != 0 {
		t.Fatalf("%d authentication failures counted, want none", f)
	}
}
