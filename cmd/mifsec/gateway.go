package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/mif"
	"github.com/mifsec/mifsec/mif/cluster"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"golang.org/x/sys/unix"
)

// The gateway's default proposals accept what the IKEv2 clients built into
// Windows 10/11 (AES-CBC-256 with SHA-1 or SHA-2 and MODP-1024; ESP
// aes256-sha1 or aes128-sha1), macOS and iOS (aes256-sha256 with modp2048
// or ecp256; ESP aes256-sha256) and strongSwan on Android offer by
// default. The gateway picks the first of its proposals a client offers,
// so AEADs come first, then AES-CBC with SHA-2 and a strong group, and
// MODP-1024 and SHA-1 last; a session that ends up with them is logged
// with a warning and listed as weak in `mifsec status`. --ike and --esp
// replace these lists.
const (
	defaultGatewayIKEProposals = defaultIKEProposals +
		",aes256-aes192-aes128-sha256-sha384-sha512-x25519-ecp256-ecp384-modp2048" +
		",aes256-aes192-aes128-sha256-sha384-sha512-modp1024" +
		",aes256-aes192-aes128-sha1-x25519-ecp256-ecp384-modp2048-modp1024"
	defaultGatewayESPProposals = defaultESPProposals + ",aes256gcm16-x25519-esn-noesn,aes128gcm16-ecp256-esn-noesn" +
		",aes256-aes192-aes128-sha256-sha384-sha512-sha1-esn-noesn" +
		",aes256-aes192-aes128-sha256-sha384-sha512-sha1-x25519-ecp256-ecp384-modp2048-modp1024-esn-noesn"
)

// defaultGatewayTxQueueLen is the gateway's TUN transmit queue: packets
// to its clients wait there for a worker to seal them. The kernel's 500
// per queue overflowed when 1,000 clients each had one echo in flight
// (19,000 dropped in 5 s, docs/gateway-scale.md); 4,096 packets hold
// what a core seals in about 80 ms.
const defaultGatewayTxQueueLen = 4096

