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
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

func TestSignedOctets(t *testing.T) {
	msg := bytes.Repeat([]byte{0x11}, 10)
	nonce := bytes.Repeat([]byte{0x22}, 8)
	sk := bytes.Repeat([]byte{0x33}, 32)
	body := mustParseIdentity(t, "@moon.strongswan.org").PayloadBody()
	// HMAC-SHA256(SK, 02000000 | "moon.strongswan.org"), computed with
	// Python's hmac module.
	macedID := identityTestHex(t, "49e0900bc2b4c1052b45ff193da36495b61b996754a3cf9f495673a010eec7b0")
	want := append(append(append([]byte{}, msg...), nonce...), macedID...)

	for name, f := range map[string]func(func(key, data []byte) []byte, []byte, []byte, []byte, []byte) []byte{
		"initiator": initiatorSignedOctets,
		"responder": responderSignedOctets,
	} {
		t.Run(name, func(t *testing.T) {
			if got := f(hmacSHA256, msg, nonce, sk, body); !bytes.Equal(got, want) {
				t.Fatalf("signed octets = %x, want %x", got, want)
			}
		})
	}
}

func TestPSKAuth(t *testing.T) {
	secret := []byte("mifsec test secret")
	octets := make([]byte, 64)
	for i := range octets {
		octets[i] = byte(i)
	}
	// prf(prf(secret, "Key Pad for IKEv2"), octets) with HMAC-SHA256,
	// computed with Python's hmac module.
	want := identityTestHex(t, "fb66f1578d7c58994ba509c2e9a8c5d0c349304fb71e9dc8c99f046b6172bfa8")
	got := pSKAuth(hmacSHA256, secret, octets)
	if !bytes.Equal(got, want) {
		t.Fatalf("pSKAuth = %x, want %x", got, want)
	}
	// And the same with Go's HMAC written out independently.
	inner := hmac.New(sha256.New, secret)
	inner.Write([]byte("Key Pad for IKEv2"))
	outer := hmac.New(sha256.New, inner.Sum(nil))
	outer.Write(octets)
	if !bytes.Equal(got, outer.Sum(nil)) {
		t.Fatal("pSKAuth differs from an independent HMAC-SHA256 computation")
	}

	tests := []struct {
		name     string
		secret   []byte
		octets   []byte
		auth     []byte
		wantFail bool
	}{
		{"good", secret, octets, want, false},
		{"wrong secret", []byte("mifsec test secreT"), octets, want, true},
		{"wrong octets", secret, append([]byte{1}, octets[1:]...), want, true},
		{"truncated AUTH", secret, octets, want[:16], true},
		{"empty AUTH", secret, octets, nil, true},
		{"empty secret", nil, octets, want, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyPSKAuth(hmacSHA256, tt.secret, tt.octets, tt.auth)
			if (err != nil) != tt.wantFail {
				t.Fatalf("verifyPSKAuth = %v, want failure %v", err, tt.wantFail)
			}
			if err != nil && tt.secret != nil && !errors.Is(err, ErrAuthenticationFailed) {
				t.Fatalf("error %v is not ErrAuthenticationFailed", err)
			}
		})
	}
}

func TestSignatureHashAlgorithmsNotifyData(t *testing.T) {
	data := SignatureHashAlgorithmsNotifyData()
	if want := identityTestHex(t, "0002000300040005"); !bytes.Equal(data, want) {
		t.Fatalf("notify data = %x, want %x", data, want)
	}
	hashes, err := ParseSignatureHashAlgorithms(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(hashes) != 4 || hashes[0] != wire.HashSHA256 || hashes[3] != wire.HashIdentity {
		t.Fatalf("parsed %v", hashes)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 2, 0}} {
		if _, err := ParseSignatureHashAlgorithms(bad); err == nil {
			t.Fatalf("ParseSignatureHashAlgorithms(%x) succeeded", bad)
		}
	}
}

// rfcHex decodes hex dumps written as in RFC 7427 Appendix A.
func rfcHex(t *testing.T, s string) []byte {
	t.Helper()
	return identityTestHex(t, strings.Join(strings.Fields(s), ""))
}

