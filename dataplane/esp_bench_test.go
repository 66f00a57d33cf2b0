package dataplane

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"runtime"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

const benchPayload = 1400

// BenchmarkSeal is ESP sealing of one 1400-byte inner packet, in place.
func BenchmarkSeal(b *testing.B) {
	for _, alg := range Algorithms() {
		b.Run(alg.String(), func(b *testing.B) {
			out, _ := newSAPair(b, alg, false)
			buf := make([]byte, Headroom+benchPayload+Tailroom)
			rand.Read(buf[Headroom : Headroom+benchPayload])
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := out.Seal(buf, benchPayload, NextHeaderIPv4); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen is ESP opening of one 1400-byte inner packet, in place,
// replay check included. Each iteration first copies the sealed packet into
// the receive buffer (opening destroys it), as a receive would.
func BenchmarkOpen(b *testing.B) {
	for _, alg := range Algorithms() {
		b.Run(alg.String(), func(b *testing.B) {
			out, in := newSAPair(b, alg, false)
			// A ring of packets with consecutive sequence numbers; when it
			// wraps the receiver gets a fresh window so nothing is a replay.
			const ring = 256
			pkts := make([][]byte, ring)
			for i := range pkts {
				payload := make([]byte, benchPayload)
				rand.Read(payload)
				pkts[i] = sealPayload(b, out, payload, NextHeaderIPv4)
			}
			rx := make([]byte, rxAt(in)+len(pkts[0]))
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == ring {
					i = 0
					in.window.top.Store(0)
					r := in.window.ring.Load()
					for k := range r.slots {
						r.slots[k].Store(0)
					}
				}
				copy(rx[rxAt(in):], pkts[i])
				if _, _, err := in.Open(rx, len(pkts[i])); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkAEADRaw seals the same bytes with the bare cipher.AEAD, in place:
// the ceiling ESP sealing is measured against.
func BenchmarkAEADRaw(b *testing.B) {
	for _, alg := range Algorithms() {
		b.Run(alg.String(), func(b *testing.B) {
			key := make([]byte, alg.KeyLen()-SaltLen)
			rand.Read(key)
			var aead cipher.AEAD
			if alg == ChaCha20Poly1305 {
				aead, _ = chacha20poly1305.New(key)
			} else {
				block, _ := aes.NewCipher(key)
				aead, _ = cipher.NewGCM(block)
			}
			// The same layout ESP seals: payload plus a 2-byte trailer
			// (1400 is already aligned), nonce and AAD in the buffer.
			buf := make([]byte, Headroom+benchPayload+2+icvLen)
			rand.Read(buf)
			nonce, aad := buf[:12], buf[scratchLen:scratchLen+8]
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				aead.Seal(buf[Headroom:Headroom], nonce, buf[Headroom:Headroom+benchPayload+2], aad)
			}
		})
	}
}

// BenchmarkSAHeap reports the heap one SA holds (HeapAlloc after a GC,
// over 1000 of them) with the window of an inbound data SA (the default),
// of an outbound SA (the least) and of a probe SA's inbound side (128, as
// mif starts it; it grows to 1024, 512 bytes, for a peer with several
// paths): a gateway holds four per client that speaks the MIF
// extension, two per other client (docs/gateway-scale.md, Memory per
// client). An SA's cipher is expanded by its first packet: "used" SAs
// have sealed one.
func BenchmarkSAHeap(b *testing.B) {
	const n = 1000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	key := make([]byte, AES256GCM16.KeyLen())
	for _, w := range []struct {
		name     string
		window   int
		outbound bool
		used     bool
	}{{"inbound", DefaultReplayWindow, false, false}, {"outbound", 0, true, false}, {"probe-inbound", 128, false, false},
		{"inbound-used", DefaultReplayWindow, false, true}, {"outbound-used", 0, true, true}} {
		b.Run(w.name, func(b *testing.B) {
			for b.Loop() {
				sas := make([]*SA, n)
				before := heap()
				for i := range sas {
					var err error
					if sas[i], err = NewSA(SAConfig{SPI: uint32(256 + i), Algorithm: AES256GCM16, Key: key, ReplayWindow: w.window, Outbound: w.outbound}); err != nil {
						b.Fatal(err)
					}
					if w.used {
						if _, err := sas[i].Seal(make([]byte, Headroom+20+Tailroom), 20, NextHeaderIPv4); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(heap()-before)/n, "heapB/SA")
				runtime.KeepAlive(sas)
			}
		})
	}
}
