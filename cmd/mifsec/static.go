package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/mif"
	"github.com/mifsec/mifsec/tun"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"golang.org/x/sys/unix"
)

// staticConfig is a manually keyed tunnel: two SAs, as `ip xfrm state`
// would hold them, carried in UDP.
type staticConfig struct {
	local, remote netip.AddrPort
	out, in       dataplane.SAConfig
	tunName       string
	mtu           int
	queues        int
	addresses     []netip.Prefix
	routes        []netip.Prefix
	device        string
	stateDir      string
}

// Environment variables that may hold the static keys instead of files.
const (
	envKeyOut = "MIFSEC_KEY_OUT"
	envKeyIn  = "MIFSEC_KEY_IN"
)

func staticCommand() *cli.Command {
	flags := []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{Name: "local", Usage: "local outer `ADDR` or ADDR:PORT to send from and listen on", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "remote", Usage: "peer's outer `ADDR` or ADDR:PORT", Required: true}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "port", Value: 4500, Usage: "UDP `PORT` for ESP where --local/--remote name none"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "spi-out", Usage: "`SPI` of the outbound SA (0x hex or decimal, at least 256)", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "spi-in", Usage: "`SPI` of the inbound SA", Required: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key-out-file", Usage: "read the outbound key and 4-byte salt, in hex as ip xfrm writes it, from `FILE` (mode 600; or set " + envKeyOut + ")"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key-in-file", Usage: "read the inbound key and salt in hex from `FILE` (mode 600; or set " + envKeyIn + ")"}),
		// Keys on the command line are visible to every local user
		// (/proc/PID/cmdline): the flags only explain where keys go now.
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key-out", Hidden: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "key-in", Hidden: true}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "state-dir", Value: defaultStateDir, Usage: "`DIR` that records, per outbound key, the highest sequence number sent, so that no run repeats a nonce"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "alg", Value: "aes256gcm16", Usage: "`ALGORITHM`: aes128gcm16, aes256gcm16, chacha20poly1305, or aes128/aes192/aes256 with -sha1, -sha256, -sha384 or -sha512 (aes256-sha256)"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "esn", Usage: "use 64-bit extended sequence numbers"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "replay-window", Value: dataplane.DefaultReplayWindow, Usage: "anti-replay window in `PACKETS` (32-65536)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tun", Value: "mifsec0", Usage: "`NAME` of the TUN interface to create"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "address", Usage: "inner `CIDR` for the TUN interface (repeatable)", Required: true}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "route", Usage: "extra `CIDR` routed into the tunnel (repeatable)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "mtu", Usage: "TUN `MTU`; 0 fits a 1500-byte outer path"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "queues", Usage: "TUN queues, one worker each; 0 means one per CPU"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "bind-device", Usage: "send and receive ESP only through interface `IFNAME`"}),
		metricsFlag(),
		userFlag("nobody", ""),
		&cli.StringFlag{Name: "config", Usage: "read these settings from a YAML `FILE` (keys are the flag names)"},
	}
	return &cli.Command{
		Name:  "static",
		Usage: "run a tunnel with manually keyed SAs (no IKE)",
		Description: `Runs ESP in UDP between two hosts with keys given by hand, as 'ip xfrm state'
would hold them. The peer runs the mirror image: swapped --local/--remote,
--spi-in/--spi-out and the two keys. Keys are the cipher key followed by the
4-byte salt, in hex: 20 bytes for aes128gcm16, 36 for aes256gcm16 and
chacha20poly1305; for AES-CBC with an HMAC the encryption key followed by the
integrity key (64 bytes for aes256-sha256). They come from files only their owner may read
(--key-out-file, --key-in-file) or from the environment (` + envKeyOut + `,
` + envKeyIn + `), never from the command line. Each run starts its sequence
numbers above the highest one recorded for the outbound key in --state-dir, so
that restarting never sends two packets under the same nonce. Packets from the
peer must come from its --address network or a --route.`,
		Flags:  flags,
		Action: runStatic,
	}
}

