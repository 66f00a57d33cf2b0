package testpki

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
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike"
)

// oidExtKeyUsageIPsecIKEIntermediate is the IKE-intermediate extended key
// usage (1.3.6.1.5.5.8.2.2) strongSwan and macOS look for on a gateway.
var oidExtKeyUsageIPsecIKEIntermediate = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 8, 2, 2}

// dnSpecials are the characters a test PKI name may not hold: they would
// need escaping in the certificate's subject DN.
const dnSpecials = `,+;"\<>=#`

// KeyType selects the key type of a test PKI.
type KeyType int

const (
	KeyECDSAP256 KeyType = iota
	KeyECDSAP384
	KeyRSA3072
	KeyEd25519
)

// String names the key type.
func (k KeyType) String() string {
	switch k {
	case KeyECDSAP256:
		return "ECDSA P-256"
	case KeyECDSAP384:
		return "ECDSA P-384"
	case KeyRSA3072:
		return "RSA 3072"
	case KeyEd25519:
		return "Ed25519"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// Options describes a test PKI. The zero value is usable.
type Options struct {
	// KeyType of every key (CA, intermediate, gateway, client).
	KeyType KeyType
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

// Credential is one certificate of a test PKI with its key and files.
type Credential struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
	// CertFile holds the PEM certificate, KeyFile the PEM PKCS #8 key.
	CertFile, KeyFile string
	// Identity is the IKE identity the certificate proves: the DNS name of
	// the gateway, the email address of the client, the DN of a CA.
	Identity ike.Identity
	// SubjectDN is the certificate's subject as an ID_DER_ASN1_DN identity.
	SubjectDN ike.Identity
}

// String describes the credential without its private key.
func (c Credential) String() string {
	return fmt.Sprintf("Credential{%s, cert %s}", c.Identity, c.CertFile)
}

// GoString is String, so that %#v does not print the private key either.
func (c Credential) GoString() string { return c.String() }

// PKI is a CA, an optional intermediate CA, a gateway and a client.
type PKI struct {
	Dir          string
	CA           Credential
	Intermediate *Credential
	Gateway      Credential
	Client       Credential
}

// File names written by Generate into its directory.
const (
	CAFile              = "ca.pem"
	CAKeyFile           = "ca.key"
	IntermediateFile    = "intermediate.pem"
	IntermediateKeyFile = "intermediate.key"
	GatewayFile         = "gateway.pem"
	GatewayKeyFile      = "gateway.key"
	ClientFile          = "client.pem"
	ClientKeyFile       = "client.key"
)

// Generate creates a test PKI and writes its certificates and keys
// as PEM files into dir (created if missing; keys with mode 0600). It is
// meant for tests only.
func Generate(dir string, opts Options) (*PKI, error) {
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
	if strings.ContainsAny(opts.GatewayName, dnSpecials) || strings.ContainsAny(opts.ClientEmail, dnSpecials) {
		return nil, fmt.Errorf("testpki: names %q and %q must not need DN escaping", opts.GatewayName, opts.ClientEmail)
	}
	if !opts.NotAfter.After(opts.NotBefore) {
		return nil, errors.New("testpki: NotAfter must be after NotBefore")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testpki: %w", err)
	}
	caNotBefore := opts.NotBefore.Add(-24 * time.Hour)
	caNotAfter := opts.NotAfter.Add(365 * 24 * time.Hour)

	pki := &PKI{Dir: dir}
	ca, err := IssueCertificate(dir, CAFile, CAKeyFile, opts.KeyType, CertTemplate{
		Subject: "C=CH, O=mifsec test, CN=mifsec test CA", IsCA: true,
		NotBefore: caNotBefore, NotAfter: caNotAfter,
	}, nil)
	if err != nil {
		return nil, err
	}
	ca.Identity = ca.SubjectDN
	pki.CA = *ca
	issuer := ca
	if opts.Intermediate {
		ic, err := IssueCertificate(dir, IntermediateFile, IntermediateKeyFile, opts.KeyType, CertTemplate{
			Subject: "C=CH, O=mifsec test, CN=mifsec test intermediate CA", IsCA: true,
			NotBefore: caNotBefore, NotAfter: caNotAfter,
		}, ca)
		if err != nil {
			return nil, err
		}
		ic.Identity = ic.SubjectDN
		pki.Intermediate = ic
		issuer = ic
	}

	gatewayIdentity, err := ike.ParseIdentity("@" + opts.GatewayName)
	if err != nil {
		return nil, fmt.Errorf("testpki: gateway name: %w", err)
	}
	gw, err := IssueCertificate(dir, GatewayFile, GatewayKeyFile, opts.KeyType, CertTemplate{
		Subject:         "C=CH, O=mifsec test, CN=" + opts.GatewayName,
		DNSNames:        []string{opts.GatewayName},
		Addrs:           opts.GatewayAddrs,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		ExtKeyUsageOIDs: []asn1.ObjectIdentifier{oidExtKeyUsageIPsecIKEIntermediate},
		NotBefore:       opts.NotBefore, NotAfter: opts.NotAfter,
	}, issuer)
	if err != nil {
		return nil, err
	}
	gw.Identity = gatewayIdentity
	pki.Gateway = *gw

	clientIdentity, err := ike.ParseIdentity("email:" + opts.ClientEmail)
	if err != nil {
		return nil, fmt.Errorf("testpki: client email: %w", err)
	}
	var clientDNS []string
	if opts.ClientName != "" {
		clientDNS = []string{opts.ClientName}
	}
	cl, err := IssueCertificate(dir, ClientFile, ClientKeyFile, opts.KeyType, CertTemplate{
		Subject:     "C=CH, O=mifsec test, CN=" + opts.ClientEmail,
		DNSNames:    clientDNS,
		Emails:      []string{opts.ClientEmail},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:   opts.NotBefore, NotAfter: opts.NotAfter,
	}, issuer)
	if err != nil {
		return nil, err
	}
	cl.Identity = clientIdentity
	pki.Client = *cl
	return pki, nil
}

type CertTemplate struct {
	Subject             string
	IsCA                bool
	DNSNames            []string
	Emails              []string
	Addrs               []netip.Addr
	ExtKeyUsage         []x509.ExtKeyUsage
	ExtKeyUsageOIDs     []asn1.ObjectIdentifier
	NotBefore, NotAfter time.Time
}

func generateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyEd25519:
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

// IssueCertificate generates a key of type kt, issues a certificate for it
// as tmpl describes, signed by issuer (self-signed when issuer is nil), and
// writes both as PEM into dir/certName and dir/keyName.
func IssueCertificate(dir, certName, keyName string, kt KeyType, tmpl CertTemplate, issuer *Credential) (*Credential, error) {
	key, err := generateKey(kt)
	if err != nil {
		return nil, fmt.Errorf("testpki: generate %s key: %w", kt, err)
	}
	subject, err := ike.ParseIdentity("asn1dn:" + tmpl.Subject)
	if err != nil {
		return nil, fmt.Errorf("testpki: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("testpki: serial number: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("testpki: subject key identifier: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		RawSubject:            subject.Data,
		NotBefore:             tmpl.NotBefore,
		NotAfter:              tmpl.NotAfter,
		SubjectKeyId:          ski,
		BasicConstraintsValid: true,
		IsCA:                  tmpl.IsCA,
		DNSNames:              tmpl.DNSNames,
		EmailAddresses:        tmpl.Emails,
		ExtKeyUsage:           tmpl.ExtKeyUsage,
		UnknownExtKeyUsage:    tmpl.ExtKeyUsageOIDs,
	}
	for _, a := range tmpl.Addrs {
		template.IPAddresses = append(template.IPAddresses, net.IP(a.Unmap().AsSlice()))
	}
	if tmpl.IsCA {
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
		return nil, fmt.Errorf("testpki: create certificate %q: %w", tmpl.Subject, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse certificate %q: %w", tmpl.Subject, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testpki: encode %s key: %w", kt, err)
	}
	cred := &Credential{
		Certificate: cert,
		Key:         key,
		CertFile:    filepath.Join(dir, certName),
		KeyFile:     filepath.Join(dir, keyName),
		SubjectDN:   subject,
	}
	if err := os.WriteFile(cred.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("testpki: %w", err)
	}
	if err := os.WriteFile(cred.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return nil, fmt.Errorf("testpki: %w", err)
	}
	return cred, nil
}

// WriteSwanctl writes the files strongSwan's swanctl loads for the
// credential holder into dir: the CA to x509ca/ (trusted), holder's
// certificate and the intermediate CA (if any; swanctl 5.9 has no x509ia/)
// to x509/, and its key to private/. swanctl --load-all --file
// dir/swanctl.conf then loads them.
func (p *PKI) WriteSwanctl(dir string, holder Credential) error {
	type file struct {
		sub, name string
		block     *pem.Block
		mode      os.FileMode
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(holder.Key)
	if err != nil {
		return fmt.Errorf("testpki: write swanctl credentials: encode key: %w", err)
	}
	base := filepath.Base(holder.CertFile)
	files := []file{
		{"x509ca", CAFile, &pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Certificate.Raw}, 0o644},
		{"x509", base, &pem.Block{Type: "CERTIFICATE", Bytes: holder.Certificate.Raw}, 0o644},
		{"private", base[:len(base)-len(filepath.Ext(base))] + ".key", &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}, 0o600},
	}
	if p.Intermediate != nil {
		files = append(files, file{"x509", IntermediateFile, &pem.Block{Type: "CERTIFICATE", Bytes: p.Intermediate.Certificate.Raw}, 0o644})
	}
	for _, f := range files {
		sub := filepath.Join(dir, f.sub)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return fmt.Errorf("testpki: write swanctl credentials: %w", err)
		}
		if err := os.WriteFile(filepath.Join(sub, f.name), pem.EncodeToMemory(f.block), f.mode); err != nil {
			return fmt.Errorf("testpki: write swanctl credentials: %w", err)
		}
	}
	return nil
}
