package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1"   // SHA-1 for method 1 signatures (signRSASHA1)
	_ "crypto/sha256" // SHA-256 for signatures
	_ "crypto/sha512" // SHA-384 and SHA-512 for signatures
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/mifsec/mifsec/ike/wire"
)

// Authentication of the IKE SA (RFC 7296 §2.15) with a pre-shared key or
// a digital signature (RFC 7427 Digital Signature method, RFC 8420 for
// Ed25519, RFC 4754 for the classic ECDSA methods).

// ErrAuthenticationFailed reports an AUTH payload that does not verify.
var ErrAuthenticationFailed = errors.New("ike: AUTH payload does not verify")

// ErrWeakSignature reports a signature algorithm that mifsec refuses to
// accept because it is too weak (SHA-1, small RSA keys).
var ErrWeakSignature = errors.New("ike: signature algorithm too weak")

// pskKeyPad is the fixed string of RFC 7296 §2.15, 17 ASCII characters
// without a terminating NUL.
const pskKeyPad = "Key Pad for IKEv2"

// minRSABits is the smallest RSA modulus accepted for signing or
// verifying AUTH payloads.
const minRSABits = 2048

// initiatorSignedOctets returns the octets the initiator signs or MACs
// (RFC 7296 §2.15):
//
//	RealMessage1 | NonceRData | prf(SK_pi, IDi payload body)
//
// realMessage1 is the IKE_SA_INIT request exactly as sent (from the IKE
// header to the end), nonceR the responder's nonce data (the Nonce payload
// body), skPi the initiator's SK_pi key and idiBody the body of the IDi
// payload (ID Type, RESERVED, data), as carried in IKE_AUTH; use
// Identity.PayloadBody to build it and, when verifying, the received bytes
// unchanged. prf is the negotiated pseudorandom function.
func initiatorSignedOctets(prf func(key, data []byte) []byte, realMessage1, nonceR, skPi, idiBody []byte) []byte {
	return signedOctets(prf, realMessage1, nonceR, skPi, idiBody)
}

// responderSignedOctets returns the octets the responder signs or MACs
// (RFC 7296 §2.15):
//
//	RealMessage2 | NonceIData | prf(SK_pr, IDr payload body)
func responderSignedOctets(prf func(key, data []byte) []byte, realMessage2, nonceI, skPr, idrBody []byte) []byte {
	return signedOctets(prf, realMessage2, nonceI, skPr, idrBody)
}

func signedOctets(prf func(key, data []byte) []byte, message, peerNonce, skP, idBody []byte) []byte {
	macedID := prf(skP, idBody)
	octets := make([]byte, 0, len(message)+len(peerNonce)+len(macedID))
	octets = append(octets, message...)
	octets = append(octets, peerNonce...)
	return append(octets, macedID...)
}

// pSKAuth returns the AUTH data of the Shared Key Message Integrity Code
// method (2) for signedOctets (RFC 7296 §2.15):
//
//	prf(prf(secret, "Key Pad for IKEv2"), signedOctets)
//
// With EAP the secret is the MSK (or SK_pi/SK_pr when EAP yields none).
func pSKAuth(prf func(key, data []byte) []byte, secret, signedOctets []byte) []byte {
	return prf(prf(secret, []byte(pskKeyPad)), signedOctets)
}

// verifyPSKAuth checks received AUTH data of method 2 in constant time.
// It returns ErrAuthenticationFailed when it does not match.
func verifyPSKAuth(prf func(key, data []byte) []byte, secret, signedOctets, received []byte) error {
	if len(secret) == 0 {
		return errors.New("ike: verify shared-key AUTH: no shared secret configured")
	}
	if len(received) == 0 {
		return fmt.Errorf("%w: empty shared-key AUTH data", ErrAuthenticationFailed)
	}
	if !hmac.Equal(pSKAuth(prf, secret, signedOctets), received) {
		return fmt.Errorf("%w: shared-key MIC mismatch", ErrAuthenticationFailed)
	}
	return nil
}

