package mif

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"golang.org/x/sys/unix"
)

// The gateway's addresses: a listener per address, each an IKE socket
// (500), a NAT-T socket (4500) and the data plane path (ID = its index in
// Gateway.listeners) that sends on the NAT-T socket. Three kinds:
//
//   - explicit: named by GatewayConfig.Listen, opened at start, kept;
//   - implied: an address the host had at start, opened because a
//     wildcard was asked for (impliedListen), kept, not announced;
//   - dynamic: an address of an interface matching
//     GatewayConfig.Interfaces (a multihomed gateway's uplinks), opened
//     when it appears and closed when it goes, at run time, and announced
//     to MOBIKE clients each time the set changes.
//
// Before a dynamic address's socket closes, every client's MIF paths
// through it leave the scheduler, and what was in flight on them is sent
// again on the client's other paths.

// listener is one listen address.
type listener struct {
	addr netip.Addr
	// implied: opened for an address of the host because a wildcard was
	// asked for, not named by Listen (it is not announced to clients).
	implied bool
	// dynamic: an address of an interface of GatewayConfig.Interfaces.
	dynamic bool
	// draining: Drain takes it out of service; it is no longer announced
	// and closes once the clients were told (guarded by Gateway.lmu).
	draining bool
	ike500   *net.UDPConn
	natT     *udp.Conn
	path     *dataplane.Path
}

// openListener opens the sockets of address a and its data plane path id
// (not yet added to an engine).
func openListener(ctx context.Context, a netip.Addr, id scheduler.PathID) (_ *listener, err error) {
	l := &listener{addr: a}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	// SO_REUSEADDR lets a wildcard and specific addresses share the
	// ports (root only: they are below 1024).
	lc := net.ListenConfig{Control: ike500Options}
	pc, err := lc.ListenPacket(ctx, "udp", netip.AddrPortFrom(a, 500).String())
	if err != nil {
		return nil, fmt.Errorf("opening IKE port 500 on %s: %w", a, err)
	}
	l.ike500 = pc.(*net.UDPConn)
	if l.natT, err = udp.Listen(ctx, udp.Config{Local: netip.AddrPortFrom(a, 4500), ReuseAddr: true}); err != nil {
		return nil, fmt.Errorf("opening NAT-T port 4500 on %s: %w", a, err)
	}
	// The path's own Remote is never used: every route names its
	// client's endpoint.
	self, err := l.natT.NewEndpoint(l.natT.LocalAddr())
	if err != nil {
		return nil, err
	}
	l.path = &dataplane.Path{ID: id, Conn: l.natT, Remote: self}
	return l, nil
}

// close closes the sockets of a listener that no engine owns.
func (l *listener) close() {
	if l.ike500 != nil {
		l.ike500.Close()
	}
	if l.natT != nil {
		l.natT.Close()
	}
}

// listenerByPath returns the listener of data plane path id, nil when
// it is gone.
func (g *Gateway) listenerByPath(id scheduler.PathID) *listener {
	g.lmu.RLock()
	defer g.lmu.RUnlock()
	if int(id) < len(g.listeners) {
		return g.listeners[id]
	}
	return nil
}

