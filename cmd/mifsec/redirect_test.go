package main

import (
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/testenv"
)

// redirectTopology is two gateway namespaces (gw1 at 198.51.100.2, gw2 at
// 203.0.113.2) and two client namespaces (cl1 at 192.0.2.1, cl2 at
// 198.18.0.1), all joined by a router namespace; each gateway protects
// 10.1.0.0/24 (10.1.0.1 on its lo) and leases from 10.3.0.0/24, as two
// members of one service would.
type redirectTopology struct {
	cl1, cl2, gw1, gw2 string
}

func newRedirectTopology(t *testing.T) redirectTopology {
	t.Helper()
	testenv.RequireCommand(t, "ping")
	top := redirectTopology{cl1: testenv.NewNamedNetns(t, "rcl1"), cl2: testenv.NewNamedNetns(t, "rcl2"),
		gw1: testenv.NewNamedNetns(t, "rgw1"), gw2: testenv.NewNamedNetns(t, "rgw2")}
	rt := testenv.NewNamedNetns(t, "rrt")
	testenv.Exec(t, rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for _, l := range []struct{ ns, addr, router string }{
		{top.cl1, "192.0.2.1/24", "192.0.2.254"},
		{top.cl2, "198.18.0.1/24", "198.18.0.254"},
		{top.gw1, "198.51.100.2/24", "198.51.100.254"},
		{top.gw2, "203.0.113.2/24", "203.0.113.254"},
	} {
		p := netip.MustParsePrefix(l.addr)
		testenv.Veth(t, l.ns, rt, p, netip.PrefixFrom(netip.MustParseAddr(l.router), p.Bits()))
		testenv.Exec(t, l.ns, "ip", "route", "add", "default", "via", l.router)
	}
	for _, gw := range []string{top.gw1, top.gw2} {
		testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	}
	return top
}

// TestMifsecGatewayRedirect: a full gateway (--max-clients 1) sends a new
// mifsec client to its --redirect-to gateway, where it connects; then
// `mifsec gateway drain` moves the client still on the first gateway to
// the second, connecting there before it leaves, while it pings through
// the tunnel 100 times a second: no gap between replies over 1 s.
func TestMifsecGatewayRedirect(t *testing.T) {
	const psk = "a secret of the whole service"
	top := newRedirectTopology(t)
	dir := t.TempDir()
	pskFile := writePSK(t, dir, psk)
	g1 := startMifsecGatewayTUN(t, top.gw1, "198.51.100.2", "mrd1", "--local-id", "gw.example", "--psk-file", pskFile,
		"--max-clients", "1", "--redirect-to", "203.0.113.2")
	g2 := startMifsecGatewayTUN(t, top.gw2, "203.0.113.2", "mrd2", "--local-id", "gw.example", "--psk-file", pskFile)
	logs := func() string {
		return "\ngateway 1:\n" + g1.log.String() + "\ngateway 2:\n" + g2.log.String()
	}
	connectTo := func(ns, tunName, id string) *connectProcess {
		return startConnect(t, ns, tunName, "--gateway", "198.51.100.2", "--local-id", id,
			"--remote-id", "gw.example", "--psk-file", pskFile, "--ipv6=false")
	}

	c1 := connectTo(top.cl1, "mrc1", "one.example")
	st := c1.waitEstablished(t, 10*time.Second)
	if st.Session.Gateway != "198.51.100.2:500" || st.Session.Redirects != 0 {
		t.Fatalf("first client at %s after %d redirects, want the first gateway%s", st.Session.Gateway, st.Session.Redirects, logs())
	}

	// The first gateway is full: the second client ends on the second.
	c2 := connectTo(top.cl2, "mrc2", "two.example")
	st = c2.waitEstablished(t, 10*time.Second)
	if st.Session.Gateway != "203.0.113.2:500" || st.Session.RedirectedFrom != "198.51.100.2:500" || st.Session.Redirects != 1 {
		t.Fatalf("second client at %s, redirected from %q %d times; want 203.0.113.2:500 from 198.51.100.2:500%s\nclient:\n%s",
			st.Session.Gateway, st.Session.RedirectedFrom, st.Session.Redirects, logs(), c2.log.String())
	}
	if err := ping(top.cl2, "10.1.0.1", 3); err != nil {
		t.Fatalf("through the second gateway: %v%s\nclient:\n%s", err, logs(), c2.log.String())
	}
	waitForLog(t, c2.mifsecProcess, "redirected by the gateway")
	if out, err := exec.Command(mifsecBinary(t), "status", "--tun", "mrc2").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "gateway 203.0.113.2:500: established") ||
		!strings.Contains(string(out), "redirected here by the gateway 198.51.100.2:500 (1 redirects followed)") {
		t.Errorf("mifsec status of the redirected client (%v):\n%s", err, out)
	}
	if out, err := exec.Command(mifsecBinary(t), "status", "--tun", "mrd1").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "1 clients redirected to other gateways (full)") {
		t.Errorf("mifsec status of the full gateway (%v):\n%s", err, out)
	}
	if n := len(gatewayClientsOn(t, "mrd1")); n != 1 {
		t.Fatalf("the full gateway has %d clients, want 1%s", n, logs())
	}
	if st := mifsecGatewayStatusOn(t, "mrd1"); st.Redirect.Redirected != 1 || st.Redirect.Draining {
		t.Errorf("the full gateway's redirect status %+v", st.Redirect)
	}
	if cl := gatewayClientsOn(t, "mrd2"); len(cl) != 1 || cl[0].ID != "two.example" {
		t.Fatalf("the second gateway's clients %+v%s", cl, logs())
	}

	// The second client leaves (its address at the second gateway,
	// 10.3.0.2, is the one the first has at the first: the pools are not
	// shared yet). Then the first gateway drains while the first client
	// pings 100/s; it asks the second gateway for its address.
	c2.stop(t)
	if !testenv.Eventually(3*time.Second, func() bool { return len(gatewayClientsOn(t, "mrd2")) == 0 }) {
		t.Fatalf("the second client did not leave%s", logs())
	}
	pings := make(chan pingStream, 1)
	go func() { pings <- pingEvery(top.cl1, "10.1.0.1", 500, 56, 10*time.Millisecond) }()
	time.Sleep(1500 * time.Millisecond)
	out, err := exec.Command("ip", "netns", "exec", top.gw1, mifsecBinary(t), "gateway", "drain", "--tun", "mrd1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "draining: 1 clients") {
		t.Fatalf("mifsec gateway drain: %v\n%s%s", err, out, logs())
	}
	ps := <-pings
	t.Logf("ping through the drain: %d of %d replies, longest gap between replies %v, %d missing in a row",
		ps.received, ps.sent, ps.longestGap, ps.longestLoss)
	st = c1.waitEstablished(t, 5*time.Second)
	if st.Session.Gateway != "203.0.113.2:500" || st.Session.Redirects != 1 {
		t.Fatalf("first client at %s after the drain (%d redirects), want 203.0.113.2:500%s\nclient:\n%s",
			st.Session.Gateway, st.Session.Redirects, logs(), c1.log.String())
	}
	if len(st.Session.Addresses) != 1 || st.Session.Addresses[0] != "10.3.0.2/32" {
		t.Errorf("the first client's addresses after the move %v, want its 10.3.0.2/32 kept", st.Session.Addresses)
	}
	if ps.longestGap > time.Second || ps.longestLoss > 100 {
		t.Fatalf("the drain interrupted the ping for %v (%d of %d replies)%s\nclient:\n%s\nping:\n%s",
			ps.longestGap, ps.received, ps.sent, logs(), c1.log.String(), ps.out)
	}
	if !testenv.Eventually(3*time.Second, func() bool { return len(gatewayClientsOn(t, "mrd1")) == 0 }) {
		t.Fatalf("the drained gateway still has clients %+v%s", gatewayClientsOn(t, "mrd1"), logs())
	}
	if cl := gatewayClientsOn(t, "mrd2"); len(cl) != 1 || cl[0].ID != "one.example" {
		t.Fatalf("the second gateway's clients %+v%s", cl, logs())
	}
	if st := mifsecGatewayStatusOn(t, "mrd1"); !st.Redirect.Draining {
		t.Errorf("the drained gateway's status does not say so: %+v", st.Redirect)
	}
}

