package ike

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"

	"github.com/mifsec/mifsec/ike/wire"
)

// Key derivation of RFC 7296: prf, prf+ (§2.13), the IKE SA keys (§2.14),
// IKE SA rekeying (§2.18) and Child SA key material (§2.17).

func newHash(name string) func() hash.Hash {
	switch name {
	case "sha1":
		return sha1.New
	case "sha256":
		return sha256.New
	case "sha384":
		return sha512.New384
	case "sha512":
		return sha512.New
	}
	return nil
}

// PRF is a negotiated pseudorandom function: HMAC with a SHA-1 or SHA-2
// hash.
type PRF struct {
	alg prfAlg
	h   func() hash.Hash
}

// NewPRF returns the PRF with the given transform ID.
func NewPRF(id uint16) (PRF, error) {
	a, ok := lookupPRF(id)
	if !ok {
		return PRF{}, fmt.Errorf("unsupported PRF %d", id)
	}
	return PRF{alg: a, h: newHash(a.hash)}, nil
}

// ID returns the PRF's transform ID.
func (p PRF) ID() uint16 { return p.alg.id }

// Size is the PRF's output length, which is also its preferred key length
// (the length of SK_d, SK_pi and SK_pr).
func (p PRF) Size() int { return p.alg.size }

// Sum returns prf(key, data); nil for the zero PRF. Its method value has
// the shape of the prf arguments of the AUTH helpers.
func (p PRF) Sum(key, data []byte) []byte {
	if p.h == nil {
		return nil
	}
	m := hmac.New(p.h, key)
	m.Write(data)
	return m.Sum(nil)
}

// Plus returns the first n bytes of prf+(key, seed) = T1 | T2 | ... with
// T1 = prf(key, seed | 0x01) and Tk = prf(key, Tk-1 | seed | k) (RFC 7296
// §2.13); this is HKDF-Expand (RFC 5869) with the same HMAC. The one-byte
// counter limits the output to 255 blocks.
func (p PRF) Plus(key, seed []byte, n int) ([]byte, error) {
	if p.h == nil {
		return nil, errors.New("PRF used without NewPRF")
	}
	if n < 0 || n > 255*p.alg.size {
		return nil, fmt.Errorf("prf+ cannot produce %d bytes with %s (at most %d)", n, p.alg.keyword, 255*p.alg.size)
	}
	// Exactly n bytes: an IKE SA keeps its keys in this slice for its
	// life. The last block is cut to what fits.
	out := make([]byte, 0, n)
	m := hmac.New(p.h, key)
	var t []byte
	for i := 1; len(out) < n; i++ {
		m.Reset()
		m.Write(t)
		m.Write(seed)
		m.Write([]byte{byte(i)})
		t = m.Sum(t[:0])
		out = append(out, t[:min(len(t), n-len(out))]...)
	}
	return out, nil
}

// Keys are the keys of an IKE SA (RFC 7296 §2.14). The i and r keys
// belong to the original initiator and responder of the IKE SA; after a
// rekey, to the initiator and responder of the rekeying exchange. With an
// AEAD SKai and SKar are empty and SKei, SKer end with the 4-byte salt.
//
// Keys never print their key material: formatting with fmt or slog shows
// only the suite.
//
// The seven keys are one slice, prf+'s output in RFC 7296's order (SK_d |
// SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr), and the methods of the
// same names cut them out of it: a gateway holds an IKE SA's keys for each
// client, and seven slice headers were 168 bytes of each. SK_pi and SK_pr
// come last, so that forgetAuthKeys can let them go once IKE_AUTH is done.
type Keys struct {
	Suite    Suite
	material []byte
}

// Key indexes into Keys.material, in prf+'s order.
const (
	keySKd = iota
	keySKai
	keySKar
	keySKei
	keySKer
	keySKpi
	keySKpr
	keyCount
)

// keyLengths returns the lengths of the seven keys of suite s, in prf+'s
// order.
func keyLengths(s Suite) [keyCount]int {
	p, _ := lookupPRF(s.PRF)
	integ, enc := s.IntegrityKeyLen(), s.EncryptionKeyLen()
	return [keyCount]int{p.size, integ, integ, enc, enc, p.size, p.size}
}

// keysLength is the length of all seven keys of suite s.
func keysLength(s Suite) int {
	n := 0
	for _, l := range keyLengths(s) {
		n += l
	}
	return n
}

// key returns key i of k (keySKd...), nil if k holds no such key (SK_pi
// and SK_pr after forgetAuthKeys, or zero Keys).
func (k *Keys) key(i int) []byte {
	lens := keyLengths(k.Suite)
	from := 0
	for _, n := range lens[:i] {
		from += n
	}
	to := from + lens[i]
	if to > len(k.material) {
		return nil
	}
	return k.material[from:to:to]
}

// SKd returns SK_d, the key Child SAs' keys and a rekeyed IKE SA's come
// from.
func (k *Keys) SKd() []byte { return k.key(keySKd) }

