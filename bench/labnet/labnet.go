package labnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mifsec/mifsec/bench/linkemu"
	"github.com/mifsec/mifsec/bench/scenarios"
)

// LabNet is the topology of a scenario, one network namespace per host:
//
//	client ── wlan0 ─[link ns: emulator]─ up0 ──┐
//	       └─ wwan0 ─[link ns: emulator]─ up1 ──┴─ gateway ── lan0 ─── protected (iperf3 server)
//
// Every uplink has its own transit subnet 10.(100+i).0.0/24 with the
// gateway at .1, so the gateway has one address per uplink; any of them is
// reachable through any uplink (the gateway forwards between them). An
// uplink with NAT (or Router) gets a router namespace between its link and
// the gateway for the client's private subnet 192.168.(100+i).0/24, which
// NAT masquerades and a plain router routes (the gateway has a route to
// it). The
// client's default routes go through every uplink, the lowest metric
// preferred, like a laptop's. The emulator of each uplink bridges two veth
// ends inside its own namespace, so the client sees an ordinary interface.
//
// A scenario with gateway uplinks (a multihomed gateway) puts an ISP
// router between the two hosts instead, and gives the gateway one address
// per uplink of its own, each behind its own emulated link:
//
//	client ── eth0 ─[link0: emulator]─ up0 ── isp ─ gw0 ─[glink0: emulator]─ isp0 ── gateway ── lan0 ─── protected
//	                                               └ gw1 ─[glink1: emulator]─ isp1 ──┘
//
// The client's uplink j has the transit subnet 10.(100+j).0.0/24 with the
// ISP router at .1; the gateway's uplink k has 10.(120+k).0.0/24 with the
// gateway at .1 (its address on that uplink) and the ISP router at .2.
// The gateway's default route goes through its first uplink, and what it
// sends from its address on another leaves through that one (a routing
// rule per source address, as a multihomed host routes). The ISP router
// reaches the protected network through the gateway's first uplink (the
// route a tunnel-less peer, MPTCP, takes).
type LabNet struct {
	Lab                        *Lab
	Client, Gateway, Protected string
	// ISP is the router between the hosts when the gateway has uplinks of
	// its own, else "".
	ISP string
	// Uplinks are the client's uplinks, then the gateway's
	// (Scenario.links).
	Uplinks []*LabUplink
	// Dir is a private temporary directory for configuration files.
	Dir string
}

// LabUplink is one uplink of the client and its emulated link.
type LabUplink struct {
	Spec scenarios.UplinkSpec
	// LinkNS runs the emulator between interfaces "a" (client side) and
	// "emu-b" (gateway side); RouterNS is the router between the link and
	// the gateway (with NAT or Router), when there is one.
	LinkNS, RouterNS string
	// ClientAddr is the address on the client's interface, NextHop its
	// default route's gateway, GatewayAddr the gateway's address on this
	// uplink's transit subnet.
	ClientAddr  netip.Prefix
	NextHop     netip.Addr
	GatewayAddr netip.Addr
	// GatewayIface is the gateway's interface towards this uplink.
	GatewayIface string
	// OfGateway: an uplink of the gateway's (its interface GatewayIface,
	// its address GatewayAddr, the emulator's "a" side on the ISP router).
	OfGateway bool

	mu   sync.Mutex
	link *linkemu.Link
	// pinned: the route to GatewayAddr goes through this uplink.
	pinned bool
}

// Protected network behind the gateway; the iperf3 server and the probe
// receiver run at labServerAddr.
var (
	LabProtectedNet = netip.MustParsePrefix("10.210.0.0/24")
	labGatewayLAN   = netip.MustParseAddr("10.210.0.1")
	LabServerAddr   = netip.MustParseAddr("10.210.0.2")
)

// Link interface names inside a link namespace.
const (
	linkIfA = "emu-a" // towards the client
	linkIfB = "emu-b" // towards the gateway (or the NAT router)
)