// parseStatic checks every setting; nothing is created before it succeeds.
func parseStatic(c *cli.Context) (*staticConfig, error) {
	cfg := &staticConfig{tunName: c.String("tun"), mtu: c.Int("mtu"), queues: c.Int("queues"), device: c.String("bind-device")}
	port := c.Int("port")
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("--port %d: must be 1-65535", port)
	}
	var err error
	if cfg.local, err = parseEndpoint(c.String("local"), uint16(port)); err != nil {
		return nil, fmt.Errorf("--local: %w", err)
	}
	if cfg.remote, err = parseEndpoint(c.String("remote"), uint16(port)); err != nil {
		return nil, fmt.Errorf("--remote: %w", err)
	}
	if cfg.local.Addr().Is4() != cfg.remote.Addr().Is4() {
		return nil, fmt.Errorf("--local %s and --remote %s are of different address families", cfg.local.Addr(), cfg.remote.Addr())
	}
	alg, err := dataplane.ParseAlgorithm(c.String("alg"))
	if err != nil {
		return nil, fmt.Errorf("--alg: %w", err)
	}
	for _, d := range []struct {
		sa       *dataplane.SAConfig
		spi, key string
		outbound bool
	}{{&cfg.out, "spi-out", "key-out", true}, {&cfg.in, "spi-in", "key-in", false}} {
		spi, err := parseSPI(c.String(d.spi))
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", d.spi, err)
		}
		hexKey, from, err := readStaticKey(c, d.key)
		if err != nil {
			return nil, err
		}
		key, err := parseKey(hexKey, alg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
		*d.sa = dataplane.SAConfig{SPI: spi, Algorithm: alg, Key: key, ESN: c.Bool("esn"), Outbound: d.outbound}
		if !d.outbound {
			d.sa.ReplayWindow = c.Int("replay-window") // the outbound SA has none
		}
	}
	if cfg.out.SPI == cfg.in.SPI {
		return nil, fmt.Errorf("--spi-out and --spi-in are both %#x: each direction needs its own SA", cfg.in.SPI)
	}
	if bytes.Equal(cfg.out.Key, cfg.in.Key) {
		// The peer would send under our key from its own counter:
		// nonces would repeat between the two directions.
		return nil, errors.New("the outbound and inbound keys are the same: each direction needs its own key")
	}
	if cfg.stateDir = c.String("state-dir"); cfg.stateDir == "" {
		return nil, errors.New("--state-dir: no directory: the sequence numbers sent must be recorded")
	}
	if err := tun.ValidateName(cfg.tunName); err != nil {
		return nil, fmt.Errorf("--tun: %w", err)
	}
	if cfg.addresses, err = parsePrefixes(c.StringSlice("address"), false); err != nil {
		return nil, fmt.Errorf("--address: %w", err)
	}
	if cfg.routes, err = parsePrefixes(c.StringSlice("route"), true); err != nil {
		return nil, fmt.Errorf("--route: %w", err)
	}
	if cfg.mtu == 0 {
		cfg.mtu = innerMTU(1500, cfg.remote.Addr(), alg)
	}
	return cfg, nil
}

// staticStatus is what the metrics report of a static tunnel: always
// established, one Child SA (the manually keyed pair), one path.
func staticStatus(e *dataplane.Engine, cfg *staticConfig, out, in *dataplane.SA) mif.Status {
	s := &e.Stats
	st := mif.Status{Interface: cfg.tunName, Device: cfg.device,
		TxPackets: s.TxPackets.Load(), TxBytes: s.TxBytes.Load(), RxPackets: s.RxPackets.Load(), RxBytes: s.RxBytes.Load(),
		Drops: s.Drops.Snapshot()}
	if n := s.SequenceExhausted.Load(); n != 0 {
		st.Drops["sequence-exhausted"] = n
	}
	st.Session.State = "established"
	st.Session.Child = &ike.ChildStatus{InSPI: staticSPI(in.SPI()), OutSPI: staticSPI(out.SPI()), Algorithm: out.Algorithm().String(), Mode: "tunnel"}
	for _, p := range e.Paths() {
		st.Paths = append(st.Paths, mif.PathStatus{ID: int(p.ID), Device: cfg.device, Remote: cfg.remote.String(),
			TxPackets: p.Stats.TxPackets.Load(), TxBytes: p.Stats.TxBytes.Load(), RxPackets: p.Stats.RxPackets.Load(), RxBytes: p.Stats.RxBytes.Load()})
	}
	return st
}

