package cluster

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
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
// goes. Leases are taken beside the Responder's loop, several at once;
// releases are queued for the writer.
type Pool struct {
	c     *Cluster
	rules *ike.AddressPool // which addresses may be leased
	// Guarded by c.mu: where the search for a free address starts; the
	// addresses this gateway leased, by address; those a lease here is
	// taking; the identities a lease here is under way for, each with
	// what closes when it is done.
	next     netip.Addr
	held     map[netip.Addr]string
	claiming map[netip.Addr]bool
	leasing  map[string]chan struct{}
}

var _ ike.SharedPool = (*Pool)(nil)

// Shared implements ike.SharedPool: the Responder leases beside its loop.
func (*Pool) Shared() {}

// Pool returns the shared pool over prefix (ike.ResponderConfig.NewPool).
func (c *Cluster) Pool(prefix netip.Prefix) (ike.Pool, error) {
	rules, err := ike.NewAddressPool(prefix)
	if err != nil {
		return nil, err
	}
	p := &Pool{c: c, rules: rules, held: map[netip.Addr]string{}, claiming: map[netip.Addr]bool{}, leasing: map[string]chan struct{}{}}
	p.next = p.start(c.cfg.Name)
	c.mu.Lock()
	c.pools = append(c.pools, p)
	c.mu.Unlock()
	return p, nil
}

func (p *Pool) first() netip.Addr { return p.rules.GatewayAddress().Addr().Next() }

// start is where the search for free addresses of the member name
// begins. The members' searches begin apart (by a hash of the name, in
// the pool's first 65,536 addresses), so that leases taken at once by
// several gateways seldom try the same free address, and lose etcd's
// transaction to each other.
func (p *Pool) start(name string) netip.Addr {
	h := fnv.New64a()
	h.Write([]byte(name))
	hostBits := p.Prefix().Addr().BitLen() - p.Prefix().Bits()
	b := p.first().As16()
	low := binary.BigEndian.Uint64(b[8:]) + h.Sum64()%(uint64(1)<<min(hostBits, 16))
	binary.BigEndian.PutUint64(b[8:], low)
	a := netip.AddrFrom16(b)
	if p.first().Is4() {
		a = a.Unmap()
	}
	if !p.rules.Usable(a) {
		return p.first()
	}
	return a
}

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

func (p *Pool) heldHere(a netip.Addr) bool {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	_, ok := p.held[a]
	return ok
}

// startClaim marks a as being taken by a lease here, unless it is held
// here or another lease here is taking it (false).
func (p *Pool) startClaim(a netip.Addr) bool {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	if _, held := p.held[a]; held || p.claiming[a] {
		return false
	}
	p.claiming[a] = true
	return true
}

// endClaim ends startClaim's mark; the address is held here when got.
func (p *Pool) endClaim(a netip.Addr, id string, got bool) {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	delete(p.claiming, a)
	if got {
		p.held[a] = id
	}
}

func (p *Pool) isClaiming(a netip.Addr) bool {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.claiming[a]
}

// leaseOf waits until no other lease here is under way for identity id
// (its second IKE SA must see the first's address held), marks one under
// way and returns what ends it.
func (p *Pool) leaseOf(id string) (done func()) {
	c := p.c
	if id == "" {
		return func() {}
	}
	for {
		c.mu.Lock()
		busy, ok := p.leasing[id]
		if !ok {
			mine := make(chan struct{})
			p.leasing[id] = mine
			c.mu.Unlock()
			return func() {
				c.mu.Lock()
				delete(p.leasing, id)
				c.mu.Unlock()
				close(mine)
			}
		}
		c.mu.Unlock()
		<-busy
	}
}

// lockLeasing lets a lease run beside others: not during a
// resynchronisation, nor while the writer makes releases.
func (c *Cluster) lockLeasing() (unlock func()) {
	c.ops.RLock()
	c.poolOps.RLock()
	return func() {
		c.poolOps.RUnlock()
		c.ops.RUnlock()
	}
}

