// Package cluster makes several gateways one service through etcd: they
// share the inner address pools (an address is granted by an etcd
// transaction that creates its key only if absent, so no two gateways
// grant the same one; a client keeps its address when it comes back, at
// this gateway or another, within a grace period) and a session registry
// (each gateway's member key with its addresses and client count, and
// each client's session key naming its gateway: a client that logs in at
// another gateway is deleted here). docs/gateway-scale.md has the key
// layout, the leases and what happens when a gateway or etcd goes away.
//
// The Responder calls the Pool and the SessionHook on its loop, in
// IKE_AUTH and when a client goes, never for a packet; each call waits at
// most Config.Timeout for etcd, and none while etcd is known to be
// unreachable: then new clients are refused (no address without a lease)
// and established ones stay, their changes written once etcd answers again.
// One goroutine keeps the leases alive and one watches the registry,
// whatever the number of clients.
package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mifsec/mifsec/ike"
)

// Config is a gateway's membership in a cluster.
type Config struct {
	Endpoints []string // etcd client URLs
	// Name is this gateway's, unique in the cluster.
	Name string
	// Addresses are where clients reach this gateway: what another member
	// redirects clients to (LeastLoaded).
	Addresses []netip.Addr
	// Root prefixes every key; "" means "/mifsec".
	Root string
	// MemberTTL is how long the member and session keys of a gateway that
	// stopped refreshing them outlive it; 0 means 10 s.
	MemberTTL time.Duration
	// Grace is how long a client's address stays its own after it
	// disconnected or its gateway died, for it to come back to; 0 means
	// 5 minutes.
	Grace time.Duration
	// Timeout bounds each request to etcd; 0 means 2 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// ErrUnreachable is LeaseFor's error while etcd does not answer: the
// gateway refuses new clients rather than lease an address no other
// gateway knows of.
var ErrUnreachable = errors.New("cluster: etcd is unreachable: no address lease for a new client")

// Cluster is one gateway's membership: it implements ike.SessionHook and
// makes the shared pools (Pool).
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	cli    *clientv3.Client
	keys   keys
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// ops keeps a resynchronisation after etcd came back (which holds it
	// to write) apart from the other requests that change identities'
	// keys (which hold it to read): leases, releases, session writes.
	ops sync.RWMutex
	// poolOps keeps releases, which the writer makes (holding it to
	// write), apart from leases, taken beside the Responder's loop and
	// at once (holding it to read).
	poolOps sync.RWMutex
	// wake tells the writer that writes or releases are queued; flushing
	// serialises its flushes with Close's.
	wake     chan struct{}
	flushing sync.Mutex
	// mu guards what follows; no request to etcd is made while it is held.
	mu                            sync.Mutex
	up                            bool // the last request was answered
	memberLease, bindLease, grace clientv3.LeaseID
	graceSince                    time.Time
	sessions                      map[string]*session // this gateway's clients by identity key
	dirty                         map[string]bool     // identities whose keys may be stale (etcd was away)
	writes                        map[string]bool     // identities whose session key the writer is to write
	released                      []release           // releases etcd did not hear of yet
	pools                         []*Pool
	members                       []Member // as last read
	refused                       uint64
	takeover                      func(ctx context.Context, id ike.Identity, by string)
}

type session struct {
	id    ike.Identity
	n     int // its IKE SAs here
	value string
	// rev is the etcd revision of this gateway's last write of the
	// session key, 0 while that write is under way. Another gateway's
	// write older than it is not a takeover: the watch can deliver it
	// after this gateway registered the client.
	rev int64
	// otherAt and otherBy: the newest write by another gateway the watch
	// delivered while rev was 0, judged once the write returns.
	otherAt int64
	otherBy string
}

type release struct {
	pool *Pool
	addr netip.Addr
	id   string
}

