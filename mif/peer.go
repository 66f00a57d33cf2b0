package mif

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// A Peer protects the traffic between this host's stable addresses and
// another host's, end to end (mifsec peer, docs/end-to-end.md). Either
// host may start the IKE SA, so each runs both roles over one TUN device:
//
//	                  ┌─ Client (initiator): its IKE SA, its paths
//	TUN ─ turn ───────┤
//	                  └─ Gateway (responder, one allowed peer): the peer's
//
// Each role has its own data plane engine; the role whose IKE SA is kept
// reads the TUN (the turn), both write to it. When both hold an IKE SA —
// the two hosts started at once, or one lost the other's — one goes, by a
// rule both hosts apply alike: the IKE SA started by the host whose
// identity sorts first (First) stays. That host starts its IKE SA at once
// and again whenever it has none of its own; the other starts one only
// after Standby without the first's, so that it is still reached when the
// first cannot reach it (a NAT in front of it). One exception keeps a host
// that lost its state from waiting for a dead IKE SA: when the first host
// sees the other's IKE SA arrive after its own was set up, the other has
// lost its own and started afresh, so the first host deletes its own and
// starts a new one (which then stays on both sides).
type Peer struct {
	cfg    PeerConfig
	log    *slog.Logger
	shared *sharedTUN
	client *Client
	gw     *Gateway

	// lastResponder is when the responder last held the peer's IKE SA
	// (unix nanoseconds), for WaitToConnect.
	lastResponder atomic.Int64
	started       time.Time
	active        atomic.Int32 // the role that reads the TUN: roleNone, roleInitiator, roleResponder
	both          bool         // at the last settle both roles held an IKE SA (settle's goroutine only)
}

// PeerConfig is a Peer's setup: both roles and the device they share.
type PeerConfig struct {
	// Client starts IKE SAs with the peer: its Session names the peer's
	// address, identity and selectors. Its TUN is ignored.
	Client ClientConfig
	// Gateway answers the peer: its Responder allows only the peer's
	// identity (Peers). Its TUN is ignored.
	Gateway GatewayConfig
	TUN     tun.Config
	// Routes go through the TUN (the peer's stable addresses), each from
	// Source's address of its family (this host's).
	Routes []netip.Prefix
	Source []netip.Addr
	// First says this host's identity sorts before the peer's: its IKE
	// SA wins, and it starts one without waiting.
	First bool
	// Standby is how long the other host waits for the first's IKE SA
	// before it starts its own; 0 means DefaultPeerStandby.
	Standby time.Duration
	Logger  *slog.Logger
}

// DefaultPeerStandby is PeerConfig.Standby's default: a few round trips
// of an IKE_SA_INIT and IKE_AUTH on a slow path.
const DefaultPeerStandby = 2 * time.Second

// The roles of a Peer, as the TUN's turn names them.
const (
	roleNone int32 = iota
	roleInitiator
	roleResponder
)

// NewPeer creates the TUN device with its routes, then both roles.
func NewPeer(ctx context.Context, cfg PeerConfig) (_ *Peer, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Standby <= 0 {
		cfg.Standby = DefaultPeerStandby
	}
	if len(cfg.Gateway.Responder.Peers) != 1 {
		return nil, errors.New("peer: the responder must allow exactly the peer's identity")
	}
	p := &Peer{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	iface, err := tun.Create(cfg.TUN)
	if err != nil {
		return nil, err
	}
	p.shared = &sharedTUN{iface: iface, devs: iface.Queues(), turn: &p.active}
	if err := iface.SetUp(); err != nil {
		return nil, err
	}
	for _, r := range cfg.Routes {
		var src netip.Addr
		for _, a := range cfg.Source {
			if a.Is4() == r.Addr().Is4() {
				src = a
			}
		}
		if err := iface.AddRouteFrom(r, src); err != nil {
			return nil, err
		}
	}
	gcfg := cfg.Gateway
	gcfg.TUN, gcfg.shared, gcfg.NoForwarding, gcfg.Logger = cfg.TUN, p.shared, true, log.With("role", "responder")
	if p.gw, err = NewGateway(ctx, gcfg); err != nil {
		return nil, fmt.Errorf("peer, answering side: %w", err)
	}
	ccfg := cfg.Client
	ccfg.TUN, ccfg.shared, ccfg.Logger = cfg.TUN, p.shared, log.With("role", "initiator")
	ccfg.Session.RequestIPv4, ccfg.Session.RequestIPv6 = false, false
	if !cfg.First {
		ccfg.Session.WaitToConnect = p.waitToConnect
	}
	if p.client, err = NewClient(ctx, ccfg); err != nil {
		return nil, fmt.Errorf("peer, starting side: %w", err)
	}
	return p, nil
}

// Run runs both roles until ctx ends and keeps one IKE SA with the peer.
func (p *Peer) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { errs <- p.gw.Run(runCtx) })
	wg.Go(func() { errs <- p.client.runPeer(runCtx) })
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errs:
			break loop // a role failed: both stop
		case <-tick.C:
			p.settle(runCtx)
		}
	}
	stop()
	// A worker blocked reading the TUN returns when its queues close.
	p.shared.iface.Close()
	wg.Wait()
	return err
}

