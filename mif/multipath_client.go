package mif

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/scheduler"
)

// Multipath on the client: with ClientConfig.Interfaces, a policy other
// than single and a gateway that negotiated the MIF extension, every path
// of the pathSet is a path of one peerPaths (scheduler path ID = engine
// path ID, tier from the interface's priority: gatewayPath.tier), whose
// group carries the Child SA's routes. IKE still runs on one path (the
// active one, moved with MOBIKE as in path_client.go); every other path is
// announced to the gateway with MIF_PATH_ADD, sent from that path, so that
// the gateway probes and schedules its downlink over it too.
//
// The ESP leaves a failing path by the scheduler's own failure detection
// (missing probe replies), without waiting for IKE; IKE follows to a
// verified path afterwards (steer).
//
// A gateway with several addresses announces the others in IKE_AUTH
// (ADDITIONAL_IP4/6_ADDRESS, RFC 4555 §3.4). A scheduled path is then a
// pair: an interface's path (its socket) and one gateway address, so that
// the loss of one of the gateway's uplinks is a path failure like the
// loss of one of ours. Gateway address k (0 is the configured one, then
// the announced ones in the order first seen) gives engine path e the
// scheduler path e + k*gatewayStride:
//
//	                     gateway address 0 (configured)   address 1 (announced)
//	wlan0 (engine 0)     path 0                           path 16
//	wwan0 (engine 1)     path 1                           path 17
//
// Every pair but IKE's own is announced with MIF_PATH_ADD, sent from the
// interface's socket to that gateway address, so the gateway schedules its
// downlink over the same pairs.

// steerInterval is how often the client looks at the paths' health for
// IKE's sake (the ESP does not wait for it).
const steerInterval = 100 * time.Millisecond

// announceTimeout bounds one MIF_PATH_ADD or MIF_PATH_REMOVE exchange.
const announceTimeout = 10 * time.Second

// announceRetry is how often announcements that failed are tried again.
const announceRetry = time.Second

// policy is the multipath policy asked for (PolicyOffload by default).
func (c *Client) policy() scheduler.Policy {
	if c.cfg.Policy != nil {
		return *c.cfg.Policy
	}
	return scheduler.PolicyOffload
}

// mifPathID is the MIF path ID a path is announced with: its scheduler
// path ID plus one (MIF path 0 is the IKE SA's own).
func mifPathID(id scheduler.PathID) uint16 { return uint16(id) + 1 }

// Scheduler path IDs of the pairs (interface path, gateway address).
const (
	// gatewayStride is how far apart the scheduler IDs of one interface's
	// paths to consecutive gateway addresses are: engine path IDs stay
	// below it (they are the smallest free, one per interface).
	gatewayStride = 16
	// maxGatewayAddrs is how many gateway addresses the client builds
	// paths to: the configured one and three announced ones keep every
	// MIF path ID within the gateway's 63.
	maxGatewayAddrs = 4
)

// gatewayPath is one scheduled path: an interface's path and the gateway
// address it goes to.
type gatewayPath struct {
	id   scheduler.PathID // the scheduler's (and the probes')
	path pathInfo
	gw   netip.Addr // the gateway address; the configured one for k = 0
	k    int        // the gateway address's number
}

// memberKey is what a scheduled path was added with: a change replaces it.
type memberKey struct {
	engine scheduler.PathID
	gen    uint64
	gw     netip.Addr
}

// gatewayPathID returns the scheduler path of engine path e to gateway
// address k, and whether there is one.
func gatewayPathID(e scheduler.PathID, k int) (scheduler.PathID, bool) {
	if k == 0 {
		return e, true
	}
	id := e + scheduler.PathID(k*gatewayStride)
	if e >= gatewayStride || k >= maxGatewayAddrs || mifPathID(id) > ike.MaxPathID {
		return 0, false
	}
	return id, true
}

