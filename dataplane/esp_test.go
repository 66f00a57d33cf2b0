package dataplane

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
)

// newSAPair returns a sending and a receiving SA sharing a random key.
func newSAPair(t testing.TB, alg Algorithm, esn bool) (out, in *SA) {
	t.Helper()
	key := make([]byte, alg.KeyLen())
	rand.Read(key)
	cfg := SAConfig{SPI: 0x1234abcd, Algorithm: alg, Key: key, ESN: esn}
	out, err := NewSA(SAConfig{SPI: cfg.SPI, Algorithm: alg, Key: key, ESN: esn, Outbound: true})
	if err != nil {
		t.Fatal(err)
	}
	in, err = NewSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out, in
}

// sealPayload copies payload into a fresh buffer and seals it.
func sealPayload(t testing.TB, sa *SA, payload []byte, nh byte) []byte {
	t.Helper()
	buf := make([]byte, Headroom+len(payload)+Tailroom)
	copy(buf[Headroom:], payload)
	pkt, err := sa.Seal(buf, len(payload), nh)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != sa.SealedLen(len(payload)) || len(pkt) != sa.alg.SealedLen(len(payload)) {
		t.Fatalf("sealed %d bytes, SealedLen says %d", len(pkt), sa.SealedLen(len(payload)))
	}
	align := 4
	if !sa.alg.AEAD() {
		align = 16
	}
	if (len(pkt)-sa.headerLen-sa.icvLen)%align != 0 {
		t.Fatalf("payload+trailer of %d bytes is not %d-byte aligned", len(pkt)-sa.headerLen-sa.icvLen, align)
	}
	return pkt
}

// rxAt is where Open expects a received packet in its buffer.
func rxAt(sa *SA) int { return Headroom - sa.headerLen }

// openPacket opens a copy of an ESP packet as it would arrive.
func openPacket(sa *SA, pkt []byte) ([]byte, byte, error) {
	buf := make([]byte, rxAt(sa)+len(pkt))
	copy(buf[rxAt(sa):], pkt)
	return sa.Open(buf, len(pkt))
}

func TestRoundTripEverySize(t *testing.T) {
	maxSize := 9000
	if testing.Short() {
		maxSize = 1600
	}
	for _, alg := range Algorithms() {
		for _, esn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/esn=%v", alg, esn), func(t *testing.T) {
				out, in := newSAPair(t, alg, esn)
				src := make([]byte, maxSize)
				rand.Read(src)
				buf := make([]byte, Headroom+maxSize+Tailroom)
				for n := 1; n <= maxSize; n++ {
					nh := byte(NextHeaderIPv4)
					if n%2 == 0 {
						nh = nextHeaderIPv6
					}
					copy(buf[Headroom:], src[:n])
					pkt, err := out.Seal(buf, n, nh)
					if err != nil {
						t.Fatalf("seal %d bytes: %v", n, err)
					}
					// Received packets land at the same place in the buffer.
					payload, gotNH, err := in.Open(buf, len(pkt))
					if err != nil {
						t.Fatalf("open %d bytes: %v", n, err)
					}
					if !bytes.Equal(payload, src[:n]) || gotNH != nh {
						t.Fatalf("%d bytes: round trip changed the payload or next header", n)
					}
				}
				if got := in.Stats.Packets.Load(); got != uint64(maxSize) {
					t.Fatalf("received %d packets, want %d", got, maxSize)
				}
			})
		}
	}
}

