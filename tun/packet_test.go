package tun

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/internal/inetsum"
)

func TestUDPPacket(t *testing.T) {
	tests := []struct {
		desc       string
		src, dst   string
		payloadLen int
		wantHdrLen int
	}{
		{"ipv4", "192.0.2.1:1000", "198.51.100.7:2000", 1372, ipv4HeaderLen},
		{"ipv4 odd payload", "192.0.2.1:1", "198.51.100.7:2", 7, ipv4HeaderLen},
		{"ipv4-mapped", "[::ffff:192.0.2.1]:1", "[::ffff:198.51.100.7]:2", 0, ipv4HeaderLen},
		{"ipv6", "[2001:db8:1::1]:1000", "[2001:db8:2::7]:2000", 1352, ipv6HeaderLen},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			src, dst := netip.MustParseAddrPort(tt.src), netip.MustParseAddrPort(tt.dst)
			payload := bytes.Repeat([]byte{0xa5}, tt.payloadLen)
			pkt, err := UDPPacket(src, dst, payload)
			if err != nil {
				t.Fatal(err)
			}
			if len(pkt) != tt.wantHdrLen+udpHeaderLen+tt.payloadLen {
				t.Fatalf("length %d, want %d", len(pkt), tt.wantHdrLen+udpHeaderLen+tt.payloadLen)
			}
			var pseudo uint64
			if tt.wantHdrLen == ipv4HeaderLen {
				if pkt[0] != 0x45 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || pkt[9] != protocolUDP {
					t.Errorf("bad IPv4 header % x", pkt[:ipv4HeaderLen])
				}
				if sum := inetsum.Fold(inetsum.Add(0, pkt[:ipv4HeaderLen])); sum != 0xffff {
					t.Errorf("IPv4 header checksum does not verify: folded sum %#x", sum)
				}
				pseudo = inetsum.Add(0, pkt[12:20])
			} else {
				if pkt[0]>>4 != 6 || int(binary.BigEndian.Uint16(pkt[4:])) != udpHeaderLen+tt.payloadLen || pkt[6] != protocolUDP {
					t.Errorf("bad IPv6 header % x", pkt[:ipv6HeaderLen])
				}
				pseudo = inetsum.Add(0, pkt[8:40])
			}
			udp := pkt[tt.wantHdrLen:]
			if binary.BigEndian.Uint16(udp) != src.Port() || binary.BigEndian.Uint16(udp[2:]) != dst.Port() {
				t.Errorf("ports %d -> %d", binary.BigEndian.Uint16(udp), binary.BigEndian.Uint16(udp[2:]))
			}
			pseudo += protocolUDP + uint64(len(udp))
			if sum := inetsum.Fold(inetsum.Add(pseudo, udp)); sum != 0xffff {
				t.Errorf("UDP checksum does not verify: folded sum %#x", sum)
			}
			if !bytes.Equal(udp[udpHeaderLen:], payload) {
				t.Error("payload differs")
			}
		})
	}
}

func TestUDPPacketRejects(t *testing.T) {
	tests := []struct {
		desc     string
		src, dst netip.AddrPort
		payload  int
		wantErr  string
	}{
		{"mixed families", netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1"), 0, "one family"},
		{"invalid address", netip.AddrPort{}, netip.MustParseAddrPort("192.0.2.1:1"), 0, "one family"},
		{"ipv4 too large", netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:1"), maxMTU - 27, "too large"},
		{"ipv6 too large", netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:1"), 0xffff - 7, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := UDPPacket(tt.src, tt.dst, make([]byte, tt.payload))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
