package dataplane

import (
	"bytes"
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// Algorithm is an ESP transform: an AEAD, or AES-CBC with an HMAC
// (encrypt-then-MAC). The names are strongSwan's.
type Algorithm uint8

const (
	AES128GCM16      Algorithm = iota + 1 // RFC 4106, 16-byte ICV, 128-bit key
	AES256GCM16                           // RFC 4106, 16-byte ICV, 256-bit key
	ChaCha20Poly1305                      // RFC 7634
	AES128SHA1                            // AES-128-CBC (RFC 3602), HMAC-SHA1-96 (RFC 2404)
	AES128SHA256                          // AES-128-CBC, HMAC-SHA2-256-128 (RFC 4868)
	AES128SHA384                          // AES-128-CBC, HMAC-SHA2-384-192
	AES128SHA512                          // AES-128-CBC, HMAC-SHA2-512-256
	AES192SHA1                            // AES-192-CBC, HMAC-SHA1-96
	AES192SHA256                          // AES-192-CBC, HMAC-SHA2-256-128
	AES192SHA384                          // AES-192-CBC, HMAC-SHA2-384-192
	AES192SHA512                          // AES-192-CBC, HMAC-SHA2-512-256
	AES256SHA1                            // AES-256-CBC, HMAC-SHA1-96
	AES256SHA256                          // AES-256-CBC, HMAC-SHA2-256-128
	AES256SHA384                          // AES-256-CBC, HMAC-SHA2-384-192
	AES256SHA512                          // AES-256-CBC, HMAC-SHA2-512-256
	numAlgorithms
)

// algorithmInfo describes a transform: its name, its key lengths and the
// framing it gives a packet.
type algorithmInfo struct {
	name    string
	aead    bool
	cipher  int              // cipher key bytes
	macKey  int              // HMAC key bytes; 0 for an AEAD
	icv     int              // ICV bytes on the wire
	newHash func() hash.Hash // the HMAC's hash; nil for an AEAD
}

var algorithmInfos = [numAlgorithms]algorithmInfo{
	AES128GCM16:      {name: "aes128gcm16", aead: true, cipher: 16, icv: icvLen},
	AES256GCM16:      {name: "aes256gcm16", aead: true, cipher: 32, icv: icvLen},
	ChaCha20Poly1305: {name: "chacha20poly1305", aead: true, cipher: 32, icv: icvLen},
	AES128SHA1:       {name: "aes128-sha1", cipher: 16, macKey: 20, icv: 12, newHash: sha1.New},
	AES128SHA256:     {name: "aes128-sha256", cipher: 16, macKey: 32, icv: 16, newHash: sha256.New},
	AES128SHA384:     {name: "aes128-sha384", cipher: 16, macKey: 48, icv: 24, newHash: sha512.New384},
	AES128SHA512:     {name: "aes128-sha512", cipher: 16, macKey: 64, icv: 32, newHash: sha512.New},
	AES192SHA1:       {name: "aes192-sha1", cipher: 24, macKey: 20, icv: 12, newHash: sha1.New},
	AES192SHA256:     {name: "aes192-sha256", cipher: 24, macKey: 32, icv: 16, newHash: sha256.New},
	AES192SHA384:     {name: "aes192-sha384", cipher: 24, macKey: 48, icv: 24, newHash: sha512.New384},
	AES192SHA512:     {name: "aes192-sha512", cipher: 24, macKey: 64, icv: 32, newHash: sha512.New},
	AES256SHA1:       {name: "aes256-sha1", cipher: 32, macKey: 20, icv: 12, newHash: sha1.New},
	AES256SHA256:     {name: "aes256-sha256", cipher: 32, macKey: 32, icv: 16, newHash: sha256.New},
	AES256SHA384:     {name: "aes256-sha384", cipher: 32, macKey: 48, icv: 24, newHash: sha512.New384},
	AES256SHA512:     {name: "aes256-sha512", cipher: 32, macKey: 64, icv: 32, newHash: sha512.New},
}

func (a Algorithm) info() (algorithmInfo, bool) {
	if a == 0 || a >= numAlgorithms {
		return algorithmInfo{}, false
	}
	return algorithmInfos[a], true
}

// Algorithms lists every supported algorithm, the AEADs first.
func Algorithms() []Algorithm {
	out := make([]Algorithm, 0, numAlgorithms-1)
	for a := Algorithm(1); a < numAlgorithms; a++ {
		out = append(out, a)
	}
	return out
}

func (a Algorithm) String() string {
	if i, ok := a.info(); ok {
		return i.name
	}
	return fmt.Sprintf("algorithm-%d", uint8(a))
}

// ParseAlgorithm accepts the strongSwan name of an ESP algorithm: an AEAD
// (aes256gcm16) or a cipher and an integrity algorithm (aes256-sha256).
func ParseAlgorithm(name string) (Algorithm, error) {
	var names []string
	for a := Algorithm(1); a < numAlgorithms; a++ {
		if algorithmInfos[a].name == name {
			return a, nil
		}
		names = append(names, algorithmInfos[a].name)
	}
	return 0, fmt.Errorf("unknown ESP algorithm %q (supported: %s)", name, strings.Join(names, ", "))
}

// AEAD reports whether the algorithm is an AEAD; otherwise it is AES-CBC
// with an HMAC.
func (a Algorithm) AEAD() bool {
	i, _ := a.info()
	return i.aead
}

// KeyLen is the length of the keying material. For an AEAD it is the
// cipher key followed by the 4-byte salt, as IKEv2 derives it and as `ip
// xfrm` writes it; for AES-CBC with an HMAC it is the encryption key
// followed by the integrity key, the order IKEv2 takes them from KEYMAT
// (RFC 7296 §2.17).
func (a Algorithm) KeyLen() int {
	i, ok := a.info()
	switch {
	case !ok:
		return 0
	case i.aead:
		return i.cipher + SaltLen
	}
	return i.cipher + i.macKey
}

// ICVLen returns the length of the algorithm's integrity check value.
func (a Algorithm) ICVLen() int {
	i, _ := a.info()
	return i.icv
}

// HeaderLen returns the length of the ESP header with the algorithm's IV:
// SPI, sequence number and IV.
func (a Algorithm) HeaderLen() int {
	if a.AEAD() {
		return HeaderLen
	}
	return cbcHeaderLen
}

// SealedLen returns the length of the ESP packet (from SPI to ICV) that
// sealing an n-byte payload with the algorithm produces.
func (a Algorithm) SealedLen(n int) int {
	if a.AEAD() {
		return sealedLen(n)
	}
	return cbcHeaderLen + cbcPadded(n) + a.ICVLen()
}

// MaxPayload returns the largest inner packet whose ESP packet (SPI to
// ICV) fits in space bytes with the algorithm, or 0 if none does.
func (a Algorithm) MaxPayload(space int) int {
	if _, ok := a.info(); !ok {
		return 0
	}
	n := space - a.HeaderLen() - a.ICVLen() - 2
	for n > 0 && a.SealedLen(n) > space {
		n--
	}
	return max(n, 0)
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
//
// With AES-CBC and an HMAC (RFC 3602, RFC 4303 §3.3.2) the IV is a whole
// block, the payload and trailer are padded to 16 bytes, and the ICV is
// 12 to 32 bytes. The payload stays at Headroom, so the header starts 8
// bytes into the buffer:
//
//	buffer: | scratch 8 | SPI 4 | seq 4 | IV 16 | payload ... | pad 0-15 | pad len | next hdr | ICV 12-32 |
//	        0           8                       32 = Headroom
//
// HeaderLen, ivLen, icvLen and sealedLen are the AEAD values; an SA's own
// are SA.SealedLen and the Algorithm methods. Headroom and Tailroom fit
// every algorithm.
const (
	SaltLen      = 4
	ivLen        = 8
	icvLen       = 16
	HeaderLen    = 8 + ivLen              // SPI, sequence number, IV
	scratchLen   = 16                     // nonce (12) and the ESN AAD's SPI (4)
	Headroom     = scratchLen + HeaderLen // bytes a caller reserves in front of the inner packet
	cbcBlock     = aes.BlockSize
	cbcHeaderLen = 8 + cbcBlock                 // SPI, sequence number, 16-byte IV
	maxICVLen    = 32                           // HMAC-SHA2-512-256
	Tailroom     = cbcBlock - 1 + 2 + maxICVLen // most padding, pad length, next header, longest ICV
	overhead     = cbcHeaderLen + Tailroom      // most bytes ESP adds to a packet, any algorithm
	minESPLen    = HeaderLen + 2 + icvLen       // the shortest ESP packet of any algorithm
	minCBCLen    = cbcHeaderLen + cbcBlock + 12 // one block and the shortest ICV
)

// Next header values (IANA protocol numbers) ESP carries.
const (
	NextHeaderIPv4  = 4
	nextHeaderIPv6  = 41
	nextHeaderDummy = 59 // RFC 4303 §2.6: discarded by the receiver
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
	// 0 means DefaultReplayWindow. A window larger than 480 packets
	// starts at 480 and grows to its size when needed (ReplayWindow.Grow).
	ReplayWindow int
	// ReplayWindowStart, when set, is the size the window starts at
	// instead (at least MinReplayWindow, at most ReplayWindow's size).
	ReplayWindowStart int
	// Outbound makes an SA that only seals: it has no replay window
	// (ReplayWindow must be 0), and Open drops every packet as one of an
	// unknown SPI. Some 90 bytes less per SA than the smallest window,
	// two per client on a gateway (the data SA's and the probe SA's).
	Outbound bool
	// StartAfter is the sequence number an outbound SA counts from: its
	// first packet carries StartAfter+1. A manually keyed SA whose key
	// outlives the process starts above every number an earlier run may
	// have sent, so that no (sequence number, IV) pair, and so no AEAD
	// nonce, repeats under the key (see SetSequenceLimit).
	StartAfter uint64
	// Transport makes the SA carry transport-mode ESP (RFC 4303 §3.1.1,
	// transport.go): the engine seals what follows a packet's IP header
	// and rebuilds that header from the selectors on receipt. The
	// selectors of such an SA name one address on each side.
	Transport bool
}

// SA is one ESP security association. An SA is used in one direction; the
// same type serves both. All methods are safe for concurrent use by many
// cores: the sequence number is an atomic counter and the replay window is
// lock-free, so every core seals and opens with no lock.
type SA struct {
	spi  uint32
	alg  Algorithm
	esn  bool
	salt [SaltLen]byte
	// probeSPI is the SPI of its probe SA (SetProbeSA, SetProbeSAConfig);
	// 0 without one.
	probeSPI uint32
	// aead is the expanded cipher, made from key by the first packet
	// sealed or opened (cipher), and dropped again once the SA has been
	// idle for a while (releaseIfIdle): a gateway holds some 750 bytes of
	// AES-GCM state per SA, and most SAs carry nothing most of the time
	// (a client's probe SAs while it has one path; the SAs of a client
	// that is connected and idle). It is nil with AES-CBC and an HMAC
	// (cbc is set then).
	aead     atomic.Pointer[aeadCipher]
	expandMu sync.Mutex
	key      *[32]byte // the AEAD key, until Wipe zeroes and drops it
	keyLen   uint8
	// idleMark is what the SA's sequence numbers added up to at the sweep
	// idleSweep (releaseIfIdle): unchanged at a later sweep, no packet was
	// sealed or accepted in between. Only the engine's idle sweep reads
	// and writes them.
	idleSweep uint32
	idleMark  uint64
	cbc       *cbcState
	maxSeq    uint64
	// headerLen and icvLen are the algorithm's (Algorithm.HeaderLen,
	// Algorithm.ICVLen), kept here for the per-packet paths.
	headerLen, icvLen int
	transport         bool // SAConfig.Transport

	seq    atomic.Uint64 // last sequence number handed out
	limit  atomic.Uint64 // highest sequence number that may be handed out
	window *ReplayWindow

	// probe is the SA's probe SA (SetProbeSA), or nil: probes then take
	// sequence numbers of this SA. One given by SetProbeSAConfig is made
	// from lazyProbe by the first probe sealed or opened (ProbeSA): most
	// of a gateway's clients have one path and never probe, and an SA is
	// some 400 bytes more than the key it is made from.
	probe     atomic.Pointer[SA]
	lazyProbe *probeSAConfig // until the probe SA is made, or Wipe; under expandMu

	Stats SAStats
}

// SAStats are an SA's traffic counters.
type SAStats struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64 // inner (plaintext) bytes
	Drops   DropCounters
}

// aeadCipher holds an SA's expanded AEAD.
type aeadCipher struct{ cipher.AEAD }

// NewSA checks cfg and makes an SA. An AEAD's key is expanded into the
// cipher by the first packet, and kept (the expanded cipher holds it too)
// so that the cipher can be dropped while the SA is idle and made again;
// Wipe zeroes it.
func NewSA(cfg SAConfig) (*SA, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
	}
	var w *ReplayWindow
	var err error
	if !cfg.Outbound {
		window := cfg.windowSize()
		if w, err = newGrowingReplayWindow(cmp.Or(cfg.ReplayWindowStart, min(window, replayStartWindow)), window); err != nil {
			return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
		}
	}
	sa := &SA{spi: cfg.SPI, alg: cfg.Algorithm, esn: cfg.ESN, window: w, maxSeq: math.MaxUint32,
		headerLen: cfg.Algorithm.HeaderLen(), icvLen: cfg.Algorithm.ICVLen(), transport: cfg.Transport}
	if cfg.ESN {
		sa.maxSeq = math.MaxUint64
	}
	if cfg.StartAfter >= sa.maxSeq {
		return nil, fmt.Errorf("SA %#x: starting after sequence number %d leaves none to send: %w", cfg.SPI, cfg.StartAfter, ErrSequenceExhausted)
	}
	sa.seq.Store(cfg.StartAfter)
	sa.limit.Store(sa.maxSeq)
	info, _ := cfg.Algorithm.info()
	if !info.aead {
		if sa.cbc, err = newCBCState(info, cfg.Key); err != nil {
			return nil, fmt.Errorf("SA %#x: %w", cfg.SPI, err)
		}
		return sa, nil
	}
	key, salt := cfg.Key[:len(cfg.Key)-SaltLen], cfg.Key[len(cfg.Key)-SaltLen:]
	if len(key) > len(sa.key) {
		return nil, fmt.Errorf("SA %#x: a %d-byte key", cfg.SPI, len(key))
	}
	sa.key = new([32]byte)
	sa.keyLen = uint8(copy(sa.key[:], key))
	copy(sa.salt[:], salt)
	return sa, nil
}

