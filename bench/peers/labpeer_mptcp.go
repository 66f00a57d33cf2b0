package peers

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/scenarios"
)

// mptcpLabPeer is Linux's multipath TCP with no tunnel: the scenario's TCP
// flows run as MPTCP connections from the client straight to the protected
// server (the gateway only routes), and the client's kernel opens a subflow
// over every uplink. It answers the question a user asks first: how does
// mifsec compare with the best multipath transport there is?
type mptcpLabPeer struct {
	endpoints []string
}

// mptcpLimit is the client's and the server's limit of subflows and of
// accepted addresses per connection.
const mptcpLimit = "8"

func (p *mptcpLabPeer) Name() string            { return "mptcp" }
func (p *mptcpLabPeer) ClientAddr() netip.Addr  { return netip.Addr{} }
func (p *mptcpLabPeer) TunnelInterface() string { return "" }
func (p *mptcpLabPeer) Teardown() error         { return nil }

// MultipathTCP makes the lab open the TCP flows as MPTCP sockets, with no
// tunnel.
func (p *mptcpLabPeer) MultipathTCP() bool { return true }

func (p *mptcpLabPeer) Version() string {
	return "Linux " + labnet.KernelRelease() + " MPTCP, in-kernel path manager"
}

func (p *mptcpLabPeer) Prepare(ctx context.Context) error {
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		return skipf("this kernel has no MPTCP (/proc/sys/net/mptcp/enabled: %v)", err)
	}
	return nil
}

func (p *mptcpLabPeer) Behaviour(sc *scenarios.Scenario) string {
	return fmt.Sprintf("Linux MPTCP, no tunnel: the TCP flows are MPTCP connections from the client to the protected server; "+
		"the client announces a subflow endpoint on each uplink (%s), so every connection opens a subflow over each and the "+
		"kernel's scheduler spreads the data; the probe stream is plain UDP and follows the client's default route",
		strings.Join(p.uplinks(sc), ", "))
}

// uplinks are the interfaces MPTCP may use: the scenario's multipath
// interfaces, else every uplink.
func (p *mptcpLabPeer) uplinks(sc *scenarios.Scenario) []string {
	if len(sc.Client.Interfaces) > 0 {
		return sc.Client.Interfaces
	}
	return sc.UplinkNames()
}

func (p *mptcpLabPeer) Setup(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario) error {
	if !slices.ContainsFunc(sc.Traffic, func(t scenarios.TrafficSpec) bool { return t.Kind == scenarios.TrafficTCP }) {
		return skipf("scenario %s has no tcp traffic, and MPTCP carries only TCP", sc.Name)
	}
	for _, ns := range []string{n.Client, n.Protected} {
		enabled, err := labnet.ReadSysctl(ns, "net.mptcp.enabled")
		if err != nil {
			return skipf("MPTCP in namespace %s: %v", ns, err)
		}
		if enabled != "1" {
			if err := labnet.WriteSysctls(ns, "net.mptcp.enabled=1"); err != nil {
				return skipf("net.mptcp.enabled is %s in namespace %s and cannot be set: %v", enabled, ns, err)
			}
		}
		if _, err := n.Run(ctx, ns, "ip", "mptcp", "limits", "set", "subflow", mptcpLimit, "add_addr_accepted", mptcpLimit); err != nil {
			return skipf("MPTCP limits (ip mptcp needs iproute2 5.8 or later): %v", err)
		}
	}
	p.endpoints = nil
	for _, name := range p.uplinks(sc) {
		u := n.Uplink(name)
		if u == nil {
			return fmt.Errorf("mptcp: no uplink %s", name)
		}
		addr := u.ClientAddr.Addr().String()
		// A subflow endpoint bound to its interface: the kernel opens a
		// subflow from it to the server for every connection, routed out
		// of this uplink whatever the default route.
		if _, err := n.Run(ctx, n.Client, "ip", "mptcp", "endpoint", "add", addr, "dev", name, "subflow"); err != nil {
			return fmt.Errorf("mptcp endpoint on %s: %w", name, err)
		}
		p.endpoints = append(p.endpoints, addr+" dev "+name)
	}
	return waitForLabPing(ctx, n, netip.Addr{})
}

// TunnelState lists the subflow endpoints.
func (p *mptcpLabPeer) TunnelState() string {
	return "subflow endpoints " + strings.Join(p.endpoints, ", ")
}

var _ LabPeer = (*mptcpLabPeer)(nil)
