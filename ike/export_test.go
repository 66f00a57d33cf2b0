package ike

import (
	"context"
	"crypto"
	"testing"
	"time"
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