// NewLabNet builds the topology of the scenario's uplinks; label names its
// namespaces (<prefix><owner>-<label>-client, -gw, -net, -link0, ...).
func (l *Lab) NewLabNet(ctx context.Context, label string, sc *scenarios.Scenario) (*LabNet, error) {
	n := &LabNet{Lab: l}
	if err := n.build(ctx, label, sc.Uplinks, sc.GatewayUplinks); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

func (n *LabNet) build(ctx context.Context, label string, uplinks, gatewayUplinks []scenarios.UplinkSpec) error {
	for _, u := range append(slices.Clone(uplinks), gatewayUplinks...) {
		if _, err := exec.LookPath("nft"); err != nil && u.NAT {
			return fmt.Errorf("uplink %s has nat: nft not found: apt-get install nftables", u.Name)
		}
		if _, err := exec.LookPath("tc"); err != nil && u.TBF != nil {
			return fmt.Errorf("uplink %s has tbf: tc not found: apt-get install iproute2", u.Name)
		}
	}
	l := n.Lab
	var err error
	if n.Dir, err = os.MkdirTemp(l.dir, label+"-"); err != nil {
		return fmt.Errorf("create the topology's directory: %w", err)
	}
	if n.Client, err = l.AddNamespace(ctx, label+"-client"); err != nil {
		return err
	}
	if n.Gateway, err = l.AddNamespace(ctx, label+"-gw"); err != nil {
		return err
	}
	if n.Protected, err = l.AddNamespace(ctx, label+"-net"); err != nil {
		return err
	}
	// The IPv6 link-local chatter (router solicitations, DAD) of the lab's
	// interfaces would cross the emulated links as noise.
	for _, ns := range []string{n.Client, n.Gateway, n.Protected} {
		if err := n.sysctls(ctx, ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return err
		}
	}
	if err := n.sysctls(ctx, n.Gateway, "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := n.veth(ctx, n.Gateway, "lan0", n.Protected, "eth0"); err != nil {
		return err
	}
	if err := n.address(ctx, n.Gateway, "lan0", netip.PrefixFrom(labGatewayLAN, 24)); err != nil {
		return err
	}
	if err := n.address(ctx, n.Protected, "eth0", netip.PrefixFrom(LabServerAddr, 24)); err != nil {
		return err
	}
	if _, err := RunCommand(ctx, "ip", "-n", n.Protected, "route", "add", "default", "via", labGatewayLAN.String()); err != nil {
		return fmt.Errorf("protected network: %w", err)
	}
	// The gateway's uplinks are built first (the client's talk to the
	// first one's address) and listed after the client's, also when the
	// build fails, so that Close finds them.
	var gws []*LabUplink
	defer func() { n.Uplinks = append(n.Uplinks, gws...) }()
	var primary netip.Addr
	if len(gatewayUplinks) > 0 {
		// The gateway's uplinks first: the client's reach its address.
		if n.ISP, err = l.AddNamespace(ctx, label+"-isp"); err != nil {
			return err
		}
		if err := n.sysctls(ctx, n.ISP, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return err
		}
		for k, spec := range gatewayUplinks {
			u, err := n.buildGatewayUplink(ctx, label, k, spec)
			if u != nil {
				gws = append(gws, u)
			}
			if err != nil {
				return fmt.Errorf("gateway uplink %s: %w", spec.Name, err)
			}
		}
		primary = gws[0].GatewayAddr
		if _, err := RunCommand(ctx, "ip", "-n", n.ISP, "route", "add", LabProtectedNet.String(), "via", primary.String()); err != nil {
			return fmt.Errorf("ISP router: route to the protected network: %w", err)
		}
	}
	for i, spec := range uplinks {
		u, err := n.buildUplink(ctx, label, i, spec, primary)
		if u != nil {
			n.Uplinks = append(n.Uplinks, u)
		}
		if err != nil {
			return fmt.Errorf("uplink %s: %w", spec.Name, err)
		}
	}
	return nil
}

func (n *LabNet) buildUplink(ctx context.Context, label string, i int, spec scenarios.UplinkSpec, primary netip.Addr) (*LabUplink, error) {
	l := n.Lab
	u := &LabUplink{Spec: spec, GatewayIface: "up" + strconv.Itoa(i)}
	transit := func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(100 + i), 0, host}) }
	u.GatewayAddr = transit(1)
	// far is the host at the uplink's end: the gateway, or the ISP router
	// in front of a multihomed gateway (whose primary address the client
	// then talks to).
	far := n.Gateway
	if n.ISP != "" {
		far = n.ISP
	}
	var err error
	if u.LinkNS, err = l.AddNamespace(ctx, fmt.Sprintf("%s-link%d", label, i)); err != nil {
		return u, err
	}
	if err := n.sysctls(ctx, u.LinkNS, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return u, err
	}
	if err := n.veth(ctx, n.Client, spec.Name, u.LinkNS, linkIfA); err != nil {
		return u, err
	}
	if spec.NAT || spec.Router {
		kind := "rt"
		if spec.NAT {
			kind = "nat"
		}
		if u.RouterNS, err = l.AddNamespace(ctx, fmt.Sprintf("%s-%s%d", label, kind, i)); err != nil {
			return u, err
		}
		if err := n.sysctls(ctx, u.RouterNS, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return u, err
		}
		if err := n.veth(ctx, u.LinkNS, linkIfB, u.RouterNS, "lan"); err != nil {
			return u, err
		}
		private := func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, byte(100 + i), host}) }
		u.ClientAddr, u.NextHop = netip.PrefixFrom(private(2), 24), private(1)
		if err := n.address(ctx, u.RouterNS, "lan", netip.PrefixFrom(private(1), 24)); err != nil {
			return u, err
		}
		if err := n.veth(ctx, u.RouterNS, "wan", far, u.GatewayIface); err != nil {
			return u, err
		}
		if err := n.address(ctx, u.RouterNS, "wan", netip.PrefixFrom(transit(2), 24)); err != nil {
			return u, err
		}
		if _, err := RunCommand(ctx, "ip", "-n", u.RouterNS, "route", "add", "default", "via", u.GatewayAddr.String()); err != nil {
			return u, fmt.Errorf("router: %w", err)
		}
		if spec.NAT {
			rules := "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"wan\" masquerade\n }\n}\n"
			if _, err := runCommandStdin(ctx, rules, "ip", "netns", "exec", u.RouterNS, "nft", "-f", "-"); err != nil {
				return u, fmt.Errorf("NAT router: %w", err)
			}
		}
	} else {
		if err := n.veth(ctx, u.LinkNS, linkIfB, far, u.GatewayIface); err != nil {
			return u, err
		}
		u.ClientAddr, u.NextHop = netip.PrefixFrom(transit(2), 24), u.GatewayAddr
	}
	if err := n.address(ctx, far, u.GatewayIface, netip.PrefixFrom(u.GatewayAddr, 24)); err != nil {
		return u, err
	}
	if n.ISP != "" {
		u.GatewayAddr = primary
	}
	if u.RouterNS != "" && !spec.NAT {
		// A plain router: the gateway (or the ISP) reaches the client's
		// subnet through it.
		if _, err := RunCommand(ctx, "ip", "-n", far, "route", "add", u.ClientAddr.Masked().String(), "via", transit(2).String()); err != nil {
			return u, fmt.Errorf("route to the client's subnet: %w", err)
		}
	}
	if err := n.address(ctx, n.Client, spec.Name, u.ClientAddr); err != nil {
		return u, err
	}
	for _, iface := range []string{linkIfA, linkIfB} {
		if _, err := RunCommand(ctx, "ip", "-n", u.LinkNS, "link", "set", iface, "up"); err != nil {
			return u, fmt.Errorf("link namespace: %w", err)
		}
	}
	if err := u.addDefaultRoute(ctx, n.Client); err != nil {
		return u, err
	}
	if spec.TBF != nil {
		// On the router when there is one, a box between the hosts as an
		// ISP's shaper is; else on the two hosts' own interfaces, where the
		// sending host's TCP stack feels the queue directly (TCP small
		// queues) while a tunnel's UDP does not.
		ends := []linkEnd{{n.Client, spec.Name}, {far, u.GatewayIface}}
		if u.RouterNS != "" {
			ends = []linkEnd{{u.RouterNS, "wan"}, {u.RouterNS, "lan"}}
		}
		return u, u.shapeAndStart(ctx, ends)
	}
	return u, u.shapeAndStart(ctx, nil)
}

