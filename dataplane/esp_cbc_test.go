package dataplane

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

// cbcVectors is testdata/esp-aes-cbc-hmac.json.
type cbcVectors struct {
	CBC []struct {
		Name          string `json:"name"`
		KeyHex        string `json:"key_hex"`
		IVHex         string `json:"iv_hex"`
		PlaintextHex  string `json:"plaintext_hex"`
		CiphertextHex string `json:"ciphertext_hex"`
	} `json:"cbc"`
	ESP []struct {
		Name       string `json:"name"`
		KeyHex     string `json:"key_hex"`
		SPI        uint32 `json:"spi"`
		Seq        uint64 `json:"seq"`
		IVHex      string `json:"iv_hex"`
		PayloadHex string `json:"payload_hex"`
		NextHeader byte   `json:"next_header"`
		PacketHex  string `json:"packet_hex"`
	} `json:"esp"`
	HMAC []struct {
		Name      string `json:"name"`
		Integrity string `json:"integrity"`
		KeyHex    string `json:"key_hex"`
		DataHex   string `json:"data_hex"`
		ICVHex    string `json:"icv_hex"`
	} `json:"hmac"`
}

func loadCBCVectors(t *testing.T) cbcVectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/esp-aes-cbc-hmac.json")
	if err != nil {
		t.Fatal(err)
	}
	var v cbcVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.CBC) == 0 || len(v.ESP) == 0 || len(v.HMAC) == 0 {
		t.Fatal("vector file incomplete")
	}
	return v
}

// cbcAlgorithm returns the AES-CBC algorithm for a key size and an
// integrity keyword.
func cbcAlgorithm(t *testing.T, keyLen int, integrity string) Algorithm {
	t.Helper()
	alg, err := ParseAlgorithm(fmt.Sprintf("aes%d-%s", keyLen*8, integrity))
	if err != nil {
		t.Fatal(err)
	}
	return alg
}