// TestMifsecGatewayDrainSignal: SIGUSR1 drains the gateway as `mifsec
// gateway drain` does.
func TestMifsecGatewayDrainSignal(t *testing.T) {
	const psk = "a secret of the whole service"
	top := newRedirectTopology(t)
	pskFile := writePSK(t, t.TempDir(), psk)
	g1 := startMifsecGatewayTUN(t, top.gw1, "198.51.100.2", "mrd1", "--local-id", "gw.example", "--psk-file", pskFile,
		"--redirect-to", "203.0.113.2")
	startMifsecGatewayTUN(t, top.gw2, "203.0.113.2", "mrd2", "--local-id", "gw.example", "--psk-file", pskFile)
	c := startConnect(t, top.cl1, "mrc1", "--gateway", "198.51.100.2", "--local-id", "one.example",
		"--remote-id", "gw.example", "--psk-file", pskFile, "--ipv6=false")
	c.waitEstablished(t, 10*time.Second)
	// ip netns exec execs mifsec: its process is the gateway.
	if err := g1.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatalf("signalling the gateway: %v", err)
	}
	if !testenv.Eventually(5*time.Second, func() bool {
		st, err := c.status(t)
		return err == nil && st.Session.Gateway == "203.0.113.2:500" && st.Session.State == "established"
	}) {
		t.Fatalf("the client did not move after SIGUSR1:\ngateway:\n%s\nclient:\n%s", g1.log.String(), c.log.String())
	}
	if err := ping(top.cl1, "10.1.0.1", 3); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g1.done:
		t.Fatalf("SIGUSR1 ended the gateway:\n%s", g1.log.String())
	default:
	}
	if st := mifsecGatewayStatusOn(t, "mrd1"); !st.Redirect.Draining || len(st.Clients) != 0 {
		t.Errorf("after SIGUSR1 the gateway is not drained: %+v, %d clients", st.Redirect, len(st.Clients))
	}
}

