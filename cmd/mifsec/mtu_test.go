package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mifsec/mifsec/internal/testenv"
	"golang.org/x/sys/unix"
)

// routedGatewayTopology puts a router between a client and a mifsec
// gateway: client 192.0.2.1/24 — 192.0.2.254 router 198.51.100.254 —
// 198.51.100.2/24 gateway, whose link to the router has the given MTU on
// both ends. Packets larger than that are the router's to refuse: with DF
// it answers ICMP fragmentation needed, as a real narrow path does.
func routedGatewayTopology(t *testing.T, mtu int, icmp bool, args ...string) (client, gw string, g *mifsecProcess) {
	t.Helper()
	testenv.RequireCommand(t, "ping")
	client, router := testenv.NewNamedNetns(t, "cl"), testenv.NewNamedNetns(t, "rt")
	gw = testenv.NewNamedNetns(t, "gw")
	testenv.Veth(t, client, router, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.254/24"))
	routerEnd, gwEnd := testenv.Veth(t, router, gw, netip.MustParsePrefix("198.51.100.254/24"), netip.MustParsePrefix("198.51.100.2/24"))
	testenv.Exec(t, router, "ip", "link", "set", routerEnd, "mtu", fmt.Sprint(mtu))
	testenv.Exec(t, gw, "ip", "link", "set", gwEnd, "mtu", fmt.Sprint(mtu))
	testenv.Exec(t, router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	testenv.Exec(t, client, "ip", "route", "add", "default", "via", "192.0.2.254")
	testenv.Exec(t, gw, "ip", "route", "add", "default", "via", "198.51.100.254")
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	if !icmp {
		dropICMPFrom(t, router)
	}
	return client, gw, startMifsecGateway(t, gw, "198.51.100.2", args...)
}

// dropICMPFrom makes ns send no ICMP at all, as a router behind a firewall
// that filters it: a path MTU smaller than a packet with DF is then a black
// hole.
func dropICMPFrom(t *testing.T, ns string) {
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "noicmp"}
	testenv.InNamedNetns(t, ns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		c.AddTable(table)
		out := c.AddChain(&nftables.Chain{Name: "out", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: table, Chain: out, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		if err := c.Flush(); err != nil {
			t.Fatalf("filtering ICMP in %s: %v", ns, err)
		}
	})
}

// TestConnectNarrowOuterPath (issue 18, acceptance 4): the client and the
// gateway each assume a 1500-byte outer path, but a router between them
// forwards at most 1280 bytes. TCP flows through the tunnel complete in
// both directions, with no black hole.
func TestConnectNarrowOuterPath(t *testing.T) {
	testenv.RequireCommand(t, "iperf3")
	for _, tc := range []struct {
		name string
		icmp bool
	}{{"ICMP passes", true}, {"ICMP filtered", false}} {
		t.Run(tc.name, func(t *testing.T) {
			const psk = "a narrow path secret"
			client, gw, g := routedGatewayTopology(t, 1280, tc.icmp, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk))
			c := startConnect(t, client, "mmtu0", "--gateway", "198.51.100.2", "--local-id", "client.example",
				"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false")
			c.waitEstablished(t, 10*time.Second)
			testenv.StartIperf3Server(t, gw, "10.1.0.1", false)
			for _, dir := range []struct {
				name string
				args []string
			}{{"upload", nil}, {"download", []string{"-R"}}} {
				args := append([]string{"netns", "exec", client, "timeout", "30", "iperf3", "-c", "10.1.0.1", "-t", "3", "-J"}, dir.args...)
				out, err := exec.Command("ip", args...).Output()
				var res struct {
					End struct {
						SumReceived struct {
							Bytes   float64 `json:"bytes"`
							Seconds float64 `json:"seconds"`
						} `json:"sum_received"`
					} `json:"end"`
					Error string `json:"error"`
				}
				json.Unmarshal(out, &res)
				if err != nil || res.Error != "" || res.End.SumReceived.Bytes < 5e6 {
					t.Fatalf("%s: a TCP flow over a 1280-byte outer path did not get through: %v %s (received %.0f bytes)\nclient:\n%s\ngateway:\n%s",
						dir.name, err, res.Error, res.End.SumReceived.Bytes, c.log.String(), g.log.String())
				}
				t.Logf("%s: %.0f Mbit/s for %.1f s", dir.name, res.End.SumReceived.Bytes*8/res.End.SumReceived.Seconds/1e6,
					res.End.SumReceived.Seconds)
			}
			c.stop(t)
			g.stop(t)
		})
	}
}