// SKai returns SK_ai, the initiator's integrity key (empty with an AEAD).
func (k *Keys) SKai() []byte { return k.key(keySKai) }

// SKar returns SK_ar, the responder's integrity key (empty with an AEAD).
func (k *Keys) SKar() []byte { return k.key(keySKar) }

// SKei returns SK_ei, the initiator's encryption key (with an AEAD, the
// cipher key and its 4-byte salt).
func (k *Keys) SKei() []byte { return k.key(keySKei) }

// SKer returns SK_er, the responder's encryption key.
func (k *Keys) SKer() []byte { return k.key(keySKer) }

// SKpi returns SK_pi, the initiator's key for its AUTH payload; nil once
// forgotten.
func (k *Keys) SKpi() []byte { return k.key(keySKpi) }

// SKpr returns SK_pr, the responder's key for its AUTH payload; nil once
// forgotten.
func (k *Keys) SKpr() []byte { return k.key(keySKpr) }

// forgetAuthKeys wipes SK_pi and SK_pr and lets them go: only the AUTH
// payloads of IKE_AUTH need them (an IKE SA made by a rekey has no use for
// them at all). The other keys move to a slice of their own, so whatever
// holds one of them (an SK crypter) must take it again.
func (k *Keys) forgetAuthKeys() {
	lens := keyLengths(k.Suite)
	if len(k.material) != keysLength(k.Suite) {
		return // already forgotten, or no keys
	}
	kept := make([]byte, len(k.material)-lens[keySKpi]-lens[keySKpr])
	copy(kept, k.material)
	clear(k.material)
	k.material = kept
}

// deriveKeys computes SKEYSEED = prf(Ni | Nr, g^ir) and the seven keys
// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED,
// Ni | Nr | SPIi | SPIr) of a new IKE SA. sharedSecret is g^ir as
// KeyExchange.SharedSecret returns it.
func deriveKeys(s Suite, sharedSecret, ni, nr []byte, spii, spir uint64) (*Keys, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("deriving IKE SA keys: %w", err)
	}
	if s.Protocol != wire.ProtoIKE {
		return nil, fmt.Errorf("deriving IKE SA keys for a protocol %d suite", s.Protocol)
	}
	p, err := NewPRF(s.PRF)
	if err != nil {
		return nil, err
	}
	nonces := bytes.Join([][]byte{ni, nr}, nil)
	skeyseed := p.Sum(nonces, sharedSecret)
	defer clear(skeyseed)
	return expandIKEKeys(s, p, skeyseed, nonces, spii, spir)
}

// Rekey derives the keys of the IKE SA that replaces k's (RFC 7296 §2.18):
// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), computed with the old
// IKE SA's PRF, then the seven keys as in deriveKeys with the new suite's
// PRF. Ni, Nr and the SPIs are those of the rekeying CREATE_CHILD_SA
// exchange: i is the side that initiated it.
func (k *Keys) Rekey(s Suite, sharedSecret, ni, nr []byte, spii, spir uint64) (*Keys, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("deriving rekeyed IKE SA keys: %w", err)
	}
	if s.Protocol != wire.ProtoIKE {
		return nil, fmt.Errorf("deriving IKE SA keys for a protocol %d suite", s.Protocol)
	}
	oldPRF, err := NewPRF(k.Suite.PRF)
	if err != nil {
		return nil, fmt.Errorf("old IKE SA: %w", err)
	}
	newPRF, err := NewPRF(s.PRF)
	if err != nil {
		return nil, err
	}
	nonces := bytes.Join([][]byte{ni, nr}, nil)
	skeyseed := oldPRF.Sum(k.SKd(), bytes.Join([][]byte{sharedSecret, nonces}, nil))
	defer clear(skeyseed)
	return expandIKEKeys(s, newPRF, skeyseed, nonces, spii, spir)
}

func expandIKEKeys(s Suite, p PRF, skeyseed, nonces []byte, spii, spir uint64) (*Keys, error) {
	seed := make([]byte, 0, len(nonces)+16)
	seed = append(seed, nonces...)
	seed = binary.BigEndian.AppendUint64(seed, spii)
	seed = binary.BigEndian.AppendUint64(seed, spir)

	km, err := p.Plus(skeyseed, seed, keysLength(s))
	if err != nil {
		return nil, err
	}
	return &Keys{Suite: s, material: km}, nil
}

// PRF returns the IKE SA's PRF, for AUTH payloads and further derivation.
func (k *Keys) PRF() (PRF, error) { return NewPRF(k.Suite.PRF) }

// ChildKeys are the keys of a Child SA (a pair of ESP SAs). "Initiator"
// and "responder" are the roles in the exchange that created the Child SA
// (IKE_AUTH or CREATE_CHILD_SA), whoever started the IKE SA. An AEAD
// encryption key is the cipher key followed by its 4-byte salt, which is
// what the data plane takes; the integrity keys are then empty.
//
// ChildKeys never print their key material.
type ChildKeys struct {
	Suite                                   Suite
	InitiatorEncryption, InitiatorIntegrity []byte // protect initiator → responder
	ResponderEncryption, ResponderIntegrity []byte // protect responder → initiator
}