func gatewayCommand() *cli.Command {
	flags := []cli.Flag{
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "listen", Value: cli.NewStringSlice("0.0.0.0"),
			Usage: "`ADDR[,ADDR]` the IKE (500) and NAT-T (4500) sockets bind to, a pair per address (repeatable)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "drain", Usage: "`ADDR[,ADDR]` not to listen on though --listen or --interfaces name them: uplinks taken out of service, their clients moved to the others first (the profile's `drain` is read again on SIGHUP; repeatable)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "interfaces", Usage: "the gateway's uplinks, `GLOB[,GLOB]`: listen on every address of the matching interfaces as addresses come and go, and tell clients (MOBIKE) each time (without --listen, on these only)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "local-id", Usage: "our `IDENTITY`: address, fqdn, @fqdn, user@domain or a DN", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "psk-file", Usage: "read the pre-shared key (the same for every client) from `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "client-psks", Usage: "per-client pre-shared keys, `FILE` of 'IDENTITY KEY' lines; a client listed uses its own key only"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cert", Usage: "our certificate chain, PEM `FILE` (end entity first)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key", Usage: "our private key, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ca", Usage: "CA certificates that vouch for clients, PEM `FILE`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "eap-users", Usage: "EAP-MSCHAPv2 users, `FILE` of 'IDENTITY PASSWORD' lines (mode 600; read again on SIGHUP); needs --cert/--key"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "radius", Usage: "check EAP logins with the RADIUS server at `HOST[:PORT]` (1812; accounting on the next port) instead of --eap-users; needs --cert/--key"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "radius-secret-file", Usage: "read the RADIUS shared secret from `FILE` (mode 600)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "crl", Usage: "certificate revocation lists of the --ca CAs, PEM or DER `FILE` (read again on SIGHUP)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "pool", Usage: "inner address pool `CIDR`, at most one per family (repeatable)", Required: true}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "local-ts", Usage: "protected network `CIDR` behind the gateway (repeatable)", Required: true}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "dns", Usage: "DNS server `ADDR` for clients (repeatable)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "dns-domain", Usage: "`DOMAIN` whose names the --dns servers resolve, sent to clients that ask (RFC 8598 split DNS; repeatable)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ike", Value: defaultGatewayIKEProposals, Usage: "IKE `PROPOSALS` in strongSwan's syntax, the preferred first"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "esp", Value: defaultGatewayESPProposals, Usage: "ESP `PROPOSALS` in strongSwan's syntax, the preferred first (AEADs, or aes128/aes192/aes256 with sha1/sha256/sha384/sha512)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tun", Value: "mifsec0", Usage: "`NAME` of the TUN interface to create"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "child-rekey", Value: defaultChildRekey, Usage: "rekey each client's Child SA after `DURATION`, less up to 10% jitter (0: leave it to the clients; sequence numbers running out still rekey)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "ike-rekey", Value: defaultIKERekey, Usage: "rekey each client's IKE SA after `DURATION`, less up to 10% jitter (0: leave it to the clients)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dpd", Value: 30 * time.Second,
			Usage: "check a client that sent nothing (IKE or ESP) for `DURATION`, drop it when it does not answer (0: never)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "retransmit", Value: time.Second, Usage: "first retransmission timeout of the gateway's IKE requests"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "retransmit-tries", Value: 5, Usage: "sends of a gateway's IKE request before giving up on the client"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "mtu", Usage: "TUN `MTU`; 0 fits a 1500-byte outer path"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "tun-queue", Value: defaultGatewayTxQueueLen,
			Usage: "the TUN device's transmit queue, `PACKETS` per queue waiting for the gateway to seal them (0: the kernel's 500)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-sas-per-identity", Value: 4,
			Usage: "IKE SAs one client identity may hold at once (0: no limit); a login with INITIAL_CONTACT replaces the older ones"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-half-open", Value: 1024,
			Usage: "half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet) the gateway holds at once; new clients' IKE_SA_INIT beyond it are dropped"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-half-open-per-source", Value: 128,
			Usage: "half-open IKE SAs one source address (IPv6: /64) may hold; beyond it the source must return a cookie and may only replace its stale ones"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "source-dh-budget", Value: 100 * time.Millisecond,
			Usage: "Diffie-Hellman time per second IKE_SA_INIT from one source may cost (nominal: MODP-2048 8ms, X25519 0.15ms)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dh-budget", Value: 500 * time.Millisecond,
			Usage: "Diffie-Hellman time per second IKE_SA_INIT from all sources together may cost"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-clients",
			Usage: "clients the gateway takes at most (0: no limit); beyond it IKE_SA_INIT is redirected to --redirect-to (RFC 5685) or refused with TEMPORARY_FAILURE"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "redirect-to", Usage: "`ADDR[,ADDR]` of the other gateways a full or draining gateway sends clients to, in turn (RFC 5685 redirect; `mifsec gateway drain` or SIGUSR1 drains; repeatable); without it, a --cluster-etcd member sends them to the least loaded other member"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "policy", Value: "offload", Usage: "downlink `POLICY` for clients that announce several paths (MIF): single, offload, aggregate or redundant"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "class", Usage: "traffic classes with their own policy, `RULES` like 'udp/5060-5061:redundant,dscp=ef:redundant,10.0.0.0/8+tcp:offload', a policy optionally bound to interfaces in order ('tcp/22:offload@wlan0>eth0') (docs/scheduler.md)"}),
		metricsFlag(),
		metricsClientsFlag(),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "gc-percent", Value: defaultGatewayGCPercent,
			Usage: "the Go collector's GOGC for the gateway: the heap may grow by `PERCENT` of the live data before a collection (lower: less memory per client, more collector CPU; the GOGC environment variable wins over the default, the flag over both)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "memory-limit",
			Usage: "a soft limit on the gateway's Go memory in `MIB` (GOMEMLIMIT; 0: the GOMEMLIMIT environment variable's, or none)"}),
	}
	flags = append(flags, clusterFlags()...)
	flags = append(flags,
		userFlag("root", "; as another user the key files must be readable by it for SIGHUP, and the sysctl record and control socket outlive the process in /run/mifsec"),
		&cli.StringFlag{Name: "config", Usage: "read these settings from a YAML `FILE` (keys are the flag names, required ones included; the command line wins)"},
	)
	return &cli.Command{
		Name:  "gateway",
		Usage: "run an IKEv2 security gateway that leases inner addresses to clients",
		Description: `Answers IKEv2 clients on ports 500 and 4500, authenticates them with a pre-shared key
(--psk-file, or a key per client with --client-psks), certificates (--cert, --key,
and --ca to verify clients) or EAP-MSCHAPv2 user names and passwords (--eap-users, the
gateway proving itself with --cert; or checked by a RADIUS server, --radius), leases each an inner address from the pools, and carries
their traffic to the protected networks (--local-ts) through a TUN device whose address
is the first usable one of each pool. A client from which nothing arrived for --dpd
gets a liveness check and is dropped, its addresses returned to the pool, when it does
not answer. IP forwarding is switched on while it runs. SIGHUP reads --psk-file and
--client-psks again: clients whose key changed or went are dropped, the others stay;
--eap-users, for the logins that follow; and the profile's drain list (--config): an
address listed stops being used, its clients moved to the others first, and one no
longer listed is used again. SIGUSR1, or ` + "`mifsec gateway drain`" + `, drains the gateway: it
takes no new client, sends the established ones to the --redirect-to gateways (RFC 5685
redirect) and deletes the IKE SAs of those still there after 10 s. With --max-clients a full
gateway sends new clients there too. With --cluster-etcd, gateways share the pools and the
session registry: a client keeps its address at any of them, and one that logs in
at another gateway is deleted here (docs/gateway-scale.md).
Runs until interrupted.`,
		Flags:       flags,
		Action:      runGateway, // withSetup (config.go) reads --config
		Subcommands: []*cli.Command{gatewayProfileCommand(), gatewayDrainCommand()},
	}
}

