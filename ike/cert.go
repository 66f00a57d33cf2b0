package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// X.509 certificates for IKEv2 authentication (RFC 7296 §3.6, §3.7;
// RFC 4945 profile).

// ErrIdentityMismatch reports a peer certificate that does not name the
// identity the peer claimed in its ID payload.
var ErrIdentityMismatch = errors.New("ike: identity not contained in the peer's certificate")

// parseCertificates decodes every certificate in data, which holds
// PEM "CERTIFICATE" blocks or a single DER certificate. Other PEM blocks
// are skipped.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	sawPEM := false
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawPEM = true
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ike: parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if !sawPEM {
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, fmt.Errorf("ike: neither PEM nor a DER certificate: %w", err)
		}
		return []*x509.Certificate{c}, nil
	}
	if len(certs) == 0 {
		return nil, errors.New("ike: no CERTIFICATE block in PEM data")
	}
	return certs, nil
}

// ParseCertificate decodes the first certificate of PEM or DER data.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// LoadCertificates reads every certificate of a PEM or DER file, such as
// an end-entity certificate followed by its intermediates.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ike: read certificate: %w", err)
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return certs, nil
}

// loadCertificate reads the first certificate of a PEM or DER file.
func loadCertificate(path string) (*x509.Certificate, error) {
	certs, err := LoadCertificates(path)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// parsePrivateKey decodes a private key: PEM "PRIVATE KEY" (PKCS #8),
// "RSA PRIVATE KEY" (PKCS #1) or "EC PRIVATE KEY" (SEC 1), or the same
// encodings in DER. Encrypted keys are not supported. Errors never contain
// key material.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	rest := data
	sawPEM := false
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawPEM = true
		switch block.Type {
		case "PRIVATE KEY":
			return parsePKCS8Signer(block.Bytes)
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, errors.New("ike: encrypted RSA private key is not supported")
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("ike: malformed PKCS #1 RSA private key")
			}
			return k, nil
		case "EC PRIVATE KEY":
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, errors.New("ike: encrypted EC private key is not supported")
			}
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, errors.New("ike: malformed SEC 1 EC private key")
			}
			return k, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("ike: encrypted PKCS #8 private key is not supported")
		}
	}
	if sawPEM {
		return nil, errors.New("ike: no private key block in PEM data")
	}
	if k, err := parsePKCS8Signer(data); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(data); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(data); err == nil {
		return k, nil
	}
	return nil, errors.New("ike: data is neither a PEM nor a DER private key")
}

func parsePKCS8Signer(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("ike: malformed PKCS #8 private key")
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("ike: unsupported PKCS #8 private key type %T", k)
}

// LoadPrivateKey reads a private key file (see parsePrivateKey).
func LoadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ike: read private key: %w", err)
	}
	k, err := parsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return k, nil
}

// Credentials are the local end's certificate, the intermediates to send
// with it and its private key. String and GoString never show the key.
type Credentials struct {
	Certificate   *x509.Certificate
	Intermediates []*x509.Certificate
	Key           crypto.Signer
}

// NewCredentials checks that key belongs to cert.
func NewCredentials(cert *x509.Certificate, key crypto.Signer, intermediates ...*x509.Certificate) (*Credentials, error) {
	if cert == nil || key == nil {
		return nil, errors.New("ike: credentials need a certificate and a private key")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("ike: private key does not match the certificate %q", cert.Subject.String())
	}
	return &Credentials{Certificate: cert, Intermediates: intermediates, Key: key}, nil
}

// LoadCredentials reads a certificate file (the end-entity certificate
// first, then any intermediates) and its private key file.
func LoadCredentials(certFile, keyFile string) (*Credentials, error) {
	certs, err := LoadCertificates(certFile)
	if err != nil {
		return nil, err
	}
	key, err := LoadPrivateKey(keyFile)
	if err != nil {
		return nil, err
	}
	return NewCredentials(certs[0], key, certs[1:]...)
}

// CertPayloadData returns the Certificate Data of the CERT payloads to
// send, each with encoding CertX509Signature (DER X.509): the end-entity
// certificate first, then the intermediates.
func (c *Credentials) CertPayloadData() [][]byte {
	out := [][]byte{c.Certificate.Raw}
	for _, ic := range c.Intermediates {
		out = append(out, ic.Raw)
	}
	return out
}

