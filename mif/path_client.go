package mif

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
)

// InterfaceConfig turns on the client's interface monitoring: one path per
// usable interface (filtered and ranked as Filter says), IKE and ESP on
// the best one.
//
// Handover: when the active path's interface goes down, loses its address
// or its route to the gateway, the session moves (MOBIKE
// UPDATE_SA_ADDRESSES) to the best remaining path at once. When a path of
// better priority than the active one appears, it must stay usable for
// Hysteresis and pass a path check (an INFORMATIONAL exchange sent on it)
// before the session moves back to it, so that a flapping interface does
// not drag the tunnel along.
type InterfaceConfig struct {
	netmon.Filter
	// Hysteresis is how long a better interface must stay usable before
	// traffic moves to it; 0 means DefaultHysteresis.
	Hysteresis time.Duration
	// Settle is how long interface events are collected before paths
	// change; 0 means netmon.DefaultSettle. Losses never wait.
	Settle time.Duration
	// Keepalive is each path's NAT keepalive interval; 0 means
	// keepaliveInterval.
	Keepalive time.Duration
}

// DefaultHysteresis is how long a better interface must stay usable before
// the session moves back to it.
const DefaultHysteresis = 2 * time.Second

// moveTimeout bounds one path check or one move: the session paces its
// retransmissions on the tested path by MobilityConfig.PathCheck and falls
// back to the current path, so this is only a guard against a session that
// does not serve (it is connecting).
const moveTimeout = 15 * time.Second

// notServingTimeout bounds a move asked for while no IKE SA is up.
const notServingTimeout = 200 * time.Millisecond

// multiPath is the client's state with several interfaces.
type multiPath struct {
	mon   *netmon.Monitor
	paths *pathSet
	group *dataplane.PathGroup // the Child SA routes' group: the active path

	// mu is a leaf: held with no other mutex taken after it. It may be
	// taken with routeMu held.
	mu        sync.Mutex
	active    string        // interface of the path IKE and ESP use; "" none
	activeGen uint64        // and which path on it (a replaced path must be moved to)
	activeGW  netip.Addr    // and the gateway address (the zero Addr: the configured one)
	changed   chan struct{} // signalled when active changes
	// gwAddrs are the gateway's addresses by number (syncGatewayAddrs):
	// 0 the configured one, then those it announced; a zero Addr is a
	// free number.
	gwAddrs []netip.Addr

	// Multipath scheduling (multipath_client.go): pp is nil with policy
	// single. The rest is guarded by mu unless said otherwise.
	pp        *peerPaths
	ppRunning atomic.Bool   // pp.Run serves its calls
	mifOn     atomic.Bool   // the routes send on pp's group
	kick      chan struct{} // wakes drivePaths: the session or the Child SA changed
	announce  chan struct{} // wakes announcePaths
	// routeMu orders the route changes of SwitchOutbound (the session's
	// loop) and of turning multipath on (drivePaths). It comes first in
	// the lock order: Client.mu, mu and pp.mu are taken under it, and it
	// is never taken while one of them is held.
	routeMu       sync.Mutex
	child         *ike.ChildSA                   // the Child SA that sends now (guarded by routeMu)
	mifReconnects int                            // the session's Reconnects when multipath was turned on
	members       map[scheduler.PathID]memberKey // pp's paths by scheduler path ID
}

