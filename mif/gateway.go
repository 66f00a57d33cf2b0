package mif

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/mif/cluster"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
)

// GatewayConfig is a security gateway's setup.
type GatewayConfig struct {
	Responder ike.ResponderConfig
	// Listen are the addresses the IKE (500) and NAT-T (4500) sockets
	// bind to, a pair per address; the unspecified address listens on
	// every address of its family. Empty means 0.0.0.0, unless
	// Interfaces are given.
	//
	// The unspecified address also gets a pair of its own on each
	// address of its family the host has at start (impliedListen): a
	// socket bound to the wildcard answers from whichever address the
	// routing table picks towards the client, and a client that dialled
	// another one (an address on loopback, or on another uplink than the
	// one its packets arrive on) drops that reply behind any NAT or
	// stateful firewall. The kernel delivers to the most specific socket,
	// and a bound socket answers from its address. The wildcard pair
	// still serves addresses that appear later.
	Listen []netip.Addr
	// Interfaces, when set, are the gateway's uplinks (name globs): each
	// address of a matching interface gets a pair of sockets while it
	// exists, opened and closed as addresses come and go at run time, and
	// MOBIKE clients are told the new set each time (gateway_listeners.go).
	Interfaces []string
	TUN        tun.Config
	// Policy schedules the downlink of clients that announce extra paths
	// (the MIF extension) over all of them; PolicySingle (the zero value)
	// sends on the path each client's IKE SA uses.
	Policy scheduler.Policy
	// Classes give some downlink traffic its own policy (`--class`).
	Classes *scheduler.Classifier
	// Drain are addresses not to listen on, though Listen or Interfaces
	// name them: uplinks taken out of service (Drain changes them at run
	// time).
	Drain []netip.Addr
	// NoForwarding leaves the host's IP forwarding as it is: the host is
	// the end of the traffic it protects (`mifsec peer`), not a router.
	NoForwarding bool
	// Cluster, when set, makes the gateway a member of a cluster on etcd:
	// its pools are the cluster's shared ones and its clients are in the
	// cluster's session registry; one that logs in at another member is
	// deleted here. The caller closes it after the gateway.
	Cluster *cluster.Cluster
	Logger  *slog.Logger

	// shared is the TUN device of the Peer this gateway is one role of;
	// nil: the gateway creates its own (TUN).
	shared *sharedTUN
}

// Gateway is a running security gateway: one TUN device, a NAT-T socket
// per listen address shared by every client that talks to that address,
// and the IKE responder.
type Gateway struct {
	cfg   GatewayConfig
	log   *slog.Logger
	iface *tun.Interface
	mon   *netmon.Monitor // the uplinks' addresses; nil without Interfaces
	// lmu guards listeners, the listen addresses by data plane path ID (a
	// hole is nil), and running. It is a leaf.
	lmu       sync.RWMutex
	listeners []*listener
	drained   map[netip.Addr]bool // addresses not listened on (Drain)
	lastSnap  netmon.Snapshot     // the interfaces' last snapshot, for Drain
	// fixedListen are the addresses of Listen and those the wildcard
	// stood for at start: what Drain may open again.
	fixedListen []netip.Addr
	running     bool           // Run started: a new listener's reader starts at once
	readers     sync.WaitGroup // the listeners' port 500 readers
	engine      *dataplane.Engine
	resp        *ike.Responder
	ikeOut      *ikeSender // the responder's datagrams, off its loop
	sysctl      []sysctlValue
	record      string // where the original sysctl values are recorded

	// mu is a leaf in mif's lock order: while it is held, only dataplane
	// (readyClientInbound) and atomics are touched, never gatewayPeer.mu.
	mu      sync.Mutex
	kids    map[uint32]*gatewayChild // by inbound SPI
	clients map[*ike.RemoteClient]*gatewayClient
	mpeers  map[*ike.RemoteClient]*gatewayPeer // clients with multipath scheduling
	// probeKids is kids for the receive workers' probes (inbound SPI ->
	// *gatewayChild): a sync.Map, read-mostly, so that a lookup takes no
	// lock and a change costs O(1) with many clients. It holds only the
	// Child SAs of clients with multipath scheduling (peer set): a probe
	// reply concerns no other (onProbeReply), and an entry is some 100
	// bytes, per client on a gateway.
	probeKids sync.Map
	runCtx    context.Context // ends with Run: peers' goroutines stop with it
}

