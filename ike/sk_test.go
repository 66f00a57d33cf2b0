package ike

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

// allIKESuites are the IKE SA suites the SK payload supports.
func allIKESuites() []Suite {
	var out []Suite
	for _, e := range encryptionAlgs {
		s := Suite{Protocol: wire.ProtoIKE, Encryption: e.id, KeyLength: e.keyLength, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
		if e.aead {
			out = append(out, s)
			continue
		}
		for _, i := range integrityAlgs {
			s.Integrity = i.id
			out = append(out, s)
		}
	}
	return out
}

// TestChaCha20Poly1305Vector reproduces the IKEv2 message of RFC 7634
// Appendix B with the vector's key, salt and IV.
func TestChaCha20Poly1305Vector(t *testing.T) {
	raw, err := os.ReadFile("wire/testdata/ikev2-message-chapoly.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct {
			Name      string `json:"name"`
			Key       string `json:"key_hex"`
			Salt      string `json:"salt_hex"`
			IV        string `json:"iv_hex"`
			AAD       string `json:"aad_hex"`
			Notify    string `json:"notify_payload_hex"`
			Encrypted string `json:"encrypted_payload_hex"`
			Message   string `json:"message_hex"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vector")
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			s := Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_CHACHA20_POLY1305, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
			c, err := newCrypter(s, append(unhexKDF(t, v.Key), unhexKDF(t, v.Salt)...), nil)
			if err != nil {
				t.Fatal(err)
			}
			c.(*aeadCrypter).ivMask = binary.BigEndian.Uint64(unhexKDF(t, v.IV))
			prefix, inner := unhexKDF(t, v.AAD), unhexKDF(t, v.Notify)
			body := make([]byte, c.BodyLen(len(inner)))
			if err := c.Seal(body, prefix, inner); err != nil {
				t.Fatal(err)
			}
			if want := unhexKDF(t, v.Encrypted)[4:]; !bytes.Equal(body, want) {
				t.Fatalf("SK body = %x, want %x", body, want)
			}
			if msg := append(append([]byte(nil), prefix...), body...); !bytes.Equal(msg, unhexKDF(t, v.Message)) {
				t.Errorf("message = %x, want %x", msg, unhexKDF(t, v.Message))
			}
			got, err := c.Open(prefix, body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, inner) {
				t.Errorf("Open = %x, want %x", got, inner)
			}
		})
	}
}

func testKeys(t *testing.T, s Suite) *Keys {
	t.Helper()
	k, err := deriveKeys(s, []byte("g^ir"), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), 0x0102030405060708, 0x1112131415161718)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSKRoundTrip(t *testing.T) {
	for _, s := range allIKESuites() {
		t.Run(s.String(), func(t *testing.T) {
			k := testKeys(t, s)
			iOut, iIn, err := k.Crypters(true)
			if err != nil {
				t.Fatal(err)
			}
			rOut, rIn, err := k.Crypters(false)
			if err != nil {
				t.Fatal(err)
			}
			prefix := bytes.Repeat([]byte{0xab}, 32)
			for n := 0; n <= 40; n++ {
				inner := bytes.Repeat([]byte{byte(n)}, n)
				for _, pair := range []struct {
					name     string
					out, in  wire.Crypter
					wrongOut wire.Crypter
				}{{"i→r", iOut, rIn, rOut}, {"r→i", rOut, iIn, iOut}} {
					body := make([]byte, pair.out.BodyLen(n))
					if err := pair.out.Seal(body, prefix, inner); err != nil {
						t.Fatal(err)
					}
					if s.IsAEAD() && len(body) != 8+n+1+16 {
						t.Errorf("AEAD body of %d bytes for %d inner bytes", len(body), n)
					}
					got, err := pair.in.Open(prefix, append([]byte(nil), body...))
					if err != nil {
						t.Fatalf("%s, %d bytes: %v", pair.name, n, err)
					}
					if !bytes.Equal(got, inner) {
						t.Fatalf("%s, %d bytes: Open = %x", pair.name, n, got)
					}
					// A direction's own keys do not open what it sent.
					if _, err := pair.wrongOut.Open(prefix, append([]byte(nil), body...)); !errors.Is(err, ErrAuthentication) {
						t.Fatalf("%s: opened with the other direction's keys: %v", pair.name, err)
					}
				}
			}
			// An AEAD Crypter keeps the key, not an expanded cipher (some
			// 750 bytes each, two per client of a gateway): once the keys
			// are wiped, what they sealed no longer opens, so no expanded
			// copy survives the wipe.
			body := make([]byte, iOut.BodyLen(5))
			if err := iOut.Seal(body, prefix, []byte("wiped")); err != nil {
				t.Fatal(err)
			}
			k.Wipe()
			if got, err := rIn.Open(prefix, body); s.IsAEAD() && !errors.Is(err, ErrAuthentication) {
				t.Fatalf("opened with wiped keys: %q, %v", got, err)
			}
		})
	}
}

func TestSKTamperingDetected(t *testing.T) {
	for _, s := range allIKESuites() {
		t.Run(s.String(), func(t *testing.T) {
			k := testKeys(t, s)
			out, _, err := k.Crypters(true)
			if err != nil {
				t.Fatal(err)
			}
			_, in, err := k.Crypters(false)
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("IKE header and SK payload header")
			inner := []byte("inner payloads")
			body := make([]byte, out.BodyLen(len(inner)))
			if err := out.Seal(body, prefix, inner); err != nil {
				t.Fatal(err)
			}
			msg := append(append([]byte(nil), prefix...), body...)
			for bit := 0; bit < 8*len(msg); bit++ {
				m := append([]byte(nil), msg...)
				m[bit/8] ^= 1 << (bit % 8)
				if got, err := in.Open(m[:len(prefix)], m[len(prefix):]); err == nil {
					t.Fatalf("flipping bit %d went unnoticed: %x", bit, got)
				}
			}
			for _, cut := range []int{1, len(body) - 1, len(body)} {
				if _, err := in.Open(prefix, append([]byte(nil), body[:len(body)-cut]...)); err == nil {
					t.Errorf("body cut by %d bytes opened", cut)
				}
			}
			if _, err := in.Open(prefix, append(append([]byte(nil), body...), 0)); err == nil {
				t.Error("body with an extra byte opened")
			}
			// Other keys of the same suite fail.
			other, err := deriveKeys(s, []byte("another g^ir"), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), 1, 2)
			if err != nil {
				t.Fatal(err)
			}
			_, wrong, err := other.Crypters(false)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := wrong.Open(prefix, append([]byte(nil), body...)); !errors.Is(err, ErrAuthentication) {
				t.Errorf("wrong key: %v", err)
			}
		})
	}
}

func TestSKIVsNeverRepeat(t *testing.T) {
	for _, s := range allIKESuites() {
		t.Run(s.String(), func(t *testing.T) {
			out, _, err := testKeys(t, s).Crypters(true)
			if err != nil {
				t.Fatal(err)
			}
			ivLen := 16
			if s.IsAEAD() {
				ivLen = 8
			}
			const goroutines, each = 4, 64
			var mu sync.Mutex
			seen := map[string]bool{}
			var wg sync.WaitGroup
			for range goroutines {
				wg.Go(func() {
					for range each {
						body := make([]byte, out.BodyLen(3))
						if err := out.Seal(body, nil, []byte("abc")); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						seen[string(body[:ivLen])] = true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(seen) != goroutines*each {
				t.Errorf("%d distinct IVs in %d messages", len(seen), goroutines*each)
			}
		})
	}
}

func TestSKIVExhaustion(t *testing.T) {
	out, _, err := testKeys(t, Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_ECP_256}).Crypters(true)
	if err != nil {
		t.Fatal(err)
	}
	c := out.(*aeadCrypter)
	c.ivUsed.Store(^uint64(0) - 1)
	body := make([]byte, c.BodyLen(1))
	if err := c.Seal(body, nil, []byte{1}); err != nil {
		t.Fatalf("last IV: %v", err)
	}
	if err := c.Seal(body, nil, []byte{1}); err == nil {
		t.Fatal("sealed after the IVs ran out")
	}
}

// TestSKAcceptsAnyPadding builds bodies whose padding is longer than
// needed and not zero, as RFC 7296 §3.14 allows a sender.
func TestSKAcceptsAnyPadding(t *testing.T) {
	inner := []byte("inner payloads!")
	prefix := []byte("prefix")
	padding := []byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 1}

	t.Run("aes128gcm16", func(t *testing.T) {
		key := bytes.Repeat([]byte{3}, 16+4)
		s := Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
		c, err := newCrypter(s, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := aes.NewCipher(key[:16])
		gcm, _ := cipher.NewGCM(block)
		iv := []byte{0, 0, 0, 0, 0, 0, 0, 42}
		plain := append(append(append([]byte(nil), inner...), padding...), byte(len(padding)))
		body := gcm.Seal(append([]byte(nil), iv...), append(key[16:20:20], iv...), plain, prefix)
		got, err := c.Open(prefix, body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, inner) {
			t.Errorf("Open = %q", got)
		}
		plain[len(plain)-1] = byte(len(plain))
		body = gcm.Seal(append([]byte(nil), iv...), append(key[16:20:20], iv...), plain, prefix)
		if _, err := c.Open(prefix, body); err == nil {
			t.Error("pad length beyond the plaintext accepted")
		}
	})

	t.Run("aes128-sha256", func(t *testing.T) {
		encKey, integKey := bytes.Repeat([]byte{4}, 16), bytes.Repeat([]byte{5}, 32)
		s := Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_CBC, KeyLength: 128, Integrity: wire.AUTH_HMAC_SHA2_256_128, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
		c, err := newCrypter(s, encKey, integKey)
		if err != nil {
			t.Fatal(err)
		}
		seal := func(plain []byte) []byte {
			block, _ := aes.NewCipher(encKey)
			iv := bytes.Repeat([]byte{6}, 16)
			ct := make([]byte, len(plain))
			cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)
			m := hmac.New(sha256.New, integKey)
			m.Write(prefix)
			m.Write(iv)
			m.Write(ct)
			return append(append(iv, ct...), m.Sum(nil)[:16]...)
		}
		// 15 + 16 + 1 = 32 bytes: two blocks, padding longer than a block.
		plain := append(append(append([]byte(nil), inner...), padding[:16]...), 16)
		got, err := c.Open(prefix, seal(plain))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, inner) {
			t.Errorf("Open = %q", got)
		}
		plain[len(plain)-1] = 32
		if _, err := c.Open(prefix, seal(plain)); err == nil {
			t.Error("pad length beyond the plaintext accepted")
		}
	})
}

func TestNewCrypterRejectsBadKeys(t *testing.T) {
	gcm := Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
	cbc := Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_CBC, KeyLength: 256, Integrity: wire.AUTH_HMAC_SHA2_384_192, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
	tests := []struct {
		name   string
		suite  Suite
		enc    int
		integ  int
		wantOK bool
	}{
		{"gcm ok", gcm, 36, 0, true},
		{"gcm without salt", gcm, 32, 0, false},
		{"gcm with integrity key", gcm, 36, 32, false},
		{"cbc ok", cbc, 32, 48, true},
		{"cbc short integrity key", cbc, 32, 32, false},
		{"cbc short key", cbc, 16, 48, false},
		{"unsupported", Suite{Encryption: 3, KeyLength: 0}, 24, 0, false},
		{"cbc unsupported integrity", Suite{Encryption: wire.ENCR_AES_CBC, KeyLength: 128, Integrity: 5}, 16, 16, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newCrypter(tt.suite, make([]byte, tt.enc), make([]byte, tt.integ))
			if (err == nil) != tt.wantOK {
				t.Errorf("error %v, want ok %v", err, tt.wantOK)
			}
		})
	}
	c, err := newCrypter(gcm, make([]byte, 36), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Seal(make([]byte, 10), nil, []byte("abc")); err == nil {
		t.Error("Seal into a body of the wrong length succeeded")
	}
}

// TestForgetAuthKeys: once IKE_AUTH is done an IKE SA keeps SK_d and the
// SK_e/SK_a keys only, in a slice of their own; SK_pi and SK_pr are wiped
// where they were. Its crypters go on working across the change, in both
// directions and with every suite, and an AEAD crypter's IV counter goes
// on where it was (a fresh mask or counter could repeat an IV).
func TestForgetAuthKeys(t *testing.T) {
	for _, s := range allIKESuites() {
		t.Run(s.String(), func(t *testing.T) {
			k := testKeys(t, s)
			i, err := newIKEKeys(k, true)
			if err != nil {
				t.Fatal(err)
			}
			r, err := newIKEKeys(testKeys(t, s), false) // the other side's own copy
			if err != nil {
				t.Fatal(err)
			}
			want := keyLengths(s)
			d, ei, er, ai, ar := bytes.Clone(k.SKd()), bytes.Clone(k.SKei()), bytes.Clone(k.SKer()), bytes.Clone(k.SKai()), bytes.Clone(k.SKar())
			pi, pr := i.SKpi(), i.SKpr()
			if len(pi) != want[keySKpi] || len(pr) != want[keySKpr] || bytes.Equal(pi, make([]byte, len(pi))) {
				t.Fatalf("SK_pi %d bytes, SK_pr %d before; want %d and key material", len(pi), len(pr), want[keySKpi])
			}
			prefix := []byte("IKE header")
			seal := func(c wire.Crypter, inner string) []byte {
				body := make([]byte, c.BodyLen(len(inner)))
				if err := c.Seal(body, prefix, []byte(inner)); err != nil {
					t.Fatal(err)
				}
				return body
			}
			before := seal(i.out, "sealed before")
			i.forgetAuthKeys()
			if !bytes.Equal(pi, make([]byte, len(pi))) || !bytes.Equal(pr, make([]byte, len(pr))) {
				t.Error("SK_pi and SK_pr not wiped where they were")
			}
			if i.SKpi() != nil || i.SKpr() != nil {
				t.Errorf("SK_pi %x, SK_pr %x after forgetAuthKeys; want none", i.SKpi(), i.SKpr())
			}
			if got := len(i.material); got != want[keySKd]+want[keySKai]+want[keySKar]+want[keySKei]+want[keySKer] {
				t.Errorf("%d bytes of keys kept, want SK_d, SK_a and SK_e only", got)
			}
			if !bytes.Equal(i.SKd(), d) || !bytes.Equal(i.SKei(), ei) || !bytes.Equal(i.SKer(), er) || !bytes.Equal(i.SKai(), ai) || !bytes.Equal(i.SKar(), ar) {
				t.Error("the kept keys changed")
			}
			i.forgetAuthKeys() // twice is once
			if len(i.SKd()) != want[keySKd] || len(i.SKer()) != want[keySKer] {
				t.Error("a second forgetAuthKeys cut more")
			}
			if s.IsAEAD() && i.aead[0].ivUsed.Load() != 1 {
				t.Errorf("the IV counter is at %d after one message, want 1", i.aead[0].ivUsed.Load())
			}
			for _, m := range []struct {
				name string
				body []byte
				in   wire.Crypter
				want string
			}{
				{"i→r sealed before", before, r.in, "sealed before"},
				{"i→r sealed after", seal(i.out, "sealed after"), r.in, "sealed after"},
				{"r→i", seal(r.out, "to the initiator"), i.in, "to the initiator"},
			} {
				got, err := m.in.Open(prefix, m.body)
				if err != nil || string(got) != m.want {
					t.Errorf("%s: %q, %v", m.name, got, err)
				}
			}
			r.forgetAuthKeys()
			if got, err := r.in.Open(prefix, seal(i.out, "both forgot")); err != nil || string(got) != "both forgot" {
				t.Errorf("after both forgot: %q, %v", got, err)
			}
		})
	}
}
