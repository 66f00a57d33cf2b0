package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/scenarios"
	"github.com/mifsec/mifsec/internal/strongswan/charon"
	"github.com/mifsec/mifsec/mif"
)

// LabPeer is a tunnel measured in a scenario: a client in the client
// namespace, its gateway in the gateway namespace, carrying the traffic to
// the protected network.
type LabPeer interface {
	Lifecycle
	// Setup brings the tunnel up over the scenario's client interface and
	// returns once the protected server answers pings through it.
	Setup(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario) error
	// ClientAddr is the source address for traffic into the tunnel; the
	// zero Addr lets the kernel choose.
	ClientAddr() netip.Addr
	// TunnelInterface is the client's tunnel device.
	TunnelInterface() string
	// Behaviour says how the peer uses the uplinks, for the report.
	Behaviour(sc *scenarios.Scenario) string
}

func NewLabPeer(name string, opts PeerOptions) (LabPeer, error) {
	if uplink, ok := strings.CutPrefix(name, scenarios.SingleLinkPrefix); ok && uplink != "" {
		return &mifsecLabPeer{mifsecIKEPeer: mifsecIKEPeer{binary: opts.MifsecPath}, only: uplink, logLevel: opts.LogLevel}, nil
	}
	switch name {
	case "mifsec":
		return &mifsecLabPeer{mifsecIKEPeer: mifsecIKEPeer{binary: opts.MifsecPath}, logLevel: opts.LogLevel}, nil
	case "wireguard-go":
		return &wireguardLabPeer{wireguardPeer: wireguardPeer{binary: opts.WireguardGoPath, cacheDir: opts.CacheDir}}, nil
	case "strongswan":
		return &strongswanLabPeer{}, nil
	case "mptcp":
		return &mptcpLabPeer{}, nil
	}
	return nil, fmt.Errorf("unknown peer %q (known: %v)", name, scenarios.LabPeerNames)
}

// mifsecLabPeer is `mifsec gateway` in the gateway namespace and `mifsec
// connect` in the client namespace, bound to the scenario's client
// interface.
type mifsecLabPeer struct {
	mifsecIKEPeer
	args       []string
	startAddrs []string
	only       string // a single-link baseline: bound to this uplink alone
	logLevel   string // --log-level of its processes, "" for their default
}

// command is the mifsec command line of sub (gateway, connect) with the
// run's log level.
func (p *mifsecLabPeer) command(sub string, args ...string) []string {
	cmd := []string{p.binary}
	if p.logLevel != "" {
		cmd = append(cmd, "--log-level", p.logLevel)
	}
	return append(append(cmd, sub), args...)
}

// orderSummary is a resequencer's counters (mif.OrderStatus in `mifsec
// status --json`) in one line of the lab's summary.
func orderSummary(o *mif.OrderStatus) string {
	total := o.InOrder + o.Released + o.Late
	if total == 0 {
		return "no packets"
	}
	return fmt.Sprintf("%d packets, %d held until their gap filled, %d delivered out of order (%.2f%%, %d of them reordered on their path); gaps given up: %d on time, %d inferred lost",
		total, o.Released, o.Late, 100*float64(o.Late)/float64(total), o.Reordered, o.Timeouts, o.LostEarly)
}