// settle looks at both roles' IKE SAs, deletes one of two, and gives the
// TUN to the role whose IKE SA stays.
func (p *Peer) settle(ctx context.Context) {
	st := p.client.session.Status()
	mine := st.State == "established"
	var theirs bool
	var theirsAt time.Time
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	for _, c := range p.gw.resp.Clients(sctx) {
		theirs = true
		if c.Established.After(theirsAt) {
			theirsAt = c.Established
		}
	}
	cancel()
	if theirs {
		p.lastResponder.Store(time.Now().UnixNano())
	}
	both := mine && theirs
	if both && !p.both {
		p.log.Info("both hosts hold an IKE SA: one goes", "ours_since", st.Established, "theirs_since", theirsAt)
	}
	p.both = both
	switch keep := settleRule(p.cfg.First, mine, st.Established, theirs, theirsAt); keep {
	case roleInitiator:
		if theirs {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			p.gw.resp.Disconnect(dctx, p.cfg.Gateway.Responder.Peers[0], "the peer's other IKE SA is kept")
			cancel()
		}
		p.setTurn(roleInitiator)
	case roleResponder:
		if mine {
			p.client.session.Drop()
		}
		p.setTurn(roleResponder)
	}
}

// settleRule says which role's IKE SA stays (roleNone: neither holds
// one): see Peer. mineAt and theirsAt are when each was set up.
func settleRule(first, mine bool, mineAt time.Time, theirs bool, theirsAt time.Time) int32 {
	switch {
	case mine && theirs && first && theirsAt.After(mineAt):
		return roleResponder // the peer lost ours and started afresh
	case mine && theirs:
		if first {
			return roleInitiator
		}
		return roleResponder
	case mine:
		return roleInitiator
	case theirs:
		return roleResponder
	}
	return roleNone
}

// setTurn gives the TUN to role.
func (p *Peer) setTurn(role int32) {
	if old := p.active.Swap(role); old != role {
		p.shared.handOver(old)
		p.log.Info("the TUN now feeds the IKE SA started by " + map[int32]string{roleInitiator: "this host", roleResponder: "the peer"}[role])
	}
}