func parseGateway(c *cli.Context) (mif.GatewayConfig, error) {
	var cfg mif.GatewayConfig
	r := &cfg.Responder
	var err error
	if cfg.Interfaces, err = netmon.ParseGlobs(c.String("interfaces")); err != nil {
		return cfg, fmt.Errorf("--interfaces: %w", err)
	}
	if c.IsSet("interfaces") && len(cfg.Interfaces) == 0 {
		return cfg, errors.New("--interfaces: no interface pattern given")
	}
	listen := c.StringSlice("listen")
	if len(cfg.Interfaces) > 0 && !c.IsSet("listen") {
		listen = nil // the uplinks' addresses only
	}
	if cfg.Listen, err = parseAddrs(listen); err != nil {
		return cfg, fmt.Errorf("--listen: %w", err)
	}
	if len(cfg.Listen) == 0 && len(cfg.Interfaces) == 0 {
		return cfg, errors.New("--listen: no address")
	}
	if r.LocalID, err = ike.ParseIdentity(c.String("local-id")); err != nil {
		return cfg, fmt.Errorf("--local-id: %w", err)
	}
	creds, err := parseCredentials(c)
	if err != nil {
		return cfg, err
	}
	r.PSK, r.ClientPSKs, r.Key, r.Certificates, r.CAs = creds.psk, creds.clientPSKs, creds.key, creds.certs, creds.cas
	if err := ike.CheckClientPSKs(r.ClientPSKs); err != nil {
		return cfg, fmt.Errorf("--client-psks: %w", err)
	}
	r.IKE, r.ESP = creds.ike, creds.esp
	if f := c.String("eap-users"); f != "" {
		if r.Key == nil {
			return cfg, errors.New("--eap-users needs --cert and --key: EAP clients check the gateway by its certificate")
		}
		if r.EAPUsers, err = readEAPUsers(f); err != nil {
			return cfg, fmt.Errorf("--eap-users: %w", err)
		}
	}
	if r.RADIUS, err = parseRADIUS(c, r.LocalID); err != nil {
		return cfg, err
	}
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
	if r.DNS, err = parseAddrs(c.StringSlice("dns")); err != nil {
		return cfg, fmt.Errorf("--dns: %w", err)
	}
	if cfg.Drain, err = parseAddrs(c.StringSlice("drain")); err != nil {
		return cfg, fmt.Errorf("--drain: %w", err)
	}
	if err := parseRedirect(c, &cfg); err != nil {
		return cfg, err
	}
	for _, item := range c.StringSlice("dns-domain") {
		for _, s := range strings.Split(item, ",") {
			d, ok := wire.ParseDNSDomain(strings.TrimSpace(s))
			if !ok {
				return cfg, fmt.Errorf("--dns-domain: %q is not a domain name", s)
			}
			r.DNSDomains = append(r.DNSDomains, d)
		}
	}
	if len(r.DNSDomains) > 0 && len(r.DNS) == 0 {
		return cfg, errors.New("--dns-domain needs --dns (the servers that resolve the domains)")
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
	switch n := c.Int("max-sas-per-identity"); {
	case n < 0:
		return cfg, errors.New("--max-sas-per-identity: a negative number")
	case n == 0:
		r.MaxSAsPerIdentity = -1 // no limit
	default:
		r.MaxSAsPerIdentity = n
	}
	if c.Int("metrics-clients") < 0 {
		return cfg, errors.New("--metrics-clients: a negative number (0 reports no client's series)")
	}
	if r.MaxHalfOpen = c.Int("max-half-open"); r.MaxHalfOpen <= 0 {
		return cfg, errors.New("--max-half-open must be positive")
	}
	if r.MaxHalfOpenPerSource = c.Int("max-half-open-per-source"); r.MaxHalfOpenPerSource <= 0 {
		return cfg, errors.New("--max-half-open-per-source must be positive")
	}
	if r.SourceDHBudget = c.Duration("source-dh-budget"); r.SourceDHBudget <= 0 {
		return cfg, errors.New("--source-dh-budget must be positive")
	}
	if r.DHBudget = c.Duration("dh-budget"); r.DHBudget <= 0 {
		return cfg, errors.New("--dh-budget must be positive")
	}
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
	cfg.TUN = tun.Config{Name: c.String("tun"), MTU: c.Int("mtu"), TxQueueLen: c.Int("tun-queue")}
	if cfg.TUN.MTU == 0 {
		// The smallest inner MTU over the listen addresses' families;
		// an uplink may bring an address of either.
		families := cfg.Listen
		if len(cfg.Interfaces) > 0 {
			families = append(slices.Clone(families), netip.IPv4Unspecified(), netip.IPv6Unspecified())
		}
		cfg.TUN.MTU = innerMTU(1500, families[0], creds.espAlgs...)
		for _, a := range families[1:] {
			cfg.TUN.MTU = min(cfg.TUN.MTU, innerMTU(1500, a, creds.espAlgs...))
		}
	}
	if err := cfg.TUN.Validate(); err != nil {
		return cfg, fmt.Errorf("--tun, --mtu or --tun-queue: %w", err)
	}
	return cfg, nil
}

func runGateway(c *cli.Context) error {
	cfg, err := parseGateway(c)
	if err != nil {
		return err
	}
	if err := setGatewayGC(c, os.Getenv); err != nil {
		return err
	}
	as, metrics, err := userAndMetrics(c)
	if err != nil {
		return err
	}
	defer metrics.Close()
	cfg.Logger = slog.Default()
	cfg.Responder.Logger = slog.Default()
	ccfg, err := parseCluster(c, cfg.Listen)
	if err != nil {
		return err
	}
	if len(ccfg.Endpoints) > 0 {
		ccfg.Logger = slog.Default()
		member, err := cluster.New(c.Context, ccfg)
		if err != nil {
			return err
		}
		defer member.Close() // after the gateway's: its clients' goodbyes release their leases
		cfg.Cluster = member
		if cfg.Responder.Redirector == nil {
			// Without --redirect-to, a full or draining member sends its
			// clients to the least loaded other member.
			cfg.Responder.Redirector = member
		}
	}
	g, err := mif.NewGateway(c.Context, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	status := func() mif.GatewayStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return g.Status(ctx)
	}
	summary := func() mif.GatewayStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return g.Summary(ctx)
	}
	drain := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return g.DrainClients(ctx)
	}
	inst, stop := startInstance(c.Context, cfg.TUN.Name, mif.Control{Status: func() any { return status() }, Summary: func() any { return summary() }, Drain: drain})
	defer stop()
	// Its sockets are listening: it is ready.
	go inst.report(2*time.Second, func() (bool, string) {
		// The summary: every 2 s under systemd, the full status of
		// 100,000 clients would be some 300 MB built.
		st := summary()
		return true, fmt.Sprintf("listening on %s, clients: %d", st.Listen, st.ClientCount)
	})
	metrics.Serve(gatewayCollector{summary: g.Summary, status: g.Status, perClient: c.Int("metrics-clients")})
	// At run time the gateway adds and removes each client's routes,
	// and restores the forwarding sysctls on exit (CAP_NET_ADMIN: it
	// grants writing a network namespace's sysctls); its sockets all
	// exist now. It stays uid 0 by default: SIGHUP reads the key files
	// again (root's, mode 600) and exit removes its sysctl record from
	// /run/mifsec, which only root may write; without CAP_DAC_OVERRIDE
	// uid 0 still owns root's files, so --user with a dedicated account
	// is the stronger setting. With --interfaces it opens the IKE port
	// 500 on each new address of an uplink, and with a profile on each
	// address SIGHUP takes off the drain list (CAP_NET_BIND_SERVICE).
	keep := []uintptr{unix.CAP_NET_ADMIN}
	if len(cfg.Interfaces) > 0 || c.String("config") != "" {
		keep = append(keep, unix.CAP_NET_BIND_SERVICE)
	}
	if err := dropPrivilegesOrWarn(slog.Default(), keep, as); err != nil {
		return err
	}
	reload := func() {
		reloadPSKs(c, g)
		reloadEAPUsers(c, g)
		reloadDrain(c, g)
		if f := c.String("crl"); f != "" && cfg.Responder.CAs != nil {
			// The store is the responder's: new authentications see the
			// lists at once.
			if err := loadCRLs(cfg.Responder.CAs, f); err != nil {
				slog.Error("SIGHUP: keeping the certificate revocation lists", "err", err)
			} else {
				slog.Info("SIGHUP: certificate revocation lists reloaded", "file", f)
			}
		}
	}
	onHangup.Store(&reload)
	defer onHangup.Store(nil)
	drainOnSignal := func() {
		if n, err := drain(); err != nil {
			slog.Error("SIGUSR1: draining", "err", err)
		} else {
			slog.Info("SIGUSR1: draining", "clients_asked_to_move", n)
		}
	}
	onDrain.Store(&drainOnSignal)
	defer onDrain.Store(nil)
	return g.Run(inst.ctx)
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