// readStatus reads the status of the instance with TUN device tunName from
// its control socket into v (mif.Status or mif.GatewayStatus).
func readStatus(tunName string, v any) error {
	raw, err := mif.ReadStatus(mif.ControlSocket(tunName))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// clientStatus reads `mifsec connect`'s status from its control socket
// (which answers every connection with its status as JSON).
func (p *mifsecLabPeer) clientStatus() (mif.Status, error) {
	var st mif.Status
	if err := readStatus(p.clientTUN, &st); err != nil {
		return st, fmt.Errorf("the client's status: %w", err)
	}
	return st, nil
}

// TunnelState says how often the client reconnected and whether its inner
// address changed (which ends the flows that used the old one).
func (p *mifsecLabPeer) TunnelState() string {
	st, err := p.clientStatus()
	if err != nil {
		return "status not available: " + err.Error()
	}
	s := st.Session
	times := "times"
	if s.Reconnects == 1 {
		times = "time"
	}
	text := fmt.Sprintf("%s; reconnected %d %s; inner address %s", s.State, s.Reconnects, times, strings.Join(s.Addresses, ", "))
	if !slices.Equal(s.Addresses, p.startAddrs) && len(p.startAddrs) > 0 {
		text += fmt.Sprintf(" (%s at the start: the gateway leased a new address on reconnecting, so flows from the old one are not carried any more)",
			strings.Join(p.startAddrs, ", "))
	}
	// The resequencers, where the multipath policy restores order: the
	// gateway's orders what came up, the client's what came down.
	var gw mif.GatewayStatus
	gwErr := readStatus(p.serverTUN, &gw)
	if gwErr == nil && len(gw.Clients) == 1 && gw.Clients[0].Order != nil {
		text += "; order restored at the gateway (up): " + orderSummary(gw.Clients[0].Order)
	}
	if st.Order != nil {
		text += "; at the client (down): " + orderSummary(st.Order)
	}
	if byGateway := gatewayReinjected(&gw); st.Reinjected+byGateway > 0 {
		text += fmt.Sprintf("; reinjected after a path failed: %d datagrams by the client, %d by the gateway", st.Reinjected, byGateway)
	}
	// What each end's data plane dropped (dropSnapshot): copies of what
	// arrived anyway are "replayed"; "too-old" ones came beyond the
	// replay window and were lost.
	if len(gw.Drops)+len(st.Drops) > 0 {
		atGateway := dropsSummary(gw.Drops)
		if gwErr != nil {
			atGateway = "not available"
		}
		text += fmt.Sprintf("; the data plane dropped: at the gateway %s, at the client %s", atGateway, dropsSummary(st.Drops))
	}
	return text
}

// dropsSummary lists drop counters by reason, in the order of their names.
func dropsSummary(drops map[string]uint64) string {
	if len(drops) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(drops))
	for _, reason := range slices.Sorted(maps.Keys(drops)) {
		parts = append(parts, fmt.Sprintf("%d %s", drops[reason], reason))
	}
	return strings.Join(parts, ", ")
}

// gatewayReinjected is what the gateway reinjected to its (only) client.
func gatewayReinjected(gw *mif.GatewayStatus) uint64 {
	if len(gw.Clients) != 1 {
		return 0
	}
	return gw.Clients[0].Reinjected
}

func (p *mifsecLabPeer) Name() string {
	if p.only != "" {
		return scenarios.SingleLinkPrefix + p.only
	}
	return "mifsec"
}
func (p *mifsecLabPeer) ClientAddr() netip.Addr  { return netip.Addr{} }
func (p *mifsecLabPeer) TunnelInterface() string { return p.clientTUN }

func (p *mifsecLabPeer) Behaviour(sc *scenarios.Scenario) string {
	if p.only != "" && !sc.IsClientUplink(p.only) {
		return fmt.Sprintf("`mifsec gateway --listen` on its %s address alone: a single-link baseline for the multipath run", p.only)
	}
	if p.only != "" {
		return fmt.Sprintf("`mifsec connect --interface %s`: bound to %s alone, a single-link baseline for the multipath run", p.only, p.only)
	}
	if len(sc.Client.Interfaces) > 0 {
		policy := sc.Client.Policy
		if policy == "" {
			policy = "the default policy"
		} else {
			policy = "policy " + policy
		}
		return fmt.Sprintf("`mifsec connect --interfaces %s`: one path per uplink, probed; %s decides which carry the traffic, and the IKE SA moves (MOBIKE) when its own uplink fails",
			strings.Join(sc.Client.Interfaces, ","), policy)
	}
	b := fmt.Sprintf("`mifsec connect --interface %s`: one path, bound to %s; a failure of that link is noticed by dead-peer detection", sc.Client.Interface, sc.Client.Interface)
	if sc.Client.DPD != 0 {
		b += fmt.Sprintf(" (--dpd %s", sc.Client.DPD)
		if sc.Client.Retransmit != 0 {
			b += fmt.Sprintf(", --retransmit %s", sc.Client.Retransmit)
		}
		if sc.Client.RetransmitTries != 0 {
			b += fmt.Sprintf(", --retransmit-tries %d", sc.Client.RetransmitTries)
		}
		b += ", shorter than the defaults"
		b += ")"
	}
	return b + ", then it reconnects through the same interface until that link carries traffic again"
}

