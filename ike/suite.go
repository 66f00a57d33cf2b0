package ike

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mifsec/mifsec/ike/wire"
)

// Suite is the set of algorithms negotiated for an IKE SA or a Child SA
// (ESP): one transform of each type.
type Suite struct {
	Protocol   wire.ProtocolID
	Encryption uint16 // ENCR_*
	// KeyLength is the Key Length attribute in bits; 0 for an algorithm
	// that has none (ChaCha20-Poly1305, RFC 7634 §3).
	KeyLength uint16
	Integrity uint16 // AUTH_*; AUTH_NONE with an AEAD
	PRF       uint16 // PRF_*; only for IKE
	DHGroup   uint16 // DH_*; DH_NONE when no key exchange was negotiated
	ESN       bool   // extended sequence numbers; only for ESP
}

// Lengths of the AEAD framing (RFC 5282 §3 and §7.1, RFC 7634 §2 and §3).
const (
	aeadSaltLen = 4
	aeadIVLen   = 8
	aeadICVLen  = 16
)

// encryptionAlg describes an ENCR transform mifsec implements.
type encryptionAlg struct {
	keyword   string
	id        uint16
	keyLength uint16 // Key Length attribute; 0 when the transform has none
	keyBytes  int    // cipher key, without salt
	aead      bool
}

// The encryption algorithms, in the order the supported list names them.
var encryptionAlgs = []encryptionAlg{
	{"aes128", wire.ENCR_AES_CBC, 128, 16, false},
	{"aes192", wire.ENCR_AES_CBC, 192, 24, false},
	{"aes256", wire.ENCR_AES_CBC, 256, 32, false},
	{"aes128gcm16", wire.ENCR_AES_GCM_16, 128, 16, true},
	{"aes192gcm16", wire.ENCR_AES_GCM_16, 192, 24, true},
	{"aes256gcm16", wire.ENCR_AES_GCM_16, 256, 32, true},
	{"chacha20poly1305", wire.ENCR_CHACHA20_POLY1305, 0, 32, true},
}

func lookupEncryption(id, keyLength uint16) (encryptionAlg, bool) {
	for _, a := range encryptionAlgs {
		if a.id == id && a.keyLength == keyLength {
			return a, true
		}
	}
	return encryptionAlg{}, false
}

// integrityAlg describes an INTEG transform: HMAC with truncation
// (RFC 2404, RFC 4868).
type integrityAlg struct {
	keyword  string
	id       uint16
	hash     string // name of the hash, for newHash
	keyBytes int
	icvBytes int
}

var integrityAlgs = []integrityAlg{
	{"sha1", wire.AUTH_HMAC_SHA1_96, "sha1", 20, 12},
	{"sha256", wire.AUTH_HMAC_SHA2_256_128, "sha256", 32, 16},
	{"sha384", wire.AUTH_HMAC_SHA2_384_192, "sha384", 48, 24},
	{"sha512", wire.AUTH_HMAC_SHA2_512_256, "sha512", 64, 32},
}

func lookupIntegrity(id uint16) (integrityAlg, bool) {
	for _, a := range integrityAlgs {
		if a.id == id {
			return a, true
		}
	}
	return integrityAlg{}, false
}

// prfAlg describes a PRF transform (HMAC, RFC 2104 and RFC 4868).
type prfAlg struct {
	keyword string
	id      uint16
	hash    string
	size    int // output length and preferred key length
}

var prfAlgs = []prfAlg{
	{"prfsha1", wire.PRF_HMAC_SHA1, "sha1", 20},
	{"prfsha256", wire.PRF_HMAC_SHA2_256, "sha256", 32},
	{"prfsha384", wire.PRF_HMAC_SHA2_384, "sha384", 48},
	{"prfsha512", wire.PRF_HMAC_SHA2_512, "sha512", 64},
}

func lookupPRF(id uint16) (prfAlg, bool) {
	for _, a := range prfAlgs {
		if a.id == id {
			return a, true
		}
	}
	return prfAlg{}, false
}

// prfForIntegrity is the PRF strongSwan assumes for an IKE proposal that
// names an integrity algorithm but no PRF.
func prfForIntegrity(integ uint16) (uint16, bool) {
	switch integ {
	case wire.AUTH_HMAC_SHA1_96:
		return wire.PRF_HMAC_SHA1, true
	case wire.AUTH_HMAC_SHA2_256_128:
		return wire.PRF_HMAC_SHA2_256, true
	case wire.AUTH_HMAC_SHA2_384_192:
		return wire.PRF_HMAC_SHA2_384, true
	case wire.AUTH_HMAC_SHA2_512_256:
		return wire.PRF_HMAC_SHA2_512, true
	}
	return 0, false
}