// SignatureHashAlgorithmsNotifyData returns the data of the
// SIGNATURE_HASH_ALGORITHMS notification (RFC 7427 §4) listing the hashes
// mifsec verifies: SHA2-256, SHA2-384, SHA2-512 and Identity (RFC 8420).
func SignatureHashAlgorithmsNotifyData() []byte {
	hashes := []uint16{wire.HashSHA256, wire.HashSHA384, wire.HashSHA512, wire.HashIdentity}
	data := make([]byte, 2*len(hashes))
	for i, h := range hashes {
		binary.BigEndian.PutUint16(data[2*i:], h)
	}
	return data
}

// ParseSignatureHashAlgorithms decodes the data of a received
// SIGNATURE_HASH_ALGORITHMS notification into its 2-byte hash identifiers,
// unknown ones included.
func ParseSignatureHashAlgorithms(data []byte) ([]uint16, error) {
	if len(data) == 0 || len(data)%2 != 0 {
		return nil, fmt.Errorf("ike: SIGNATURE_HASH_ALGORITHMS data of %d bytes is not a non-empty list of 2-byte values", len(data))
	}
	hashes := make([]uint16, len(data)/2)
	for i := range hashes {
		hashes[i] = binary.BigEndian.Uint16(data[2*i:])
	}
	return hashes, nil
}

// Signature schemes of the Digital Signature method (RFC 7427).

type signatureScheme int

const (
	schemeRSAPKCS1SHA256 signatureScheme = iota + 1
	schemeRSAPKCS1SHA384
	schemeRSAPKCS1SHA512
	schemeRSAPSSSHA256
	schemeECDSASHA256
	schemeECDSASHA384
	schemeECDSASHA512
	schemeEd25519
)

// AlgorithmIdentifier DER encodings from RFC 7427 Appendix A and, for
// Ed25519, RFC 8410 §3 as RFC 8420 requires (parameters absent).
var (
	// A.1.2 sha256WithRSAEncryption, 1.2.840.113549.1.1.11
	algIDSHA256WithRSA = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00}
	// A.1.3 sha384WithRSAEncryption, 1.2.840.113549.1.1.12
	algIDSHA384WithRSA = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00}
	// A.1.4 sha512WithRSAEncryption, 1.2.840.113549.1.1.13
	algIDSHA512WithRSA = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00}
	// A.3.2 ecdsa-with-sha256, 1.2.840.10045.4.3.2
	algIDECDSAWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	// A.3.3 ecdsa-with-sha384, 1.2.840.10045.4.3.3
	algIDECDSAWithSHA384 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}
	// A.3.4 ecdsa-with-sha512, 1.2.840.10045.4.3.4
	algIDECDSAWithSHA512 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04}
	// A.4.3 RSASSA-PSS with SHA-256: id-RSASSA-PSS 1.2.840.113549.1.1.10,
	// hash SHA-256, MGF1 with SHA-256, salt length 32, trailer field 1.
	algIDRSAPSSSHA256 = []byte{
		0x30, 0x46, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x39, 0xa0,
		0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
		0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
		0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03,
		0x02, 0x01, 0x20, 0xa3, 0x03, 0x02, 0x01, 0x01,
	}
	// RFC 8410 §3 id-Ed25519, 1.3.101.112
	algIDEd25519 = []byte{0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70}
)

var (
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidRSASSAPSS       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidECDSAWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidDigestSHA1      = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidDigestSHA256    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidDigestSHA384    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidDigestSHA512    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	asn1NULL           = []byte{0x05, 0x00}
)

// pssSaltLengthSHA256 is the salt length of RFC 7427 A.4.3.
const pssSaltLengthSHA256 = 32

// signatureOIDHash returns the hash of a PKCS #1 v1.5 or ECDSA signature
// algorithm.
func signatureOIDHash(oid asn1.ObjectIdentifier) crypto.Hash {
	switch {
	case oid.Equal(oidSHA256WithRSA), oid.Equal(oidECDSAWithSHA256):
		return crypto.SHA256
	case oid.Equal(oidSHA384WithRSA), oid.Equal(oidECDSAWithSHA384):
		return crypto.SHA384
	case oid.Equal(oidSHA512WithRSA), oid.Equal(oidECDSAWithSHA512):
		return crypto.SHA512
	}
	return 0
}