func (p *mifsecLabPeer) Setup(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario) error {
	// The control sockets (/run/mifsec/<tun>.sock) are shared by every
	// namespace: the names carry the lab's PID.
	p.clientTUN = fmt.Sprintf("mlb%dc", n.Lab.Owner())
	p.serverTUN = fmt.Sprintf("mlb%ds", n.Lab.Owner())
	psk, err := labnet.RandomHex(32)
	if err != nil {
		return err
	}
	pskFile := filepath.Join(n.Dir, "mifsec.psk")
	if err := os.WriteFile(pskFile, []byte(psk+"\n"), 0o600); err != nil {
		return fmt.Errorf("write the PSK: %w", err)
	}
	// Every address of the gateway's own uplinks is named, so that it
	// announces them to the client (the wildcard's are not announced); a
	// single-link baseline gets one: its gateway uplink's, or the first.
	listen := "0.0.0.0"
	only := n.Uplink(p.only)
	switch gws := n.GatewayUplinks(); {
	case only != nil && only.OfGateway:
		listen = only.GatewayAddr.String()
	case only != nil && len(gws) > 0:
		listen = gws[0].GatewayAddr.String()
	case len(gws) > 0:
		var addrs []string
		for _, u := range gws {
			addrs = append(addrs, u.GatewayAddr.String())
		}
		listen = strings.Join(addrs, ",")
	}
	gwArgs := p.command("gateway",
		"--listen", listen, "--local-id", mifsecIKEServerID, "--psk-file", pskFile,
		"--pool", mifsecIKEPool, "--local-ts", labnet.LabProtectedNet.String(),
		"--ike", mifsecIKEProposal, "--esp", mifsecAlg, "--tun", p.serverTUN)
	if sc.Client.Policy != "" && p.only == "" {
		gwArgs = append(gwArgs, "--policy", sc.Client.Policy)
	}
	gateway, err := n.Start(n.Gateway, "mifsec gateway", nil, gwArgs...)
	if err != nil {
		return err
	}
	p.processes = append(p.processes, gateway)
	if err := labnet.WaitForSocket(ctx, mif.ControlSocket(p.serverTUN), gateway); err != nil {
		return err
	}
	uplink, iface := n.Uplink(sc.Client.Interface), sc.Client.Interface
	switch {
	case only != nil && only.OfGateway:
		uplink = only // the client's own interface, to that gateway address
	case only != nil:
		uplink, iface = only, p.only
	}
	args := p.command("connect",
		"--gateway", uplink.GatewayAddr.String(),
		"--local-id", mifsecIKEClientID, "--remote-id", mifsecIKEServerID, "--psk-file", pskFile,
		"--ike", mifsecIKEProposal, "--esp", mifsecAlg, "--tun", p.clientTUN, "--ipv6=false")
	if p.only != "" {
		args = append(args, "--interface", iface)
	} else if len(sc.Client.Interfaces) > 0 {
		args = append(args, "--interfaces", strings.Join(sc.Client.Interfaces, ","))
		if sc.Client.Policy != "" {
			args = append(args, "--policy", sc.Client.Policy)
		}
	} else {
		args = append(args, "--interface", sc.Client.Interface)
	}
	if d := sc.Client.DPD; d != 0 {
		args = append(args, "--dpd", d.String())
	}
	if d := sc.Client.Retransmit; d != 0 {
		args = append(args, "--retransmit", d.String())
	}
	if t := sc.Client.RetransmitTries; t != 0 {
		args = append(args, "--retransmit-tries", strconv.Itoa(t))
	}
	p.args = args
	client, err := n.Start(n.Client, "mifsec connect", nil, args...)
	if err != nil {
		return err
	}
	p.processes = append(p.processes, client)
	if err := waitForLabPing(ctx, n, netip.Addr{}, p.processes...); err != nil {
		return err
	}
	// The inner address at the start, to tell a reconnection that kept it
	// from one that did not.
	var lastErr error
	for range 20 {
		st, err := p.clientStatus()
		if err == nil && len(st.Session.Addresses) > 0 {
			p.startAddrs = st.Session.Addresses
			return nil
		}
		lastErr = err
		if !labnet.SleepUntil(ctx, time.Now().Add(100*time.Millisecond)) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("the client reports no inner address while its tunnel carries pings (status: %v)", lastErr)
}

// waitForLabPing sends ICMP echo requests to the protected server from the
// client namespace of n until it answers.
func waitForLabPing(ctx context.Context, n *labnet.LabNet, src netip.Addr, processes ...*labnet.Process) error {
	return labnet.WaitForEcho(ctx, n.Client, src, labnet.LabServerAddr, processes...)
}

// wireguardLabPeer is wireguard-go on both sides; the client's endpoint is
// the gateway's address on the scenario's client interface, and the kernel
// routes its UDP packets (wireguard-go does not bind to an interface).
type wireguardLabPeer struct {
	wireguardPeer
}

func (p *wireguardLabPeer) ClientAddr() netip.Addr  { return netip.Addr{} }
func (p *wireguardLabPeer) TunnelInterface() string { return p.ClientInterface() }

func (p *wireguardLabPeer) Behaviour(sc *scenarios.Scenario) string {
	return fmt.Sprintf("wireguard-go with the gateway's %s address as endpoint: its UDP packets follow the client's routing table "+
		"(through %s while that interface is up, else the next default route); the gateway follows the client's source address (roaming)",
		sc.Client.Interface, sc.Client.Interface)
}

func (p *wireguardLabPeer) Setup(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario) error {
	tag := strconv.Itoa(n.Lab.Owner())
	clientIface, serverIface := "wlb"+tag+"c", "wlb"+tag+"s"
	clientKey, clientPub, err := wireguardKeyPair()
	if err != nil {
		return err
	}
	serverKey, serverPub, err := wireguardKeyPair()
	if err != nil {
		return err
	}
	endpoint := n.Uplink(sc.Client.Interface).GatewayAddr
	type side struct {
		ns, iface, key, peerPub string
		addr                    netip.Prefix
		peerArgs                []string
	}
	sides := []side{
		{ns: n.Gateway, iface: serverIface, key: serverKey, peerPub: clientPub, addr: netip.PrefixFrom(wireguardServerAddr, 24),
			peerArgs: []string{"allowed-ips", netip.PrefixFrom(wireguardClientAddr, 32).String()}},
		{ns: n.Client, iface: clientIface, key: clientKey, peerPub: serverPub, addr: netip.PrefixFrom(wireguardClientAddr, 24),
			peerArgs: []string{"endpoint", netip.AddrPortFrom(endpoint, wireguardPort).String(),
				"allowed-ips", netip.PrefixFrom(wireguardServerAddr, 32).String() + "," + labnet.LabProtectedNet.String(),
				"persistent-keepalive", "25"}},
	}
	for _, s := range sides {
		if err := p.startSide(ctx, n.Start, n.Run, n.Dir, s.ns, s.iface, s.key, s.peerPub, s.peerArgs, s.addr); err != nil {
			return err
		}
	}
	if _, err := n.Run(ctx, n.Client, "ip", "route", "add", labnet.LabProtectedNet.String(), "dev", clientIface); err != nil {
		return fmt.Errorf("route the protected network into wireguard: %w", err)
	}
	// The client's interface is the second one started.
	p.interfaces[0], p.interfaces[1] = p.interfaces[1], p.interfaces[0]
	return waitForLabPing(ctx, n, netip.Addr{}, p.processes...)
}

func (p *wireguardLabPeer) Tools() []labnet.Tool { return wireguardTools }

// wireguardTools are what the wireguard-go peer runs besides wireguard-go
// itself (built from the module proxy when missing).
var wireguardTools = []labnet.Tool{{Binary: "wg", Package: "wireguard-tools"}}

func (p *strongswanLabPeer) Tools() []labnet.Tool { return strongswanTools }

// strongswanTools are the programs of the strongSwan peer.
var strongswanTools = []labnet.Tool{
	{Binary: charon.Binary, Package: "strongswan-charon"},
	{Binary: "swanctl", Package: "strongswan-swanctl"},
	{Binary: "unshare", Package: "util-linux"},
}

// strongswanLabPeer is strongSwan's charon (kernel-libipsec) as the client
// with its defaults (MOBIKE on, DPD off) and as the gateway.
type strongswanLabPeer struct {
	strongswanPeer
}

func (p *strongswanLabPeer) ClientAddr() netip.Addr  { return strongswanClientAddr }
func (p *strongswanLabPeer) TunnelInterface() string { return "ipsec0" }

func (p *strongswanLabPeer) Behaviour(sc *scenarios.Scenario) string {
	return "strongSwan 5.9 client with its defaults (MOBIKE on, DPD off): it moves the IKE and Child SAs to another address " +
		"when the kernel reports the used one gone, and notices a silent failure only through IKE retransmissions"
}

func (p *strongswanLabPeer) Setup(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario) error {
	err := p.setupLab(ctx, n, sc)
	if err != nil && ctx.Err() == nil {
		return skipf("strongSwan did not come up: %v", err)
	}
	return err
}

// Teardown stops both charons.
func (p *strongswanLabPeer) Teardown() error {
	labnet.StopAll(p.processes)
	p.processes = nil
	return nil
}

// mifsecLabPeer and wireguardLabPeer tear down like their throughput
// counterparts; these assertions keep the interface honest.
var (
	_ LabPeer = (*mifsecLabPeer)(nil)
	_ LabPeer = (*wireguardLabPeer)(nil)
	_ LabPeer = (*strongswanLabPeer)(nil)
)
