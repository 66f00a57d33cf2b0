package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/internal/etcdtest"
	"github.com/mifsec/mifsec/internal/testenv"
)

// Every test must leave no goroutine behind: a Cluster's Close stops its
// two goroutines and its etcd client, and etcdtest stops its members. The
// members of a 3-member etcd talk to each other over HTTP keep-alive
// connections that a stopped member leaves to their idle timeout; no
// code of mifsec speaks HTTP here (etcd's client is gRPC).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"))
}

var pool24 = netip.MustParsePrefix("10.9.0.0/24") // 10.9.0.2 … .254: 253 addresses

// short are the lifetimes of the tests: etcd's leases last at least 2 s.
const (
	memberTTL = 3 * time.Second
	grace     = 3 * time.Second
)

// join makes a gateway of the cluster at endpoints; it leaves when the
// test ends.
func join(t *testing.T, endpoints []string, name string, timeout time.Duration) *Cluster {
	t.Helper()
	c, err := New(t.Context(), Config{Endpoints: endpoints, Name: name, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		MemberTTL: memberTTL, Grace: grace, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func poolOf(t *testing.T, c *Cluster, prefix netip.Prefix) ike.Pool {
	t.Helper()
	p, err := c.Pool(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func lease(t *testing.T, p ike.Pool, id string) netip.Addr {
	t.Helper()
	a, err := p.LeaseFor(id)
	if err != nil {
		t.Fatalf("leasing for %s: %v", id, err)
	}
	return a
}

// reader is a plain etcd client for the test to look at the keys.
func reader(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func client(id string) *ike.RemoteClient {
	return &ike.RemoteClient{ID: ike.Identity{Type: 3, Data: []byte(id)}}
}

// TestLeasesNeverCollide: gateways leasing from one pool at once, many
// requests each, never grant an address twice, and together fill the pool
// exactly: a request refused as exhausted saw no free address left.
func TestLeasesNeverCollide(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	const gateways, workers, each = 4, 4, 20 // 320 requests for 253 addresses
	var pools []ike.Pool
	for g := range gateways {
		pools = append(pools, poolOf(t, join(t, etcd.Endpoints(), fmt.Sprintf("gw%d", g), 5*time.Second), pool24))
	}
	var mu sync.Mutex
	granted := map[netip.Addr]string{}
	var wg sync.WaitGroup
	errs := make(chan error, gateways*workers*each)
	for g, p := range pools {
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("c%d-%d-%d@example.com", g, w, i)
					a, err := p.LeaseFor(id)
					if err != nil {
						if !errors.Is(err, errExhausted) {
							errs <- err
						}
						continue
					}
					mu.Lock()
					if other, dup := granted[a]; dup {
						errs <- fmt.Errorf("%s granted to %s and %s", a, other, id)
					}
					granted[a] = id
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(granted) != 253 {
		t.Errorf("granted %d addresses, want the whole pool, 253", len(granted))
	}
	for a := range granted {
		if !pool24.Contains(a) || a == netip.MustParseAddr("10.9.0.1") || a == netip.MustParseAddr("10.9.0.255") {
			t.Errorf("granted %s, not a client address of %s", a, pool24)
		}
	}
	resp, err := reader(t, etcd.Endpoints()).Get(t.Context(), "/mifsec/pools/10.9.0.0_24/addr/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 253 {
		t.Errorf("etcd holds %v address keys (%v), want 253", resp.Count, err)
	}
}

// TestOneIdentityLeasesAtOnce: IKE SAs of one identity whose leases a
// gateway takes at once (beside its Responder's loop) get an address each;
// the identity's binding names one of them.
func TestOneIdentityLeasesAtOnce(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	c := join(t, etcd.Endpoints(), "gw", 5*time.Second)
	p := poolOf(t, c, pool24)
	const n = 8
	got := make(chan netip.Addr, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			a, err := p.LeaseFor("same@example.com")
			if err != nil {
				t.Error(err)
			}
			got <- a
		})
	}
	wg.Wait()
	close(got)
	seen := map[netip.Addr]bool{}
	for a := range got {
		if seen[a] {
			t.Errorf("%s granted twice to the identity's IKE SAs", a)
		}
		seen[a] = true
	}
	resp, err := reader(t, etcd.Endpoints()).Get(t.Context(), c.keys.binding(pool24, "same@example.com"))
	if err != nil || len(resp.Kvs) != 1 || !seen[netip.MustParseAddr(string(resp.Kvs[0].Value))] {
		t.Errorf("the identity's binding %v (%v), want one of its addresses %v", resp.Kvs, err, seen)
	}
	if p.Leased() != n {
		t.Errorf("the gateway holds %d addresses, want %d", p.Leased(), n)
	}
}

// TestAddressFollowsTheClient: a client keeps its address when it comes
// back at another gateway, after it disconnected (its binding on the
// grace lease) or while the first still holds it (a takeover); the first
// gateway's late release does not free the address the second holds.
func TestAddressFollowsTheClient(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	a, b := join(t, etcd.Endpoints(), "a", 5*time.Second), join(t, etcd.Endpoints(), "b", 5*time.Second)
	pa, pb := poolOf(t, a, pool24), poolOf(t, b, pool24)

	alice := lease(t, pa, "alice@example.com")
	lease(t, pa, "filler@example.com")
	pa.Release(alice)
	if got := lease(t, pb, "alice@example.com"); got != alice {
		t.Fatalf("alice reconnected at b: got %s, had %s", got, alice)
	}

	bob := lease(t, pa, "bob@example.com")
	if got := lease(t, pb, "bob@example.com"); got != bob {
		t.Fatalf("bob logged in at b while a holds him: got %s, had %s", got, bob)
	}
	pa.Release(bob) // a deletes its IKE SA after the takeover
	_, bBind := b.leases()
	resp, err := reader(t, etcd.Endpoints()).Get(t.Context(), b.keys.addr(pool24, bob))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != bBind {
		t.Fatalf("after a's release, bob's address key is %v (%v), want it on b's binding lease %x", resp.Kvs, err, bBind)
	}
	if pa.Leased() != 1 || pb.Leased() != 2 {
		t.Errorf("a holds %d, b %d addresses; want 1 and 2", pa.Leased(), pb.Leased())
	}
	// A second IKE SA of an identity b holds gets another address.
	if got := lease(t, pb, "bob@example.com"); got == bob {
		t.Errorf("bob's second IKE SA got his first one's address %s", got)
	}
	// Released and not come back: free after the grace period.
	carol := lease(t, pb, "carol@example.com")
	pb.Release(carol)
	testenv.WaitUntil(t, grace+2*time.Second, "carol's released address to expire", func() bool {
		resp, err := reader(t, etcd.Endpoints()).Get(t.Context(), b.keys.addr(pool24, carol))
		return err == nil && len(resp.Kvs) == 0
	})
	if !poolOf(t, join(t, etcd.Endpoints(), "c", 5*time.Second), pool24).LeaseRequested("dave@example.com", carol) {
		t.Errorf("a new gateway did not grant carol's expired %s to another client", carol)
	}
}

// kill ends c as a crash would: no release, no revocation; etcd forgets
// its leases when their TTLs run out.
func (c *Cluster) kill() {
	c.cancel()
	c.wg.Wait()
	c.cli.Close()
}

// TestDeadGatewayExpires: a gateway that dies leaves its member and
// session keys for MemberTTL and its clients' addresses bound for Grace
// (so that they get them again elsewhere); then the addresses are free.
func TestDeadGatewayExpires(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	dead, err := New(t.Context(), Config{Endpoints: etcd.Endpoints(), Name: "dead", MemberTTL: memberTTL, Grace: grace, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	alice := lease(t, poolOf(t, dead, pool24), "alice@example.com")
	dead.ClientUp(client("alice@example.com"))
	dead.flush() // the writer's work, done now: alice's session is in etcd when it dies
	live := join(t, etcd.Endpoints(), "live", 5*time.Second)
	pl := poolOf(t, live, pool24)
	dead.kill()

	if got := lease(t, pl, "mallory@example.com"); got == alice {
		t.Fatalf("a live gateway leased the dead one's bound %s to another client", got)
	}
	if pl.LeaseRequested("mallory@example.com", alice) {
		t.Fatalf("a live gateway granted the dead one's bound %s to another client who asked for it", alice)
	}
	view := func() View {
		v, err := Read(t.Context(), etcd.Endpoints(), "")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := view(); len(v.Members) != 2 || len(v.Sessions) != 1 || v.Sessions[0].Gateway != "dead" {
		t.Fatalf("right after the death: %+v; want both members and alice's session at the dead one", v)
	}
	testenv.WaitUntil(t, memberTTL+2*time.Second, "the dead gateway's member and session keys to expire", func() bool {
		v := view()
		return len(v.Members) == 1 && v.Members[0].Name == "live" && len(v.Sessions) == 0
	})
	testenv.WaitUntil(t, grace+2*time.Second, "the dead gateway's address binding to expire", func() bool {
		resp, err := reader(t, etcd.Endpoints()).Get(t.Context(), live.keys.addr(pool24, alice))
		return err == nil && len(resp.Kvs) == 0
	})
	if !poolOf(t, join(t, etcd.Endpoints(), "new", 5*time.Second), pool24).LeaseRequested("eve@example.com", alice) {
		t.Errorf("a new gateway did not grant %s, freed by the dead gateway's lease, to another client", alice)
	}
}

// TestTakeover: a client that logs in at b while registered at a is
// deleted at a (the watch), and a's unregistering it afterwards leaves
// b's session key alone.
func TestTakeover(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	a, b := join(t, etcd.Endpoints(), "a", 5*time.Second), join(t, etcd.Endpoints(), "b", 5*time.Second)
	taken := make(chan string, 4)
	a.OnTakeover(func(_ context.Context, id ike.Identity, by string) { taken <- id.String() + " by " + by })
	b.OnTakeover(func(_ context.Context, id ike.Identity, by string) { taken <- "b lost " + id.String() })
	alice := client("alice@example.com")
	a.ClientUp(alice)
	a.ClientUp(client("bob@example.com"))
	a.flush() // the writer's work, done now: a registered them first
	b.ClientUp(alice)
	select {
	case got := <-taken:
		if want := alice.ID.String() + " by gateway b"; got != want {
			t.Fatalf("takeover: %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a did not see alice log in at b")
	}
	a.ClientDown(alice) // what a's Disconnect leads to
	a.flush()
	v, err := Read(t.Context(), etcd.Endpoints(), "")
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]string{}
	for _, s := range v.Sessions {
		at[s.ID] = s.Gateway
	}
	if at["alice@example.com"] != "b" || at["bob@example.com"] != "a" || len(at) != 2 {
		t.Errorf("sessions %v; want alice at b, bob at a", at)
	}
	select {
	case got := <-taken:
		t.Errorf("unexpected takeover %q", got)
	case <-time.After(200 * time.Millisecond):
	}
	testenv.WaitUntil(t, 2*memberTTL, "both members with their client counts", func() bool {
		ms := a.Status().Members
		return len(ms) == 2 && ms[0].Clients+ms[1].Clients == 2
	})
	if addr, ok := a.LeastLoaded(); !ok || addr != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("LeastLoaded at a: %v %v; want b's address", addr, ok)
	}
	var redirector ike.Redirector = a // where a full or draining member sends clients
	if addr, ok := redirector.RedirectTarget(netip.MustParseAddrPort("203.0.113.9:4500")); !ok || addr != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("RedirectTarget at a: %v %v; want b's address", addr, ok)
	}
}

// TestTakeoverByRevision: whether another gateway's write of a session
// key is a takeover depends on its revision against this gateway's own
// registration, also when the watch delivers it while that registration
// is still being written (the order TestTakeover once met by chance).
func TestTakeoverByRevision(t *testing.T) {
	const rev = 100
	for _, tc := range []struct {
		name    string
		pending bool  // the event arrives before this gateway's write returned
		at      int64 // the other gateway's write
		want    bool
	}{
		{"older write", false, rev - 1, false},
		{"newer write", false, rev + 1, true},
		{"older write, own write pending", true, rev - 1, false},
		{"newer write, own write pending", true, rev + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Cluster{cfg: Config{Name: "b"}, log: slog.New(slog.DiscardHandler), keys: keys{root: "/mifsec"},
				ctx: t.Context(), sessions: map[string]*session{}}
			var taken []string
			c.OnTakeover(func(_ context.Context, id ike.Identity, by string) { taken = append(taken, id.String()+" by "+by) })
			alice := client("alice@example.com")
			k := alice.ID.String()
			c.sessions[k] = &session{id: alice.ID, n: 1, value: `{"gateway":"b"}`}
			if !tc.pending {
				c.sessionRegistered(k, `{"gateway":"b"}`, rev)
			}
			c.sessionWritten(&clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{
				Key: []byte(c.keys.session(k)), Value: []byte(`{"id":"alice@example.com","gateway":"a"}`), ModRevision: tc.at}})
			if tc.pending {
				if len(taken) != 0 {
					t.Fatalf("judged before the own write returned: %v", taken)
				}
				c.sessionRegistered(k, `{"gateway":"b"}`, rev)
			}
			if got := len(taken) == 1; got != tc.want || len(taken) > 1 {
				t.Errorf("takeovers %v, want one: %v", taken, tc.want)
			}
		})
	}
}

// TestEtcdLoss: while etcd is away the gateway refuses new clients at
// once (counted), keeps its own, and writes what it missed when etcd is
// back; then it leases again.
func TestEtcdLoss(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	// The binding lease outlives the outage (etcd's client may take
	// seconds to dial again); the member lease may not.
	var log testenv.SyncBuffer
	g, err := New(t.Context(), Config{Endpoints: etcd.Endpoints(), Name: "g", MemberTTL: memberTTL, Grace: 30 * time.Second, Timeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	p := poolOf(t, g, pool24)
	alice := lease(t, p, "alice@example.com")
	g.ClientUp(client("alice@example.com"))
	g.ClientUp(client("bob@example.com"))
	etcd.Stop(0)
	// The lease refresh (every second, each request within Timeout) finds
	// etcd away; until then a lease would wait for etcd.
	testenv.WaitUntil(t, 10*time.Second, "the gateway to find etcd unreachable", func() bool { return !g.Status().Reachable })

	if _, err := p.LeaseFor("carol@example.com"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("leasing without etcd: %v, want ErrUnreachable", err)
	}
	// At once: well within the 1 s a request to etcd may take.
	start := time.Now()
	if _, err := p.LeaseFor("dave@example.com"); !errors.Is(err, ErrUnreachable) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("leasing again without etcd: %v after %v; want ErrUnreachable at once", err, time.Since(start))
	}
	if st := g.Status(); st.Reachable || st.Refused != 2 {
		t.Errorf("status %+v; want unreachable, 2 refused", st)
	}
	if p.Leased() != 1 {
		t.Errorf("%d addresses held; alice's must stay", p.Leased())
	}
	if n := strings.Count(log.String(), "etcd unreachable: keeping established clients, refusing new ones"); n != 1 {
		t.Errorf("the outage logged %d times, want once:\n%s", n, log.String())
	}
	p.Release(alice) // alice leaves while etcd is away
	g.ClientDown(client("alice@example.com"))

	etcd.Restart(0)
	testenv.WaitUntil(t, 10*time.Second, "the gateway to reach etcd again", func() bool { return g.Status().Reachable })
	if !strings.Contains(log.String(), "etcd reachable again: accepting new clients") {
		t.Errorf("no log line says etcd is back:\n%s", log.String())
	}
	cli := reader(t, etcd.Endpoints())
	_, bind := g.leases()
	resp, err := cli.Get(t.Context(), g.keys.addr(pool24, alice))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) == bind {
		t.Errorf("alice's address key after etcd came back: %v (%v); want it on the grace lease", resp.Kvs, err)
	}
	v, err := Read(t.Context(), etcd.Endpoints(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Sessions) != 1 || v.Sessions[0].ID != "bob@example.com" {
		t.Errorf("sessions after etcd came back: %+v; want bob's only", v.Sessions)
	}
	if got := lease(t, p, "carol@example.com"); got == alice {
		t.Errorf("carol got alice's address %s within its grace", got)
	}
}

// TestMemberLoss: a 3-member etcd cluster that loses its leader keeps
// quorum: gateways lease distinct addresses while the member stops and
// after. During the election that follows (etcd's election timeout, 1 s)
// a lease may wait, or fail after the 2 s timeout; once the member is
// gone, every lease succeeds.
func TestMemberLoss(t *testing.T) {
	etcd := etcdtest.Start(t, 3)
	a, b := join(t, etcd.Endpoints(), "a", 2*time.Second), join(t, etcd.Endpoints(), "b", 2*time.Second)
	pool := netip.MustParsePrefix("10.10.0.0/20")
	pa, pb := poolOf(t, a, pool), poolOf(t, b, pool)
	seen := map[netip.Addr]bool{lease(t, pa, "first@example.com"): true}
	leader := etcd.Leader()
	if leader < 0 {
		t.Fatal("the etcd cluster has no leader")
	}
	stopped := make(chan struct{})
	go func() { etcd.Stop(leader); close(stopped) }()
	during, after := 0, 0
	for i := 0; after < 20; i++ {
		gone := false
		select {
		case <-stopped:
			gone = true
		default:
			time.Sleep(20 * time.Millisecond)
		}
		if gone {
			if after++; after == 1 {
				// A lease that failed during the election made a gateway
				// take etcd for unreachable; it tries again within a second.
				testenv.WaitUntil(t, 3*time.Second, "both gateways to reach etcd", func() bool { return a.isUp() && b.isUp() })
			}
		}
		for _, p := range []ike.Pool{pa, pb} {
			got, err := p.LeaseFor(fmt.Sprintf("c%d-%p@example.com", i, p))
			switch {
			case err != nil && gone:
				t.Fatalf("lease %d after the leader stopped: %v", i, err)
			case err != nil:
				t.Logf("lease %d while the leader stops: %v", i, err)
				continue
			case seen[got]:
				t.Fatalf("%s granted twice", got)
			}
			seen[got] = true
			if !gone {
				during++
			}
		}
	}
	t.Logf("stopped the leader (member %d); %d leases while it stopped, %d in all", leader, during, len(seen))
	if during == 0 {
		t.Error("no lease went through while the leader stopped")
	}
}

// TestNoEtcdNoGateway: a gateway does not start outside its cluster: New
// fails within its timeout when etcd does not answer, and leaves nothing
// running (goleak).
func TestNoEtcdNoGateway(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	endpoints := etcd.Endpoints()
	etcd.Stop(0)
	start := time.Now()
	c, err := New(t.Context(), Config{Endpoints: endpoints, Name: "g", Timeout: time.Second})
	if err == nil {
		c.Close()
		t.Fatal("joined a cluster whose etcd is stopped")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("New took %v to fail; its timeout is 1 s", took)
	}
}