type gatewayChild struct {
	client  *ike.RemoteClient
	in, out *dataplane.SA
	group   *dataplane.PathGroup // the client's endpoint on its listener's socket
	prefix  []netip.Prefix       // the client's side
	local   []netip.Prefix       // this side: the networks the client may reach
	// peer is the client's multipath conductor, nil while the client
	// uses one path; read by receive workers.
	peer atomic.Pointer[gatewayPeer]
}

// gatewayClient is what the gateway keeps of a client beside its Child
// SAs' entries in kids: the Child SAs themselves, so that what concerns
// one client (its first MIF path, a MOBIKE move) costs as much with
// 100,000 clients as with one, and the counters of its Child SAs already
// removed (rekeyed), so that its status counts its whole life.
type gatewayClient struct {
	kids                                   []*gatewayChild // installed and not yet removed
	rxPackets, rxBytes, txPackets, txBytes uint64
}

// NewGateway opens the sockets and the TUN device, gives the TUN the first
// usable address of each pool and switches IP forwarding on.
func NewGateway(ctx context.Context, cfg GatewayConfig) (_ *Gateway, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Listen) == 0 && len(cfg.Interfaces) == 0 {
		cfg.Listen = []netip.Addr{netip.IPv4Unspecified()}
	}
	uplinks := netmon.Filter{Include: cfg.Interfaces, Ignore: []string{cfg.TUN.Name}}
	if err := uplinks.Validate(); err != nil {
		return nil, fmt.Errorf("gateway interfaces: %w", err)
	}
	for i, a := range cfg.Listen {
		if !a.IsValid() || slices.Contains(cfg.Listen[:i], a) {
			return nil, fmt.Errorf("listen address %v: invalid or given twice", a)
		}
	}
	g := &Gateway{cfg: cfg, log: log, kids: map[uint32]*gatewayChild{}, clients: map[*ike.RemoteClient]*gatewayClient{},
		mpeers: map[*ike.RemoteClient]*gatewayPeer{}, runCtx: context.Background(), ikeOut: newIKESender(log)}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	implied, err := impliedListen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	explicit := len(cfg.Listen)
	addrs := append(slices.Clone(cfg.Listen), implied...)
	g.fixedListen = slices.Clone(addrs)
	paths := make([]*dataplane.Path, 0, len(addrs))
	for i, a := range addrs {
		l, err := openListener(ctx, a, scheduler.PathID(i))
		if err != nil {
			return nil, err
		}
		l.implied = i >= explicit
		g.listeners = append(g.listeners, l)
		paths = append(paths, l.path)
	}
	queues := cfg.shared.queues(roleResponder)
	if g.iface = cfg.shared.device(); g.iface == nil {
		if g.iface, err = tun.Create(cfg.TUN); err != nil {
			return nil, err
		}
		queues = g.iface.Queues()
	}
	for _, p := range cfg.Responder.Pools {
		pool, err := ike.NewAddressPool(p)
		if err != nil {
			return nil, err
		}
		if err := g.iface.AddAddress(pool.GatewayAddress()); err != nil {
			return nil, fmt.Errorf("gateway address %s: %w", pool.GatewayAddress(), err)
		}
	}
	if err := g.iface.SetUp(); err != nil {
		return nil, err
	}
	for _, p := range cfg.Responder.Pools {
		if err := g.iface.AddRoute(p); err != nil && !errors.Is(err, os.ErrExist) {
			g.log.Debug("route to the pool", "pool", p, "err", err)
		}
	}
	if !cfg.NoForwarding {
		if err := g.enableForwarding(); err != nil {
			return nil, err
		}
	}
	g.engine, err = dataplane.NewEngine(dataplane.EngineConfig{
		Queues: queues,
		Paths:  paths,
		Control: func(msg []byte, from netip.AddrPort, p *dataplane.Path) {
			if l := g.listenerByPath(p.ID); l != nil {
				g.resp.Deliver(msg, l.addr, from, true)
			}
		},
		OnProbeReply: g.onProbeReply,
		Logger:       log,
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.Interfaces) > 0 {
		if g.mon, err = netmon.New(netmon.Config{Filter: uplinks, Logger: log}); err != nil {
			return nil, fmt.Errorf("watching the gateway's interfaces: %w", err)
		}
		g.syncListeners(ctx, <-g.mon.Updates())
	}
	if (explicit > 1 || len(cfg.Interfaces) > 0) && cfg.Responder.AdditionalAddresses == nil && cfg.Responder.AdditionalAddressesFor == nil {
		cfg.Responder.AdditionalAddressesFor = g.otherAddresses
	}
	if cfg.Cluster != nil {
		cfg.Responder.NewPool = cfg.Cluster.Pool
		cfg.Responder.Sessions = cfg.Cluster
	}
	if g.resp, err = ike.NewResponder(cfg.Responder, g, g); err != nil {
		return nil, err
	}
	if cfg.Cluster != nil {
		cfg.Cluster.OnTakeover(g.takenOver)
	}
	leaving, _, err := g.setDrained(ctx, cfg.Drain)
	if err != nil {
		return nil, err
	}
	for _, l := range leaving {
		g.removeListener(l) // no client yet to tell
	}
	return g, nil
}