// openMulti opens the TUN device, the engine without paths, the interface
// monitor, and a path per usable interface; the best becomes active.
func (c *Client) openMulti(ctx context.Context) (err error) {
	ic := *c.cfg.Interfaces
	if ic.Hysteresis <= 0 {
		ic.Hysteresis = DefaultHysteresis
	}
	c.cfg.Interfaces = &ic
	gw := c.cfg.Session.Remote
	filter := ic.Filter
	filter.Ignore = append(append([]string(nil), filter.Ignore...), c.cfg.TUN.Name)
	queues := c.cfg.shared.queues(roleInitiator)
	if c.iface = c.cfg.shared.device(); c.iface == nil {
		if c.iface, err = tun.Create(c.cfg.TUN); err != nil {
			return err
		}
		queues = c.iface.Queues()
	}
	c.engine, err = dataplane.NewEngine(dataplane.EngineConfig{
		Queues: queues,
		// Every path leads to the gateway: what an interface that just
		// went down refuses leaves on another before the monitor notices.
		RescueRefused: true,
		Control: func(msg []byte, from netip.AddrPort, _ *dataplane.Path) {
			c.session.Deliver(msg, from, true)
		},
		// Probe replies measure the paths (multipath_client.go); the
		// engine answers the gateway's requests itself.
		OnProbeReply: func(ev *dataplane.ProbeEvent) {
			if c.multi.pp != nil {
				c.multi.pp.HandleReply(ev)
			}
		},
		Logger: c.log,
	})
	if err != nil {
		return err
	}
	c.multi.changed = make(chan struct{}, 1)
	c.multi.kick = make(chan struct{}, 1)
	c.multi.announce = make(chan struct{}, 1)
	c.multi.members = map[scheduler.PathID]memberKey{}
	c.multi.group = dataplane.NewPathGroup(nil)
	if pol := c.policy(); pol != scheduler.PolicySingle {
		c.multi.pp = newPeerPaths(peerPathsConfig{Engine: c.engine, Policy: pol, Classes: c.cfg.Classes, Logger: c.log})
	}
	c.multi.paths, err = newPathSet(pathSetConfig{
		Gateway: gw.Addr(), IKEPort: gw.Port(), Keepalive: ic.Keepalive, Logger: c.log, EphemeralPorts: c.cfg.shared != nil,
		Deliver: func(msg []byte, from netip.AddrPort, natT bool) { c.session.Deliver(msg, from, natT) },
		Closing: c.pathClosing,
	}, c.engine)
	if err != nil {
		return err
	}
	if c.multi.mon, err = netmon.New(netmon.Config{Filter: filter, Gateway: gw.Addr(), Settle: ic.Settle, Logger: c.log}); err != nil {
		return fmt.Errorf("watching interfaces: %w", err)
	}
	if c.session, err = ike.NewSession(c.cfg.Session, c, c); err != nil {
		return err
	}
	snap := <-c.multi.mon.Updates()
	if _, err := c.multi.paths.update(ctx, snap, time.Now()); err != nil {
		c.log.Warn("opening paths", "err", err)
	}
	if ps := c.multi.paths.list(); len(ps) > 0 {
		c.setActive(ps[0], netip.Addr{})
	} else {
		c.log.Warn("no usable interface towards the gateway yet", "gateway", gw.Addr())
	}
	return nil
}

// closeMulti stops the monitor and closes every path.
func (c *Client) closeMulti() {
	if c.multi.mon != nil {
		c.multi.mon.Close()
	}
	if c.multi.paths != nil {
		c.multi.paths.close()
	}
}

// Send implements ike.Transport: on the path IKE uses (the session's own
// paths, after a move, send on theirs).
func (c *Client) Send(msg []byte, to netip.AddrPort, natT bool) error {
	name := c.activePath()
	if name == "" {
		return errors.New("no usable interface towards the gateway")
	}
	return c.multi.paths.send(name, msg, to, natT)
}

// activeKept reports whether the active path is still open (not replaced
// by another on its interface, not gone).
func (c *Client) activeKept() bool {
	c.multi.mu.Lock()
	active, gen := c.multi.active, c.multi.activeGen
	c.multi.mu.Unlock()
	if active == "" {
		return false
	}
	p, ok := c.multi.paths.get(active)
	return ok && p.Gen == gen
}

// activePath returns the interface of the active path.
func (c *Client) activePath() string {
	c.multi.mu.Lock()
	defer c.multi.mu.Unlock()
	return c.multi.active
}

// setActive makes p the path IKE's default transport and the outbound ESP
// use, to the gateway address gw (the zero Addr: the configured one).
func (c *Client) setActive(p pathInfo, gw netip.Addr) {
	if gw == c.cfg.Session.Remote.Addr() {
		gw = netip.Addr{}
	}
	m := dataplane.GroupMember{Path: p.ID}
	if gw.IsValid() {
		ep, err := c.multi.paths.endpoint(p.Name, netip.AddrPortFrom(gw, p.Gateway.Port()))
		if err != nil {
			c.log.Warn("sending to another address of the gateway", "interface", p.Name, "gateway", gw, "err", err)
			gw = netip.Addr{}
		} else {
			m.Remote = ep
		}
	}
	c.multi.group.Set(nil, m)
	c.multi.mu.Lock()
	changed := c.multi.active != p.Name
	c.multi.active, c.multi.activeGen, c.multi.activeGW = p.Name, p.Gen, gw
	c.multi.mu.Unlock()
	if changed {
		signal(c.multi.changed)
	}
}

// clearActive records that no path is left.
func (c *Client) clearActive() {
	c.multi.group.Set(nil)
	c.multi.mu.Lock()
	c.multi.active, c.multi.activeGen, c.multi.activeGW = "", 0, netip.Addr{}
	c.multi.mu.Unlock()
}

// activeGateway returns the gateway address of the active path (the zero
// Addr: the configured one).
func (c *Client) activeGateway() netip.Addr {
	c.multi.mu.Lock()
	defer c.multi.mu.Unlock()
	return c.multi.activeGW
}

