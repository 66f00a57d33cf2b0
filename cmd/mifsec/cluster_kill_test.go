package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/load"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/etcdtest"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
)

// clusterLab is three `mifsec gateway --cluster-etcd` in their own
// namespaces (gateway k at 198.18.k.2, k = 1..3), a client namespace
// (192.0.2.1) and an etcd namespace (10.200.0.2, three members started in
// this process), all joined by a router namespace. Each gateway protects
// 10.1.0.0/24 (10.1.0.1 on its lo) and leases from 10.3.0.0/20.
type clusterLab struct {
	client string
	etcd   *etcdtest.Cluster
	gws    []*clusterGateway
	psk    string
}

type clusterGateway struct {
	ns, tun, name string
	addr          netip.AddrPort // where clients reach it (IKE port 500)
	p             *mifsecProcess
	killed        atomic.Bool // the address checker leaves it alone
}

const clusterPool = "10.3.0.0/20"

func newClusterLab(t *testing.T, args ...string) *clusterLab {
	t.Helper()
	l := &clusterLab{client: testenv.NewNamedNetns(t, "kcl"), psk: "one key for the cluster"}
	rt := testenv.NewNamedNetns(t, "krt")
	etcdNS := testenv.NewNamedNetns(t, "ketcd")
	testenv.Exec(t, rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	link := func(ns, addr, router string) {
		p := netip.MustParsePrefix(addr)
		testenv.Veth(t, ns, rt, p, netip.PrefixFrom(netip.MustParseAddr(router), p.Bits()))
		testenv.Exec(t, ns, "ip", "route", "add", "default", "via", router)
	}
	link(l.client, "192.0.2.1/24", "192.0.2.254")
	link(etcdNS, "10.200.0.2/24", "10.200.0.254")
	testenv.InNamedNetns(t, etcdNS, func() { l.etcd = etcdtest.StartAt(t, "10.200.0.2", 3) })
	endpoints := strings.Join(l.etcd.Endpoints(), ",")
	pskFile := writePSK(t, t.TempDir(), l.psk)
	suffix := time.Now().UnixNano() & 0xfffff
	for k := 1; k <= 3; k++ {
		g := &clusterGateway{ns: testenv.NewNamedNetns(t, fmt.Sprintf("kgw%d", k)), tun: fmt.Sprintf("mck%d%x", k, suffix),
			name: fmt.Sprintf("gw%d", k), addr: netip.MustParseAddrPort(fmt.Sprintf("198.18.%d.2:500", k))}
		link(g.ns, fmt.Sprintf("198.18.%d.2/24", k), fmt.Sprintf("198.18.%d.254", k))
		testenv.Exec(t, g.ns, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
		g.p = startMifsec(t, g.ns, append([]string{"--log-level", "info", "gateway", "--tun", g.tun, "--listen", g.addr.Addr().String(),
			"--pool", clusterPool, "--local-ts", "10.1.0.0/24", "--local-id", "gw.example", "--psk-file", pskFile,
			"--cluster-etcd", endpoints, "--cluster-name", g.name, "--cluster-ttl", "3s", "--cluster-grace", "120s"}, args...)...)
		l.gws = append(l.gws, g)
	}
	for _, g := range l.gws {
		(&scaleGateway{tun: g.tun, p: g.p}).waitStatus(t)
	}
	return l
}

func (l *clusterLab) addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, g := range l.gws {
		out = append(out, g.addr)
	}
	return out
}

func (l *clusterLab) logs() string {
	var b strings.Builder
	for _, g := range l.gws {
		log := g.p.log.String()
		var errs, warns []string // etcd not answering; a refusal
		for line := range strings.Lines(log) {
			switch line = strings.TrimSuffix(line, "\n"); {
			case strings.Contains(line, "level=ERROR"):
				errs = append(errs, line)
			case !strings.Contains(line, "level=INFO"):
				warns = append(warns, line)
			}
		}
		errs, warns = errs[max(0, len(errs)-10):], warns[max(0, len(warns)-20):]
		counts := "no status (killed or not answering)"
		if st, err := readGatewayStatus(g.tun); err == nil {
			counts = fmt.Sprintf("%d clients, IKE failures %v", len(st.Clients), st.IKEFailures)
		}
		fmt.Fprintf(&b, "\ngateway %s: %s\nits errors (last 10):\n%s\nits warnings (last 20):\n%s\nits log's tail:\n%s", g.name, counts,
			strings.Join(errs, "\n"), strings.Join(warns, "\n"), tail(log, 10))
	}
	return b.String()
}

// startFleet starts n clients from the client namespace, client i at
// gateway i mod 3, and checks that every one is up with traffic.
func (l *clusterLab) startFleet(t *testing.T, n int) *load.Fleet {
	t.Helper()
	// Each login waits for its etcd round trips (docs/gateway-scale.md),
	// and etcd runs in this test's process, under -race in CI, on cores
	// other packages' tests share: clients wait as strongSwan's do by
	// default, longer than ours: first retry after 2 s, 6 tries, some 80 s
	// in all.
	timeout, retransmit := time.Minute, ike.RetransmitPolicy{Timeout: 2 * time.Second, Tries: 6}
	if n > 300 {
		timeout = 2 * time.Minute
	}
	// At most 150 new clients a second, 50 per gateway (3,000 at once
	// are more than a race-built etcd takes in time).
	f := startFleetIn(t, l.client, load.ClientsConfig{Count: n, PSK: []byte(l.psk), Gateways: l.addrs(),
		RemoteID: ike.Identity{Type: wire.IDFQDN, Data: []byte("gw.example")}, Timeout: timeout, Retransmit: retransmit,
		StartRate: 150})
	rep := f.Report()
	t.Logf("%v", rep)
	if rep.Established != n || rep.TrafficOK != n {
		t.Fatalf("%d of %d clients established, %d passed traffic%s", rep.Established, n, rep.TrafficOK, l.logs())
	}
	return f
}

// addressCheck samples, every 300 ms, every live gateway's clients (their
// `mifsec status`) and etcd's pool keys: no inner address may be held by
// two identities at any sampled moment, in any gateway or across them,
// and an address a gateway's client holds must be leased to that
// client's identity in etcd.
type addressCheck struct {
	wg         sync.WaitGroup
	samples    int
	violations []string
}

// checkAddresses samples until ctx ends; wait for the sampler with done
// before reading the results.
func (l *clusterLab) checkAddresses(ctx context.Context, t *testing.T) *addressCheck {
	ac := &addressCheck{}
	t.Cleanup(ac.wg.Wait)
	ac.wg.Go(func() {
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if v := l.sampleAddresses(ctx); v != nil {
				ac.samples++
				if len(ac.violations) < 20 {
					ac.violations = append(ac.violations, v...)
				}
			}
		}
	})
	return ac
}

