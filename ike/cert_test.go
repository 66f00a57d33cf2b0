// The tests of this file use internal/testpki, which imports ike: they
// are in the external test package (export_test.go lends them the few
// internals they need).
package ike_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/mifsec/mifsec/ike" //nolint:revive // the tests were written inside package ike
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testpki"
)

// testPKI generates a test PKI in a temporary directory of the test.
func testPKI(t *testing.T, opts testpki.Options) *testpki.PKI {
	t.Helper()
	p, err := testpki.Generate(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("testpki.Generate: %v", err)
	}
	return p
}

func trustStoreOf(t *testing.T, p *testpki.PKI) *TrustStore {
	t.Helper()
	ts, err := LoadTrustStore(p.CA.CertFile)
	if err != nil {
		t.Fatalf("LoadTrustStore: %v", err)
	}
	return ts
}

func TestGenerateTestPKIVariants(t *testing.T) {
	octets := []byte("signed octets")
	peerHashes, err := ParseSignatureHashAlgorithms(SignatureHashAlgorithmsNotifyData())
	if err != nil {
		t.Fatal(err)
	}
	for _, kt := range []testpki.KeyType{testpki.KeyECDSAP256, testpki.KeyECDSAP384, testpki.KeyRSA3072, testpki.KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			p := testPKI(t, testpki.Options{
				KeyType:      kt,
				GatewayName:  "moon.strongswan.org",
				GatewayAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
				ClientEmail:  "carol@strongswan.org",
			})
			ts := trustStoreOf(t, p)
			for _, holder := range []testpki.Credential{p.Gateway, p.Client} {
				creds, err := LoadCredentials(holder.CertFile, holder.KeyFile)
				if err != nil {
					t.Fatalf("LoadCredentials: %v", err)
				}
				peer, err := ts.VerifyPeer(creds.Certificate.Raw, nil, holder.Identity, time.Time{})
				if err != nil {
					t.Fatalf("VerifyPeer(%s): %v", holder.Identity, err)
				}
				if _, err := ts.VerifyPeer(creds.Certificate.Raw, nil, holder.SubjectDN, time.Time{}); err != nil {
					t.Fatalf("VerifyPeer with the subject DN %s: %v", holder.SubjectDN, err)
				}
				method, data, err := Sign(creds.Key, octets, peerHashes)
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				if err := Verify(peer.PublicKey, method, data, octets); err != nil {
					t.Fatalf("Verify with the certificate's key: %v", err)
				}
			}
			ip := MustParseIdentity(t, "192.0.2.1")
			if _, err := ts.VerifyPeer(p.Gateway.Certificate.Raw, nil, ip, time.Time{}); err != nil {
				t.Fatalf("VerifyPeer with IP identity: %v", err)
			}
		})
	}
}

func TestTestPKIContents(t *testing.T) {
	p := testPKI(t, testpki.Options{})
	gw := p.Gateway.Certificate
	if len(gw.DNSNames) != 1 || gw.DNSNames[0] != "gw.mifsec.test" {
		t.Fatalf("gateway DNS SANs %v", gw.DNSNames)
	}
	if got := p.Gateway.SubjectDN.String(); got != "C=CH, O=mifsec test, CN=gw.mifsec.test" {
		t.Fatalf("gateway subject %q", got)
	}
	if !bytes.Equal(p.Gateway.SubjectDN.Data, gw.RawSubject) {
		t.Fatal("gateway SubjectDN differs from the certificate subject")
	}
	if len(p.Client.Certificate.EmailAddresses) != 1 || p.Client.Certificate.EmailAddresses[0] != "client@mifsec.test" {
		t.Fatalf("client email SANs %v", p.Client.Certificate.EmailAddresses)
	}
	if p.Gateway.Identity.String() != "gw.mifsec.test" || p.Client.Identity.String() != "client@mifsec.test" {
		t.Fatalf("identities %s, %s", p.Gateway.Identity, p.Client.Identity)
	}
	if len(gw.SubjectKeyId) == 0 || !MustParseIdentity(t, "@#"+hex.EncodeToString(gw.SubjectKeyId)).MatchesCertificate(gw) {
		t.Fatal("gateway certificate has no usable subject key identifier")
	}
	info, err := os.Stat(p.Gateway.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", info.Mode().Perm())
	}

	dir := t.TempDir()
	if err := p.WriteSwanctl(dir, p.Gateway); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"x509ca/ca.pem", "x509/gateway.pem", "private/gateway.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("swanctl layout: %v", err)
		}
	}
	if _, err := LoadCredentials(filepath.Join(dir, "x509/gateway.pem"), filepath.Join(dir, "private/gateway.key")); err != nil {
		t.Fatalf("swanctl files do not load: %v", err)
	}
}

