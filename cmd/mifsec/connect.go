package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/mif"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"golang.org/x/sys/unix"
)

const (
	defaultIKEProposals = "aes256gcm16-prfsha256-x25519,chacha20poly1305-prfsha256-x25519,aes128gcm16-prfsha256-ecp256,aes256-sha256-modp2048"
	// defaultESPProposals are AEADs only: with AES-CBC allowed the TUN MTU
	// would have to leave room for its longer framing (docs/ike.md). ESN
	// preferred, 32-bit sequence numbers for peers without it
	// (strongSwan's kernel-libipsec).
	defaultESPProposals = "aes256gcm16-esn-noesn,chacha20poly1305-esn-noesn,aes128gcm16-esn-noesn"

	// Both ends rekey by default, as strongSwan does; each subtracts up to
	// 10% of random jitter so that they rarely start at the same moment.
	defaultChildRekey = time.Hour
	defaultIKERekey   = 4 * time.Hour
)

func connectCommand() *cli.Command {
	flags := []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{Name: "gateway", Usage: "gateway `HOST`, HOST:PORT or [IPv6]:PORT (IKE port, default 500); a name is resolved at start and is the gateway's identity unless --remote-id says otherwise", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "local-id", Usage: "our `IDENTITY`: address, fqdn, @fqdn, user@domain or a DN (required but with --eap-identity)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "remote-id", Usage: "the gateway's expected `IDENTITY` (default: --gateway's name; required with --ca when --gateway is an address)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "psk-file", Usage: "read the pre-shared key from `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cert", Usage: "our certificate chain, PEM `FILE` (end entity first)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key", Usage: "our private key, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ca", Usage: "CA certificates that vouch for the gateway, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "crl", Usage: "certificate revocation lists of the --ca CAs, PEM or DER `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "eap-identity", Usage: "log in with EAP-MSCHAPv2 as user `NAME` (with --password-file, and --ca to verify the gateway)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "password-file", Usage: "read the EAP password from the first line of `FILE` (mode 600)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ike", Value: defaultIKEProposals, Usage: "IKE `PROPOSALS` in strongSwan's syntax"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "esp", Value: defaultESPProposals, Usage: "ESP `PROPOSALS` in strongSwan's syntax (AEADs, or aes128/aes192/aes256 with sha1/sha256/sha384/sha512)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tun", Value: "mifsec0", Usage: "`NAME` of the TUN interface to create"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "mtu", Usage: "TUN `MTU`; 0 fits a 1500-byte outer path"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "interface", Usage: "reach the gateway through `IFNAME` (default: as routed at start), following its address changes"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "interfaces", Usage: "watch the interfaces matching `GLOB[,GLOB]` and keep a path on each that reaches the gateway (instead of --interface)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "exclude-interfaces", Usage: "never use interfaces matching `GLOB[,GLOB]` (implies watching the others)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "interface-priority", Usage: "`NAME=N`: priority of an interface name, glob or kind (ethernet, wlan, cellular, other), 0 best (repeatable)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "handover-hysteresis", Value: mif.DefaultHysteresis, Usage: "a better interface must stay usable for `DURATION` before traffic moves back to it"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "policy", Usage: "spread traffic over the interfaces' paths: `single`, offload, aggregate or redundant (default offload when the gateway speaks the MIF extension, else single)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "class", Usage: "traffic classes with their own policy, `RULES` like 'udp/5060-5061:redundant,dscp=ef:redundant,10.0.0.0/8+tcp:offload', a policy optionally bound to interfaces in order ('tcp/22:offload@wlan0>eth0') (docs/scheduler.md)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "remote-ts", Usage: "`CIDR` to reach through the tunnel (repeatable; default everything)"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "ipv6", Value: true, Usage: "ask for an inner IPv6 address too"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "redirect", Value: true, Usage: "follow a full or draining gateway's redirect to another (RFC 5685; --redirect=false does not offer it)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "child-rekey", Value: defaultChildRekey, Usage: "rekey the Child SA after `DURATION`, less up to 10% jitter (0: the gateway rekeys; sequence numbers running out still rekey)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "ike-rekey", Value: defaultIKERekey, Usage: "rekey the IKE SA after `DURATION`, less up to 10% jitter (0: the gateway rekeys)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dpd", Value: 10 * time.Second, Usage: "check the gateway is alive after `DURATION` of silence"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "retransmit", Value: time.Second, Usage: "first retransmission timeout of IKE requests"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "retransmit-tries", Value: 5, Usage: "sends of an IKE request before giving up"}),
		metricsFlag(),
		userFlag("root", "; as another user the control socket outlives the process in /run/mifsec (the next start removes it)"),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "dns", Value: string(tun.DNSAuto), Usage: "give the gateway's DNS servers and domains to the resolver: `MODE` auto, resolved (systemd-resolved, split DNS), resolvconf, file (rewrite /etc/resolv.conf) or off"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "kill-switch", Usage: "drop every packet of this host's that would leave outside the tunnel (nftables), IKE/ESP to the gateway, DHCP and IPv6 neighbour discovery excepted, until a clean exit"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "state-dir", Value: tun.DefaultStateDir, Usage: "`DIR` for what must be undone after a crash (the original resolv.conf)"}),
		&cli.StringFlag{Name: "config", Usage: "read these settings from a YAML `FILE` (keys are the flag names, required ones included; the command line wins)"},
	}
	return &cli.Command{
		Name:  "connect",
		Usage: "connect to an IKEv2 gateway and route the granted networks through the tunnel",
		Description: `Authenticates to the gateway with a pre-shared key (--psk-file), a certificate
(--cert, --key, and --ca to verify the gateway) or an EAP-MSCHAPv2 user name and password
(--eap-identity, --password-file, and --ca to verify the gateway), asks for inner addresses, and routes
the traffic selectors the gateway grants into a TUN device. Runs until interrupted,
then deletes the IKE SA and removes the device.`,
		Flags:  flags,
		Action: runConnect, // withSetup (config.go) reads --config
	}
}

func parseConnect(c *cli.Context) (mif.ClientConfig, error) {
	var cfg mif.ClientConfig
	s := &cfg.Session
	gw, gwName, err := resolveGateway(c.Context, c.String("gateway"), 500)
	if err != nil {
		return cfg, fmt.Errorf("--gateway: %w", err)
	}
	s.Remote = gw
	creds, err := parseCredentials(c)
	if err != nil {
		return cfg, err
	}
	switch id := c.String("local-id"); {
	case id != "":
		if s.LocalID, err = ike.ParseIdentity(id); err != nil {
			return cfg, fmt.Errorf("--local-id: %w", err)
		}
	case creds.eap == nil:
		return cfg, errors.New("--local-id is required (but with --eap-identity, which stands in for it)")
	}
	switch id := c.String("remote-id"); {
	case id != "":
		if s.RemoteID, err = ike.ParseIdentity(id); err != nil {
			return cfg, fmt.Errorf("--remote-id: %w", err)
		}
	case gwName != "":
		// The name the user dialled is the name the gateway must prove,
		// as a browser checks a server's certificate.
		s.RemoteID = ike.Identity{Type: wire.IDFQDN, Data: []byte(gwName)}
	case creds.cas != nil:
		return cfg, fmt.Errorf("--remote-id is required with --ca when --gateway is an address: " +
			"any certificate of the CA would otherwise be accepted as the gateway's (give the gateway's identity, e.g. --remote-id vpn.example.net, or --gateway by name)")
	}
	s.PSK, s.Key, s.Certificates, s.CAs, s.EAP = creds.psk, creds.key, creds.certs, creds.cas, creds.eap
	s.IKE, s.ESP = creds.ike, creds.esp
	if s.RemoteTS, err = parsePrefixes(c.StringSlice("remote-ts"), true); err != nil {
		return cfg, fmt.Errorf("--remote-ts: %w", err)
	}
	s.RequestIPv4, s.RequestIPv6 = true, c.Bool("ipv6")
	s.DisableRedirect = !c.Bool("redirect")
	if s.ChildRekey, s.IKERekey, err = rekeyFlags(c); err != nil {
		return cfg, err
	}
	s.DPD = c.Duration("dpd")
	s.Retransmit = ike.RetransmitPolicy{Timeout: c.Duration("retransmit"), Tries: c.Int("retransmit-tries")}
	if err := tun.ValidateName(c.String("tun")); err != nil {
		return cfg, fmt.Errorf("--tun: %w", err)
	}
	cfg.TUN = tun.Config{Name: c.String("tun"), MTU: c.Int("mtu")}
	if cfg.TUN.MTU == 0 {
		cfg.TUN.MTU = innerMTU(1500, gw.Addr(), creds.espAlgs...)
	}
	mode, err := tun.ParseDNSMode(c.String("dns"))
	if err != nil {
		return cfg, fmt.Errorf("--dns: %w", err)
	}
	cfg.DNS = tun.DNSOptions{Mode: mode, StateDir: c.String("state-dir")}
	cfg.KillSwitch = c.Bool("kill-switch")
	cfg.Device = c.String("interface")
	if cfg.Interfaces, err = parseInterfaces(c); err != nil {
		return cfg, err
	}
	if cfg.Interfaces != nil && cfg.Device != "" {
		return cfg, fmt.Errorf("--interface and --interfaces/--exclude-interfaces exclude each other")
	}
	if s := c.String("policy"); s != "" {
		pol, err := scheduler.ParsePolicy(s)
		if err != nil {
			return cfg, fmt.Errorf("--policy: %w", err)
		}
		if pol != scheduler.PolicySingle && cfg.Interfaces == nil {
			return cfg, fmt.Errorf("--policy %s needs --interfaces (several paths)", pol)
		}
		cfg.Policy = &pol
	}
	if spec := c.String("class"); spec != "" {
		if cfg.Interfaces == nil {
			return cfg, errors.New("--class needs --interfaces (several paths)")
		}
		def := scheduler.PolicyOffload
		if cfg.Policy != nil {
			def = *cfg.Policy
		}
		if cfg.Classes, err = scheduler.ParseRules(spec, def); err != nil {
			return cfg, fmt.Errorf("--class: %w", err)
		}
	}
	return cfg, nil
}

// parseInterfaces reads the interface monitoring flags; nil means the
// single-interface mode (--interface, or as routed).
func parseInterfaces(c *cli.Context) (*mif.InterfaceConfig, error) {
	include, err := netmon.ParseGlobs(c.String("interfaces"))
	if err != nil {
		return nil, fmt.Errorf("--interfaces: %w", err)
	}
	exclude, err := netmon.ParseGlobs(c.String("exclude-interfaces"))
	if err != nil {
		return nil, fmt.Errorf("--exclude-interfaces: %w", err)
	}
	prios := c.StringSlice("interface-priority")
	if len(include) == 0 && len(exclude) == 0 {
		if len(prios) > 0 {
			return nil, fmt.Errorf("--interface-priority needs --interfaces or --exclude-interfaces")
		}
		if c.IsSet("interfaces") || c.IsSet("exclude-interfaces") {
			return nil, fmt.Errorf("--interfaces: no interface pattern given")
		}
		return nil, nil
	}
	ic := &mif.InterfaceConfig{Filter: netmon.Filter{Include: include, Exclude: exclude}}
	for _, p := range prios {
		name, n, err := netmon.ParsePriority(p)
		if err != nil {
			return nil, fmt.Errorf("--interface-priority: %w", err)
		}
		if ic.Priorities == nil {
			ic.Priorities = map[string]int{}
		}
		ic.Priorities[name] = n
	}
	if ic.Hysteresis = c.Duration("handover-hysteresis"); ic.Hysteresis < 0 {
		return nil, fmt.Errorf("--handover-hysteresis must not be negative")
	}
	return ic, nil
}

func runConnect(c *cli.Context) error {
	cfg, err := parseConnect(c)
	if err != nil {
		return err
	}
	as, metrics, err := userAndMetrics(c)
	if err != nil {
		return err
	}
	defer metrics.Close()
	cfg.Logger = slog.Default()
	client, err := mif.NewClient(c.Context, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	inst, stop := startInstance(c.Context, cfg.TUN.Name, mif.Control{Status: func() any { return client.Status() }})
	defer stop()
	go inst.report(250*time.Millisecond, func() (bool, string) {
		st := client.Status()
		return st.Session.State == "established", clientSummary(st)
	})
	metrics.Serve(statusCollector{client.Status})
	// At run time the client sets the addresses and routes the gateway
	// grants, on every (re)connection, and raises the receive buffers of
	// new path sockets (CAP_NET_ADMIN); with --interfaces it opens a
	// socket on port 500 for each interface that appears
	// (CAP_NET_BIND_SERVICE). SO_BINDTODEVICE on a new socket needs no
	// capability since Linux 5.7 (CAP_NET_RAW before). It stays uid 0
	// by default: the control socket lives in /run/mifsec, which only
	// root may write, and removing it on exit needs that; --user runs it
	// unprivileged and leaves the socket for the next start to remove.
	if err := dropPrivilegesOrWarn(slog.Default(), []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE}, as); err != nil {
		return err
	}
	return client.Run(inst.ctx)
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show the state of a running mifsec (IKE SA, Child SAs, counters, paths)",
		ArgsUsage: "[NAME]",
		Description: `Shows the instance of the profile NAME, or the one on --tun; with neither, the
one instance running, or every one. --cluster lists the gateways of a cluster on etcd
and their clients instead.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tun", Usage: "the instance's TUN interface `NAME`"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "summary", Usage: "a gateway's counters, pools and number of clients, without the list of clients (quick with 100,000)"},
			&cli.BoolFlag{Name: "cluster", Usage: "list every gateway of the cluster with its clients, read from etcd (--cluster-etcd, or the running gateway's)"},
			&cli.StringSliceFlag{Name: "cluster-etcd", Usage: "the cluster's etcd, `URL[,URL]`, for --cluster"},
			profileDirFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.Bool("cluster") {
				return printCluster(c)
			}
			running, err := instanceStatuses(c)
			if err != nil {
				return err
			}
			return printInstances(running, c.Bool("json"))
		},
	}
}

