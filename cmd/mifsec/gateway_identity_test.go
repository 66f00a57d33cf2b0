package main

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/load"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/internal/testpki"
)

// hostsInNetns makes name resolve to addr for processes started with
// `ip netns exec ns` (which binds /etc/netns/ns/hosts over /etc/hosts).
func hostsInNetns(t *testing.T, ns, name, addr string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+addr+" "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConnectChecksGatewayCertificate: `mifsec connect` without --remote-id
// takes the name it dials as the gateway's identity and accepts only a
// certificate meant for a server. A colleague's client certificate of the
// same CA — even one that names the gateway — is refused (no man in the
// middle); the real gateway's is accepted; and with an address instead of
// a name, --ca without --remote-id is refused before anything starts.
func TestConnectChecksGatewayCertificate(t *testing.T) {
	testenv.RequireRoot(t)
	const gwName = "gw.mifsec.test"
	// The client certificate names the gateway too: only its extended key
	// usage (clientAuth) tells it from the gateway's.
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{ClientName: gwName})
	if err != nil {
		t.Fatal(err)
	}
	rogue := startScaleGateway(t, "--local-id", gwName, "--cert", pki.Client.CertFile, "--key", pki.Client.KeyFile, "--ca", pki.CA.CertFile)
	hostsInNetns(t, rogue.client, gwName, "192.0.2.2")
	clientArgs := []string{"--local-id", pki.Client.Identity.String(), "--cert", pki.Client.CertFile, "--key", pki.Client.KeyFile,
		"--ca", pki.CA.CertFile, "--ipv6=false", "--retransmit-tries", "2"}

	// By address, without --remote-id: refused at once, with the reason.
	byAddr := startConnect(t, rogue.client, "mrid0", append([]string{"--gateway", "192.0.2.2"}, clientArgs...)...)
	select {
	case <-byAddr.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("connect --ca by address without --remote-id still runs:\n%s", byAddr.log.String())
	}
	if out := byAddr.log.String(); byAddr.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(out, "--remote-id is required") {
		t.Fatalf("exit %d, want a refusal naming --remote-id:\n%s", byAddr.cmd.ProcessState.ExitCode(), out)
	}

	// By name, to the colleague's certificate: refused.
	c := startConnect(t, rogue.client, "mrid1", append([]string{"--gateway", gwName}, clientArgs...)...)
	if !testenv.Eventually(15*time.Second, func() bool { return strings.Contains(c.log.String(), "not for a gateway") }) {
		t.Fatalf("the client did not refuse a clientAuth-only certificate as the gateway's:\n%s", c.log.String())
	}
	if st, err := c.status(t); err == nil && st.Session.State == "established" {
		t.Fatalf("established with a gateway holding a client certificate:\n%s", c.log.String())
	}
	c.stop(t)
	rogue.p.stop(t)

	// The real gateway, same name, same client command: connected.
	rogue.args = []string{"--log-level", "info", "gateway", "--tun", rogue.tun, "--pool", "10.3.0.0/23", "--local-ts", "10.1.0.0/24",
		"--local-id", gwName, "--cert", pki.Gateway.CertFile, "--key", pki.Gateway.KeyFile, "--ca", pki.CA.CertFile}
	rogue.start(t)
	good := startConnect(t, rogue.client, "mrid2", append([]string{"--gateway", gwName}, clientArgs...)...)
	good.waitEstablished(t, 15*time.Second)
	if err := ping(rogue.client, "10.1.0.1", 3); err != nil {
		t.Fatalf("%v\n%s", err, good.log.String())
	}
}

// TestMifsecGatewayCRLReload: a client certificate revoked in the --crl file
// is refused from the next SIGHUP on; the CA's other certificates still
// connect.
func TestMifsecGatewayCRLReload(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	pki, err := testpki.Generate(dir, testpki.Options{KeyType: testpki.KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	cas, err := ike.NewTrustStore(pki.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(dir, "crl.pem")
	writeCRL := func(serials ...*big.Int) {
		t.Helper()
		tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
		for _, s := range serials {
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, pki.CA.Certificate, pki.CA.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crlFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCRL()
	s := startScaleGateway(t, "--local-id", pki.Gateway.Identity.String(),
		"--cert", pki.Gateway.CertFile, "--key", pki.Gateway.KeyFile, "--ca", pki.CA.CertFile, "--crl", crlFile)
	type cred struct {
		id   ike.Identity
		key  crypto.Signer
		cert *x509.Certificate
	}
	mk := func(email string) cred {
		key, cert := issueClientCert(t, pki.CA, email)
		id, err := ike.ParseIdentity("email:" + email)
		if err != nil {
			t.Fatal(err)
		}
		return cred{id, key, cert}
	}
	alice, bob := mk("alice@fleet.bench"), mk("bob@fleet.bench")
	connectAs := func(c cred) load.ClientsReport {
		f := s.startFleet(t, load.ClientsConfig{Count: 1, CAs: cas, RemoteID: pki.Gateway.Identity, Timeout: 5 * time.Second,
			Credentials: func(int) (ike.Identity, crypto.Signer, []*x509.Certificate, error) {
				return c.id, c.key, []*x509.Certificate{c.cert}, nil
			}})
		defer f.Close()
		return f.Report()
	}
	if rep := connectAs(alice); rep.TrafficOK != 1 {
		t.Fatalf("alice before her revocation: %v", rep)
	}
	writeCRL(alice.cert.SerialNumber)
	if err := s.p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(5*time.Second, func() bool { return strings.Contains(s.p.log.String(), "certificate revocation lists reloaded") }) {
		t.Fatalf("no reload logged:\n%s", s.p.log.String())
	}
	if rep := connectAs(alice); rep.Established != 0 {
		t.Fatalf("alice's revoked certificate was accepted: %v", rep)
	}
	if rep := connectAs(bob); rep.TrafficOK != 1 {
		t.Fatalf("bob, not revoked: %v", rep)
	}
}