// TestStrongSwanFollowsRedirect: strongSwan's charon as the client of a
// full mifsec gateway follows its REDIRECT in the IKE_SA_INIT response
// (charon sends REDIRECT_SUPPORTED when follow_redirects is on, its
// default) and ends on the other gateway; then a drain redirects the
// established charon (INFORMATIONAL with REDIRECT).
func TestStrongSwanFollowsRedirect(t *testing.T) {
	strongswan.Require(t)
	const psk = "a secret only the two share"
	top := newRedirectTopology(t)
	pskFile := writePSK(t, t.TempDir(), psk)
	g1 := startMifsecGatewayTUN(t, top.gw1, "198.51.100.2", "mrd1", "--local-id", "gw.example", "--psk-file", pskFile,
		"--max-clients", "1", "--redirect-to", "203.0.113.2")
	g2 := startMifsecGatewayTUN(t, top.gw2, "203.0.113.2", "mrd2", "--local-id", "gw.example", "--psk-file", pskFile,
		"--redirect-to", "198.51.100.2")
	logs := func() string { return "\ngateway 1:\n" + g1.log.String() + "\ngateway 2:\n" + g2.log.String() }
	// A mifsec client fills the first gateway.
	c := startConnect(t, top.cl2, "mrc2", "--gateway", "198.51.100.2", "--local-id", "one.example",
		"--remote-id", "gw.example", "--psk-file", pskFile, "--ipv6=false")
	c.waitEstablished(t, 10*time.Second)

	conf := strings.Replace(strongSwanClient{psk: psk}.swanctl(), "remote_addrs = 192.0.2.2", "remote_addrs = 198.51.100.2", 1)
	charon := strongswan.Start(t, strongswan.Config{Netns: top.cl1, Swanctl: conf})
	if out, err := charon.Swanctl("--initiate", "--child", "net", "--timeout", "20"); err != nil {
		t.Fatalf("swanctl --initiate: %v\n%s\ncharon:\n%s%s", err, out, charon.Log(), logs())
	}
	sas := charon.MustSwanctl("--list-sas")
	if !strings.Contains(sas, "203.0.113.2") {
		t.Fatalf("charon's IKE SA is not with the second gateway:\n%s\ncharon:\n%s%s", sas, charon.Log(), logs())
	}
	if err := ping(top.cl1, "10.1.0.1", 3); err != nil {
		t.Fatalf("%v\ncharon:\n%s%s", err, charon.Log(), logs())
	}
	if cl := gatewayClientsOn(t, "mrd2"); len(cl) != 1 || cl[0].ID != "client.example" {
		t.Fatalf("the second gateway's clients %+v%s", cl, logs())
	}
	logRedirects := func() {
		for _, line := range strings.Split(charon.Log(), "\n") {
			if l := strings.ToLower(line); strings.Contains(l, "redir") || strings.Contains(l, "delet") {
				t.Log("charon:", line)
			}
		}
	}

	// The mifsec client leaves the first gateway, which has room again;
	// the second drains: charon, established there, is redirected back.
	c.stop(t)
	if !testenv.Eventually(3*time.Second, func() bool { return len(gatewayClientsOn(t, "mrd1")) == 0 }) {
		t.Fatalf("the mifsec client did not leave the first gateway%s", logs())
	}
	out, err := exec.Command("ip", "netns", "exec", top.gw2, mifsecBinary(t), "gateway", "drain", "--tun", "mrd2").CombinedOutput()
	if err != nil {
		t.Fatalf("mifsec gateway drain: %v\n%s", err, out)
	}
	moved := testenv.Eventually(8*time.Second, func() bool {
		cl := gatewayClientsOn(t, "mrd1")
		return len(cl) == 1 && cl[0].ID == "client.example"
	})
	logRedirects() // what charon made of both redirects
	if !moved {
		t.Fatalf("charon did not follow the INFORMATIONAL REDIRECT to the first gateway\ncharon:\n%s%s", charon.Log(), logs())
	}
	if err := ping(top.cl1, "10.1.0.1", 3); err != nil {
		t.Fatalf("after the drain: %v\ncharon:\n%s%s", err, charon.Log(), logs())
	}
	// charon deletes its IKE SA with the drained gateway itself, before
	// the drain's 10 s are up.
	if !testenv.Eventually(5*time.Second, func() bool { return len(gatewayClientsOn(t, "mrd2")) == 0 }) {
		t.Fatalf("charon's old IKE SA is still at the drained gateway%s", logs())
	}
}
