package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/mif"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"golang.org/x/sys/unix"
)

// mifsec peer: two hosts protect the traffic between their stable
// addresses (docs/end-to-end.md). The two run the same command with the
// identities swapped; each runs both roles of a mif.Peer, so either may
// start the IKE SA, and one stays.

func peerCommand() *cli.Command {
	flags := []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{Name: "local-id", Usage: "our `IDENTITY`: address, fqdn, @fqdn, user@domain or a DN", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "remote-id", Usage: "the peer's `IDENTITY`; no other may log in", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "remote", Usage: "the peer's `ADDR` (IKE on port 4500, or ADDR:PORT); it announces its other addresses once connected", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "psk-file", Usage: "read the pre-shared key from `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cert", Usage: "our certificate chain, PEM `FILE` (end entity first)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key", Usage: "our private key, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ca", Usage: "CA certificates that vouch for the peer, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "crl", Usage: "certificate revocation lists of the --ca CAs, PEM or DER `FILE`"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "local-ts", Usage: "this host's stable `ADDR/LEN` whose traffic is protected (transport mode: one address of this host, e.g. on lo)", Required: true}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "remote-ts", Usage: "the peer's stable `ADDR/LEN` (transport mode: one address)", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "mode", Value: "transport", Usage: "`MODE` transport (no inner IP header; tunnel mode when the peer refuses) or tunnel"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "standby", Value: mif.DefaultPeerStandby, Usage: "the host whose identity sorts second waits `DURATION` for the other's IKE SA before it starts its own"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "interfaces", Usage: "use the interfaces matching `GLOB[,GLOB]`, every address of each: paths between every pair of both hosts' interfaces (default: the one routed towards --remote, and every address answers)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "interface-priority", Usage: "`NAME=N`: priority of an interface name, glob or kind (ethernet, wlan, cellular, other), 0 best (repeatable)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "policy", Value: "aggregate", Usage: "spread traffic over the paths: single, offload, `aggregate` or redundant"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "class", Usage: "traffic classes with their own policy, `RULES` as for connect (docs/scheduler.md)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ike", Value: defaultIKEProposals, Usage: "IKE `PROPOSALS` in strongSwan's syntax"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "esp", Value: defaultESPProposals, Usage: "ESP `PROPOSALS` in strongSwan's syntax"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tun", Value: "mifsec0", Usage: "`NAME` of the TUN interface to create"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "mtu", Usage: "TUN `MTU`; 0 fits a 1500-byte outer path"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "child-rekey", Value: defaultChildRekey, Usage: "rekey the Child SA after `DURATION`, less up to 10% jitter"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "ike-rekey", Value: defaultIKERekey, Usage: "rekey the IKE SA after `DURATION`, less up to 10% jitter"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dpd", Value: 10 * time.Second, Usage: "check the peer is alive after `DURATION` of silence"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "retransmit", Value: time.Second, Usage: "first retransmission timeout of IKE requests"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "retransmit-tries", Value: 5, Usage: "sends of an IKE request before giving up"}),
		metricsFlag(),
		userFlag("root", "; as another user the control socket outlives the process in /run/mifsec (the next start removes it)"),
		&cli.StringFlag{Name: "config", Usage: "read these settings from a YAML `FILE` (keys are the flag names, required ones included; the command line wins)"},
	}
	return &cli.Command{
		Name:  "peer",
		Usage: "protect the traffic between this host and another one, end to end, over every interface of both",
		Description: `Two hosts run it with their identities swapped, each naming its own stable address
(--local-ts, an address on lo or on one interface) and the other's (--remote-ts). Their traffic
travels in transport mode (no inner IP header) over every pair of the two hosts' interfaces
(--interfaces), and keeps its addresses, and so its sockets, while interfaces come and go.
Either host may start the IKE SA and either may be started first; when both hold one,
the one the host whose identity sorts first started stays.
Runs until interrupted, then deletes the IKE SA and removes the device.`,
		Flags:  flags,
		Action: runPeer, // withSetup (config.go) reads --config
	}
}