// String describes the credentials without the private key.
func (c Credentials) String() string {
	subject := "(none)"
	if c.Certificate != nil {
		subject = fmt.Sprintf("%q", c.Certificate.Subject.String())
	}
	keyType := "(none)"
	if c.Key != nil {
		keyType = keyTypeName(c.Key.Public())
	}
	return fmt.Sprintf("Credentials{certificate %s, %d intermediates, %s private key}", subject, len(c.Intermediates), keyType)
}

// GoString is String, so that %#v does not print the private key either.
func (c Credentials) GoString() string { return c.String() }

// ParseCertPayload decodes the Certificate Encoding and Certificate Data
// of a CERT payload. Only X.509 Certificate - Signature (4) is supported.
func ParseCertPayload(encoding uint8, data []byte) (*x509.Certificate, error) {
	if encoding != wire.CertX509Signature {
		return nil, fmt.Errorf("ike: CERT payload encoding %d is not supported (only %d, DER X.509)", encoding, wire.CertX509Signature)
	}
	c, err := x509.ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("ike: CERT payload: %w", err)
	}
	return c, nil
}

// SubjectPublicKeyInfoHash returns the SHA-1 hash of a certificate's
// SubjectPublicKeyInfo, the form of a CA in a CERTREQ payload
// (RFC 7296 §3.7).
func SubjectPublicKeyInfoHash(c *x509.Certificate) [sha1.Size]byte {
	return sha1.Sum(c.RawSubjectPublicKeyInfo)
}

// ParseCertReqData splits the Certification Authority field of a CERTREQ
// payload into its SHA-1 hashes.
func ParseCertReqData(data []byte) ([][sha1.Size]byte, error) {
	if len(data)%sha1.Size != 0 {
		return nil, fmt.Errorf("ike: CERTREQ data of %d bytes is not a list of %d-byte SHA-1 hashes", len(data), sha1.Size)
	}
	hashes := make([][sha1.Size]byte, len(data)/sha1.Size)
	for i := range hashes {
		copy(hashes[i][:], data[i*sha1.Size:])
	}
	return hashes, nil
}

// TrustStore holds the trusted CA certificates (trust anchors) and the
// certificates they revoked (SetCRLs).
type TrustStore struct {
	pool    *x509.CertPool
	cas     []*x509.Certificate
	revoked atomic.Pointer[revocations] // nil: no CRL
}

// revocations are the serial numbers revoked by each CA, by the CA's
// subject (raw DER) and the serial's decimal text.
type revocations map[string]map[string]bool

// ErrRevoked reports a peer certificate that its CA revoked.
var ErrRevoked = errors.New("ike: certificate revoked")

// SetCRLs replaces the certificate revocation lists: from now on a chain
// with a certificate listed in one of them is refused. Every CRL must be
// signed by one of the store's CAs; an expired one still counts (a
// revocation does not lapse with its list) and is reported in the returned
// warnings. Safe to call while other goroutines verify.
func (t *TrustStore) SetCRLs(crls ...*x509.RevocationList) (warnings []string, err error) {
	rv := revocations{}
	for i, crl := range crls {
		var issuer *x509.Certificate
		for _, ca := range t.cas {
			if crl.CheckSignatureFrom(ca) == nil {
				issuer = ca
				break
			}
		}
		if issuer == nil {
			return nil, fmt.Errorf("ike: CRL %d (issuer %q) is not signed by a trusted CA", i+1, crl.Issuer.String())
		}
		if !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate) {
			warnings = append(warnings, fmt.Sprintf("CRL of %q was due for an update at %s", issuer.Subject.String(), crl.NextUpdate.UTC().Format(time.RFC3339)))
		}
		key := string(issuer.RawSubject)
		if rv[key] == nil {
			rv[key] = map[string]bool{}
		}
		for _, e := range crl.RevokedCertificateEntries {
			rv[key][e.SerialNumber.String()] = true
		}
	}
	t.revoked.Store(&rv)
	return warnings, nil
}

// LoadCRLs reads certificate revocation lists from a file (PEM "X509 CRL"
// blocks, or one DER CRL).
func LoadCRLs(path string) ([]*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ike: load CRLs: %w", err)
	}
	var crls []*x509.RevocationList
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ike: CRL in %s: %w", path, err)
		}
		crls = append(crls, crl)
	}
	if len(crls) == 0 {
		crl, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, fmt.Errorf("ike: %s holds no CRL (PEM X509 CRL or DER): %w", path, err)
		}
		crls = append(crls, crl)
	}
	return crls, nil
}

