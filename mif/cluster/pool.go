package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mifsec/mifsec/ike"
)

// Pool is an inner address pool the cluster's gateways share
// (ike.Pool). An address is granted by creating its key only if absent;
// the identity's binding key remembers it, so that the client gets it
// again at any gateway. Both keys live under this gateway's binding lease
// while it holds the client, and move to a grace lease when the client
// goes. Its methods run on the Responder's loop.
type Pool struct {
	c     *Cluster
	rules *ike.AddressPool // which addresses may be leased
	next  netip.Addr       // where the search for a free address starts
	// held are the addresses this gateway leased, by address (guarded by
	// c.mu: resync reads it).
	held map[netip.Addr]string
}

var _ ike.Pool = (*Pool)(nil)

// Pool returns the shared pool over prefix (ike.ResponderConfig.NewPool).
func (c *Cluster) Pool(prefix netip.Prefix) (ike.Pool, error) {
	rules, err := ike.NewAddressPool(prefix)
	if err != nil {
		return nil, err
	}
	p := &Pool{c: c, rules: rules, held: map[netip.Addr]string{}}
	p.next = p.first()
	c.mu.Lock()
	c.pools = append(c.pools, p)
	c.mu.Unlock()
	return p, nil
}

func (p *Pool) first() netip.Addr { return p.rules.GatewayAddress().Addr().Next() }

// Prefix implements ike.Pool.
func (p *Pool) Prefix() netip.Prefix { return p.rules.Prefix() }

// Leased implements ike.Pool: the addresses this gateway holds.
func (p *Pool) Leased() int {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return len(p.held)
}

func (p *Pool) addressesOf(id string) []netip.Addr {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	var out []netip.Addr
	for a, h := range p.held {
		if h == id {
			out = append(out, a)
		}
	}
	return out
}

func (p *Pool) hold(a netip.Addr, id string) {
	p.c.mu.Lock()
	p.held[a] = id
	p.c.mu.Unlock()
}

func (p *Pool) heldHere(a netip.Addr) bool {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	_, ok := p.held[a]
	return ok
}

// LeaseFor implements ike.Pool: the identity's bound address if no one
// else holds it, else the first free address from where the last search
// stopped. A second IKE SA of an identity this gateway holds gets an
// address of its own, not bound to the identity.
func (p *Pool) LeaseFor(id string) (netip.Addr, error) {
	c := p.c
	if !c.isUp() {
		c.mu.Lock()
		c.refused++
		c.mu.Unlock()
		return netip.Addr{}, ErrUnreachable
	}
	c.ops.Lock()
	defer c.ops.Unlock()
	a, err := p.lease(id)
	if err != nil && !errors.Is(err, errExhausted) {
		c.mu.Lock()
		c.refused++
		c.mu.Unlock()
		c.failed("leasing an address", err)
		return netip.Addr{}, fmt.Errorf("%w (%v)", ErrUnreachable, err)
	}
	return a, err
}

var errExhausted = errors.New("no address is free")