func (s signatureScheme) algorithmIdentifier() []byte {
	switch s {
	case schemeRSAPKCS1SHA256:
		return algIDSHA256WithRSA
	case schemeRSAPKCS1SHA384:
		return algIDSHA384WithRSA
	case schemeRSAPKCS1SHA512:
		return algIDSHA512WithRSA
	case schemeRSAPSSSHA256:
		return algIDRSAPSSSHA256
	case schemeECDSASHA256:
		return algIDECDSAWithSHA256
	case schemeECDSASHA384:
		return algIDECDSAWithSHA384
	case schemeECDSASHA512:
		return algIDECDSAWithSHA512
	case schemeEd25519:
		return algIDEd25519
	}
	return nil
}

func (s signatureScheme) hash() crypto.Hash {
	switch s {
	case schemeRSAPKCS1SHA256, schemeRSAPSSSHA256, schemeECDSASHA256:
		return crypto.SHA256
	case schemeRSAPKCS1SHA384, schemeECDSASHA384:
		return crypto.SHA384
	case schemeRSAPKCS1SHA512, schemeECDSASHA512:
		return crypto.SHA512
	}
	return 0
}

// hashID returns the SIGNATURE_HASH_ALGORITHMS value of the scheme's hash.
func (s signatureScheme) hashID() uint16 {
	switch s.hash() {
	case crypto.SHA256:
		return wire.HashSHA256
	case crypto.SHA384:
		return wire.HashSHA384
	case crypto.SHA512:
		return wire.HashSHA512
	}
	return wire.HashIdentity
}

// SignOptions tunes Sign.
type SignOptions struct {
	// RSAPSS makes RSA keys sign with RSASSA-PSS (SHA-256, MGF1 SHA-256,
	// salt 32) instead of PKCS #1 v1.5. strongSwan verifies PSS; it signs
	// with it only when charon.rsa_pss is set.
	RSAPSS bool
}

// Sign signs the signed octets of RFC 7296 §2.15 with key and returns the
// AUTH method and data.
//
// peerHashes is the list the peer sent in SIGNATURE_HASH_ALGORITHMS. When
// it is not empty, Sign uses the Digital Signature method (14) with the
// first hash, in mifsec's order of preference for the key, that the peer
// listed: SHA-256 for RSA and P-256, SHA-384 for P-384, SHA-512 for P-521,
// Identity for Ed25519. When the peer sent no list (or, for ECDSA, none
// of the hashes fit), ECDSA keys use the classic methods 9, 10 or 11 of
// RFC 4754 (SHA-256/384/512 fixed by the curve), RSA keys the Digital Signature
// method with SHA-256 and Ed25519 keys the Digital Signature method with
// Identity. RSA keys are signed with PKCS #1 v1.5.
func Sign(key crypto.Signer, octets []byte, peerHashes []uint16) (wire.AuthMethod, []byte, error) {
	return signWithOptions(key, octets, peerHashes, SignOptions{})
}

// signRSASHA1 signs with method 1, RSA PKCS #1 v1.5 with SHA-1 (RFC 7296
// §3.8): only for a peer that can check nothing else. mifsec never
// accepts it (Verify).
func signRSASHA1(key crypto.Signer, octets []byte) (wire.AuthMethod, []byte, error) {
	if bits := key.Public().(*rsa.PublicKey).N.BitLen(); bits < minRSABits {
		return 0, nil, fmt.Errorf("ike: sign AUTH: RSA key of %d bits is smaller than %d bits: %w", bits, minRSABits, ErrWeakSignature)
	}
	sig, err := key.Sign(rand.Reader, digest(crypto.SHA1, octets), crypto.SHA1)
	if err != nil {
		return 0, nil, fmt.Errorf("ike: sign AUTH: %w", err)
	}
	return wire.AuthRSA, sig, nil
}