// DeriveChildKeys computes KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) for
// a Child SA with suite s and splits it: the initiator→responder keys
// first, encryption before integrity (RFC 7296 §2.17). sharedSecret is nil
// without a key exchange (IKE_AUTH, or CREATE_CHILD_SA without PFS); s
// must then have no DH group, as SelectOptions.IgnoreDH and
// ProposalSpec.WithoutDH give for IKE_AUTH. Ni and Nr are the IKE SA's
// nonces for the Child SA of IKE_AUTH, otherwise those of the
// CREATE_CHILD_SA exchange.
func (k *Keys) DeriveChildKeys(s Suite, sharedSecret, ni, nr []byte) (*ChildKeys, error) {
	ks, err := k.deriveChildKeySets(s, sharedSecret, ni, nr, 1)
	if err != nil {
		return nil, err
	}
	return ks[0], nil
}

// deriveChildKeySets is DeriveChildKeys for n SAs of suite s in one
// exchange: n sets of keys taken from KEYMAT one after the other, the
// first the Child SA's (the same bytes DeriveChildKeys gives), the second
// its probe SA's (ProbeSA).
func (k *Keys) deriveChildKeySets(s Suite, sharedSecret, ni, nr []byte, n int) ([]*ChildKeys, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("deriving Child SA keys: %w", err)
	}
	if s.Protocol != wire.ProtoESP {
		return nil, fmt.Errorf("deriving Child SA keys for a protocol %d suite", s.Protocol)
	}
	if (s.DHGroup != wire.DH_NONE) != (len(sharedSecret) > 0) {
		return nil, fmt.Errorf("suite %s and shared secret disagree about a key exchange for the Child SA", s)
	}
	p, err := NewPRF(k.Suite.PRF)
	if err != nil {
		return nil, fmt.Errorf("IKE SA: %w", err)
	}
	encLen, integLen := s.EncryptionKeyLen(), s.IntegrityKeyLen()
	km, err := p.Plus(k.SKd(), bytes.Join([][]byte{sharedSecret, ni, nr}, nil), n*2*(encLen+integLen))
	if err != nil {
		return nil, err
	}
	sets := make([]*ChildKeys, n)
	for i := range sets {
		c := &ChildKeys{Suite: s}
		for _, f := range []struct {
			dst *[]byte
			n   int
		}{
			{&c.InitiatorEncryption, encLen}, {&c.InitiatorIntegrity, integLen},
			{&c.ResponderEncryption, encLen}, {&c.ResponderIntegrity, integLen},
		} {
			*f.dst = km[:f.n:f.n]
			km = km[f.n:]
		}
		sets[i] = c
	}
	return sets, nil
}

// Outbound returns the keys of the SA this side sends with; initiator says
// whether it initiated the exchange that created the Child SA.
func (c *ChildKeys) Outbound(initiator bool) (encryption, integrity []byte) {
	if initiator {
		return c.InitiatorEncryption, c.InitiatorIntegrity
	}
	return c.ResponderEncryption, c.ResponderIntegrity
}

// Inbound returns the keys of the SA this side receives with.
func (c *ChildKeys) Inbound(initiator bool) (encryption, integrity []byte) {
	return c.Outbound(!initiator)
}

// Wipe overwrites the key material with zeros.
func (k *Keys) Wipe() { clear(k.material) }

// Wipe overwrites the Child SA's keys with zeros and drops them. Call it
// once the data plane has made its SAs (it keeps copies of its own), or
// when the SA is removed: nothing else reads them, and a gateway holding
// them for every client kept some 0.3 KB of secrets per client it no
// longer needed.
func (c *ChildSA) Wipe() {
	clear(c.InKey)
	clear(c.OutKey)
	c.InKey, c.OutKey = nil, nil
	if c.Probe != nil {
		clear(c.Probe.InKey)
		clear(c.Probe.OutKey)
		c.Probe.InKey, c.Probe.OutKey = nil, nil
	}
}

// Wipe overwrites the key material with zeros.
func (c *ChildKeys) Wipe() {
	for _, b := range [][]byte{c.InitiatorEncryption, c.InitiatorIntegrity, c.ResponderEncryption, c.ResponderIntegrity} {
		clear(b)
	}
}

// String describes k without its key material.
func (k Keys) String() string { return "IKE SA keys (" + k.Suite.String() + ", redacted)" }

// Format prints k without its key material, whatever the verb.
func (k Keys) Format(f fmt.State, _ rune) { fmt.Fprint(f, k.String()) }

// LogValue logs k without its key material.
func (k Keys) LogValue() slog.Value { return slog.StringValue(k.String()) }

// String describes c without its key material.
func (c ChildKeys) String() string { return "Child SA keys (" + c.Suite.String() + ", redacted)" }

// Format prints c without its key material, whatever the verb.
func (c ChildKeys) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// LogValue logs c without its key material.
func (c ChildKeys) LogValue() slog.Value { return slog.StringValue(c.String()) }
