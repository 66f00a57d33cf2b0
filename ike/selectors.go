package ike

import (
	"net/netip"
)

// Conversions between traffic selectors (address ranges, RFC 7296 §3.13.1)
// and the prefixes routes and the data plane use.

// SelectorsFromPrefixes turns prefixes into traffic selectors for any
// protocol and port.
func SelectorsFromPrefixes(prefixes []netip.Prefix) []TrafficSelector {
	out := make([]TrafficSelector, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		out = append(out, TrafficSelector{StartPort: 0, EndPort: 65535, Start: p.Addr(), End: lastAddr(p)})
	}
	return out
}

// PrefixesFromSelectors covers each selector's address range with the
// fewest prefixes. Protocol and ports are not represented.
func PrefixesFromSelectors(ts []TrafficSelector) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ts {
		out = append(out, rangeToPrefixes(s.Start, s.End)...)
	}
	return out
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := p.Addr().BitLen() - p.Bits() - 8*(len(b)-1-i)
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(1<<hostBits - 1)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// rangeToPrefixes splits [start, end] into CIDR prefixes.
func rangeToPrefixes(start, end netip.Addr) []netip.Prefix {
	if !start.IsValid() || !end.IsValid() || start.Is4() != end.Is4() || end.Less(start) {
		return nil
	}
	var out []netip.Prefix
	for {
		// The largest prefix starting at start that stays within end.
		bits := start.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(start, bits-1)
			if p.Masked().Addr() != start || end.Less(lastAddr(p)) {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(start, bits)
		out = append(out, p)
		last := lastAddr(p)
		if last == end || !last.Next().IsValid() {
			return out
		}
		start = last.Next()
	}
}