// signWithOptions is Sign with options.
func signWithOptions(key crypto.Signer, octets []byte, peerHashes []uint16, opts SignOptions) (wire.AuthMethod, []byte, error) {
	if key == nil {
		return 0, nil, errors.New("ike: sign AUTH: no private key")
	}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return 0, nil, fmt.Errorf("ike: sign AUTH: RSA key of %d bits is smaller than %d bits: %w", bits, minRSABits, ErrWeakSignature)
		}
		preference := []signatureScheme{schemeRSAPKCS1SHA256, schemeRSAPKCS1SHA384, schemeRSAPKCS1SHA512}
		if opts.RSAPSS {
			preference = []signatureScheme{schemeRSAPSSSHA256}
		}
		scheme, err := chooseScheme(preference, peerHashes)
		if err != nil {
			return 0, nil, fmt.Errorf("ike: sign AUTH with RSA key: %w", err)
		}
		return signDigitalSignature(key, scheme, octets)
	case *ecdsa.PublicKey:
		classic, preference, err := ecdsaSchemes(pub.Curve)
		if err != nil {
			return 0, nil, fmt.Errorf("ike: sign AUTH: %w", err)
		}
		if len(peerHashes) == 0 {
			return signECDSAClassic(key, classic, octets)
		}
		scheme, err := chooseScheme(preference, peerHashes)
		if err != nil {
			return signECDSAClassic(key, classic, octets)
		}
		return signDigitalSignature(key, scheme, octets)
	case ed25519.PublicKey:
		if len(peerHashes) > 0 && !containsHash(peerHashes, wire.HashIdentity) {
			return 0, nil, errors.New("ike: sign AUTH with Ed25519 key: the peer's SIGNATURE_HASH_ALGORITHMS lacks Identity (5)")
		}
		return signDigitalSignature(key, schemeEd25519, octets)
	default:
		return 0, nil, fmt.Errorf("ike: sign AUTH: unsupported key type %T", pub)
	}
}

func containsHash(hashes []uint16, h uint16) bool {
	for _, x := range hashes {
		if x == h {
			return true
		}
	}
	return false
}

