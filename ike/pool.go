package ike

import (
	"errors"
	"fmt"
	"net/netip"
)

// Pool leases inner addresses from one prefix to clients: AddressPool is
// a gateway's own; a cluster of gateways shares one through etcd
// (mif/cluster, a SharedPool). The Responder calls its methods on its
// loop, LeaseFor in IKE_AUTH and Release when a client goes, except a
// SharedPool's leases.
type Pool interface {
	Prefix() netip.Prefix
	// LeaseFor returns an address for the client with identity id (""
	// for none), preferably the one it had last.
	LeaseFor(id string) (netip.Addr, error)
	// LeaseRequested leases want, an address the client asked for (a
	// client redirected from another gateway of the service asks for the
	// one it had), when it is free (a shared pool: no other identity
	// holds it); false otherwise.
	LeaseRequested(id string, want netip.Addr) bool
	// Release returns an address LeaseFor handed out.
	Release(a netip.Addr)
	// Leased is the number of addresses this gateway holds leased.
	Leased() int
}

// SharedPool is a Pool whose leases live in a store other gateways share
// (mif/cluster's, in etcd). Its LeaseFor and LeaseRequested take round
// trips to the store, so the Responder calls them beside its loop, for
// several clients at once: they are safe for concurrent use, bound the
// time they take and fail at once while the store is unreachable. Its
// Release, called on the loop, does not wait for the store.
type SharedPool interface {
	Pool
	// Shared marks the pool as shared.
	Shared()
}

// ErrPoolBusy is what a SharedPool's LeaseFor wraps when its store
// answered too late (loaded, not away): the Responder leaves the client's
// IKE_AUTH request unanswered, and its retransmission tries again.
var ErrPoolBusy = errors.New("the shared pool's store answered too late")

// AddressPool leases inner addresses from one prefix to clients
// (configuration payload, RFC 7296 §3.15). The prefix's first address and
// the one after it are never leased: the first is the network itself, the
// second the gateway's own address on its TUN device. In an IPv4 pool the
// last address (broadcast) is not leased either. A pool is not safe for
// concurrent use; the Responder's loop owns its pools.
//
// Leases are sticky: a client that authenticates again with the same
// identity (a reconnect after it lost its path, a laptop waking up) gets
// the address it had, if no one took it meanwhile, so that its
// connections survive; addresses remembered for other identities are
// handed out only when no other is free.
type AddressPool struct {
	prefix netip.Prefix
	leased map[netip.Addr]bool
	next   netip.Addr // where the search for a free address starts
	last   map[string]netip.Addr
	owner  map[netip.Addr]string // the identity an address was last leased to
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
	p := &AddressPool{prefix: prefix, leased: map[netip.Addr]bool{}, last: map[string]netip.Addr{}, owner: map[netip.Addr]string{}}
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

// Usable reports whether a may be leased: in the prefix, neither the
// network, the gateway's address nor an IPv4 broadcast address.
func (p *AddressPool) Usable(a netip.Addr) bool {
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
func (p *AddressPool) Lease() (netip.Addr, error) { return p.LeaseFor("") }

// LeaseFor returns a free address for the client with identity id ("" for
// none): the one it had last if it is free, else preferably one no other
// identity had.
func (p *AddressPool) LeaseFor(id string) (netip.Addr, error) {
	if a, ok := p.last[id]; ok && id != "" && !p.leased[a] {
		p.leased[a] = true
		return a, nil
	}
	for _, spareOthers := range []bool{true, false} {
		a := p.next
		for range maxScan {
			if !p.Usable(a) {
				a = p.first()
			}
			if !p.leased[a] && (!spareOthers || p.owner[a] == "" || p.owner[a] == id) {
				p.leased[a] = true
				p.next = a.Next()
				if id != "" {
					if prev, ok := p.owner[a]; ok {
						delete(p.last, prev)
					}
					if old, ok := p.last[id]; ok {
						delete(p.owner, old)
					}
					p.last[id], p.owner[a] = a, id
				}
				return a, nil
			}
			a = a.Next()
		}
	}
	return netip.Addr{}, fmt.Errorf("address pool %s is exhausted", p.prefix)
}

// LeaseRequested leases want to the client with identity id when the
// client asked for it (RFC 7296 §3.15.1: a client redirected from another
// gateway of the same service asks for the address it had there) and it
// is free; false otherwise. An identity that had it last here loses its
// claim: the address is in use elsewhere in the service.
func (p *AddressPool) LeaseRequested(id string, want netip.Addr) bool {
	if !want.IsValid() || !p.Usable(want) || p.leased[want] {
		return false
	}
	p.leased[want] = true
	if prev, ok := p.owner[want]; ok {
		delete(p.last, prev)
		delete(p.owner, want)
	}
	if id != "" {
		if old, ok := p.last[id]; ok {
			delete(p.owner, old)
		}
		p.last[id], p.owner[want] = want, id
	}
	return true
}

// Release returns a to the pool; the identity it was leased to may get it
// back with LeaseFor.
func (p *AddressPool) Release(a netip.Addr) { delete(p.leased, a) }

// Leased is the number of addresses leased.
func (p *AddressPool) Leased() int { return len(p.leased) }