func printStatus(st mif.Status) {
	s := st.Session
	fmt.Printf("gateway %s: %s", s.Gateway, s.State)
	if !s.Established.IsZero() {
		fmt.Printf(" since %s", s.Established.Format(time.RFC3339))
	}
	fmt.Println()
	if s.RedirectedFrom != "" {
		fmt.Printf("  redirected here by the gateway %s (%d redirects followed)\n", s.RedirectedFrom, s.Redirects)
	}
	if s.IKESPIi != "" {
		fmt.Printf("  IKE SA %s_i %s_r  %s  (rekeyed %d times, reconnected %d times)\n", s.IKESPIi, s.IKESPIr, s.IKESuite, s.IKERekeys, s.Reconnects)
		if len(s.Weak) > 0 {
			fmt.Printf("  weak algorithms: %s\n", strings.Join(s.Weak, ", "))
		}
	}
	if s.Child != nil {
		fmt.Printf("  Child SA in %s out %s  %s %s mode  (rekeyed %d times)\n", s.Child.InSPI, s.Child.OutSPI, s.Child.Algorithm, s.Child.Mode, s.ChildRekeys)
		fmt.Printf("    local %s === remote %s\n", strings.Join(s.Child.LocalTS, ","), strings.Join(s.Child.RemoteTS, ","))
	}
	if len(s.Addresses) > 0 {
		fmt.Printf("  addresses %s on %s", strings.Join(s.Addresses, ", "), st.Interface)
		if len(s.DNS) > 0 {
			fmt.Printf(", DNS %s", strings.Join(s.DNS, ", "))
		}
		fmt.Println()
	}
	fmt.Printf("  traffic: sent %d packets (%d bytes), received %d packets (%d bytes)\n", st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes)
	if len(st.Drops) > 0 {
		fmt.Printf("  drops: %v\n", st.Drops)
	}
	if ks := st.KillSwitch; ks != nil {
		fmt.Printf("  kill switch on: dropped %d packets (%d bytes) outside the tunnel", ks.DroppedPackets, ks.DroppedBytes)
		if ks.Error != "" {
			fmt.Printf(" (%s)", ks.Error)
		}
		fmt.Println()
	}
	if st.Policy != "" {
		fmt.Printf("  policy %s (MIF %v)\n", st.Policy, s.MIF)
	}
	for _, p := range st.Paths {
		fmt.Printf("  path %d: %s %s -> %s (GSO %v, GRO %v)\n", p.ID, p.Device, p.Local, p.Remote, p.GSO, p.GRO)
		if m := p.Multipath; m != nil {
			printScheduled("    ", *m)
		}
	}
	if s.LastError != "" {
		fmt.Printf("  last error: %s\n", s.LastError)
	}
}