func parsePeer(c *cli.Context) (mif.PeerConfig, error) {
	var pc mif.PeerConfig
	localID, err := ike.ParseIdentity(c.String("local-id"))
	if err != nil {
		return pc, fmt.Errorf("--local-id: %w", err)
	}
	remoteID, err := ike.ParseIdentity(c.String("remote-id"))
	if err != nil {
		return pc, fmt.Errorf("--remote-id: %w", err)
	}
	if localID.Key() == remoteID.Key() {
		return pc, errors.New("--local-id and --remote-id name the same identity: each host needs its own")
	}
	pc.First = localID.Key() < remoteID.Key()
	if pc.Standby = c.Duration("standby"); pc.Standby <= 0 {
		return pc, errors.New("--standby must be positive")
	}
	if strings.Contains(c.String("remote"), ",") {
		return pc, errors.New("--remote: one address; the peer announces its others (MOBIKE) once connected")
	}
	// IKE starts on 4500: the peer is a mifsec host, which listens there.
	remote, _, err := resolveGateway(c.Context, c.String("remote"), 4500)
	if err != nil {
		return pc, fmt.Errorf("--remote: %w", err)
	}
	creds, err := parseCredentials(c)
	if err != nil {
		return pc, err
	}
	if creds.eap != nil {
		return pc, errors.New("mifsec peer authenticates with --psk-file or --cert/--key, not EAP")
	}
	local, err := parsePrefixes(c.StringSlice("local-ts"), true)
	if err != nil {
		return pc, fmt.Errorf("--local-ts: %w", err)
	}
	remoteTS, err := parsePrefixes(c.StringSlice("remote-ts"), true)
	if err != nil {
		return pc, fmt.Errorf("--remote-ts: %w", err)
	}
	var transport bool
	switch m := c.String("mode"); m {
	case "transport":
		transport = true
		if err := ike.CheckTransportSelectors(local, remoteTS); err != nil {
			return pc, fmt.Errorf("--mode transport: %w (--local-ts, --remote-ts): use --mode tunnel for networks", err)
		}
	case "tunnel":
	default:
		return pc, fmt.Errorf("--mode: %q is not transport or tunnel", m)
	}
	if pc.Source, err = ownAddresses(local); err != nil {
		return pc, err
	}
	pc.Routes = remoteTS
	childRekey, ikeRekey, err := rekeyFlags(c)
	if err != nil {
		return pc, err
	}
	if c.Duration("dpd") < 0 {
		return pc, errors.New("--dpd: a negative duration")
	}
	if c.Duration("retransmit") <= 0 || c.Int("retransmit-tries") <= 0 {
		return pc, errors.New("--retransmit and --retransmit-tries must be positive")
	}
	retransmit := ike.RetransmitPolicy{Timeout: c.Duration("retransmit"), Tries: c.Int("retransmit-tries")}
	if err := tun.ValidateName(c.String("tun")); err != nil {
		return pc, fmt.Errorf("--tun: %w", err)
	}
	pc.TUN = tun.Config{Name: c.String("tun"), MTU: c.Int("mtu")}
	if pc.TUN.MTU == 0 {
		pc.TUN.MTU = innerMTU(1500, remote.Addr(), creds.espAlgs...)
	}
	// As connect reads them (no --exclude-interfaces here).
	ifaces, err := parseInterfaces(c)
	if err != nil {
		return pc, err
	}
	var globs []string
	if ifaces != nil {
		globs = ifaces.Filter.Include
	}
	policy, err := scheduler.ParsePolicy(c.String("policy"))
	if err != nil {
		return pc, fmt.Errorf("--policy: %w", err)
	}
	var classes *scheduler.Classifier
	if spec := c.String("class"); spec != "" {
		if classes, err = scheduler.ParseRules(spec, policy); err != nil {
			return pc, fmt.Errorf("--class: %w", err)
		}
	}
	if len(globs) == 0 && (c.IsSet("policy") && policy != scheduler.PolicySingle || classes != nil) {
		return pc, errors.New("--policy and --class need --interfaces (several paths)")
	}

	// The answering side: the peer's identity only, its key only.
	g := &pc.Gateway
	r := &g.Responder
	r.LocalID, r.Peers = localID, []ike.Identity{remoteID}
	r.Key, r.Certificates, r.CAs = creds.key, creds.certs, creds.cas
	if creds.psk != nil {
		r.ClientPSKs = map[string][]byte{c.String("remote-id"): creds.psk}
	}
	r.IKE, r.ESP = creds.ike, creds.esp
	r.LocalTS, r.RemoteTS, r.Transport = local, remoteTS, transport
	r.ChildRekey, r.IKERekey, r.DPD, r.Retransmit = childRekey, ikeRekey, c.Duration("dpd"), retransmit
	r.MaxSAsPerIdentity = 1
	// Every address of the interfaces answers; without --interfaces,
	// every address of the host.
	if g.Interfaces = globs; len(globs) == 0 {
		g.Listen = []netip.Addr{netip.IPv4Unspecified()}
		if remote.Addr().Is6() {
			g.Listen = []netip.Addr{netip.IPv6Unspecified()}
		}
	}
	g.Policy, g.Classes = policy, classes

	// The starting side.
	cc := &pc.Client
	s := &cc.Session
	s.Remote, s.LocalID, s.RemoteID = remote, localID, remoteID
	s.PSK, s.Key, s.Certificates, s.CAs = creds.psk, creds.key, creds.certs, creds.cas
	s.IKE, s.ESP = creds.ike, creds.esp
	s.LocalTS, s.RemoteTS, s.Transport = local, remoteTS, transport
	s.ChildRekey, s.IKERekey, s.DPD, s.Retransmit = childRekey, ikeRekey, c.Duration("dpd"), retransmit
	if cc.Interfaces = ifaces; ifaces != nil {
		cc.Policy, cc.Classes = &policy, classes
	}
	return pc, nil
}

