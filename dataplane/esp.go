package dataplane

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// Algorithm is an ESP AEAD transform. The names are strongSwan's.
type Algorithm uint8

const (
	AES128GCM16      Algorithm = iota + 1 // RFC 4106, 16-byte ICV, 128-bit key
	AES256GCM16                           // RFC 4106, 16-byte ICV, 256-bit key
	ChaCha20Poly1305                      // RFC 7634
)

var algorithmNames = map[Algorithm]string{
	AES128GCM16:      "aes128gcm16",
	AES256GCM16:      "aes256gcm16",
	ChaCha20Poly1305: "chacha20poly1305",
}

// Algorithms lists every supported algorithm.
func Algorithms() []Algorithm { return []Algorithm{AES128GCM16, AES256GCM16, ChaCha20Poly1305} }

func (a Algorithm) String() string {
	if s, ok := algorithmNames[a]; ok {
		return s
	}
	return fmt.Sprintf("algorithm-%d", uint8(a))
}

// ParseAlgorithm accepts the strongSwan name of an ESP algorithm.
func ParseAlgorithm(name string) (Algorithm, error) {
	for a, s := range algorithmNames {
		if s == name {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown ESP algorithm %q (supported: aes128gcm16, aes256gcm16, chacha20poly1305)", name)
}

// KeyLen is the length of the keying material: the cipher key followed by the
// 4-byte salt, as IKEv2 derives it and as `ip xfrm` writes it.
func (a Algorithm) KeyLen() int {
	switch a {
	case AES128GCM16:
		return 16 + SaltLen
	case AES256GCM16, ChaCha20Poly1305:
		return 32 + SaltLen
	}
	return 0
}

// Wire layout of an ESP packet with an AEAD transform (RFC 4303 §2, RFC 4106
// §3, RFC 7634 §2) and the buffer layout Seal and Open work in.
//
//	buffer: | scratch 16 | SPI 4 | seq 4 | IV 8 | payload ... | pad 0-3 | pad len | next hdr | ICV 16 |
//	        0            16                    32 = Headroom
//
// The scratch bytes in front of the ESP header hold the nonce and, with ESN,
// the AAD while the AEAD runs, so that neither needs memory of its own: an
// interface call (cipher.AEAD) would move a stack array to the heap on every
// packet.
const (
	SaltLen    = 4
	IVLen      = 8
	ICVLen     = 16
	HeaderLen  = 8 + IVLen              // SPI, sequence number, IV
	scratchLen = 16                     // nonce (12) and the ESN AAD's SPI (4)
	Headroom   = scratchLen + HeaderLen // bytes a caller reserves in front of the inner packet
	Tailroom   = 3 + 2 + ICVLen         // most padding, pad length, next header, ICV
	Overhead   = HeaderLen + Tailroom   // most bytes ESP adds to a packet
	minESPLen  = HeaderLen + 2 + ICVLen
)

// Next header values (IANA protocol numbers) ESP carries.
const (
	NextHeaderIPv4  = 4
	NextHeaderIPv6  = 41
	NextHeaderDummy = 59 // RFC 4303 §2.6: discarded by the receiver
)

// Errors of the sending side.
var (
	// ErrSequenceExhausted means the SA has sent its last sequence number
	// (2^32-1, or 2^64-1 with ESN) and must be rekeyed: ESP never wraps.
	ErrSequenceExhausted = errors.New("esp: sequence number space exhausted, SA needs rekeying")
	ErrBufferTooSmall    = errors.New("esp: buffer too small for headroom, padding and ICV")
	// ErrSequenceLimit means the SA reached the limit SetSequenceLimit set
	// and waits for it to be raised.
	ErrSequenceLimit = errors.New("esp: sequence number limit reached, waiting for the high mark to be stored")
)

// SAConfig describes one direction of an ESP security association.
type SAConfig struct {
	SPI       uint32
	Algorithm Algorithm
	Key       []byte // cipher key followed by the 4-byte salt (Algorithm.KeyLen bytes)
	ESN       bool   // 64-bit extended sequence numbers (RFC 4303 §2.2.1)
	// ReplayWindow is the inbound anti-replay window in packets;
	// 0 means DefaultReplayWindow.
	ReplayWindow int
	// StartAfter is the sequence number an outbound SA counts from: its
	// first packet carries StartAfter+1. A manually keyed SA whose key
	// outlives the process starts above every number an earlier run may
	// have sent, so that no (sequence number, IV) pair, and so no AEAD
	// nonce, repeats under the key (see SetSequenceLimit).
	StartAfter uint64
}

// SA is one ESP security association. An SA is used in one direction; the
// same type serves both. All methods are safe for concurrent use by many
// cores: the sequence number is an atomic counter and the replay window is
// lock-free, so every core seals and opens with no lock.
type SA struct {
	spi    uint32
	alg    Algorithm
	esn    bool
	salt   [SaltLen]byte
	aead   cipher.AEAD
	maxSeq uint64

	seq    atomic.Uint64 // last sequence number handed out
	limit  atomic.Uint64 // highest sequence number that may be handed out
	window *ReplayWindow

	Stats SAStats
}

// SAStats are an SA's traffic counters.
type SAStats struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64 // inner (plaintext) bytes
	Drops   DropCounters
}

// NewSA checks cfg and makes an SA. The key is copied into the cipher; the SA
// keeps no other copy of it.
func NewSA(cfg SAConfig) (*SA, error) {
	if want := cfg.Algorithm.KeyLen(); want == 0 {
		return nil, fmt.Errorf("SA %#x: unknown ESP algorithm %d", cfg.SPI, cfg.Algorithm)
	} else if len(cfg.Key) != want {
		return nil, fmt.Errorf("SA %#x: %s needs %d bytes of key and salt, got %d", cfg.SPI, cfg.Algorithm, want, len(cfg.Key))
	}
	window := cfg.ReplayWindow
	if window == 0 {
		window = DefaultReplayWindow
	}
	w, err := NewReplayWindow(window)
	if err != nil {
		return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
	}
	key, salt := cfg.Key[:len(cfg.Key)-SaltLen], cfg.Key[len(cfg.Key)-SaltLen:]
	var aead cipher.AEAD
	switch cfg.Algorithm {
	case AES128GCM16, AES256GCM16:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
		}
		aead, err = cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
		}
	case ChaCha20Poly1305:
		aead, err = chacha20poly1305.New(key)
		if err != nil {
			return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
		}
	}
	sa := &SA{spi: cfg.SPI, alg: cfg.Algorithm, esn: cfg.ESN, aead: aead, window: w, maxSeq: math.MaxUint32}
	if cfg.ESN {
		sa.maxSeq = math.MaxUint64
	}
	if cfg.StartAfter >= sa.maxSeq {
		return nil, fmt.Errorf("SA %#x: starting after sequence number %d leaves none to send: %w", cfg.SPI, cfg.StartAfter, ErrSequenceExhausted)
	}
	sa.seq.Store(cfg.StartAfter)
	sa.limit.Store(sa.maxSeq)
	copy(sa.salt[:], salt)
	return sa, nil
}

