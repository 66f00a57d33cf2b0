package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// fuzzKey is a fixed key so that seeds sealed with it open.
var fuzzKey = bytes.Repeat([]byte{0x5a}, AES256GCM16.KeyLen())

const fuzzSPI = 0x0badcafe

// FuzzOpen feeds arbitrary bytes to Open as if they came from the network.
// Open must never panic, must fail with a counted *dropError for anything
// not sealed with the key, and what it accepts must be well formed.
func FuzzOpen(f *testing.F) {
	for _, esn := range []bool{false, true} {
		sa, err := NewSA(SAConfig{SPI: fuzzSPI, Algorithm: AES256GCM16, Key: fuzzKey, ESN: esn})
		if err != nil {
			f.Fatal(err)
		}
		for _, n := range []int{0, 1, 20, 61} {
			buf := make([]byte, Headroom+n+Tailroom)
			pkt, err := sa.Seal(buf, n, NextHeaderIPv4)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(esn, bytes.Clone(pkt))
		}
	}
	f.Add(false, []byte{})
	f.Add(true, make([]byte, minESPLen))
	f.Fuzz(func(t *testing.T, esn bool, pkt []byte) {
		sa, err := NewSA(SAConfig{SPI: fuzzSPI, Algorithm: AES256GCM16, Key: fuzzKey, ESN: esn, ReplayWindow: 64})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, scratchLen+len(pkt))
		copy(buf[scratchLen:], pkt)
		payload, nh, err := sa.Open(buf, len(pkt))
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
		// Accepted: it must be one of the seeds (only they carry a valid
		// ICV), its payload inside the packet, and a second copy replayed.
		if len(payload) > len(pkt)-minESPLen || nh != NextHeaderIPv4 {
			t.Fatalf("accepted malformed packet: payload %d bytes of %d, nh %d", len(payload), len(pkt), nh)
		}
		if binary.BigEndian.Uint32(pkt) != fuzzSPI {
			t.Fatal("accepted a packet with a foreign SPI")
		}
		copy(buf[scratchLen:], pkt)
		if _, _, err := sa.Open(buf, len(pkt)); !errors.Is(err, ErrReplayed) {
			t.Fatalf("second copy: %v", err)
		}
	})
}

// FuzzDemux checks the port-4500 classifier on arbitrary datagrams.
func FuzzDemux(f *testing.F) {
	f.Add([]byte{0xFF})
	f.Add([]byte{0, 0, 0, 0, 1, 2, 3})
	f.Add(make([]byte, minESPLen))
	f.Add(append([]byte{0, 0, 1, 0}, make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, payload := demux(b)
		switch kind {
		case kindKeepalive:
			if len(b) != 1 || b[0] != 0xFF || payload != nil {
				t.Fatalf("keepalive from %x", b)
			}
		case kindIKE:
			if len(b) < 4 || binary.BigEndian.Uint32(b) != 0 || !bytes.Equal(payload, b[4:]) {
				t.Fatalf("IKE from %x", b)
			}
		case kindESP:
			if len(b) < minESPLen || peekSPI(payload) == 0 || !bytes.Equal(payload, b) {
				t.Fatalf("ESP from %x", b)
			}
		case kindInvalid:
			if payload != nil {
				t.Fatal("invalid datagram with a payload")
			}
			if len(b) >= minESPLen || (len(b) == 1 && b[0] == 0xFF) || (len(b) >= 4 && binary.BigEndian.Uint32(b) == 0) {
				t.Fatalf("%x classified invalid", b)
			}
		default:
			t.Fatalf("unknown kind %d", kind)
		}
	})
}
