package ike

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// A small certificate authority for tests, including integration tests
// against strongSwan: strongSwan accepts a peer only when its certificate
// contains the peer's identity, so the gateway certificate carries its
// name as a DNS subjectAltName and the client certificate its email
// address as an rfc822Name subjectAltName.

// TestKeyType selects the key type of a test PKI.
type TestKeyType int

const (
	TestKeyECDSAP256 TestKeyType = iota
	TestKeyECDSAP384
	TestKeyRSA3072
	TestKeyEd25519
)

// String names the key type.
func (k TestKeyType) String() string {
	switch k {
	case TestKeyECDSAP256:
		return "ECDSA P-256"
	case TestKeyECDSAP384:
		return "ECDSA P-384"
	case TestKeyRSA3072:
		return "RSA 3072"
	case TestKeyEd25519:
		return "Ed25519"
	}
	return fmt.Sprintf("TestKeyType(%d)", int(k))
}

// TestPKIOptions describes a test PKI. The zero value is usable.
type TestPKIOptions struct {
	// KeyType of every key (CA, intermediate, gateway, client).
	KeyType TestKeyType
	// GatewayName is the gateway's CN and DNS subjectAltName
	// (default "gw.mifsec.test").
	GatewayName string
	// GatewayAddrs are added to the gateway certificate as iPAddress
	// subjectAltNames.
	GatewayAddrs []netip.Addr
	// ClientEmail is the client's CN and rfc822Name subjectAltName
	// (default "client@mifsec.test").
	ClientEmail string
	// ClientName, when set, is added as a DNS subjectAltName of the client.
	ClientName string
	// Intermediate makes an intermediate CA issue the gateway and client
	// certificates.
	Intermediate bool
	// NotBefore and NotAfter bound the validity of the gateway and client
	// certificates (default: one hour ago to 30 days from now). The CAs
	// are valid from one day before NotBefore to one year after NotAfter.
	NotBefore, NotAfter time.Time
}

// TestCredential is one certificate of a test PKI with its key and files.
type TestCredential struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
	// CertFile holds the PEM certificate, KeyFile the PEM PKCS #8 key.
	CertFile, KeyFile string
	// Identity is the IKE identity the certificate proves: the DNS name of
	// the gateway, the email address of the client, the DN of a CA.
	Identity Identity
	// SubjectDN is the certificate's subject as an ID_DER_ASN1_DN identity.
	SubjectDN Identity
}

// String describes the credential without its private key.
func (c TestCredential) String() string {
	return fmt.Sprintf("TestCredential{%s, cert %s}", c.Identity, c.CertFile)
}

// GoString is String, so that %#v does not print the private key either.
func (c TestCredential) GoString() string { return c.String() }

// TestPKI is a CA, an optional intermediate CA, a gateway and a client.
type TestPKI struct {
	Dir          string
	CA           TestCredential
	Intermediate *TestCredential
	Gateway      TestCredential
	Client       TestCredential
}

// File names written by GenerateTestPKI into its directory.
const (
	TestPKICAFile           = "ca.pem"
	TestPKICAKeyFile        = "ca.key"
	TestPKIIntermediateFile = "intermediate.pem"
	TestPKIIntermediateKey  = "intermediate.key"
	TestPKIGatewayFile      = "gateway.pem"
	TestPKIGatewayKeyFile   = "gateway.key"
	TestPKIClientFile       = "client.pem"
	TestPKIClientKeyFile    = "client.key"
)

// GenerateTestPKI creates a test PKI and writes its certificates and keys
// as PEM files into dir (created if missing; keys with mode 0600). It is
// meant for tests only.
func GenerateTestPKI(dir string, opts TestPKIOptions) (*TestPKI, error) {
	if opts.GatewayName == "" {
		opts.GatewayName = "gw.mifsec.test"
	}
	if opts.ClientEmail == "" {
		opts.ClientEmail = "client@mifsec.test"
	}
	now := time.Now()
	if opts.NotBefore.IsZero() {
		opts.NotBefore = now.Add(-time.Hour)
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = now.Add(30 * 24 * time.Hour)
	}
	if !opts.NotAfter.After(opts.NotBefore) {
		return nil, errors.New("ike: test PKI: NotAfter must be after NotBefore")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ike: test PKI: %w", err)
	}
	caNotBefore := opts.NotBefore.Add(-24 * time.Hour)
	caNotAfter := opts.NotAfter.Add(365 * 24 * time.Hour)

	pki := &TestPKI{Dir: dir}
	ca, err := issueTestCertificate(dir, TestPKICAFile, TestPKICAKeyFile, opts.KeyType, testCertTemplate{
		subject: "C=CH, O=mifsec test, CN=mifsec test CA", isCA: true,
		notBefore: caNotBefore, notAfter: caNotAfter,
	}, nil)
	if err != nil {
		return nil, err
	}
	ca.Identity = ca.SubjectDN
	pki.CA = *ca
	issuer := ca
	if opts.Intermediate {
		ic, err := issueTestCertificate(dir, TestPKIIntermediateFile, TestPKIIntermediateKey, opts.KeyType, testCertTemplate{
			subject: "C=CH, O=mifsec test, CN=mifsec test intermediate CA", isCA: true,
			notBefore: caNotBefore, notAfter: caNotAfter,
		}, ca)
		if err != nil {
			return nil, err
		}
		ic.Identity = ic.SubjectDN
		pki.Intermediate = ic
		issuer = ic
	}

	gatewayIdentity, err := ParseIdentity("@" + opts.GatewayName)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: gateway name: %w", err)
	}
	gw, err := issueTestCertificate(dir, TestPKIGatewayFile, TestPKIGatewayKeyFile, opts.KeyType, testCertTemplate{
		subject:   "C=CH, O=mifsec test, CN=" + escapeDNValue(opts.GatewayName),
		dnsNames:  []string{opts.GatewayName},
		addrs:     opts.GatewayAddrs,
		extUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		extOIDs:   []asn1.ObjectIdentifier{oidExtKeyUsageIKEIntermediate},
		notBefore: opts.NotBefore, notAfter: opts.NotAfter,
	}, issuer)
	if err != nil {
		return nil, err
	}
	gw.Identity = gatewayIdentity
	pki.Gateway = *gw

	clientIdentity, err := ParseIdentity("email:" + opts.ClientEmail)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: client email: %w", err)
	}
	var clientDNS []string
	if opts.ClientName != "" {
		clientDNS = []string{opts.ClientName}
	}
	cl, err := issueTestCertificate(dir, TestPKIClientFile, TestPKIClientKeyFile, opts.KeyType, testCertTemplate{
		subject:   "C=CH, O=mifsec test, CN=" + escapeDNValue(opts.ClientEmail),
		dnsNames:  clientDNS,
		emails:    []string{opts.ClientEmail},
		extUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		notBefore: opts.NotBefore, notAfter: opts.NotAfter,
	}, issuer)
	if err != nil {
		return nil, err
	}
	cl.Identity = clientIdentity
	pki.Client = *cl
	return pki, nil
}