// cipher returns the SA's AEAD, expanding the key on first use. The hot
// path pays one atomic load for the laziness.
func (sa *SA) cipher() cipher.AEAD {
	if a := sa.aead.Load(); a != nil {
		return a.AEAD
	}
	return sa.expand()
}

// expand makes the AEAD from the key, if no other packet did meanwhile.
func (sa *SA) expand() cipher.AEAD {
	sa.expandMu.Lock()
	defer sa.expandMu.Unlock()
	return sa.expandLocked()
}

// expandLocked is expand with expandMu held.
func (sa *SA) expandLocked() cipher.AEAD {
	if a := sa.aead.Load(); a != nil {
		return a.AEAD
	}
	key := sa.key[:sa.keyLen]
	var a cipher.AEAD
	var err error
	switch sa.alg {
	case AES128GCM16, AES256GCM16:
		var block cipher.Block
		if block, err = aes.NewCipher(key); err == nil {
			a, err = cipher.NewGCM(block)
		}
	case ChaCha20Poly1305:
		a, err = chacha20poly1305.New(key)
	default:
		err = fmt.Errorf("%s is not an AEAD", sa.alg)
	}
	if err != nil {
		// NewSA checked the algorithm and the key's length, all that
		// either constructor checks.
		panic(fmt.Sprintf("SA %#x: expanding a checked key: %v", sa.spi, err))
	}
	sa.aead.Store(&aeadCipher{a})
	return a
}