// syncGatewayAddrs numbers the gateway's addresses: 0 is the configured
// one, the addresses the gateway announced keep the number they got when
// first seen, and a number freed by an address no longer announced is
// reused. It runs on drivePaths' goroutine.
func (c *Client) syncGatewayAddrs(announced []string) []netip.Addr {
	c.multi.mu.Lock()
	defer c.multi.mu.Unlock()
	addrs := c.multi.gwAddrs
	if len(addrs) == 0 {
		addrs = []netip.Addr{c.cfg.Session.Remote.Addr()}
	}
	var now []netip.Addr
	for _, s := range announced {
		if a, err := netip.ParseAddr(s); err == nil && a != addrs[0] {
			now = append(now, a.Unmap())
		}
	}
	for k := 1; k < len(addrs); k++ {
		if !slices.Contains(now, addrs[k]) {
			addrs[k] = netip.Addr{}
		}
	}
	for _, a := range now {
		if slices.Contains(addrs, a) {
			continue
		}
		if k := slices.Index(addrs[1:], netip.Addr{}); k >= 0 {
			addrs[k+1] = a
		} else if len(addrs) < maxGatewayAddrs {
			addrs = append(addrs, a)
		}
	}
	c.multi.gwAddrs = addrs
	return slices.Clone(addrs)
}

// gatewayAddrIndex returns gw's number (0 for the zero Addr: the
// configured address).
func (c *Client) gatewayAddrIndex(gw netip.Addr) (int, bool) {
	if !gw.IsValid() || gw == c.cfg.Session.Remote.Addr() {
		return 0, true
	}
	c.multi.mu.Lock()
	defer c.multi.mu.Unlock()
	k := slices.Index(c.multi.gwAddrs, gw)
	return k, k > 0
}

// gatewayPaths returns the scheduled paths over paths (best interface
// first, then by gateway address number): each path to every gateway
// address of its family. The pairs with the gateway's other addresses are
// left out when an engine path's ID reached gatewayStride (more than
// that many interfaces), as their IDs would clash.
func (c *Client) gatewayPaths(paths []pathInfo, gws []netip.Addr) []gatewayPath {
	var out []gatewayPath
	for _, p := range paths {
		if p.ID >= gatewayStride {
			gws = gws[:min(len(gws), 1)]
		}
	}
	for _, p := range paths {
		for k, gw := range gws {
			if !gw.IsValid() || gw.Is4() != p.Local.Addr().Is4() {
				continue
			}
			if id, ok := gatewayPathID(p.ID, k); ok {
				out = append(out, gatewayPath{id: id, path: p, gw: gw, k: k})
			}
		}
	}
	return out
}

// member is how the engine sends on gp: the interface's socket, to the
// gateway address (the engine path's own remote for the configured one).
func (c *Client) member(gp gatewayPath) (dataplane.GroupMember, error) {
	if gp.k == 0 {
		return dataplane.GroupMember{Path: gp.path.ID}, nil
	}
	ep, err := c.multi.paths.endpoint(gp.path.Name, netip.AddrPortFrom(gp.gw, gp.path.Gateway.Port()))
	if err != nil {
		return dataplane.GroupMember{}, err
	}
	return dataplane.GroupMember{Path: gp.path.ID, Remote: ep}, nil
}

// tier is gp's scheduling tier: its interface's priority, and within it
// the gateway addresses in their order, so that offload keeps to the
// configured address while it works and a backup uplink of the gateway
// ranks below it (aggregate and redundant use every verified pair).
func (gp gatewayPath) tier() int { return gp.path.Priority*maxGatewayAddrs + gp.k }

// key is what gp is added and announced with.
func (gp gatewayPath) key() memberKey {
	return memberKey{engine: gp.path.ID, gen: gp.path.Gen, gw: gp.gw}
}

// ikePath is gp as IKE knows it: the interface's path, to gp's gateway
// address.
func (gp gatewayPath) ikePath() ike.Path {
	p := gp.path.ike
	p.Gateway = gp.gw
	return p
}

// kickPaths wakes drivePaths (and through it the announcer).
func (c *Client) kickPaths() {
	if c.multi.kick == nil {
		return
	}
	signal(c.multi.kick)
}