// SetSequenceLimit lets the SA hand out sequence numbers up to limit only
// (at most the SA's last one); past it, sealing fails with
// ErrSequenceLimit until the limit is raised. An owner that records a high
// mark of the numbers used on disk raises the limit only once the mark is
// stored, so that a crash never loses track of a number sent.
func (sa *SA) SetSequenceLimit(limit uint64) { sa.limit.Store(min(limit, sa.maxSeq)) }

// SequenceLimit returns the highest sequence number the SA may hand out.
func (sa *SA) SequenceLimit() uint64 { return sa.limit.Load() }

// MaxSequence returns the SA's last sequence number: 2^32-1, or 2^64-1 with
// ESN.
func (sa *SA) MaxSequence() uint64 { return sa.maxSeq }

// Wipe clears the key material the SA holds itself (the salt); the
// cipher's expanded key belongs to the standard library and goes with the
// SA. Call it once the SA is no longer used by anyone.
func (sa *SA) Wipe() { clear(sa.salt[:]) }

// SPI returns the SA's security parameter index.
func (sa *SA) SPI() uint32 { return sa.spi }

// Algorithm returns the SA's AEAD transform.
func (sa *SA) Algorithm() Algorithm { return sa.alg }

// ESN reports whether the SA uses extended sequence numbers.
func (sa *SA) ESN() bool { return sa.esn }

// ReplayWindow returns the inbound anti-replay window.
func (sa *SA) ReplayWindow() *ReplayWindow { return sa.window }

// LastSequence returns the last sequence number handed out for sending.
func (sa *SA) LastSequence() uint64 { return sa.seq.Load() }

// String names the SA without any key material.
func (sa *SA) String() string { return fmt.Sprintf("SA %#08x %s", sa.spi, sa.alg) }