// activeID returns the scheduler path IKE uses: the active interface's
// path to the active gateway address.
func (c *Client) activeID() (scheduler.PathID, bool) {
	c.multi.mu.Lock()
	name, gw := c.multi.active, c.multi.activeGW
	c.multi.mu.Unlock()
	p, ok := c.multi.paths.get(name)
	if !ok {
		return 0, false
	}
	k, ok := c.gatewayAddrIndex(gw)
	if !ok {
		return 0, false
	}
	return gatewayPathID(p.ID, k)
}

// waitActive waits until a path is usable.
func (c *Client) waitActive(ctx context.Context) error {
	logged := false
	for c.activePath() == "" {
		if !logged {
			c.log.Info("waiting for an interface that reaches the gateway", "gateway", c.cfg.Session.Remote.Addr())
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.multi.changed:
		}
	}
	return nil
}

// Redirected implements ike.RedirectHandler: the session moved to the
// gateway it was redirected to (RFC 5685), and the outbound ESP of the
// active path follows.
func (c *Client) Redirected(gw netip.AddrPort) {
	info, ok := c.multi.paths.get(c.activePath())
	if !ok {
		c.log.Warn("redirected to another gateway without an active path", "gateway", gw)
		return
	}
	c.log.Info("redirected: ESP goes to the new gateway", "gateway", gw, "interface", info.Name)
	c.setActive(info, gw.Addr())
	c.kickPaths()
}

// PathChanged implements ike.PathHandler: the IKE SA moved to path p, and
// the outbound ESP follows.
func (c *Client) PathChanged(p ike.Path) {
	info, ok := c.multi.paths.get(p.ID)
	if !ok {
		c.log.Warn("the IKE SA moved to a path that is gone", "path", p.ID)
		return
	}
	c.setActive(info, p.Gateway)
	c.kickPaths()
}