// releaseIfIdle drops the SA's expanded cipher if no packet was sealed or
// accepted since the previous sweep, and reports whether it did; the next
// packet expands the key again (some 1.5 µs). A packet that loaded the
// cipher before it was dropped still seals or opens with it. The engine's
// idle sweep calls it for every SA it holds (Engine.ReleaseIdleCiphers),
// numbering its sweeps from 1: a second call in the same sweep changes
// nothing.
func (sa *SA) releaseIfIdle(sweep uint32) bool {
	if sa.idleSweep == sweep {
		return false
	}
	first := sa.idleSweep == 0
	sa.idleSweep = sweep
	mark := sa.seq.Load() + sa.window.Top() // one of them is 0: an SA is used one way
	if first || mark != sa.idleMark {
		sa.idleMark = mark
		return false
	}
	if sa.aead.Load() == nil {
		return false
	}
	sa.expandMu.Lock()
	defer sa.expandMu.Unlock()
	if sa.key == nil {
		return false // wiped: the cipher is all that seals or opens now
	}
	sa.aead.Store(nil)
	return true
}

// check checks what an SA is made from, short of its replay window's own
// bounds (checkReplayWindowSize).
func (cfg SAConfig) check() error {
	switch want := cfg.Algorithm.KeyLen(); {
	case want == 0:
		return fmt.Errorf("unknown ESP algorithm %d", cfg.Algorithm)
	case len(cfg.Key) != want:
		return fmt.Errorf("%s needs %d bytes of key and salt, got %d", cfg.Algorithm, want, len(cfg.Key))
	case cfg.Outbound && (cfg.ReplayWindow != 0 || cfg.ReplayWindowStart != 0):
		return fmt.Errorf("an outbound SA has no replay window (asked for %d packets, starting at %d)", cfg.ReplayWindow, cfg.ReplayWindowStart)
	case cfg.ReplayWindowStart != 0 && (cfg.ReplayWindowStart < MinReplayWindow || cfg.ReplayWindowStart > cfg.windowSize()):
		return fmt.Errorf("a replay window starting at %d packets: must be between %d and its size, %d", cfg.ReplayWindowStart, MinReplayWindow, cfg.windowSize())
	}
	return nil
}

