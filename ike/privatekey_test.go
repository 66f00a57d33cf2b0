package ike

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"
)

func TestParsePrivateKeyFormats(t *testing.T) {
	rsaKey, _ := rsaTestKeys(t)
	ecKey := ecdsaKey(t, elliptic.P256())
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PrivateKey(rsaKey)
	edPKCS8, err := x509.MarshalPKCS8PrivateKey(ed25519Key(t))
	if err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		name string
		data []byte
	}{
		{"PKCS8 PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{"SEC1 PEM with parameters block", append(
			pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)},
		{"PKCS1 PEM", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: pkcs1})},
		{"Ed25519 PKCS8 PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edPKCS8})},
		{"PKCS8 DER", pkcs8},
		{"SEC1 DER", sec1},
		{"PKCS1 DER", pkcs1},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			k, err := parsePrivateKey(tt.data)
			if err != nil {
				t.Fatalf("parsePrivateKey: %v", err)
			}
			if k.Public() == nil {
				t.Fatal("no public key")
			}
		})
	}
	if k, _ := parsePrivateKey(sec1); !k.(*ecdsa.PrivateKey).Equal(ecKey) {
		t.Fatal("SEC1 key differs")
	}
	if k, _ := parsePrivateKey(pkcs1); !k.(*rsa.PrivateKey).Equal(rsaKey) {
		t.Fatal("PKCS1 key differs")
	}

	corrupted := append([]byte{}, pkcs8...)
	corrupted[len(corrupted)/2] ^= 0xff
	bad := []struct {
		name string
		data []byte
	}{
		{"encrypted PKCS8", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: pkcs8})},
		{"encrypted legacy PEM", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: sec1})},
		{"corrupted PKCS8 PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: corrupted[:len(corrupted)-3]})},
		{"corrupted PKCS1 PEM", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: pkcs1[:100]})},
		{"corrupted SEC1 PEM", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1[:40]})},
		{"certificate only", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})},
		{"garbage", []byte("not a key")},
		{"empty", nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parsePrivateKey(tt.data)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, secret := range [][]byte{pkcs8, sec1, pkcs1, ecKey.D.Bytes()} {
				if leaksKey(err.Error(), secret) {
					t.Fatalf("error %q contains key material", err)
				}
			}
		})
	}
}

// leaksKey reports whether text contains a recognisable piece of secret.
func leaksKey(text string, secret []byte) bool {
	for _, enc := range []string{hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret), string(secret)} {
		if len(enc) >= 16 && strings.Contains(text, enc[len(enc)/2-8:len(enc)/2+8]) {
			return true
		}
	}
	return false
}