// TestEveryBitFlipFails flips each bit of sealed packets in turn: every
// flip must make Open fail with a counted reason.
func TestEveryBitFlipFails(t *testing.T) {
	for _, alg := range Algorithms() {
		for _, esn := range []bool{false, true} {
			for _, size := range []int{1, 40, 63} {
				t.Run(fmt.Sprintf("%s/esn=%v/%d", alg, esn, size), func(t *testing.T) {
					out, in := newSAPair(t, alg, esn)
					payload := make([]byte, size)
					rand.Read(payload)
					pkt := sealPayload(t, out, payload, NextHeaderIPv4)
					var failures uint64
					for bit := 0; bit < len(pkt)*8; bit++ {
						flipped := bytes.Clone(pkt)
						flipped[bit/8] ^= 1 << (bit % 8)
						_, _, err := openPacket(in, flipped)
						var drop *dropError
						if !errors.As(err, &drop) {
							t.Fatalf("bit %d flipped: Open returned %v, want a drop", bit, err)
						}
						failures++
					}
					var counted uint64
					for r := DropReason(0); r < numDropReasons; r++ {
						counted += in.Stats.Drops.Get(r)
					}
					if counted != failures {
						t.Fatalf("%d failures but %d counted drops (%v)", failures, counted, in.Stats.Drops.Snapshot())
					}
					if in.Stats.Drops.Get(DropBadICV) == 0 {
						t.Fatal("no flip was counted as a bad ICV")
					}
					// The untouched packet still opens: nothing moved the window.
					if _, _, err := openPacket(in, pkt); err != nil {
						t.Fatalf("original packet after flips: %v", err)
					}
				})
			}
		}
	}
}

func TestNextHeaderDummyIsReturned(t *testing.T) {
	out, in := newSAPair(t, AES128GCM16, false)
	pkt := sealPayload(t, out, []byte("probe"), nextHeaderDummy)
	payload, nh, err := openPacket(in, pkt)
	if err != nil || nh != nextHeaderDummy || string(payload) != "probe" {
		t.Fatalf("got %q, %d, %v", payload, nh, err)
	}
}

// TestBadPadding seals trailers that break the 1, 2, 3, ... rule or claim more
// padding than the packet holds; authentic but malformed, they are counted
// as bad padding.
func TestBadPadding(t *testing.T) {
	tests := []struct {
		name  string
		plain []byte // payload, padding, pad length, next header
	}{
		{"pad bytes not 1,2,3", []byte{0x45, 0, 0, 0, 1, 3, 2, 4}},
		{"zero pad byte", []byte{0x45, 0, 0, 0, 1, 4}},
		{"pad length far beyond packet", []byte{0x45, 0, 200, 4}},
		{"pad length one beyond packet", []byte{1, 2, 3, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, in := newSAPair(t, ChaCha20Poly1305, false)
			plain := tc.plain
			buf := make([]byte, Headroom+len(plain)+icvLen)
			copy(buf[Headroom:], plain)
			pkt := out.seal(buf, Headroom+len(plain), 1, [ivLen]byte{7})
			if _, _, err := openPacket(in, pkt); !errors.Is(err, ErrBadPadding) {
				t.Fatalf("Open: %v, want %v", err, ErrBadPadding)
			}
			if in.Stats.Drops.Get(DropBadPadding) != 1 {
				t.Fatalf("drops %v", in.Stats.Drops.Snapshot())
			}
		})
	}
}

