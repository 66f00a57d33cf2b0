package dataplane

import "encoding/binary"

// kind is what a UDP datagram received on the encapsulation port carries
// (RFC 3948 §2).
type kind uint8

const (
	kindInvalid   kind = iota // neither of the below: drop and count as runt
	kindESP                   // an ESP packet, starting with a non-zero SPI
	kindIKE                   // an IKE message behind the 4-byte non-ESP marker
	kindKeepalive             // a NAT keepalive: one byte 0xFF
)

func (k kind) String() string {
	switch k {
	case kindESP:
		return "esp"
	case kindIKE:
		return "ike"
	case kindKeepalive:
		return "keepalive"
	}
	return "invalid"
}

// nonESPMarkerLen is the length of the zero SPI that marks IKE on port 4500.
const nonESPMarkerLen = 4

// demux classifies a datagram received on UDP port 4500 and returns the part
// to hand on: the ESP packet itself, the IKE message without its non-ESP
// marker, or nothing for a keepalive or an invalid datagram. The returned
// slice aliases b.
func demux(b []byte) (kind, []byte) {
	switch {
	case len(b) == 1 && b[0] == 0xFF:
		return kindKeepalive, nil
	case len(b) < nonESPMarkerLen:
		return kindInvalid, nil
	}
	spi := binary.BigEndian.Uint32(b)
	switch {
	case spi == 0:
		return kindIKE, b[nonESPMarkerLen:]
	case len(b) < minESPLen:
		return kindInvalid, nil
	}
	return kindESP, b
}

// peekSPI returns the SPI of an ESP packet; the caller has checked its length
// (demux returned kindESP).
func peekSPI(esp []byte) uint32 { return binary.BigEndian.Uint32(esp) }