// innerMTU is the largest inner packet whose ESP-in-UDP datagram fits a path
// MTU of pathMTU to remote with every ESP algorithm in algs (AES-GCM when
// none is given): AES-CBC with its 16-byte IV, block padding and longer
// ICVs leaves less room than an AEAD.
func innerMTU(pathMTU int, remote netip.Addr, algs ...dataplane.Algorithm) int {
	outer := 20 + 8
	if remote.Is6() {
		outer = 40 + 8
	}
	if len(algs) == 0 {
		algs = []dataplane.Algorithm{dataplane.AES256GCM16}
	}
	n := pathMTU
	for _, a := range algs {
		n = min(n, a.MaxPayload(pathMTU-outer))
	}
	return n
}

// espAlgorithms returns the data plane algorithms ESP proposals allow,
// refusing one the data plane does not run.
func espAlgorithms(specs []ike.ProposalSpec) ([]dataplane.Algorithm, error) {
	var out []dataplane.Algorithm
	for _, spec := range specs {
		for _, name := range spec.DataPlaneNames() {
			a, err := dataplane.ParseAlgorithm(name)
			if err != nil {
				return nil, fmt.Errorf("proposal %s: %w", spec, err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

func parseEndpoint(s string, defaultPort uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is neither an address nor address:port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), defaultPort), nil
}

// readStaticKey reads one direction's key ("key-out" or "key-in") from its
// file or the environment, and says where it came from. The environment
// variable is cleared once read, so that nothing started later inherits it.
func readStaticKey(c *cli.Context, name string) (hexKey, from string, err error) {
	fileFlag, env := name+"-file", envKeyOut
	if name == "key-in" {
		env = envKeyIn
	}
	if c.String(name) != "" {
		return "", "", fmt.Errorf("--%s: keys are not taken on the command line (visible to every local user) or from --config: put the key in a file of mode 600 and give --%s, or set %s", name, fileFlag, env)
	}
	envValue, inEnv := os.LookupEnv(env)
	os.Unsetenv(env)
	switch path := c.String(fileFlag); {
	case path != "" && inEnv:
		return "", "", fmt.Errorf("both --%s and %s are given: choose one", fileFlag, env)
	case path != "":
		b, err := readSecretFile(path)
		if err != nil {
			return "", "", fmt.Errorf("--%s: %w", fileFlag, err)
		}
		return strings.TrimSpace(string(b)), "--" + fileFlag + " " + path, nil
	case inEnv:
		return strings.TrimSpace(envValue), env, nil
	}
	return "", "", fmt.Errorf("no %s key: give --%s FILE or set %s", strings.TrimPrefix(name, "key-")+"bound", fileFlag, env)
}

func parseSPI(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 32-bit number", s)
	}
	if v < 256 {
		return 0, fmt.Errorf("SPI %#x is reserved: use 256 (0x100) or more", v)
	}
	return uint32(v), nil
}

func parseKey(s string, alg dataplane.Algorithm) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil {
		return nil, errors.New("not a hex string")
	}
	if len(key) != alg.KeyLen() {
		if !alg.AEAD() {
			return nil, fmt.Errorf("%s needs %d bytes (the encryption key, then the integrity key), got %d", alg, alg.KeyLen(), len(key))
		}
		return nil, fmt.Errorf("%s needs %d bytes (%d-byte key and 4-byte salt), got %d", alg, alg.KeyLen(), alg.KeyLen()-dataplane.SaltLen, len(key))
	}
	return key, nil
}

// parseAddrs parses addresses given as repeated flags, each a
// comma-separated list; an address given twice is refused.
func parseAddrs(list []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return nil, err
			}
			if slices.Contains(out, a) {
				return nil, fmt.Errorf("%s given twice", a)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

func parsePrefixes(list []string, masked bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix", s)
			}
			if masked {
				p = p.Masked()
			}
			out = append(out, p)
		}
	}
	return out, nil
}

