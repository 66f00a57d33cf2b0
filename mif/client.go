package mif

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	"github.com/vishvananda/netlink"
)

// ClientConfig is a VPN client's setup: the IKE session and the local
// interface it runs on.
type ClientConfig struct {
	Session ike.SessionConfig
	TUN     tun.Config
	// Device is the one interface that reaches the gateway when
	// Interfaces is nil; empty means the one the routing table uses at
	// start (or, with no route yet, the first interface that comes to
	// reach it). It is the machinery of Interfaces with one interface: its
	// sockets are bound to it, so that routes into the tunnel never
	// capture the tunnel's own packets, and a new address on it (DHCP
	// renumbering, another network on the same Wi-Fi interface) moves the
	// session there (MOBIKE) as a handover would.
	Device string
	// Interfaces, when set, watches the host's interfaces instead of
	// using Device: one path per usable interface, IKE and ESP on the
	// best one, moved (MOBIKE) when it goes away or a better one returns
	// (path_client.go).
	Interfaces *InterfaceConfig
	// Policy spreads the outbound ESP over every path (with Interfaces)
	// when the gateway negotiated the MIF extension: nil means
	// PolicyOffload then (PolicySingle with Device). PolicySingle, or a
	// gateway without the extension, keeps one path at a time, moved with
	// MOBIKE.
	Policy *scheduler.Policy
	// Classes give some traffic its own policy (`--class`); nil: all
	// traffic takes Policy.
	Classes *scheduler.Classifier
	// DNS says how the gateway's DNS servers and domains reach the host's
	// resolver; the zero value leaves the resolver alone and undoes
	// nothing (any other mode, DNSOff included, first undoes what a
	// crashed run left). Link is the TUN name.
	DNS tun.DNSOptions
	// KillSwitch keeps every packet of the host's from leaving outside
	// the tunnel, except IKE and ESP to the gateway (tun.KillSwitch), from
	// before the first IKE message until Close, reconnections included.
	// Without it, a kill switch a crashed run left on the TUN name is
	// removed.
	KillSwitch bool
	Logger     *slog.Logger

	// shared is the TUN device of the Peer this client is one role of;
	// nil: the client creates its own (TUN).
	shared *sharedTUN
}

// Client is a running VPN client: one path per usable interface of those
// ClientConfig.Interfaces watches, or of the one interface Device names
// (path_client.go).
type Client struct {
	cfg     ClientConfig
	log     *slog.Logger
	iface   *tun.Interface
	engine  *dataplane.Engine
	session *ike.Session

	// mu guards the fields below up to multi. It may be taken with
	// multi.routeMu held, never the other way round; it is never held
	// together with multi.mu (see the lock order in doc.go).
	mu       sync.Mutex
	inbound  map[uint32]bool
	routes   []netip.Prefix // added to the TUN interface
	addrs    []netip.Prefix // assigned by the gateway
	outbound *dataplane.SA
	children map[uint32]*dataplane.SA // inbound SAs by SPI, for counters
	outs     map[uint32]*dataplane.SA // outbound SAs by the Child SA's InSPI

	multi multiPath // with ClientConfig.Interfaces (path_client.go)

	dns        tun.DNS          // nil: the resolver is left alone
	dnsServers []netip.Addr     // from the last configuration reply
	dnsDomains []string         // from the last configuration reply
	dnsApplied *tun.DNSSettings // what dns holds now

	killSwitch *tun.KillSwitch // nil without ClientConfig.KillSwitch

	checking   atomic.Bool    // a liveness check runs (wake.go)
	background sync.WaitGroup // such checks, waited for by Run
}

