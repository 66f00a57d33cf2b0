package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
)

func gatewayCommand() *cli.Command {
	flags := []cli.Flag{
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "listen", Value: cli.NewStringSlice("0.0.0.0"),
			Usage: "`ADDR[,ADDR]` the IKE (500) and NAT-T (4500) sockets bind to, a pair per address (repeatable)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "local-id", Usage: "our `IDENTITY`: address, fqdn, @fqdn, user@domain or a DN", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "psk-file", Usage: "read the pre-shared key (the same for every client) from `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "client-psks", Usage: "per-client pre-shared keys, `FILE` of 'IDENTITY KEY' lines; a client listed uses its own key only"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cert", Usage: "our certificate chain, PEM `FILE` (end entity first)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key", Usage: "our private key, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ca", Usage: "CA certificates that vouch for clients, PEM `FILE`"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "pool", Usage: "inner address pool `CIDR`, at most one per family (repeatable)", Required: true}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "local-ts", Usage: "protected network `CIDR` behind the gateway (repeatable)", Required: true}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "dns", Usage: "DNS server `ADDR` for clients (repeatable)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ike", Value: defaultIKEProposals, Usage: "IKE `PROPOSALS` in strongSwan's syntax"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "esp", Value: defaultGatewayESPProposals, Usage: "ESP `PROPOSALS` in strongSwan's syntax (AEADs only)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tun", Value: "mifsec0", Usage: "`NAME` of the TUN interface to create"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "child-rekey", Value: defaultChildRekey, Usage: "rekey each client's Child SA after `DURATION`, less up to 10% jitter (0: leave it to the clients; sequence numbers running out still rekey)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "ike-rekey", Value: defaultIKERekey, Usage: "rekey each client's IKE SA after `DURATION`, less up to 10% jitter (0: leave it to the clients)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dpd", Value: 30 * time.Second,
			Usage: "check a client that sent nothing (IKE or ESP) for `DURATION`, drop it when it does not answer (0: never)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "retransmit", Value: time.Second, Usage: "first retransmission timeout of the gateway's IKE requests"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "retransmit-tries", Value: 5, Usage: "sends of a gateway's IKE request before giving up on the client"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "mtu", Usage: "TUN `MTU`; 0 fits a 1500-byte outer path"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "policy", Value: "offload", Usage: "downlink `POLICY` for clients that announce several paths (MIF): single, offload, aggregate or redundant"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "class", Usage: "traffic classes with their own policy, `RULES` like 'udp/5060-5061:redundant,dscp=ef:redundant,10.0.0.0/8+tcp:offload' (docs/scheduler.md)"}),
		&cli.StringFlag{Name: "config", Usage: "read these settings from a YAML `FILE` (keys are the flag names)"},
	}
	return &cli.Command{
		Name:  "gateway",
		Usage: "run an IKEv2 security gateway that leases inner addresses to clients",
		Description: `Answers IKEv2 clients on ports 500 and 4500, authenticates them with a pre-shared key
(--psk-file, or a key per client with --client-psks) or certificates (--cert, --key,
and --ca to verify clients), leases each an inner address from the pools, and carries
their traffic to the protected networks (--local-ts) through a TUN device whose address
is the first usable one of each pool. A client from which nothing arrived for --dpd
gets a liveness check and is dropped, its addresses returned to the pool, when it does
not answer. IP forwarding is switched on while it runs. SIGHUP reads --psk-file and
--client-psks again: clients whose key changed or went are dropped, the others stay.
Runs until interrupted.`,
		Flags:  flags,
		Before: altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config")),
		Action: runGateway,
	}
}

func parseGateway(c *cli.Context) (mif.GatewayConfig, error) {
	var cfg mif.GatewayConfig
	r := &cfg.Responder
	for _, item := range c.StringSlice("listen") {
		for _, s := range strings.Split(item, ",") {
			addr, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return cfg, fmt.Errorf("--listen: %w", err)
			}
			if slices.Contains(cfg.Listen, addr) {
				return cfg, fmt.Errorf("--listen: %s given twice", addr)
			}
			cfg.Listen = append(cfg.Listen, addr)
		}
	}
	if len(cfg.Listen) == 0 {
		return cfg, errors.New("--listen: no address")
	}
	var err error
	if r.LocalID, err = ike.ParseIdentity(c.String("local-id")); err != nil {
		return cfg, fmt.Errorf("--local-id: %w", err)
	}
	creds, err := parseCredentials(c)
	if err != nil {
		return cfg, err
	}
	r.PSK, r.ClientPSKs, r.Key, r.Certificates, r.CAs = creds.psk, creds.clientPSKs, creds.key, creds.certs, creds.cas
	r.IKE, r.ESP = creds.ike, creds.esp
	if r.Pools, err = parsePrefixes(c.StringSlice("pool"), true); err != nil {
		return cfg, fmt.Errorf("--pool: %w", err)
	}
	for _, p := range r.Pools {
		if _, err := ike.NewAddressPool(p); err != nil {
			return cfg, fmt.Errorf("--pool: %w", err)
		}
	}
	if r.LocalTS, err = parsePrefixes(c.StringSlice("local-ts"), true); err != nil {
		return cfg, fmt.Errorf("--local-ts: %w", err)
	}
	for _, item := range c.StringSlice("dns") {
		for _, s := range strings.Split(item, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return cfg, fmt.Errorf("--dns: %w", err)
			}
			r.DNS = append(r.DNS, a)
		}
	}
	if r.ChildRekey, r.IKERekey, err = rekeyFlags(c); err != nil {
		return cfg, err
	}
	if r.DPD = c.Duration("dpd"); r.DPD < 0 {
		return cfg, errors.New("--dpd: a negative duration")
	}
	if c.Duration("retransmit") <= 0 || c.Int("retransmit-tries") <= 0 {
		return cfg, errors.New("--retransmit and --retransmit-tries must be positive")
	}
	r.Retransmit = ike.RetransmitPolicy{Timeout: c.Duration("retransmit"), Tries: c.Int("retransmit-tries")}
	if err := tun.ValidateName(c.String("tun")); err != nil {
		return cfg, fmt.Errorf("--tun: %w", err)
	}
	if cfg.Policy, err = scheduler.ParsePolicy(c.String("policy")); err != nil {
		return cfg, fmt.Errorf("--policy: %w", err)
	}
	if spec := c.String("class"); spec != "" {
		if cfg.Classes, err = scheduler.ParseRules(spec, cfg.Policy); err != nil {
			return cfg, fmt.Errorf("--class: %w", err)
		}
	}
	cfg.TUN = tun.Config{Name: c.String("tun"), MTU: c.Int("mtu")}
	if cfg.TUN.MTU == 0 {
		// The smallest inner MTU over the listen addresses' families.
		cfg.TUN.MTU = innerMTU(1500, cfg.Listen[0])
		for _, a := range cfg.Listen[1:] {
			cfg.TUN.MTU = min(cfg.TUN.MTU, innerMTU(1500, a))
		}
	}
	return cfg, nil
}

func runGateway(c *cli.Context) error {
	cfg, err := parseGateway(c)
	if err != nil {
		return err
	}
	cfg.Logger = slog.Default()
	cfg.Responder.Logger = slog.Default()
	g, err := mif.NewGateway(c.Context, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := mif.ServeStatus(c.Context, mif.ControlSocket(cfg.TUN.Name), func() any {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return g.Status(ctx)
	}); err != nil {
		slog.Warn("status will not be available", "err", err)
	}
	reload := func() { reloadPSKs(c, g) }
	onHangup.Store(&reload)
	defer onHangup.Store(nil)
	return g.Run(c.Context)
}

// reloadPSKs reads --psk-file and --client-psks again (on SIGHUP) and
// hands the keys to the running gateway, which drops the clients whose
// key changed. A file that cannot be read leaves every key as it was.
func reloadPSKs(c *cli.Context, g *mif.Gateway) {
	if c.String("psk-file") == "" && c.String("client-psks") == "" {
		slog.Info("SIGHUP: no pre-shared key files to reload")
		return
	}
	psk, keys, err := readPSKs(c)
	if err != nil {
		slog.Error("SIGHUP: keeping the pre-shared keys", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
	defer cancel()
	revoked, err := g.SetPSKs(ctx, psk, keys)
	if err != nil {
		slog.Error("SIGHUP: keeping the pre-shared keys", "err", err)
		return
	}
	slog.Info("SIGHUP: pre-shared keys reloaded", "clients_with_own_key", len(keys), "shared_key", psk != nil,
		"dropped", revoked)
}

func printGatewayStatus(st mif.GatewayStatus) {
	fmt.Printf("gateway on %s, TUN %s: %d clients\n", st.Listen, st.Interface, len(st.Clients))
	for _, c := range st.Clients {
		fmt.Printf("  %s from %s, addresses %s\n", c.ID, c.Remote, strings.Join(c.Addresses, ", "))
		fmt.Printf("    IKE SA %s_i %s_r  %s  (rekeyed %d times)\n", c.IKESPIi, c.IKESPIr, c.IKESuite, c.IKERekeys)
		if c.InSPI != "" {
			fmt.Printf("    Child SA in %s out %s  %s  (rekeyed %d times)\n", c.InSPI, c.OutSPI, c.Algorithm, c.ChildRekeys)
		}
		if c.DPDChecks > 0 {
			fmt.Printf("    liveness checks: %d\n", c.DPDChecks)
		}
		fmt.Printf("    traffic: received %d packets (%d bytes), sent %d packets (%d bytes)\n", c.RxPackets, c.RxBytes, c.TxPackets, c.TxBytes)
		if len(c.Multipath) > 0 {
			fmt.Printf("    downlink policy %s\n", c.Policy)
		}
		for _, m := range c.Multipath {
			fmt.Printf("    path %d: %s via engine path %d\n", m.ID, m.Remote, m.EnginePath)
			printScheduled("      ", m)
		}
	}
	fmt.Printf("  total: sent %d packets (%d bytes), received %d packets (%d bytes)\n", st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes)
	for _, p := range st.Pools {
		fmt.Printf("  pool %s: %d addresses leased\n", p.Prefix, p.Leased)
	}
	if len(st.Drops) > 0 {
		fmt.Printf("  drops: %v\n", st.Drops)
	}
}