// Run answers clients and carries their traffic until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	engineCtx, stopEngine := context.WithCancel(context.Background())
	g.mu.Lock()
	g.runCtx = engineCtx
	g.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { g.engine.Run(engineCtx) })
	stopSending := make(chan struct{})
	go g.ikeOut.run(stopSending)
	g.lmu.Lock()
	g.running = true
	g.lmu.Unlock()
	var listening []netip.Addr
	for _, l := range g.listenersNow() {
		g.startReader(l)
		listening = append(listening, l.addr)
	}
	if g.mon != nil {
		wg.Go(func() { g.watchInterfaces(engineCtx) })
	}
	g.log.Info("gateway listening", "addrs", listening, "interfaces", g.cfg.Interfaces, "tun", g.iface.Name(),
		"pools", g.cfg.Responder.Pools, "dpd", g.cfg.Responder.DPD)
	err := g.resp.Run(ctx)
	close(stopSending)
	<-g.ikeOut.done // the goodbyes are out before the sockets close
	stopEngine()
	wg.Wait() // the interface watcher: no listener comes or goes after this
	g.stopPeers()
	for _, l := range g.listenersNow() {
		l.ike500.Close()
	}
	g.readers.Wait()
	return err
}

// Close releases the TUN device, the sockets and the forwarding sysctls.
func (g *Gateway) Close() {
	if g.mon != nil {
		g.mon.Close()
	}
	if g.engine != nil {
		g.engine.Close() // closes the paths' sockets
	}
	for _, l := range g.listenersNow() {
		if g.engine == nil && l.natT != nil {
			l.natT.Close()
		}
		if l.ike500 != nil {
			l.ike500.Close()
		}
	}
	if g.iface != nil && g.cfg.shared == nil {
		if err := g.iface.Close(); err != nil {
			g.log.Warn("removing the TUN device", "err", err)
		}
	}
	g.restoreForwarding()
}

// takenOver deletes the IKE SAs of a client that logged in at another
// member of the cluster (by).
func (g *Gateway) takenOver(ctx context.Context, id ike.Identity, by string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := g.resp.Disconnect(ctx, id, "it logged in at "+by); err != nil {
		g.log.Warn("deleting a client that logged in at another gateway", "id", id, "by", by, "err", err)
	}
}