func TestAlgorithmIdentifiersMatchRFC7427(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string // as printed in RFC 7427 Appendix A / RFC 8410
	}{
		{"A.1.2 sha256WithRSAEncryption", algIDSHA256WithRSA, "300d 0609 2a86 4886 f70d 0101 0b05 00"},
		{"A.1.3 sha384WithRSAEncryption", algIDSHA384WithRSA, "300d 0609 2a86 4886 f70d 0101 0c05 00"},
		{"A.1.4 sha512WithRSAEncryption", algIDSHA512WithRSA, "300d 0609 2a86 4886 f70d 0101 0d05 00"},
		{"A.3.2 ecdsa-with-sha256", algIDECDSAWithSHA256, "300a 0608 2a86 48ce 3d04 0302"},
		{"A.3.3 ecdsa-with-sha384", algIDECDSAWithSHA384, "300a 0608 2a86 48ce 3d04 0303"},
		{"A.3.4 ecdsa-with-sha512", algIDECDSAWithSHA512, "300a 0608 2a86 48ce 3d04 0304"},
		{"A.4.3 RSASSA-PSS with SHA-256", algIDRSAPSSSHA256, `
			3046 0609 2a86 4886 f70d 0101 0a30 39a0
			0f30 0d06 0960 8648 0165 0304 0201 0500
			a11c 301a 0609 2a86 4886 f70d 0101 0830
			0d06 0960 8648 0165 0304 0201 0500 a203
			0201 20a3 0302 0101`},
		{"RFC 8410 id-Ed25519", algIDEd25519, "3005 0603 2b65 70"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if want := rfcHex(t, tt.want); !bytes.Equal(tt.got, want) {
				t.Fatalf("blob = %x, want %x", tt.got, want)
			}
		})
	}
}

// TestAlgorithmIdentifiersEncodeTheirOIDs rebuilds the blobs with
// encoding/asn1 from their object identifiers.
func TestAlgorithmIdentifiersEncodeTheirOIDs(t *testing.T) {
	null := asn1.RawValue{FullBytes: []byte{0x05, 0x00}}
	withNull := func(oid asn1.ObjectIdentifier) pkix.AlgorithmIdentifier {
		return pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: null}
	}
	type pssWithTrailer struct {
		Hash         pkix.AlgorithmIdentifier `asn1:"explicit,tag:0"`
		MGF          pkix.AlgorithmIdentifier `asn1:"explicit,tag:1"`
		SaltLength   int                      `asn1:"explicit,tag:2"`
		TrailerField int                      `asn1:"explicit,tag:3"`
	}
	sha256AlgID, err := asn1.Marshal(withNull(oidDigestSHA256))
	if err != nil {
		t.Fatal(err)
	}
	pssParams, err := asn1.Marshal(pssWithTrailer{
		Hash:         withNull(oidDigestSHA256),
		MGF:          pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: sha256AlgID}},
		SaltLength:   32,
		TrailerField: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		algID pkix.AlgorithmIdentifier
		blob  []byte
	}{
		{"sha256WithRSA", withNull(oidSHA256WithRSA), algIDSHA256WithRSA},
		{"sha384WithRSA", withNull(oidSHA384WithRSA), algIDSHA384WithRSA},
		{"sha512WithRSA", withNull(oidSHA512WithRSA), algIDSHA512WithRSA},
		{"ecdsa-with-SHA256", pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}, algIDECDSAWithSHA256},
		{"ecdsa-with-SHA384", pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA384}, algIDECDSAWithSHA384},
		{"ecdsa-with-SHA512", pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA512}, algIDECDSAWithSHA512},
		{"RSASSA-PSS", pkix.AlgorithmIdentifier{Algorithm: oidRSASSAPSS, Parameters: asn1.RawValue{FullBytes: pssParams}}, algIDRSAPSSSHA256},
		{"Ed25519", pkix.AlgorithmIdentifier{Algorithm: oidEd25519}, algIDEd25519},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der, err := asn1.Marshal(tt.algID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(der, tt.blob) {
				t.Fatalf("encoded %x, blob %x", der, tt.blob)
			}
		})
	}
}

var (
	testRSAKeyOnce sync.Once
	testRSAKeys    [2]*rsa.PrivateKey
	testRSAKeyErr  error
)