// printScheduled prints one path's multipath scheduling state.
func printScheduled(indent string, m mif.ScheduledPath) {
	fmt.Printf("%s%s, %s tier %d: srtt %v, rate %s, loss %.1f%%, sent %d packets (%d bytes), received %d packets (%d bytes)\n",
		indent, m.State, m.Kind, m.Tier, m.SRTT.Round(10*time.Microsecond), formatRate(m.Rate), 100*m.Loss,
		m.TxPackets, m.TxBytes, m.RxPackets, m.RxBytes)
}

// formatRate shows a rate in bytes per second as bits per second.
func formatRate(bytesPerSecond float64) string {
	switch b := bytesPerSecond * 8; {
	case b == 0:
		return "unknown"
	case b >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", b/1e6)
	default:
		return fmt.Sprintf("%.0f kbit/s", b/1e3)
	}
}

// rekeyFlags reads --child-rekey and --ike-rekey, which connect and
// gateway share.
func rekeyFlags(c *cli.Context) (child, ikeSA time.Duration, err error) {
	child, ikeSA = c.Duration("child-rekey"), c.Duration("ike-rekey")
	switch {
	case child < 0:
		return 0, 0, errors.New("--child-rekey: a negative duration")
	case ikeSA < 0:
		return 0, 0, errors.New("--ike-rekey: a negative duration")
	}
	return child, ikeSA, nil
}