// SendFrom implements ike.ResponderTransport: a message to a client
// leaves from the listen address the client talks to, so that its source
// is the address the client sent to. It is queued for the gateway's
// sender (ikeSender) and written after SendFrom returns: msg must not
// change.
func (g *Gateway) SendFrom(msg []byte, local netip.Addr, to netip.AddrPort, natT bool) error {
	l := g.listenerAt(local, to)
	if l == nil {
		return errors.New("the gateway has no address to send from")
	}
	d := ikeDatagram{msg: msg, to: to, ike500: l.ike500}
	if natT {
		b := make([]byte, 4+len(msg)) // non-ESP marker
		copy(b[4:], msg)
		d = ikeDatagram{msg: b, to: to, natT: l.natT}
	}
	if !g.ikeOut.send(d) {
		return errors.New("the gateway stopped")
	}
	return nil
}

// member is the way the gateway reaches client's IKE address: its
// endpoint on the socket of the listener its IKE SA talks to.
func (g *Gateway) member(client *ike.RemoteClient) (dataplane.GroupMember, error) {
	return g.memberAt(client.Local, client.Remote)
}

// InboundSPIInUse implements ike.InboundSPIs: every client's inbound SAs
// share the engine's table of SPIs.
func (g *Gateway) InboundSPIInUse(spi uint32) bool { return g.engine.InboundSPIInUse(spi) }

// InstallChild implements ike.ResponderHandler.
func (g *Gateway) InstallChild(client *ike.RemoteClient, child *ike.ChildSA, send bool) error {
	in, out, err := NewChildSAs(child)
	if err != nil {
		return err
	}
	m, err := g.member(client)
	if err != nil {
		return err
	}
	// Both sides of the selectors, as narrowed in IKE_AUTH: the client
	// reaches only the networks it was granted (RFC 4301 §5.2).
	if err := g.engine.AddInbound(in, out, dataplane.Selectors(child.RemoteTS), dataplane.Selectors(child.LocalTS)); err != nil {
		return err
	}
	child.Wipe() // the data plane's SAs hold their own copies
	k := &gatewayChild{client: client, in: in, out: out, group: dataplane.NewPathGroup(nil, m),
		prefix: child.RemoteTS, local: child.LocalTS}
	g.mu.Lock()
	g.kids[child.InSPI] = k
	if p := g.mpeers[client]; p != nil {
		k.peer.Store(p)
		g.probeKids.Store(child.InSPI, k)
		g.readyClientInbound(p, child.InSPI)
	}
	t := g.clients[client]
	if t == nil {
		t = &gatewayClient{}
		g.clients[client] = t
	}
	t.kids = append(t.kids, k)
	g.mu.Unlock()
	if send {
		g.route(k)
	}
	return nil
}

// route sends the client's prefixes through k, replacing the routes of the
// SA k rekeyed.
func (g *Gateway) route(k *gatewayChild) {
	group := k.group
	if p := k.peer.Load(); p != nil {
		group = p.pp.Group()
		p.pp.SetSAs(k.out, k.in.SPI())
	}
	routes := make([]dataplane.Route, 0, len(k.prefix))
	for _, p := range k.prefix {
		routes = append(routes, dataplane.Route{Prefix: p, Sources: k.local, SA: k.out, Group: group})
	}
	g.engine.AddRoutes(routes...)
	for _, p := range k.prefix {
		for _, r := range g.engine.RoutesTo(p) {
			if r.SA != k.out {
				g.engine.RemoveRoutes(r.SA)
			}
		}
	}
}

// SwitchOutbound implements ike.ResponderHandler.
func (g *Gateway) SwitchOutbound(client *ike.RemoteClient, child *ike.ChildSA) {
	g.mu.Lock()
	k := g.kids[child.InSPI]
	g.mu.Unlock()
	if k == nil {
		return
	}
	if m, err := g.member(client); err == nil {
		k.group.Set(nil, m)
	}
	g.route(k)
}