// multipathFor reports whether the Child SAs of the session whose status
// is st send on the multipath group.
func (c *Client) multipathFor(st ike.Status) bool {
	if c.multi.pp == nil || !c.multi.mifOn.Load() || !st.MIF {
		return false
	}
	c.multi.mu.Lock()
	defer c.multi.mu.Unlock()
	return st.Reconnects == c.multi.mifReconnects
}

// outSA returns the outbound SA of child.
func (c *Client) outSA(child *ike.ChildSA) *dataplane.SA {
	if child == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outs[child.InSPI]
}

// useSAs makes out seal the probes and inSPI the SA that receives over
// the paths (receiveOverPaths).
func (c *Client) useSAs(out *dataplane.SA, inSPI uint32) {
	pp := c.multi.pp
	if err := receiveOverPaths(c.engine, inSPI, pp.Policy()); err != nil {
		c.log.Warn("readying the inbound SA for several paths", "spi", inSPI, "err", err)
	}
	pp.SetSAs(out, inSPI)
}

// pathState is the scheduler's state of path id (StateRemoved when it is
// not one of its paths).
func (c *Client) pathState(id scheduler.PathID) scheduler.State {
	if c.multi.pp == nil {
		return scheduler.StateRemoved
	}
	st, ok := c.multi.pp.State(id)
	if !ok {
		return scheduler.StateRemoved
	}
	return st
}

// pathClosing takes path id out of the scheduler before the pathSet
// removes its engine path.
func (c *Client) pathClosing(id scheduler.PathID) {
	if c.multi.pp == nil {
		return
	}
	var gone []scheduler.PathID
	c.multi.mu.Lock()
	for sid, key := range c.multi.members {
		if key.engine == id {
			gone = append(gone, sid)
			delete(c.multi.members, sid)
		}
	}
	c.multi.mu.Unlock()
	if c.multi.ppRunning.Load() {
		for _, sid := range gone {
			c.multi.pp.RemovePath(sid)
		}
	}
	c.kickAnnounce()
}

func (c *Client) kickAnnounce() { signal(c.multi.announce) }

// syncMultipath turns multipath on when the session negotiated MIF (and
// off when a new IKE SA did not), and makes the scheduler's paths the
// pathSet's. It runs on drivePaths' goroutine, like the pathSet's updates,
// so the two never race.
func (c *Client) syncMultipath() {
	pp := c.multi.pp
	if pp == nil {
		return
	}
	st := c.session.Status()
	on := st.State == "established" && st.MIF
	if !on {
		if c.multi.mifOn.Load() && st.State == "established" {
			// A new IKE SA without the extension: one path again.
			c.multi.routeMu.Lock()
			c.multi.mifOn.Store(false)
			if child := c.multi.child; child != nil {
				if out := c.outSA(child); out != nil {
					c.setRoutes(child, out, c.multi.group)
				}
			}
			c.multi.routeMu.Unlock()
			pp.SetSAs(nil, 0)
			c.log.Info("the gateway did not negotiate the MIF extension: one path at a time")
		}
		return
	}
	paths := c.multi.paths.list()
	gps := c.gatewayPaths(paths, c.syncGatewayAddrs(st.GatewayAddresses))
	want := map[scheduler.PathID]bool{}
	for _, gp := range gps {
		want[gp.id] = true
		key := gp.key()
		c.multi.mu.Lock()
		had, ok := c.multi.members[gp.id]
		c.multi.mu.Unlock()
		if ok && had == key {
			continue
		}
		if ok {
			pp.RemovePath(gp.id)
		}
		m, err := c.member(gp)
		if err == nil {
			err = pp.AddPath(gp.id, kindOf(pathKind(gp.path.Kind)), gp.tier(), gp.path.Name, "", m)
		}
		if err != nil {
			c.log.Warn("scheduling a path", "interface", gp.path.Name, "gateway", gp.gw, "err", err)
			continue
		}
		c.multi.mu.Lock()
		c.multi.members[gp.id] = key
		c.multi.mu.Unlock()
		if gp.k > 0 {
			c.log.Info("path to another address of the gateway", "interface", gp.path.Name, "gateway", gp.gw, "path", gp.id)
		}
	}
	c.multi.mu.Lock()
	var stale []scheduler.PathID
	for id := range c.multi.members {
		if !want[id] {
			stale = append(stale, id)
			delete(c.multi.members, id)
		}
	}
	c.multi.mu.Unlock()
	for _, id := range stale {
		pp.RemovePath(id) // the gateway no longer announces that address
	}
	if id, ok := c.activeID(); ok {
		// Nothing verified (yet): the packets go where IKE goes.
		pp.SetFallback(id)
	}
	c.multi.mu.Lock()
	fresh := !c.multi.mifOn.Load() || st.Reconnects != c.multi.mifReconnects
	c.multi.mu.Unlock()
	if fresh {
		c.multi.routeMu.Lock()
		child := c.multi.child
		if out := c.outSA(child); out != nil {
			c.multi.mu.Lock()
			c.multi.mifReconnects = st.Reconnects
			c.multi.mu.Unlock()
			c.useSAs(out, child.InSPI)
			c.multi.mifOn.Store(true)
			c.setRoutes(child, out, pp.Group())
			c.log.Info("multipath on: the gateway negotiated the MIF extension", "policy", pp.Policy(), "paths", len(paths))
		}
		c.multi.routeMu.Unlock()
	}
	c.kickAnnounce()
}