// testRSAKeys returns two RSA 3072 keys, generated once per test binary.
func rsaTestKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	testRSAKeyOnce.Do(func() {
		for i := range testRSAKeys {
			testRSAKeys[i], testRSAKeyErr = rsa.GenerateKey(rand.Reader, 3072)
			if testRSAKeyErr != nil {
				return
			}
		}
	})
	if testRSAKeyErr != nil {
		t.Fatal(testRSAKeyErr)
	}
	return testRSAKeys[0], testRSAKeys[1]
}

func ecdsaKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ed25519Key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type signCase struct {
	name       string
	key        crypto.Signer
	otherKey   crypto.Signer // same type, different key
	peerHashes []uint16
	opts       SignOptions
	wantMethod wire.AuthMethod
	wantAlgID  []byte // for method 14
	wantLen    int    // for classic methods
}

func signCases(t *testing.T) []signCase {
	rsa1, rsa2 := rsaTestKeys(t)
	p256, p256b := ecdsaKey(t, elliptic.P256()), ecdsaKey(t, elliptic.P256())
	p384, p384b := ecdsaKey(t, elliptic.P384()), ecdsaKey(t, elliptic.P384())
	p521, p521b := ecdsaKey(t, elliptic.P521()), ecdsaKey(t, elliptic.P521())
	ed, edb := ed25519Key(t), ed25519Key(t)
	all := []uint16{wire.HashSHA256, wire.HashSHA384, wire.HashSHA512, wire.HashIdentity}
	return []signCase{
		{"RSA PKCS1 SHA-256", rsa1, rsa2, all, SignOptions{}, wire.AuthDigitalSignature, algIDSHA256WithRSA, 0},
		{"RSA PKCS1 SHA-384", rsa1, rsa2, []uint16{wire.HashSHA384}, SignOptions{}, wire.AuthDigitalSignature, algIDSHA384WithRSA, 0},
		{"RSA PKCS1 SHA-512", rsa1, rsa2, []uint16{wire.HashIdentity, wire.HashSHA512}, SignOptions{}, wire.AuthDigitalSignature, algIDSHA512WithRSA, 0},
		{"RSA without peer list", rsa1, rsa2, nil, SignOptions{}, wire.AuthDigitalSignature, algIDSHA256WithRSA, 0},
		{"RSA PSS SHA-256", rsa1, rsa2, all, SignOptions{RSAPSS: true}, wire.AuthDigitalSignature, algIDRSAPSSSHA256, 0},
		{"P-256 SHA-256", p256, p256b, all, SignOptions{}, wire.AuthDigitalSignature, algIDECDSAWithSHA256, 0},
		{"P-256 SHA-384", p256, p256b, []uint16{wire.HashSHA384, wire.HashSHA512}, SignOptions{}, wire.AuthDigitalSignature, algIDECDSAWithSHA384, 0},
		{"P-256 SHA-512", p256, p256b, []uint16{wire.HashSHA512}, SignOptions{}, wire.AuthDigitalSignature, algIDECDSAWithSHA512, 0},
		{"P-384 SHA-384", p384, p384b, all, SignOptions{}, wire.AuthDigitalSignature, algIDECDSAWithSHA384, 0},
		{"P-384 SHA-256", p384, p384b, []uint16{wire.HashSHA256}, SignOptions{}, wire.AuthDigitalSignature, algIDECDSAWithSHA256, 0},
		{"P-521 SHA-512", p521, p521b, all, SignOptions{}, wire.AuthDigitalSignature, algIDECDSAWithSHA512, 0},
		{"P-256 classic", p256, p256b, nil, SignOptions{}, wire.AuthECDSA256, nil, 64},
		{"P-256 classic, no common hash", p256, p256b, []uint16{wire.HashIdentity}, SignOptions{}, wire.AuthECDSA256, nil, 64},
		{"P-384 classic", p384, p384b, nil, SignOptions{}, wire.AuthECDSA384, nil, 96},
		{"P-521 classic", p521, p521b, nil, SignOptions{}, wire.AuthECDSA521, nil, 132},
		{"Ed25519", ed, edb, all, SignOptions{}, wire.AuthDigitalSignature, algIDEd25519, 0},
		{"Ed25519 without peer list", ed, edb, nil, SignOptions{}, wire.AuthDigitalSignature, algIDEd25519, 0},
	}
}