// NewClient opens the sockets and the TUN device. Nothing is sent yet.
func NewClient(ctx context.Context, cfg ClientConfig) (_ *Client, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Classes != nil && cfg.Session.MIFClasses == "" {
		// The gateway follows them the other way (MIF_CLASSES).
		cfg.Session.MIFClasses = cfg.Classes.String()
	}
	c := &Client{cfg: cfg, log: log, inbound: map[uint32]bool{}, children: map[uint32]*dataplane.SA{}, outs: map[uint32]*dataplane.SA{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.cfg.Interfaces == nil {
		// One interface: the multi-interface machinery watching only it.
		// With no route to the gateway yet (the network is not up), every
		// interface is watched and the first that reaches it is used.
		c.cfg.Interfaces = &InterfaceConfig{}
		if c.cfg.Device == "" {
			dev, err := deviceTowards(cfg.Session.Remote.Addr())
			if err != nil {
				log.Info("no route to the gateway yet: waiting for an interface that reaches it", "gateway", cfg.Session.Remote.Addr(), "err", err)
			}
			c.cfg.Device = dev
		}
		if c.cfg.Device != "" {
			c.cfg.Interfaces.Include = []string{c.cfg.Device}
		}
		if c.cfg.Policy == nil {
			single := scheduler.PolicySingle
			c.cfg.Policy = &single
		}
	}
	if cfg.DNS.Mode != "" {
		// First, in every mode (off too): it undoes what a crashed run
		// left, and refuses a mode the host lacks before any socket or
		// device exists.
		opts := cfg.DNS
		opts.Link, opts.Logger = cfg.TUN.Name, log
		if c.dns, err = tun.NewDNS(opts); err != nil {
			return nil, err
		}
	}
	if err := c.setKillSwitch(); err != nil {
		return nil, err
	}
	if err := c.openMulti(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// setKillSwitch installs the kill switch before anything is sent, or
// removes one that a crashed run on the same TUN name left.
func (c *Client) setKillSwitch() error {
	name := c.cfg.TUN.Name
	if !c.cfg.KillSwitch {
		removed, err := tun.RemoveStaleKillSwitch(name)
		if err != nil {
			c.log.Warn("could not check for a kill switch a previous run left", "err", err)
		} else if removed {
			c.log.Warn("removed the kill switch a previous run left on " + name + " (it exited without cleaning up); traffic may leave outside the tunnel again")
		}
		return nil
	}
	gw := c.cfg.Session.Remote
	peers := []netip.AddrPort{gw}
	if gw.Port() != 4500 {
		peers = append(peers, netip.AddrPortFrom(gw.Addr(), 4500))
	}
	ks, err := tun.NewKillSwitch(tun.KillSwitchConfig{Link: name, Peers: peers})
	if err != nil {
		return err
	}
	c.killSwitch = ks
	c.log.Info("kill switch on: only the tunnel and IKE/ESP to the gateway leave this host", "gateway", gw.Addr())
	return nil
}

// keepaliveInterval is how often a NAT keepalive (RFC 3948 §2.3) goes to
// the gateway on each path, to hold the mapping of a NAT on the way open.
const keepaliveInterval = 20 * time.Second

// deviceTowards returns the interface the routing table uses to reach a.
func deviceTowards(a netip.Addr) (string, error) {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return "", fmt.Errorf("no route to the gateway %s: %v", a, err)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("interface towards %s: %w", a, err)
	}
	return link.Attrs().Name, nil
}

// Run connects and keeps the tunnel up until ctx ends. A first connection
// that fails ends it.
func (c *Client) Run(ctx context.Context) error { return c.run(ctx, true) }

// runPeer is Run for a Peer's starting side: the session tries until it
// connects, and again whenever its IKE SA is gone.
func (c *Client) runPeer(ctx context.Context) error { return c.run(ctx, false) }

func (c *Client) run(ctx context.Context, connectFirst bool) error {
	engineCtx, stopEngine := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.engine.Run(engineCtx) })
	wg.Go(func() { c.drivePaths(engineCtx) })
	wg.Go(func() { c.watchSleep(engineCtx) })
	if c.multi.pp != nil {
		wg.Go(func() { c.announcePaths(engineCtx) })
		c.multi.ppRunning.Store(true)
		wg.Go(func() {
			defer c.multi.ppRunning.Store(false)
			c.multi.pp.Run(engineCtx)
		})
	}
	defer func() {
		stopEngine()
		wg.Wait()
		c.background.Wait()
	}()
	if err := c.waitActive(ctx); err != nil {
		return err
	}
	if connectFirst {
		if err := c.session.Connect(ctx); err != nil {
			return err
		}
	}
	return c.session.Run(ctx)
}

// Status returns the session's state with the data plane's counters.
func (c *Client) Status() Status {
	st := Status{Session: c.session.Status(), Interface: c.iface.Name()}
	s := &c.engine.Stats
	st.TxPackets, st.TxBytes = s.TxPackets.Load(), s.TxBytes.Load()
	st.RxPackets, st.RxBytes = s.RxPackets.Load(), s.RxBytes.Load()
	st.Drops = dropSnapshot(s)
	if c.killSwitch != nil {
		ks := &KillSwitchStatus{}
		var err error
		if ks.DroppedPackets, ks.DroppedBytes, err = c.killSwitch.Dropped(); err != nil {
			ks.Error = err.Error()
		}
		st.KillSwitch = ks
	}
	sockets := make(map[int]*dataplane.PathStats)
	for _, p := range c.engine.Paths() {
		sockets[int(p.ID)] = &p.Stats
	}
	st.Device = c.activePath()
	st.Policy = scheduler.PolicySingle.String()
	scheduled := map[int]ScheduledPath{}
	if c.multi.mifOn.Load() {
		st.Policy = c.multi.pp.Policy().String()
		st.Order = c.multi.pp.Order()
		st.Reinjected = c.multi.pp.reinjected.Load()
		for _, sp := range c.multi.pp.Status() {
			scheduled[sp.ID] = sp
		}
	}
	// One entry per pair of an interface and a gateway address; the
	// socket's counters go with the pair to the configured address.
	for _, gp := range c.gatewayPaths(c.multi.paths.list(), c.gatewayAddrs()) {
		p := gp.path
		ps := PathStatus{ID: int(p.ID), Device: p.Name, Local: p.Local.String(),
			Remote: netip.AddrPortFrom(gp.gw, p.Gateway.Port()).String(), GSO: p.GSO, GRO: p.GRO}
		if sp, ok := scheduled[int(gp.id)]; ok {
			ps.Multipath = &sp
		}
		if gp.k == 0 {
			ps.countSocket(sockets[ps.ID])
		}
		st.Paths = append(st.Paths, ps)
	}
	return st
}

// Close releases the TUN device (with its addresses and routes) and the
// sockets.
func (c *Client) Close() {
	if c.dns != nil {
		if err := c.dns.Restore(); err != nil {
			c.log.Error("restoring the DNS settings", "err", err)
		}
	}
	c.closeMulti()
	if c.engine != nil {
		c.engine.Close()
	}
	if c.iface != nil && c.cfg.shared == nil {
		if err := c.iface.Close(); err != nil {
			c.log.Warn("removing the TUN device", "err", err)
		}
	}
	// Last: until the device and its routes are gone, traffic must not
	// leak.
	if c.killSwitch != nil {
		if err := c.killSwitch.Close(); err != nil {
			c.log.Error("removing the kill switch (nft delete table inet mifsec-"+c.cfg.TUN.Name+" removes it by hand)", "err", err)
		}
	}
}

// InstallChild implements ike.Handler: the inbound SA starts receiving.
func (c *Client) InstallChild(child *ike.ChildSA) error {
	in, out, err := NewChildSAs(child)
	if err != nil {
		return err
	}
	if err := c.engine.AddInbound(in, out, dataplane.Selectors(child.RemoteTS), dataplane.Selectors(child.LocalTS)); err != nil {
		return err
	}
	child.Wipe() // the data plane's SAs hold their own copies
	c.mu.Lock()
	defer c.mu.Unlock()
	c.children[child.InSPI] = in
	c.outs[child.InSPI] = out
	if err := c.routeLocked(child.RemoteTS); err != nil {
		return err
	}
	c.applyDNSLocked(child.RemoteTS)
	return nil
}

// ConfiguredDNSDomains implements ike.DNSDomainsHandler: the gateway's
// split DNS domains, applied with its servers.
func (c *Client) ConfiguredDNSDomains(domains []string) {
	c.mu.Lock()
	c.dnsDomains = domains
	c.mu.Unlock()
}

// applyDNSLocked gives the resolver the gateway's DNS settings once the
// routes into the tunnel exist. A tunnel that carries everything (remote
// selector /0), or a gateway that named no domain, gets every query.
func (c *Client) applyDNSLocked(remoteTS []netip.Prefix) {
	if c.dns == nil || len(c.dnsServers) == 0 {
		return
	}
	s := tun.DNSSettings{Servers: c.dnsServers, Domains: c.dnsDomains, DefaultRoute: len(c.dnsDomains) == 0}
	for _, p := range remoteTS {
		if p.Bits() == 0 {
			s.DefaultRoute = true
		}
	}
	if c.dnsApplied != nil && c.dnsApplied.Equal(s) {
		return
	}
	if err := c.dns.Apply(s); err != nil {
		c.log.Error("applying the gateway's DNS settings", "err", err)
		return
	}
	c.dnsApplied = &s
}

// routeLocked adds routes into the tunnel for prefixes not routed yet. On
// a TUN device a Peer shares, the Peer owns the routes.
func (c *Client) routeLocked(prefixes []netip.Prefix) error {
	if c.cfg.shared != nil {
		return nil
	}
	for _, p := range prefixes {
		for _, r := range splitDefault(p) {
			if containsPrefix(c.routes, r) {
				continue
			}
			if err := c.iface.AddRoute(r); err != nil {
				return err
			}
			c.routes = append(c.routes, r)
		}
	}
	return nil
}

// splitDefault turns a default route into two halves, so that it wins
// over the host's default route without replacing it.
func splitDefault(p netip.Prefix) []netip.Prefix {
	if p.Bits() != 0 {
		return []netip.Prefix{p}
	}
	if p.Addr().Is4() {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
	}
	return []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
}

func containsPrefix(list []netip.Prefix, p netip.Prefix) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

// SwitchOutbound implements ike.Handler: traffic to the Child SA's remote
// selectors goes out on its outbound SA.
func (c *Client) SwitchOutbound(child *ike.ChildSA) {
	c.mu.Lock()
	out := c.outs[child.InSPI]
	c.mu.Unlock()
	if out == nil {
		return
	}
	c.multi.routeMu.Lock()
	defer c.multi.routeMu.Unlock()
	c.multi.child = child
	group := c.multi.group
	if c.multipathFor(c.session.Status()) {
		// A rekey of a multipath session: the new SAs take over the
		// paths' probes and order at once.
		group = c.multi.pp.Group()
		c.useSAs(out, child.InSPI)
	}
	c.setRoutes(child, out, group)
	c.kickPaths()
}

// setRoutes sends the Child SA's remote selectors through out on group.
func (c *Client) setRoutes(child *ike.ChildSA, out *dataplane.SA, group *dataplane.PathGroup) {
	routes := make([]dataplane.Route, 0, len(child.RemoteTS))
	for _, p := range child.RemoteTS {
		// With several paths the route sends on the group: with one
		// member, the path IKE uses (moving it moves the ESP), or every
		// path under the multipath scheduler.
		routes = append(routes, dataplane.Route{Prefix: p, Sources: child.LocalTS, SA: out, Group: group})
	}
	c.engine.SetRoutes(routes)
}

// Sequences implements ike.SequenceCounter: how far child's sequence
// numbers have gone, read from the data plane with two atomic loads.
func (c *Client) Sequences(child *ike.ChildSA) (sent, received uint64) {
	c.mu.Lock()
	in, out := c.children[child.InSPI], c.outs[child.InSPI]
	c.mu.Unlock()
	return sequences(in, out)
}

// Received implements ike.Activity: the packets child's inbound SA
// accepted (authenticated), read under c.mu with one atomic load.
func (c *Client) Received(child *ike.ChildSA) uint64 {
	c.mu.Lock()
	in := c.children[child.InSPI]
	c.mu.Unlock()
	if in == nil {
		return 0
	}
	return in.Stats.Packets.Load()
}

// RemoveChild implements ike.Handler.
func (c *Client) RemoveChild(child *ike.ChildSA) {
	c.engine.RemoveInbound(child.InSPI)
	c.mu.Lock()
	delete(c.children, child.InSPI)
	delete(c.outs, child.InSPI)
	c.mu.Unlock()
}

// Configured implements ike.Handler: the assigned addresses go on the TUN.
func (c *Client) Configured(addrs []netip.Prefix, dns []netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		if containsPrefix(c.addrs, a) {
			continue // the same lease after a reconnect
		}
		if err := c.iface.AddAddress(a); err != nil {
			return err
		}
		c.addrs = append(c.addrs, a)
	}
	if err := c.iface.SetUp(); err != nil {
		return err
	}
	if len(dns) > 0 {
		c.log.Info("gateway assigned DNS servers", "dns", dns, "domains", c.dnsDomains)
	}
	c.dnsServers = dns
	return nil
}

// bindToDevice returns a ListenConfig whose sockets are bound to device.
func bindToDevice(device string) *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if device != "" {
				serr = unix.BindToDevice(int(fd), device)
			}
		})
		return errors.Join(err, serr)
	}}
}