// windowSize is the size an inbound SA's replay window grows to.
func (cfg SAConfig) windowSize() int { return cmp.Or(cfg.ReplayWindow, DefaultReplayWindow) }

// SetProbeSA gives sa a companion SA for path probes, the same direction
// and the same peer, with keys and an SPI of its own (docs/mif.md, "The
// probe SA"). Probes then leave their own sequence space: a probe sent on
// a slow path takes no sequence number of the data, so a receiver that
// restores the data's order across paths never waits for one. Set it
// before sa is installed (Engine.AddInbound for an inbound SA, a route or
// a probe for an outbound one); it is not changed afterwards.
func (sa *SA) SetProbeSA(probe *SA) error {
	switch {
	case probe == nil:
		return fmt.Errorf("SA %#x: a nil probe SA", sa.spi)
	case probe == sa || probe.spi == sa.spi || probe.spi == 0:
		return fmt.Errorf("SA %#x: the probe SA needs an SPI of its own", sa.spi)
	case probe.probeSPI != 0:
		return fmt.Errorf("SA %#x: probe SA %#x has a probe SA itself", sa.spi, probe.spi)
	case sa.probeSPI != 0:
		return fmt.Errorf("SA %#x: has a probe SA already", sa.spi)
	}
	sa.probeSPI = probe.spi
	sa.probe.Store(probe)
	return nil
}

