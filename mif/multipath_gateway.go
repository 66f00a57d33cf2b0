package mif

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/scheduler"
)

// Multipath on the gateway: a client that announces extra paths with the
// MIF extension (MIF_PATH_ADD) gets a peerPaths of its own, whose path 0
// is the address its IKE SA uses (Client.Remote) and whose further paths
// are the MIF paths, each the address the gateway observed, on the socket
// of the listen address the client talks to. The client's routes send on
// that group: the gateway probes every path and schedules the downlink by
// the same code and policy as the client schedules its uplink.
//
// Probes of every client arrive on the receive workers; they are handed
// to the client's peerPaths through a sync.Map by inbound SPI, so that a
// worker looks it up without a lock. A client
// without MIF paths has its probe requests answered directly.

// gatewayPeer is one client's multipath state.
type gatewayPeer struct {
	pp     *peerPaths
	cancel context.CancelFunc
	done   chan struct{}

	// mu is a leaf: never held together with Gateway.mu.
	mu    sync.Mutex
	paths map[uint16]ike.PathInfo // the client's MIF paths
}

// kindOf maps a MIF path kind to the scheduler's.
func kindOf(k wire.PathKind) scheduler.Kind {
	switch k {
	case wire.PathKindEthernet:
		return scheduler.KindEthernet
	case wire.PathKindWLAN:
		return scheduler.KindWLAN
	case wire.PathKindCellular:
		return scheduler.KindCellular
	}
	return scheduler.KindOther
}

// onProbeReply takes a probe reply a receive worker opened to the
// client's peerPaths (the engine answers requests itself).
func (g *Gateway) onProbeReply(ev *dataplane.ProbeEvent) {
	v, ok := g.probeKids.Load(ev.SPI)
	if !ok {
		return
	}
	if p := v.(*gatewayChild).peer.Load(); p != nil {
		p.pp.HandleReply(ev)
	}
}

// readyClientInbound readies the inbound SA spi of a multipath client for
// what its paths deliver (receiveOverPaths).
func (g *Gateway) readyClientInbound(p *gatewayPeer, spi uint32) {
	if err := receiveOverPaths(g.engine, spi, p.pp.Policy()); err != nil {
		g.log.Warn("readying a client's inbound SA for several paths", "spi", spi, "err", err)
	}
}

// memberAt is the way the gateway reaches a client's address remote from
// its own address local: the client's endpoint on the socket of local's
// listener.
func (g *Gateway) memberAt(local netip.Addr, remote netip.AddrPort) (dataplane.GroupMember, error) {
	l := g.listenerAt(local, remote)
	ep, err := l.natT.NewEndpoint(remote)
	if err != nil {
		return dataplane.GroupMember{}, fmt.Errorf("client endpoint %s: %w", remote, err)
	}
	return dataplane.GroupMember{Path: l.path.ID, Remote: ep}, nil
}

// PathAdded implements ike.ResponderPathHandler: the client's first MIF
// path turns multipath on for it (unless the policy is single), and every
// path is probed and scheduled.
func (g *Gateway) PathAdded(client *ike.RemoteClient, info ike.PathInfo) {
	if g.cfg.Policy == scheduler.PolicySingle {
		g.log.Debug("client path added (downlink policy single: not used)", "id", client.ID, "path", info.ID, "remote", info.Remote)
		return
	}
	m, err := g.memberAt(info.Local, info.Remote)
	if err != nil {
		g.log.Warn("client path the gateway cannot send to", "id", client.ID, "path", info.ID, "remote", info.Remote, "err", err)
		return
	}
	g.mu.Lock()
	p := g.mpeers[client]
	var reroute []*gatewayChild
	if p == nil && !g.hasChildLocked(client) {
		// Multipath scheduling ends with the client's last Child SA
		// (RemoveChild): one without any would keep its goroutines for
		// ever.
		g.mu.Unlock()
		g.log.Info("client path announced without a Child SA: ignored", "id", client.ID, "path", info.ID)
		return
	}
	if p == nil {
		ctx, cancel := context.WithCancel(g.runCtx)
		p = &gatewayPeer{cancel: cancel, done: make(chan struct{}), paths: map[uint16]ike.PathInfo{},
			pp: newPeerPaths(peerPathsConfig{Engine: g.engine, Policy: g.cfg.Policy, Classes: g.classesFor(client), Logger: g.log.With("client", client.ID.Display())})}
		g.mpeers[client] = p
		go func() {
			defer close(p.done)
			p.pp.Run(ctx)
		}()
		for _, k := range g.clients[client].kids {
			k.peer.Store(p)
			g.probeKids.Store(k.in.SPI(), k)
			g.readyClientInbound(p, k.in.SPI())
			reroute = append(reroute, k)
		}
	}
	g.mu.Unlock()
	if reroute != nil {
		m0, err := g.member(client)
		if err == nil {
			err = p.pp.AddPath(0, scheduler.KindOther, 0, p.pp.localInterface(client.Local), client.PathInterface, m0)
		}
		if err != nil {
			g.log.Warn("scheduling a client's IKE path", "id", client.ID, "err", err)
		}
		p.pp.SetFallback(0)
		// The Child SAs that send now send on the group: only their
		// routes change.
		for _, k := range reroute {
			if g.engine.SetRouteGroup(k.out, p.pp.Group()) > 0 {
				p.pp.SetSAs(k.out, k.in.SPI())
			}
		}
		g.log.Info("multipath on for a client", "id", client.ID, "policy", g.cfg.Policy)
	}
	p.mu.Lock()
	_, again := p.paths[info.ID]
	p.paths[info.ID] = info
	p.mu.Unlock()
	if again {
		p.pp.RemovePath(scheduler.PathID(info.ID))
	}
	if err := p.pp.AddPath(scheduler.PathID(info.ID), kindOf(info.Kind), int(info.Priority), p.pp.localInterface(info.Local), info.Interface, m); err != nil {
		g.log.Warn("scheduling a client path", "id", client.ID, "path", info.ID, "err", err)
		return
	}
	g.log.Debug("client path scheduled", "id", client.ID, "path", info.ID, "remote", info.Remote)
}