// parseRADIUS reads --radius and --radius-secret-file (nil without them).
func parseRADIUS(c *cli.Context, nas ike.Identity) (*ike.RADIUSConfig, error) {
	if c.String("radius") == "" {
		if c.String("radius-secret-file") != "" {
			return nil, errors.New("--radius-secret-file needs --radius")
		}
		return nil, nil
	}
	switch {
	case c.String("eap-users") != "":
		return nil, errors.New("--radius and --eap-users exclude each other: the RADIUS server checks the passwords")
	case c.String("key") == "":
		return nil, errors.New("--radius needs --cert and --key: EAP clients check the gateway by its certificate")
	case c.String("radius-secret-file") == "":
		return nil, errors.New("--radius needs --radius-secret-file")
	}
	server, _, err := resolveGateway(c.Context, c.String("radius"), 1812)
	if err != nil {
		return nil, fmt.Errorf("--radius: %w", err)
	}
	secret, err := readSecretFile(c.String("radius-secret-file"))
	if err != nil {
		return nil, fmt.Errorf("--radius-secret-file: %w", err)
	}
	if secret = bytes.TrimRight(secret, "\r\n"); len(secret) == 0 {
		return nil, fmt.Errorf("--radius-secret-file: %s is empty", c.String("radius-secret-file"))
	}
	accounting := netip.AddrPortFrom(server.Addr(), server.Port()+1)
	return &ike.RADIUSConfig{Server: server.String(), Accounting: accounting.String(), Secret: secret, NASIdentifier: nas.Display()}, nil
}

