package ike

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/mifsec/mifsec/ike/wire"
)

// Conversions between traffic selectors (address ranges, RFC 7296 §3.13.1)
// and the prefixes routes and the data plane use.

// selectorsFromPrefixes turns prefixes into traffic selectors for any
// protocol and port.
func selectorsFromPrefixes(prefixes []netip.Prefix) []wire.TrafficSelector {
	out := make([]wire.TrafficSelector, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		out = append(out, wire.TrafficSelector{StartPort: 0, EndPort: 65535, Start: p.Addr(), End: lastAddr(p)})
	}
	return out
}

// prefixesFromSelectors covers each selector's address range with the
// fewest prefixes. Protocol and ports are not represented. The work is
// linear in the number of prefixes returned (at most 2×128 per selector).
func prefixesFromSelectors(ts []wire.TrafficSelector) []netip.Prefix {
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
	return appendRangePrefixesLimited(out, start, end, -1)
}

// appendRangePrefixesLimited is appendRangePrefixes that stops once out
// holds more than limit prefixes (limit < 0: no limit).
func appendRangePrefixesLimited(out []netip.Prefix, start, end netip.Addr, limit int) []netip.Prefix {
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
		if host == width || limit >= 0 && len(out) > limit {
			return out // the whole address space
		}
		next, carry := s.add(pow2(host))
		if carry || e.less(next) || is4 && next.hi == 0 && next.lo > 0xffffffff {
			return out
		}
		s = next
	}
}

// narrow returns the parts of offered that lie within allowed, as the
// fewest prefixes, sorted (see narrowSelectors).
func narrow(offered, allowed []netip.Prefix) []netip.Prefix {
	out, _ := narrowSelectors(selectorsFromPrefixes(offered), allowed, -1)
	return out
}

// addrRange is an inclusive range of addresses of one family.
type addrRange struct {
	is4        bool
	start, end u128
}

// narrowSelectors returns the addresses of the selectors ts that lie
// within allowed, as the fewest prefixes, sorted, IPv4 first. It works on
// ranges: each selector is clipped to each allowed prefix, the pieces are
// merged, and only the result is split into prefixes, so the work is
// O(k log k) for k = len(ts)×len(allowed), plus the prefixes returned.
// With limit >= 0, more than limit prefixes are not built: ok is false.
func narrowSelectors(ts []wire.TrafficSelector, allowed []netip.Prefix, limit int) (_ []netip.Prefix, ok bool) {
	pieces := make([]addrRange, 0, len(ts)*len(allowed))
	for _, sel := range ts {
		if !sel.Start.IsValid() || !sel.End.IsValid() || sel.Start.Is4() != sel.End.Is4() || sel.End.Less(sel.Start) {
			continue
		}
		s, e := addrU128(sel.Start), addrU128(sel.End)
		for _, a := range allowed {
			a = a.Masked()
			if !a.IsValid() || a.Addr().Is4() != sel.Start.Is4() {
				continue
			}
			lo, hi := addrU128(a.Addr()), addrU128(lastAddr(a))
			if e.less(lo) || hi.less(s) {
				continue
			}
			r := addrRange{is4: sel.Start.Is4(), start: s, end: e}
			if r.start.less(lo) {
				r.start = lo
			}
			if hi.less(r.end) {
				r.end = hi
			}
			pieces = append(pieces, r)
		}
	}
	slices.SortFunc(pieces, func(x, y addrRange) int {
		switch {
		case x.is4 != y.is4:
			if x.is4 {
				return -1
			}
			return 1
		case x.start.less(y.start):
			return -1
		case y.start.less(x.start):
			return 1
		}
		return 0
	})
	var merged []addrRange
	for _, p := range pieces {
		if n := len(merged); n > 0 && merged[n-1].is4 == p.is4 {
			last := &merged[n-1]
			next, carry := last.end.add(u128{lo: 1})
			if carry || !next.less(p.start) { // overlapping or adjacent
				if last.end.less(p.end) {
					last.end = p.end
				}
				continue
			}
		}
		merged = append(merged, p)
	}
	var out []netip.Prefix
	for _, m := range merged {
		out = appendRangePrefixesLimited(out, u128Addr(m.start, m.is4), u128Addr(m.end, m.is4), limit)
		if limit >= 0 && len(out) > limit {
			return nil, false
		}
	}
	return out, true
}

// rangeToPrefixes splits [start, end] into CIDR prefixes.
func rangeToPrefixes(start, end netip.Addr) []netip.Prefix {
	return appendRangePrefixes(nil, start, end)
}
