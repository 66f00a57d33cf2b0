package ike

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math/big"

	"github.com/mifsec/mifsec/ike/wire"
)

// KeyExchange is one side's ephemeral Diffie-Hellman key pair for a KE
// payload (RFC 7296 §3.4). It never prints its private key.
type KeyExchange interface {
	// Group returns the transform ID of the Diffie-Hellman group.
	Group() uint16
	// Public returns the Key Exchange Data of the KE payload.
	Public() []byte
	// SharedSecret checks the peer's Key Exchange Data and returns g^ir as
	// key derivation uses it.
	SharedSecret(peer []byte) ([]byte, error)
}

// Errors of SharedSecret.
var (
	ErrKELength      = errors.New("key exchange data of the wrong length")
	ErrKEInvalid     = errors.New("invalid key exchange data")
	ErrUnsupportedDH = errors.New("unsupported Diffie-Hellman group")
)

// NewKeyExchange generates a key pair in group: 31 (Curve25519, RFC 8031),
// 19 and 20 (ECP-256 and ECP-384, RFC 5903), 14 (2048-bit MODP, RFC 3526)
// or 2 (1024-bit MODP, RFC 2409 §6.2; weak, offered by Windows' built-in
// client).
func NewKeyExchange(group uint16) (KeyExchange, error) {
	switch group {
	case wire.DH_CURVE25519, wire.DH_ECP_256, wire.DH_ECP_384:
		curve := ecdhCurve(group)
		priv, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating %s key: %w", dhKeyword(group), err)
		}
		return &ecdhExchange{group: group, priv: priv}, nil
	case wire.DH_MODP_2048, wire.DH_MODP_1024:
		g := modpGroupOf(group)
		x, err := rand.Int(rand.Reader, new(big.Int).Sub(g.p, big.NewInt(3)))
		if err != nil {
			return nil, fmt.Errorf("generating %s key: %w", dhKeyword(group), err)
		}
		return newMODPExchange(g, x.Add(x, big.NewInt(2))), nil
	}
	return nil, fmt.Errorf("%w %d", ErrUnsupportedDH, group)
}

func ecdhCurve(group uint16) ecdh.Curve {
	switch group {
	case wire.DH_CURVE25519:
		return ecdh.X25519()
	case wire.DH_ECP_256:
		return ecdh.P256()
	case wire.DH_ECP_384:
		return ecdh.P384()
	}
	return nil
}

// newKeyExchangeFromPrivate builds a key pair from a known private key, for
// known-answer tests.
func newKeyExchangeFromPrivate(group uint16, private []byte) (KeyExchange, error) {
	if g := modpGroupOf(group); g != nil {
		x := new(big.Int).SetBytes(private)
		if x.Cmp(big.NewInt(2)) < 0 || x.Cmp(g.p) >= 0 {
			return nil, errors.New("private exponent out of range")
		}
		return newMODPExchange(g, x), nil
	}
	curve := ecdhCurve(group)
	if curve == nil {
		return nil, fmt.Errorf("%w %d", ErrUnsupportedDH, group)
	}
	priv, err := curve.NewPrivateKey(private)
	if err != nil {
		return nil, err
	}
	return &ecdhExchange{group: group, priv: priv}, nil
}

// ecdhExchange implements Curve25519 and the NIST curves with crypto/ecdh.
type ecdhExchange struct {
	group uint16
	priv  *ecdh.PrivateKey
}

func (e *ecdhExchange) Group() uint16 { return e.group }

// Public returns the Curve25519 public key (RFC 8031 §2) or, for an ECP
// group, x | y without SEC1's 0x04 prefix (RFC 5903 §7).
func (e *ecdhExchange) Public() []byte {
	pub := e.priv.PublicKey().Bytes()
	if e.group == wire.DH_CURVE25519 {
		return pub
	}
	return pub[1:]
}