func chooseScheme(preference []signatureScheme, peerHashes []uint16) (signatureScheme, error) {
	if len(peerHashes) == 0 {
		return preference[0], nil
	}
	for _, s := range preference {
		if containsHash(peerHashes, s.hashID()) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("no hash in common with the peer's SIGNATURE_HASH_ALGORITHMS %v", peerHashes)
}

// ecdsaSchemes returns the classic RFC 4754 method of a curve and the
// Digital Signature schemes in order of preference.
func ecdsaSchemes(curve elliptic.Curve) (wire.AuthMethod, []signatureScheme, error) {
	switch curve {
	case elliptic.P256():
		return wire.AuthECDSA256, []signatureScheme{schemeECDSASHA256, schemeECDSASHA384, schemeECDSASHA512}, nil
	case elliptic.P384():
		return wire.AuthECDSA384, []signatureScheme{schemeECDSASHA384, schemeECDSASHA512, schemeECDSASHA256}, nil
	case elliptic.P521():
		return wire.AuthECDSA521, []signatureScheme{schemeECDSASHA512, schemeECDSASHA384, schemeECDSASHA256}, nil
	}
	return 0, nil, fmt.Errorf("unsupported ECDSA curve %s", curveName(curve))
}

func curveName(curve elliptic.Curve) string {
	if curve == nil || curve.Params() == nil {
		return "(unknown)"
	}
	return curve.Params().Name
}

func digest(h crypto.Hash, octets []byte) []byte {
	d := h.New()
	d.Write(octets)
	return d.Sum(nil)
}

func signDigitalSignature(key crypto.Signer, scheme signatureScheme, octets []byte) (wire.AuthMethod, []byte, error) {
	var (
		sig []byte
		err error
	)
	switch scheme {
	case schemeEd25519:
		sig, err = key.Sign(rand.Reader, octets, crypto.Hash(0))
	case schemeRSAPSSSHA256:
		sig, err = key.Sign(rand.Reader, digest(crypto.SHA256, octets), &rsa.PSSOptions{SaltLength: pssSaltLengthSHA256, Hash: crypto.SHA256})
	default:
		// PKCS #1 v1.5 for RSA keys; ASN.1 DER Ecdsa-Sig-Value for ECDSA
		// keys, as RFC 7427 §3 requires.
		sig, err = key.Sign(rand.Reader, digest(scheme.hash(), octets), scheme.hash())
	}
	if err != nil {
		return 0, nil, fmt.Errorf("ike: sign AUTH: %w", err)
	}
	algID := scheme.algorithmIdentifier()
	data := make([]byte, 0, 1+len(algID)+len(sig))
	data = append(data, byte(len(algID)))
	data = append(data, algID...)
	data = append(data, sig...)
	return wire.AuthDigitalSignature, data, nil
}

type ecdsaSignature struct {
	R, S *big.Int
}

// signECDSAClassic signs with methods 9, 10 or 11 (RFC 4754): the hash is
// fixed by the curve and the signature is r | s, each padded to the
// curve's size.
func signECDSAClassic(key crypto.Signer, method wire.AuthMethod, octets []byte) (wire.AuthMethod, []byte, error) {
	h, size := classicECDSAParams(method)
	der, err := key.Sign(rand.Reader, digest(h, octets), h)
	if err != nil {
		return 0, nil, fmt.Errorf("ike: sign AUTH: %w", err)
	}
	var sig ecdsaSignature
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 {
		return 0, nil, errors.New("ike: sign AUTH: signer returned a malformed ECDSA signature")
	}
	if sig.R.BitLen() > 8*size || sig.S.BitLen() > 8*size {
		return 0, nil, errors.New("ike: sign AUTH: ECDSA signature does not fit the curve")
	}
	data := make([]byte, 2*size)
	sig.R.FillBytes(data[:size])
	sig.S.FillBytes(data[size:])
	return method, data, nil
}

func classicECDSAParams(method wire.AuthMethod) (crypto.Hash, int) {
	switch method {
	case wire.AuthECDSA256:
		return crypto.SHA256, 32
	case wire.AuthECDSA384:
		return crypto.SHA384, 48
	case wire.AuthECDSA521:
		return crypto.SHA512, 66
	}
	return 0, 0
}

// Verify checks AUTH data of a signature method against the signed octets
// of RFC 7296 §2.15 and the peer's public key. It accepts the Digital
// Signature method (14) with RSA PKCS #1 v1.5 or RSASSA-PSS and SHA-2,
// ECDSA with SHA-2 (DER-encoded signature), and Ed25519; and the classic
// ECDSA methods 9, 10 and 11. Method 1 (RSA with SHA-1) is refused with
// ErrWeakSignature. A signature that does not verify gives
// ErrAuthenticationFailed.
func Verify(pub crypto.PublicKey, method wire.AuthMethod, data []byte, octets []byte) error {
	if pub == nil {
		return errors.New("ike: verify AUTH: no public key")
	}
	if err := checkPublicKeyStrength(pub); err != nil {
		return fmt.Errorf("ike: verify AUTH: %w", err)
	}
	switch method {
	case wire.AuthDigitalSignature:
		return verifyDigitalSignature(pub, data, octets)
	case wire.AuthECDSA256, wire.AuthECDSA384, wire.AuthECDSA521:
		return verifyECDSAClassic(pub, method, data, octets)
	case wire.AuthRSA:
		return fmt.Errorf("ike: verify AUTH: method 1 (RSA with SHA-1) refused: %w", ErrWeakSignature)
	case wire.AuthPSK:
		return errors.New("ike: verify AUTH: method 2 (shared key) is not a signature; use verifyPSKAuth")
	}
	return fmt.Errorf("ike: verify AUTH: unsupported authentication method %d", uint8(method))
}

func checkPublicKeyStrength(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N == nil {
			return errors.New("invalid RSA public key")
		}
		if bits := k.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key of %d bits is smaller than %d bits: %w", bits, minRSABits, ErrWeakSignature)
		}
	case *ecdsa.PublicKey:
		if k.X == nil || k.Y == nil {
			return errors.New("invalid ECDSA public key")
		}
		if _, _, err := ecdsaSchemes(k.Curve); err != nil {
			return err
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("invalid Ed25519 public key")
		}
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

func verifyECDSAClassic(pub crypto.PublicKey, method wire.AuthMethod, data, octets []byte) error {
	key, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("ike: verify AUTH: method %d needs an ECDSA key, the peer's key is %s", uint8(method), keyTypeName(pub))
	}
	classic, _, err := ecdsaSchemes(key.Curve)
	if err != nil {
		return fmt.Errorf("ike: verify AUTH: %w", err)
	}
	if classic != method {
		return fmt.Errorf("ike: verify AUTH: method %d does not fit the peer's %s key (RFC 4754 ties the method to the curve)", uint8(method), curveName(key.Curve))
	}
	h, size := classicECDSAParams(method)
	if len(data) != 2*size {
		return fmt.Errorf("%w: ECDSA method %d signature of %d bytes, want %d", ErrAuthenticationFailed, uint8(method), len(data), 2*size)
	}
	r := new(big.Int).SetBytes(data[:size])
	s := new(big.Int).SetBytes(data[size:])
	if !ecdsa.Verify(key, digest(h, octets), r, s) {
		return fmt.Errorf("%w: ECDSA signature (method %d) mismatch", ErrAuthenticationFailed, uint8(method))
	}
	return nil
}

