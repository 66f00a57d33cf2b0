package dataplane

import "encoding/binary"

// Kind is what a UDP datagram received on the encapsulation port carries
// (RFC 3948 §2).
type Kind uint8

const (
	KindInvalid   Kind = iota // neither of the below: drop and count as runt
	KindESP                   // an ESP packet, starting with a non-zero SPI
	KindIKE                   // an IKE message behind the 4-byte non-ESP marker
	KindKeepalive             // a NAT keepalive: one byte 0xFF
)

func (k Kind) String() string {
	switch k {
	case KindESP:
		return "esp"
	case KindIKE:
		return "ike"
	case KindKeepalive:
		return "keepalive"
	}
	return "invalid"
}

// nonESPMarkerLen is the length of the zero SPI that marks IKE on port 4500.
const nonESPMarkerLen = 4

// Demux classifies a datagram received on UDP port 4500 and returns the part
// to hand on: the ESP packet itself, the IKE message without its non-ESP
// marker, or nothing for a keepalive or an invalid datagram. The returned
// slice aliases b.
func Demux(b []byte) (Kind, []byte) {
	switch {
	case len(b) == 1 && b[0] == 0xFF:
		return KindKeepalive, nil
	case len(b) < nonESPMarkerLen:
		return KindInvalid, nil
	}
	spi := binary.BigEndian.Uint32(b)
	switch {
	case spi == 0:
		return KindIKE, b[nonESPMarkerLen:]
	case len(b) < minESPLen:
		return KindInvalid, nil
	}
	return KindESP, b
}

// PeekSPI returns the SPI of an ESP packet; the caller has checked its length
// (Demux returned KindESP).
func PeekSPI(esp []byte) uint32 { return binary.BigEndian.Uint32(esp) }