// ReserveSequence hands out n consecutive sequence numbers and returns the
// first. A worker that seals a batch reserves its numbers with one atomic
// operation; no two callers ever receive the same number, which is what keeps
// IVs (and so AEAD nonces) unique across cores.
func (sa *SA) ReserveSequence(n int) (uint64, error) {
	if n <= 0 {
		return 0, fmt.Errorf("esp: reserving %d sequence numbers", n)
	}
	for {
		last := sa.seq.Load()
		if last > sa.maxSeq-uint64(n) {
			return 0, ErrSequenceExhausted
		}
		if limit := sa.limit.Load(); limit < uint64(n) || last > limit-uint64(n) {
			return 0, ErrSequenceLimit
		}
		if sa.seq.CompareAndSwap(last, last+uint64(n)) {
			return last + 1, nil
		}
	}
}

// SealedLen returns the length of the ESP packet (from SPI to ICV) that
// sealing an n-byte payload produces.
func SealedLen(n int) int { return HeaderLen + n + padLen(n) + 2 + ICVLen }

func padLen(n int) int { return (4 - (n+2)&3) & 3 }

// Seal encrypts the n-byte inner packet at b[Headroom:Headroom+n] in place
// with the SA's next sequence number and returns the ESP packet, a slice of b
// from b[Headroom-HeaderLen] to its ICV. b must have room for SealedLen(n)
// bytes from there; the scratch bytes b[:Headroom-HeaderLen] are overwritten.
// nextHeader is NextHeaderIPv4, NextHeaderIPv6 or NextHeaderDummy.
func (sa *SA) Seal(b []byte, n int, nextHeader byte) ([]byte, error) {
	seq, err := sa.ReserveSequence(1)
	if err != nil {
		return nil, err
	}
	return sa.SealWithSequence(b, n, nextHeader, seq)
}

// SealWithSequence is Seal with a sequence number from ReserveSequence.
// The IV is the 64-bit sequence number, which RFC 4106 §3.1 and RFC 7634 §2
// allow and which makes a nonce repeat impossible while sequence numbers are
// unique.
func (sa *SA) SealWithSequence(b []byte, n int, nextHeader byte, seq uint64) ([]byte, error) {
	end := Headroom + n + padLen(n) + 2
	if n < 0 || len(b) < end+ICVLen {
		return nil, ErrBufferTooSmall
	}
	for i, p := Headroom+n, 1; i < end-2; i, p = i+1, p+1 {
		b[i] = byte(p)
	}
	b[end-2] = byte(padLen(n))
	b[end-1] = nextHeader
	var iv [IVLen]byte
	binary.BigEndian.PutUint64(iv[:], seq)
	return sa.seal(b, end, seq, iv), nil
}

// seal writes the ESP header and encrypts b[Headroom:end], which already
// holds payload and trailer, with an explicit IV (known-answer tests use the
// IVs of published vectors). It returns the ESP packet.
func (sa *SA) seal(b []byte, end int, seq uint64, iv [IVLen]byte) []byte {
	const h = scratchLen
	binary.BigEndian.PutUint32(b[h:], sa.spi)
	binary.BigEndian.PutUint32(b[h+4:], uint32(seq))
	copy(b[h+8:h+16], iv[:])
	nonce := b[:12]
	copy(nonce, sa.salt[:])
	copy(nonce[4:], iv[:])
	var aad []byte
	if sa.esn {
		// AAD = SPI | seq high | seq low: borrow the four bytes before the
		// header for the SPI and the SPI's place for the high half.
		binary.BigEndian.PutUint32(b[h-4:], sa.spi)
		binary.BigEndian.PutUint32(b[h:], uint32(seq>>32))
		aad = b[h-4 : h+8]
	} else {
		aad = b[h : h+8]
	}
	sa.aead.Seal(b[Headroom:Headroom], nonce, b[Headroom:end], aad)
	if sa.esn {
		binary.BigEndian.PutUint32(b[h:], sa.spi)
	}
	return b[h : end+ICVLen]
}

// Open authenticates and decrypts in place the n-byte ESP packet at
// b[Headroom-HeaderLen:], as received from the network, and returns the
// payload (at b[Headroom:]) and its next header. It is OpenTo with the
// packet and the destination in one buffer.
func (sa *SA) Open(b []byte, n int) (payload []byte, nextHeader byte, err error) {
	if n < 0 || len(b) < scratchLen+n {
		sa.Stats.Drops.Add(DropRunt)
		return nil, 0, ErrRunt
	}
	return sa.OpenTo(b, b[scratchLen:scratchLen+n])
}

