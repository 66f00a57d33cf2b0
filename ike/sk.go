package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"math"
	"sync/atomic"

	"github.com/mifsec/mifsec/ike/wire"
	"golang.org/x/crypto/chacha20poly1305"
)

// Protection of the Encrypted payload (RFC 7296 §3.14) with an AEAD
// (AES-GCM, RFC 5282; ChaCha20-Poly1305, RFC 7634) or with AES-CBC and an
// HMAC, encrypt-then-MAC.

// ErrAuthentication is returned by Open when the integrity check fails.
var ErrAuthentication = errors.New("SK payload failed its integrity check")

// newCrypter returns the Crypter for one direction of an IKE SA with suite
// s. encKey is SK_e (for an AEAD the cipher key followed by the 4-byte
// salt), integKey SK_a (empty for an AEAD). An AEAD Crypter keeps
// encKey, not a copy: the caller keeps it for the Crypter's life and wipes
// it after (Keys.Wipe).
func newCrypter(s Suite, encKey, integKey []byte) (wire.Crypter, error) {
	return makeCrypter(s, encKey, integKey, new(aeadCrypter))
}

// makeCrypter is newCrypter that makes an AEAD Crypter in aead, which the
// caller may keep inside a larger allocation (ikeKeys).
func makeCrypter(s Suite, encKey, integKey []byte, aead *aeadCrypter) (wire.Crypter, error) {
	enc, ok := lookupEncryption(s.Encryption, s.KeyLength)
	if !ok {
		return nil, fmt.Errorf("SK payload: unsupported encryption algorithm %d with key length %d", s.Encryption, s.KeyLength)
	}
	if len(encKey) != s.EncryptionKeyLen() {
		return nil, fmt.Errorf("SK payload: %s needs a %d-byte encryption key, got %d", enc.keyword, s.EncryptionKeyLen(), len(encKey))
	}
	if enc.aead {
		if len(integKey) != 0 {
			return nil, fmt.Errorf("SK payload: %s takes no integrity key", enc.keyword)
		}
		key, salt := encKey[:enc.keyBytes], encKey[enc.keyBytes:]
		c := aead
		c.id, c.key = enc.id, key
		if _, err := c.aead(); err != nil { // the key is checked now, the cipher made for each message
			return nil, err
		}
		copy(c.salt[:], salt)
		var mask [8]byte
		rand.Read(mask[:])
		c.ivMask = binary.BigEndian.Uint64(mask[:])
		return c, nil
	}
	integ, ok := lookupIntegrity(s.Integrity)
	if !ok {
		return nil, fmt.Errorf("SK payload: unsupported integrity algorithm %d", s.Integrity)
	}
	if len(integKey) != integ.keyBytes {
		return nil, fmt.Errorf("SK payload: %s needs a %d-byte integrity key, got %d", integ.keyword, integ.keyBytes, len(integKey))
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, fmt.Errorf("SK payload: %s: %w", enc.keyword, err)
	}
	return &cbcCrypter{
		name:     enc.keyword + "-" + integ.keyword,
		block:    block,
		newHash:  newHash(integ.hash),
		integKey: append([]byte(nil), integKey...),
		icvLen:   integ.icvBytes,
	}, nil
}

// Crypters returns the Crypters of the IKE SA: out protects what this side
// sends, in checks what it receives. initiator says whether this side is
// the "i" of the keys (see Keys).
func (k *Keys) Crypters(initiator bool) (out, in wire.Crypter, err error) {
	return k.makeCrypters(initiator, new(aeadCrypter), new(aeadCrypter))
}

// makeCrypters is Crypters that makes AEAD Crypters in aeadOut and aeadIn.
func (k *Keys) makeCrypters(initiator bool, aeadOut, aeadIn *aeadCrypter) (out, in wire.Crypter, err error) {
	ei, ai, er, ar := k.SKei(), k.SKai(), k.SKer(), k.SKar()
	if !initiator {
		ei, ai, er, ar = er, ar, ei, ai
	}
	if out, err = makeCrypter(k.Suite, ei, ai, aeadOut); err != nil {
		return nil, nil, err
	}
	if in, err = makeCrypter(k.Suite, er, ar, aeadIn); err != nil {
		return nil, nil, err
	}
	return out, in, nil
}