// checkRevoked refuses a chain (leaf first) with a revoked certificate.
func (t *TrustStore) checkRevoked(chain []*x509.Certificate) error {
	rv := t.revoked.Load()
	if rv == nil {
		return nil
	}
	for _, c := range chain {
		if (*rv)[string(c.RawIssuer)][c.SerialNumber.String()] {
			return fmt.Errorf("%w: %q (serial %s) by %q", ErrRevoked, c.Subject.String(), c.SerialNumber.String(), c.Issuer.String())
		}
	}
	return nil
}

// NewTrustStore returns a trust store holding cas.
func NewTrustStore(cas ...*x509.Certificate) (*TrustStore, error) {
	t := &TrustStore{pool: x509.NewCertPool()}
	for _, c := range cas {
		if c == nil {
			continue
		}
		if t.contains(c) {
			continue
		}
		t.pool.AddCert(c)
		t.cas = append(t.cas, c)
	}
	if len(t.cas) == 0 {
		return nil, errors.New("ike: trust store without any CA certificate")
	}
	return t, nil
}

func (t *TrustStore) contains(c *x509.Certificate) bool {
	for _, x := range t.cas {
		if bytes.Equal(x.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// LoadTrustStore reads CA certificates from files (PEM bundles or DER)
// and directories (every regular file in them, as in swanctl's x509ca/).
func LoadTrustStore(paths ...string) (*TrustStore, error) {
	var cas []*x509.Certificate
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("ike: load CA certificates: %w", err)
		}
		files := []string{p}
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, fmt.Errorf("ike: load CA certificates: %w", err)
			}
			files = files[:0]
			for _, e := range entries {
				if e.Type().IsRegular() {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
			sort.Strings(files)
		}
		for _, f := range files {
			certs, err := LoadCertificates(f)
			if err != nil {
				return nil, err
			}
			cas = append(cas, certs...)
		}
	}
	return NewTrustStore(cas...)
}

// Pool returns the trusted CAs as a certificate pool.
func (t *TrustStore) Pool() *x509.CertPool { return t.pool.Clone() }

// Certificates returns the trusted CA certificates.
func (t *TrustStore) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), t.cas...)
}

// CertReqData returns the Certification Authority field of a CERTREQ
// payload (encoding 4): the SHA-1 hashes of the SubjectPublicKeyInfo of
// each trusted CA, concatenated (RFC 7296 §3.7).
func (t *TrustStore) CertReqData() []byte {
	var out []byte
	seen := make(map[[sha1.Size]byte]bool)
	for _, c := range t.cas {
		h := SubjectPublicKeyInfoHash(c)
		if seen[h] {
			continue
		}
		seen[h] = true
		out = append(out, h[:]...)
	}
	return out
}

// Trusts reports whether one of the trusted CAs has the given
// SubjectPublicKeyInfo hash, as found in a peer's CERTREQ.
func (t *TrustStore) Trusts(spkiHash [sha1.Size]byte) bool {
	for _, c := range t.cas {
		if SubjectPublicKeyInfoHash(c) == spkiHash {
			return true
		}
	}
	return false
}

// VerifiedPeer is the result of a successful certificate verification.
type VerifiedPeer struct {
	// Certificate is the peer's end-entity certificate.
	Certificate *x509.Certificate
	// Chain runs from Certificate to a trusted CA.
	Chain []*x509.Certificate
	// PublicKey is the key that verifies the peer's AUTH payload.
	PublicKey crypto.PublicKey
}

// VerifyGateway is VerifyPeer for a peer that acts as a gateway (we
// initiated to it): its certificate must also be meant for a server, with
// an extended key usage of serverAuth, id-kp-ipsecIKE, iKEIntermediate or
// anyExtendedKeyUsage (RFC 4945 §5.1.3.12; what strongSwan, Windows and
// macOS expect of a gateway). A client-only certificate of the same CA,
// which any colleague holds, does not make its holder a gateway.
func (t *TrustStore) VerifyGateway(endEntity []byte, intermediates [][]byte, id Identity, now time.Time) (*VerifiedPeer, error) {
	peer, err := t.VerifyPeer(endEntity, intermediates, id, now)
	if err != nil {
		return nil, err
	}
	if err := checkGatewayUsage(peer.Certificate); err != nil {
		return nil, err
	}
	return peer, nil
}

// OIDs of the extended key usages for IKE (RFC 4945 §5.1.3.12).
var (
	oidExtKeyUsageIPsecIKE        = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 17}
	oidExtKeyUsageIKEIntermediate = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 8, 2, 2}
)

