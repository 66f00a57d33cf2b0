package inetsum

import (
	"encoding/binary"
	"testing"
)

func TestChecksum(t *testing.T) {
	// RFC 1071 §3's example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
	data := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Fold(Add(0, data)); got != 0xddf2 {
		t.Fatalf("sum of RFC 1071's example: %#04x, want 0xddf2", got)
	}
	// A real IPv4 header (checksum field 0xb861) checks to zero, and
	// computing it with the field cleared gives the field.
	hdr := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := Checksum(hdr); got != 0 {
		t.Fatalf("checksum over a header with its checksum: %#04x, want 0", got)
	}
	binary.BigEndian.PutUint16(hdr[10:], 0)
	if got := Checksum(hdr); got != 0xb861 {
		t.Fatalf("header checksum %#04x, want 0xb861", got)
	}
	// An odd length pads with a zero byte; pieces add up.
	if Checksum([]byte{1, 2, 3}) != Checksum([]byte{1, 2, 3, 0}) {
		t.Fatal("odd length is not padded with zero")
	}
	if Fold(Add(Add(0, data[:4]), data[4:])) != Fold(Add(0, data)) {
		t.Fatal("sums of pieces do not add up")
	}
}

func TestAddAllocatesNothing(t *testing.T) {
	b := make([]byte, 1500)
	if n := testing.AllocsPerRun(100, func() { _ = Checksum(b) }); n != 0 {
		t.Fatalf("%v allocations per checksum", n)
	}
}