// dhGroupAlg names a key exchange method.
type dhGroupAlg struct {
	keyword string
	id      uint16
}

var dhGroupAlgs = []dhGroupAlg{
	{"modp2048", wire.DH_MODP_2048},
	{"modp1024", wire.DH_MODP_1024},
	{"ecp256", wire.DH_ECP_256},
	{"ecp384", wire.DH_ECP_384},
	{"x25519", wire.DH_CURVE25519},
}

func lookupDHGroup(id uint16) (dhGroupAlg, bool) {
	for _, a := range dhGroupAlgs {
		if a.id == id {
			return a, true
		}
	}
	return dhGroupAlg{}, false
}

// IsAEAD reports whether the encryption algorithm also protects integrity.
func (s Suite) IsAEAD() bool {
	a, ok := lookupEncryption(s.Encryption, s.KeyLength)
	return ok && a.aead
}

// EncryptionKeyLen is the length of one direction's encryption key as
// taken from the key material: the cipher key, followed for an AEAD by its
// 4-byte salt (RFC 5282 §7.1, RFC 7634 §2). It is 0 for an unsupported
// algorithm.
func (s Suite) EncryptionKeyLen() int {
	a, ok := lookupEncryption(s.Encryption, s.KeyLength)
	if !ok {
		return 0
	}
	if a.aead {
		return a.keyBytes + aeadSaltLen
	}
	return a.keyBytes
}

// IntegrityKeyLen is the length of one direction's integrity key; 0 with
// an AEAD.
func (s Suite) IntegrityKeyLen() int {
	if s.IsAEAD() {
		return 0
	}
	a, ok := lookupIntegrity(s.Integrity)
	if !ok {
		return 0
	}
	return a.keyBytes
}

// EncryptionName returns the strongSwan keyword of the encryption
// algorithm (aes256gcm16, chacha20poly1305, aes128, ...), which is also the
// name the data plane uses for the AEADs it implements.
func (s Suite) EncryptionName() string {
	if a, ok := lookupEncryption(s.Encryption, s.KeyLength); ok {
		return a.keyword
	}
	return fmt.Sprintf("encr%d_%d", s.Encryption, s.KeyLength)
}

// DataPlaneName returns the name the data plane knows an ESP suite's
// transform by, strongSwan's: the AEAD keyword (aes256gcm16) or the cipher
// and integrity keywords joined by '-' (aes256-sha256).
func (s Suite) DataPlaneName() string {
	if s.IsAEAD() {
		return s.EncryptionName()
	}
	return s.EncryptionName() + "-" + integrityKeyword(s.Integrity)
}

// WeakAlgorithms names the weak algorithms of a session: those of its IKE
// suite (the 1024-bit MODP group, HMAC-SHA1 as PRF or integrity) and of
// its Child SA's ESP transform by its data plane name (HMAC-SHA1-96). They
// are accepted because built-in clients (Windows) offer nothing better by
// default; docs/ike.md shows how to move such clients to stronger ones.
func WeakAlgorithms(ike Suite, espAlgorithm string) []string {
	var weak []string
	if ike.DHGroup == wire.DH_MODP_1024 {
		weak = append(weak, "ike:modp1024")
	}
	if ike.PRF == wire.PRF_HMAC_SHA1 {
		weak = append(weak, "ike:prfsha1")
	}
	if !ike.IsAEAD() && ike.Integrity == wire.AUTH_HMAC_SHA1_96 {
		weak = append(weak, "ike:sha1")
	}
	if strings.HasSuffix(espAlgorithm, "-sha1") {
		weak = append(weak, "esp:sha1")
	}
	return weak
}