func TestVerifyPeerFailures(t *testing.T) {
	p := testPKI(t, testpki.Options{})
	other := testPKI(t, testpki.Options{})
	ts := trustStoreOf(t, p)
	gw := p.Gateway

	t.Run("wrong CA", func(t *testing.T) {
		_, err := trustStoreOf(t, other).VerifyPeer(gw.Certificate.Raw, nil, gw.Identity, time.Time{})
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "does not chain to a trusted CA") {
			t.Fatalf("err = %v, want an unknown authority error", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		_, err := ts.VerifyPeer(gw.Certificate.Raw, nil, gw.Identity, gw.Certificate.NotAfter.Add(24*time.Hour))
		var invalid x509.CertificateInvalidError
		if !errors.As(err, &invalid) || invalid.Reason != x509.Expired || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err = %v, want an expiry error", err)
		}
	})
	t.Run("not yet valid", func(t *testing.T) {
		_, err := ts.VerifyPeer(gw.Certificate.Raw, nil, gw.Identity, gw.Certificate.NotBefore.Add(-time.Minute))
		var invalid x509.CertificateInvalidError
		if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
			t.Fatalf("err = %v, want an expiry error", err)
		}
	})
	t.Run("identity mismatch", func(t *testing.T) {
		for _, id := range []string{"@sun.mifsec.test", "client@mifsec.test", "192.0.2.9", "C=CH, O=mifsec test, CN=sun"} {
			_, err := ts.VerifyPeer(gw.Certificate.Raw, nil, MustParseIdentity(t, id), time.Time{})
			if !errors.Is(err, ErrIdentityMismatch) || !strings.Contains(err.Error(), "DNS:gw.mifsec.test") {
				t.Fatalf("identity %s: err = %v, want ErrIdentityMismatch listing the SANs", id, err)
			}
		}
	})
	t.Run("garbage certificate", func(t *testing.T) {
		if _, err := ts.VerifyPeer([]byte{0x30, 0x03, 1, 2, 3}, nil, gw.Identity, time.Time{}); err == nil {
			t.Fatal("want an error")
		}
		if _, err := ts.VerifyPeer(gw.Certificate.Raw, [][]byte{{0x30}}, gw.Identity, time.Time{}); err == nil {
			t.Fatal("want an error for a garbage intermediate")
		}
	})
	t.Run("CA certificate as peer", func(t *testing.T) {
		// A CA certificate lacks digitalSignature in its key usage.
		_, err := ts.VerifyPeer(p.CA.Certificate.Raw, nil, p.CA.Identity, time.Time{})
		if err == nil || !strings.Contains(err.Error(), "key usage") {
			t.Fatalf("err = %v, want a key usage error", err)
		}
	})
}

func TestVerifyPeerWithIntermediate(t *testing.T) {
	p := testPKI(t, testpki.Options{Intermediate: true})
	ts := trustStoreOf(t, p)
	gw := p.Gateway
	if _, err := ts.VerifyPeer(gw.Certificate.Raw, nil, gw.Identity, time.Time{}); err == nil {
		t.Fatal("verified without the intermediate")
	}
	peer, err := ts.VerifyPeer(gw.Certificate.Raw, [][]byte{p.Intermediate.Certificate.Raw}, gw.Identity, time.Time{})
	if err != nil {
		t.Fatalf("VerifyPeer: %v", err)
	}
	if len(peer.Chain) != 3 {
		t.Fatalf("chain of %d certificates, want 3", len(peer.Chain))
	}
	if !peer.Certificate.Equal(gw.Certificate) {
		t.Fatal("wrong end-entity certificate")
	}
	// The intermediate is not a trust anchor of its own.
	if ts.Trusts(SubjectPublicKeyInfoHash(p.Intermediate.Certificate)) {
		t.Fatal("trust store trusts the intermediate")
	}
}

