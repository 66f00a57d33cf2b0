package load

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/ike"
)

// A fleet given ClientsConfig.Gateways outlives its gateways, as the
// clients of a cluster do: when a client's session ends (its liveness
// check goes unanswered, the gateway deletes its IKE SA) it connects
// again at the next gateway of the list; a REDIRECT of its established
// IKE SA (a draining gateway) it follows as ike.Session does, make before
// break. A client whose echoes (EchoLoop) go unanswered three times in a
// row checks at once that its gateway is alive (ike.Session.CheckAlive,
// about a second), as a client that sees its traffic die would, rather
// than wait for its DPD interval. Each client records the inner
// addresses it got, the gateways it was established with, its
// reconnects and redirects and the longest gap between answered echoes
// (Fleet.Roaming).

// errMoveOn ends a session's Run where it would connect again: the
// client connects to the next gateway instead, with a new session.
var errMoveOn = errors.New("client fleet: moving on to the next gateway")

// roamReconnectDelay is the pause of a roaming client's session between
// losing its gateway and moving on (ike's default is a second).
const roamReconnectDelay = 50 * time.Millisecond

// moveOn is the WaitToConnect of a session that connected with Connect:
// any reconnect means moving on.
func moveOn(context.Context) error { return errMoveOn }

// roamState is a client's gateway and what it went through.
type roamState struct {
	gw       atomic.Pointer[netip.AddrPort] // where IKE and ESP go now; nil: ClientsConfig.Gateway
	checking atomic.Bool                    // a liveness check is under way
	checks   sync.WaitGroup                 // that check

	mu         sync.Mutex
	addrs      []netip.Addr     // each inner address it got, in order
	gateways   []netip.AddrPort // the gateway of each IKE SA it was established with
	redirects  int
	lastOK     time.Time // the last answered echo (or when the echoes started)
	longestGap time.Duration
	sent, ok   int
	missed     int // unanswered echoes in a row
}

// RoamResult is what a client of a fleet went through.
type RoamResult struct {
	Gateway netip.AddrPort // where it is now
	// Addresses are the inner IPv4 addresses of each IKE SA it was
	// established with, Gateways the gateways of those IKE SAs.
	Addresses []netip.Addr
	Gateways  []netip.AddrPort
	// Reconnects counts the IKE SAs after its first (redirects
	// included); Redirects the redirects it followed.
	Reconnects, Redirects int
	// LongestGap is the longest time between answered echoes of
	// EchoLoop (from its start, and until its end).
	LongestGap   time.Duration
	Sent, Echoed int
}

// startAt sets a roaming client's first gateway: client i starts at
// gateway i mod n.
func (c *fleetClient) startAt() {
	if n := len(c.cfg.Gateways); n > 0 {
		gw := c.cfg.Gateways[c.i%n]
		c.roam.gw.Store(&gw)
	}
}

// gateway is where the client talks now.
func (c *fleetClient) gateway() netip.AddrPort {
	if gw := c.roam.gw.Load(); gw != nil {
		return *gw
	}
	return c.cfg.Gateway
}

// accepts reports whether a datagram from a is the client's: from its
// gateway now or, roaming, from any gateway of the list (the one it
// moves to answers before the session says it moved).
func (c *fleetClient) accepts(a netip.Addr) bool {
	if a == c.gateway().Addr() {
		return true
	}
	return slices.ContainsFunc(c.cfg.Gateways, func(g netip.AddrPort) bool { return g.Addr() == a })
}

// address is the client's inner IPv4 address now (invalid without one).
func (c *fleetClient) address() netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return firstIPv4(c.addrs)
}

