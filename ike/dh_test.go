package ike

import (
	"bytes"
	"errors"
	"math/big"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

var allDHGroups = []struct {
	group  uint16
	pubLen int
	secLen int
}{
	{wire.DH_CURVE25519, 32, 32},
	{wire.DH_ECP_256, 64, 32},
	{wire.DH_ECP_384, 96, 48},
	{wire.DH_MODP_2048, 256, 256},
	{wire.DH_MODP_1024, 128, 128},
}

// TestMODPPrimesAreSafePrimes checks the group constants: p and (p-1)/2
// prime, of the advertised size, and the high and low 64 bits all ones
// (RFC 2409 §6.2, RFC 3526 §3). A typo in a hex digit fails this.
func TestMODPPrimesAreSafePrimes(t *testing.T) {
	for _, g := range []*modpGroup{modp1024, modp2048} {
		if g.p.BitLen() != g.len*8 {
			t.Fatalf("%s: %d bits, want %d", dhKeyword(g.id), g.p.BitLen(), g.len*8)
		}
		q := new(big.Int).Rsh(g.p, 1)
		if !g.p.ProbablyPrime(20) || !q.ProbablyPrime(20) {
			t.Fatalf("%s: p or (p-1)/2 is not prime", dhKeyword(g.id))
		}
		ones := new(big.Int).SetUint64(^uint64(0))
		if new(big.Int).And(g.p, ones).Cmp(ones) != 0 || new(big.Int).Rsh(g.p, uint(g.len*8-64)).Cmp(ones) != 0 {
			t.Fatalf("%s: not all ones in the first and last 64 bits", dhKeyword(g.id))
		}
	}
}

func TestKeyExchangeAgreement(t *testing.T) {
	for _, g := range allDHGroups {
		t.Run(dhKeyword(g.group), func(t *testing.T) {
			a, err := NewKeyExchange(g.group)
			if err != nil {
				t.Fatal(err)
			}
			b, err := NewKeyExchange(g.group)
			if err != nil {
				t.Fatal(err)
			}
			if a.Group() != g.group {
				t.Errorf("Group() = %d", a.Group())
			}
			if len(a.Public()) != g.pubLen {
				t.Fatalf("public value of %d bytes, want %d", len(a.Public()), g.pubLen)
			}
			if bytes.Equal(a.Public(), b.Public()) {
				t.Fatal("two key pairs have the same public value")
			}
			sa, err := a.SharedSecret(b.Public())
			if err != nil {
				t.Fatal(err)
			}
			sb, err := b.SharedSecret(a.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sa, sb) || len(sa) != g.secLen {
				t.Errorf("shared secrets %x and %x, want equal and %d bytes", sa, sb, g.secLen)
			}
			pub := a.Public()
			pub[0] ^= 0xff
			if bytes.Equal(pub, a.Public()) {
				t.Error("Public returns the key pair's own buffer")
			}
		})
	}
}

func TestKeyExchangeRejectsMalformedPeers(t *testing.T) {
	p := modp2048Prime
	pad := func(x *big.Int) []byte { return x.FillBytes(make([]byte, 256)) }
	ecp256, _ := NewKeyExchange(wire.DH_ECP_256)
	offCurve := ecp256.Public()
	offCurve[63] ^= 1
	ecp384, _ := NewKeyExchange(wire.DH_ECP_384)
	offCurve384 := ecp384.Public()
	offCurve384[95] ^= 1
	// The order-1 and order-2 points and a point of order 8 (RFC 7748
	// §5's blocklist as libsodium and others use it).
	order8 := unhexKDF(t, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
	tests := []struct {
		name    string
		group   uint16
		peer    []byte
		wantErr error
	}{
		{"x25519 short", wire.DH_CURVE25519, make([]byte, 31), ErrKELength},
		{"x25519 long", wire.DH_CURVE25519, make([]byte, 33), ErrKELength},
		{"x25519 zero point", wire.DH_CURVE25519, make([]byte, 32), ErrKEInvalid},
		{"x25519 one", wire.DH_CURVE25519, append([]byte{1}, make([]byte, 31)...), ErrKEInvalid},
		{"x25519 order 8", wire.DH_CURVE25519, order8, ErrKEInvalid},
		{"ecp256 with 0x04 prefix", wire.DH_ECP_256, append([]byte{4}, ecp256.Public()...), ErrKELength},
		{"ecp256 x only", wire.DH_ECP_256, ecp256.Public()[:32], ErrKELength},
		{"ecp256 off curve", wire.DH_ECP_256, offCurve, ErrKEInvalid},
		{"ecp256 zeros", wire.DH_ECP_256, make([]byte, 64), ErrKEInvalid},
		{"ecp384 off curve", wire.DH_ECP_384, offCurve384, ErrKEInvalid},
		{"ecp384 ecp256 point", wire.DH_ECP_384, ecp256.Public(), ErrKELength},
		{"modp2048 short", wire.DH_MODP_2048, make([]byte, 255), ErrKELength},
		{"modp2048 zero", wire.DH_MODP_2048, make([]byte, 256), ErrKEInvalid},
		{"modp2048 one", wire.DH_MODP_2048, pad(big.NewInt(1)), ErrKEInvalid},
		{"modp2048 p-1", wire.DH_MODP_2048, pad(new(big.Int).Sub(p, big.NewInt(1))), ErrKEInvalid},
		{"modp2048 p", wire.DH_MODP_2048, pad(p), ErrKEInvalid},
		{"modp2048 all ones", wire.DH_MODP_2048, bytes.Repeat([]byte{0xff}, 256), ErrKEInvalid},
		{"modp1024 long", wire.DH_MODP_1024, make([]byte, 256), ErrKELength},
		{"modp1024 one", wire.DH_MODP_1024, append(make([]byte, 127), 1), ErrKEInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ke, err := NewKeyExchange(tt.group)
			if err != nil {
				t.Fatal(err)
			}
			secret, err := ke.SharedSecret(tt.peer)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if secret != nil {
				t.Errorf("returned a secret %x", secret)
			}
		})
	}
	if _, err := NewKeyExchange(wire.DH_NONE); !errors.Is(err, ErrUnsupportedDH) {
		t.Errorf("NewKeyExchange(NONE) error %v", err)
	}
	if _, err := NewKeyExchange(21); !errors.Is(err, ErrUnsupportedDH) {
		t.Errorf("NewKeyExchange(21) error %v", err)
	}
}

func TestKeyExchangeKnownAnswers(t *testing.T) {
	tests := []struct {
		name    string
		group   uint16
		private string
		public  string // as in the KE payload
		peer    string
		shared  string
	}{
		{
			// RFC 7748 §6.1, Alice's side.
			name:    "RFC 7748 6.1 X25519",
			group:   wire.DH_CURVE25519,
			private: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
			public:  "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
			peer:    "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
			shared:  "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
		},
		{
			// RFC 5903 §8.1, the initiator's side: KE data is gix | giy,
			// the shared secret girx alone (RFC 5903 §9).
			name:    "RFC 5903 8.1 ECP-256",
			group:   wire.DH_ECP_256,
			private: "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
			public: "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180" +
				"5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
			peer: "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63" +
				"56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
			shared: "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
		},
		{
			name:    "RFC 5903 8.1 ECP-256 responder",
			group:   wire.DH_ECP_256,
			private: "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
			public: "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63" +
				"56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
			peer: "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180" +
				"5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
			shared: "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
		},
		{
			// 2^2 mod p and (2^3)^2 mod p, padded to the modulus.
			name:    "MODP-2048 small exponent",
			group:   wire.DH_MODP_2048,
			private: "02",
			public:  hexPad256("04"),
			peer:    hexPad256("08"),
			shared:  hexPad256("40"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ke, err := newKeyExchangeFromPrivate(tt.group, unhexKDF(t, tt.private))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := ke.Public(), unhexKDF(t, tt.public); !bytes.Equal(got, want) {
				t.Errorf("public = %x, want %x", got, want)
			}
			got, err := ke.SharedSecret(unhexKDF(t, tt.peer))
			if err != nil {
				t.Fatal(err)
			}
			want := unhexKDF(t, tt.shared)
			if !bytes.Equal(got, want) {
				t.Errorf("shared = %x, want %x", got, want)
			}
		})
	}
}

// hexPad256 left-pads a hex number to the 256 bytes of the MODP modulus.
func hexPad256(h string) string {
	return string(bytes.Repeat([]byte("0"), 512-len(h))) + h
}