func runStatic(c *cli.Context) error {
	cfg, err := parseStatic(c)
	if err != nil {
		return err
	}
	as, metrics, err := userAndMetrics(c)
	if err != nil {
		return err
	}
	defer metrics.Close()
	seq, err := openSequenceState(cfg.stateDir, cfg.out.Algorithm, cfg.out.Key)
	if err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	defer seq.Close()
	cfg.out.StartAfter = seq.mark
	out, err := dataplane.NewSA(cfg.out)
	if errors.Is(err, dataplane.ErrSequenceExhausted) {
		return fmt.Errorf("the outbound key has sent its last sequence number in earlier runs (recorded in %s): make new keys", cfg.stateDir)
	}
	if err != nil {
		return err
	}
	out.SetSequenceLimit(seq.mark) // nothing may be sent before the first block is stored
	in, err := dataplane.NewSA(cfg.in)
	if err != nil {
		return err
	}
	// The SAs hold the keys now (NewSA copies them): wipe ours (L7).
	clear(cfg.out.Key)
	clear(cfg.in.Key)
	conn, err := udp.Listen(c.Context, udp.Config{Local: cfg.local, Device: cfg.device})
	if err != nil {
		return err
	}
	remote, err := conn.NewEndpoint(cfg.remote)
	if err != nil {
		conn.Close()
		return err
	}
	iface, err := tun.Create(tun.Config{Name: cfg.tunName, MTU: cfg.mtu, Queues: cfg.queues})
	if err != nil {
		conn.Close()
		return err
	}
	defer iface.Close()
	// Inner networks: the peer sends from them and we route to them.
	var networks dataplane.Selectors
	for _, p := range cfg.addresses {
		if err := iface.AddAddress(p); err != nil {
			conn.Close()
			return err
		}
		networks = append(networks, p.Masked())
	}
	if err := iface.SetUp(); err != nil {
		conn.Close()
		return err
	}
	for _, p := range cfg.routes {
		if err := iface.AddRoute(p); err != nil {
			conn.Close()
			return err
		}
		networks = append(networks, p)
	}
	engine, err := dataplane.NewEngine(dataplane.EngineConfig{
		Queues: iface.Queues(),
		Paths:  []*dataplane.Path{{ID: 0, Conn: conn, Remote: remote}},
	})
	if err != nil {
		conn.Close()
		return err
	}
	routes := make([]dataplane.Route, 0, len(networks))
	for _, p := range networks {
		routes = append(routes, dataplane.Route{Prefix: p, Sources: dataplane.AnyAddress, SA: out})
	}
	engine.SetRoutes(routes)
	// Manual keys name no selectors for this side: the peer's packets
	// must come from its networks, and may go to any address here.
	if err := engine.AddInbound(in, out, networks, dataplane.AnyAddress); err != nil {
		conn.Close()
		return err
	}
	// No control socket: both ends of a test or a benchmark run on one
	// host with one TUN name, in two network namespaces, and the sockets
	// share /run. systemd still hears how it is.
	inst, stop := startInstance(c.Context, "", mif.Control{})
	defer stop()
	metrics.Serve(statusCollector{func() mif.Status { return staticStatus(engine, cfg, out, in) }})
	// At run time static changes routes and addresses only when it
	// stops (CAP_NET_ADMIN); the sequence state file stays open.
	if err := dropPrivilegesOrWarn(slog.Default(), []uintptr{unix.CAP_NET_ADMIN}, as); err != nil {
		return err
	}
	gso, gro := conn.Offloads()
	slog.Info("tunnel up", "tun", iface.Name(), "mtu", cfg.mtu, "queues", len(iface.Queues()),
		"local", conn.LocalAddr(), "remote", cfg.remote, "alg", out.Algorithm(),
		"spi_out", fmt.Sprintf("%#x", out.SPI()), "spi_in", fmt.Sprintf("%#x", in.SPI()), "first_seq", out.LastSequence()+1, "udp_gso", gso, "udp_gro", gro)
	// The first block is stored only now, so that a run that fails to
	// start costs the key no sequence numbers.
	if err := startSequence(seq, out); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	go keepSequenceAhead(ctx, seq, out, slog.Default())
	go inst.report(time.Second, func() (bool, string) {
		s := &engine.Stats
		return true, fmt.Sprintf("sent %d packets, received %d", s.TxPackets.Load(), s.RxPackets.Load())
	})
	err = engine.Run(inst.ctx)
	out.Wipe() // the engine has stopped: nothing seals or opens any more
	in.Wipe()
	s := &engine.Stats
	slog.Info("tunnel down", "tx_packets", s.TxPackets.Load(), "rx_packets", s.RxPackets.Load(),
		"drops", s.Drops.Snapshot(), "send_errors", s.SendErrors.Load())
	return err
}