// aeadCrypter is AES-GCM-16 or ChaCha20-Poly1305: body = IV(8) |
// ciphertext | ICV(16), nonce = salt | IV, associated data = prefix. The IV
// is a 64-bit counter XORed with a random mask: it never repeats within a
// Crypter, and two Crypters made by mistake from one key are unlikely to
// share IVs. Inner payloads get no padding, only the pad length byte 0.
//
// It keeps the key, not the cipher: an expanded AES-GCM key is some 750
// bytes, two per IKE SA, and a gateway holds an IKE SA per client, which
// sends an IKE message now and then (issue 19: compact per-client state,
// docs/gateway-scale.md); the cipher is made for each message instead.
type aeadCrypter struct {
	id     uint16 // wire.ENCR_AES_GCM_16 or wire.ENCR_CHACHA20_POLY1305
	key    []byte // the cipher key, SK_e without the salt (the Keys' own)
	salt   [aeadSaltLen]byte
	ivMask uint64
	ivUsed atomic.Uint64
}

// name is the algorithm's keyword (aes256gcm16, chacha20poly1305), for
// errors and logs.
func (c *aeadCrypter) name() string {
	var bits uint16 // the Key Length attribute: none for ChaCha20-Poly1305
	if c.id == wire.ENCR_AES_GCM_16 {
		bits = uint16(len(c.key) * 8)
	}
	if enc, ok := lookupEncryption(c.id, bits); ok {
		return enc.keyword
	}
	return fmt.Sprintf("encryption algorithm %d", c.id)
}

// aead returns the cipher.
func (c *aeadCrypter) aead() (cipher.AEAD, error) {
	var aead cipher.AEAD
	var err error
	switch c.id {
	case wire.ENCR_AES_GCM_16:
		var block cipher.Block
		if block, err = aes.NewCipher(c.key); err == nil {
			aead, err = cipher.NewGCM(block)
		}
	case wire.ENCR_CHACHA20_POLY1305:
		aead, err = chacha20poly1305.New(c.key)
	default:
		err = fmt.Errorf("encryption algorithm %d is not an AEAD", c.id)
	}
	if err != nil {
		return nil, fmt.Errorf("SK payload: %s: %w", c.name(), err)
	}
	return aead, nil
}

func (c *aeadCrypter) BodyLen(n int) int { return aeadIVLen + n + 1 + aeadICVLen }

func (c *aeadCrypter) Seal(body, prefix, inner []byte) error {
	if len(body) != c.BodyLen(len(inner)) {
		return fmt.Errorf("%s: body of %d bytes for %d bytes of inner payloads, want %d", c.name(), len(body), len(inner), c.BodyLen(len(inner)))
	}
	aead, err := c.aead()
	if err != nil {
		return err
	}
	iv, err := c.takeIV()
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint64(body[:aeadIVLen], iv)
	n := len(inner)
	plain := body[aeadIVLen : aeadIVLen+n+1]
	copy(plain, inner)
	plain[n] = 0 // pad length
	var nonce [aeadSaltLen + aeadIVLen]byte
	copy(nonce[:], c.salt[:])
	copy(nonce[aeadSaltLen:], body[:aeadIVLen])
	aead.Seal(plain[:0], nonce[:], plain, prefix)
	return nil
}

// takeIV returns the next unused IV.
func (c *aeadCrypter) takeIV() (uint64, error) {
	for {
		n := c.ivUsed.Load()
		if n == math.MaxUint64 {
			return 0, fmt.Errorf("%s: IVs exhausted, the IKE SA must be rekeyed", c.name())
		}
		if c.ivUsed.CompareAndSwap(n, n+1) {
			return n ^ c.ivMask, nil
		}
	}
}