func TestSignVerify(t *testing.T) {
	octets := []byte("RealMessage1 | NonceRData | MACedIDForI")
	for _, tc := range signCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			method, data, err := signWithOptions(tc.key, octets, tc.peerHashes, tc.opts)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if method != tc.wantMethod {
				t.Fatalf("method = %d, want %d", method, tc.wantMethod)
			}
			if method == wire.AuthDigitalSignature {
				if int(data[0]) != len(tc.wantAlgID) || !bytes.Equal(data[1:1+len(tc.wantAlgID)], tc.wantAlgID) {
					t.Fatalf("AlgorithmIdentifier = %x, want %x", data[1:1+int(data[0])], tc.wantAlgID)
				}
			} else if len(data) != tc.wantLen {
				t.Fatalf("classic signature of %d bytes, want %d", len(data), tc.wantLen)
			}
			pub := tc.key.Public()
			if err := Verify(pub, method, data, octets); err != nil {
				t.Fatalf("Verify: %v", err)
			}

			tampered := append([]byte{}, octets...)
			tampered[len(tampered)-1] ^= 1
			if err := Verify(pub, method, data, tampered); !errors.Is(err, ErrAuthenticationFailed) {
				t.Fatalf("Verify of tampered octets = %v, want ErrAuthenticationFailed", err)
			}
			badSig := append([]byte{}, data...)
			badSig[len(badSig)-1] ^= 0x40
			if err := Verify(pub, method, badSig, octets); err == nil {
				t.Fatal("Verify accepted a tampered signature")
			}
			if err := Verify(tc.otherKey.Public(), method, data, octets); !errors.Is(err, ErrAuthenticationFailed) {
				t.Fatalf("Verify with the wrong key = %v, want ErrAuthenticationFailed", err)
			}
			// Truncations must fail cleanly.
			for n := 0; n < len(data); n += 1 + len(data)/17 {
				if err := Verify(pub, method, data[:n], octets); err == nil {
					t.Fatalf("Verify accepted data truncated to %d bytes", n)
				}
			}
		})
	}
}