func (e *ecdhExchange) SharedSecret(peer []byte) ([]byte, error) {
	want := len(e.Public())
	if len(peer) != want {
		return nil, fmt.Errorf("%s: %w: %d bytes, want %d", dhKeyword(e.group), ErrKELength, len(peer), want)
	}
	encoded := peer
	if e.group != wire.DH_CURVE25519 {
		encoded = append([]byte{4}, peer...)
	}
	pub, err := e.priv.Curve().NewPublicKey(encoded)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", dhKeyword(e.group), ErrKEInvalid, err)
	}
	secret, err := e.priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", dhKeyword(e.group), ErrKEInvalid, err)
	}
	// RFC 8031 §2.3: an all-zero result means the peer sent a point of
	// small order. crypto/ecdh already refuses it; this keeps the check
	// independent of that.
	if subtle.ConstantTimeCompare(secret, make([]byte, len(secret))) == 1 {
		return nil, fmt.Errorf("%s: %w: all-zero shared secret", dhKeyword(e.group), ErrKEInvalid)
	}
	return secret, nil
}

func (e *ecdhExchange) String() string             { return dhKeyword(e.group) + " key exchange" }
func (e *ecdhExchange) Format(f fmt.State, _ rune) { fmt.Fprint(f, e.String()) }
func (e *ecdhExchange) LogValue() slog.Value       { return slog.StringValue(e.String()) }
func (e *modpExchange) String() string             { return dhKeyword(e.g.id) + " key exchange" }
func (e *modpExchange) Format(f fmt.State, _ rune) { fmt.Fprint(f, e.String()) }
func (e *modpExchange) LogValue() slog.Value       { return slog.StringValue(e.String()) }

// modp2048Prime is the prime of the 2048-bit MODP group (RFC 3526 §3);
// its generator is 2.
var modp2048Prime, _ = new(big.Int).SetString(
	"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"+
		"29024E088A67CC74020BBEA63B139B22514A08798E3404DD"+
		"EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"+
		"E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"+
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"+
		"C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"+
		"83655D23DCA3AD961C62F356208552BB9ED529077096966D"+
		"670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"+
		"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"+
		"DE2BCBF6955817183995497CEA956AE515D2261898FA0510"+
		"15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)

// modp1024Prime is the prime of the 1024-bit MODP group, the Second
// Oakley Group (RFC 2409 §6.2); its generator is 2.
var modp1024Prime, _ = new(big.Int).SetString(
	"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"+
		"29024E088A67CC74020BBEA63B139B22514A08798E3404DD"+
		"EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"+
		"E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"+
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381"+
		"FFFFFFFFFFFFFFFF", 16)

// modpGroup is a MODP Diffie-Hellman group with generator 2.
type modpGroup struct {
	id  uint16
	p   *big.Int
	len int // bytes of the modulus, the length of a public value
}

var (
	modp2048 = &modpGroup{id: wire.DH_MODP_2048, p: modp2048Prime, len: 256}
	modp1024 = &modpGroup{id: wire.DH_MODP_1024, p: modp1024Prime, len: 128}
)

// modpGroupOf returns the MODP group with the transform ID, nil if it is
// not one.
func modpGroupOf(id uint16) *modpGroup {
	switch id {
	case wire.DH_MODP_2048:
		return modp2048
	case wire.DH_MODP_1024:
		return modp1024
	}
	return nil
}

// modpExchange is Diffie-Hellman in a MODP group. math/big is not
// constant-time; the exponent is ephemeral and used once.
type modpExchange struct {
	g   *modpGroup
	x   *big.Int
	pub []byte
}

func newMODPExchange(g *modpGroup, x *big.Int) *modpExchange {
	y := new(big.Int).Exp(big.NewInt(2), x, g.p)
	return &modpExchange{g: g, x: x, pub: y.FillBytes(make([]byte, g.len))}
}

func (e *modpExchange) Group() uint16 { return e.g.id }

// Public returns g^x mod p left-padded to the length of the modulus (RFC
// 7296 §3.4).
func (e *modpExchange) Public() []byte { return append([]byte(nil), e.pub...) }

func (e *modpExchange) SharedSecret(peer []byte) ([]byte, error) {
	name := dhKeyword(e.g.id)
	if len(peer) != e.g.len {
		return nil, fmt.Errorf("%s: %w: %d bytes, want %d", name, ErrKELength, len(peer), e.g.len)
	}
	y := new(big.Int).SetBytes(peer)
	pMinus1 := new(big.Int).Sub(e.g.p, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pMinus1) >= 0 {
		return nil, fmt.Errorf("%s: %w: public value not in 2..p-2", name, ErrKEInvalid)
	}
	z := new(big.Int).Exp(y, e.x, e.g.p)
	return z.FillBytes(make([]byte, e.g.len)), nil
}