// listenersNow returns the listeners (no holes).
func (g *Gateway) listenersNow() []*listener {
	g.lmu.RLock()
	defer g.lmu.RUnlock()
	out := make([]*listener, 0, len(g.listeners))
	for _, l := range g.listeners {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// listenerAt returns the listener of the gateway address local (as the
// responder reported it: where the client's messages arrive), else the
// first of remote's address family, else the first. Where a client's
// IKE SA and each of its MIF paths arrive is the responder's to say, from
// authenticated messages only, so a flood of spoofed IKE_SA_INIT cannot
// make the gateway answer a client from the wrong address. It is nil only
// when the gateway has no address at all.
func (g *Gateway) listenerAt(local netip.Addr, remote netip.AddrPort) *listener {
	g.lmu.RLock()
	defer g.lmu.RUnlock()
	var family, first *listener
	for _, l := range g.listeners {
		switch {
		case l == nil:
		case l.addr == local:
			return l
		case family == nil && l.addr.Is4() == remote.Addr().Is4():
			family = l
		case first == nil:
			first = l
		}
	}
	if family != nil {
		return family
	}
	return first
}

// otherAddresses are the listen addresses a MOBIKE client that talks to
// local can move to (RFC 4555 §3.4), and a mifsec client can build paths
// to: every specific one but local. A client that loses its way to that
// address keeps its IKE SA on another.
func (g *Gateway) otherAddresses(local netip.Addr) []netip.Addr {
	var others []netip.Addr
	g.lmu.RLock()
	defer g.lmu.RUnlock()
	for _, l := range g.listeners {
		if l != nil && l.addr != local && !l.addr.IsUnspecified() && !l.implied && !l.draining {
			others = append(others, l.addr)
		}
	}
	return others
}

// startReader reads l's IKE socket until it closes; Run waits for it.
func (g *Gateway) startReader(l *listener) {
	t := &ikeTransport{ike500: l.ike500}
	g.readers.Go(func() {
		t.readPort500(func(msg []byte, from netip.AddrPort, natT bool) {
			g.resp.Deliver(msg, l.addr, from, natT)
		})
	})
}

// addListener opens a listener on a (dynamic: for an address of an
// interface of GatewayConfig.Interfaces) and adds its path to the engine.
func (g *Gateway) addListener(ctx context.Context, a netip.Addr, dynamic bool) error {
	g.lmu.Lock()
	id := slices.Index(g.listeners, nil)
	if id < 0 {
		id = len(g.listeners)
	}
	g.lmu.Unlock()
	if id >= maxListeners {
		return fmt.Errorf("listening on %s: %d addresses already", a, maxListeners)
	}
	l, err := openListener(ctx, a, scheduler.PathID(id))
	if err != nil {
		return err
	}
	l.dynamic = dynamic
	if err := g.engine.AddPath(l.path); err != nil {
		l.close()
		return err
	}
	g.lmu.Lock()
	for len(g.listeners) <= id {
		g.listeners = append(g.listeners, nil)
	}
	g.listeners[id] = l
	running := g.running
	g.lmu.Unlock()
	if running {
		g.startReader(l)
	}
	g.log.Info("listening on a new address", "addr", a, "path", id)
	return nil
}

// removeListener closes dynamic listener l: first every client's MIF
// paths through it leave their scheduler (what was in flight on them goes
// again on the others), then its sockets close.
func (g *Gateway) removeListener(l *listener) {
	g.lmu.Lock()
	if int(l.path.ID) < len(g.listeners) && g.listeners[l.path.ID] == l {
		g.listeners[l.path.ID] = nil
	}
	g.lmu.Unlock()
	g.mu.Lock()
	peers := make([]*gatewayPeer, 0, len(g.mpeers))
	for _, p := range g.mpeers {
		peers = append(peers, p)
	}
	g.mu.Unlock()
	for _, p := range peers {
		p.leaveAddress(l.addr, l.path.ID)
	}
	if err := g.engine.RemovePath(l.path.ID); err != nil {
		g.log.Debug("removing a listener's path", "addr", l.addr, "err", err)
	}
	l.ike500.Close()
	g.log.Info("stopped listening on an address", "addr", l.addr)
}

// maxListeners bounds the addresses a gateway listens on (dynamic ones
// included); a client's scheduler tracks 64 paths.
const maxListeners = 32

// syncListeners opens a dynamic listener on every usable address of the
// snapshot's interfaces that has none and is not drained, and closes the
// dynamic listeners whose address left; it reports whether anything
// changed.
func (g *Gateway) syncListeners(ctx context.Context, snap netmon.Snapshot) bool {
	g.lmu.Lock()
	g.lastSnap = snap
	drained := maps.Clone(g.drained)
	g.lmu.Unlock()
	want := map[netip.Addr]bool{}
	for _, i := range snap.Interfaces {
		if !i.Up {
			continue
		}
		for _, p := range i.Addrs {
			if a := p.Addr().Unmap(); !drained[a] {
				want[a] = true
			}
		}
	}
	changed := false
	for _, l := range g.listenersNow() {
		if l.dynamic && !want[l.addr] && !drained[l.addr] { // a drained one is Drain's to close
			g.removeListener(l)
			changed = true
		}
	}
	have := map[netip.Addr]bool{}
	for _, l := range g.listenersNow() {
		have[l.addr] = true
	}
	for a := range want {
		if have[a] {
			continue // listened on already (explicit, implied or dynamic)
		}
		if err := g.addListener(ctx, a, true); err != nil {
			g.log.Warn("listening on a new address of an uplink", "addr", a, "err", err)
			continue
		}
		changed = true
	}
	return changed
}

// Drain stops using the gateway addresses addrs, at run time, without
// losing what clients send: every client's paths through one of them
// leave their schedulers first (what was in flight on them goes again on
// the others, and a client whose IKE SA used it moves it, as when the
// address goes away), then the sockets close, and the clients are told
// the gateway's addresses now (RFC 4555 §3.6). An address drained before
// and not in addrs any more is listened on again when it is one of
// Listen, of the host's addresses the wildcard stood for at start, or an
// address of Interfaces. `mifsec gateway --drain`, read again on SIGHUP.
func (g *Gateway) Drain(ctx context.Context, addrs []netip.Addr) error {
	leaving, changed, err := g.setDrained(ctx, addrs)
	if changed {
		if aerr := g.resp.AnnounceAddresses(ctx); aerr != nil {
			err = errors.Join(err, fmt.Errorf("telling the clients the gateway's addresses: %w", aerr))
		}
	}
	if len(leaving) > 0 {
		// Make before break: the clients stop sending to the address
		// once told, and what they sent meanwhile still arrives.
		select {
		case <-ctx.Done():
		case <-time.After(drainGrace):
		}
	}
	for _, l := range leaving {
		g.removeListener(l)
	}
	return err
}

// drainGrace is how long a drained address keeps receiving after the
// clients were told it goes: an announcement's round trip and the
// clients' reaction, with room to spare.
const drainGrace = 500 * time.Millisecond

// setDrained records addrs as drained, marks their listeners draining
// (returned: the caller closes them) and opens the listeners of the
// addresses drained no more; it reports whether the addresses listened on
// changed.
func (g *Gateway) setDrained(ctx context.Context, addrs []netip.Addr) (leaving []*listener, changed bool, err error) {
	g.lmu.Lock()
	before := g.drained
	g.drained = map[netip.Addr]bool{}
	for _, a := range addrs {
		g.drained[a.Unmap()] = true
	}
	drained, snap := maps.Clone(g.drained), g.lastSnap
	for _, l := range g.listeners {
		if l != nil && drained[l.addr] && !l.draining {
			g.log.Info("draining a gateway address: its clients move to the others", "addr", l.addr)
			l.draining = true
			leaving = append(leaving, l)
			changed = true
		}
	}
	g.lmu.Unlock()
	var errs []error
	for a := range before {
		if drained[a] || !slices.Contains(g.fixedListen, a) {
			continue
		}
		if err := g.addListener(ctx, a, false); err != nil {
			errs = append(errs, fmt.Errorf("listening again on %s: %w", a, err))
			continue
		}
		changed = true
	}
	if g.mon != nil && g.syncListeners(ctx, snap) {
		changed = true
	}
	return leaving, changed, errors.Join(errs...)
}

// watchInterfaces follows the interface monitor until ctx ends, opening
// and closing dynamic listeners and telling the clients.
func (g *Gateway) watchInterfaces(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case snap, ok := <-g.mon.Updates():
			if !ok {
				return
			}
			if !g.syncListeners(ctx, snap) {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := g.resp.AnnounceAddresses(actx); err != nil && ctx.Err() == nil {
				g.log.Warn("telling the clients the gateway's addresses", "err", err)
			}
			cancel()
		}
	}
}

// impliedListen returns the addresses the host has now, of the family of
// each unspecified address in listen and not in listen: global unicast
// ones (private ranges included), not loopback or link-local ones.
func impliedListen(listen []netip.Addr) ([]netip.Addr, error) {
	want4 := slices.Contains(listen, netip.IPv4Unspecified())
	want6 := slices.Contains(listen, netip.IPv6Unspecified())
	if !want4 && !want6 {
		return nil, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the host's addresses for the wildcard listen address: %w", err)
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		n, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		if !a.IsGlobalUnicast() || slices.Contains(listen, a) || slices.Contains(out, a) ||
			a.Is4() && !want4 || a.Is6() && !want6 {
			continue
		}
		if len(out) == maxImpliedListen {
			break // the wildcard socket serves the rest, as before
		}
		out = append(out, a)
	}
	return out, nil
}

// maxImpliedListen bounds the sockets a wildcard listen address opens on
// a host with many addresses; the addresses past it are served by the
// wildcard socket alone.
const maxImpliedListen = 32

// ike500Buffer is the receive buffer asked for on port 500, where every
// client's IKE_SA_INIT arrives. Clients come in bursts (a gateway's
// restart, their network back after an outage, an operator's morning),
// while the loop is busy and the reader waits for a core: with the
// system's default (some 200 KB, a few hundred datagrams) the kernel
// dropped 59,565 datagrams, uncounted by the gateway, in a run of 100,000
// fleet clients; 15,053 with this buffer. 4 MiB holds some seconds of
// requests.
const ike500Buffer = 4 << 20

// ike500Options sets SO_REUSEADDR on a port 500 socket about to be bound,
// and its receive buffer (ike500Buffer; past net.core.rmem_max with
// CAP_NET_ADMIN).
func ike500Options(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ike500Buffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, ike500Buffer)
		}
	})
	return errors.Join(err, serr)
}