// lease tries the binding, then free addresses.
func (p *Pool) lease(id string) (netip.Addr, error) {
	c := p.c
	ctx, cancel := c.request()
	defer cancel()
	_, bind := c.leases()
	prefix := p.Prefix()
	bound := id != ""
	if bound {
		got, err := c.cli.Get(ctx, c.keys.binding(prefix, id))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("reading the binding of %s: %w", ike.Printable(id), err)
		}
		if len(got.Kvs) > 0 {
			a, err := netip.ParseAddr(string(got.Kvs[0].Value))
			switch {
			case err != nil || !p.rules.Usable(a):
				// Not an address of this pool (any more): lease anew.
			case p.heldHere(a):
				bound = false // a second IKE SA of the identity
			default:
				ok, err := p.claim(ctx, a, id, bind)
				if err != nil {
					return netip.Addr{}, err
				}
				if ok {
					p.hold(a, id)
					return a, nil
				}
			}
		}
	}
	// A free address: keys sort as addresses, so a range read from the
	// cursor shows the gaps; a gap another gateway fills first fails the
	// transaction and the search goes on after it.
	cand, wrapped := p.next, false
	for scanned := 0; scanned < maxScan; {
		if !p.rules.Usable(cand) {
			if wrapped {
				break
			}
			cand, wrapped = p.first(), true
		}
		free, n, err := p.firstFree(ctx, cand)
		if err != nil {
			return netip.Addr{}, err
		}
		scanned += n + 1
		if !free.IsValid() {
			if wrapped {
				break
			}
			cand, wrapped = p.first(), true
			continue
		}
		ops := []clientv3.Op{clientv3.OpPut(c.keys.addr(prefix, free), id, clientv3.WithLease(bind))}
		if bound {
			ops = append(ops, clientv3.OpPut(c.keys.binding(prefix, id), free.String(), clientv3.WithLease(bind)))
		}
		resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.keys.addr(prefix, free)), "=", 0)).Then(ops...).Commit()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("leasing %s: %w", free, err)
		}
		if resp.Succeeded {
			p.next = free.Next()
			p.hold(free, id)
			return free, nil
		}
		cand = free.Next()
	}
	return netip.Addr{}, fmt.Errorf("address pool %s: %w", prefix, errExhausted)
}

// LeaseRequested implements ike.Pool: want, which a client redirected
// from another gateway asks for, when its key is absent or names the
// identity (bound to it, on another gateway's lease or a grace lease).
// While etcd is unreachable, or want is another identity's, it is false
// (and the client gets an address by LeaseFor, or none).
func (p *Pool) LeaseRequested(id string, want netip.Addr) bool {
	c := p.c
	if !p.rules.Usable(want) || p.heldHere(want) || !c.isUp() {
		return false
	}
	c.ops.Lock()
	defer c.ops.Unlock()
	ctx, cancel := c.request()
	defer cancel()
	_, bind := c.leases()
	ok, err := p.claim(ctx, want, id, bind)
	if err != nil {
		c.failed("leasing a requested address", err)
		return false
	}
	if ok {
		p.hold(want, id)
	}
	return ok
}

// maxScan bounds the addresses one lease looks at (as ike's pools do).
const maxScan = 1 << 16

// scanPage is how many keys one range read returns.
const scanPage = 512

// firstFree returns the first address from a on that has no key (the
// zero Addr when none is left before the pool's end), and how many taken
// ones it passed.
func (p *Pool) firstFree(ctx context.Context, a netip.Addr) (netip.Addr, int, error) {
	c := p.c
	prefix := p.Prefix()
	end := c.keys.pool(prefix) + "/addr0" // just after every address key ('/' < '0')
	passed := 0
	for {
		resp, err := c.cli.Get(ctx, c.keys.addr(prefix, a), clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(scanPage))
		if err != nil {
			return netip.Addr{}, passed, fmt.Errorf("reading pool %s: %w", prefix, err)
		}
		for _, kv := range resp.Kvs {
			if addrFromKey(string(kv.Key)) != a {
				return a, passed, nil // a gap: the keys sort as addresses
			}
			passed++
			if a = a.Next(); !p.rules.Usable(a) {
				return netip.Addr{}, passed, nil
			}
		}
		if len(resp.Kvs) < scanPage {
			return a, passed, nil // no key from a on
		}
		if passed >= maxScan {
			return netip.Addr{}, passed, nil
		}
	}
}