// probeSAConfig is what a probe SA is made from (SetProbeSAConfig).
type probeSAConfig struct {
	window, start int32 // start: 0 means NewSA's default
	outbound      bool
	grown         bool // growWindows came first: the window grows once made
	key           []byte
}

// SetProbeSAConfig gives sa a probe SA as SetProbeSA does, made from cfg
// when the first probe is sealed or opened with it (ProbeSA). cfg is
// checked now: its algorithm and ESN are sa's, and it is in tunnel mode
// (a probe has no IP header to carry in transport mode). sa keeps a copy
// of the key.
func (sa *SA) SetProbeSAConfig(cfg SAConfig) error {
	switch {
	case cfg.SPI == sa.spi || cfg.SPI == 0:
		return fmt.Errorf("SA %#x: the probe SA needs an SPI of its own", sa.spi)
	case sa.probeSPI != 0:
		return fmt.Errorf("SA %#x: has a probe SA already", sa.spi)
	case cfg.Algorithm != sa.alg || cfg.ESN != sa.esn:
		return fmt.Errorf("SA %#x: probe SA %#x: %s (ESN %v), not the data SA's %s (ESN %v)", sa.spi, cfg.SPI, cfg.Algorithm, cfg.ESN, sa.alg, sa.esn)
	case cfg.Transport:
		return fmt.Errorf("SA %#x: probe SA %#x in transport mode", sa.spi, cfg.SPI)
	}
	if err := cfg.check(); err != nil {
		return fmt.Errorf("SA %#x: probe SA %#x: %w", sa.spi, cfg.SPI, err)
	}
	if !cfg.Outbound && cfg.ReplayWindow != 0 {
		if err := checkReplayWindowSize(cfg.ReplayWindow); err != nil {
			return fmt.Errorf("SA %#x: probe SA %#x: %w", sa.spi, cfg.SPI, err)
		}
	}
	sa.probeSPI = cfg.SPI
	sa.lazyProbe = &probeSAConfig{window: int32(cfg.ReplayWindow), start: int32(cfg.ReplayWindowStart), outbound: cfg.Outbound, key: bytes.Clone(cfg.Key)}
	return nil
}