func TestSignNegotiationErrors(t *testing.T) {
	rsaKey, _ := rsaTestKeys(t)
	octets := []byte("octets")
	tests := []struct {
		name       string
		key        crypto.Signer
		peerHashes []uint16
		opts       SignOptions
	}{
		{"RSA, peer only Identity", rsaKey, []uint16{wire.HashIdentity}, SignOptions{}},
		{"RSA PSS, peer only SHA-512", rsaKey, []uint16{wire.HashSHA512}, SignOptions{RSAPSS: true}},
		{"Ed25519, peer without Identity", ed25519Key(t), []uint16{wire.HashSHA256}, SignOptions{}},
		{"P-224", ecdsaKey(t, elliptic.P224()), nil, SignOptions{}},
		{"nil key", nil, nil, SignOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := signWithOptions(tt.key, octets, tt.peerHashes, tt.opts); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestVerifyRefusals(t *testing.T) {
	rsaKey, _ := rsaTestKeys(t)
	p256 := ecdsaKey(t, elliptic.P256())
	p384 := ecdsaKey(t, elliptic.P384())
	octets := []byte("octets")
	_, ecdsaData, err := Sign(p256, octets, []uint16{wire.HashSHA256})
	if err != nil {
		t.Fatal(err)
	}
	_, classic, err := Sign(p256, octets, nil)
	if err != nil {
		t.Fatal(err)
	}
	sha1WithRSA := append([]byte{15}, rfcHex(t, "300d 0609 2a86 4886 f70d 0101 0505 00")...)
	sha1WithRSA = append(sha1WithRSA, make([]byte, 384)...)
	unknownAlg := append([]byte{7}, rfcHex(t, "3005 0603 2b65 71")...) // Ed448
	unknownAlg = append(unknownAlg, make([]byte, 114)...)

	tests := []struct {
		name     string
		pub      crypto.PublicKey
		method   wire.AuthMethod
		data     []byte
		wantWeak bool
	}{
		{"method 1 RSA SHA-1", &rsaKey.PublicKey, wire.AuthRSA, make([]byte, 384), true},
		{"sha1WithRSAEncryption", &rsaKey.PublicKey, wire.AuthDigitalSignature, sha1WithRSA, true},
		{"ECDSA algorithm with RSA key", &rsaKey.PublicKey, wire.AuthDigitalSignature, ecdsaData, false},
		{"classic method 9 with P-384 key", &p384.PublicKey, wire.AuthECDSA256, classic, false},
		{"classic method 10 with P-256 key", &p256.PublicKey, wire.AuthECDSA384, classic, false},
		{"classic with RSA key", &rsaKey.PublicKey, wire.AuthECDSA256, classic, false},
		{"PSK method", &p256.PublicKey, wire.AuthPSK, classic, false},
		{"unknown method", &p256.PublicKey, 200, classic, false},
		{"unknown algorithm", ed25519.PublicKey(make([]byte, 32)), wire.AuthDigitalSignature, unknownAlg, false},
		{"empty data", &p256.PublicKey, wire.AuthDigitalSignature, nil, false},
		{"zero-length AlgorithmIdentifier", &p256.PublicKey, wire.AuthDigitalSignature, []byte{0, 1, 2}, false},
		{"AlgorithmIdentifier past the end", &p256.PublicKey, wire.AuthDigitalSignature, []byte{200, 0x30}, false},
		{"garbage AlgorithmIdentifier", &p256.PublicKey, wire.AuthDigitalSignature, []byte{2, 0xff, 0xff, 1}, false},
		{"AlgorithmIdentifier with trailing bytes", &p256.PublicKey, wire.AuthDigitalSignature, append([]byte{13}, append(append([]byte{}, algIDECDSAWithSHA256...), 0, 1, 2)...), false},
		{"nil key", nil, wire.AuthDigitalSignature, ecdsaData, false},
		{"unsupported key type", "not a key", wire.AuthDigitalSignature, ecdsaData, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.pub, tt.method, tt.data, octets)
			if err == nil {
				t.Fatal("Verify succeeded")
			}
			if tt.wantWeak && !errors.Is(err, ErrWeakSignature) {
				t.Fatalf("error %v is not ErrWeakSignature", err)
			}
		})
	}
}

func TestVerifySmallRSAKeyRefused(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Sign(small, []byte("x"), nil); !errors.Is(err, ErrWeakSignature) {
		t.Fatalf("Sign with RSA 1024 = %v, want ErrWeakSignature", err)
	}
	if err := Verify(&small.PublicKey, wire.AuthDigitalSignature, []byte{1, 2, 3}, []byte("x")); !errors.Is(err, ErrWeakSignature) {
		t.Fatalf("Verify with RSA 1024 = %v, want ErrWeakSignature", err)
	}
}

// TestVerifyPSSVariants accepts RSASSA-PSS parameters as strongSwan
// encodes them (no trailerField) and with other salt lengths and hashes.
func TestVerifyPSSVariants(t *testing.T) {
	key, _ := rsaTestKeys(t)
	octets := []byte("octets signed with PSS")
	sha := func(oid asn1.ObjectIdentifier) pkix.AlgorithmIdentifier {
		return pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.RawValue{FullBytes: []byte{5, 0}}}
	}
	mgf := func(oid asn1.ObjectIdentifier) pkix.AlgorithmIdentifier {
		inner, err := asn1.Marshal(sha(oid))
		if err != nil {
			t.Fatal(err)
		}
		return pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: inner}}
	}
	tests := []struct {
		name    string
		params  pssParameters
		hash    crypto.Hash
		salt    int
		wantErr bool
	}{
		{"SHA-256 salt 32 without trailer", pssParameters{Hash: sha(oidDigestSHA256), MGF: mgf(oidDigestSHA256), SaltLength: 32, TrailerField: 1}, crypto.SHA256, 32, false},
		{"SHA-384 salt 48", pssParameters{Hash: sha(oidDigestSHA384), MGF: mgf(oidDigestSHA384), SaltLength: 48, TrailerField: 1}, crypto.SHA384, 48, false},
		{"SHA-512 salt 64", pssParameters{Hash: sha(oidDigestSHA512), MGF: mgf(oidDigestSHA512), SaltLength: 64, TrailerField: 1}, crypto.SHA512, 64, false},
		{"default SHA-1", pssParameters{SaltLength: 20, TrailerField: 1}, crypto.SHA256, 20, true},
		{"MGF hash differs", pssParameters{Hash: sha(oidDigestSHA256), MGF: mgf(oidDigestSHA384), SaltLength: 32, TrailerField: 1}, crypto.SHA256, 32, true},
		{"wrong salt length", pssParameters{Hash: sha(oidDigestSHA256), MGF: mgf(oidDigestSHA256), SaltLength: 20, TrailerField: 1}, crypto.SHA256, 32, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params, err := asn1.Marshal(tt.params)
			if err != nil {
				t.Fatal(err)
			}
			algID, err := asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: oidRSASSAPSS, Parameters: asn1.RawValue{FullBytes: params}})
			if err != nil {
				t.Fatal(err)
			}
			d := tt.hash.New()
			d.Write(octets)
			sig, err := rsa.SignPSS(rand.Reader, key, tt.hash, d.Sum(nil), &rsa.PSSOptions{SaltLength: tt.salt, Hash: tt.hash})
			if err != nil {
				t.Fatal(err)
			}
			data := append(append([]byte{byte(len(algID))}, algID...), sig...)
			err = Verify(&key.PublicKey, wire.AuthDigitalSignature, data, octets)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestSecretsNeverInText checks that errors and String forms never carry