func addrFromKey(k string) netip.Addr {
	i := len(k) - 1
	for i >= 0 && k[i] != '/' {
		i--
	}
	b, err := hex.DecodeString(k[i+1:])
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// claim takes a, the address id is bound to, for this gateway: its keys
// still name id (held by another gateway or on a grace lease), or the
// address key expired and no one took it.
func (p *Pool) claim(ctx context.Context, a netip.Addr, id string, bind clientv3.LeaseID) (bool, error) {
	c := p.c
	prefix := p.Prefix()
	ak, bk := c.keys.addr(prefix, a), c.keys.binding(prefix, id)
	put := []clientv3.Op{clientv3.OpPut(ak, id, clientv3.WithLease(bind)), clientv3.OpPut(bk, a.String(), clientv3.WithLease(bind))}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(ak), "=", id)).
		Then(put...).
		Else(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ak), "=", 0)}, put, nil)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("claiming %s: %w", a, err)
	}
	return resp.Succeeded || resp.Responses[0].GetResponseTxn().Succeeded, nil
}

// rebind writes a's keys under the binding lease again after etcd was
// away (false: another identity has a now).
func (p *Pool) rebind(a netip.Addr, id string) (bool, error) {
	ctx, cancel := p.c.request()
	defer cancel()
	_, bind := p.c.leases()
	return p.claim(ctx, a, id, bind)
}

// Release implements ike.Pool: the address's keys move to the grace
// lease, the identity's binding with them, unless another gateway took
// them meanwhile. While etcd is unreachable the release waits for it.
func (p *Pool) Release(a netip.Addr) {
	c := p.c
	c.mu.Lock()
	id, ok := p.held[a]
	delete(p.held, a)
	up := c.up
	if ok && !up {
		c.released = append(c.released, release{pool: p, addr: a, id: id})
	}
	c.mu.Unlock()
	if !ok || !up {
		return
	}
	c.ops.Lock()
	defer c.ops.Unlock()
	if err := p.releaseInEtcd(a, id); err != nil {
		c.mu.Lock()
		c.released = append(c.released, release{pool: p, addr: a, id: id})
		c.mu.Unlock()
		c.failed("releasing an address", err)
	}
}

// releaseInEtcd moves a's keys to the grace lease if they are still this
// gateway's and a was not leased here again since.
func (p *Pool) releaseInEtcd(a netip.Addr, id string) error {
	if p.heldHere(a) {
		return nil
	}
	c := p.c
	ctx, cancel := c.request()
	defer cancel()
	grace, err := c.graceLease(ctx)
	if err != nil {
		return err
	}
	_, bind := c.leases()
	prefix := p.Prefix()
	ak, bk := c.keys.addr(prefix, a), c.keys.binding(prefix, id)
	mine := func(k, v string) []clientv3.Cmp {
		return []clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", v), clientv3.Compare(clientv3.LeaseValue(k), "=", int64(bind))}
	}
	_, err = c.cli.Txn(ctx).If(mine(ak, id)...).
		Then(clientv3.OpPut(ak, id, clientv3.WithLease(grace)),
			clientv3.OpTxn(mine(bk, a.String()), []clientv3.Op{clientv3.OpPut(bk, a.String(), clientv3.WithLease(grace))}, nil)).
		Commit()
	if err != nil {
		return fmt.Errorf("releasing %s: %w", a, err)
	}
	return nil
}

// graceLease returns the lease released bindings go to: one granted
// every quarter of Grace, never kept alive, so that a binding lasts
// between three quarters of Grace and Grace after its release, at one
// grant per quarter whatever the number of clients.
func (c *Cluster) graceLease(ctx context.Context) (clientv3.LeaseID, error) {
	c.mu.Lock()
	l, since := c.grace, c.graceSince
	c.mu.Unlock()
	if l != 0 && time.Since(since) < c.cfg.Grace/4 {
		return l, nil
	}
	resp, err := c.cli.Grant(ctx, c.ttl(c.cfg.Grace))
	if err != nil {
		return 0, fmt.Errorf("granting a grace lease: %w", err)
	}
	c.mu.Lock()
	c.grace, c.graceSince = resp.ID, time.Now()
	c.mu.Unlock()
	return resp.ID, nil
}
