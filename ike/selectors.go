package ike

import (
	"math/bits"
	"net/netip"
	"slices"
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
// fewest prefixes. Protocol and ports are not represented. The work is
// linear in the number of prefixes returned (at most 2×128 per selector).
func PrefixesFromSelectors(ts []TrafficSelector) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ts {
		out = appendRangePrefixes(out, s.Start, s.End)
	}
	return out
}

// u128 is an address as a 128-bit number (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

func addrU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var v u128
	for i := range 8 {
		v.hi = v.hi<<8 | uint64(b[i])
		v.lo = v.lo<<8 | uint64(b[8+i])
	}
	return v
}

func u128Addr(v u128, is4 bool) netip.Addr {
	if is4 {
		return netip.AddrFrom4([4]byte{byte(v.lo >> 24), byte(v.lo >> 16), byte(v.lo >> 8), byte(v.lo)})
	}
	var b [16]byte
	for i := range 8 {
		b[i] = byte(v.hi >> (56 - 8*i))
		b[8+i] = byte(v.lo >> (56 - 8*i))
	}
	return netip.AddrFrom16(b)
}

func (v u128) less(w u128) bool { return v.hi < w.hi || v.hi == w.hi && v.lo < w.lo }

func (v u128) sub(w u128) u128 {
	lo, borrow := bits.Sub64(v.lo, w.lo, 0)
	hi, _ := bits.Sub64(v.hi, w.hi, borrow)
	return u128{hi, lo}
}

func (v u128) add(w u128) (u128, bool) {
	lo, carry := bits.Add64(v.lo, w.lo, 0)
	hi, carry := bits.Add64(v.hi, w.hi, carry)
	return u128{hi, lo}, carry != 0
}

// trailingZeros is the number of low zero bits of v (128 for 0).
func (v u128) trailingZeros() int {
	if v.lo != 0 {
		return bits.TrailingZeros64(v.lo)
	}
	return 64 + bits.TrailingZeros64(v.hi)
}

// bitLen is the number of significant bits of v.
func (v u128) bitLen() int {
	if v.hi != 0 {
		return 64 + bits.Len64(v.hi)
	}
	return bits.Len64(v.lo)
}

// pow2 is 2^n for n < 128.
func pow2(n int) u128 {
	if n >= 64 {
		return u128{hi: 1 << (n - 64)}
	}
	return u128{lo: 1 << n}
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	host := p.Addr().BitLen() - p.Bits()
	v := addrU128(p.Addr())
	if host > 0 {
		size := pow2(host)
		v, _ = v.add(size.sub(u128{lo: 1}))
		if host == 128 {
			v = u128{^uint64(0), ^uint64(0)}
		}
	}
	return u128Addr(v, p.Addr().Is4())
}

// appendRangePrefixes appends the CIDR prefixes that exactly cover
// [start, end] to out; nothing for an invalid range.
func appendRangePrefixes(out []netip.Prefix, start, end netip.Addr) []netip.Prefix {
	if !start.IsValid() || !end.IsValid() || start.Is4() != end.Is4() || end.Less(start) {
		return out
	}
	is4 := start.Is4()
	width := start.BitLen()
	s, e := addrU128(start), addrU128(end)
	for {
		// The largest block aligned at s that stays within e: limited by
		// s's alignment and by the length of what is left.
		host := min(s.trailingZeros(), width)
		left, wrapped := e.sub(s).add(u128{lo: 1}) // e-s+1; wraps only for the whole IPv6 space
		if !wrapped {
			host = min(host, left.bitLen()-1)
		}
		out = append(out, netip.PrefixFrom(u128Addr(s, is4), width-host))
		if host == width {
			return out // the whole address space
		}
		next, carry := s.add(pow2(host))
		if carry || e.less(next) || is4 && next.hi == 0 && next.lo > 0xffffffff {
			return out
		}
		s = next
	}
}

// narrow returns the parts of offered that lie within allowed: for each
// pair, the smaller prefix when one contains the other (two prefixes
// either nest or are disjoint). The result is sorted, without duplicates
// and without a prefix that another in it contains; the work is
// O(n log n) in len(offered)×len(allowed).
func narrow(offered, allowed []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range allowed {
		a = a.Masked()
		for _, o := range offered {
			o = o.Masked()
			switch {
			case !o.Overlaps(a):
			case o.Bits() >= a.Bits():
				out = append(out, o)
			default:
				out = append(out, a)
			}
		}
	}
	if len(out) < 2 {
		return out
	}
	// Sorted by address then length, a prefix that contains later ones
	// comes first: keep it, skip those it contains.
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	kept := out[:1]
	for _, p := range out[1:] {
		if last := kept[len(kept)-1]; last.Addr().Is4() == p.Addr().Is4() && last.Contains(p.Addr()) && last.Bits() <= p.Bits() {
			continue
		}
		kept = append(kept, p)
	}
	return kept
}

// rangeToPrefixes splits [start, end] into CIDR prefixes.
func rangeToPrefixes(start, end netip.Addr) []netip.Prefix {
	return appendRangePrefixes(nil, start, end)
}