// shared secrets or private key material.
func TestSecretsNeverInText(t *testing.T) {
	secret := []byte("s3cr3t-shared-key-do-not-print")
	octets := []byte("octets")
	var texts []string
	if err := verifyPSKAuth(hmacSHA256, secret, octets, []byte("wrong")); err != nil {
		texts = append(texts, err.Error())
	}
	if err := verifyPSKAuth(hmacSHA256, secret, octets, nil); err != nil {
		texts = append(texts, err.Error())
	}
	for _, text := range texts {
		for _, leak := range []string{string(secret), hex.EncodeToString(secret)} {
			if strings.Contains(text, leak) {
				t.Fatalf("error %q contains the shared secret", text)
			}
		}
	}

	key := ecdsaKey(t, elliptic.P256())
	_, data, err := Sign(key, octets, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := ecdsaKey(t, elliptic.P256())
	dHex := hex.EncodeToString(key.D.Bytes())
	dDec := key.D.String()
	for _, err := range []error{
		Verify(&other.PublicKey, wire.AuthECDSA256, data, octets),
		Verify(&key.PublicKey, wire.AuthECDSA384, data, octets),
		Verify(&key.PublicKey, wire.AuthDigitalSignature, data, octets),
	} {
		if err == nil {
			t.Fatal("expected an error")
		}
		if strings.Contains(err.Error(), dHex) || strings.Contains(err.Error(), dDec) {
			t.Fatalf("error %q contains the private key", err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	octets := []byte("octets")
	for _, key := range []crypto.Signer{p256, edKey} {
		for _, hashes := range [][]uint16{nil, {wire.HashSHA256}, {wire.HashIdentity}} {
			if method, data, err := Sign(key, octets, hashes); err == nil {
				f.Add(uint8(method), data)
			}
		}
	}
	f.Add(uint8(wire.AuthDigitalSignature), append([]byte{byte(len(algIDRSAPSSSHA256))}, algIDRSAPSSSHA256...))
	f.Fuzz(func(t *testing.T, method uint8, data []byte) {
		// Must not panic, whatever the input.
		for _, pub := range []crypto.PublicKey{&p256.PublicKey, edKey.Public()} {
			_ = Verify(pub, wire.AuthMethod(method), data, octets)
		}
		if len(data) > 0 && data[0] > 0 && int(data[0]) < len(data) {
			_, _, _ = splitDigitalSignature(data)
			var algID pkix.AlgorithmIdentifier
			if _, err := asn1.Unmarshal(data[1:1+int(data[0])], &algID); err == nil && algID.Algorithm.Equal(oidRSASSAPSS) {
				_, _, _ = parsePSSParameters(algID.Parameters.FullBytes)
			}
		}
	})
}