// linkEnd is an interface in a namespace.
type linkEnd struct{ ns, dev string }

// shapeAndStart puts the uplink's token bucket shaper (if any) on ends
// and starts its emulator.
func (u *LabUplink) shapeAndStart(ctx context.Context, ends []linkEnd) error {
	if u.Spec.TBF != nil {
		for _, end := range ends {
			args := append([]string{"-n", end.ns, "qdisc", "replace", "dev", end.dev, "root"}, u.Spec.TBF.TCArgs()...)
			if _, err := RunCommand(ctx, "tc", args...); err != nil {
				return fmt.Errorf("token bucket shaper: %w", err)
			}
		}
	}
	link, err := linkemu.Start(u.LinkNS, linkIfA, linkIfB, u.Spec.Shapes())
	if err != nil {
		return fmt.Errorf("start the link emulator: %w", err)
	}
	u.mu.Lock()
	u.link = link
	u.mu.Unlock()
	return nil
}

// buildGatewayUplink builds the gateway's uplink k: its interface
// spec.Name with the address 10.(120+k).0.1/24, an emulated link (its "a"
// side on the ISP router, so that up is towards the gateway as on the
// client's uplinks) and the ISP router's end at .2.
func (n *LabNet) buildGatewayUplink(ctx context.Context, label string, k int, spec scenarios.UplinkSpec) (*LabUplink, error) {
	transit := func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(120 + k), 0, host}) }
	u := &LabUplink{Spec: spec, GatewayIface: spec.Name, GatewayAddr: transit(1), NextHop: transit(2), OfGateway: true}
	var err error
	if u.LinkNS, err = n.Lab.AddNamespace(ctx, fmt.Sprintf("%s-glink%d", label, k)); err != nil {
		return u, err
	}
	if err := n.sysctls(ctx, u.LinkNS, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return u, err
	}
	ispIface := "gw" + strconv.Itoa(k)
	if err := n.veth(ctx, n.ISP, ispIface, u.LinkNS, linkIfA); err != nil {
		return u, err
	}
	if err := n.veth(ctx, u.LinkNS, linkIfB, n.Gateway, u.GatewayIface); err != nil {
		return u, err
	}
	if err := n.address(ctx, n.ISP, ispIface, netip.PrefixFrom(transit(2), 24)); err != nil {
		return u, err
	}
	if err := n.address(ctx, n.Gateway, u.GatewayIface, netip.PrefixFrom(u.GatewayAddr, 24)); err != nil {
		return u, err
	}
	for _, iface := range []string{linkIfA, linkIfB} {
		if _, err := RunCommand(ctx, "ip", "-n", u.LinkNS, "link", "set", iface, "up"); err != nil {
			return u, fmt.Errorf("link namespace: %w", err)
		}
	}
	table := strconv.Itoa(100 + k)
	if _, err := RunCommand(ctx, "ip", "-n", n.Gateway, "rule", "add", "from", u.GatewayAddr.String(), "table", table); err != nil {
		return u, fmt.Errorf("routing rule for %s: %w", u.GatewayAddr, err)
	}
	if err := n.gatewayRoutes(ctx, u, k); err != nil {
		return u, err
	}
	return u, u.shapeAndStart(ctx, []linkEnd{{n.ISP, ispIface}, {n.Gateway, u.GatewayIface}})
}

