package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/urfave/cli/v2"
)

// multipathTopology is a client namespace with a WLAN-like (wlan0,
// 10.74.1.2) and a cellular-like (wwan0, 10.74.2.2) veth to a namespace
// running `mifsec gateway`, whose address 192.0.2.2 sits on its lo and is
// reachable through both; it protects 10.1.0.0/24.
type multipathTopology struct {
	client, gw     string
	gwTUN, clTUN   string
	gateway        *mifsecProcess
	connect        *connectProcess
	gatewayControl string
}

// newMultipathTopology starts `mifsec gateway` and `mifsec connect` on a
// multipathTopology; both get extra flags, if any, after their own.
func newMultipathTopology(t *testing.T, policy string, extra ...string) *multipathTopology {
	return newMultipathTopologyListening(t, policy, []string{"--listen", "192.0.2.2"}, nil, extra...)
}

// newMultipathTopologyListening is newMultipathTopology with the gateway's
// --listen flags given (none: the wildcard) and setup run on the two
// namespaces before anything starts.
func newMultipathTopologyListening(t *testing.T, policy string, listen []string, setup func(client, gw string), extra ...string) *multipathTopology {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ping")
	testenv.RequireCommand(t, "nft")
	top := &multipathTopology{client: testenv.NewNamedNetns(t, "mp-cl"), gw: testenv.NewNamedNetns(t, "mp-gw")}
	top.gwTUN, top.clTUN = tunNames("mpg", "mpc")
	linkTwoUplinks(t, top.client, top.gw)
	if setup != nil {
		setup(top.client, top.gw)
	}
	const psk = "multipath secret"
	dir := t.TempDir()
	args := append([]string{"--log-level", "debug", "gateway", "--tun", top.gwTUN}, listen...)
	top.gateway = startMifsec(t, top.gw, append(append(args,
		"--pool", "10.3.0.0/24", "--local-ts", "10.1.0.0/24", "--local-id", "gw.example",
		"--psk-file", writePSK(t, dir, psk), "--policy", policy), extra...)...)
	top.gatewayControl = mif.ControlSocket(top.gwTUN)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := mif.ReadStatus(top.gatewayControl); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mifsec gateway did not start:\n%s", top.gateway.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	top.connect = startConnect(t, top.client, top.clTUN, append([]string{"--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, dir, psk), "--ipv6=false",
		"--interfaces", "wlan0,wwan0", "--policy", policy, "--handover-hysteresis", "1s"}, extra...)...)
	return top
}