// announcePaths keeps the gateway's list of MIF paths equal to the paths
// other than IKE's own, until ctx ends. Each path is announced from its own
// socket (MIF_PATH_ADD), once the scheduler does not hold it failed (a
// silent path cannot answer), and withdrawn (MIF_PATH_REMOVE) when it
// closes, is replaced, or becomes the path IKE runs on. A new IKE SA
// starts without MIF paths: they are announced again.
func (c *Client) announcePaths(ctx context.Context) {
	announced := map[scheduler.PathID]memberKey{} // scheduler path ID -> what was announced
	reconnects := -1
	retry := time.NewTicker(announceRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.multi.announce:
		case <-retry.C:
		}
		st := c.session.Status()
		if !c.multi.mifOn.Load() || st.State != "established" || !st.MIF {
			continue
		}
		if st.Reconnects != reconnects {
			clear(announced)
			reconnects = st.Reconnects
		}
		active, _ := c.activeID()
		want := map[scheduler.PathID]gatewayPath{}
		c.multi.mu.Lock()
		gws := slices.Clone(c.multi.gwAddrs)
		c.multi.mu.Unlock()
		for _, gp := range c.gatewayPaths(c.multi.paths.list(), gws) {
			if gp.id != active {
				want[gp.id] = gp
			}
		}
		for id, key := range announced {
			if gp, ok := want[id]; ok && gp.key() == key {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, announceTimeout)
			err := c.session.RemovePath(actx, mifPathID(id))
			cancel()
			if err != nil && ctx.Err() == nil {
				c.log.Debug("withdrawing a path from the gateway", "path", mifPathID(id), "err", err)
			}
			delete(announced, id)
		}
		for id, gp := range want {
			if key, ok := announced[id]; ok && key == gp.key() {
				continue
			}
			if c.pathState(id) == scheduler.StateFailed {
				continue // silent now: announced when the probes get through again
			}
			p := gp.path
			actx, cancel := context.WithTimeout(ctx, announceTimeout)
			err := c.session.AddPath(actx, gp.ikePath(), mifPathID(id), pathKind(p.Kind), uint8(min(max(gp.tier(), 0), 255)))
			cancel()
			switch {
			case err == nil:
				announced[id] = gp.key()
				c.log.Info("path announced to the gateway", "interface", p.Name, "gateway", gp.gw, "path", mifPathID(id))
			case ctx.Err() != nil:
				return
			case errors.Is(err, ike.ErrNoMIF), errors.Is(err, ike.ErrNotEstablished):
			default:
				c.log.Info("announcing a path to the gateway failed", "interface", p.Name, "err", err)
			}
		}
	}
}