func TestCertReqData(t *testing.T) {
	p := testPKI(t, testpki.Options{})
	other := testPKI(t, testpki.Options{})
	ts, err := NewTrustStore(p.CA.Certificate, other.CA.Certificate, p.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	h1 := sha1.Sum(p.CA.Certificate.RawSubjectPublicKeyInfo)
	h2 := sha1.Sum(other.CA.Certificate.RawSubjectPublicKeyInfo)
	want := append(append([]byte{}, h1[:]...), h2[:]...)
	data := ts.CertReqData()
	if !bytes.Equal(data, want) {
		t.Fatalf("CERTREQ data %x, want %x", data, want)
	}
	hashes, err := ParseCertReqData(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(hashes) != 2 || hashes[0] != h1 || hashes[1] != h2 {
		t.Fatalf("parsed %x", hashes)
	}
	for _, h := range hashes {
		if !ts.Trusts(h) {
			t.Fatalf("trust store does not trust %x", h)
		}
	}
	if ts.Trusts([20]byte{1}) {
		t.Fatal("trusts an unknown hash")
	}
	if _, err := ParseCertReqData(data[:25]); err == nil {
		t.Fatal("ParseCertReqData accepted 25 bytes")
	}
	if _, err := NewTrustStore(); err == nil {
		t.Fatal("NewTrustStore without CAs succeeded")
	}
	if len(ts.Certificates()) != 2 {
		t.Fatalf("%d certificates", len(ts.Certificates()))
	}
}

func TestLoadTrustStoreDirectory(t *testing.T) {
	p := testPKI(t, testpki.Options{})
	other := testPKI(t, testpki.Options{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Certificate.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.der"), other.CA.Certificate.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ts, err := LoadTrustStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts.Certificates()) != 2 {
		t.Fatalf("%d CAs loaded, want 2", len(ts.Certificates()))
	}
	if _, err := ts.VerifyPeer(other.Gateway.Certificate.Raw, nil, other.Gateway.Identity, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTrustStore(filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("loaded a missing file")
	}
}

func TestCredentials(t *testing.T) {
	p := testPKI(t, testpki.Options{})
	other := testPKI(t, testpki.Options{})
	if _, err := LoadCredentials(p.Gateway.CertFile, other.Gateway.KeyFile); err == nil {
		t.Fatal("accepted a key that does not match the certificate")
	}
	if _, err := NewCredentials(nil, p.Gateway.Key); err == nil {
		t.Fatal("accepted a nil certificate")
	}
	if _, err := LoadCredentials(filepath.Join(t.TempDir(), "missing.pem"), p.Gateway.KeyFile); err == nil {
		t.Fatal("accepted a missing certificate file")
	}
	creds, err := NewCredentials(p.Gateway.Certificate, p.Gateway.Key, p.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	data := creds.CertPayloadData()
	if len(data) != 2 || !bytes.Equal(data[0], p.Gateway.Certificate.Raw) || !bytes.Equal(data[1], p.CA.Certificate.Raw) {
		t.Fatal("CertPayloadData order")
	}
	c, err := ParseCertPayload(wire.CertX509Signature, data[0])
	if err != nil || !c.Equal(p.Gateway.Certificate) {
		t.Fatalf("ParseCertPayload: %v", err)
	}
	if _, err := ParseCertPayload(1, data[0]); err == nil {
		t.Fatal("ParseCertPayload accepted encoding 1")
	}
	if _, err := ParseCertPayload(wire.CertX509Signature, []byte{1, 2}); err == nil {
		t.Fatal("ParseCertPayload accepted garbage")
	}
}

func TestKeysNeverInText(t *testing.T) {
	p := testPKI(t, testpki.Options{})
	creds, err := LoadCredentials(p.Client.CertFile, p.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	key := creds.Key.(*ecdsa.PrivateKey)
	keyPEM, err := os.ReadFile(p.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	secrets := [][]byte{key.D.Bytes(), block.Bytes, []byte(key.D.String())}
	for _, text := range []string{
		creds.String(),
		fmt.Sprintf("%v", creds),
		fmt.Sprintf("%+v", creds),
		fmt.Sprintf("%#v", creds),
		fmt.Sprintf("%v", *creds),
		fmt.Sprintf("%+v", *creds),
		fmt.Sprintf("%#v", *creds),
		p.Client.String(),
		fmt.Sprintf("%v", p.Client),
		fmt.Sprintf("%+v", p.Client),
		fmt.Sprintf("%#v", p.Client),
	} {
		for _, s := range secrets {
			if LeaksKey(text, s) {
				t.Fatalf("%q contains key material", text)
			}
		}
	}
	if !strings.Contains(creds.String(), "client@mifsec.test") {
		t.Fatalf("String() = %q lacks the subject", creds.String())
	}
}

// TestVerifyGatewayExtKeyUsage: a gateway's certificate must be meant for a
// server; a client-only certificate of the same CA (a colleague's) with the
// gateway's name in it does not make its holder the gateway.
func TestVerifyGatewayExtKeyUsage(t *testing.T) {
	dir := t.TempDir()
	pki, err := testpki.Generate(dir, testpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewTrustStore(pki.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Type: wire.IDFQDN, Data: []byte("vpn.example.test")}
	for i, tc := range []struct {
		name   string
		usage  []x509.ExtKeyUsage
		oids   []asn1.ObjectIdentifier
		wantOK bool
	}{
		{"serverAuth", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil, true},
		{"serverAuth and clientAuth", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, nil, true},
		{"ikeIntermediate", nil, []asn1.ObjectIdentifier{OIDExtKeyUsageIKEIntermediate}, true},
		{"id-kp-ipsecIKE", nil, []asn1.ObjectIdentifier{OIDExtKeyUsageIPsecIKE}, true},
		{"anyExtendedKeyUsage", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, nil, true},
		{"clientAuth only", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, false},
		{"emailProtection only", []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, nil, false},
		{"no extended key usage", nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, err := testpki.IssueCertificate(dir, fmt.Sprintf("c%d.pem", i), fmt.Sprintf("c%d.key", i), testpki.KeyECDSAP256,
				testpki.CertTemplate{Subject: "CN=vpn.example.test", DNSNames: []string{"vpn.example.test"}, ExtKeyUsage: tc.usage, ExtKeyUsageOIDs: tc.oids,
					NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, &pki.CA)
			if err != nil {
				t.Fatal(err)
			}
			// Any certificate of the CA is a valid peer...
			if _, err := store.VerifyPeer(cred.Certificate.Raw, nil, id, time.Time{}); err != nil {
				t.Fatalf("VerifyPeer: %v", err)
			}
			// ...but only a server's is a gateway.
			_, err = store.VerifyGateway(cred.Certificate.Raw, nil, id, time.Time{})
			if tc.wantOK && err != nil {
				t.Fatalf("VerifyGateway refused: %v", err)
			}
			if !tc.wantOK && !errors.Is(err, ErrNotAGateway) {
				t.Fatalf("VerifyGateway: %v, want ErrNotAGateway", err)
			}
		})
	}
}

// TestCRLRevokes: a certificate its CA revoked is refused, others of the
// CA still pass; a CRL not signed by a trusted CA is refused; CRL files
// load as PEM and DER.
func TestCRLRevokes(t *testing.T) {
	dir := t.TempDir()
	pki, err := testpki.Generate(dir, testpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.Generate(t.TempDir(), testpki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewTrustStore(pki.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	crlOf := func(ca testpki.Credential, serials ...*big.Int) []byte {
		t.Helper()
		tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour)}
		for _, s := range serials {
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Certificate, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	client, gw := pki.Client, pki.Gateway
	if _, err := store.VerifyPeer(client.Certificate.Raw, nil, client.Identity, time.Time{}); err != nil {
		t.Fatalf("before any CRL: %v", err)
	}
	der := crlOf(pki.CA, client.Certificate.SerialNumber)
	pemFile := filepath.Join(dir, "crl.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	derFile := filepath.Join(dir, "crl.der")
	if err := os.WriteFile(derFile, der, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pemFile, derFile} {
		crls, err := LoadCRLs(f)
		if err != nil || len(crls) != 1 {
			t.Fatalf("LoadCRLs(%s): %d, %v", f, len(crls), err)
		}
		if _, err := store.SetCRLs(crls...); err != nil {
			t.Fatal(err)
		}
		if _, err := store.VerifyPeer(client.Certificate.Raw, nil, client.Identity, time.Time{}); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked client certificate: %v, want ErrRevoked", err)
		}
		if _, err := store.VerifyPeer(gw.Certificate.Raw, nil, gw.Identity, time.Time{}); err != nil {
			t.Fatalf("a certificate the CRL does not list: %v", err)
		}
	}
	foreign, err := x509.ParseRevocationList(crlOf(other.CA, gw.Certificate.SerialNumber))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetCRLs(foreign); err == nil {
		t.Fatal("a CRL signed by an untrusted CA was taken")
	}
	// An empty set lifts every revocation (a reload without the entry).
	if _, err := store.SetCRLs(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.VerifyPeer(client.Certificate.Raw, nil, client.Identity, time.Time{}); err != nil {
		t.Fatalf("after the CRL was withdrawn: %v", err)
	}
}

// TestResponderFragmentedRetransmission: an IKE_AUTH request in fragments,
// its response lost, is answered again when the client sends it again.
func TestResponderFragmentedRetransmission(t *testing.T) {
	pki := testPKI(t, testpki.Options{KeyType: testpki.KeyRSA3072})
	peer := func(c testpki.Credential) CertifiedPeer {
		return CertifiedPeer{ID: c.Identity, Key: c.Key, Cert: c.Certificate}
	}
	RunResponderFragmentedRetransmission(t, trustStoreOf(t, pki), peer(pki.Gateway), peer(pki.Client))
}

// TestResponderCertificates: a client with a certificate of the gateway's CA
// connects; one whose certificate another CA issued is refused.
func TestResponderCertificates(t *testing.T) {
	pki, other := testPKI(t, testpki.Options{}), testPKI(t, testpki.Options{})
	peer := func(c testpki.Credential) CertifiedPeer {
		return CertifiedPeer{ID: c.Identity, Key: c.Key, Cert: c.Certificate}
	}
	RunResponderCertificates(t, trustStoreOf(t, pki), peer(pki.Gateway), peer(pki.Client), peer(other.Client))
}