// ProbeSPI returns the SPI of sa's probe SA; 0 if it has none.
func (sa *SA) ProbeSPI() uint32 { return sa.probeSPI }

// ProbeSA returns sa's probe SA: the one given to SetProbeSA, or the one
// SetProbeSAConfig described, made now if no probe made it yet. It is nil
// for an SA without one, and for one wiped before its probe SA was made.
// The hot path pays one atomic load.
func (sa *SA) ProbeSA() *SA {
	if p := sa.probe.Load(); p != nil || sa.probeSPI == 0 {
		return p
	}
	sa.expandMu.Lock()
	defer sa.expandMu.Unlock()
	return sa.makeProbeLocked()
}

// makeProbeLocked makes the probe SA from lazyProbe, unless it was made.
func (sa *SA) makeProbeLocked() *SA {
	if p := sa.probe.Load(); p != nil {
		return p
	}
	c := sa.lazyProbe
	if c == nil {
		return nil
	}
	p, err := NewSA(SAConfig{SPI: sa.probeSPI, Algorithm: sa.alg, Key: c.key, ESN: sa.esn, ReplayWindow: int(c.window), ReplayWindowStart: int(c.start), Outbound: c.outbound})
	if err != nil {
		return nil // SetProbeSAConfig checked what NewSA checks
	}
	clear(c.key) // the probe SA has its own copy
	if c.grown && p.window != nil {
		p.window.Grow()
	}
	sa.lazyProbe = nil
	sa.probe.Store(p)
	return p
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

// growWindows makes the replay windows of inbound SA sa and of its probe
// SA their full size: the probe SA's now if it was made, else as soon as
// it is (makeProbeLocked).
func (sa *SA) growWindows() {
	if sa.window != nil {
		sa.window.Grow()
	}
	sa.expandMu.Lock()
	defer sa.expandMu.Unlock()
	if p := sa.probe.Load(); p != nil {
		if p.window != nil {
			p.window.Grow()
		}
	} else if c := sa.lazyProbe; c != nil {
		c.grown = true
	}
}

// Wipe clears the key material the SA holds itself (the salt and the key);
// the cipher's expanded key belongs to the standard library and goes with
// the SA. Call it once the SA is no longer used by anyone. An AEAD SA's key
// is expanded first if it is not, so that a packet that comes after all is
// sealed or opened with the SA's key, never a zero one; the cipher is not
// dropped after that.
func (sa *SA) Wipe() {
	sa.expandMu.Lock()
	// A probe SA not made yet never will be (ProbeSA returns nil); one
	// made is wiped as sa is.
	probe := sa.probe.Load()
	if c := sa.lazyProbe; c != nil {
		clear(c.key)
		sa.lazyProbe = nil
	}
	if sa.cbc == nil && sa.key != nil {
		sa.expandLocked()
		clear(sa.key[:])
		sa.key = nil
	}
	sa.expandMu.Unlock()
	clear(sa.salt[:])
	if probe != nil {
		probe.Wipe()
	}
}

// SPI returns the SA's security parameter index.
func (sa *SA) SPI() uint32 { return sa.spi }

// Algorithm returns the SA's transform.
func (sa *SA) Algorithm() Algorithm { return sa.alg }

// Transport reports whether the SA carries transport-mode ESP.
func (sa *SA) Transport() bool { return sa.transport }

// ESN reports whether the SA uses extended sequence numbers.
func (sa *SA) ESN() bool { return sa.esn }

// ReplayWindow returns the inbound anti-replay window; nil for an SA made
// Outbound.
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

// sealedLen returns the length of the ESP packet (from SPI to ICV) that
// sealing an n-byte payload with an AEAD produces; SA.SealedLen is the
// length for any SA.
func sealedLen(n int) int { return HeaderLen + n + padLen(n) + 2 + icvLen }

// SealedLen returns the length of the ESP packet (from SPI to ICV) that
// sealing an n-byte payload with this SA produces.
func (sa *SA) SealedLen(n int) int {
	if sa.cbc != nil {
		return cbcHeaderLen + cbcPadded(n) + sa.icvLen
	}
	return sealedLen(n)
}

func padLen(n int) int { return (4 - (n+2)&3) & 3 }

// Seal encrypts the n-byte inner packet at b[Headroom:Headroom+n] in place
// with the SA's next sequence number and returns the ESP packet, a slice of b
// from b[Headroom-sa's header length] to its ICV. b must have room for
// sa.SealedLen(n) bytes from there (Headroom+n+Tailroom bytes always
// suffice); the scratch bytes in front of the header are overwritten.
// nextHeader is NextHeaderIPv4, nextHeaderIPv6 or nextHeaderDummy.
func (sa *SA) Seal(b []byte, n int, nextHeader byte) ([]byte, error) {
	seq, err := sa.ReserveSequence(1)
	if err != nil {
		return nil, err
	}
	return sa.SealWithSequence(b, n, nextHeader, seq)
}

// SealWithSequence is Seal with a sequence number from ReserveSequence.
// With an AEAD the IV is the 64-bit sequence number, which RFC 4106 §3.1
// and RFC 7634 §2 allow and which makes a nonce repeat impossible while
// sequence numbers are unique. With AES-CBC the IV is the sequence number
// encrypted under the SA's own IV key (see cbcState).
func (sa *SA) SealWithSequence(b []byte, n int, nextHeader byte, seq uint64) ([]byte, error) {
	if sa.cbc != nil {
		return sa.sealCBCWithSequence(b, n, nextHeader, seq)
	}
	end := Headroom + n + padLen(n) + 2
	if n < 0 || len(b) < end+icvLen {
		return nil, ErrBufferTooSmall
	}
	for i, p := Headroom+n, 1; i < end-2; i, p = i+1, p+1 {
		b[i] = byte(p)
	}
	b[end-2] = byte(padLen(n))
	b[end-1] = nextHeader
	var iv [ivLen]byte
	binary.BigEndian.PutUint64(iv[:], seq)
	return sa.seal(b, end, seq, iv), nil
}

// seal writes the ESP header and encrypts b[Headroom:end], which already
// holds payload and trailer, with an explicit IV (known-answer tests use the
// IVs of published vectors). It returns the ESP packet.
func (sa *SA) seal(b []byte, end int, seq uint64, iv [ivLen]byte) []byte {
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
	sa.cipher().Seal(b[Headroom:Headroom], nonce, b[Headroom:end], aad)
	if sa.esn {
		binary.BigEndian.PutUint32(b[h:], sa.spi)
	}
	return b[h : end+icvLen]
}

// Open authenticates and decrypts in place the n-byte ESP packet at
// b[Headroom-h:], h being the SA's header length (Algorithm.HeaderLen),
// as received from the network, and returns the payload (at b[Headroom:])
// and its next header. It is OpenTo with the packet and the destination
// in one buffer; a packet that Seal returned from b is where Open expects
// it.
func (sa *SA) Open(b []byte, n int) (payload []byte, nextHeader byte, err error) {
	at := Headroom - sa.headerLen
	if n < 0 || len(b) < at+n {
		sa.Stats.Drops.Add(DropRunt)
		return nil, 0, ErrRunt
	}
	return sa.OpenTo(b, b[at:at+n])
}

// OpenTo authenticates the ESP packet pkt and decrypts its payload to
// dst[Headroom:], returning the payload and its next header. It checks the
// replay window before and updates it only after the ICV verified, and
// checks the padding. Every failure is a *dropError, counted in
// sa.Stats.Drops. dst must hold Headroom bytes more than the plaintext
// (pkt without header and ICV); its first 24 bytes are scratch. dst and pkt either do not overlap
// or are laid out as Open lays them out (pkt at dst[Headroom-h:], h the
// SA's header length).
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

func (sa *SA) openTo(dst, pkt []byte) ([]byte, byte, uint64, *dropError) {
	minLen := minESPLen
	if sa.cbc != nil {
		minLen = minCBCLen
	}
	if len(pkt) < minLen || len(dst) < Headroom+len(pkt)-sa.headerLen-sa.icvLen {
		return nil, 0, 0, dropErrors[DropRunt]
	}
	if binary.BigEndian.Uint32(pkt) != sa.spi || sa.window == nil {
		// Not this SA's packet (with ESN the wire SPI is not read again
		// for the AAD, so it must be checked here), or an SA that only
		// seals.
		return nil, 0, 0, dropErrors[DropUnknownSPI]
	}
	low := binary.BigEndian.Uint32(pkt[4:])
	seq := uint64(low)
	if sa.esn {
		seq = sa.window.InferSequence(low)
	}
	if err := sa.window.Check(seq); err != nil {
		return nil, 0, 0, err.(*dropError)
	}
	var payload []byte
	var nextHeader byte
	var r *dropError
	if sa.cbc != nil {
		payload, nextHeader, r = sa.decryptCBC(dst, pkt, seq)
	} else {
		payload, nextHeader, r = sa.decrypt(dst, pkt, seq)
	}
	if r != nil {
		return nil, 0, 0, r
	}
	if err := sa.window.Accept(seq); err != nil {
		return nil, 0, 0, err.(*dropError)
	}
	return payload, nextHeader, seq, nil
}

// decrypt verifies and decrypts pkt to dst[Headroom:] with seq's high half
// taken as given, and checks the trailer. The replay window is not
// consulted. The nonce is built in dst[0:12] and the ESN AAD in dst[12:24];
// when pkt sits at dst[16:] that AAD overwrites the SPI already checked and
// rewrites the sequence number in place.
func (sa *SA) decrypt(dst, pkt []byte, seq uint64) ([]byte, byte, *dropError) {
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
	plain, err := sa.cipher().Open(dst[Headroom:Headroom], nonce, pkt[HeaderLen:], aad)
	if err != nil {
		return nil, 0, dropErrors[DropBadICV]
	}
	return checkTrailer(plain)
}

// checkTrailer checks the padding, pad length and next header at the end of
// a decrypted payload (RFC 4303 §2.4) and returns the payload without them.
func checkTrailer(plain []byte) ([]byte, byte, *dropError) {
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