func TestRuntIsCounted(t *testing.T) {
	_, in := newSAPair(t, AES256GCM16, false)
	for n := 0; n < minESPLen; n++ {
		if _, _, err := openPacket(in, make([]byte, n)); !errors.Is(err, ErrRunt) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	if got := in.Stats.Drops.Get(DropRunt); got != minESPLen {
		t.Fatalf("runts counted %d, want %d", got, minESPLen)
	}
}

func TestSequenceNeverWraps(t *testing.T) {
	for _, esn := range []bool{false, true} {
		t.Run(fmt.Sprintf("esn=%v", esn), func(t *testing.T) {
			out, _ := newSAPair(t, AES128GCM16, esn)
			last := uint64(math.MaxUint32)
			if esn {
				last = math.MaxUint64
			}
			out.seq.Store(last - 2)
			buf := make([]byte, Headroom+64)
			for i := 0; i < 2; i++ {
				if _, err := out.Seal(buf, 10, NextHeaderIPv4); err != nil {
					t.Fatalf("seal %d before the limit: %v", i, err)
				}
			}
			for i := 0; i < 3; i++ {
				if _, err := out.Seal(buf, 10, NextHeaderIPv4); !errors.Is(err, ErrSequenceExhausted) {
					t.Fatalf("seal past the limit: %v", err)
				}
			}
			if _, err := out.ReserveSequence(5); !errors.Is(err, ErrSequenceExhausted) {
				t.Fatalf("reserve past the limit: %v", err)
			}
			if out.LastSequence() != last {
				t.Fatalf("counter moved to %#x past the limit %#x", out.LastSequence(), last)
			}
		})
	}
}

// TestNoNonceReuseAcrossCores seals from many goroutines at once and checks
// that no IV (and so no nonce) repeats.
func TestNoNonceReuseAcrossCores(t *testing.T) {
	out, _ := newSAPair(t, AES256GCM16, true)
	const workers, perWorker = 8, 2000
	ivs := make([][][ivLen]byte, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, Headroom+100+Tailroom)
			for range perWorker {
				pkt, err := out.Seal(buf, 100, NextHeaderIPv4)
				if err != nil {
					t.Error(err)
					return
				}
				ivs[w] = append(ivs[w], [ivLen]byte(pkt[8:16]))
			}
		}()
	}
	wg.Wait()
	seen := make(map[[ivLen]byte]bool)
	for _, list := range ivs {
		for _, iv := range list {
			if seen[iv] {
				t.Fatalf("IV %x used twice", iv)
			}
			seen[iv] = true
		}
	}
	if len(seen) != workers*perWorker {
		t.Fatalf("%d IVs, want %d", len(seen), workers*perWorker)
	}
}

func TestNewSARejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  SAConfig
	}{
		{"unknown algorithm", SAConfig{SPI: 0x1000, Algorithm: 99, Key: make([]byte, 20)}},
		{"short key", SAConfig{SPI: 0x1000, Algorithm: AES256GCM16, Key: make([]byte, 32)}},
		{"aes128 with aes256 key", SAConfig{SPI: 0x1000, Algorithm: AES128GCM16, Key: make([]byte, 36)}},
		{"window too small", SAConfig{SPI: 0x1000, Algorithm: AES128GCM16, Key: make([]byte, 20), ReplayWindow: 16}},
		{"window too large", SAConfig{SPI: 0x1000, Algorithm: AES128GCM16, Key: make([]byte, 20), ReplayWindow: 1 << 20}},
		{"outbound with a window", SAConfig{SPI: 0x1000, Algorithm: AES128GCM16, Key: make([]byte, 20), ReplayWindow: 64, Outbound: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewSA(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestOutboundSAOpensNothing: an SA made Outbound has no replay window and
// drops what it is given to open, even a packet under its own key and SPI,
// as one of an unknown SPI.
func TestOutboundSAOpensNothing(t *testing.T) {
	for _, alg := range []Algorithm{AES256GCM16, ChaCha20Poly1305, AES256SHA256} {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newSAPair(t, alg, false)
			if out.ReplayWindow() != nil || in.ReplayWindow() == nil {
				t.Fatalf("windows: outbound %v, inbound %v; want none and one", out.ReplayWindow(), in.ReplayWindow())
			}
			pkt := sealPayload(t, out, []byte{0x45, 0, 0, 20, 7}, NextHeaderIPv4)
			if _, _, err := openPacket(out, slices.Clone(pkt)); !errors.Is(err, dropErrors[DropUnknownSPI]) {
				t.Fatalf("the outbound SA opened its own packet: %v, want an unknown-SPI drop", err)
			}
			if p, _, err := openPacket(in, pkt); err != nil || p[4] != 7 {
				t.Fatalf("the inbound SA: %v", err)
			}
			if out.ReplayWindow().Top() != 0 {
				t.Fatal("a nil window's top is not 0")
			}
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, alg := range Algorithms() {
		got, err := ParseAlgorithm(alg.String())
		if err != nil || got != alg {
			t.Fatalf("%s: %v %v", alg, got, err)
		}
	}
	if _, err := ParseAlgorithm("aes256"); err == nil {
		t.Fatal("accepted aes256")
	}
}

func TestSAStringHasNoKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, AES128GCM16.KeyLen())
	sa, err := NewSA(SAConfig{SPI: 0x1000, Algorithm: AES128GCM16, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%v %+v", sa, sa); bytes.Contains([]byte(s), []byte("abab")) {
		t.Fatalf("formatted SA shows key material: %s", s)
	}
}

// TestZeroAllocations asserts the per-packet paths make no allocation.
func TestZeroAllocations(t *testing.T) {
	for _, alg := range Algorithms() {
		for _, esn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/esn=%v", alg, esn), func(t *testing.T) {
				out, in := newSAPair(t, alg, esn)
				buf := make([]byte, Headroom+1400+Tailroom)
				if n := testing.AllocsPerRun(200, func() {
					if _, err := out.Seal(buf, 1400, NextHeaderIPv4); err != nil {
						t.Fatal(err)
					}
				}); n != 0 {
					t.Fatalf("Seal: %v allocations per packet", n)
				}
				rx := make([]byte, len(buf))
				var last []byte
				if n := testing.AllocsPerRun(200, func() {
					pkt, err := out.Seal(buf, 1400, NextHeaderIPv4)
					if err != nil {
						t.Fatal(err)
					}
					copy(rx[rxAt(in):], pkt)
					if _, _, err := in.Open(rx, len(pkt)); err != nil {
						t.Fatal(err)
					}
					last = pkt
				}); n != 0 {
					t.Fatalf("Seal+Open: %v allocations per packet", n)
				}
				if n := testing.AllocsPerRun(200, func() {
					copy(rx[rxAt(in):], last)
					if _, _, err := in.Open(rx, len(last)); err == nil {
						t.Fatal("replayed packet accepted")
					}
				}); n != 0 {
					t.Fatalf("dropping: %v allocations per packet", n)
				}
			})
		}
	}
}

// TestOpenToSeparateBuffer decrypts out of place, as the receive path does
// from a coalesced receive buffer, and checks the packet is left intact.
func TestOpenToSeparateBuffer(t *testing.T) {
	for _, alg := range Algorithms() {
		for _, esn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/esn=%v", alg, esn), func(t *testing.T) {
				out, in := newSAPair(t, alg, esn)
				payload := []byte("\x45 out of place payload")
				pkt := sealPayload(t, out, payload, NextHeaderIPv4)
				orig := bytes.Clone(pkt)
				dst := make([]byte, Headroom+len(pkt))
				got, nh, err := in.OpenTo(dst, pkt)
				if err != nil || nh != NextHeaderIPv4 || !bytes.Equal(got, payload) {
					t.Fatalf("OpenTo = %q, %d, %v", got, nh, err)
				}
				if !bytes.Equal(pkt, orig) {
					t.Fatal("OpenTo modified the packet")
				}
				if _, _, err := in.OpenTo(make([]byte, 20), pkt); !errors.Is(err, ErrRunt) {
					t.Fatalf("short destination: %v", err)
				}
			})
		}
	}
}