// RemoveChild implements ike.ResponderHandler.
func (g *Gateway) RemoveChild(client *ike.RemoteClient, child *ike.ChildSA) {
	g.engine.RemoveInbound(child.InSPI)
	g.mu.Lock()
	k := g.kids[child.InSPI]
	delete(g.kids, child.InSPI)
	g.probeKids.Delete(child.InSPI)
	var stop *gatewayPeer
	if t := g.clients[client]; k != nil && t != nil {
		t.rxPackets += k.in.Stats.Packets.Load()
		t.rxBytes += k.in.Stats.Bytes.Load()
		t.txPackets += k.out.Stats.Packets.Load()
		t.txBytes += k.out.Stats.Bytes.Load()
		if t.kids = slices.DeleteFunc(t.kids, func(o *gatewayChild) bool { return o == k }); len(t.kids) == 0 {
			delete(g.clients, client)
			// The client's last Child SA: it is gone (or reconnects
			// with a new IKE SA, which starts without MIF paths).
			stop = g.mpeers[client]
			delete(g.mpeers, client)
		}
	}
	g.mu.Unlock()
	if stop != nil {
		stop.stop()
	}
	if k != nil {
		g.engine.RemoveRoutes(k.out)
	}
	child.Wipe() // wiped at install already; a child that failed to install is wiped here
}

// ClientMoved implements ike.ResponderPathHandler: after a MOBIKE
// UPDATE_SA_ADDRESSES, every Child SA of the client sends to its new
// endpoint, from the listener its messages now arrive on.
func (g *Gateway) ClientMoved(client *ike.RemoteClient) {
	m, err := g.member(client)
	if err != nil {
		g.log.Warn("client moved to an endpoint the gateway cannot send to", "id", client.ID, "remote", client.Remote, "err", err)
		return
	}
	g.mu.Lock()
	if t := g.clients[client]; t != nil {
		for _, k := range t.kids {
			k.group.Set(nil, m)
		}
	}
	p := g.mpeers[client]
	g.mu.Unlock()
	if p != nil {
		p.moved(m, client.Local, client.Remote)
	}
}

// Received implements ike.ResponderActivity: the packets child's inbound
// SA accepted, read from the data plane's counter.
func (g *Gateway) Received(client *ike.RemoteClient, child *ike.ChildSA) uint64 {
	g.mu.Lock()
	k := g.kids[child.InSPI]
	g.mu.Unlock()
	if k == nil {
		return 0
	}
	return k.in.Stats.Packets.Load()
}

// Sequences implements ike.SequenceCounter: how far child's sequence
// numbers have gone, read from the data plane with two atomic loads.
func (g *Gateway) Sequences(child *ike.ChildSA) (sent, received uint64) {
	g.mu.Lock()
	k := g.kids[child.InSPI]
	g.mu.Unlock()
	if k == nil {
		return 0, 0
	}
	return sequences(k.in, k.out)
}

// GatewayStatus is what `mifsec status` shows about a gateway.
type GatewayStatus struct {
	Role      string                `json:"role"` // "gateway"
	Interface string                `json:"interface"`
	Listen    string                `json:"listen"`
	Clients   []GatewayClientStatus `json:"clients"`
	// ClientCount is how many clients there are, also where Clients is
	// left out (Summary).
	ClientCount int               `json:"client_count"`
	TxPackets   uint64            `json:"tx_packets"`
	TxBytes     uint64            `json:"tx_bytes"`
	RxPackets   uint64            `json:"rx_packets"`
	RxBytes     uint64            `json:"rx_bytes"`
	Drops       map[string]uint64 `json:"drops,omitempty"`
	Pools       []ike.PoolStatus  `json:"pools,omitempty"`
	// IKEFailures counts refused IKE requests and lost clients by reason
	// (ike.Responder.Failures).
	IKEFailures map[string]uint64 `json:"ike_failures,omitempty"`
	// Redirect says whether the gateway drains and how many clients it
	// sent to other gateways (RFC 5685, ike.Responder.Drain).
	Redirect ike.RedirectStatus `json:"redirect,omitzero"`
	// InboundSAs counts the data plane's receiving SAs (every client's
	// Child SAs, rekeyed ones until deleted); Goroutines the process's.
	InboundSAs int `json:"inbound_sas"`
	Goroutines int `json:"goroutines"`
	// Cluster is the gateway's cluster as last seen, when it is a member.
	Cluster *cluster.Status `json:"cluster,omitempty"`
}