// waitToConnect holds the second host's IKE SA back while the first's is
// up, and for Standby after it went (or after the start).
func (p *Peer) waitToConnect(ctx context.Context) error {
	for {
		// Asked here too, not only at settle's pace: a Standby shorter
		// than settle's tick must not let an IKE SA start beside the
		// first host's.
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		if len(p.gw.resp.Clients(qctx)) > 0 {
			p.lastResponder.Store(time.Now().UnixNano())
		}
		cancel()
		last := p.started
		if t := time.Unix(0, p.lastResponder.Load()); t.After(last) {
			last = t
		}
		if time.Since(last) >= p.cfg.Standby {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PeerStatus is a Peer's state for `mifsec status`.
type PeerStatus struct {
	Role string `json:"role"` // "peer"
	// Active names the IKE SA the traffic uses: "initiator" (started by
	// this host), "responder" (by the peer) or "" (none yet).
	Active    string        `json:"active"`
	Initiator Status        `json:"initiator"`
	Responder GatewayStatus `json:"responder"`
}

// Status returns both roles' states.
func (p *Peer) Status(ctx context.Context) PeerStatus {
	st := PeerStatus{Role: "peer", Initiator: p.client.Status(), Responder: p.gw.Status(ctx)}
	switch p.active.Load() {
	case roleInitiator:
		st.Active = "initiator"
	case roleResponder:
		st.Active = "responder"
	}
	return st
}

// Close releases both roles and the TUN device.
func (p *Peer) Close() {
	if p.client != nil {
		p.client.Close()
	}
	if p.gw != nil {
		p.gw.Close()
	}
	if p.shared != nil {
		if err := p.shared.iface.Close(); err != nil {
			p.log.Warn("removing the TUN device", "err", err)
		}
	}
}

// sharedTUN is a TUN device whose queues two engines take turns reading.
// A nil *sharedTUN stands for a device of one's own.
type sharedTUN struct {
	iface   *tun.Interface
	devs    []wgtun.Device // iface's queues
	turn    *atomic.Int32
	mu      sync.Mutex
	changed chan struct{}          // closed and replaced when the turn changes
	views   map[int32][]*turnQueue // each role's views of the queues
}

func (s *sharedTUN) device() *tun.Interface {
	if s == nil {
		return nil
	}
	return s.iface
}

// queues returns role's view of the device's queues.
func (s *sharedTUN) queues(role int32) []wgtun.Device {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.views == nil {
		s.views = map[int32][]*turnQueue{}
	}
	var out []wgtun.Device
	for _, q := range s.devs {
		tq := &turnQueue{Device: q, s: s, role: role, closed: make(chan struct{})}
		s.views[role] = append(s.views[role], tq)
		out = append(out, tq)
	}
	return out
}

// handOver ends the reads of role old's views, which the turn just left:
// a read deadline in the past wakes a reader blocked in the read system
// call before it takes a batch the other role should have (the device's
// files are non-blocking, on Go's poller), and the other role's readers
// start once none of old's is reading.
func (s *sharedTUN) handOver(old int32) {
	s.mu.Lock()
	views := s.views[old]
	s.mu.Unlock()
	var files []*os.File
	for _, q := range s.devs {
		if f := q.File(); f != nil {
			files = append(files, f)
		}
	}
	for _, f := range files {
		f.SetReadDeadline(time.Unix(1, 0))
	}
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); {
		reading := false
		for _, q := range views {
			reading = reading || q.reading.Load() > 0
		}
		if !reading {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	for _, f := range files {
		f.SetReadDeadline(time.Time{})
	}
	s.wake()
}

// waitChan returns the channel closed at the next change of turn.
func (s *sharedTUN) waitChan() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// wake tells the waiting readers that the turn changed.
func (s *sharedTUN) wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// turnQueue is one role's view of a TUN queue: it reads only in the
// role's turn and writes at any time. The check is one atomic load per
// batch; a change of turn wakes a reader of the role it leaves from the
// read system call (handOver), so that no packet goes to an IKE SA that
// is no longer used.
type turnQueue struct {
	wgtun.Device
	s       *sharedTUN
	role    int32
	reading atomic.Int32 // in the device's Read
	once    sync.Once
	closed  chan struct{}
}

func (q *turnQueue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if q.s.turn.Load() == q.role {
			q.reading.Add(1)
			n, err := q.Device.Read(bufs, sizes, offset)
			q.reading.Add(-1)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// handOver woke it: look at the turn again (once the
				// deadline is lifted, if the turn came back at once).
				time.Sleep(100 * time.Microsecond)
				continue
			}
			return n, err
		}
		ch := q.s.waitChan()
		if q.s.turn.Load() == q.role {
			continue
		}
		select {
		case <-ch:
		case <-q.closed:
			return 0, os.ErrClosed
		}
	}
}

// Close ends this role's reading; the device is the Peer's to close.
func (q *turnQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}