// TestStartAfterAndLimit: an SA configured to start after a stored high
// mark sends its first packet above it, a fresh receiver accepts that
// packet, a receiver that saw the earlier run's numbers accepts it too, and
// sealing stops at the limit until the limit is raised.
func TestStartAfterAndLimit(t *testing.T) {
	key := make([]byte, AES256GCM16.KeyLen())
	rand.Read(key)
	const mark = 1 << 20
	cfg := SAConfig{SPI: 0x1001, Algorithm: AES256GCM16, Key: key, StartAfter: mark}
	out, err := NewSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StartAfter = 0
	fresh, err := NewSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := NewSA(cfg) // a receiver that kept running: it saw 1..100 of an earlier run
	if err != nil {
		t.Fatal(err)
	}
	earlier, err := NewSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, _, err := openPacket(seen, sealPayload(t, earlier, []byte{0x45, 0, 0, 4}, NextHeaderIPv4)); err != nil {
			t.Fatal(err)
		}
	}
	pkt := sealPayload(t, out, []byte{0x45, 0, 0, 4}, NextHeaderIPv4)
	if seq := binary.BigEndian.Uint32(pkt[4:]); seq != mark+1 {
		t.Fatalf("first sequence number %d, want %d", seq, mark+1)
	}
	if iv := binary.BigEndian.Uint64(pkt[8:16]); iv != mark+1 {
		t.Fatalf("first IV %d, want %d", iv, mark+1)
	}
	for name, in := range map[string]*SA{"fresh": fresh, "running": seen} {
		if _, _, err := openPacket(in, pkt); err != nil {
			t.Fatalf("%s receiver refused the first packet of a restarted sender: %v", name, err)
		}
	}

	out.SetSequenceLimit(mark + 3)
	buf := make([]byte, Headroom+64)
	for i := range 2 {
		if _, err := out.Seal(buf, 10, NextHeaderIPv4); err != nil {
			t.Fatalf("seal %d under the limit: %v", i, err)
		}
	}
	if _, err := out.Seal(buf, 10, NextHeaderIPv4); !errors.Is(err, ErrSequenceLimit) {
		t.Fatalf("seal at the limit: %v, want ErrSequenceLimit", err)
	}
	if _, err := out.ReserveSequence(2); !errors.Is(err, ErrSequenceLimit) {
		t.Fatalf("reserve past the limit: %v, want ErrSequenceLimit", err)
	}
	if out.LastSequence() != mark+3 {
		t.Fatalf("counter %d, want %d", out.LastSequence(), mark+3)
	}
	out.SetSequenceLimit(mark + 10)
	if _, err := out.Seal(buf, 10, NextHeaderIPv4); err != nil {
		t.Fatalf("seal after raising the limit: %v", err)
	}
	out.SetSequenceLimit(math.MaxUint64)
	if out.SequenceLimit() != math.MaxUint32 {
		t.Fatalf("limit %d above the SA's last number", out.SequenceLimit())
	}

	cfg.StartAfter = math.MaxUint32
	if _, err := NewSA(cfg); !errors.Is(err, ErrSequenceExhausted) {
		t.Fatalf("an SA starting after its last number: %v", err)
	}
}

// TestWipeClearsSalt: after Wipe the SA holds no salt of its own, so what
// it seals no longer opens under the original key and salt.
func TestWipeClearsSalt(t *testing.T) {
	out, in := newSAPair(t, ChaCha20Poly1305, false)
	if out.salt == [SaltLen]byte{} {
		t.Skip("the random salt happened to be zero")
	}
	out.Wipe()
	if out.salt != [SaltLen]byte{} {
		t.Fatalf("salt %x after Wipe", out.salt)
	}
	if _, _, err := openPacket(in, sealPayload(t, out, []byte{0x45, 0, 0, 4}, NextHeaderIPv4)); !errors.Is(err, ErrBadICV) {
		t.Fatalf("a packet sealed after Wipe opened: %v", err)
	}
}