func (top *multipathTopology) gatewayStatus(t *testing.T) mif.GatewayStatus {
	t.Helper()
	raw, err := mif.ReadStatus(top.gatewayControl)
	if err != nil {
		t.Fatal(err)
	}
	var st mif.GatewayStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// clientStates returns the client's paths' scheduler states by interface.
func clientStates(st mif.Status) map[string]string {
	return pathStates(st, func(p mif.PathStatus) string { return p.Device })
}

// pathStates returns the client's scheduled paths' states by key.
func pathStates(st mif.Status, key func(mif.PathStatus) string) map[string]string {
	out := map[string]string{}
	for _, p := range st.Paths {
		if p.Multipath != nil {
			out[key(p)] = p.Multipath.State
		}
	}
	return out
}

// gatewayActive returns how many of the one client's paths the gateway
// holds active.
func (top *multipathTopology) gatewayActive(t *testing.T) (active int, paths []mif.ScheduledPath) {
	st := top.gatewayStatus(t)
	if len(st.Clients) != 1 {
		return 0, nil
	}
	for _, p := range st.Clients[0].Multipath {
		if p.State == "active" {
			active++
		}
	}
	return active, st.Clients[0].Multipath
}

// waitPaths waits until the client holds want (interface -> state) and the
// gateway holds gwActive of its paths active.
func (top *multipathTopology) waitPaths(t *testing.T, want map[string]string, gwActive int, within time.Duration) mif.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := top.connect.status(t)
		got := clientStates(st)
		ok := err == nil && len(got) == len(want)
		for k, v := range want {
			ok = ok && got[k] == v
		}
		n, gp := top.gatewayActive(t)
		if ok && n == gwActive {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("paths not %v (gateway %d active) within %v: client %v, gateway %+v\nclient:\n%s\ngateway:\n%s",
				want, gwActive, within, got, gp, tail(top.connect.log.String(), 6000), tail(top.gateway.log.String(), 6000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkBytes returns the bytes sent plus received on dev in ns.
func linkBytes(t *testing.T, ns, dev string) uint64 {
	t.Helper()
	out := testenv.Exec(t, ns, "ip", "-j", "-s", "link", "show", "dev", dev)
	var links []struct {
		Stats64 struct {
			RX struct{ Bytes uint64 } `json:"rx"`
			TX struct{ Bytes uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s link show %s: %v\n%s", dev, err, out)
	}
	return links[0].Stats64.RX.Bytes + links[0].Stats64.TX.Bytes
}

// pingStream is what a ping stream saw.
type pingStream struct {
	sent, received int
	longestLoss    int           // longest run of missing sequence numbers
	longestGap     time.Duration // longest time between two replies
	out            string
}

// flood pings addr from ns every millisecond with size-byte payloads,
// count times.
func flood(ns, addr string, count int, size int) pingStream {
	return pingEvery(ns, addr, count, size, time.Millisecond)
}

// pingEvery pings addr from ns every interval with size-byte payloads,
// count times (ping -D stamps each reply with its arrival time).
func pingEvery(ns, addr string, count, size int, interval time.Duration) pingStream {
	b, _ := exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-D", "-c", fmt.Sprint(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()),
		"-s", fmt.Sprint(size), "-W", "1", addr).CombinedOutput()
	return parsePingStream(string(b), count)
}

// parsePingStream reads ping -D output: replies, the longest run of
// missing sequence numbers and the longest time between two replies.
func parsePingStream(out string, count int) pingStream {
	ps := pingStream{sent: count, out: out}
	last := 0
	var lastAt float64
	for _, line := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(line, "icmp_seq=")
		if !ok {
			continue
		}
		var seq int
		if _, err := fmt.Sscanf(rest, "%d", &seq); err != nil || seq <= last {
			continue
		}
		var at float64
		if _, err := fmt.Sscanf(line, "[%f]", &at); err == nil {
			if lastAt != 0 {
				ps.longestGap = max(ps.longestGap, time.Duration((at-lastAt)*float64(time.Second)))
			}
			lastAt = at
		}
		ps.received++
		ps.longestLoss = max(ps.longestLoss, seq-last-1)
		last = seq
	}
	ps.longestLoss = max(ps.longestLoss, count-last)
	return ps
}

// TestMultipathMifsecGateway runs `mifsec connect --interfaces --policy
// offload` over a WLAN-like and a cellular-like veth to `mifsec gateway
// --policy offload`: the IKE SA negotiates MIF, both paths are verified
// on both sides, WLAN carries the traffic while it is healthy, a WLAN that
// silently drops everything loses the traffic to cellular within the
// scheduler's failure detection, a WLAN set down loses almost nothing, and
// the traffic returns to a recovered WLAN, all on one IKE SA.
func TestMultipathMifsecGateway(t *testing.T) {
	top := newMultipathTopology(t, "offload")
	c := top.connect
	st := c.waitEstablished(t, 10*time.Second)
	// Multipath goes on just after the session reports the MIF
	// extension negotiated (on the paths' goroutine, woken by it).
	if !testenv.Eventually(5*time.Second, func() bool { st = mustStatus(t, c); return st.Session.MIF && st.Policy == "offload" }) {
		t.Fatalf("MIF %v, policy %q: want MIF negotiated and offload\n%s", st.Session.MIF, st.Policy, c.log.String())
	}
	if ch := st.Session.Child; ch == nil || ch.ProbeInSPI == "" || ch.ProbeOutSPI == "" {
		t.Fatalf("the Child SA has no probe SA between two mifsec peers: %+v", ch)
	}
	spiI, spiR := st.Session.IKESPIi, st.Session.IKESPIr
	both := map[string]string{"wlan0": "active", "wwan0": "active"}
	st = top.waitPaths(t, both, 2, 10*time.Second)
	t.Logf("both paths active on both sides")
	for _, tunName := range []string{top.clTUN, top.gwTUN} {
		out, err := exec.Command(mifsecBinary(t), "status", "--tun", tunName).CombinedOutput()
		if err != nil || strings.Count(string(out), "active, ") != 2 || !strings.Contains(string(out), "srtt") {
			t.Errorf("mifsec status --tun %s: %v\n%s", tunName, err, out)
		} else {
			t.Logf("mifsec status --tun %s:\n%s", tunName, out)
		}
	}

	// Healthy WLAN: cellular carries (almost) nothing.
	wl0, ww0 := linkBytes(t, top.client, "wlan0"), linkBytes(t, top.client, "wwan0")
	ps := flood(top.client, "10.1.0.1", 5000, 1000)
	wl, ww := linkBytes(t, top.client, "wlan0")-wl0, linkBytes(t, top.client, "wwan0")-ww0
	t.Logf("healthy WLAN, 5000 pings of 1000 bytes: %d replies; wlan0 %d bytes, wwan0 %d bytes (%.3f%%)", ps.received, wl, ww, 100*float64(ww)/float64(wl))
	if ps.received < 4900 {
		t.Errorf("only %d of 5000 replies:\n%s", ps.received, tail(ps.out, 2000))
	}
	if float64(ww) >= 0.01*float64(wl) {
		t.Errorf("cellular carried %d bytes, WLAN %d: want < 1%%", ww, wl)
	}

	// Silent failure: the gateway's side of WLAN drops everything, the
	// link stays up.
	run := func(count int) <-chan pingStream {
		ch := make(chan pingStream, 1)
		go func() { ch <- flood(top.client, "10.1.0.1", count, 100) }()
		return ch
	}
	pings := run(3000)
	time.Sleep(time.Second)
	testenv.Exec(t, top.gw, "nft", "add table inet mpcut")
	testenv.Exec(t, top.gw, "nft", `add chain inet mpcut in { type filter hook input priority 0; policy accept; }`)
	testenv.Exec(t, top.gw, "nft", `add chain inet mpcut out { type filter hook output priority 0; policy accept; }`)
	testenv.Exec(t, top.gw, "nft", `add rule inet mpcut in iifname "wlan0p" drop`)
	testenv.Exec(t, top.gw, "nft", `add rule inet mpcut out oifname "wlan0p" drop`)
	cut := time.Now()
	for clientStates(mustStatus(t, c))["wlan0"] != "failed" && time.Since(cut) < 5*time.Second {
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("the client's scheduler held wlan0 failed %v after the cut", time.Since(cut).Round(time.Millisecond))
	r := <-pings
	t.Logf("silent WLAN failure under 1000 pings/s: %d of 3000 replies, longest gap between replies %v (%d pings in a row lost)",
		r.received, r.longestGap.Round(time.Millisecond), r.longestLoss)
	// 300 ms is the goal; 1 s leaves room for the shared test host.
	if r.longestGap > time.Second {
		t.Errorf("traffic stopped for %v after a silent WLAN failure:\n%s\nclient:\n%s", r.longestGap, tail(r.out, 2000), tail(c.log.String(), 6000))
	}
	if got := clientStates(mustStatus(t, c)); got["wlan0"] != "failed" {
		t.Errorf("client paths after the silent failure: %v, want wlan0 failed", got)
	}
	// Recovery from the silent failure.
	testenv.Exec(t, top.gw, "nft", "delete table inet mpcut")
	top.waitPaths(t, both, 2, 10*time.Second)

	// Planned switch: wlan0 goes down under a 1000/s stream.
	pings = run(3000)
	time.Sleep(time.Second)
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "down")
	r = <-pings
	lost := 3000 - r.received
	t.Logf("wlan0 down under 1000 pings/s: %d of 3000 lost (%.2f%%), longest gap between replies %v", lost, 100*float64(lost)/3000, r.longestGap.Round(time.Millisecond))
	// A planned switch loses nothing on an idle host (the lab's planned
	// scenario); 300 ms of pings leave room for a loaded test host.
	if lost > 300 || r.longestGap > time.Second {
		t.Errorf("%d of 3000 pings lost when wlan0 went down:\n%s\nclient:\n%s\ngateway:\n%s", lost, tail(r.out, 2000), tail(c.log.String(), 6000), tail(top.gateway.log.String(), 6000))
	}
	top.waitPaths(t, map[string]string{"wwan0": "active"}, 1, 5*time.Second)

	// Recovery: WLAN returns; the traffic goes back to it and stays.
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "up")
	testenv.Exec(t, top.client, "ip", "route", "add", "default", "via", "10.74.1.1", "dev", "wlan0", "metric", "100")
	top.waitPaths(t, both, 2, 10*time.Second)
	c.waitPath(t, "wlan0", 10*time.Second)
	before := mustStatus(t, c)
	wl0, ww0 = linkBytes(t, top.client, "wlan0"), linkBytes(t, top.client, "wwan0")
	ps = flood(top.client, "10.1.0.1", 3000, 1000)
	wl, ww = linkBytes(t, top.client, "wlan0")-wl0, linkBytes(t, top.client, "wwan0")-ww0
	after := mustStatus(t, c)
	t.Logf("WLAN back, 3000 pings: %d replies; wlan0 %d bytes, wwan0 %d bytes (%.3f%%)", ps.received, wl, ww, 100*float64(ww)/float64(wl))
	if float64(ww) >= 0.01*float64(wl) {
		t.Errorf("after WLAN returned, cellular carried %d bytes, WLAN %d: want < 1%%", ww, wl)
	}
	if after.Session.PathUpdates != before.Session.PathUpdates || clientStates(after)["wlan0"] != "active" {
		t.Errorf("IKE moved %d times while WLAN was healthy (flapping); states %v", after.Session.PathUpdates-before.Session.PathUpdates, clientStates(after))
	}

	// One IKE SA throughout, on both sides.
	if after.Session.IKESPIi != spiI || after.Session.IKESPIr != spiR || after.Session.Reconnects != 0 {
		t.Errorf("IKE SA %s_i %s_r (reconnects %d), want %s_i %s_r", after.Session.IKESPIi, after.Session.IKESPIr, after.Session.Reconnects, spiI, spiR)
	}
	if gst := top.gatewayStatus(t); len(gst.Clients) != 1 || gst.Clients[0].IKESPIi != spiI || !gst.Clients[0].MIF {
		t.Errorf("gateway clients %+v, want one with IKE SA %s_i and MIF", gst.Clients, spiI)
	}
}

func mustStatus(t *testing.T, c *connectProcess) mif.Status {
	t.Helper()
	st, err := c.status(t)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func parseGatewayArgs(t *testing.T, args ...string) (mif.GatewayConfig, error) {
	t.Helper()
	psk := writePSK(t, t.TempDir(), "a secret of enough length")
	cmd := gatewayCommand()
	var cfg mif.GatewayConfig
	var perr error
	cmd.Action = func(c *cli.Context) error {
		cfg, perr = parseGateway(c)
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{withSetup(cmd, commandSetup{})}} // as the binary reads --config
	base := []string{"mifsec", "gateway", "--local-id", "gw.example", "--psk-file", psk, "--pool", "10.3.0.0/24", "--local-ts", "10.1.0.0/24"}
	if err := app.Run(append(base, args...)); err != nil {
		return cfg, err
	}
	return cfg, perr
}

func TestParsePolicy(t *testing.T) {
	yaml := func(body string) string {
		conf := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return conf
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    string // "" for nil (automatic)
		wantErr string
	}{
		{"automatic", []string{"--interfaces", "wl*"}, "", ""},
		{"offload", []string{"--interfaces", "wl*", "--policy", "offload"}, "offload", ""},
		{"aggregate upper case", []string{"--interfaces", "wl*", "--policy", "AGGREGATE"}, "aggregate", ""},
		{"single without interfaces", []string{"--policy", "single"}, "single", ""},
		{"YAML", []string{"--config", yaml("interfaces: \"wl*\"\npolicy: redundant\n")}, "redundant", ""},
		{"unknown", []string{"--interfaces", "wl*", "--policy", "fastest"}, "", "--policy: scheduler: unknown policy"},
		{"multipath on one interface", []string{"--policy", "aggregate"}, "", "--policy aggregate needs --interfaces"},
		{"classes", []string{"--interfaces", "wl*", "--policy", "aggregate", "--class", "udp/5060:redundant,dscp=ef:redundant"}, "aggregate", ""},
		{"bad class", []string{"--interfaces", "wl*", "--class", "udp/5060:fastest"}, "", "--class:"},
		{"classes on one interface", []string{"--class", "udp/5060:redundant"}, "", "--class needs --interfaces"},
	} {
		t.Run("connect "+tc.name, func(t *testing.T) {
			cfg, err := parseConnectArgs(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if cfg.Policy != nil {
				got = cfg.Policy.String()
			}
			if got != tc.want {
				t.Errorf("policy %q, want %q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    scheduler.Policy
		wantErr string
	}{
		{"default offload", nil, scheduler.PolicyOffload, ""},
		{"single", []string{"--policy", "single"}, scheduler.PolicySingle, ""},
		{"YAML", []string{"--config", yaml("policy: aggregate\n")}, scheduler.PolicyAggregate, ""},
		{"unknown", []string{"--policy", "roundrobin"}, 0, "--policy: scheduler: unknown policy"},
	} {
		t.Run("gateway "+tc.name, func(t *testing.T) {
			cfg, err := parseGatewayArgs(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.Policy != tc.want {
				t.Fatalf("policy %v, %v; want %v", cfg.Policy, err, tc.want)
			}
		})
	}
}

// TestParseGatewayInterfaces: --interfaces alone listens on the uplinks'
// addresses only, beside --listen on both; a bad glob is refused.
func TestParseGatewayInterfaces(t *testing.T) {
	cfg, err := parseGatewayArgs(t, "--interfaces", "isp*,eth1")
	if err != nil || !slices.Equal(cfg.Interfaces, []string{"isp*", "eth1"}) || len(cfg.Listen) != 0 {
		t.Fatalf("--interfaces alone: interfaces %v, listen %v, %v", cfg.Interfaces, cfg.Listen, err)
	}
	both, err := parseGatewayArgs(t, "--listen", "0.0.0.0,::")
	if err != nil || cfg.TUN.MTU != both.TUN.MTU {
		t.Errorf("TUN MTU %d with uplinks of either family, want %d as on both families (%v)", cfg.TUN.MTU, both.TUN.MTU, err)
	}
	cfg, err = parseGatewayArgs(t, "--interfaces", "isp*", "--listen", "192.0.2.2")
	if err != nil || len(cfg.Interfaces) != 1 || !slices.Equal(cfg.Listen, []netip.Addr{netip.MustParseAddr("192.0.2.2")}) {
		t.Fatalf("--interfaces with --listen: interfaces %v, listen %v, %v", cfg.Interfaces, cfg.Listen, err)
	}
	for _, bad := range []string{"[", ","} {
		if _, err := parseGatewayArgs(t, "--interfaces", bad); err == nil || !strings.Contains(err.Error(), "--interfaces") {
			t.Errorf("--interfaces %q: %v, want an error naming the flag", bad, err)
		}
	}
}

func TestParseGatewayLimits(t *testing.T) {
	cfg, err := parseGatewayArgs(t)
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Responder; r.MaxSAsPerIdentity != 4 || r.MaxHalfOpenPerSource != 128 || r.MaxHalfOpen != 1024 ||
		r.SourceDHBudget != 100*time.Millisecond || r.DHBudget != 500*time.Millisecond || cfg.TUN.TxQueueLen != 4096 {
		t.Fatalf("TUN queue %d; default limits: %d SAs per identity, %d half-open per source, %d in all, DH budgets %v per source, %v in all",
			cfg.TUN.TxQueueLen, r.MaxSAsPerIdentity, r.MaxHalfOpenPerSource, r.MaxHalfOpen, r.SourceDHBudget, r.DHBudget)
	}
	cfg, err = parseGatewayArgs(t, "--max-sas-per-identity", "0", "--max-half-open-per-source", "3", "--max-half-open", "4096",
		"--source-dh-budget", "20ms", "--dh-budget", "300ms")
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Responder; r.MaxSAsPerIdentity >= 0 || r.MaxHalfOpenPerSource != 3 || r.MaxHalfOpen != 4096 ||
		r.SourceDHBudget != 20*time.Millisecond || r.DHBudget != 300*time.Millisecond {
		t.Fatalf("limits set: %d SAs per identity (want none), %d half-open per source, %d in all, DH budgets %v per source, %v in all",
			r.MaxSAsPerIdentity, r.MaxHalfOpenPerSource, r.MaxHalfOpen, r.SourceDHBudget, r.DHBudget)
	}
	cfg, err = parseGatewayArgs(t, "--max-clients", "50", "--redirect-to", "192.0.2.77,192.0.2.78")
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Responder; r.MaxClients != 50 || r.Redirector == nil {
		t.Fatalf("--max-clients 50 --redirect-to: limit %d, redirector %v", r.MaxClients, r.Redirector)
	} else if a, _ := r.Redirector.RedirectTarget(netip.AddrPort{}); a != netip.MustParseAddr("192.0.2.77") {
		t.Fatalf("first redirect to %s, want 192.0.2.77", a)
	} else if a, _ := r.Redirector.RedirectTarget(netip.AddrPort{}); a != netip.MustParseAddr("192.0.2.78") {
		t.Fatalf("second redirect to %s, want 192.0.2.78 (round robin)", a)
	}
	// Two keys for one client, spelled twice: refused while parsing,
	// before any device exists.
	keys := filepath.Join(t.TempDir(), "clients")
	if err := os.WriteFile(keys, []byte("alice.example one-key-long-enough\nALICE.example. another-key-long-enough\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseGatewayArgs(t, "--client-psks", keys); err == nil || !strings.Contains(err.Error(), "--client-psks: two pre-shared keys for client alice.example ") {
		t.Errorf("one identity in two spellings with two keys: %v, want it refused", err)
	}
	for _, args := range [][]string{{"--max-sas-per-identity", "-1"}, {"--max-half-open-per-source", "0"}, {"--max-half-open", "0"}, {"--metrics-clients", "-1"},
		{"--source-dh-budget", "0s"}, {"--dh-budget", "-1s"}, {"--max-clients", "-1"},
		{"--redirect-to", "127.0.0.1"}, {"--redirect-to", "192.0.2.9", "--listen", "192.0.2.9"}, {"--redirect-to", "gw2.example"},
		{"--tun-queue", "-1"}, {"--tun-queue", "100000"}, {"--mtu", "100"}} {
		if _, err := parseGatewayArgs(t, args...); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v, want it refused", args, err)
		}
	}
}

// iperf3 runs an iperf3 client in ns against addr for secs seconds and
// returns the receiver's rate in Mbit/s.
func iperf3(t *testing.T, ns, addr string, secs int, reverse bool, cc string) float64 {
	t.Helper()
	args := []string{"netns", "exec", ns, "iperf3", "-c", addr, "-t", fmt.Sprint(secs), "-J", "-C", cc}
	if reverse {
		args = append(args, "-R")
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, tail(string(out), 2000))
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, tail(string(out), 2000))
	}
	return res.End.SumReceived.BitsPerSecond / 1e6
}

// TestMultipathAggregate shapes both links to 50 Mbit/s (TBF, both
// directions) and runs one TCP flow through the tunnel with the aggregate
// policy on both sides: the flow gets more than one link carries, with
// both links used. The flows name their congestion control (iperf3 -C,
// both ends) rather than take the host's default: cubic each way, the
// default of Linux, Windows and macOS hosts, and a bbr download, what
// many servers send with. (A bbr upload is not held to it: docs/lab.md
// "TCP congestion control".)
func TestMultipathAggregate(t *testing.T) {
	testenv.RequireCommand(t, "iperf3")
	testenv.RequireCommand(t, "tc")
	top := newMultipathTopology(t, "aggregate")
	for _, dev := range []struct{ ns, dev string }{{top.client, "wlan0"}, {top.client, "wwan0"}, {top.gw, "wlan0p"}, {top.gw, "wwan0p"}} {
		testenv.Exec(t, dev.ns, "tc", "qdisc", "add", "dev", dev.dev, "root", "tbf", "rate", "50mbit", "burst", "64kb", "latency", "20ms")
	}
	top.connect.waitEstablished(t, 10*time.Second)
	top.waitPaths(t, map[string]string{"wlan0": "active", "wwan0": "active"}, 2, 10*time.Second)
	testenv.StartIperf3Server(t, top.gw, "10.1.0.1", false)

	for _, dir := range []struct {
		name    string
		reverse bool
		cc      string
	}{{"upload", false, "cubic"}, {"download", true, "cubic"}, {"download", true, "bbr"}} {
		t.Run(dir.name+"-"+dir.cc, func(t *testing.T) {
			if err := bench.CheckCongestionControl(dir.cc); err != nil {
				t.Skipf("needs TCP congestion control %s: %v", dir.cc, err)
			}
			wl0, ww0 := linkBytes(t, top.client, "wlan0"), linkBytes(t, top.client, "wwan0")
			mbps := iperf3(t, top.client, "10.1.0.1", 10, dir.reverse, dir.cc)
			wl, ww := linkBytes(t, top.client, "wlan0")-wl0, linkBytes(t, top.client, "wwan0")-ww0
			t.Logf("aggregate %s (%s), one TCP flow over two 50 Mbit/s links: %.1f Mbit/s; wlan0 %d bytes, wwan0 %d bytes", dir.name, dir.cc, mbps, wl, ww)
			// One link carries at most 50 Mbit/s: more is the sum of both.
			if mbps < 55 {
				t.Errorf("%.1f Mbit/s, not more than one 50 Mbit/s link", mbps)
			}
			if wl < 1<<20 || ww < 1<<20 {
				t.Errorf("a link carried almost nothing (wlan0 %d, wwan0 %d bytes)", wl, ww)
			}
		})
	}
	st, _ := top.connect.status(t)
	for _, p := range st.Paths {
		if p.Multipath != nil {
			t.Logf("client path %s: %+v", p.Device, *p.Multipath)
		}
	}
}

// TestMultipathWildcardGatewayBehindNAT: a gateway listening on the
// wildcard address (the default) whose address the client dials
// (192.0.2.2, on its loopback) is on neither of the links. Each path's
// replies must leave from that address: a NAT or stateful firewall on the
// client's side drops a reply from any other (here the client's own
// firewall drops UDP from port 4500 that answers nothing it sent). Both
// paths come up and carry traffic.
func TestMultipathWildcardGatewayBehindNAT(t *testing.T) {
	top := newMultipathTopologyListening(t, "aggregate", nil, func(client, gw string) {
		rules := "table inet stateful {\n chain in {\n  type filter hook input priority filter; policy accept;\n  udp sport { 500, 4500 } ct state new counter drop\n }\n}\n"
		cmd := exec.Command("ip", "netns", "exec", client, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("client firewall: %v\n%s", err, out)
		}
	})
	top.connect.waitEstablished(t, 10*time.Second)
	top.waitPaths(t, map[string]string{"wlan0": "active", "wwan0": "active"}, 2, 10*time.Second)
	if err := ping(top.client, "10.1.0.1", 3); err != nil {
		t.Fatal(err)
	}
	if out := testenv.Exec(t, top.client, "nft", "list", "table", "inet", "stateful"); !strings.Contains(out, "packets 0 ") {
		t.Errorf("the client's firewall dropped replies from an address it did not send to:\n%s", out)
	}
}

// TestMultipathGatewayUplinkFails: the gateway has two uplinks (two
// ISPs: 10.81.0.2 and 10.82.0.2, with source routing), the client one
// interface behind a router that reaches both. The client connects to the
// first address, learns the second (ADDITIONAL_IP4_ADDRESS) and keeps a
// path to each. The router then drops everything to and from the first
// address under a 100/s ping through the tunnel: the traffic goes on over
// the second within the probes' failure detection, IKE follows there, and
// the IKE SA and inner address stay.
func TestMultipathGatewayUplinkFails(t *testing.T) {
	const g1, g2 = "10.81.0.2", "10.82.0.2"
	cl, rt, gw, clIf := gatewayUplinksTopology(t, true)
	gwTUN, clTUN := tunNames("gug", "guc")
	psk := writePSK(t, t.TempDir(), "two uplinks secret")
	g := startMifsecGatewayTUN(t, gw, g1, gwTUN, "--listen", g2, "--local-id", "gw.example", "--psk-file", psk)
	c := startConnect(t, cl, clTUN, "--gateway", g1, "--local-id", "client.example", "--remote-id", "gw.example",
		"--psk-file", psk, "--ipv6=false", "--interfaces", clIf)
	st := c.waitEstablished(t, 10*time.Second)
	spiI, inner := st.Session.IKESPIi, st.Session.Addresses
	if !slices.Equal(st.Session.GatewayAddresses, []string{g2}) {
		t.Fatalf("the client learnt the gateway addresses %v, want [%s]\n%s", st.Session.GatewayAddresses, g2, c.log.String())
	}
	// Both pairs verified on both sides: the client's to each gateway
	// address, the gateway's to the client at each of its addresses.
	want := map[string]string{g1 + ":4500": "active", g2 + ":4500": "active"}
	testenv.WaitUntil(t, 10*time.Second, "both paths active on both sides", func() bool {
		return maps.Equal(gatewayPairs(mustStatus(t, c)), want) && gatewayActivePaths(t, gwTUN) == 2
	})

	pings := make(chan pingStream, 1)
	go func() { pings <- pingEvery(cl, "10.1.0.1", 800, 56, 10*time.Millisecond) }()
	time.Sleep(2 * time.Second)
	testenv.Exec(t, rt, "nft", "add table inet gucut")
	testenv.Exec(t, rt, "nft", `add chain inet gucut cut { type filter hook forward priority 0; policy accept; }`)
	testenv.Exec(t, rt, "nft", "add rule inet gucut cut ip daddr "+g1+" drop")
	testenv.Exec(t, rt, "nft", "add rule inet gucut cut ip saddr "+g1+" drop")
	r := <-pings
	t.Logf("the gateway's first uplink cut under 100 pings/s: %d of 800 replies, longest gap between replies %v (%d pings in a row lost)",
		r.received, r.longestGap.Round(time.Millisecond), r.longestLoss)
	// 300 ms is the goal; 1 s leaves room for the shared test host.
	if r.longestGap > time.Second || r.received < 700 {
		t.Errorf("traffic stopped for %v (%d of 800 replies) when the gateway's first uplink failed:\n%s\nclient:\n%s\ngateway:\n%s",
			r.longestGap, r.received, tail(r.out, 2000), tail(c.log.String(), 6000), tail(g.log.String(), 6000))
	}
	// IKE follows the traffic to the second address; the same IKE SA and
	// inner address throughout, and the tunnel works on.
	testenv.WaitUntil(t, 10*time.Second, "the gateway to see the client's IKE SA on its second address", func() bool {
		gst := mifsecGatewayStatusOn(t, gwTUN)
		return len(gst.Clients) == 1 && gst.Clients[0].Local == g2
	})
	if r := pingEvery(cl, "10.1.0.1", 100, 56, 10*time.Millisecond); r.received < 95 {
		t.Errorf("after the move %d of 100 pings answered", r.received)
	}
	after := mustStatus(t, c)
	if after.Session.IKESPIi != spiI || after.Session.Reconnects != 0 || !slices.Equal(after.Session.Addresses, inner) {
		t.Errorf("IKE SA %s (reconnects %d, addresses %v), want %s with %v", after.Session.IKESPIi, after.Session.Reconnects,
			after.Session.Addresses, spiI, inner)
	}
	if got := gatewayPairs(after); got[g1+":4500"] != "failed" || got[g2+":4500"] != "active" {
		t.Errorf("client paths after the cut: %v, want the first address's failed", got)
	}
}

// gatewayUplinksTopology is a client namespace with one interface (its
// name returned) behind a router namespace that reaches a gateway
// namespace over two links: isp0 (the gateway at 10.81.0.2) and isp1
// (10.82.0.2, only with second; else the link has no address yet). The
// gateway routes by source address, as a multihomed host does, and has
// 10.1.0.1 on lo.
func gatewayUplinksTopology(t *testing.T, second bool) (cl, rt, gw, clIf string) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ping")
	testenv.RequireCommand(t, "nft")
	cl, rt, gw = testenv.NewNamedNetns(t, "gu-cl"), testenv.NewNamedNetns(t, "gu-rt"), testenv.NewNamedNetns(t, "gu-gw")
	clIf, _ = testenv.Veth(t, cl, rt, netip.MustParsePrefix("10.80.0.2/24"), netip.MustParsePrefix("10.80.0.1/24"))
	for k, ifName := range []string{"isp0", "isp1"} {
		peer := fmt.Sprintf("gu%s%d", hex.EncodeToString([]byte(rt[len(rt)-2:])), k)
		testenv.Exec(t, "", "ip", "link", "add", "name", ifName, "netns", gw, "type", "veth", "peer", "name", peer, "netns", rt)
		testenv.Exec(t, rt, "ip", "addr", "add", fmt.Sprintf("10.8%d.0.1/24", k+1), "dev", peer)
		testenv.Exec(t, rt, "ip", "link", "set", peer, "up")
		testenv.Exec(t, gw, "ip", "link", "set", ifName, "up")
	}
	testenv.Exec(t, rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	testenv.Exec(t, cl, "ip", "route", "add", "default", "via", "10.80.0.1")
	testenv.Exec(t, gw, "ip", "addr", "add", "10.81.0.2/24", "dev", "isp0")
	testenv.Exec(t, gw, "ip", "route", "add", "default", "via", "10.81.0.1")
	testenv.Exec(t, gw, "ip", "rule", "add", "from", "10.82.0.2", "table", "102")
	if second {
		addSecondGatewayAddress(t, gw)
	}
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	return cl, rt, gw, clIf
}

// addSecondGatewayAddress gives the gateway of gatewayUplinksTopology its
// address on isp1, with the route of its source.
func addSecondGatewayAddress(t *testing.T, gw string) {
	testenv.Exec(t, gw, "ip", "addr", "add", "10.82.0.2/24", "dev", "isp1")
	testenv.Exec(t, gw, "ip", "route", "add", "default", "via", "10.82.0.1", "dev", "isp1", "table", "102")
}

// tunNames returns a gateway's and a client's TUN names with the
// prefixes and one random suffix, so that tests on the same host do not
// meet in /run/mifsec.
func tunNames(gwPrefix, clPrefix string) (gw, cl string) {
	suffix := make([]byte, 3)
	rand.Read(suffix)
	return gwPrefix + hex.EncodeToString(suffix), clPrefix + hex.EncodeToString(suffix)
}

// gatewayPairs returns the client's scheduled paths' states by gateway
// address.
func gatewayPairs(st mif.Status) map[string]string {
	return pathStates(st, func(p mif.PathStatus) string { return p.Remote })
}

// gatewayActivePaths counts the active paths of the gateway's one client.
func gatewayActivePaths(t *testing.T, gwTUN string) int {
	gst := mifsecGatewayStatusOn(t, gwTUN)
	active := 0
	if len(gst.Clients) == 1 {
		for _, p := range gst.Clients[0].Multipath {
			if p.State == "active" {
				active++
			}
		}
	}
	return active
}

// TestMultipathGatewayAddressAtRunTime: `mifsec gateway --interfaces
// isp*` listens on its uplinks' addresses as they come and go. An address
// added while a client is connected gets a working path from the client
// within 2 s (the gateway tells it in an INFORMATIONAL, RFC 4555 §3.6);
// removing it under a 1000/s ping through the tunnel (aggregate, so the
// path carries half the pings) loses nothing: the gateway takes the path
// out of its scheduler before the socket closes, the client when it
// learns, and both send again what was in flight on it. Then the address
// the IKE SA uses goes: the traffic stays on the other, and IKE follows
// (the client answers the gateway's requests from its other address).
func TestMultipathGatewayAddressAtRunTime(t *testing.T) {
	const g1, g2 = "10.81.0.2", "10.82.0.2"
	cl, _, gw, clIf := gatewayUplinksTopology(t, false)
	gwTUN, clTUN := tunNames("gag", "gac")
	psk := writePSK(t, t.TempDir(), "uplinks that come and go")
	g := startMifsec(t, gw, "--log-level", "debug", "gateway", "--tun", gwTUN, "--interfaces", "isp*",
		"--pool", "10.3.0.0/24", "--local-ts", "10.1.0.0/24", "--local-id", "gw.example", "--psk-file", psk, "--policy", "aggregate")
	testenv.WaitUntil(t, 10*time.Second, "the gateway to listen on "+g1, func() bool {
		raw, err := mif.ReadStatus(mif.ControlSocket(gwTUN))
		return err == nil && strings.Contains(string(raw), g1+":4500")
	})
	c := startConnect(t, cl, clTUN, "--gateway", g1, "--local-id", "client.example", "--remote-id", "gw.example",
		"--psk-file", psk, "--ipv6=false", "--interfaces", clIf, "--policy", "aggregate")
	st := c.waitEstablished(t, 10*time.Second)
	spiI := st.Session.IKESPIi
	if len(st.Session.GatewayAddresses) != 0 {
		t.Fatalf("the client learnt gateway addresses %v before the second appeared", st.Session.GatewayAddresses)
	}

	addPair := map[string]string{g1 + ":4500": "active", g2 + ":4500": "active"}
	added := time.Now()
	addSecondGatewayAddress(t, gw)
	if !testenv.Eventually(10*time.Second, func() bool { return maps.Equal(gatewayPairs(mustStatus(t, c)), addPair) }) {
		t.Fatalf("no working path to the gateway's new address within 10s: %v\nclient:\n%s\ngateway:\n%s", gatewayPairs(mustStatus(t, c)),
			tail(c.log.String(), 6000), tail(g.log.String(), 6000))
	}
	took := time.Since(added)
	t.Logf("an address added to the gateway: the client's path to it active %v later", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("the path to the gateway's new address took %v, want at most 2s\nclient:\n%s\ngateway:\n%s", took,
			tail(c.log.String(), 4000), tail(g.log.String(), 4000))
	}
	testenv.WaitUntil(t, 10*time.Second, "the gateway to schedule both paths", func() bool { return gatewayActivePaths(t, gwTUN) == 2 })

	pings := make(chan pingStream, 1)
	go func() { pings <- flood(cl, "10.1.0.1", 3000, 100) }()
	time.Sleep(time.Second)
	testenv.Exec(t, gw, "ip", "addr", "del", g2+"/24", "dev", "isp1")
	r := <-pings
	lost := 3000 - r.received
	t.Logf("the address removed under 1000 pings/s: %d of 3000 lost, longest gap between replies %v", lost, r.longestGap.Round(time.Millisecond))
	// 0 is the goal; 1% leaves room for the shared test host.
	if lost > 30 {
		t.Errorf("%d of 3000 pings lost when the gateway's address went:\n%s\nclient:\n%s\ngateway:\n%s", lost, tail(r.out, 2000),
			tail(c.log.String(), 6000), tail(g.log.String(), 6000))
	}
	testenv.WaitUntil(t, 5*time.Second, "the client to drop the path to the removed address", func() bool {
		return maps.Equal(gatewayPairs(mustStatus(t, c)), map[string]string{g1 + ":4500": "active"})
	})
	if after := mustStatus(t, c); after.Session.IKESPIi != spiI || after.Session.Reconnects != 0 {
		t.Errorf("IKE SA %s (reconnects %d), want %s", after.Session.IKESPIi, after.Session.Reconnects, spiI)
	}

	// The address back, then the one the IKE SA uses goes: the traffic
	// stays on the other and IKE follows it there, same IKE SA.
	addSecondGatewayAddress(t, gw)
	testenv.WaitUntil(t, 10*time.Second, "a working path to the address back", func() bool {
		return maps.Equal(gatewayPairs(mustStatus(t, c)), addPair)
	})
	go func() { pings <- flood(cl, "10.1.0.1", 3000, 100) }()
	time.Sleep(time.Second)
	testenv.Exec(t, gw, "ip", "addr", "del", g1+"/24", "dev", "isp0")
	r = <-pings
	lost = 3000 - r.received
	t.Logf("the IKE SA's address removed under 1000 pings/s: %d of 3000 lost, longest gap between replies %v", lost, r.longestGap.Round(time.Millisecond))
	// Measured: 0–1 lost, a gap of about 0.1 s; 1% and 1 s leave room for
	// the shared test host.
	if lost > 30 || r.longestGap > time.Second {
		t.Errorf("%d of 3000 pings lost, a gap of %v, when the IKE SA's gateway address went:\n%s\nclient:\n%s\ngateway:\n%s", lost, r.longestGap,
			tail(r.out, 2000), tail(c.log.String(), 6000), tail(g.log.String(), 6000))
	}
	if !testenv.Eventually(10*time.Second, func() bool {
		gst := mifsecGatewayStatusOn(t, gwTUN)
		return len(gst.Clients) == 1 && gst.Clients[0].Local == g2
	}) {
		t.Fatalf("the IKE SA did not move to %s:\nclient:\n%s\ngateway:\n%s", g2, tail(c.log.String(), 6000), tail(g.log.String(), 6000))
	}
	if after := mustStatus(t, c); after.Session.IKESPIi != spiI || after.Session.Reconnects != 0 {
		t.Errorf("after the IKE SA's address went: IKE SA %s (reconnects %d), want %s", after.Session.IKESPIi, after.Session.Reconnects, spiI)
	}
}

// TestMultipathGatewayDrain: an operator takes one of the gateway's two
// uplinks out of service by listing its address under `drain` in the
// gateway's profile and sending SIGHUP: under a 1000/s ping through the
// tunnel (aggregate, so the path carries half of them) nothing is lost,
// the client keeps its IKE SA on the other address; the address comes
// back into use when the profile no longer lists it.
func TestMultipathGatewayDrain(t *testing.T) {
	const g1, g2 = "10.81.0.2", "10.82.0.2"
	cl, _, gw, clIf := gatewayUplinksTopology(t, true)
	gwTUN, clTUN := tunNames("gdg", "gdc")
	dir := t.TempDir()
	psk := writePSK(t, dir, "a drained uplink")
	profile := filepath.Join(dir, "gw.yaml")
	writeDrain := func(addrs string) {
		if err := os.WriteFile(profile, []byte("mode: gateway\ndrain: ["+addrs+"]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeDrain("")
	g := startMifsecGatewayTUN(t, gw, g1, gwTUN, "--listen", g2, "--local-id", "gw.example", "--psk-file", psk,
		"--policy", "aggregate", "--config", profile)
	c := startConnect(t, cl, clTUN, "--gateway", g1, "--local-id", "client.example", "--remote-id", "gw.example",
		"--psk-file", psk, "--ipv6=false", "--interfaces", clIf, "--policy", "aggregate")
	spiI := c.waitEstablished(t, 10*time.Second).Session.IKESPIi
	both := map[string]string{g1 + ":4500": "active", g2 + ":4500": "active"}
	testenv.WaitUntil(t, 10*time.Second, "both pairs active on both sides", func() bool {
		return maps.Equal(gatewayPairs(mustStatus(t, c)), both) && gatewayActivePaths(t, gwTUN) == 2
	})

	pings := make(chan pingStream, 1)
	go func() { pings <- flood(cl, "10.1.0.1", 3000, 100) }()
	time.Sleep(time.Second)
	writeDrain(g2)
	g.cmd.Process.Signal(syscall.SIGHUP)
	r := <-pings
	lost := 3000 - r.received
	t.Logf("%s drained under 1000 pings/s: %d of 3000 lost, longest gap between replies %v", g2, lost, r.longestGap.Round(time.Millisecond))
	// 0 is the goal; 1% leaves room for the shared test host.
	if lost > 30 {
		t.Errorf("%d of 3000 pings lost when an uplink was drained:\n%s\nclient:\n%s\ngateway:\n%s", lost, tail(r.out, 2000),
			tail(c.log.String(), 6000), tail(g.log.String(), 6000))
	}
	testenv.WaitUntil(t, 5*time.Second, "the client to drop the path to the drained address", func() bool {
		return maps.Equal(gatewayPairs(mustStatus(t, c)), map[string]string{g1 + ":4500": "active"})
	})
	if st := mifsecGatewayStatusOn(t, gwTUN); strings.Contains(st.Listen, g2) {
		t.Errorf("the gateway still listens on the drained %s (%s)", g2, st.Listen)
	}
	writeDrain("")
	g.cmd.Process.Signal(syscall.SIGHUP)
	if !testenv.Eventually(10*time.Second, func() bool { return maps.Equal(gatewayPairs(mustStatus(t, c)), both) }) {
		t.Fatalf("the address is not back in use within 10s: %v\nclient:\n%s\ngateway:\n%s", gatewayPairs(mustStatus(t, c)),
			tail(c.log.String(), 5000), tail(g.log.String(), 5000))
	}
	testenv.WaitUntil(t, 10*time.Second, "the gateway to schedule both paths again", func() bool { return gatewayActivePaths(t, gwTUN) == 2 })

	// The address the IKE SA uses drained: IKE follows the traffic to the
	// other, as when that address goes away.
	go func() { pings <- flood(cl, "10.1.0.1", 3000, 100) }()
	time.Sleep(time.Second)
	writeDrain(g1)
	g.cmd.Process.Signal(syscall.SIGHUP)
	r = <-pings
	lost = 3000 - r.received
	t.Logf("%s, the IKE SA's, drained under 1000 pings/s: %d of 3000 lost, longest gap between replies %v", g1, lost, r.longestGap.Round(time.Millisecond))
	if lost > 30 || r.longestGap > time.Second {
		t.Errorf("%d of 3000 pings lost, a gap of %v, when the IKE SA's address was drained:\n%s", lost, r.longestGap, tail(r.out, 2000))
	}
	testenv.WaitUntil(t, 10*time.Second, "the IKE SA on the other address", func() bool {
		gst := mifsecGatewayStatusOn(t, gwTUN)
		return len(gst.Clients) == 1 && gst.Clients[0].Local == g2
	})
	if after := mustStatus(t, c); after.Session.IKESPIi != spiI || after.Session.Reconnects != 0 {
		t.Errorf("IKE SA %s (reconnects %d), want %s throughout", after.Session.IKESPIi, after.Session.Reconnects, spiI)
	}
}