// ownAddresses checks that each single address among the selectors of
// this side is an address of this host (packets to the peer leave from
// it, and the peer's come to it), and returns those addresses.
func ownAddresses(local []netip.Prefix) ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this host's addresses: %w", err)
	}
	var mine []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				mine = append(mine, ip.Unmap())
			}
		}
	}
	var own []netip.Addr
	for _, p := range local {
		if !p.IsSingleIP() {
			continue
		}
		if !slices.Contains(mine, p.Addr()) {
			return nil, fmt.Errorf("--local-ts %s is not an address of this host: add it first (ip addr add %s dev lo)", p, p)
		}
		own = append(own, p.Addr())
	}
	return own, nil
}

func runPeer(c *cli.Context) error {
	cfg, err := parsePeer(c)
	if err != nil {
		return err
	}
	as, metrics, err := userAndMetrics(c)
	if err != nil {
		return err
	}
	defer metrics.Close()
	cfg.Logger = slog.Default()
	cfg.Gateway.Responder.Logger = slog.Default()
	p, err := mif.NewPeer(c.Context, cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	status := func() mif.PeerStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return p.Status(ctx)
	}
	inst, stop := startInstance(c.Context, cfg.TUN.Name, mif.Control{Status: func() any { return status() }})
	defer stop()
	go inst.report(250*time.Millisecond, func() (bool, string) {
		st := status()
		return st.Active != "", peerSummary(st)
	})
	metrics.Serve(statusCollector{func() mif.Status { return status().Initiator }})
	// As connect and gateway: routes and addresses of new paths, sockets
	// on port 500 of new addresses (CAP_NET_BIND_SERVICE).
	if err := dropPrivilegesOrWarn(slog.Default(), []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE}, as); err != nil {
		return err
	}
	return p.Run(inst.ctx)
}

// peerSummary is a one-line state of a peer for the service manager.
func peerSummary(st mif.PeerStatus) string {
	switch st.Active {
	case "initiator":
		return "IKE SA started by this host: " + clientSummary(st.Initiator)
	case "responder":
		return "IKE SA started by the peer"
	}
	return "no IKE SA with the peer yet"
}

// printPeerStatus prints the IKE SA in use, from whichever side holds it.
func printPeerStatus(st mif.PeerStatus) {
	switch st.Active {
	case "initiator":
		fmt.Println("peer: the IKE SA this host started")
		printStatus(st.Initiator)
	case "responder":
		fmt.Println("peer: the IKE SA the peer started")
		printGatewayStatus(st.Responder)
	default:
		fmt.Println("peer: no IKE SA yet")
		printStatus(st.Initiator)
	}
}