// reloadDrain reads the profile's drain key again (on SIGHUP; absent:
// nothing drained) and drains those addresses: an operator takes an
// uplink out of service by editing the profile, and puts it back the
// same way. Without --config the drain list stays what it was.
func reloadDrain(c *cli.Context, g *mif.Gateway) {
	path := c.String("config")
	if path == "" {
		return
	}
	addrs, err := profileDrain(path)
	if err == nil {
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		err = g.Drain(ctx, addrs)
	}
	if err != nil {
		slog.Error("SIGHUP: draining gateway addresses", "err", err)
		return
	}
	slog.Info("SIGHUP: drained gateway addresses", "file", path, "drain", addrs)
}

// profileDrain returns the addresses of a profile's drain key.
func profileDrain(path string) ([]netip.Addr, error) {
	top, err := parseProfileYAML(path)
	if err != nil || top == nil {
		return nil, err
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if k := top.Content[i]; k.Value == "drain" {
			values, err := profileValues(top.Content[i+1], kindList)
			if err != nil {
				return nil, profileError(path, k.Line, k.Value, "%v", err)
			}
			addrs, err := parseAddrs(values)
			if err != nil {
				return nil, profileError(path, k.Line, k.Value, "%v", err)
			}
			return addrs, nil
		}
	}
	return nil, nil
}

