package ike

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

func unhexKDF(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

type kdfVectorFile struct {
	Vectors []struct {
		Name      string `json:"name"`
		PRFID     uint16 `json:"ikev2_prf_transform_id"`
		Function  string `json:"function"`
		Key       string `json:"key_hex"`
		Data      string `json:"data_hex"`
		Seed      string `json:"seed_hex"`
		Output    string `json:"output_hex"`
		OutputLen int    `json:"output_len"`
	} `json:"vectors"`
	Chains []struct {
		Name     string `json:"name"`
		PRF      string `json:"prf"`
		Nonces   string `json:"nonces_hex"`
		GIR      string `json:"g_ir_hex"`
		SPIi     string `json:"spi_i_hex"`
		SPIr     string `json:"spi_r_hex"`
		SKEYSEED string `json:"skeyseed_hex"`
		DKM      string `json:"dkm_hex"`
		DKMLen   int    `json:"dkm_len"`
	} `json:"chains"`
}

func loadKDFVectors(t *testing.T) kdfVectorFile {
	t.Helper()
	raw, err := os.ReadFile("testdata/ikev2-kdf.json")
	if err != nil {
		t.Fatal(err)
	}
	var f kdfVectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 || len(f.Chains) == 0 {
		t.Fatal("no vectors in testdata/ikev2-kdf.json")
	}
	return f
}

// TestPRFVectors checks prf and prf+ against the NIST CAVP IKEv2 vectors
// (SP 800-135) and strongSwan's supplementary prf+ vector.
func TestPRFVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/ikev2-kdf.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors       []json.RawMessage `json:"vectors"`
		Supplementary []json.RawMessage `json:"supplementary"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	all := append(f.Vectors, f.Supplementary...)
	if len(all) != 13 {
		t.Fatalf("%d vectors, want 13", len(all))
	}
	for _, r := range all {
		var v struct {
			Name      string `json:"name"`
			PRFID     uint16 `json:"ikev2_prf_transform_id"`
			Function  string `json:"function"`
			Key       string `json:"key_hex"`
			Data      string `json:"data_hex"`
			Seed      string `json:"seed_hex"`
			Output    string `json:"output_hex"`
			OutputLen int    `json:"output_len"`
		}
		if err := json.Unmarshal(r, &v); err != nil {
			t.Fatal(err)
		}
		t.Run(v.Name, func(t *testing.T) {
			p, err := NewPRF(v.PRFID)
			if err != nil {
				t.Fatal(err)
			}
			want := unhexKDF(t, v.Output)
			if len(want) != v.OutputLen {
				t.Fatalf("vector output has %d bytes, says %d", len(want), v.OutputLen)
			}
			var got []byte
			switch v.Function {
			case "prf":
				got = p.Sum(unhexKDF(t, v.Key), unhexKDF(t, v.Data))
			case "prf+":
				got, err = p.Plus(unhexKDF(t, v.Key), unhexKDF(t, v.Seed), v.OutputLen)
				if err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("unknown function %q", v.Function)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s = %x, want %x", v.Function, got, want)
			}
		})
	}
}

// TestKeyDerivationChains runs the CAVP chains end to end: SKEYSEED from
// g^ir and the nonces, the DKM from SKEYSEED and the SPIs, and checks that
// deriveKeys splits the DKM into the seven keys in RFC 7296 order.
func TestKeyDerivationChains(t *testing.T) {
	prfIDs := map[string]uint16{
		"PRF_HMAC_SHA2_256": wire.PRF_HMAC_SHA2_256,
		"PRF_HMAC_SHA2_384": wire.PRF_HMAC_SHA2_384,
		"PRF_HMAC_SHA2_512": wire.PRF_HMAC_SHA2_512,
	}
	suites := []Suite{
		{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128, DHGroup: wire.DH_CURVE25519},
		{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_CHACHA20_POLY1305, DHGroup: wire.DH_CURVE25519},
		{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_CBC, KeyLength: 256, Integrity: wire.AUTH_HMAC_SHA2_256_128, DHGroup: wire.DH_MODP_2048},
	}
	f := loadKDFVectors(t)
	derived := 0
	for _, c := range f.Chains {
		t.Run(c.Name, func(t *testing.T) {
			id, ok := prfIDs[c.PRF]
			if !ok {
				t.Fatalf("unknown PRF %q", c.PRF)
			}
			p, _ := NewPRF(id)
			nonces, gir := unhexKDF(t, c.Nonces), unhexKDF(t, c.GIR)
			spii := binary.BigEndian.Uint64(unhexKDF(t, c.SPIi))
			spir := binary.BigEndian.Uint64(unhexKDF(t, c.SPIr))
			skeyseed := p.Sum(nonces, gir)
			if want := unhexKDF(t, c.SKEYSEED); !bytes.Equal(skeyseed, want) {
				t.Fatalf("SKEYSEED = %x, want %x", skeyseed, want)
			}
			seed := append(append(append([]byte(nil), nonces...), unhexKDF(t, c.SPIi)...), unhexKDF(t, c.SPIr)...)
			dkm, err := p.Plus(skeyseed, seed, c.DKMLen)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhexKDF(t, c.DKM); !bytes.Equal(dkm, want) {
				t.Fatalf("DKM = %x, want %x", dkm, want)
			}
			for _, s := range suites {
				s.PRF = id
				need := 3*p.Size() + 2*s.IntegrityKeyLen() + 2*s.EncryptionKeyLen()
				if need > len(dkm) {
					continue
				}
				t.Run(s.String(), func(t *testing.T) {
					// Where Ni ends and Nr begins does not matter.
					half := len(nonces) / 2
					k, err := deriveKeys(s, gir, nonces[:half], nonces[half:], spii, spir)
					if err != nil {
						t.Fatal(err)
					}
					got := bytes.Join([][]byte{k.SKd(), k.SKai(), k.SKar(), k.SKei(), k.SKer(), k.SKpi(), k.SKpr()}, nil)
					if !bytes.Equal(got, dkm[:need]) {
						t.Errorf("SK_d..SK_pr = %x, want %x", got, dkm[:need])
					}
					lens := []int{len(k.SKd()), len(k.SKai()), len(k.SKar()), len(k.SKei()), len(k.SKer()), len(k.SKpi()), len(k.SKpr())}
					e, i := s.EncryptionKeyLen(), s.IntegrityKeyLen()
					if want := []int{p.Size(), i, i, e, e, p.Size(), p.Size()}; fmt.Sprint(lens) != fmt.Sprint(want) {
						t.Errorf("key lengths %v, want %v", lens, want)
					}
					derived++
				})
			}
		})
	}
	if derived == 0 {
		t.Error("no chain was long enough to check deriveKeys")
	}
}

func TestPRFPlusIsHKDFExpand(t *testing.T) {
	for _, id := range []uint16{wire.PRF_HMAC_SHA1, wire.PRF_HMAC_SHA2_256, wire.PRF_HMAC_SHA2_384, wire.PRF_HMAC_SHA2_512} {
		p, err := NewPRF(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(p.alg.keyword, func(t *testing.T) {
			key := bytes.Repeat([]byte{0x5a}, p.Size())
			seed := []byte("Ni | Nr | SPIi | SPIr")
			for _, n := range []int{0, 1, p.Size(), p.Size() + 1, 300} {
				got, err := p.Plus(key, seed, n)
				if err != nil {
					t.Fatal(err)
				}
				want, err := hkdf.Expand(p.h, key, string(seed), n)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("prf+ of %d bytes differs from HKDF-Expand", n)
				}
			}
			if _, err := p.Plus(key, seed, 255*p.Size()+1); err == nil {
				t.Error("prf+ beyond 255 blocks succeeded")
			}
			if _, err := p.Plus(key, seed, -1); err == nil {
				t.Error("prf+ of -1 bytes succeeded")
			}
		})
	}
	if _, err := NewPRF(99); err == nil {
		t.Error("NewPRF(99) succeeded")
	}
	var zero PRF
	if zero.Sum([]byte("k"), []byte("d")) != nil {
		t.Error("zero PRF computed something")
	}
	if _, err := zero.Plus([]byte("k"), nil, 1); err == nil {
		t.Error("zero PRF prf+ succeeded")
	}
}

func testIKESuite() Suite {
	return Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_CBC, KeyLength: 128, Integrity: wire.AUTH_HMAC_SHA2_256_128, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}
}

// TestRekeyUsesOldPRF: SKEYSEED of a rekeyed IKE SA is prf_old(SK_d, g^ir
// | Ni | Nr), the keys prf+_new (RFC 7296 §2.18).
func TestRekeyUsesOldPRF(t *testing.T) {
	old, err := deriveKeys(testIKESuite(), []byte("old g^ir"), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	next := Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, PRF: wire.PRF_HMAC_SHA2_384, DHGroup: wire.DH_ECP_384}
	gir, ni, nr := []byte("new g^ir"), bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 24)
	spii, spir := uint64(0x1111111111111111), uint64(0x2222222222222222)
	k, err := old.Rekey(next, gir, ni, nr, spii, spir)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, old.SKd())
	m.Write(gir)
	m.Write(ni)
	m.Write(nr)
	skeyseed := m.Sum(nil)
	p384, _ := NewPRF(wire.PRF_HMAC_SHA2_384)
	seed := bytes.Join([][]byte{ni, nr, binary.BigEndian.AppendUint64(nil, spii), binary.BigEndian.AppendUint64(nil, spir)}, nil)
	want, _ := p384.Plus(skeyseed, seed, 3*48+2*36)
	got := bytes.Join([][]byte{k.SKd(), k.SKai(), k.SKar(), k.SKei(), k.SKer(), k.SKpi(), k.SKpr()}, nil)
	if !bytes.Equal(got, want) {
		t.Errorf("rekeyed keys = %x, want %x", got, want)
	}
	if len(k.SKei()) != 36 || len(k.SKai()) != 0 || len(k.SKd()) != 48 {
		t.Errorf("key lengths SK_ei %d SK_ai %d SK_d %d, want 36 0 48", len(k.SKei()), len(k.SKai()), len(k.SKd()))
	}
	if k.Suite != next {
		t.Errorf("suite %v, want %v", k.Suite, next)
	}
}

func TestDeriveChildKeys(t *testing.T) {
	ike, err := deriveKeys(testIKESuite(), []byte("g^ir"), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewPRF(wire.PRF_HMAC_SHA2_256)
	ni, nr := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32)
	tests := []struct {
		name       string
		suite      Suite
		secret     []byte
		encLen     int
		integLen   int
		wantErr    bool
		wantEncKey string // keyword the data plane knows
	}{
		{"aes128gcm16", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128}, nil, 20, 0, false, "aes128gcm16"},
		{"aes256gcm16", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256}, nil, 36, 0, false, "aes256gcm16"},
		{"chacha20poly1305 with PFS", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_CHACHA20_POLY1305, DHGroup: wire.DH_CURVE25519}, []byte("new g^ir"), 36, 0, false, "chacha20poly1305"},
		{"aes256-sha512 esn", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_CBC, KeyLength: 256, Integrity: wire.AUTH_HMAC_SHA2_512_256, ESN: true}, nil, 32, 64, false, "aes256"},
		{"group without secret", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128, DHGroup: wire.DH_ECP_256}, nil, 0, 0, true, ""},
		{"secret without group", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128}, []byte("x"), 0, 0, true, ""},
		{"IKE suite", testIKESuite(), nil, 0, 0, true, ""},
		{"unsupported", Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_8, KeyLength: 128}, nil, 0, 0, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ike.DeriveChildKeys(tt.suite, tt.secret, ni, nr)
			if tt.wantErr {
				if err == nil {
					t.Fatal("succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			km, _ := p.Plus(ike.SKd(), bytes.Join([][]byte{tt.secret, ni, nr}, nil), 2*(tt.encLen+tt.integLen))
			e, i := tt.encLen, tt.integLen
			want := [][]byte{km[:e], km[e : e+i], km[e+i : 2*e+i], km[2*e+i:]}
			got := [][]byte{c.InitiatorEncryption, c.InitiatorIntegrity, c.ResponderEncryption, c.ResponderIntegrity}
			for j := range want {
				if !bytes.Equal(got[j], want[j]) {
					t.Errorf("key %d = %x, want %x", j, got[j], want[j])
				}
			}
			if enc, integ := c.Outbound(true); !bytes.Equal(enc, c.InitiatorEncryption) || !bytes.Equal(integ, c.InitiatorIntegrity) {
				t.Error("initiator's outbound keys are not the initiator→responder keys")
			}
			if enc, _ := c.Inbound(true); !bytes.Equal(enc, c.ResponderEncryption) {
				t.Error("initiator's inbound key is not the responder→initiator key")
			}
			if enc, _ := c.Outbound(false); !bytes.Equal(enc, c.ResponderEncryption) {
				t.Error("responder's outbound key is not the responder→initiator key")
			}
			if got := c.Suite.EncryptionName(); got != tt.wantEncKey {
				t.Errorf("EncryptionName = %q, want %q", got, tt.wantEncKey)
			}
		})
	}
}

func TestDeriveKeysRejectsBadSuites(t *testing.T) {
	for name, s := range map[string]Suite{
		"ESP suite":         {Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128},
		"no PRF":            {Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128, DHGroup: wire.DH_CURVE25519},
		"AEAD with integ":   {Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 128, Integrity: wire.AUTH_HMAC_SHA2_256_128, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519},
		"CBC without integ": {Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_CBC, KeyLength: 128, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519},
		"bad key length":    {Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_CBC, KeyLength: 100, Integrity: wire.AUTH_HMAC_SHA2_256_128, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519},
		"no DH":             {Protocol: wire.ProtoIKE, Encryption: wire.ENCR_CHACHA20_POLY1305, PRF: wire.PRF_HMAC_SHA2_256},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := deriveKeys(s, []byte("g"), make([]byte, 16), make([]byte, 16), 1, 2); err == nil {
				t.Error("succeeded")
			}
		})
	}
}

// TestKeysNeverPrinted formats keys, key exchanges and crypters every way
// fmt and slog offer and looks for the key material.
func TestKeysNeverPrinted(t *testing.T) {
	ike, err := deriveKeys(testIKESuite(), []byte("g^ir"), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	child, err := ike.DeriveChildKeys(Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256}, nil, []byte("ni"), []byte("nr"))
	if err != nil {
		t.Fatal(err)
	}
	ke, err := NewKeyExchange(wire.DH_CURVE25519)
	if err != nil {
		t.Fatal(err)
	}
	privKey := ke.(*ecdhExchange).priv.Bytes()
	modp, err := NewKeyExchange(wire.DH_MODP_2048)
	if err != nil {
		t.Fatal(err)
	}
	modpPriv := modp.(*modpExchange).x
	out, in, err := ike.Crypters(true)
	if err != nil {
		t.Fatal(err)
	}
	secrets := [][]byte{ike.SKd(), ike.SKai(), ike.SKar(), ike.SKei(), ike.SKer(), ike.SKpi(), ike.SKpr(),
		child.InitiatorEncryption, child.ResponderEncryption, privKey, modpPriv.Bytes()}
	values := []any{ike, *ike, child, *child, ke, modp, out, in,
		struct{ K *Keys }{ike}, []any{*ike, *child}}
	var logged bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logged, nil))
	for _, v := range values {
		logger.Info("value", "v", v)
		var printed []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
			printed = append(printed, fmt.Sprintf(verb, v))
		}
		printed = append(printed, fmt.Sprint(v), fmt.Sprintln(v))
		for _, p := range printed {
			checkNoSecret(t, p, secrets)
			if strings.Contains(p, modpPriv.String()[:24]) || strings.Contains(strings.ToLower(p), modpPriv.Text(16)[:24]) {
				t.Errorf("MODP exponent appears in %q", p)
			}
		}
	}
	checkNoSecret(t, logged.String(), secrets)
	if s := fmt.Sprint(*ike); !strings.Contains(s, "redacted") {
		t.Errorf("Keys print as %q", s)
	}
}

func checkNoSecret(t *testing.T, printed string, secrets [][]byte) {
	t.Helper()
	lower := strings.ToLower(printed)
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		h := hex.EncodeToString(s[:8])
		if strings.Contains(lower, h) || strings.Contains(printed, string(s[:8])) ||
			strings.Contains(printed, strings.Trim(fmt.Sprint(s[:8]), "[]")) {
			t.Errorf("key material appears in %q", printed)
		}
	}
}

func TestNATDetectionHash(t *testing.T) {
	spii, spir := uint64(0x0102030405060708), uint64(0x1112131415161718)
	spis := unhexKDF(t, "01020304050607081112131415161718")
	tests := []struct {
		addr string
		want []byte
	}{
		{"192.0.2.1:500", append(append(append([]byte(nil), spis...), 192, 0, 2, 1), 0x01, 0xf4)},
		{"[::ffff:192.0.2.1]:500", append(append(append([]byte(nil), spis...), 192, 0, 2, 1), 0x01, 0xf4)},
		{"[2001:db8::1]:4500", append(append(append([]byte(nil), spis...), unhexKDF(t, "20010db8000000000000000000000001")...), 0x11, 0x94)},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			want := sha1.Sum(tt.want)
			got := nATDetectionHash(spii, spir, netip.MustParseAddrPort(tt.addr))
			if !bytes.Equal(got, want[:]) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestRandomNonceAndSPI(t *testing.T) {
	for _, n := range []int{16, 32, 256} {
		b, err := RandomNonce(n)
		if err != nil || len(b) != n {
			t.Errorf("RandomNonce(%d) = %d bytes, %v", n, len(b), err)
		}
	}
	for _, n := range []int{0, 15, 257} {
		if _, err := RandomNonce(n); err == nil {
			t.Errorf("RandomNonce(%d) succeeded", n)
		}
	}
	a, _ := RandomNonce(defaultNonceLen)
	b, _ := RandomNonce(defaultNonceLen)
	if bytes.Equal(a, b) {
		t.Error("two nonces are equal")
	}
	if x, y := RandomSPI(), RandomSPI(); x == 0 || y == 0 || x == y {
		t.Errorf("SPIs %x %x", x, y)
	}
	checks := []struct {
		prf   uint16
		n     int
		valid bool
	}{
		{wire.PRF_HMAC_SHA2_256, 16, true},
		{wire.PRF_HMAC_SHA2_512, 16, false}, // half of 64
		{wire.PRF_HMAC_SHA2_512, 32, true},
		{wire.PRF_HMAC_SHA2_256, 15, false},
		{wire.PRF_HMAC_SHA2_256, 257, false},
	}
	for _, c := range checks {
		if err := checkNonce(c.prf, make([]byte, c.n)); (err == nil) != c.valid {
			t.Errorf("checkNonce(%d, %d bytes) = %v, want valid %v", c.prf, c.n, err, c.valid)
		}
	}
}
