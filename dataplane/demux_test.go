package dataplane

import (
	"bytes"
	"testing"
)

func TestDemux(t *testing.T) {
	esp := make([]byte, minESPLen)
	copy(esp, []byte{0, 0, 0x10, 0})
	ike := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0xab}, 28)...)
	tests := []struct {
		name    string
		in      []byte
		kind    kind
		payload []byte
	}{
		{"empty", nil, kindInvalid, nil},
		{"keepalive", []byte{0xFF}, kindKeepalive, nil},
		{"one other byte", []byte{0x00}, kindInvalid, nil},
		{"three bytes", []byte{1, 2, 3}, kindInvalid, nil},
		{"ike", ike, kindIKE, ike[4:]},
		{"bare non-ESP marker", []byte{0, 0, 0, 0}, kindIKE, []byte{}},
		{"esp", esp, kindESP, esp},
		{"esp one byte short", esp[:minESPLen-1], kindInvalid, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kind, payload := demux(tc.in)
			if kind != tc.kind || !bytes.Equal(payload, tc.payload) {
				t.Fatalf("Demux = %v %x, want %v %x", kind, payload, tc.kind, tc.payload)
			}
		})
	}
}