// reloadEAPUsers reads --eap-users again (on SIGHUP) for the logins that
// follow; a file that cannot be read leaves the users as they were.
func reloadEAPUsers(c *cli.Context, g *mif.Gateway) {
	f := c.String("eap-users")
	if f == "" {
		return
	}
	users, err := readEAPUsers(f)
	if err == nil {
		ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
		defer cancel()
		err = g.SetEAPUsers(ctx, users)
	}
	if err != nil {
		slog.Error("SIGHUP: keeping the EAP users", "err", err)
		return
	}
	slog.Info("SIGHUP: EAP users reloaded", "file", f, "users", users.Len())
}

func printGatewayStatus(st mif.GatewayStatus) {
	fmt.Printf("gateway on %s, TUN %s: %d clients\n", st.Listen, st.Interface, st.ClientCount)
	switch r := st.Redirect; {
	case r.Draining:
		fmt.Printf("  draining: takes no new client; %d clients redirected to other gateways\n", r.Redirected)
	case r.Redirected > 0:
		fmt.Printf("  %d clients redirected to other gateways (full)\n", r.Redirected)
	}
	for _, c := range st.Clients {
		fmt.Printf("  %s from %s, addresses %s\n", ike.Printable(c.ID), c.Remote, strings.Join(c.Addresses, ", "))
		fmt.Printf("    IKE SA %s_i %s_r  %s  (rekeyed %d times)\n", c.IKESPIi, c.IKESPIr, c.IKESuite, c.IKERekeys)
		if len(c.Weak) > 0 {
			fmt.Printf("    weak algorithms: %s\n", strings.Join(c.Weak, ", "))
		}
		if c.InSPI != "" {
			fmt.Printf("    Child SA in %s out %s  %s %s mode  (rekeyed %d times)\n", c.InSPI, c.OutSPI, c.Algorithm, c.Mode, c.ChildRekeys)
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

// parseRedirect reads --max-clients and --redirect-to (RFC 5685). A
// gateway that would redirect clients to itself (an address it listens
// on, or one of this host's) is refused.
func parseRedirect(c *cli.Context, cfg *mif.GatewayConfig) error {
	r := &cfg.Responder
	if r.MaxClients = c.Int("max-clients"); r.MaxClients < 0 {
		return errors.New("--max-clients: a negative number")
	}
	targets, err := parseAddrs(c.StringSlice("redirect-to"))
	if err != nil {
		return fmt.Errorf("--redirect-to: %w", err)
	}
	if len(targets) == 0 {
		return nil
	}
	own, err := hostAddresses()
	if err != nil {
		return fmt.Errorf("--redirect-to: %w", err)
	}
	own = append(own, cfg.Listen...)
	for _, a := range targets {
		if slices.Contains(own, a.Unmap()) || a.IsLoopback() {
			return fmt.Errorf("--redirect-to: %s is an address of this gateway: clients would be sent back to it", a)
		}
	}
	if r.Redirector, err = ike.NewStaticRedirector(targets); err != nil {
		return fmt.Errorf("--redirect-to: %w", err)
	}
	return nil
}

// hostAddresses returns the addresses of this host's interfaces (in its
// network namespace).
func hostAddresses() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// gatewayDrainCommand is `mifsec gateway drain`: it asks the running
// gateway, through its control socket, to drain (as SIGUSR1 does).
func gatewayDrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "drain",
		Usage: "take the running gateway out of service: new clients and established ones go to its --redirect-to gateways (RFC 5685)",
		Description: `Asks the gateway running on the TUN device --tun, through its control socket, to drain, as
SIGUSR1 does: it takes no new client (IKE_SA_INIT is answered with a REDIRECT to a --redirect-to
gateway, or TEMPORARY_FAILURE for a client that does not follow redirects), asks each
established client to move (INFORMATIONAL with REDIRECT), and deletes the IKE SAs of the
clients still there after 10 s. A mifsec client connects to the new gateway before it leaves
the old one. The gateway keeps running, drained, until it is stopped.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tun", Value: "mifsec0", Usage: "`NAME` of the running gateway's TUN interface"},
		},
		Action: func(c *cli.Context) error {
			if err := tun.ValidateName(c.String("tun")); err != nil {
				return fmt.Errorf("--tun: %w", err)
			}
			n, err := mif.Drain(mif.ControlSocket(c.String("tun")))
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "draining: %d clients asked to move to the --redirect-to gateways\n", n)
			return nil
		},
	}
}

// defaultGatewayGCPercent is the gateway's GOGC unless told otherwise: a
// gateway's heap is mostly its clients' long-lived state, which the
// runtime's default of 100 lets the heap double over
// (docs/gateway-scale.md measures the difference).
const defaultGatewayGCPercent = 50

// setGatewayGC applies --gc-percent and --memory-limit. The defaults give
// way to the GOGC and GOMEMLIMIT environment variables, which the runtime
// already applied; a flag given wins over them.
func setGatewayGC(c *cli.Context, getenv func(string) string) error {
	if p := c.Int("gc-percent"); c.IsSet("gc-percent") || getenv("GOGC") == "" {
		if p <= 0 {
			return fmt.Errorf("--gc-percent %d: must be positive", p)
		}
		debug.SetGCPercent(p)
	}
	switch mib := c.Int("memory-limit"); {
	case mib < 0:
		return fmt.Errorf("--memory-limit %d: a negative size", mib)
	case mib > 0:
		debug.SetMemoryLimit(int64(mib) << 20)
	}
	return nil
}