// LeaseFor implements ike.Pool: the identity's bound address if no one
// else holds it, else the first free address from where the last search
// stopped. A second IKE SA of an identity this gateway holds gets an
// address of its own, not bound to the identity. Leases for different
// identities run at once (etcd commits concurrent requests together);
// two that find the same free address are told apart here (claiming)
// and, across gateways, by etcd's transaction.
func (p *Pool) LeaseFor(id string) (netip.Addr, error) {
	c := p.c
	if !c.isUp() {
		c.mu.Lock()
		c.refused++
		c.mu.Unlock()
		return netip.Addr{}, ErrUnreachable
	}
	defer p.leaseOf(id)()
	defer c.lockLeasing()()
	a, err := p.lease(id)
	if errors.Is(err, context.DeadlineExceeded) {
		// etcd answers, late (loaded): this client tries again, and
		// maintain judges whether etcd is away.
		return netip.Addr{}, fmt.Errorf("cluster: %w: %w", ike.ErrPoolBusy, err)
	}
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
			case p.startClaim(a):
				ok, err := p.claim(ctx, a, id, bind)
				p.endClaim(a, id, ok && err == nil)
				if err != nil {
					return netip.Addr{}, err
				}
				if ok {
					return a, nil
				}
			}
		}
	}
	// A free address: keys sort as addresses, so a range read from the
	// cursor shows the gaps; a gap another gateway fills first fails the
	// transaction and the search goes on after it.
	c.mu.Lock()
	cand, wrapped := p.next, false
	c.mu.Unlock()
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
		if !p.startClaim(free) {
			cand = free.Next() // another lease here took it since
			continue
		}
		ops := []clientv3.Op{clientv3.OpPut(c.keys.addr(prefix, free), id, clientv3.WithLease(bind))}
		if bound {
			ops = append(ops, clientv3.OpPut(c.keys.binding(prefix, id), free.String(), clientv3.WithLease(bind)))
		}
		resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.keys.addr(prefix, free)), "=", 0)).Then(ops...).Commit()
		p.endClaim(free, id, err == nil && resp.Succeeded)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("leasing %s: %w", free, err)
		}
		if resp.Succeeded {
			c.mu.Lock()
			p.next = free.Next()
			c.mu.Unlock()
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
	if !p.rules.Usable(want) || !c.isUp() {
		return false
	}
	defer p.leaseOf(id)()
	defer c.lockLeasing()()
	if !p.startClaim(want) {
		return false // held here, or being taken
	}
	ctx, cancel := c.request()
	defer cancel()
	_, bind := c.leases()
	ok, err := p.claim(ctx, want, id, bind)
	p.endClaim(want, id, ok && err == nil)
	if err != nil {
		c.failed("leasing a requested address", err)
		return false
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
		for i := 0; i < len(resp.Kvs); {
			// A gap (the keys sort as addresses) is free unless a lease
			// here is taking it.
			if taken := addrFromKey(string(resp.Kvs[i].Key)) == a; !taken && !p.isClaiming(a) {
				return a, passed, nil
			} else if taken {
				i++
			}
			passed++
			if a = a.Next(); !p.rules.Usable(a) {
				return netip.Addr{}, passed, nil
			}
		}
		if len(resp.Kvs) < scanPage {
			// No key from a on.
			for p.isClaiming(a) {
				if a = a.Next(); !p.rules.Usable(a) {
					return netip.Addr{}, passed, nil
				}
			}
			return a, passed, nil
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
// them meanwhile. The writer makes the request (flush), or, while etcd
// is unreachable, the resynchronisation.
func (p *Pool) Release(a netip.Addr) {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := p.held[a]
	if !ok {
		return
	}
	delete(p.held, a)
	c.released = append(c.released, release{pool: p, addr: a, id: id})
	if c.up {
		c.wakeWriter()
	}
}

// releaseOp moves a's keys, and the binding of id to a, from the binding
// lease to the grace lease if they are still this gateway's (not taken
// by another gateway meanwhile).
func (p *Pool) releaseOp(a netip.Addr, id string, bind, grace clientv3.LeaseID) clientv3.Op {
	prefix := p.Prefix()
	ak, bk := p.c.keys.addr(prefix, a), p.c.keys.binding(prefix, id)
	mine := func(k, v string) []clientv3.Cmp {
		return []clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", v), clientv3.Compare(clientv3.LeaseValue(k), "=", int64(bind))}
	}
	return clientv3.OpTxn(mine(ak, id), []clientv3.Op{
		clientv3.OpPut(ak, id, clientv3.WithLease(grace)),
		clientv3.OpTxn(mine(bk, a.String()), []clientv3.Op{clientv3.OpPut(bk, a.String(), clientv3.WithLease(grace))}, nil),
	}, nil)
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