type testCertTemplate struct {
	subject             string
	isCA                bool
	dnsNames            []string
	emails              []string
	addrs               []netip.Addr
	extUsage            []x509.ExtKeyUsage
	extOIDs             []asn1.ObjectIdentifier
	notBefore, notAfter time.Time
}

func generateTestKey(kt TestKeyType) (crypto.Signer, error) {
	switch kt {
	case TestKeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case TestKeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case TestKeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case TestKeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown key type %d", int(kt))
}

// subjectKeyID computes a subject key identifier as RFC 5280 §4.2.1.2
// method 1: the SHA-1 hash of the subjectPublicKey BIT STRING.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, err
	}
	sum := sha1.Sum(info.PublicKey.Bytes)
	return sum[:], nil
}

func issueTestCertificate(dir, certName, keyName string, kt TestKeyType, tmpl testCertTemplate, issuer *TestCredential) (*TestCredential, error) {
	key, err := generateTestKey(kt)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: generate %s key: %w", kt, err)
	}
	subject, err := ParseIdentity("asn1dn:" + tmpl.subject)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: serial number: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: subject key identifier: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		RawSubject:            subject.Data,
		NotBefore:             tmpl.notBefore,
		NotAfter:              tmpl.notAfter,
		SubjectKeyId:          ski,
		BasicConstraintsValid: true,
		IsCA:                  tmpl.isCA,
		DNSNames:              tmpl.dnsNames,
		EmailAddresses:        tmpl.emails,
		ExtKeyUsage:           tmpl.extUsage,
		UnknownExtKeyUsage:    tmpl.extOIDs,
	}
	for _, a := range tmpl.addrs {
		template.IPAddresses = append(template.IPAddresses, net.IP(a.Unmap().AsSlice()))
	}
	if tmpl.isCA {
		template.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		template.KeyUsage = x509.KeyUsageDigitalSignature
	}
	parent, signer := template, key
	if issuer != nil {
		parent, signer = issuer.Certificate, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: create certificate %q: %w", tmpl.subject, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: parse certificate %q: %w", tmpl.subject, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ike: test PKI: encode %s key: %w", kt, err)
	}
	cred := &TestCredential{
		Certificate: cert,
		Key:         key,
		CertFile:    filepath.Join(dir, certName),
		KeyFile:     filepath.Join(dir, keyName),
		SubjectDN:   subject,
	}
	if err := os.WriteFile(cred.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("ike: test PKI: %w", err)
	}
	if err := os.WriteFile(cred.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return nil, fmt.Errorf("ike: test PKI: %w", err)
	}
	return cred, nil
}

// WriteSwanctl writes the files strongSwan's swanctl loads for the
// credential holder into dir: the CA to x509ca/ (trusted), holder's
// certificate and the intermediate CA (if any; swanctl 5.9 has no x509ia/)
// to x509/, and its key to private/. swanctl --load-all --file
// dir/swanctl.conf then loads them.
func (p *TestPKI) WriteSwanctl(dir string, holder TestCredential) error {
	type file struct {
		sub, name string
		block     *pem.Block
		mode      os.FileMode
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(holder.Key)
	if err != nil {
		return fmt.Errorf("ike: write swanctl credentials: encode key: %w", err)
	}
	base := filepath.Base(holder.CertFile)
	files := []file{
		{"x509ca", TestPKICAFile, &pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Certificate.Raw}, 0o644},
		{"x509", base, &pem.Block{Type: "CERTIFICATE", Bytes: holder.Certificate.Raw}, 0o644},
		{"private", base[:len(base)-len(filepath.Ext(base))] + ".key", &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}, 0o600},
	}
	if p.Intermediate != nil {
		files = append(files, file{"x509", TestPKIIntermediateFile, &pem.Block{Type: "CERTIFICATE", Bytes: p.Intermediate.Certificate.Raw}, 0o644})
	}
	for _, f := range files {
		sub := filepath.Join(dir, f.sub)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return fmt.Errorf("ike: write swanctl credentials: %w", err)
		}
		if err := os.WriteFile(filepath.Join(sub, f.name), pem.EncodeToMemory(f.block), f.mode); err != nil {
			return fmt.Errorf("ike: write swanctl credentials: %w", err)
		}
	}
	return nil
}