func (c *aeadCrypter) Open(prefix, body []byte) ([]byte, error) {
	if len(body) < aeadIVLen+1+aeadICVLen {
		return nil, fmt.Errorf("%s: SK payload body of %d bytes is too short", c.name(), len(body))
	}
	var nonce [aeadSaltLen + aeadIVLen]byte
	copy(nonce[:], c.salt[:])
	copy(nonce[aeadSaltLen:], body[:aeadIVLen])
	sealed := body[aeadIVLen:]
	aead, err := c.aead()
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(sealed[:0], nonce[:], sealed, prefix)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name(), ErrAuthentication)
	}
	return stripPadding(c.name(), plain)
}

// cbcCrypter is AES-CBC with HMAC: body = IV(16) | ciphertext | ICV, the
// ICV covering prefix | IV | ciphertext.
type cbcCrypter struct {
	name     string
	block    cipher.Block
	newHash  func() hash.Hash
	integKey []byte
	icvLen   int
}

func (c *cbcCrypter) BodyLen(n int) int {
	bs := c.block.BlockSize()
	return bs + (n+1+bs-1)/bs*bs + c.icvLen
}

func (c *cbcCrypter) Seal(body, prefix, inner []byte) error {
	if len(body) != c.BodyLen(len(inner)) {
		return fmt.Errorf("%s: body of %d bytes for %d bytes of inner payloads, want %d", c.name, len(body), len(inner), c.BodyLen(len(inner)))
	}
	bs := c.block.BlockSize()
	iv := body[:bs]
	ct := body[bs : len(body)-c.icvLen]
	copy(ct, inner)
	padLen := len(ct) - len(inner) - 1
	clear(ct[len(inner) : len(ct)-1])
	ct[len(ct)-1] = byte(padLen)
	rand.Read(iv)
	cipher.NewCBCEncrypter(c.block, iv).CryptBlocks(ct, ct)
	copy(body[len(body)-c.icvLen:], c.icv(prefix, body[:len(body)-c.icvLen]))
	return nil
}

func (c *cbcCrypter) Open(prefix, body []byte) ([]byte, error) {
	bs := c.block.BlockSize()
	ctLen := len(body) - bs - c.icvLen
	if ctLen < bs || ctLen%bs != 0 {
		return nil, fmt.Errorf("%s: SK payload body of %d bytes is not IV, whole blocks and ICV", c.name, len(body))
	}
	signed, icv := body[:len(body)-c.icvLen], body[len(body)-c.icvLen:]
	if !hmac.Equal(icv, c.icv(prefix, signed)) {
		return nil, fmt.Errorf("%s: %w", c.name, ErrAuthentication)
	}
	ct := body[bs : bs+ctLen]
	cipher.NewCBCDecrypter(c.block, body[:bs]).CryptBlocks(ct, ct)
	return stripPadding(c.name, ct)
}

// icv returns the truncated HMAC of prefix | data.
func (c *cbcCrypter) icv(prefix, data []byte) []byte {
	m := hmac.New(c.newHash, c.integKey)
	m.Write(prefix)
	m.Write(data)
	return m.Sum(nil)[:c.icvLen]
}

// stripPadding removes the padding and the pad length byte, which may
// announce any length that fits (RFC 7296 §3.14).
func stripPadding(name string, plain []byte) ([]byte, error) {
	if len(plain) == 0 {
		return nil, fmt.Errorf("%s: SK payload without pad length", name)
	}
	padLen := int(plain[len(plain)-1])
	if padLen+1 > len(plain) {
		return nil, fmt.Errorf("%s: pad length %d exceeds the %d decrypted bytes", name, padLen, len(plain))
	}
	return plain[:len(plain)-1-padLen], nil
}

func (c *aeadCrypter) String() string             { return c.name() + " SK crypter" }
func (c *aeadCrypter) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }
func (c *aeadCrypter) LogValue() slog.Value       { return slog.StringValue(c.String()) }
func (c *cbcCrypter) String() string              { return c.name + " SK crypter" }
func (c *cbcCrypter) Format(f fmt.State, _ rune)  { fmt.Fprint(f, c.String()) }
func (c *cbcCrypter) LogValue() slog.Value        { return slog.StringValue(c.String()) }