// gatewayRoutes (re)installs the routes of the gateway's uplink u (its
// k-th): what leaves from its address goes through it, and the first one
// carries the gateway's default route. The kernel removes them when the
// interface goes down.
func (n *LabNet) gatewayRoutes(ctx context.Context, u *LabUplink, k int) error {
	if _, err := RunCommand(ctx, "ip", "-n", n.Gateway, "route", "replace", "default", "via", u.NextHop.String(),
		"dev", u.GatewayIface, "table", strconv.Itoa(100+k)); err != nil {
		return fmt.Errorf("route of the gateway's uplink %s: %w", u.Spec.Name, err)
	}
	if k == 0 {
		if _, err := RunCommand(ctx, "ip", "-n", n.Gateway, "route", "replace", "default", "via", u.NextHop.String(), "dev", u.GatewayIface); err != nil {
			return fmt.Errorf("the gateway's default route: %w", err)
		}
	}
	return nil
}

// addDefaultRoute (re)installs the client's default route through the
// uplink with its metric; the kernel removes it when the interface goes
// down.
func (u *LabUplink) addDefaultRoute(ctx context.Context, clientNS string) error {
	if _, err := RunCommand(ctx, "ip", "-n", clientNS, "route", "replace", "default", "via", u.NextHop.String(),
		"dev", u.Spec.Name, "metric", strconv.Itoa(u.Spec.Metric)); err != nil {
		return fmt.Errorf("default route through %s: %w", u.Spec.Name, err)
	}
	return nil
}