// Member is one gateway of the cluster, as its member key says.
type Member struct {
	Name      string       `json:"name"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
	Clients   int          `json:"clients"`
	Updated   time.Time    `json:"updated"`
}

// Session is one client's entry in the registry.
type Session struct {
	ID        string    `json:"id"`
	Gateway   string    `json:"gateway"`
	Addresses []string  `json:"addresses,omitempty"`
	Since     time.Time `json:"since"`
}

// keys is the key layout under the root (docs/gateway-scale.md).
type keys struct{ root string }

func (k keys) member(name string) string { return k.root + "/members/" + name }
func (k keys) members() string           { return k.root + "/members/" }
func (k keys) session(id string) string  { return k.root + "/sessions/" + id }
func (k keys) sessions() string          { return k.root + "/sessions/" }
func (k keys) pool(p netip.Prefix) string {
	return k.root + "/pools/" + strings.ReplaceAll(p.String(), "/", "_")
}

// addr is an address's key in its pool: hexadecimal of fixed width, so
// that keys sort as addresses do and a range read finds the gaps.
func (k keys) addr(p netip.Prefix, a netip.Addr) string {
	return k.pool(p) + "/addr/" + hex.EncodeToString(a.AsSlice())
}
func (k keys) binding(p netip.Prefix, id string) string { return k.pool(p) + "/id/" + id }

// New connects to etcd, takes this gateway's leases and registers it. It
// fails when etcd does not answer within Timeout: a gateway does not start
// outside its cluster.
func New(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("cluster: no etcd endpoint")
	}
	if cfg.Name == "" || strings.Contains(cfg.Name, "/") {
		return nil, fmt.Errorf("cluster: member name %q: empty or with a slash", cfg.Name)
	}
	if cfg.Root == "" {
		cfg.Root = "/mifsec"
	}
	cfg.Root = strings.TrimRight(cfg.Root, "/")
	if cfg.MemberTTL <= 0 {
		cfg.MemberTTL = 10 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MemberTTL < 2*time.Second || cfg.Grace < 2*time.Second {
		return nil, errors.New("cluster: etcd leases last at least 2 s")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.Timeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client for %v: %w", cfg.Endpoints, err)
	}
	c := &Cluster{cfg: cfg, log: log.With("cluster", cfg.Name), cli: cli, keys: keys{cfg.Root},
		sessions: map[string]*session{}, dirty: map[string]bool{}, writes: map[string]bool{}, wake: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			c.cancel()
			cli.Close()
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := c.takeLeases(rctx, true, true); err != nil {
		return nil, fmt.Errorf("cluster: joining through etcd %v: %w", cfg.Endpoints, err)
	}
	if err := c.putMember(rctx); err != nil {
		return nil, fmt.Errorf("cluster: registering member %s: %w", cfg.Name, err)
	}
	// The watch starts after this revision, so that no client this gateway
	// registers from now on can be taken over unseen.
	now, err := c.cli.Get(rctx, c.keys.sessions(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the sessions: %w", err)
	}
	c.up = true
	c.wg.Go(c.maintain)
	c.wg.Go(func() { c.watch(now.Header.Revision) })
	c.wg.Go(c.writer)
	return c, nil
}

// Close stops the goroutines and revokes this gateway's leases: its member
// and session keys go at once, and bindings not yet released with them.
// Clients should be gone first (the Responder's Run ends with goodbyes),
// which moved their bindings to the grace lease.
func (c *Cluster) Close() {
	c.flush() // the last clients' releases and session deletions
	c.cancel()
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	c.mu.Lock()
	leases := []clientv3.LeaseID{c.memberLease, c.bindLease}
	c.mu.Unlock()
	for _, l := range leases {
		if _, err := c.cli.Revoke(ctx, l); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			c.log.Debug("cluster: revoking a lease", "err", err)
		}
	}
	c.cli.Close()
}

// OnTakeover sets what deletes a client of this gateway that logged in at
// another (by): the gateway passes its Responder's Disconnect. ctx ends
// when the Cluster closes.
func (c *Cluster) OnTakeover(f func(ctx context.Context, id ike.Identity, by string)) {
	c.mu.Lock()
	c.takeover = f
	c.mu.Unlock()
}

func (c *Cluster) request() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, c.cfg.Timeout)
}

func (c *Cluster) ttl(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// takeLeases grants the member lease, the binding lease or both anew.
func (c *Cluster) takeLeases(ctx context.Context, member, bind bool) error {
	for _, l := range []struct {
		take bool
		name string
		ttl  time.Duration
		id   *clientv3.LeaseID
	}{{member, "member", c.cfg.MemberTTL, &c.memberLease}, {bind, "binding", c.cfg.Grace, &c.bindLease}} {
		if !l.take {
			continue
		}
		resp, err := c.cli.Grant(ctx, c.ttl(l.ttl))
		if err != nil {
			return fmt.Errorf("granting the %s lease: %w", l.name, err)
		}
		c.mu.Lock()
		*l.id = resp.ID
		c.mu.Unlock()
	}
	return nil
}

func (c *Cluster) leases() (member, bind clientv3.LeaseID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.memberLease, c.bindLease
}

func (c *Cluster) putMember(ctx context.Context) error {
	c.mu.Lock()
	m := Member{Name: c.cfg.Name, Addresses: c.cfg.Addresses, Updated: time.Now().UTC()}
	for _, s := range c.sessions {
		m.Clients += s.n
	}
	lease := c.memberLease
	c.mu.Unlock()
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = c.cli.Put(ctx, c.keys.member(c.cfg.Name), string(v), clientv3.WithLease(lease))
	return err
}

// isUp reports whether etcd answered the last request.
func (c *Cluster) isUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// failed notes that a request got no answer: the gateway works without
// etcd until maintain reaches it again.
func (c *Cluster) failed(what string, err error) {
	// The line is written under the lock, so whoever finds the gateway
	// refusing (Status, a lease) finds the line in the log too; it is
	// written once per outage.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		c.log.Error("cluster: etcd unreachable: keeping established clients, refusing new ones until it answers", "during", what, "err", err)
	}
	c.up = false
}

// maintain keeps the leases alive, refreshes the member key and reads the
// members, every third of MemberTTL; while etcd is unreachable it tries
// every second and resynchronises when etcd answers again.
func (c *Cluster) maintain() {
	every := c.cfg.MemberTTL / 3
	next := time.NewTimer(every)
	defer next.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-next.C:
		}
		if c.isUp() {
			if err := c.refresh(); err != nil {
				c.failed("refreshing the leases", err)
			}
		}
		if !c.isUp() {
			if err := c.resync(); err != nil {
				c.log.Debug("cluster: etcd still unreachable", "err", err)
				next.Reset(min(every, time.Second))
				continue
			}
		}
		next.Reset(every)
	}
}

// refresh keeps the leases alive, rewrites the member key and reads the
// members, each request in its own time. A lease that expired (etcd was
// away longer than its TTL) or did not answer is an error: resync takes
// new ones and writes every key again. The member key and the members
// are only the cluster's view of the load: when etcd, loaded, answers
// them too late, they wait for the next refresh, and the gateway goes
// on leasing.
func (c *Cluster) refresh() error {
	member, bind := c.leases()
	for _, l := range []clientv3.LeaseID{member, bind} {
		ctx, cancel := c.request()
		_, err := c.cli.KeepAliveOnce(ctx, l)
		cancel()
		if err != nil {
			return fmt.Errorf("keeping lease %x alive: %w", l, err)
		}
	}
	ctx, cancel := c.request()
	defer cancel()
	if err := c.putMember(ctx); errors.Is(err, context.DeadlineExceeded) {
		c.log.Debug("cluster: refreshing the member key: etcd answered too late", "err", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("refreshing the member key: %w", err)
	}
	ctx, cancel = c.request()
	defer cancel()
	members, err := c.Members(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		c.log.Debug("cluster: reading the members: etcd answered too late", "err", err)
		return nil
	} else if err != nil {
		return err
	}
	c.mu.Lock()
	c.members = members
	c.mu.Unlock()
	return nil
}

// resyncParallel is how many identities a resynchronisation writes at
// once.
const resyncParallel = 32

// resync brings etcd in line with this gateway after etcd was away: new
// leases if the old expired (every client's keys written again), the
// releases and session changes it missed. A client whose address or
// session another gateway took meanwhile is deleted here.
func (c *Cluster) resync() error {
	c.ops.Lock()
	defer c.ops.Unlock()
	c.mu.Lock()
	c.leaveWritesToResync()
	c.mu.Unlock()
	ctx, cancel := c.request()
	defer cancel()
	member, bind := c.leases()
	var lost [2]bool
	for i, l := range []clientv3.LeaseID{member, bind} {
		if _, err := c.cli.KeepAliveOnce(ctx, l); errors.Is(err, rpctypes.ErrLeaseNotFound) {
			lost[i] = true
		} else if err != nil {
			return err
		}
	}
	if lost[0] || lost[1] {
		// etcd was away longer than a lease's TTL: the keys on it are
		// gone, and every client's are written again.
		if err := c.takeLeases(ctx, lost[0], lost[1]); err != nil {
			return err
		}
		c.mu.Lock()
		for k := range c.sessions {
			c.dirty[k] = true
		}
		for _, p := range c.pools {
			for _, id := range p.held {
				c.dirty[id] = true
			}
		}
		c.mu.Unlock()
	}
	if err := c.putMember(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	released := slices.Clone(c.released)
	dirty := make([]string, 0, len(c.dirty))
	for k := range c.dirty {
		dirty = append(dirty, k)
	}
	c.mu.Unlock()
	resynced := 0
	for rest := released; len(rest) > 0; {
		var batch []release
		batch, rest = releaseBatch(rest)
		if err := c.release(batch); err != nil {
			return err // c.released still has them
		}
		c.mu.Lock()
		c.released = slices.DeleteFunc(c.released, func(r release) bool { return slices.Contains(batch, r) })
		c.mu.Unlock()
	}
	// Identities at once, resyncParallel of them (each its own keys).
	var lose []string
	for len(dirty) > 0 {
		chunk := dirty[:min(len(dirty), resyncParallel)]
		dirty = dirty[len(chunk):]
		errs := make([]error, len(chunk))
		kept := make([]bool, len(chunk))
		var wg sync.WaitGroup
		for i, k := range chunk {
			wg.Go(func() { kept[i], errs[i] = c.syncIdentity(k) })
		}
		wg.Wait()
		c.mu.Lock()
		for i, k := range chunk {
			if errs[i] == nil {
				delete(c.dirty, k)
				if !kept[i] {
					lose = append(lose, k)
				}
			}
		}
		c.mu.Unlock()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		resynced += len(chunk)
	}
	// The line is written before the gateway takes new clients again, so
	// whoever sees it accepting (Status, a lease) finds the line in the log.
	c.log.Info("cluster: etcd reachable again: accepting new clients", "resynchronised", resynced, "releases", len(released), "member_lease_renewed", lost[0], "binding_lease_renewed", lost[1])
	c.mu.Lock()
	c.up = true
	c.mu.Unlock()
	for _, k := range lose {
		c.takenOver(k, "another gateway (while etcd was unreachable)")
	}
	return nil
}

// syncIdentity writes the keys of the identity k as this gateway holds it:
// its addresses bound, its session registered or gone. False: another
// gateway has its address or session now.
func (c *Cluster) syncIdentity(k string) (bool, error) {
	for _, p := range c.pools {
		for _, a := range p.addressesOf(k) {
			ok, err := p.rebind(a, k)
			if err != nil || !ok {
				return ok, err
			}
		}
	}
	c.mu.Lock()
	s := c.sessions[k]
	var value string
	if s != nil {
		value = s.value
	}
	c.mu.Unlock()
	ctx, cancel := c.request()
	defer cancel()
	if s != nil {
		got, err := c.cli.Get(ctx, c.keys.session(k))
		if err != nil {
			return false, err
		}
		if len(got.Kvs) > 0 {
			var other Session
			if json.Unmarshal(got.Kvs[0].Value, &other) == nil && other.Gateway != c.cfg.Name {
				return false, nil
			}
		}
	}
	rev, err := c.writeSession(ctx, k, value)
	if err == nil && s != nil {
		c.sessionRegistered(k, value, rev)
	}
	return true, err
}

// ClientUp implements ike.SessionHook: the client's session key names
// this gateway (another gateway that had it sees that and deletes it).
func (c *Cluster) ClientUp(client *ike.RemoteClient) {
	k := client.ID.String()
	s := Session{ID: client.ID.Display(), Gateway: c.cfg.Name, Since: time.Now().UTC()}
	for _, a := range client.Addresses {
		s.Addresses = append(s.Addresses, a.Addr().String())
	}
	v, _ := json.Marshal(s)
	c.mu.Lock()
	held := c.sessions[k]
	if held == nil {
		held = &session{id: client.ID}
		c.sessions[k] = held
	}
	held.n++
	held.value = string(v)
	held.rev, held.otherAt = 0, 0
	c.queueWrite(k)
	c.mu.Unlock()
}

// ClientDown implements ike.SessionHook: the session key goes when the
// identity's last IKE SA here went, unless another gateway wrote it since.
func (c *Cluster) ClientDown(client *ike.RemoteClient) {
	k := client.ID.String()
	c.mu.Lock()
	if s := c.sessions[k]; s != nil {
		if s.n--; s.n <= 0 {
			delete(c.sessions, k)
		}
	}
	if _, still := c.sessions[k]; !still {
		c.queueWrite(k)
	}
	c.mu.Unlock()
}

// queueWrite has the writer write the session key of identity k as this
// gateway holds it when it gets to it, or, while etcd is unreachable, the
// resynchronisation. c.mu is held.
func (c *Cluster) queueWrite(k string) {
	if !c.up {
		c.dirty[k] = true
		return
	}
	c.writes[k] = true
	c.wakeWriter()
}

// leaveWritesToResync hands the queued session writes to the
// resynchronisation (etcd is away, or it is starting). c.mu is held.
func (c *Cluster) leaveWritesToResync() {
	for k := range c.writes {
		c.dirty[k] = true
	}
	clear(c.writes)
}

func (c *Cluster) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writer makes the session writes and the releases the Responder's loop
// queued (ClientUp, ClientDown, Pool.Release), so that the loop never
// waits for etcd.
func (c *Cluster) writer() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		}
		c.flush()
	}
}

// writeBatch bounds what one flush request carries: etcd's default
// limit of operations in a transaction is 128.
const writeBatch = 64

// flush makes the queued releases and session writes, a batch at a time,
// each batch in one transaction (one commit in etcd for up to writeBatch
// clients). A batch that fails leaves its work to the resynchronisation
// once etcd answers again, as does everything queued while it does not.
func (c *Cluster) flush() {
	c.flushing.Lock()
	defer c.flushing.Unlock()
	for {
		c.mu.Lock()
		if !c.up {
			c.leaveWritesToResync()
			c.mu.Unlock()
			return // resync makes the releases too
		}
		var released []release
		released, c.released = releaseBatch(c.released)
		var writes []string
		for k := range c.writes {
			if len(writes) == writeBatch {
				break
			}
			writes = append(writes, k)
			delete(c.writes, k)
		}
		c.mu.Unlock()
		if len(released) == 0 && len(writes) == 0 {
			return
		}
		c.ops.RLock()
		if len(released) > 0 {
			c.poolOps.Lock()
			err := c.release(released)
			c.poolOps.Unlock()
			if err != nil {
				c.mu.Lock()
				c.released = append(released, c.released...)
				c.mu.Unlock()
				c.failed("releasing addresses", err)
			}
		}
		if len(writes) > 0 {
			if err := c.writeSessions(writes); err != nil {
				c.mu.Lock()
				for _, k := range writes {
					c.dirty[k] = true
				}
				c.mu.Unlock()
				c.failed("writing clients' sessions", err)
			}
		}
		c.ops.RUnlock()
	}
}

// releaseBatch splits rs into what one release transaction carries (up
// to writeBatch, an identity's binding key once: its other releases wait
// for the next batch) and the rest.
func releaseBatch(rs []release) (batch, rest []release) {
	ids := map[string]bool{}
	for _, r := range rs {
		k := r.pool.Prefix().String() + " " + r.id
		if len(batch) == writeBatch || ids[k] {
			rest = append(rest, r)
			continue
		}
		ids[k] = true
		batch = append(batch, r)
	}
	return batch, rest
}

// release moves the keys of the addresses rs to the grace lease, in one
// transaction (releaseOp).
func (c *Cluster) release(rs []release) error {
	ctx, cancel := c.request()
	defer cancel()
	grace, err := c.graceLease(ctx)
	if err != nil {
		return err
	}
	_, bind := c.leases()
	var ops []clientv3.Op
	for _, r := range rs {
		if !r.pool.heldHere(r.addr) { // else leased here again since
			ops = append(ops, r.pool.releaseOp(r.addr, r.id, bind, grace))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("releasing %d addresses: %w", len(ops), err)
	}
	return nil
}

// writeSessions writes the session keys of the identities ks as this
// gateway holds them, in one transaction (sessionOp).
func (c *Cluster) writeSessions(ks []string) error {
	member, _ := c.leases()
	values := make([]string, len(ks))
	ops := make([]clientv3.Op, len(ks))
	c.mu.Lock()
	for i, k := range ks {
		if s := c.sessions[k]; s != nil {
			values[i] = s.value
		}
		ops[i] = c.sessionOp(k, values[i], member)
	}
	c.mu.Unlock()
	ctx, cancel := c.request()
	defer cancel()
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("writing %d sessions: %w", len(ks), err)
	}
	for i, k := range ks {
		if values[i] != "" {
			c.sessionRegistered(k, values[i], resp.Header.Revision)
		}
	}
	return nil
}

// sessionOp puts the session key of identity k with value on this
// gateway's member lease, or with value "" deletes it if it is still on
// that lease (no other gateway wrote it since).
func (c *Cluster) sessionOp(k, value string, member clientv3.LeaseID) clientv3.Op {
	key := c.keys.session(k)
	if value == "" {
		return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", int64(member))}, []clientv3.Op{clientv3.OpDelete(key)}, nil)
	}
	return clientv3.OpPut(key, value, clientv3.WithLease(member))
}

// writeSession writes the session key of identity k (sessionOp) and
// returns the revision of the write.
func (c *Cluster) writeSession(ctx context.Context, k, value string) (int64, error) {
	member, _ := c.leases()
	resp, err := c.cli.Txn(ctx).Then(c.sessionOp(k, value, member)).Commit()
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// sessionRegistered records that the session key of k holds value since
// revision rev, and judges another gateway's write the watch delivered
// meanwhile: newer than rev, it took the client over.
func (c *Cluster) sessionRegistered(k, value string, rev int64) {
	c.mu.Lock()
	s := c.sessions[k]
	if s == nil || s.value != value {
		c.mu.Unlock()
		return // unregistered or registered again meanwhile
	}
	s.rev = rev
	lost, by := s.otherAt > rev, s.otherBy
	s.otherAt, s.otherBy = 0, ""
	c.mu.Unlock()
	if lost {
		c.takenOver(k, by)
	}
}

// watch follows the session keys: one written by another gateway for a
// client of this one is a takeover. A watch broken by an outage goes on
// from the last revision it saw, so that writes made meanwhile (by a
// gateway on the other side of a partition) are seen too, unless etcd
// compacted them away.
func (c *Cluster) watch(seen int64) {
	for c.ctx.Err() == nil {
		if seen == 0 {
			ctx, cancel := c.request()
			resp, err := c.cli.Get(ctx, c.keys.sessions(), clientv3.WithPrefix(), clientv3.WithCountOnly())
			cancel()
			if err == nil {
				seen = resp.Header.Revision
			}
		}
		if seen > 0 {
			ctx := clientv3.WithRequireLeader(c.ctx)
			for resp := range c.cli.Watch(ctx, c.keys.sessions(), clientv3.WithPrefix(), clientv3.WithRev(seen+1)) {
				if resp.CompactRevision > 0 {
					seen = 0 // from now on, after a fresh read
				}
				for _, ev := range resp.Events {
					seen = max(seen, ev.Kv.ModRevision)
					c.sessionWritten(ev)
				}
			}
		}
		select {
		case <-c.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// sessionWritten handles a change of a session key.
func (c *Cluster) sessionWritten(ev *clientv3.Event) {
	if ev.Type != mvccpb.PUT {
		return
	}
	var s Session
	if json.Unmarshal(ev.Kv.Value, &s) != nil || s.Gateway == c.cfg.Name {
		return
	}
	k, by, rev := strings.TrimPrefix(string(ev.Kv.Key), c.keys.sessions()), "gateway "+s.Gateway, ev.Kv.ModRevision
	c.mu.Lock()
	held := c.sessions[k]
	if held == nil || (held.rev != 0 && rev < held.rev) {
		c.mu.Unlock()
		return // not a client of this gateway, or a write from before it registered it
	}
	if held.rev == 0 {
		if rev > held.otherAt {
			held.otherAt, held.otherBy = rev, by
		}
		c.mu.Unlock()
		return // judged by sessionRegistered once this gateway's write returns
	}
	c.mu.Unlock()
	c.takenOver(k, by)
}

// takenOver deletes this gateway's client k, if it has it.
func (c *Cluster) takenOver(k, by string) {
	c.mu.Lock()
	s, f := c.sessions[k], c.takeover
	c.mu.Unlock()
	if s == nil || f == nil {
		return
	}
	c.log.Info("cluster: client logged in elsewhere: deleting it here", "id", s.id, "by", by)
	f(c.ctx, s.id, by)
}

// Members reads the cluster's members from etcd.
func (c *Cluster) Members(ctx context.Context) ([]Member, error) {
	return readMembers(ctx, c.cli, c.keys)
}

func readMembers(ctx context.Context, cli *clientv3.Client, k keys) ([]Member, error) {
	resp, err := cli.Get(ctx, k.members(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the members: %w", err)
	}
	var out []Member
	for _, kv := range resp.Kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, fmt.Errorf("cluster: member key %s: %w", kv.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// RedirectTarget implements ike.Redirector: a full or draining gateway of
// the cluster sends its clients to the least loaded other member.
func (c *Cluster) RedirectTarget(netip.AddrPort) (netip.Addr, bool) { return c.LeastLoaded() }

// LeastLoaded returns an address of the member other than this gateway
// with the fewest clients, as last read (every third of MemberTTL; no
// request to etcd) plus the clients this gateway sent to each since:
// where a full or draining gateway redirects a client.
// False when no other member has an address.
func (c *Cluster) LeastLoaded() (netip.Addr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best *Member
	for i, m := range c.members {
		if m.Name == c.cfg.Name || len(m.Addresses) == 0 {
			continue
		}
		if best == nil || m.Clients < best.Clients {
			best = &c.members[i]
		}
	}
	if best == nil {
		return netip.Addr{}, false
	}
	// Count the client there until the next read: a drain that redirects
	// hundreds at once spreads them over the members as their loads even
	// out, instead of sending every one to the member that was least
	// loaded at the last read.
	best.Clients++
	return best.Addresses[0], true
}

// Status is this gateway's view of the cluster, for `mifsec status`.
type Status struct {
	Name      string   `json:"name"`
	Endpoints []string `json:"etcd"` // where `mifsec status --cluster` reads
	Reachable bool     `json:"etcd_reachable"`
	Members   []Member `json:"members"`
	// Refused counts the clients refused because etcd did not answer.
	Refused uint64 `json:"refused"`
}

// Status returns the cluster as last seen (no request to etcd).
func (c *Cluster) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{Name: c.cfg.Name, Endpoints: c.cfg.Endpoints, Reachable: c.up, Members: slices.Clone(c.members), Refused: c.refused}
}

// View is the whole cluster as etcd has it: `mifsec status --cluster`.
type View struct {
	Members  []Member  `json:"members"`
	Sessions []Session `json:"sessions"`
}

// Read reads the members and sessions of the cluster under root ("" for
// "/mifsec") from etcd at endpoints.
func Read(ctx context.Context, endpoints []string, root string) (View, error) {
	if root == "" {
		root = "/mifsec"
	}
	k := keys{strings.TrimRight(root, "/")}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return View{}, fmt.Errorf("cluster: etcd client for %v: %w", endpoints, err)
	}
	defer cli.Close()
	var v View
	if v.Members, err = readMembers(ctx, cli, k); err != nil {
		return v, err
	}
	resp, err := cli.Get(ctx, k.sessions(), clientv3.WithPrefix())
	if err != nil {
		return v, fmt.Errorf("cluster: reading the sessions: %w", err)
	}
	for _, kv := range resp.Kvs {
		var s Session
		if err := json.Unmarshal(kv.Value, &s); err != nil {
			return v, fmt.Errorf("cluster: session key %s: %w", kv.Key, err)
		}
		v.Sessions = append(v.Sessions, s)
	}
	return v, nil
}
