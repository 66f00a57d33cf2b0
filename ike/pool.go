package ike

import (
	"errors"
	"fmt"
	"net/netip"
)

// AddressPool leases inner addresses from one prefix to clients
// (configuration payload, RFC 7296 §3.15). The prefix's first address and
// the one after it are never leased: the first is the network itself, the
// second the gateway's own address on its TUN device. In an IPv4 pool the
// last address (broadcast) is not leased either. A pool is not safe for
// concurrent use; the Responder's loop owns its pools.
type AddressPool struct {
	prefix netip.Prefix
	leased map[netip.Addr]bool
	next   netip.Addr // where the search for a free address starts
}

// NewAddressPool returns a pool over prefix, which must leave room for at
// least one client.
func NewAddressPool(prefix netip.Prefix) (*AddressPool, error) {
	prefix = prefix.Masked()
	if !prefix.IsValid() {
		return nil, errors.New("address pool: invalid prefix")
	}
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	if hostBits < 2 || (prefix.Addr().Is4() && hostBits < 2) {
		return nil, fmt.Errorf("address pool %s is too small", prefix)
	}
	p := &AddressPool{prefix: prefix, leased: map[netip.Addr]bool{}}
	p.next = p.first()
	return p, nil
}

// Prefix is the pool's prefix.
func (p *AddressPool) Prefix() netip.Prefix { return p.prefix }

// GatewayAddress is the address the gateway keeps for itself: the first
// usable one, with the pool's prefix length.
func (p *AddressPool) GatewayAddress() netip.Prefix {
	return netip.PrefixFrom(p.prefix.Addr().Next(), p.prefix.Bits())
}

func (p *AddressPool) first() netip.Addr { return p.prefix.Addr().Next().Next() }

// usable reports whether a may be leased.
func (p *AddressPool) usable(a netip.Addr) bool {
	if !a.IsValid() || !p.prefix.Contains(a) {
		return false
	}
	if a.Is4() && !a.Next().IsValid() || a.Is4() && !p.prefix.Contains(a.Next()) {
		return false // the broadcast address
	}
	return a.Compare(p.first()) >= 0
}

// maxScan bounds the search for a free address, so that a nearly full
// IPv6 pool costs no more than a small one.
const maxScan = 1 << 16

// Lease returns a free address and marks it leased.
func (p *AddressPool) Lease() (netip.Addr, error) {
	a := p.next
	for range maxScan {
		if !p.usable(a) {
			a = p.first()
		}
		if !p.leased[a] {
			p.leased[a] = true
			p.next = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("address pool %s is exhausted", p.prefix)
}

// Release returns a to the pool.
func (p *AddressPool) Release(a netip.Addr) { delete(p.leased, a) }

// Leased is the number of addresses leased.
func (p *AddressPool) Leased() int { return len(p.leased) }