// GatewayClientStatus is one client with its Child SA's counters.
type GatewayClientStatus struct {
	ike.ClientStatus
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	// Policy and Multipath describe the downlink scheduling of a client
	// that announced MIF paths (path 0 is its IKE address).
	Policy    string          `json:"policy,omitempty"`
	Multipath []ScheduledPath `json:"multipath,omitempty"`
	Order     *OrderStatus    `json:"order,omitempty"`
	// Reinjected counts the datagrams to the client sent again on its
	// other paths after theirs failed or went away.
	Reinjected uint64 `json:"reinjected,omitempty"`
}

// SetPSKs replaces the pre-shared keys while the gateway runs and drops
// the clients whose key is no longer theirs (ike.Responder.SetPSKs).
func (g *Gateway) SetPSKs(ctx context.Context, shared []byte, perClient map[string][]byte) ([]ike.Identity, error) {
	return g.resp.SetPSKs(ctx, shared, perClient)
}

// SetEAPUsers replaces the EAP users while the gateway runs
// (ike.Responder.SetEAPUsers).
func (g *Gateway) SetEAPUsers(ctx context.Context, users *ike.EAPUsers) error {
	return g.resp.SetEAPUsers(ctx, users)
}

// Status returns the clients with their counters: each client's traffic
// over all its Child SAs, the rekeyed ones included.
func (g *Gateway) Status(ctx context.Context) GatewayStatus { return g.status(ctx, true) }

// Summary is Status without the list of clients: counters, pools and how
// many clients there are. With 100,000 clients the list is some 50 MB of
// JSON that a loaded gateway took more than 20 s to build and send, and
// some 300 MB of its memory meanwhile.
func (g *Gateway) Summary(ctx context.Context) GatewayStatus { return g.status(ctx, false) }

func (g *Gateway) status(ctx context.Context, withClients bool) GatewayStatus {
	var addrs []string
	for _, l := range g.listenersNow() {
		addrs = append(addrs, l.natT.LocalAddr().String())
	}
	st := GatewayStatus{Role: "gateway", Interface: g.iface.Name(), Listen: strings.Join(addrs, ",")}
	s := &g.engine.Stats
	st.TxPackets, st.TxBytes = s.TxPackets.Load(), s.TxBytes.Load()
	st.RxPackets, st.RxBytes = s.RxPackets.Load(), s.RxBytes.Load()
	st.Drops = dropSnapshot(s)
	st.InboundSAs, st.Goroutines = g.engine.InboundSAs(), runtime.NumGoroutine()
	// The counters before the client list: on a loaded gateway with many
	// clients the list may take what is left of ctx.
	st.IKEFailures = g.resp.Failures(ctx)
	st.Pools = g.resp.Pools(ctx)
	if g.cfg.Cluster != nil {
		cs := g.cfg.Cluster.Status()
		st.Cluster = &cs
	}
	st.Redirect = g.resp.RedirectStatus(ctx)
	if !withClients {
		st.ClientCount = g.resp.ClientCount(ctx)
		return st
	}
	clients := g.resp.Clients(ctx)
	st.ClientCount = len(clients)
	g.mu.Lock()
	totals := make(map[*ike.RemoteClient]gatewayClient, len(g.clients))
	for c, t := range g.clients {
		totals[c] = gatewayClient{rxPackets: t.rxPackets, rxBytes: t.rxBytes, txPackets: t.txPackets, txBytes: t.txBytes}
	}
	for _, k := range g.kids {
		t := totals[k.client]
		t.rxPackets += k.in.Stats.Packets.Load()
		t.rxBytes += k.in.Stats.Bytes.Load()
		t.txPackets += k.out.Stats.Packets.Load()
		t.txBytes += k.out.Stats.Bytes.Load()
		totals[k.client] = t
	}
	byInSPI := make(map[string]*ike.RemoteClient, len(g.kids))
	for spi, k := range g.kids {
		byInSPI[fmt.Sprintf("%08x", spi)] = k.client
	}
	peers := make(map[*ike.RemoteClient]*gatewayPeer, len(g.mpeers))
	for c, p := range g.mpeers {
		peers[c] = p
	}
	g.mu.Unlock()
	for _, c := range clients {
		cs := GatewayClientStatus{ClientStatus: c}
		if cl := byInSPI[c.InSPI]; cl != nil {
			t := totals[cl]
			cs.RxPackets, cs.RxBytes, cs.TxPackets, cs.TxBytes = t.rxPackets, t.rxBytes, t.txPackets, t.txBytes
			if p := peers[cl]; p != nil {
				cs.Policy, cs.Multipath, cs.Order = p.pp.Policy().String(), p.pp.Status(), p.pp.Order()
				cs.Reinjected = p.pp.reinjected.Load()
			}
		}
		st.Clients = append(st.Clients, cs)
	}
	return st
}