// pssParameters is RSASSA-PSS-params (RFC 4055 §3.1).
type pssParameters struct {
	Hash         pkix.AlgorithmIdentifier `asn1:"explicit,tag:0,optional"`
	MGF          pkix.AlgorithmIdentifier `asn1:"explicit,tag:1,optional"`
	SaltLength   int                      `asn1:"explicit,tag:2,optional,default:20"`
	TrailerField int                      `asn1:"explicit,tag:3,optional,default:1"`
}

// splitDigitalSignature splits AUTH data of method 14 into its
// AlgorithmIdentifier and signature value (RFC 7427 §3).
func splitDigitalSignature(data []byte) (pkix.AlgorithmIdentifier, []byte, error) {
	if len(data) < 1 {
		return pkix.AlgorithmIdentifier{}, nil, errors.New("empty Digital Signature AUTH data")
	}
	n := int(data[0])
	if n == 0 || len(data) < 1+n {
		return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("AlgorithmIdentifier length %d exceeds the %d bytes of AUTH data", n, len(data)-1)
	}
	blob, sig := data[1:1+n], data[1+n:]
	if len(sig) == 0 {
		return pkix.AlgorithmIdentifier{}, nil, errors.New("Digital Signature AUTH data has no signature value")
	}
	var algID pkix.AlgorithmIdentifier
	rest, err := asn1.Unmarshal(blob, &algID)
	if err != nil {
		return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("malformed AlgorithmIdentifier: %w", err)
	}
	if len(rest) != 0 {
		return pkix.AlgorithmIdentifier{}, nil, errors.New("malformed AlgorithmIdentifier: trailing data")
	}
	return algID, sig, nil
}

// paramsAbsentOrNULL reports whether an AlgorithmIdentifier has absent or
// NULL parameters.
func paramsAbsentOrNULL(algID pkix.AlgorithmIdentifier) bool {
	return len(algID.Parameters.FullBytes) == 0 || bytes.Equal(algID.Parameters.FullBytes, asn1NULL)
}

func verifyDigitalSignature(pub crypto.PublicKey, data, octets []byte) error {
	algID, sig, err := splitDigitalSignature(data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAuthenticationFailed, err)
	}
	oid := algID.Algorithm
	switch {
	case oid.Equal(oidSHA256WithRSA), oid.Equal(oidSHA384WithRSA), oid.Equal(oidSHA512WithRSA):
		key, ok := pub.(*rsa.PublicKey)
		if !ok {
			return mismatchedKey(oid, pub)
		}
		if !paramsAbsentOrNULL(algID) {
			return fmt.Errorf("ike: verify AUTH: %v with unexpected parameters", oid)
		}
		h := signatureOIDHash(oid)
		if err := rsa.VerifyPKCS1v15(key, h, digest(h, octets), sig); err != nil {
			return fmt.Errorf("%w: RSA PKCS#1 v1.5 %v signature mismatch", ErrAuthenticationFailed, h)
		}
		return nil
	case oid.Equal(oidRSASSAPSS):
		key, ok := pub.(*rsa.PublicKey)
		if !ok {
			return mismatchedKey(oid, pub)
		}
		h, saltLength, err := parsePSSParameters(algID.Parameters.FullBytes)
		if err != nil {
			return fmt.Errorf("ike: verify AUTH: RSASSA-PSS: %w", err)
		}
		if err := rsa.VerifyPSS(key, h, digest(h, octets), sig, &rsa.PSSOptions{SaltLength: saltLength, Hash: h}); err != nil {
			return fmt.Errorf("%w: RSASSA-PSS %v signature mismatch", ErrAuthenticationFailed, h)
		}
		return nil
	case oid.Equal(oidECDSAWithSHA256), oid.Equal(oidECDSAWithSHA384), oid.Equal(oidECDSAWithSHA512):
		key, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return mismatchedKey(oid, pub)
		}
		if !paramsAbsentOrNULL(algID) {
			return fmt.Errorf("ike: verify AUTH: %v with unexpected parameters", oid)
		}
		h := signatureOIDHash(oid)
		if !ecdsa.VerifyASN1(key, digest(h, octets), sig) {
			return fmt.Errorf("%w: ECDSA %v signature mismatch", ErrAuthenticationFailed, h)
		}
		return nil
	case oid.Equal(oidEd25519):
		key, ok := pub.(ed25519.PublicKey)
		if !ok {
			return mismatchedKey(oid, pub)
		}
		if len(algID.Parameters.FullBytes) != 0 {
			return errors.New("ike: verify AUTH: id-Ed25519 with parameters (RFC 8410 requires them absent)")
		}
		if len(sig) != ed25519.SignatureSize || !ed25519.Verify(key, octets, sig) {
			return fmt.Errorf("%w: Ed25519 signature mismatch", ErrAuthenticationFailed)
		}
		return nil
	case oid.Equal(oidSHA1WithRSA), oid.Equal(oidECDSAWithSHA1):
		return fmt.Errorf("ike: verify AUTH: %v uses SHA-1: %w", oid, ErrWeakSignature)
	}
	return fmt.Errorf("ike: verify AUTH: unsupported signature algorithm %v", oid)
}