// TestCBCVectors checks the SA's CBC mode against RFC 3602 cases 1 and 2:
// a whole-block payload (no room for a trailer) sealed with the published
// IV gives the published ciphertext.
func TestCBCVectors(t *testing.T) {
	for _, v := range loadCBCVectors(t).CBC {
		t.Run(v.Name, func(t *testing.T) {
			key := unhex(t, v.KeyHex)
			alg := cbcAlgorithm(t, len(key), "sha256")
			sa, err := NewSA(SAConfig{SPI: 0x100, Algorithm: alg, Key: append(key, make([]byte, 32)...)})
			if err != nil {
				t.Fatal(err)
			}
			plain := unhex(t, v.PlaintextHex)
			buf := make([]byte, Headroom+len(plain)+maxICVLen)
			copy(buf[Headroom-cbcBlock:], unhex(t, v.IVHex))
			copy(buf[Headroom:], plain)
			pkt := sa.sealCBC(buf, Headroom+len(plain), 1)
			if got, want := pkt[cbcHeaderLen:cbcHeaderLen+len(plain)], unhex(t, v.CiphertextHex); !bytes.Equal(got, want) {
				t.Fatalf("ciphertext\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestCBCESPVectors seals the payloads of RFC 3602 cases 5 to 8 with their
// IVs and compares the packets byte for byte up to the ICV (the RFC's
// packets carry none); the ICV must be the HMAC-SHA2-256-128 of the
// published packet, and the published packet with that ICV opens to the
// payload.
func TestCBCESPVectors(t *testing.T) {
	for _, v := range loadCBCVectors(t).ESP {
		t.Run(v.Name, func(t *testing.T) {
			key := unhex(t, v.KeyHex)
			macKey := bytes.Repeat([]byte{0x42}, 32)
			cfg := SAConfig{SPI: v.SPI, Algorithm: cbcAlgorithm(t, len(key), "sha256"), Key: append(bytes.Clone(key), macKey...)}
			out, err := NewSA(cfg)
			if err != nil {
				t.Fatal(err)
			}
			payload, want := unhex(t, v.PayloadHex), unhex(t, v.PacketHex)
			n := len(payload)
			buf := make([]byte, Headroom+n+Tailroom)
			copy(buf[Headroom:], payload)
			padded := cbcPadded(n)
			for i := range padded - n - 2 {
				buf[Headroom+n+i] = byte(i + 1)
			}
			buf[Headroom+padded-2] = byte(padded - n - 2)
			buf[Headroom+padded-1] = v.NextHeader
			copy(buf[Headroom-cbcBlock:], unhex(t, v.IVHex))
			pkt := out.sealCBC(buf, Headroom+padded, v.Seq)
			if got := pkt[:len(pkt)-16]; !bytes.Equal(got, want) {
				t.Fatalf("packet\n got %x\nwant %x", got, want)
			}
			mac := hmac.New(sha256.New, macKey)
			mac.Write(want)
			icv := mac.Sum(nil)[:16]
			if !bytes.Equal(pkt[len(pkt)-16:], icv) {
				t.Fatalf("ICV %x, want %x", pkt[len(pkt)-16:], icv)
			}
			in, err := NewSA(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, nh, err := openPacket(in, append(bytes.Clone(want), icv...))
			if err != nil || nh != v.NextHeader || !bytes.Equal(got, payload) {
				t.Fatalf("Open = %x, %d, %v", got, nh, err)
			}
		})
	}
}

// TestCBCHMACVectors runs the published HMAC cases through an SA's own
// keyed HMAC state and truncates as the SA does.
func TestCBCHMACVectors(t *testing.T) {
	for _, v := range loadCBCVectors(t).HMAC {
		t.Run(v.Name, func(t *testing.T) {
			alg := cbcAlgorithm(t, 16, v.Integrity)
			macKey := unhex(t, v.KeyHex)
			sa, err := NewSA(SAConfig{SPI: 0x100, Algorithm: alg, Key: append(make([]byte, 16), macKey...)})
			if err != nil {
				t.Fatal(err)
			}
			w := sa.cbc.get()
			w.mac.Reset()
			w.mac.Write(unhex(t, v.DataHex))
			got := w.mac.Sum(w.sum[:0])[:sa.icvLen]
			if want := unhex(t, v.ICVHex); !bytes.Equal(got, want) || len(want) != alg.ICVLen() {
				t.Fatalf("ICV %x, want %x (%d bytes for %s)", got, want, alg.ICVLen(), alg)
			}
		})
	}
}

// TestCBCICVCoversSequenceHigh checks that with ESN the ICV covers the
// high half of the sequence number (RFC 4303 §3.3.2.1): a receiver whose
// window puts the packet in another epoch rejects it as a bad ICV.
func TestCBCICVCoversSequenceHigh(t *testing.T) {
	out, in := newSAPair(t, AES256SHA256, true)
	out.seq.Store(1<<32 + 10)
	pkt := sealPayload(t, out, []byte("\x45 epoch one"), NextHeaderIPv4)
	if _, _, err := openPacket(in, pkt); !errors.Is(err, ErrBadICV) {
		t.Fatalf("packet of epoch 1 opened in epoch 0: %v", err)
	}
	in.window.top.Store(1<<32 + 5)
	if _, _, err := openPacket(in, pkt); err != nil {
		t.Fatalf("packet of epoch 1 in epoch 1: %v", err)
	}
}

// TestCBCIVsDiffer checks that IVs are not the sequence number and do not
// repeat, and that two SAs with one key use different IVs.
func TestCBCIVsDiffer(t *testing.T) {
	a, b := newSAPair(t, AES128SHA1, false)
	seen := map[[16]byte]bool{}
	for _, sa := range []*SA{a, b} {
		for range 1000 {
			pkt := sealPayload(t, sa, []byte{0x45}, NextHeaderIPv4)
			iv := [16]byte(pkt[8:24])
			if seen[iv] {
				t.Fatalf("IV %x repeated", iv)
			}
			seen[iv] = true
		}
	}
}

// TestCBCMisalignedIsDropped sends an authentic packet whose ciphertext is
// not whole blocks: dropped as bad padding, after the ICV check.
func TestCBCMisalignedIsDropped(t *testing.T) {
	out, in := newSAPair(t, AES256SHA512, false)
	pkt := sealPayload(t, out, make([]byte, 40), NextHeaderIPv4)
	body := pkt[:len(pkt)-32-1] // one byte short of whole blocks
	w := out.cbc.get()
	w.mac.Reset()
	w.mac.Write(body)
	forged := append(bytes.Clone(body), w.mac.Sum(nil)[:32]...)
	if _, _, err := openPacket(in, forged); !errors.Is(err, ErrBadPadding) {
		t.Fatalf("misaligned: %v", err)
	}
}

// TestCBCBadPadding seals authentic trailers that break the padding rules.
func TestCBCBadPadding(t *testing.T) {
	for _, plain := range [][]byte{
		{0x45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 2, 4},
		append(make([]byte, 14), 15, 4),
	} {
		out, in := newSAPair(t, AES128SHA256, false)
		buf := make([]byte, Headroom+len(plain)+maxICVLen)
		copy(buf[Headroom:], plain)
		rand.Read(buf[Headroom-cbcBlock : Headroom])
		pkt := out.sealCBC(buf, Headroom+len(plain), 1)
		if _, _, err := openPacket(in, pkt); !errors.Is(err, ErrBadPadding) {
			t.Fatalf("%x: %v", plain, err)
		}
	}
}

// TestMaxPayloadFits checks Algorithm.MaxPayload against sealedLen for
// every algorithm: the largest payload fits, one more byte does not.
func TestMaxPayloadFits(t *testing.T) {
	for _, alg := range Algorithms() {
		for space := 100; space < 1600; space += 7 {
			n := alg.MaxPayload(space)
			if alg.SealedLen(n) > space || alg.SealedLen(n+1) <= space {
				t.Fatalf("%s in %d bytes: MaxPayload %d seals to %d, one more to %d", alg, space, n, alg.SealedLen(n), alg.SealedLen(n+1))
			}
		}
	}
}

// BenchmarkCBCRaw encrypts and MACs the same 1400 bytes plus a 2-byte
// trailer, padded to whole blocks, with a bare AES-CBC mode and a keyed
// HMAC: the ceiling CBC sealing is measured against.
func BenchmarkCBCRaw(b *testing.B) {
	for _, alg := range Algorithms() {
		if alg.AEAD() {
			continue
		}
		info, _ := alg.info()
		b.Run(alg.String(), func(b *testing.B) {
			key := make([]byte, info.cipher)
			rand.Read(key)
			block, _ := aes.NewCipher(key)
			iv := make([]byte, 16)
			enc := cipher.NewCBCEncrypter(block, iv)
			mac := hmac.New(info.newHash, make([]byte, info.macKey))
			padded := cbcPadded(benchPayload)
			buf := make([]byte, Headroom+padded+maxICVLen)
			rand.Read(buf)
			var sum [64]byte
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				enc.(ivSetter).SetIV(iv)
				enc.CryptBlocks(buf[Headroom:Headroom+padded], buf[Headroom:Headroom+padded])
				mac.Reset()
				mac.Write(buf[Headroom-cbcHeaderLen : Headroom+padded])
				copy(buf[Headroom+padded:], mac.Sum(sum[:0])[:info.icv])
			}
		})
	}
}

// FuzzOpenCBC feeds arbitrary bytes to an AES-CBC/HMAC SA's Open, with
// and without ESN, for every integrity algorithm. Open must never panic,
// must count every failure once, and can only accept the seeds.
func FuzzOpenCBC(f *testing.F) {
	algs := []Algorithm{AES128SHA1, AES256SHA256, AES192SHA384, AES256SHA512}
	keyFor := func(alg Algorithm) []byte { return bytes.Repeat([]byte{0x5a}, alg.KeyLen()) }
	for i, alg := range algs {
		for _, esn := range []bool{false, true} {
			sa, err := NewSA(SAConfig{SPI: fuzzSPI, Algorithm: alg, Key: keyFor(alg), ESN: esn})
			if err != nil {
				f.Fatal(err)
			}
			for _, n := range []int{0, 1, 14, 15, 16, 61} {
				buf := make([]byte, Headroom+n+Tailroom)
				pkt, err := sa.Seal(buf, n, NextHeaderIPv4)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(uint8(i), esn, bytes.Clone(pkt))
			}
		}
	}
	f.Add(uint8(0), false, []byte{})
	f.Add(uint8(3), true, make([]byte, minCBCLen+17))
	f.Fuzz(func(t *testing.T, which uint8, esn bool, pkt []byte) {
		alg := algs[int(which)%len(algs)]
		sa, err := NewSA(SAConfig{SPI: fuzzSPI, Algorithm: alg, Key: keyFor(alg), ESN: esn, ReplayWindow: 64})
		if err != nil {
			t.Fatal(err)
		}
		payload, nh, err := openPacket(sa, pkt)
		if err != nil {
			var drop *dropError
			if !errors.As(err, &drop) {
				t.Fatalf("Open returned %v, not a drop", err)
			}
			if sa.Stats.Drops.Get(drop.Reason) != 1 {
				t.Fatalf("drop %v not counted once: %v", drop.Reason, sa.Stats.Drops.Snapshot())
			}
			return
		}
		if len(payload) > len(pkt)-minCBCLen+cbcBlock-2 || nh != NextHeaderIPv4 {
			t.Fatalf("accepted malformed packet: payload %d bytes of %d, nh %d", len(payload), len(pkt), nh)
		}
		if _, _, err := openPacket(sa, pkt); !errors.Is(err, ErrReplayed) {
			t.Fatalf("second copy: %v", err)
		}
	})
}

// TestCBCConcurrentSealOpen seals on one SA and opens on its peer from
// many goroutines at once (run it with -race): the per-packet state
// is never shared, every packet opens, IVs never repeat.
func TestCBCConcurrentSealOpen(t *testing.T) {
	out, in := newSAPair(t, AES256SHA384, true)
	in.ReplayWindow().Grow() // eight goroutines running free reorder by thousands
	const workers, perWorker = 8, 500
	ivs := make([][][16]byte, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, Headroom+200+Tailroom)
			rx := make([]byte, Headroom+200+Tailroom)
			payload := bytes.Repeat([]byte{byte(w)}, 200)
			for range perWorker {
				copy(buf[Headroom:], payload)
				pkt, err := out.Seal(buf, len(payload), NextHeaderIPv4)
				if err != nil {
					t.Error(err)
					return
				}
				ivs[w] = append(ivs[w], [16]byte(pkt[8:24]))
				copy(rx[rxAt(in):], pkt)
				got, _, err := in.Open(rx, len(pkt))
				if err != nil || !bytes.Equal(got, payload) {
					t.Errorf("open: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := map[[16]byte]bool{}
	for _, list := range ivs {
		for _, iv := range list {
			if seen[iv] {
				t.Fatalf("IV %x repeated", iv)
			}
			seen[iv] = true
		}
	}
	if got := in.Stats.Packets.Load(); got != workers*perWorker {
		t.Fatalf("opened %d packets, want %d", got, workers*perWorker)
	}
}

// TestCBCFreeListBounded takes more per-packet states than the free list
// holds and returns them: the list keeps cbcFreeSlots of them, hands those
// out again, and makes a new one only when it is empty.
func TestCBCFreeListBounded(t *testing.T) {
	out, _ := newSAPair(t, AES128SHA256, false)
	var taken []*cbcWork
	for range cbcFreeSlots + 3 {
		taken = append(taken, out.cbc.get())
	}
	for _, w := range taken {
		out.cbc.put(w)
	}
	seen := map[*cbcWork]bool{}
	for _, w := range taken {
		seen[w] = true
	}
	for range cbcFreeSlots {
		if w := out.cbc.get(); !seen[w] {
			t.Fatal("a kept state was not handed out again")
		}
	}
	if w := out.cbc.get(); seen[w] {
		t.Fatal("the free list kept more states than it has slots")
	}
}
