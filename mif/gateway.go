package mif

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/tun"
)

// GatewayConfig is a security gateway's setup.
type GatewayConfig struct {
	Responder ike.ResponderConfig
	// Listen is the address the IKE (500) and NAT-T (4500) sockets bind
	// to; the unspecified address listens on every address of its family.
	Listen netip.Addr
	TUN    tun.Config
	Logger *slog.Logger
}

// Gateway is a running security gateway: one TUN device, one NAT-T socket
// shared by every client, and the IKE responder.
type Gateway struct {
	cfg   GatewayConfig
	log   *slog.Logger
	iface *tun.Interface
	ikeTransport
	engine *dataplane.Engine
	resp   *ike.Responder
	sysctl []sysctlValue

	mu   sync.Mutex
	kids map[uint32]*gatewayChild // by inbound SPI
}

type gatewayChild struct {
	in, out *dataplane.SA
	remote  *dataplane.Endpoint
	prefix  []netip.Prefix // the client's side
}

type sysctlValue struct{ path, old string }

// forwardingSysctls are switched on while a gateway runs.
var forwardingSysctls = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

// NewGateway opens the sockets and the TUN device, gives the TUN the first
// usable address of each pool and switches IP forwarding on.
func NewGateway(ctx context.Context, cfg GatewayConfig) (_ *Gateway, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.IPv4Unspecified()
	}
	g := &Gateway{cfg: cfg, log: log, kids: map[uint32]*gatewayChild{}}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.Listen, 500)))
	if err != nil {
		return nil, fmt.Errorf("opening IKE port 500: %w", err)
	}
	g.ike500 = pc
	if g.natT, err = dataplane.ListenUDP(ctx, dataplane.UDPConfig{Local: netip.AddrPortFrom(cfg.Listen, 4500)}); err != nil {
		return nil, err
	}
	if g.iface, err = tun.Create(cfg.TUN); err != nil {
		return nil, err
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
	for _, path := range forwardingSysctls {
		old, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			return nil, fmt.Errorf("switching IP forwarding on (%s): %w", path, err)
		}
		g.sysctl = append(g.sysctl, sysctlValue{path, string(old)})
	}
	// The path's own Remote is never used: every route names its client.
	self, err := g.natT.NewEndpoint(g.natT.LocalAddr())
	if err != nil {
		return nil, err
	}
	g.engine, err = dataplane.NewEngine(dataplane.EngineConfig{
		Queues: g.iface.Queues(),
		Paths:  []*dataplane.Path{{ID: 0, Conn: g.natT, Remote: self}},
		Control: func(msg []byte, from netip.AddrPort, _ *dataplane.Path) {
			g.resp.Deliver(msg, from, true)
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if g.resp, err = ike.NewResponder(cfg.Responder, g, g); err != nil {
		return nil, err
	}
	return g, nil
}

// Run answers clients and carries their traffic until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	engineCtx, stopEngine := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { g.engine.Run(engineCtx) })
	wg.Go(func() { g.readPort500(g.resp.Deliver) })
	g.log.Info("gateway listening", "addr", g.cfg.Listen, "tun", g.iface.Name(), "pools", g.cfg.Responder.Pools)
	err := g.resp.Run(ctx)
	stopEngine()
	g.ike500.Close()
	wg.Wait()
	return err
}

// Close releases the TUN device, the sockets and the forwarding sysctls.
func (g *Gateway) Close() {
	if g.engine != nil {
		g.engine.Close()
	} else if g.natT != nil {
		g.natT.Close()
	}
	if g.ike500 != nil {
		g.ike500.Close()
	}
	if g.iface != nil {
		if err := g.iface.Close(); err != nil {
			g.log.Warn("removing the TUN device", "err", err)
		}
	}
	for _, s := range g.sysctl {
		if err := os.WriteFile(s.path, []byte(s.old), 0o644); err != nil {
			g.log.Warn("restoring a sysctl", "path", s.path, "err", err)
		}
	}
	g.sysctl = nil
}

// InstallChild implements ike.ResponderHandler.
func (g *Gateway) InstallChild(client *ike.Client, child *ike.ChildSA, send bool) error {
	alg, err := dataplane.ParseAlgorithm(child.Algorithm)
	if err != nil {
		return err
	}
	in, err := dataplane.NewSA(dataplane.SAConfig{SPI: child.InSPI, Algorithm: alg, Key: child.InKey, ESN: child.ESN})
	if err != nil {
		return err
	}
	out, err := dataplane.NewSA(dataplane.SAConfig{SPI: child.OutSPI, Algorithm: alg, Key: child.OutKey, ESN: child.ESN})
	if err != nil {
		return err
	}
	remote, err := g.natT.NewEndpoint(client.Remote)
	if err != nil {
		return fmt.Errorf("client endpoint %s: %w", client.Remote, err)
	}
	if err := g.engine.AddInbound(in, dataplane.Selectors(child.RemoteTS)); err != nil {
		return err
	}
	k := &gatewayChild{in: in, out: out, remote: remote, prefix: child.RemoteTS}
	g.mu.Lock()
	g.kids[child.InSPI] = k
	g.mu.Unlock()
	if send {
		g.route(k)
	}
	return nil
}

// route sends the client's prefixes through k, replacing the routes of the
// SA k rekeyed.
func (g *Gateway) route(k *gatewayChild) {
	routes := make([]dataplane.Route, 0, len(k.prefix))
	for _, p := range k.prefix {
		routes = append(routes, dataplane.Route{Prefix: p, SA: k.out, Remote: k.remote})
	}
	g.engine.AddRoutes(routes...)
	for _, r := range g.engine.Routes() {
		if r.SA != k.out && containsPrefix(k.prefix, r.Prefix) {
			g.engine.RemoveRoutes(r.SA)
		}
	}
}

// SwitchOutbound implements ike.ResponderHandler.
func (g *Gateway) SwitchOutbound(client *ike.Client, child *ike.ChildSA) {
	g.mu.Lock()
	k := g.kids[child.InSPI]
	g.mu.Unlock()
	if k == nil {
		return
	}
	if remote, err := g.natT.NewEndpoint(client.Remote); err == nil {
		k.remote = remote
	}
	g.route(k)
}

// RemoveChild implements ike.ResponderHandler.
func (g *Gateway) RemoveChild(client *ike.Client, child *ike.ChildSA) {
	g.engine.RemoveInbound(child.InSPI)
	g.mu.Lock()
	k := g.kids[child.InSPI]
	delete(g.kids, child.InSPI)
	g.mu.Unlock()
	if k != nil {
		g.engine.RemoveRoutes(k.out)
	}
}

// GatewayStatus is what `mifsec status` shows about a gateway.
type GatewayStatus struct {
	Role      string                `json:"role"` // "gateway"
	Interface string                `json:"interface"`
	Listen    string                `json:"listen"`
	Clients   []GatewayClientStatus `json:"clients"`
	TxPackets uint64                `json:"tx_packets"`
	TxBytes   uint64                `json:"tx_bytes"`
	RxPackets uint64                `json:"rx_packets"`
	RxBytes   uint64                `json:"rx_bytes"`
	Drops     map[string]uint64     `json:"drops,omitempty"`
}

// GatewayClientStatus is one client with its Child SA's counters.
type GatewayClientStatus struct {
	ike.ClientStatus
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// Status returns the clients with their counters.
func (g *Gateway) Status(ctx context.Context) GatewayStatus {
	st := GatewayStatus{Role: "gateway", Interface: g.iface.Name(), Listen: g.natT.LocalAddr().String()}
	s := &g.engine.Stats
	st.TxPackets, st.TxBytes = s.TxPackets.Load(), s.TxBytes.Load()
	st.RxPackets, st.RxBytes = s.RxPackets.Load(), s.RxBytes.Load()
	st.Drops = s.Drops.Snapshot()
	for _, c := range g.resp.Clients(ctx) {
		cs := GatewayClientStatus{ClientStatus: c}
		if spi, err := strconv.ParseUint(c.InSPI, 16, 32); err == nil {
			g.mu.Lock()
			k := g.kids[uint32(spi)]
			g.mu.Unlock()
			if k != nil {
				cs.RxPackets, cs.RxBytes = k.in.Stats.Packets.Load(), k.in.Stats.Bytes.Load()
				cs.TxPackets, cs.TxBytes = k.out.Stats.Packets.Load(), k.out.Stats.Bytes.Load()
			}
		}
		st.Clients = append(st.Clients, cs)
	}
	return st
}