// PinGateway routes the gateway's address on uplink u through u (a host
// route), so that tunnels which leave the choice of interface to the
// routing table (wireguard-go, strongSwan) use it as long as it is up, like
// the ones that bind to it. The kernel drops the route when the interface
// goes down; a plug event puts it back.
func (n *LabNet) PinGateway(ctx context.Context, u *LabUplink) error {
	if _, err := RunCommand(ctx, "ip", "-n", n.Client, "route", "replace", netip.PrefixFrom(u.GatewayAddr, 32).String(),
		"via", u.NextHop.String(), "dev", u.Spec.Name); err != nil {
		return fmt.Errorf("route to the gateway through %s: %w", u.Spec.Name, err)
	}
	u.mu.Lock()
	u.pinned = true
	u.mu.Unlock()
	return nil
}

// Stats reads the emulator's counters; AtoB is up (client to gateway).
func (u *LabUplink) Stats() linkemu.Stats {
	u.mu.Lock()
	link := u.link
	u.mu.Unlock()
	if link == nil {
		return linkemu.Stats{}
	}
	return link.Stats()
}

// Config returns the emulator's current configuration.
func (u *LabUplink) Config() linkemu.Config {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.link == nil {
		return linkemu.Config{}
	}
	return u.link.Config()
}

// StartTraces restarts the capacity traces of every trace-driven link at
// at, the start of the scenario's timeline, so that every peer of a run
// meets the same seconds of the traces at the same point of its traffic,
// however long its setup took.
func (n *LabNet) StartTraces(at time.Time) {
	for _, u := range n.Uplinks {
		u.mu.Lock()
		if u.link != nil {
			u.link.RestartTraces(at)
		}
		u.mu.Unlock()
	}
}

// Apply carries out a scenario event on this uplink.
func (n *LabNet) Apply(ctx context.Context, u *LabUplink, e scenarios.EventSpec) error {
	switch {
	case u.OfGateway && (e.Action == scenarios.ActionUnplug || e.Action == scenarios.ActionPlug):
		state := map[string]string{scenarios.ActionUnplug: "down", scenarios.ActionPlug: "up"}[e.Action]
		if _, err := RunCommand(ctx, "ip", "-n", n.Gateway, "link", "set", u.GatewayIface, state); err != nil {
			return fmt.Errorf("%s the gateway's %s: %w", e.Action, u.Spec.Name, err)
		}
		if e.Action == scenarios.ActionPlug {
			return n.gatewayRoutes(ctx, u, slices.Index(n.Uplinks, u)-n.clientUplinks())
		}
		return nil
	case e.Action == scenarios.ActionUnplug:
		if _, err := RunCommand(ctx, "ip", "-n", n.Client, "link", "set", u.Spec.Name, "down"); err != nil {
			return fmt.Errorf("unplug %s: %w", u.Spec.Name, err)
		}
		return nil
	case e.Action == scenarios.ActionPlug:
		if _, err := RunCommand(ctx, "ip", "-n", n.Client, "link", "set", u.Spec.Name, "up"); err != nil {
			return fmt.Errorf("plug %s in: %w", u.Spec.Name, err)
		}
		if err := u.addDefaultRoute(ctx, n.Client); err != nil {
			return err
		}
		u.mu.Lock()
		pinned := u.pinned
		u.mu.Unlock()
		if pinned {
			return n.PinGateway(ctx, u)
		}
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.link == nil {
		return fmt.Errorf("uplink %s has no emulator", u.Spec.Name)
	}
	if err := u.link.Set(scenarios.ApplyEvent(u.link.Config(), e)); err != nil {
		return fmt.Errorf("%s: %w", e.Describe(), err)
	}
	return nil
}

// Close stops the emulators and deletes the namespaces.
func (n *LabNet) Close() error {
	var errs []error
	for _, u := range n.Uplinks {
		u.mu.Lock()
		link := u.link
		u.link = nil
		u.mu.Unlock()
		if link != nil {
			if err := link.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stop the emulator of %s: %w", u.Spec.Name, err))
			}
		}
	}
	var namespaces []string
	for _, u := range n.Uplinks {
		namespaces = append(namespaces, u.LinkNS, u.RouterNS)
	}
	namespaces = append(namespaces, n.Client, n.Gateway, n.Protected, n.ISP)
	for _, ns := range namespaces {
		if ns != "" {
			errs = append(errs, n.Lab.removeNamespace(ns))
		}
	}
	if n.Dir != "" {
		errs = append(errs, os.RemoveAll(n.Dir))
	}
	return errors.Join(errs...)
}

