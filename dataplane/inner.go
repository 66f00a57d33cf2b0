package dataplane

import (
	"encoding/binary"
	"net/netip"
)

// innerAddresses returns the source and destination addresses of an inner
// IP packet read from the TUN and the ESP next header that announces it.
func innerAddresses(pkt []byte) (src, dst netip.Addr, nextHeader byte, ok bool) {
	if len(pkt) == 0 {
		return netip.Addr{}, netip.Addr{}, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, netip.Addr{}, 0, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), NextHeaderIPv4, true
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, netip.Addr{}, 0, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), nextHeaderIPv6, true
	}
	return netip.Addr{}, netip.Addr{}, 0, false
}

// innerPacket checks the IP header of a decrypted payload against its next
// header and returns the packet without TFC padding (RFC 4303 §2.4) and its
// source and destination addresses.
func innerPacket(payload []byte, nextHeader byte) (pkt []byte, src, dst netip.Addr, ok bool) {
	switch nextHeader {
	case NextHeaderIPv4:
		if len(payload) < 20 || payload[0]>>4 != 4 {
			return nil, netip.Addr{}, netip.Addr{}, false
		}
		ihl := int(payload[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(payload[2:]))
		if ihl < 20 || total < ihl || total > len(payload) {
			return nil, netip.Addr{}, netip.Addr{}, false
		}
		return payload[:total], netip.AddrFrom4([4]byte(payload[12:16])), netip.AddrFrom4([4]byte(payload[16:20])), true
	case nextHeaderIPv6:
		if len(payload) < 40 || payload[0]>>4 != 6 {
			return nil, netip.Addr{}, netip.Addr{}, false
		}
		total := 40 + int(binary.BigEndian.Uint16(payload[4:]))
		if total > len(payload) {
			return nil, netip.Addr{}, netip.Addr{}, false
		}
		return payload[:total], netip.AddrFrom16([16]byte(payload[8:24])), netip.AddrFrom16([16]byte(payload[24:40])), true
	}
	return nil, netip.Addr{}, netip.Addr{}, false
}

// Selectors is a set of address prefixes: the traffic selectors of one side
// of an SA, reduced to addresses (RFC 7296 §2.9). The engine checks both
// sides of every packet it seals or opens (RFC 4301 §5.1, §5.2): an empty
// set contains nothing.
type Selectors []netip.Prefix

// Contains reports whether a is inside one of the prefixes.
func (s Selectors) Contains(a netip.Addr) bool {
	for _, p := range s {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// AnyAddress selects every IPv4 and IPv6 address.
var AnyAddress = Selectors{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
