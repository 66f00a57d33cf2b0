package ike

import (
	"context"
	"crypto"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// Internals lent to the external tests (package ike_test), which cannot be
// inside package ike because internal/testpki imports it.
var (
	OIDExtKeyUsageIKEIntermediate = oidExtKeyUsageIKEIntermediate
	OIDExtKeyUsageIPsecIKE        = oidExtKeyUsageIPsecIKE
	LeaksKey                      = leaksKey
	MustParseIdentity             = mustParseIdentity
)

// CertifiedPeer is one end's certificate credentials for
// RunResponderCertificates.
type CertifiedPeer struct {
	ID   Identity
	Key  crypto.Signer
	Cert *x509Cert
}

// RunResponderCertificates connects client to a gateway on the in-memory
// harness with certificates issued under cas, then checks that foreign,
// whose certificate cas did not issue, is refused.
func RunResponderCertificates(t *testing.T, cas *TrustStore, gateway, client, foreign CertifiedPeer) {
	w, gh := startResponder(t, ResponderConfig{LocalID: gateway.ID, Key: gateway.Key,
		Certificates: []*x509Cert{gateway.Cert}, CAs: cas})
	s, ch := w.newClient(t, "192.0.2.11", SessionConfig{LocalID: client.ID, Key: client.Key,
		Certificates: []*x509Cert{client.Cert}, CAs: cas, RemoteID: gateway.ID})
	connect(t, s, true)
	pairOK(t, ch.last(), gh.last())

	bad, _ := w.newClient(t, "192.0.2.12", SessionConfig{LocalID: foreign.ID, Key: foreign.Key,
		Certificates: []*x509Cert{foreign.Cert}, CAs: cas})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bad.connect(ctx, true); err == nil {
		t.Fatal("a client with a foreign certificate connected")
	}
	if n := len(clients(t, w)); n != 1 {
		t.Fatalf("%d clients, want 1", n)
	}
}

// RunResponderFragmentedRetransmission connects client, whose IKE_AUTH
// request is too large for one datagram (an RSA-3072 certificate), while
// the gateway's first IKE_AUTH response is lost: the client sends its
// fragments again, and the gateway knows them for a copy of the request
// it answered (by the digest of the first fragment) and sends its response
// again, without a second Child SA.
func RunResponderFragmentedRetransmission(t *testing.T, cas *TrustStore, gateway, client CertifiedPeer) {
	w, gh := startResponder(t, ResponderConfig{LocalID: gateway.ID, Key: gateway.Key,
		Certificates: []*x509Cert{gateway.Cert}, CAs: cas})
	var authResponses, dropped atomic.Int32
	w.dropResponse = func(b []byte) bool {
		m, err := wire.Parse(b)
		if err != nil || m.Exchange != wire.IKE_AUTH || !m.IsResponse() {
			return false
		}
		authResponses.Add(1)
		if m.MessageID == 1 && dropped.Load() == 0 {
			dropped.Store(1) // the first datagram of the first response: the client cannot reassemble it
			return true
		}
		return false
	}
	s, ch := w.newClient(t, "192.0.2.13", SessionConfig{LocalID: client.ID, Key: client.Key,
		Certificates: []*x509Cert{client.Cert}, CAs: cas, RemoteID: gateway.ID,
		Retransmit: RetransmitPolicy{Timeout: 200 * time.Millisecond, Tries: 5}})
	connect(t, s, true)
	pairOK(t, ch.last(), gh.last())
	if n := w.clientFragments.Load(); n < 4 {
		t.Fatalf("the client sent %d IKE fragments, want its IKE_AUTH request in fragments twice", n)
	}
	if dropped.Load() != 1 || authResponses.Load() < 2 {
		t.Fatalf("%d IKE_AUTH response datagrams, the first dropped (%d): the response was not sent again", authResponses.Load(), dropped.Load())
	}
	if installed, _, _ := gh.counts(); installed != 1 {
		t.Fatalf("the retransmitted IKE_AUTH installed %d Child SAs", installed)
	}
}