func mismatchedKey(oid asn1.ObjectIdentifier, pub crypto.PublicKey) error {
	return fmt.Errorf("ike: verify AUTH: signature algorithm %v does not fit the peer's %s key", oid, keyTypeName(pub))
}

func keyTypeName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "ECDSA " + curveName(k.Curve)
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// parsePSSParameters decodes RSASSA-PSS-params and returns the hash and
// salt length. It accepts SHA-256, SHA-384 and SHA-512 with MGF1 over the
// same hash and the standard trailer field.
func parsePSSParameters(der []byte) (crypto.Hash, int, error) {
	if len(der) == 0 {
		return 0, 0, errors.New("parameters absent")
	}
	var params pssParameters
	rest, err := asn1.Unmarshal(der, &params)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed parameters: %w", err)
	}
	if len(rest) != 0 {
		return 0, 0, errors.New("malformed parameters: trailing data")
	}
	h, err := digestOID(params.Hash)
	if err != nil {
		return 0, 0, err
	}
	if len(params.MGF.Algorithm) == 0 {
		return 0, 0, fmt.Errorf("default MGF1 with SHA-1: %w", ErrWeakSignature)
	}
	if !params.MGF.Algorithm.Equal(oidMGF1) {
		return 0, 0, fmt.Errorf("unsupported mask generation function %v", params.MGF.Algorithm)
	}
	var mgfHash pkix.AlgorithmIdentifier
	rest, err = asn1.Unmarshal(params.MGF.Parameters.FullBytes, &mgfHash)
	if err != nil || len(rest) != 0 {
		return 0, 0, errors.New("malformed MGF1 hash algorithm")
	}
	mh, err := digestOID(mgfHash)
	if err != nil {
		return 0, 0, fmt.Errorf("MGF1: %w", err)
	}
	if mh != h {
		return 0, 0, fmt.Errorf("MGF1 hash %v differs from the message hash %v", mh, h)
	}
	if params.SaltLength < 0 || params.SaltLength > 1024 {
		return 0, 0, fmt.Errorf("salt length %d out of range", params.SaltLength)
	}
	if params.TrailerField != 1 {
		return 0, 0, fmt.Errorf("trailer field %d, want 1", params.TrailerField)
	}
	return h, params.SaltLength, nil
}

func digestOID(algID pkix.AlgorithmIdentifier) (crypto.Hash, error) {
	if !paramsAbsentOrNULL(algID) {
		return 0, fmt.Errorf("hash algorithm %v with unexpected parameters", algID.Algorithm)
	}
	switch {
	case len(algID.Algorithm) == 0, algID.Algorithm.Equal(oidDigestSHA1):
		return 0, fmt.Errorf("SHA-1 hash: %w", ErrWeakSignature)
	case algID.Algorithm.Equal(oidDigestSHA256):
		return crypto.SHA256, nil
	case algID.Algorithm.Equal(oidDigestSHA384):
		return crypto.SHA384, nil
	case algID.Algorithm.Equal(oidDigestSHA512):
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("unsupported hash algorithm %v", algID.Algorithm)
}
