package main

import (
	"encoding/json"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/etcdtest"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif/cluster"
)

// TestMifsecGatewayCluster: two `mifsec gateway --cluster-etcd` in their
// own namespaces share one pool through etcd. A client keeps its inner
// address as it moves between them: to b while a still holds it (a
// deletes it there: the takeover), and back to a after it left b (its
// address bound to it for the grace period, which the next free one would
// not be). `mifsec status --cluster` lists it at its gateway.
func TestMifsecGatewayCluster(t *testing.T) {
	testenv.RequireCommand(t, "ping")
	client, gwa, gwb := testenv.NewNamedNetns(t, "cl"), testenv.NewNamedNetns(t, "gwa"), testenv.NewNamedNetns(t, "gwb")
	testenv.Veth(t, client, gwa, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Veth(t, client, gwb, netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24"))
	testenv.Veth(t, gwa, gwb, netip.MustParsePrefix("10.200.0.1/24"), netip.MustParsePrefix("10.200.0.2/24"))
	for _, ns := range []string{gwa, gwb} {
		testenv.Exec(t, ns, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	}
	// etcd runs in this process, listening in a's namespace; b reaches it
	// over the veth between the two.
	var etcd *etcdtest.Cluster
	testenv.InNamedNetns(t, gwa, func() { etcd = etcdtest.StartAt(t, "10.200.0.1", 1) })
	endpoints := strings.Join(etcd.Endpoints(), ",")

	const psk = "one key for the cluster"
	pskFile := writePSK(t, t.TempDir(), psk)
	gateway := func(ns, listen, tunName, name string) *mifsecProcess {
		return startMifsecGatewayTUN(t, ns, listen, tunName, "--local-id", "gw.example", "--psk-file", pskFile,
			"--cluster-etcd", endpoints, "--cluster-name", name, "--cluster-ttl", "3s", "--cluster-grace", "60s")
	}
	a := gateway(gwa, "192.0.2.2", "mgwc0", "a")
	b := gateway(gwb, "198.51.100.2", "mgwc1", "b")
	connect := func(to string) *connectProcess {
		return startConnect(t, client, "mclc0", "--gateway", to, "--local-id", "alice.example", "--remote-id", "gw.example",
			"--psk-file", pskFile, "--ipv6=false")
	}
	address := func(c *connectProcess) string {
		t.Helper()
		st := c.waitEstablished(t, 15*time.Second)
		if len(st.Session.Addresses) != 1 {
			t.Fatalf("addresses %v; want one", st.Session.Addresses)
		}
		return st.Session.Addresses[0]
	}
	logs := func() string { return "\ngateway a:\n" + a.log.String() + "\ngateway b:\n" + b.log.String() }

	c := connect("192.0.2.2")
	first := address(c)
	// Each member's search for a free address starts at a place of its
	// own in the pool (mif/cluster).
	if p, err := netip.ParsePrefix(first); err != nil || p.Bits() != 32 || !netip.MustParsePrefix("10.3.0.0/24").Contains(p.Addr()) ||
		p.Addr().As4()[3] < 2 || p.Addr().As4()[3] == 255 {
		t.Fatalf("first address %s, want a client address of the pool 10.3.0.0/24", first)
	}
	if err := ping(client, "10.1.0.1", 3); err != nil {
		t.Fatalf("through a: %v%s", err, logs())
	}
	// Without --cluster-etcd, status asks the gateway for its etcd.
	atA := func(v cluster.View) bool {
		return len(v.Members) == 2 && len(v.Sessions) == 1 && v.Sessions[0].Gateway == "a"
	}
	view := clusterViewWhen(t, atA, gwa, "--tun", "mgwc0")
	if !atA(view) {
		t.Fatalf("mifsec status --cluster: %+v; want 2 gateways, alice at a", view)
	}
	text := testenv.Exec(t, gwb, mifsecBinary(t), "status", "--cluster", "--cluster-etcd", endpoints)
	if !strings.Contains(text, "2 gateways, 1 clients") || !strings.Contains(text, "alice.example, addresses "+strings.TrimSuffix(first, "/32")+",") {
		t.Fatalf("mifsec status --cluster:\n%s", text)
	}

	// The client dies without a word and comes back at b: b takes its
	// address over, a deletes its IKE SA there.
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c = connect("198.51.100.2")
	if got := address(c); got != first {
		t.Fatalf("at b the client got %s, had %s at a%s", got, first, logs())
	}
	testenv.WaitUntil(t, 10*time.Second, "a to delete the client that logged in at b", func() bool {
		return len(gatewayClientsOn(t, "mgwc0")) == 0
	})
	if err := ping(client, "10.1.0.1", 3); err != nil {
		t.Fatalf("through b: %v%s", err, logs())
	}
	if cl := gatewayClientsOn(t, "mgwc1"); len(cl) != 1 {
		t.Fatalf("b's clients: %+v", cl)
	}
	// a's deleting its stale copy left b's registration alone.
	if view := clusterView(t, gwb, "--cluster-etcd", endpoints); len(view.Sessions) != 1 || view.Sessions[0].Gateway != "b" {
		t.Fatalf("mifsec status --cluster after the takeover: %+v; want alice at b", view)
	}

	// It leaves b properly and comes back at a: its address waited for
	// it (the next free one is 10.3.0.3).
	c.stop(t)
	c = connect("192.0.2.2")
	if got := address(c); got != first {
		t.Fatalf("back at a the client got %s, had %s%s", got, first, logs())
	}
	want := strings.TrimSuffix(first, "/32")
	backAtA := func(v cluster.View) bool {
		return len(v.Sessions) == 1 && v.Sessions[0].Gateway == "a" && len(v.Sessions[0].Addresses) > 0 && v.Sessions[0].Addresses[0] == want
	}
	if view = clusterViewWhen(t, backAtA, gwb, "--cluster-etcd", endpoints); !backAtA(view) {
		t.Fatalf("mifsec status --cluster: %+v; want alice at a with %s", view, want)
	}
	if st := mifsecGatewayStatusOn(t, "mgwc0"); st.Cluster == nil || !st.Cluster.Reachable || st.Cluster.Refused != 0 {
		t.Errorf("a's cluster status %+v", st.Cluster)
	}
}

// clusterViewWhen runs clusterView until ok holds of the view, for at
// most 10 s, and returns the last view: a gateway writes a client's
// session to etcd after the client is established, not before.
func clusterViewWhen(t *testing.T, ok func(cluster.View) bool, ns string, args ...string) cluster.View {
	t.Helper()
	var v cluster.View
	testenv.Eventually(10*time.Second, func() bool {
		v = clusterView(t, ns, args...)
		return ok(v)
	})
	return v
}

// clusterView runs `mifsec status --cluster --json args...` in ns.
func clusterView(t *testing.T, ns string, args ...string) cluster.View {
	t.Helper()
	args = append([]string{"netns", "exec", ns, mifsecBinary(t), "status", "--cluster", "--json"}, args...)
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		t.Fatalf("mifsec status --cluster: %v", err)
	}
	var v cluster.View
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("mifsec status --cluster: %v\n%s", err, out)
	}
	return v
}