// Start runs a long-lived command inside namespace ns, tracked by the lab.
func (n *LabNet) Start(ns, name string, env []string, args ...string) (*Process, error) {
	return n.Lab.start(ns, name, env, args...)
}

// Run runs a command to completion inside namespace ns.
func (n *LabNet) Run(ctx context.Context, ns string, args ...string) (string, error) {
	return n.Lab.run(ctx, ns, args...)
}

// ProcessLogs returns the recent output of the lab's processes running in
// this topology's namespaces, by process name.
func (n *LabNet) ProcessLogs() map[string]string {
	mine := map[string]bool{n.Client: true, n.Gateway: true, n.Protected: true}
	n.Lab.mu.Lock()
	defer n.Lab.mu.Unlock()
	logs := map[string]string{}
	for _, p := range n.Lab.processes {
		if mine[p.namespace] {
			logs[p.Name()] = p.Output()
		}
	}
	return logs
}

// clientUplinks is how many of Uplinks are the client's.
func (n *LabNet) clientUplinks() int {
	return len(n.Uplinks) - len(n.GatewayUplinks())
}

// GatewayUplinks are the gateway's own uplinks (the last of Uplinks).
func (n *LabNet) GatewayUplinks() []*LabUplink {
	i := slices.IndexFunc(n.Uplinks, func(u *LabUplink) bool { return u.OfGateway })
	if i < 0 {
		return nil
	}
	return n.Uplinks[i:]
}

// Uplink returns the named uplink.
func (n *LabNet) Uplink(name string) *LabUplink {
	for _, u := range n.Uplinks {
		if u.Spec.Name == name {
			return u
		}
	}
	return nil
}

func (n *LabNet) veth(ctx context.Context, nsA, ifA, nsB, ifB string) error {
	if _, err := RunCommand(ctx, "ip", "link", "add", "name", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB); err != nil {
		return fmt.Errorf("create veth pair %s/%s: %w", ifA, ifB, err)
	}
	return nil
}

func (n *LabNet) address(ctx context.Context, ns, iface string, p netip.Prefix) error {
	if _, err := RunCommand(ctx, "ip", "-n", ns, "addr", "add", p.String(), "dev", iface); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	if _, err := RunCommand(ctx, "ip", "-n", ns, "link", "set", iface, "up"); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return nil
}

func (n *LabNet) sysctls(ctx context.Context, ns string, settings ...string) error {
	if err := WriteSysctls(ns, settings...); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return nil
}

// WriteSysctls sets KEY=VALUE settings (net.ipv4.ip_forward=1) inside
// namespace ns by writing /proc/sys, which shows the namespace of the
// thread that opens it.
func WriteSysctls(ns string, settings ...string) error {
	return InNamespace(ns, func() error {
		for _, setting := range settings {
			key, value, ok := strings.Cut(setting, "=")
			if !ok {
				return fmt.Errorf("sysctl setting %q has no =", setting)
			}
			path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
			if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
				return fmt.Errorf("set %s: %w", key, err)
			}
		}
		return nil
	})
}

// ReadSysctl reads a setting (net.mptcp.enabled) inside namespace ns.
func ReadSysctl(ns, key string) (string, error) {
	var value string
	err := InNamespace(ns, func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		value = strings.TrimSpace(string(b))
		return err
	})
	return value, err
}

// runCommandStdin is RunCommand with input on stdin.
func runCommandStdin(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = ownGroup()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