// Validate checks that mifsec implements every algorithm of s and that the
// combination is allowed for its protocol.
func (s Suite) Validate() error {
	enc, ok := lookupEncryption(s.Encryption, s.KeyLength)
	if !ok {
		return fmt.Errorf("unsupported encryption algorithm %d with key length %d", s.Encryption, s.KeyLength)
	}
	if enc.aead {
		if s.Integrity != wire.AUTH_NONE {
			return fmt.Errorf("%s is an AEAD and takes no integrity algorithm, got %d", enc.keyword, s.Integrity)
		}
	} else if _, ok := lookupIntegrity(s.Integrity); !ok {
		return fmt.Errorf("%s needs a supported integrity algorithm, got %d", enc.keyword, s.Integrity)
	}
	switch s.Protocol {
	case wire.ProtoIKE:
		if _, ok := lookupPRF(s.PRF); !ok {
			return fmt.Errorf("unsupported PRF %d", s.PRF)
		}
		if _, ok := lookupDHGroup(s.DHGroup); !ok {
			return fmt.Errorf("unsupported Diffie-Hellman group %d", s.DHGroup)
		}
		if s.ESN {
			return errors.New("extended sequence numbers are not an IKE SA transform")
		}
	case wire.ProtoESP:
		if s.PRF != 0 {
			return fmt.Errorf("a PRF (%d) is not an ESP transform", s.PRF)
		}
		if _, ok := lookupDHGroup(s.DHGroup); !ok && s.DHGroup != wire.DH_NONE {
			return fmt.Errorf("unsupported Diffie-Hellman group %d", s.DHGroup)
		}
	default:
		return fmt.Errorf("unsupported protocol %d", s.Protocol)
	}
	return nil
}

// String renders s in strongSwan's proposal syntax, e.g.
// aes256gcm16-prfsha256-x25519 or aes128gcm16-noesn.
func (s Suite) String() string {
	var tok []string
	tok = append(tok, s.EncryptionName())
	if !s.IsAEAD() && s.Integrity != wire.AUTH_NONE {
		tok = append(tok, integrityKeyword(s.Integrity))
	}
	if s.Protocol == wire.ProtoIKE || s.PRF != 0 {
		tok = append(tok, prfKeyword(s.PRF))
	}
	if s.DHGroup != wire.DH_NONE {
		tok = append(tok, dhKeyword(s.DHGroup))
	}
	if s.Protocol == wire.ProtoESP {
		tok = append(tok, esnKeyword(s.ESN))
	}
	return strings.Join(tok, "-")
}

func integrityKeyword(id uint16) string {
	if a, ok := lookupIntegrity(id); ok {
		return a.keyword
	}
	return fmt.Sprintf("integ%d", id)
}

func prfKeyword(id uint16) string {
	if a, ok := lookupPRF(id); ok {
		return a.keyword
	}
	return fmt.Sprintf("prf%d", id)
}

func dhKeyword(id uint16) string {
	if id == wire.DH_NONE {
		return "modpnone"
	}
	if a, ok := lookupDHGroup(id); ok {
		return a.keyword
	}
	return fmt.Sprintf("dh%d", id)
}

func esnKeyword(esn bool) string {
	if esn {
		return "esn"
	}
	return "noesn"
}

// nATDetectionHash returns the data of a NAT_DETECTION_SOURCE_IP or
// NAT_DETECTION_DESTINATION_IP notification: SHA-1(SPIi | SPIr | IP |
// port) (RFC 7296 §2.23). SPIr is 0 in the IKE_SA_INIT request. An
// IPv4-mapped IPv6 address is hashed as the IPv4 address the peer sees.
func nATDetectionHash(spii, spir uint64, addr netip.AddrPort) []byte {
	ip := addr.Addr().Unmap().AsSlice()
	buf := make([]byte, 0, 16+len(ip)+2)
	buf = binary.BigEndian.AppendUint64(buf, spii)
	buf = binary.BigEndian.AppendUint64(buf, spir)
	buf = append(buf, ip...)
	buf = binary.BigEndian.AppendUint16(buf, addr.Port())
	sum := sha1.Sum(buf)
	return sum[:]
}

// RandomSPI returns a random non-zero IKE SA SPI.
func RandomSPI() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// Nonce lengths (RFC 7296 §2.10, §3.9).
const (
	defaultNonceLen = 32
	minNonceLen     = 16
	maxNonceLen     = 256
)

// RandomNonce returns n random bytes for a Nonce payload.
func RandomNonce(n int) ([]byte, error) {
	if n < minNonceLen || n > maxNonceLen {
		return nil, fmt.Errorf("nonce length %d outside %d..%d", n, minNonceLen, maxNonceLen)
	}
	b := make([]byte, n)
	rand.Read(b)
	return b, nil
}

// checkNonce checks a received nonce's length: 16 to 256 bytes and at
// least half the key size of the negotiated PRF (RFC 7296 §2.10).
func checkNonce(prfID uint16, nonce []byte) error {
	if len(nonce) < minNonceLen || len(nonce) > maxNonceLen {
		return fmt.Errorf("nonce of %d bytes, want %d..%d", len(nonce), minNonceLen, maxNonceLen)
	}
	if a, ok := lookupPRF(prfID); ok && len(nonce) < a.size/2 {
		return fmt.Errorf("nonce of %d bytes is shorter than half the %s key size (%d)", len(nonce), a.keyword, a.size)
	}
	return nil
}