// TestSACipherExpandedOnFirstUse: an AEAD SA holds its key, not the
// expanded cipher, until its first packet; then the cipher too. Many cores
// sealing the first packets at once expand it once, and every packet
// opens; Wipe zeroes and drops the key of an SA used or not, and leaves a
// cipher for a packet that comes after all.
func TestSACipherExpandedOnFirstUse(t *testing.T) {
	for _, alg := range []Algorithm{AES128GCM16, AES256GCM16, ChaCha20Poly1305} {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newSAPair(t, alg, false)
			for _, sa := range []*SA{out, in} {
				if sa.aead.Load() != nil || sa.key == nil || *sa.key == [32]byte{} || int(sa.keyLen) != alg.KeyLen()-SaltLen {
					t.Fatalf("a new SA: cipher %v, key %v, %d bytes", sa.aead.Load() != nil, sa.key != nil, sa.keyLen)
				}
			}
			const workers = 8
			pkts := make([][]byte, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() { pkts[w] = sealPayload(t, out, []byte{0x45, 0, 0, 20, byte(w)}, NextHeaderIPv4) })
			}
			wg.Wait()
			first := out.aead.Load()
			if first == nil || out.key == nil {
				t.Fatalf("after sealing: cipher %v, key kept %v", first != nil, out.key != nil)
			}
			for w, pkt := range pkts {
				if p, _, err := openPacket(in, pkt); err != nil || p[4] != byte(w) {
					t.Fatalf("packet %d: %v", w, err)
				}
			}
			if in.aead.Load() == nil {
				t.Error("the inbound SA opened without expanding its key")
			}
			sealPayload(t, out, []byte{0x45, 0, 0, 20}, NextHeaderIPv4)
			if out.aead.Load() != first {
				t.Error("the cipher was expanded again")
			}
			usedKey := out.key
			out.Wipe()
			if out.key != nil || *usedKey != [32]byte{} || out.aead.Load() != first {
				t.Error("Wipe of a used SA left its key, or changed its cipher")
			}

			unused, _ := newSAPair(t, alg, false)
			held := unused.key
			unused.Wipe()
			if unused.key != nil || *held != [32]byte{} || unused.aead.Load() == nil {
				t.Error("Wipe of an unused SA left its key, or no cipher for a packet that comes after all")
			}
		})
	}
}

// TestSAIdleCipherReleased: an SA that sealed or accepted nothing between
// two sweeps drops its expanded cipher and keeps its key; the next packet
// expands it again and seals or opens as before. An SA that carried a
// packet keeps its cipher; a wiped one is never released (its key is
// gone); a second call in the same sweep changes nothing.
func TestSAIdleCipherReleased(t *testing.T) {
	for _, alg := range []Algorithm{AES128GCM16, AES256GCM16, ChaCha20Poly1305} {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newSAPair(t, alg, false)
			sweep := uint32(0)
			release := func(sa *SA) bool { return sa.releaseIfIdle(sweep) }
			next := func() { sweep++ }
			next()
			if release(out) || release(in) {
				t.Fatal("the first sweep released a cipher")
			}
			pkt := sealPayload(t, out, []byte{0x45, 0, 0, 20, 1}, NextHeaderIPv4)
			if _, _, err := openPacket(in, pkt); err != nil {
				t.Fatal(err)
			}
			next()
			if release(out) || release(in) {
				t.Fatal("an SA that carried a packet since the last sweep was released")
			}
			next()
			if !release(out) || !release(in) {
				t.Fatal("an SA idle between two sweeps kept its cipher")
			}
			if out.aead.Load() != nil || in.aead.Load() != nil || out.key == nil || *out.key == [32]byte{} {
				t.Fatalf("released: cipher %v %v, key %v", out.aead.Load() != nil, in.aead.Load() != nil, out.key != nil)
			}
			if release(out) {
				t.Fatal("released twice in one sweep")
			}
			for i := range 3 {
				pkt := sealPayload(t, out, []byte{0x45, 0, 0, 20, byte(10 + i)}, NextHeaderIPv4)
				if p, _, err := openPacket(in, pkt); err != nil || p[4] != byte(10+i) {
					t.Fatalf("after the release, packet %d: %v", i, err)
				}
			}
			if out.aead.Load() == nil || in.aead.Load() == nil {
				t.Fatal("no cipher after packets")
			}
			next()
			release(out)
			release(in)
			next()
			if release(out) != true {
				t.Fatal("not released when idle again")
			}
			in.Wipe()
			next()
			next()
			if release(in) || in.aead.Load() == nil {
				t.Fatal("a wiped SA's cipher was released")
			}
		})
	}
}