// drivePaths follows the interface monitor until ctx ends: it opens and
// closes paths and moves the session between them.
func (c *Client) drivePaths(ctx context.Context) {
	var (
		timer  *time.Timer
		timerC <-chan time.Time
		last   = c.multi.mon.Snapshot()
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// With multipath scheduling the paths' health changes without
	// interface events: look at it regularly.
	var tick <-chan time.Time
	if c.multi.pp != nil {
		t := time.NewTicker(steerInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		c.syncMultipath()
		wake := c.steer(ctx, time.Now())
		timerC = nil
		if !wake.IsZero() {
			d := max(time.Until(wake), time.Millisecond)
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case snap, ok := <-c.multi.mon.Updates():
			if !ok {
				return
			}
			rerouted := routeChanged(last, snap, c.activePath())
			last = snap
			ch, err := c.multi.paths.update(ctx, snap, time.Now())
			if err != nil {
				c.log.Warn("opening paths", "err", err)
			}
			if rerouted && c.activeKept() {
				// The path stays, but the way to the gateway changed.
				// (A path replaced or gone is moved from, and the move
				// is itself the check.)
				c.checkGateway(ctx, "the default route changed")
			}
			if len(ch.Added)+len(ch.Removed) > 0 {
				c.log.Debug("paths changed", "added", ch.Added, "removed", ch.Removed)
			}
		case <-timerC:
		case <-c.multi.kick:
		case <-tick:
		}
	}
}

// steer decides whether the session moves, and moves it. It returns when
// it wants to decide again (a better path's hysteresis ends), or zero.
func (c *Client) steer(ctx context.Context, now time.Time) (wake time.Time) {
	paths := c.multi.paths.list()
	gws := c.gatewayAddrs()
	c.multi.mu.Lock()
	active, activeGen, activeGW := c.multi.active, c.multi.activeGen, c.multi.activeGW
	c.multi.mu.Unlock()
	if !activeGW.IsValid() {
		activeGW = gws[0]
	}
	if len(paths) == 0 {
		if active != "" {
			c.log.Warn("no usable interface towards the gateway is left")
			c.clearActive()
		}
		return time.Time{}
	}
	var cur pathInfo
	found := false
	for _, p := range paths {
		if p.Name == active && p.Gen == activeGen {
			cur, found = p, true
		}
	}
	if !found {
		// The active path is gone, or was replaced by a new one on the
		// same interface (a new address), or there was none: move to the
		// best at once; the move itself tests the path.
		c.moveTo(ctx, paths[0], activeGW, active, false)
		return time.Time{}
	}
	pairs := c.gatewayPaths(paths, gws)
	if curID, ok := c.activeID(); ok && c.multi.mifOn.Load() && c.pathState(curID) == scheduler.StateFailed {
		// The scheduler's probes found IKE's path silent (the ESP has
		// already left it): IKE follows to the best verified pair of an
		// interface and a gateway address.
		for _, gp := range pairs {
			if gp.id != curID && c.pathState(gp.id) == scheduler.StateActive {
				c.log.Info("the path IKE uses stopped answering probes", "interface", cur.Name, "gateway", activeGW,
					"to_interface", gp.path.Name, "to_gateway", gp.gw)
				c.moveTo(ctx, gp.path, gp.gw, active, false)
				return time.Time{}
			}
		}
	}
	hyst := c.cfg.Interfaces.Hysteresis
	for _, p := range paths {
		if p.Priority >= cur.Priority {
			break // sorted: no better path
		}
		gw := activeGW
		if c.multi.mifOn.Load() {
			// Verified by the probes: to the gateway address IKE uses
			// if that pair is, else to another.
			gp, ok := verifiedPair(pairs, p, activeGW, c.pathState)
			if !ok {
				continue // not verified (yet, or again)
			}
			gw = gp.gw
		}
		if due := p.UsableSince.Add(hyst); due.After(now) {
			if wake.IsZero() || due.Before(wake) {
				wake = due
			}
			continue
		}
		if c.moveTo(ctx, p, gw, active, true) {
			return time.Time{}
		}
	}
	return wake
}

// verifiedPair returns a pair over interface path p that the probes
// verified: the one to gateway address prefer if that one is, else the
// first.
func verifiedPair(pairs []gatewayPath, p pathInfo, prefer netip.Addr, state func(scheduler.PathID) scheduler.State) (gatewayPath, bool) {
	var found gatewayPath
	ok := false
	for _, gp := range pairs {
		if gp.path.ID != p.ID || state(gp.id) != scheduler.StateActive {
			continue
		}
		if gp.gw == prefer {
			return gp, true
		}
		if !ok {
			found, ok = gp, true
		}
	}
	return found, ok
}

// gatewayAddrs returns the gateway's addresses by number: the configured
// one first.
func (c *Client) gatewayAddrs() []netip.Addr {
	c.multi.mu.Lock()
	defer c.multi.mu.Unlock()
	if len(c.multi.gwAddrs) == 0 {
		return []netip.Addr{c.cfg.Session.Remote.Addr()}
	}
	return slices.Clone(c.multi.gwAddrs)
}

// moveTo moves IKE and ESP to path p, towards the gateway address gw;
// from is the active path's interface ("" or gone when it was lost). With
// check, p is tested first and the session stays where it is if the test
// fails. It reports whether the session uses p now.
func (c *Client) moveTo(ctx context.Context, p pathInfo, gw netip.Addr, from string, check bool) bool {
	timeout := moveTimeout
	if c.session.Status().State != "established" {
		// Connecting or reconnecting: the session's loop does not serve
		// calls now, and the move only needs to be queued for the next
		// connection (IKE's default transport follows setActive).
		timeout, check = notServingTimeout, false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	started := time.Now()
	ikp := p.ike
	if gw.IsValid() {
		ikp.Gateway = gw
	}
	if check {
		rtt, err := c.session.CheckPath(ctx, ikp)
		switch {
		case err == nil:
			c.log.Debug("path check passed", "interface", p.Name, "rtt", rtt)
		case errors.Is(err, ike.ErrNotEstablished):
			// Nothing to move yet: the next connection uses p.
		default:
			c.log.Info("a better interface failed its path check, staying", "interface", p.Name, "on", from, "err", err)
			c.multi.paths.restartHysteresis(p.Name, time.Now())
			return false
		}
	}
	// IKE's default transport follows at once, so a session that is
	// connecting or reconnecting uses p.
	prev, stillThere := c.multi.paths.get(from)
	prevGW := c.activeGateway()
	c.setActive(p, gw)
	err := c.session.UpdateAddresses(ctx, ikp)
	switch {
	case err == nil:
		c.log.Info("moved to another path", "interface", p.Name, "gateway", ikp.Gateway, "from", from,
			"took", time.Since(started).Round(time.Microsecond))
		return true
	case errors.Is(err, ike.ErrNotEstablished), errors.Is(err, context.DeadlineExceeded):
		// No IKE SA to move (or the session is busy connecting): the
		// move is taken by the next connection.
		return true
	case errors.Is(err, ike.ErrNoMOBIKE):
		c.log.Warn("the gateway did not negotiate MOBIKE: ESP leaves on the new interface, replies may not follow until the session reconnects",
			"interface", p.Name, "from", from)
		return true
	default:
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return false // shutting down
		}
		c.log.Warn("moving to another interface failed", "interface", p.Name, "from", from, "err", err)
		c.multi.paths.restartHysteresis(p.Name, time.Now())
		if stillThere {
			c.setActive(prev, prevGW)
			return false
		}
		return true // nothing better to go back to
	}
}