// OpenTo authenticates the ESP packet pkt and decrypts its payload to
// dst[Headroom:], returning the payload and its next header. It checks the
// replay window before and updates it only after the ICV verified, and
// checks the padding. Every failure is a *DropError, counted in
// sa.Stats.Drops. dst must hold Headroom bytes more than the plaintext
// (len(pkt)-HeaderLen-ICVLen); its first 24 bytes are scratch. dst and pkt either do not overlap
// or are laid out as Open lays them out (pkt at dst[Headroom-HeaderLen:]).
//
// The payload may carry TFC padding after the inner IP packet (RFC 4303
// §2.4); the caller trims it using the IP header's length.
func (sa *SA) OpenTo(dst, pkt []byte) (payload []byte, nextHeader byte, err error) {
	payload, nextHeader, _, err = sa.OpenToSequence(dst, pkt)
	return payload, nextHeader, err
}

// OpenToSequence is OpenTo that also returns the packet's full sequence
// number (with ESN, the inferred 64-bit number), which the receiver's
// resequencer orders by.
func (sa *SA) OpenToSequence(dst, pkt []byte) (payload []byte, nextHeader byte, seq uint64, err error) {
	payload, nextHeader, seq, r := sa.openTo(dst, pkt)
	if r != nil {
		sa.Stats.Drops.Add(r.Reason)
		return nil, 0, 0, r
	}
	sa.Stats.Packets.Add(1)
	sa.Stats.Bytes.Add(uint64(len(payload)))
	return payload, nextHeader, seq, nil
}

func (sa *SA) openTo(dst, pkt []byte) ([]byte, byte, uint64, *DropError) {
	if len(pkt) < minESPLen || len(dst) < Headroom+len(pkt)-HeaderLen-ICVLen {
		return nil, 0, 0, dropErrors[DropRunt]
	}
	if binary.BigEndian.Uint32(pkt) != sa.spi {
		// Not this SA's packet; with ESN the wire SPI is not read again
		// for the AAD, so it must be checked here.
		return nil, 0, 0, dropErrors[DropUnknownSPI]
	}
	low := binary.BigEndian.Uint32(pkt[4:])
	seq := uint64(low)
	if sa.esn {
		seq = sa.window.InferSequence(low)
	}
	if err := sa.window.Check(seq); err != nil {
		return nil, 0, 0, err.(*DropError)
	}
	payload, nextHeader, r := sa.decrypt(dst, pkt, seq)
	if r != nil {
		return nil, 0, 0, r
	}
	if err := sa.window.Accept(seq); err != nil {
		return nil, 0, 0, err.(*DropError)
	}
	return payload, nextHeader, seq, nil
}

// decrypt verifies and decrypts pkt to dst[Headroom:] with seq's high half
// taken as given, and checks the trailer. The replay window is not
// consulted. The nonce is built in dst[0:12] and the ESN AAD in dst[12:24];
// when pkt sits at dst[16:] that AAD overwrites the SPI already checked and
// rewrites the sequence number in place.
func (sa *SA) decrypt(dst, pkt []byte, seq uint64) ([]byte, byte, *DropError) {
	nonce := dst[:12]
	copy(nonce, sa.salt[:])
	copy(nonce[4:], pkt[8:16])
	aad := pkt[:8]
	if sa.esn {
		aad = dst[12:24]
		binary.BigEndian.PutUint32(aad, sa.spi)
		binary.BigEndian.PutUint32(aad[4:], uint32(seq>>32))
		binary.BigEndian.PutUint32(aad[8:], uint32(seq))
	}
	plain, err := sa.aead.Open(dst[Headroom:Headroom], nonce, pkt[HeaderLen:], aad)
	if err != nil {
		return nil, 0, dropErrors[DropBadICV]
	}
	if len(plain) < 2 {
		return nil, 0, dropErrors[DropBadPadding]
	}
	pad := int(plain[len(plain)-2])
	nextHeader := plain[len(plain)-1]
	if pad+2 > len(plain) {
		return nil, 0, dropErrors[DropBadPadding]
	}
	payloadLen := len(plain) - 2 - pad
	for i := 0; i < pad; i++ {
		if plain[payloadLen+i] != byte(i+1) {
			return nil, 0, dropErrors[DropBadPadding]
		}
	}
	return plain[:payloadLen], nextHeader, nil
}