type sysctlValue struct{ path, old string }

// forwardingSysctls are switched on while a gateway runs.
var forwardingSysctls = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

// sysctlRecordFile is where a gateway records the forwarding sysctls'
// values from before it started, so that the next start after a crash
// (SIGKILL) restores the true originals rather than recording the 1s the
// crashed instance left. Sysctls belong to a network namespace: the name
// carries the namespace's inode as well as the TUN device's name.
func sysctlRecordFile(tunName string) string {
	var ns uint64
	var st syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &st) == nil {
		ns = st.Ino
	}
	return filepath.Join(ControlDir, fmt.Sprintf("%s.%d.sysctl", tunName, ns))
}

// enableForwarding records the forwarding sysctls' values and switches
// forwarding on.
func (g *Gateway) enableForwarding() error {
	g.record = sysctlRecordFile(g.cfg.TUN.Name)
	recorded := map[string]string{}
	if b, err := os.ReadFile(g.record); err == nil {
		for line := range strings.Lines(string(b)) {
			if path, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && slices.Contains(forwardingSysctls, path) {
				recorded[path] = v + "\n"
			}
		}
		g.log.Warn("a previous gateway on this device did not exit cleanly: its recorded sysctl values will be restored on exit",
			"record", g.record, "values", recorded)
	}
	var rec strings.Builder
	for _, path := range forwardingSysctls {
		old, ok := recorded[path]
		if !ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("reading %s: %w", path, err)
			}
			old = string(b)
		}
		fmt.Fprintf(&rec, "%s %s\n", path, strings.TrimSpace(old))
		g.sysctl = append(g.sysctl, sysctlValue{path, old})
	}
	if err := os.MkdirAll(ControlDir, 0o700); err != nil {
		return fmt.Errorf("recording sysctl values: %w", err)
	}
	if err := os.WriteFile(g.record, []byte(rec.String()), 0o600); err != nil {
		return fmt.Errorf("recording sysctl values: %w", err)
	}
	for _, s := range g.sysctl {
		if err := os.WriteFile(s.path, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("switching IP forwarding on (%s): %w", s.path, err)
		}
	}
	return nil
}

// restoreForwarding writes back the recorded sysctl values and removes the
// record.
func (g *Gateway) restoreForwarding() {
	for _, s := range g.sysctl {
		if err := os.WriteFile(s.path, []byte(s.old), 0o644); err != nil {
			g.log.Warn("restoring a sysctl", "path", s.path, "err", err)
		}
	}
	if g.sysctl != nil {
		if err := os.Remove(g.record); err != nil && !errors.Is(err, os.ErrNotExist) {
			g.log.Warn("removing the sysctl record", "err", err)
		}
	}
	g.sysctl = nil
}

// DrainClients takes the gateway out of service: new clients are sent to
// the gateways the responder's Redirector names (or refused), established
// ones are redirected there and deleted when they have not left after
// ike.ResponderConfig.DrainTimeout (ike.Responder.Drain). It returns how
// many clients are asked to leave.
func (g *Gateway) DrainClients(ctx context.Context) (int, error) {
	return g.resp.Drain(ctx)
}