// hasChildLocked reports whether client has a Child SA; g.mu is held.
func (g *Gateway) hasChildLocked(client *ike.RemoteClient) bool {
	t := g.clients[client]
	return t != nil && len(t.kids) > 0
}

// PathRemoved implements ike.ResponderPathHandler.
func (g *Gateway) PathRemoved(client *ike.RemoteClient, id uint16) {
	g.mu.Lock()
	p := g.mpeers[client]
	g.mu.Unlock()
	if p == nil || id == 0 {
		return
	}
	p.mu.Lock()
	delete(p.paths, id)
	p.mu.Unlock()
	p.pp.RemovePath(scheduler.PathID(id))
	g.log.Debug("client path removed", "id", client.ID, "path", id)
}

// moved makes path 0 the client's new IKE path m (between the gateway's
// local and the client's remote). It takes the kind and priority of the
// MIF path over that pair, if there is one (the client moved IKE to a path
// it had announced).
func (p *gatewayPeer) moved(m dataplane.GroupMember, local netip.Addr, remote netip.AddrPort) {
	kind, tier, peerIface := scheduler.KindOther, 0, ""
	p.mu.Lock()
	for _, info := range p.paths {
		if info.Remote == remote && info.Local == local {
			kind, tier, peerIface = kindOf(info.Kind), int(info.Priority), info.Interface
		}
	}
	p.mu.Unlock()
	p.pp.RemovePath(0)
	if err := p.pp.AddPath(0, kind, tier, p.pp.localInterface(local), peerIface, m); err != nil {
		p.pp.log.Warn("scheduling a client's IKE path", "err", err)
	}
	p.pp.SetFallback(0)
}

// leaveAddress takes the client's paths through the gateway's address a
// (its listener's engine path) out of the scheduler before a's socket
// closes: what was in flight on them is sent again on the client's other
// paths. The client withdraws its MIF paths when it learns the address is
// gone. When its IKE SA's own path (0) goes too, the downlink stays on the
// others until the client moves its IKE SA (moved puts path 0 back).
func (p *gatewayPeer) leaveAddress(a netip.Addr, enginePath scheduler.PathID) {
	var gone []scheduler.PathID
	if m, ok := p.pp.member(0); ok && m.Path == enginePath {
		gone = append(gone, 0)
	}
	p.mu.Lock()
	for id, info := range p.paths {
		if info.Local == a {
			gone = append(gone, scheduler.PathID(id))
			delete(p.paths, id)
		}
	}
	p.mu.Unlock()
	for _, id := range gone {
		p.pp.RemovePath(id)
	}
}

// stop ends the peer's goroutines and waits for them.
func (p *gatewayPeer) stop() {
	p.cancel()
	<-p.done
}

// stopPeers stops every client's multipath goroutines.
func (g *Gateway) stopPeers() {
	g.mu.Lock()
	peers := g.mpeers
	g.mpeers = map[*ike.RemoteClient]*gatewayPeer{}
	g.mu.Unlock()
	for _, p := range peers {
		p.stop()
	}
}

// classesFor returns the traffic classes of client's downlink: those the
// client announced (MIF_CLASSES: its own, followed the other way) ahead
// of the gateway's --class, or the gateway's alone.
func (g *Gateway) classesFor(client *ike.RemoteClient) *scheduler.Classifier {
	if client.PeerClasses == "" {
		return g.cfg.Classes
	}
	c, err := g.cfg.Classes.WithPeerRules(client.PeerClasses, g.cfg.Policy)
	if err != nil {
		g.log.Info("ignoring a client's traffic classes", "id", client.ID, "err", err)
		return g.cfg.Classes
	}
	return c
}