// firstIPv4 is the first IPv4 address of addrs (invalid without one).
func firstIPv4(addrs []netip.Prefix) netip.Addr {
	for _, p := range addrs {
		if p.Addr().Is4() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// Redirected implements ike.RedirectHandler: ESP goes to gw from now on.
// A session calls it when it first connects as well (same gateway: no
// redirect).
func (c *fleetClient) Redirected(gw netip.AddrPort) {
	if gw == c.gateway() {
		return
	}
	c.roam.gw.Store(&gw)
	c.roam.mu.Lock()
	defer c.roam.mu.Unlock()
	c.roam.redirects++
	// Configured came first, with the gateway it was redirected from.
	if n := len(c.roam.gateways); n > 0 {
		c.roam.gateways[n-1] = gw
	}
}

// configured records a new IKE SA's inner address and gateway.
func (r *roamState) configured(addrs []netip.Prefix, gw netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = append(r.addrs, firstIPv4(addrs))
	r.gateways = append(r.gateways, gw)
}

func (r *roamState) echoesStart() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOK = time.Now()
}

// echoesEnd counts the time since the last answered echo as a gap and
// waits for the liveness check under way.
func (r *roamState) echoesEnd() {
	r.checks.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.longestGap = max(r.longestGap, time.Since(r.lastOK))
}

// echoed records an echo's fate; a roaming client whose echoes go
// unanswered three times in a row checks its gateway's liveness (and
// moves on when it is dead).
func (c *fleetClient) echoed(ctx context.Context, ok bool) {
	r := &c.roam
	r.mu.Lock()
	r.sent++
	check := false
	if ok {
		now := time.Now()
		r.ok++
		r.longestGap = max(r.longestGap, now.Sub(r.lastOK))
		r.lastOK, r.missed = now, 0
	} else if r.missed++; r.missed >= 3 && len(c.cfg.Gateways) > 0 {
		r.missed, check = 0, true
	}
	r.mu.Unlock()
	s := c.sess.Load()
	if !check || s == nil || s.Status().State != "established" || !r.checking.CompareAndSwap(false, true) {
		return
	}
	// Three tries of 300 ms, beside the echoes (which go on, so that
	// the gaps measured are the client's, not the check's); the
	// session's loop may be busy connecting elsewhere (a redirect): then
	// the check gives way.
	r.checks.Go(func() {
		defer r.checking.Store(false)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s.CheckAlive(cctx)
	})
}

// run serves the client's session until ctx ends; roaming, it moves to
// the next gateway with a new session each time the session would
// reconnect.
func (c *fleetClient) run(ctx context.Context, s *ike.Session, scfg ike.SessionConfig) {
	failed := 0
	for {
		established := c.roam.count()
		if err := s.Run(ctx); ctx.Err() != nil || !errors.Is(err, errMoveOn) {
			return
		}
		if c.roam.count() == established {
			// It never got an IKE SA at that gateway: pause before the
			// next, so that a cluster that refuses everyone is not
			// hammered.
			failed++
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(failed)*200*time.Millisecond, 2*time.Second)):
			}
		} else {
			failed = 0
		}
		next := c.nextGateway()
		c.roam.gw.Store(&next)
		scfg.Remote = next
		first := true
		scfg.WaitToConnect = func(context.Context) error {
			if first { // the attempt at this gateway; any other means moving on
				first = false
				return nil
			}
			return errMoveOn
		}
		var err error
		if s, err = ike.NewSession(scfg, c, c); err != nil {
			return
		}
		c.sess.Store(s)
	}
}

// count is how many IKE SAs the client was established with.
func (r *roamState) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.addrs)
}

// nextGateway is the gateway the client moves on to from the current
// one: 1 to n-1 places further in the list, by the client's number, so
// that the clients of a gateway that died spread over all the others.
func (c *fleetClient) nextGateway() netip.AddrPort {
	gws := c.cfg.Gateways
	n := len(gws)
	i := slices.Index(gws, c.gateway()) // -1, not in the list (redirected elsewhere): from the start
	if n == 1 {
		return gws[0]
	}
	return gws[(i+1+c.i%(n-1)+n)%n]
}

// Roaming returns what each client went through (clients that never
// connected have no addresses).
func (f *Fleet) Roaming() []RoamResult {
	out := make([]RoamResult, len(f.clients))
	for i, c := range f.clients {
		r := &c.roam
		r.mu.Lock()
		out[i] = RoamResult{Gateway: c.gateway(), Addresses: slices.Clone(r.addrs), Gateways: slices.Clone(r.gateways),
			Reconnects: max(len(r.addrs)-1, 0), Redirects: r.redirects, LongestGap: r.longestGap, Sent: r.sent, Echoed: r.ok}
		r.mu.Unlock()
	}
	return out
}