// ErrNotAGateway reports a peer certificate whose extended key usage does
// not allow it to act as a gateway.
var ErrNotAGateway = errors.New("ike: the certificate is not for a gateway")

func checkGatewayUsage(c *x509.Certificate) error {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		if oid.Equal(oidExtKeyUsageIPsecIKE) || oid.Equal(oidExtKeyUsageIKEIntermediate) {
			return nil
		}
	}
	what := "no extended key usage"
	if len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage) > 0 {
		what = "extended key usage " + describeExtKeyUsage(c)
	}
	return fmt.Errorf("%w: certificate %q has %s; a gateway's needs serverAuth or ikeIntermediate (strongSwan: pki --issue --flag serverAuth --flag ikeIntermediate)",
		ErrNotAGateway, c.Subject.String(), what)
}

func describeExtKeyUsage(c *x509.Certificate) string {
	names := map[x509.ExtKeyUsage]string{x509.ExtKeyUsageClientAuth: "clientAuth", x509.ExtKeyUsageCodeSigning: "codeSigning",
		x509.ExtKeyUsageEmailProtection: "emailProtection", x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning"}
	var out []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := names[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("usage %d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	return strings.Join(out, ", ")
}

// VerifyPeer checks the peer's end-entity certificate, given as the DER
// Certificate Data of its first CERT payload, and any intermediates from
// further CERT payloads: the chain must lead to a trusted CA at time now
// (the current time when zero), any extended key usage is accepted
// (strongSwan certificates carry serverAuth, ikeIntermediate or none), a
// key usage extension must allow digitalSignature or nonRepudiation
// (RFC 4945 §5.1.3.2), and the certificate must contain id
// (Identity.MatchesCertificate). It returns the certificate's public key.
func (t *TrustStore) VerifyPeer(endEntity []byte, intermediates [][]byte, id Identity, now time.Time) (*VerifiedPeer, error) {
	leaf, err := x509.ParseCertificate(endEntity)
	if err != nil {
		return nil, fmt.Errorf("ike: peer certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for i, der := range intermediates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("ike: peer intermediate certificate %d: %w", i+1, err)
		}
		pool.AddCert(c)
	}
	return t.VerifyPeerCertificate(leaf, pool, id, now)
}

// VerifyPeerCertificate is VerifyPeer for parsed certificates.
func (t *TrustStore) VerifyPeerCertificate(leaf *x509.Certificate, intermediates *x509.CertPool, id Identity, now time.Time) (*VerifiedPeer, error) {
	if leaf == nil {
		return nil, errors.New("ike: no peer certificate")
	}
	if now.IsZero() {
		now = time.Now()
	}
	subject := leaf.Subject.String()
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         t.pool,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var invalid x509.CertificateInvalidError
		var unknown x509.UnknownAuthorityError
		switch {
		case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
			return nil, fmt.Errorf("ike: peer certificate %q is expired or not yet valid at %s (valid %s to %s): %w",
				subject, now.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), err)
		case errors.As(err, &unknown):
			return nil, fmt.Errorf("ike: peer certificate %q (issuer %q) does not chain to a trusted CA: %w", subject, leaf.Issuer.String(), err)
		}
		return nil, fmt.Errorf("ike: peer certificate %q does not verify: %w", subject, err)
	}
	if err := t.checkRevoked(chains[0]); err != nil {
		return nil, err
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, fmt.Errorf("ike: peer certificate %q: key usage allows neither digitalSignature nor nonRepudiation", subject)
	}
	if !id.MatchesCertificate(leaf) {
		return nil, fmt.Errorf("%w: %s %q is not in certificate %q (%s)", ErrIdentityMismatch, describeIDType(id.Type), id.String(), subject, describeSubjectAltNames(leaf))
	}
	if err := checkPublicKeyStrength(leaf.PublicKey); err != nil {
		return nil, fmt.Errorf("ike: peer certificate %q: %w", subject, err)
	}
	return &VerifiedPeer{Certificate: leaf, Chain: chains[0], PublicKey: leaf.PublicKey}, nil
}

func describeSubjectAltNames(c *x509.Certificate) string {
	var names []string
	for _, n := range c.DNSNames {
		names = append(names, "DNS:"+n)
	}
	for _, e := range c.EmailAddresses {
		names = append(names, "email:"+e)
	}
	for _, ip := range c.IPAddresses {
		names = append(names, "IP:"+ip.String())
	}
	if len(names) == 0 {
		return "no subjectAltNames"
	}
	return "subjectAltNames " + strings.Join(names, ", ")
}
