package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mifsec/mifsec/internal/inetsum"
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	tcpHeaderLen  = 20
	protocolUDP   = 17
	protocolTCP   = 6
	defaultTTL    = 64
)

// UDPPacket returns an IPv4 or IPv6 packet, as read from or written to a TUN
// device, carrying payload in a UDP datagram from src to dst, with valid
// checksums and a TTL (hop limit) of 64. Both addresses must be of the same
// family. It serves as the template of a Memory source and as test input.
func UDPPacket(src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	if len(payload) > maxMTU {
		return nil, fmt.Errorf("building UDP packet %s -> %s: payload of %d bytes too large", src, dst, len(payload))
	}
	udp := make([]byte, udpHeaderLen+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	pkt, err := ipPacket(src.Addr(), dst.Addr(), protocolUDP, udp, 6)
	if err != nil {
		return nil, fmt.Errorf("building UDP packet %s -> %s: %w", src, dst, err)
	}
	return pkt, nil
}

// TCPPacket returns an IPv4 or IPv6 packet carrying one TCP segment from
// src to dst with the flags (0x02 SYN, 0x10 ACK, ...), the options (padded
// with end-of-options to a multiple of 4 bytes) and the payload, with valid
// checksums; sequence numbers are zero and the window 65535. It serves as
// test input.
func TCPPacket(src, dst netip.AddrPort, flags byte, options, payload []byte) ([]byte, error) {
	optLen := (len(options) + 3) &^ 3
	if optLen > 40 {
		return nil, fmt.Errorf("building TCP packet %s -> %s: %d bytes of options, at most 40", src, dst, len(options))
	}
	tcp := make([]byte, tcpHeaderLen+optLen+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12] = byte((tcpHeaderLen+optLen)/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 0xffff)
	copy(tcp[tcpHeaderLen:], options)
	copy(tcp[tcpHeaderLen+optLen:], payload)
	pkt, err := ipPacket(src.Addr(), dst.Addr(), protocolTCP, tcp, 16)
	if err != nil {
		return nil, fmt.Errorf("building TCP packet %s -> %s: %w", src, dst, err)
	}
	return pkt, nil
}

// ipPacket returns an IPv4 or IPv6 packet from src to dst carrying the
// transport segment of protocol proto, and fills in the transport checksum
// (over the pseudo-header) at checksumAt within the segment.
func ipPacket(src, dst netip.Addr, proto byte, transport []byte, checksumAt int) ([]byte, error) {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("addresses %s and %s must be valid and of one family", src, dst)
	}
	if checksumAt < 0 || checksumAt+2 > len(transport) {
		return nil, fmt.Errorf("checksum offset %d outside a %d-byte segment", checksumAt, len(transport))
	}
	headerLen := ipv6HeaderLen
	if src.Is4() {
		headerLen = ipv4HeaderLen
	}
	total := headerLen + len(transport)
	if src.Is4() && total > maxMTU || len(transport) > 0xffff {
		return nil, fmt.Errorf("segment of %d bytes too large", len(transport))
	}

	pkt := make([]byte, total)
	srcBytes, dstBytes := src.AsSlice(), dst.AsSlice()
	if src.Is4() {
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(total))
		binary.BigEndian.PutUint16(pkt[6:], 0x4000) // don't fragment
		pkt[8] = defaultTTL
		pkt[9] = proto
		copy(pkt[12:16], srcBytes)
		copy(pkt[16:20], dstBytes)
		binary.BigEndian.PutUint16(pkt[10:], inetsum.Checksum(pkt[:ipv4HeaderLen]))
	} else {
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(transport)))
		pkt[6] = proto
		pkt[7] = defaultTTL
		copy(pkt[8:24], srcBytes)
		copy(pkt[24:40], dstBytes)
	}

	segment := pkt[headerLen:]
	copy(segment, transport)
	segment[checksumAt], segment[checksumAt+1] = 0, 0
	pseudo := inetsum.Add(0, srcBytes)
	pseudo = inetsum.Add(pseudo, dstBytes)
	pseudo += uint64(proto) + uint64(len(segment))
	checksum := ^inetsum.Fold(inetsum.Add(pseudo, segment))
	if checksum == 0 && proto == protocolUDP {
		checksum = 0xffff // zero means "no checksum" in UDP over IPv4 and is invalid over IPv6
	}
	binary.BigEndian.PutUint16(segment[checksumAt:], checksum)
	return pkt, nil
}