func (ac *addressCheck) done() *addressCheck {
	ac.wg.Wait()
	return ac
}

// sampleAddresses takes one sample; nil when it could not (a gateway's
// status or etcd did not answer), else the violations found (none: empty).
func (l *clusterLab) sampleAddresses(ctx context.Context) []string {
	holder := map[string]string{} // inner address → identity, over all live gateways
	var v []string
	for _, g := range l.gws {
		if g.killed.Load() {
			continue
		}
		st, err := readGatewayStatus(g.tun)
		if err != nil {
			return nil
		}
		for _, c := range st.Clients {
			for _, a := range c.Addresses {
				if other, ok := holder[a]; ok && other != c.ID {
					v = append(v, fmt.Sprintf("%s held by %s and %s (at %s)", a, other, c.ID, g.name))
				}
				holder[a] = c.ID
			}
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	kv, err := l.etcd.GetPrefix(rctx, "/mifsec/pools/")
	cancel()
	if err != nil {
		return nil
	}
	leased := map[string]string{} // address → identity, from the address keys
	bound := map[string]string{}  // address → identity, from the bindings
	for k, val := range kv {
		switch i := strings.LastIndex(k, "/addr/"); {
		case i >= 0:
			if b, err := hex.DecodeString(k[i+len("/addr/"):]); err == nil {
				a, _ := netip.AddrFromSlice(b)
				leased[a.String()] = val
			}
		case strings.Contains(k, "/id/"):
			id := k[strings.Index(k, "/id/")+len("/id/"):]
			if other, ok := bound[val]; ok && other != id {
				v = append(v, fmt.Sprintf("etcd binds %s to %s and %s", val, other, id))
			}
			bound[val] = id
		}
	}
	for a, id := range bound {
		if leased[a] != id {
			v = append(v, fmt.Sprintf("etcd binds %s to %s, its address key names %q", a, id, leased[a]))
		}
	}
	for a, id := range holder {
		if got, ok := leased[strings.TrimSuffix(a, "/32")]; ok && got != id {
			v = append(v, fmt.Sprintf("a gateway's client %s holds %s, leased in etcd to %s", id, a, got))
		}
	}
	if v == nil {
		v = []string{}
	}
	return v
}

func readGatewayStatus(tun string) (mif.GatewayStatus, error) {
	var st mif.GatewayStatus
	raw, err := mif.ReadStatus(mif.ControlSocket(tun))
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	return st, err
}

// clusterClients is MIFSEC_CLUSTER_CLIENTS, else def.
func clusterClients(def int) int {
	if n, err := strconv.Atoi(os.Getenv("MIFSEC_CLUSTER_CLIENTS")); err == nil && n > 0 {
		return n
	}
	return def
}

// gapStats are the longest gaps of some clients: the median and the most.
func gapStats(rs []load.RoamResult, which func(i int) bool) (p50, most time.Duration, n int) {
	var gaps []time.Duration
	for i, r := range rs {
		if which(i) {
			gaps = append(gaps, r.LongestGap)
		}
	}
	slices.Sort(gaps)
	if len(gaps) == 0 {
		return 0, 0, 0
	}
	return gaps[len(gaps)/2], gaps[len(gaps)-1], len(gaps)
}

// checkSameAddresses asserts that every client kept the one inner address
// it first got, and that no two clients ever got the same one.
func checkSameAddresses(t *testing.T, rs []load.RoamResult) {
	t.Helper()
	owner := map[netip.Addr]int{}
	for i, r := range rs {
		if len(r.Addresses) == 0 || !r.Addresses[0].IsValid() {
			t.Errorf("client %d never got an address", i)
			continue
		}
		for _, a := range r.Addresses {
			if a != r.Addresses[0] {
				t.Errorf("client %d got %v over its IKE SAs (gateways %v), not the same address each time", i, r.Addresses, r.Gateways)
				break
			}
		}
		if o, ok := owner[r.Addresses[0]]; ok {
			t.Errorf("clients %d and %d both got %s", o, i, r.Addresses[0])
		}
		owner[r.Addresses[0]] = i
	}
}

// TestMifsecGatewayClusterKill (issue 19, point 3): three gateways on a
// three-member etcd, 300 clients (MIFSEC_CLUSTER_CLIENTS) spread over
// them, each echoing through its tunnel. etcd's leader stops, then one
// gateway is killed with SIGKILL: each of its clients notices its echoes
// die, checks its gateway's liveness (about a second), and connects to
// another gateway, which gives it its address back (its binding in etcd).
// All must be back within a bound, keep their addresses, and no inner
// address may be held by two clients at any sampled moment.
func TestMifsecGatewayClusterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("connects 300 clients to three gateways")
	}
	n := clusterClients(300)
	l := newClusterLab(t)
	f := l.startFleet(t, n)
	for i, r := range f.Roaming() {
		if want := l.gws[i%3].addr; r.Gateway != want || len(r.Gateways) != 1 || r.Gateways[0] != want {
			t.Fatalf("client %d at %v (gateways %v), want %v", i, r.Gateway, r.Gateways, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ac := l.checkAddresses(ctx, t)
	// 5 echoes a second each: 1,500/s with 300 clients. With more
	// clients, 1/s (the two cores also run the three gateways and etcd).
	interval := 200 * time.Millisecond
	if n > 300 {
		interval = time.Second
	}
	echoes := make(chan struct{})
	go func() {
		defer close(echoes)
		f.EchoLoop(ctx, interval, func(int, time.Time, bool) {})
	}()
	time.Sleep(2 * time.Second) // echoes through every tunnel before anything fails

	leader := l.etcd.Leader()
	if leader < 0 {
		t.Fatal("etcd has no leader")
	}
	l.etcd.Stop(leader)
	t.Logf("stopped etcd member %d, the leader", leader)
	time.Sleep(2 * time.Second)

	dead := l.gws[0]
	dead.killed.Store(true)
	killed := time.Now()
	if err := dead.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dead.p.done
	// A gateway killed outright leaves its control socket and its record
	// of the forwarding sysctls (which the next gateway on the device
	// would restore); its namespace goes with the test, so they go too.
	t.Cleanup(func() {
		stale, _ := filepath.Glob(filepath.Join(mif.ControlDir, dead.tun+".*"))
		for _, f := range stale {
			if err := os.Remove(f); err != nil {
				t.Errorf("removing the killed gateway's %s: %v", f, err)
			}
		}
	})
	// A client notices: 3 echoes unanswered (3 intervals), then a liveness
	// check of 3 × 300 ms; it moves on and logs in at another gateway,
	// which takes its etcd round trips (docs/gateway-scale.md): n/3
	// logins shared by two gateways, allowed 40 ms each on these two busy
	// cores, or as long as the n logins shared by three took at the start
	// when that was slower (other tests' packages share the cores), and
	// 5 s of margin.
	logins := max(time.Duration(n/3)*40*time.Millisecond/2, f.Report().All/2)
	bound := 3*interval + time.Second + logins + 5*time.Second
	if n > 300 {
		// A measurement (docs/gateway-scale.md): a thousand clients
		// logging in at once, against the etcd of a race-built test.
		bound = 3 * time.Minute
	}
	ofDead := func(i int) bool { return i%3 == 0 }
	back := func() bool {
		for i, r := range f.Roaming() {
			if ofDead(i) && (r.Gateway == dead.addr || len(r.Gateways) < 2 || r.Gateways[len(r.Gateways)-1] == dead.addr) {
				return false
			}
		}
		return true
	}
	if !testenv.Eventually(bound, back) {
		missing := 0
		for i, r := range f.Roaming() {
			if ofDead(i) && (r.Gateway == dead.addr || len(r.Gateways) < 2) {
				missing++
			}
		}
		t.Fatalf("%d of the killed gateway's %d clients not back on another within %v%s", missing, (n+2)/3, bound, l.logs())
	}
	allBack := time.Since(killed)
	time.Sleep(2 * time.Second) // echoes through the new tunnels
	cancel()
	<-echoes
	ac.done()

	rs := f.Roaming()
	p50, most, moved := gapStats(rs, ofDead)
	sp50, smost, stayed := gapStats(rs, func(i int) bool { return !ofDead(i) })
	t.Logf("%d clients, %d on the killed gateway: all back on another within %v of the kill (bound %v); their longest gap between answered echoes p50 %v, max %v; the other %d clients' p50 %v, max %v",
		n, moved, allBack.Round(10*time.Millisecond), bound.Round(time.Second), p50.Round(10*time.Millisecond), most.Round(10*time.Millisecond),
		stayed, sp50.Round(10*time.Millisecond), smost.Round(10*time.Millisecond))
	checkSameAddresses(t, rs)
	// The others may reconnect too, when their liveness check waits
	// out its second behind the logins on their gateway's loop; they
	// keep their addresses all the same (checked above).
	spread, others := map[netip.AddrPort]int{}, 0
	for i, r := range rs {
		if ofDead(i) {
			spread[r.Gateway]++
		} else if r.Reconnects != 0 {
			others++
		}
	}
	t.Logf("the killed gateway's clients went to %v; %d clients of the other gateways reconnected", spread, others)
	t.Logf("address samples: %d", ac.samples)
	if ac.samples < 5 {
		t.Errorf("only %d samples of the gateways' and etcd's addresses", ac.samples)
	}
	if len(ac.violations) > 0 {
		t.Errorf("inner addresses held twice:\n%s", strings.Join(ac.violations, "\n"))
	}
	// The two gateways hold every client, each address once; etcd's
	// member loss refused no client.
	total := 0
	for _, g := range l.gws[1:] {
		st := mifsecGatewayStatusOn(t, g.tun)
		total += len(st.Clients)
		if st.Cluster == nil || !st.Cluster.Reachable {
			t.Errorf("gateway %s: cluster status %+v", g.name, st.Cluster)
		} else if st.Cluster.Refused != 0 {
			t.Logf("gateway %s refused %d logins while etcd did not answer", g.name, st.Cluster.Refused)
		}
	}
	if total != n {
		t.Errorf("the two gateways hold %d clients, want %d", total, n)
	}
	if t.Failed() {
		t.Log(l.logs())
	}
}

// TestMifsecGatewayClusterDrain (issue 19, point 4): clients of a
// three-gateway cluster echo 20 times a second each; `mifsec gateway drain`
// on one gateway redirects its clients to the least loaded other member,
// where each sets up its new IKE SA before it leaves the old one (make
// before break): no client's echoes may stop for more than 1 s, and all
// end on the other gateways with their addresses.
func TestMifsecGatewayClusterDrain(t *testing.T) {
	n := 60
	if v, err := strconv.Atoi(os.Getenv("MIFSEC_CLUSTER_DRAIN_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	l := newClusterLab(t)
	f := l.startFleet(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ac := l.checkAddresses(ctx, t)
	echoes := make(chan struct{})
	go func() {
		defer close(echoes)
		f.EchoLoop(ctx, 50*time.Millisecond, func(int, time.Time, bool) {})
	}()
	time.Sleep(1500 * time.Millisecond)
	drained := l.gws[0]
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", drained.ns, mifsecBinary(t), "gateway", "drain", "--tun", drained.tun).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "draining: ") {
		t.Fatalf("mifsec gateway drain: %v\n%s%s", err, out, l.logs())
	}
	ofDrained := func(i int) bool { return i%3 == 0 }
	if !testenv.Eventually(10*time.Second, func() bool {
		for i, r := range f.Roaming() {
			if ofDrained(i) && r.Gateway == drained.addr {
				return false
			}
		}
		return len(gatewayClientsOn(t, drained.tun)) == 0
	}) {
		t.Fatalf("the drained gateway's clients did not all move within 10 s (%d still there)%s",
			len(gatewayClientsOn(t, drained.tun)), l.logs())
	}
	moved := time.Since(start)
	time.Sleep(time.Second)
	cancel()
	<-echoes
	ac.done()

	rs := f.Roaming()
	p50, most, k := gapStats(rs, ofDrained)
	_, smost, _ := gapStats(rs, func(i int) bool { return !ofDrained(i) })
	t.Logf("%d clients echoing 20/s, %d on the drained gateway: all moved within %v; their longest gap between answered echoes p50 %v, max %v (the others' max %v)",
		n, k, moved.Round(10*time.Millisecond), p50.Round(time.Millisecond), most.Round(time.Millisecond), smost.Round(time.Millisecond))
	checkSameAddresses(t, rs)
	for i, r := range rs {
		if !ofDrained(i) {
			continue
		}
		if r.Redirects != 1 || r.Gateway == drained.addr {
			t.Errorf("client %d: %d redirects, at %v (gateways %v); want one redirect away from %v", i, r.Redirects, r.Gateway, r.Gateways, drained.addr)
		}
		if r.LongestGap > time.Second {
			t.Errorf("client %d: echoes stopped for %v across the drain (%d of %d answered)", i, r.LongestGap, r.Echoed, r.Sent)
		}
	}
	if len(ac.violations) > 0 || ac.samples == 0 {
		t.Errorf("%d address samples; inner addresses held twice:\n%s", ac.samples, strings.Join(ac.violations, "\n"))
	}
	if t.Failed() {
		t.Log(l.logs())
	}
}
