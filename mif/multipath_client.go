package mif

import (
	"context"
	"errors"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/scheduler"
)

// Multipath on the client: with ClientConfig.Interfaces, a policy other
// than single and a gateway that negotiated the MIF extension, every path
// of the pathSet is a path of one peerPaths (scheduler path ID = engine
// path ID, tier = the interface's priority), whose group carries the Child
// SA's routes. IKE still runs on one path (the active one, moved with
// MOBIKE as in path_client.go); every other path is announced to the
// gateway with MIF_PATH_ADD, sent from that path, so that the gateway
// probes and schedules its downlink over it too.
//
// The ESP leaves a failing path by the scheduler's own failure detection
// (missing probe replies), without waiting for IKE; IKE follows to a
// verified path afterwards (steer).

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

// mifPathID is the MIF path ID a path is announced with: its engine path
// ID plus one (MIF path 0 is the IKE SA's own).
func mifPathID(id scheduler.PathID) uint16 { return uint16(id) + 1 }

// kickPaths wakes drivePaths (and through it the announcer).
func (c *Client) kickPaths() {
	if c.multi.kick == nil {
		return
	}
	select {
	case c.multi.kick <- struct{}{}:
	default:
	}
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

// useSAs makes out seal the probes and inSPI the SA whose resequencer
// follows the paths (aggregate and redundant spread one flow over paths).
func (c *Client) useSAs(out *dataplane.SA, inSPI uint32) {
	pp := c.multi.pp
	if pol := pp.Policy(); pol == scheduler.PolicyAggregate || pol == scheduler.PolicyRedundant {
		if err := c.engine.RestoreOrder(inSPI, orderConfig); err != nil {
			c.log.Warn("restoring order across paths", "spi", inSPI, "err", err)
		}
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
	c.multi.mu.Lock()
	_, ok := c.multi.members[id]
	delete(c.multi.members, id)
	c.multi.mu.Unlock()
	if ok && c.multi.ppRunning.Load() {
		c.multi.pp.RemovePath(id)
	}
	c.kickAnnounce()
}

func (c *Client) kickAnnounce() {
	select {
	case c.multi.announce <- struct{}{}:
	default:
	}
}

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
	active := c.activePath()
	for _, p := range paths {
		c.multi.mu.Lock()
		gen, ok := c.multi.members[p.ID]
		c.multi.mu.Unlock()
		if ok && gen == p.Gen {
			continue
		}
		if ok {
			pp.RemovePath(p.ID)
		}
		if err := pp.AddPath(p.ID, kindOf(pathKind(p.Kind)), p.Priority, dataplane.GroupMember{Path: p.ID}); err != nil {
			c.log.Warn("scheduling a path", "interface", p.Name, "err", err)
			continue
		}
		c.multi.mu.Lock()
		c.multi.members[p.ID] = p.Gen
		c.multi.mu.Unlock()
	}
	for _, p := range paths {
		if p.Name == active {
			// Nothing verified (yet): the packets go where IKE goes.
			pp.SetFallback(p.ID)
		}
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
	announced := map[scheduler.PathID]uint64{} // engine path ID -> path generation
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
		active := c.activePath()
		want := map[scheduler.PathID]pathInfo{}
		for _, p := range c.multi.paths.list() {
			if p.Name != active {
				want[p.ID] = p
			}
		}
		for id, gen := range announced {
			if p, ok := want[id]; ok && p.Gen == gen {
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
		for id, p := range want {
			if gen, ok := announced[id]; ok && gen == p.Gen {
				continue
			}
			if c.pathState(id) == scheduler.StateFailed {
				continue // silent now: announced when the probes get through again
			}
			actx, cancel := context.WithTimeout(ctx, announceTimeout)
			err := c.session.AddPath(actx, p.ike, mifPathID(id), pathKind(p.Kind), uint8(min(max(p.Priority, 0), 255)))
			cancel()
			switch {
			case err == nil:
				announced[id] = p.Gen
				c.log.Info("path announced to the gateway", "interface", p.Name, "path", mifPathID(id))
			case ctx.Err() != nil:
				return
			case errors.Is(err, ike.ErrNoMIF), errors.Is(err, ike.ErrNotEstablished):
			default:
				c.log.Info("announcing a path to the gateway failed", "interface", p.Name, "err", err)
			}
		}
	}
}
