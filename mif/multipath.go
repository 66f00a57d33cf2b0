package mif

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/scheduler"
)

// peerPaths conducts the paths to one peer (a client's gateway, or one of
// a gateway's clients): it keeps the scheduler that picks a path per
// packet, publishes the paths as the data plane's path group for the
// peer's routes, probes every path and feeds the replies to the
// scheduler's estimators and failure detector, and tells the inbound SA's
// resequencer how far apart the paths are.
//
//	probe replies ─▶ pathProber ─▶ Scheduler.ProbeReply ─▶ estimates, health
//	every tick    ─▶ Scheduler.Tick (timeouts)  ─▶ policy sets the engine's
//	                                                workers read per packet
//	                 Scheduler.DelaySpread      ─▶ Engine.SetOrderDelays
//
// Scheduler path IDs index the group's members, so the picker's answer is
// the member to send on; removed paths leave a hole that sends nowhere.
type peerPaths struct {
	log    *slog.Logger
	engine *dataplane.Engine
	sched  *scheduler.Scheduler
	policy scheduler.Policy
	picker *scheduler.FallbackPicker
	// groupPicker is what the path group asks: picker, or a ClassPicker
	// around it when traffic classes are configured.
	groupPicker scheduler.Picker
	// classes is groupPicker when traffic classes are configured; ifaces
	// and peerIfaces name each path's local interface and the peer's at
	// its far end, for the classes bound to interfaces (guarded by mu).
	classes    *scheduler.ClassPicker
	ifaces     map[scheduler.PathID]string
	peerIfaces map[scheduler.PathID]string
	group      *dataplane.PathGroup
	prober     *pathProber

	reinjected atomic.Uint64 // datagrams sent again after their path failed

	// woken is signalled by the data plane when data goes out while the
	// peer is quiet (dataplane.PathGroup.SetWake): Run then probes every
	// path at once. nudged is signalled when a path comes or goes: Run
	// ticks at once instead of up to a quiet tick later.
	woken, nudged chan struct{}

	// waiting are failed paths whose datagrams no other path could take
	// when they failed (waitingReinject); only Run's goroutine uses it.
	waiting []waitingReinject

	// mu is a leaf (it may be taken under the client's multiPath.routeMu);
	// nothing else of mif is locked while it is held.
	mu      sync.Mutex
	members []dataplane.GroupMember // by scheduler path ID
	paths   scheduler.PathSet
	inSPI   uint32 // the inbound SA that restores order (0: none)
	out     *dataplane.SA
}

// orderConfig is how the receivers of a multipath session restore order.
// A gap waits at most 200 ms: the delay spread the probes measure leaves
// out the queues the traffic itself builds (a 20 Mbit/s cellular uplink
// with 100 ms of buffer behind a 50 Mbit/s WLAN one with 50 ms differ by
// up to 125 ms under load); gaps that are real losses are released early
// by the resequencer's loss inference, not by this bound.
//
// It expects two paths until the conductor's first tick counts them: order
// is restored because a second path is there (or about to be), and a
// packet on it must not be taken for lost while the first path alone has
// delivered beyond it.
var orderConfig = scheduler.ResequencerConfig{MaxWait: 200 * time.Millisecond, ExpectedPaths: 2}

// receiveOverPaths readies the inbound SA spi of a peer that sends over
// several paths under policy. Aggregate and redundant spread one flow over
// the paths: the receiver restores order, which grows the replay window.
// Single and offload restore no order, but their peer too sends a failed
// path's datagrams again on another (peerPaths.reinject), and the copies
// arrive behind everything the other paths carried while the failure went
// unnoticed (offload's overflow onto a lower tier goes on meanwhile): that
// can be more than the window an SA starts with, 480 packets, a tenth of a
// second at 50 Mbit/s. The window grows for them.
func receiveOverPaths(e *dataplane.Engine, spi uint32, policy scheduler.Policy) error {
	if policy == scheduler.PolicyAggregate || policy == scheduler.PolicyRedundant {
		return e.RestoreOrder(spi, orderConfig)
	}
	return e.GrowReplayWindow(spi)
}

// noEnginePath marks a hole in the members: the engine has no such path.
const noEnginePath = scheduler.PathID(1<<16 - 1)

// tickInterval is how often the scheduler's timeouts are applied while a
// peer's paths are busy (carrying data, verified, suspect or failing); it
// is below the fastest probe interval the failure detector asks for.
// idleTickInterval is the pace while every path is idle and healthy
// (probed every 100 ms): a miss is then seen at most that much later, and
// a gateway's idle clients cost a quarter of the wake-ups. quietTickInterval
// is the pace once no data went out for the detector's QuietAfter and the
// paths are probed every QuietInterval (a second): the first data after
// that wakes the conductor at once (dataplane.PathGroup.SetWake).
const (
	tickInterval      = 5 * time.Millisecond
	idleTickInterval  = 20 * time.Millisecond
	quietTickInterval = 250 * time.Millisecond
	idleProbeEvery    = 100 * time.Millisecond // the detector's interval for an idle, healthy path
)

// peerPathsConfig sets up the paths to one peer.
type peerPathsConfig struct {
	Engine    *dataplane.Engine
	Policy    scheduler.Policy
	Scheduler scheduler.Config
	// ProbeSize pads probe requests (0: unpadded).
	ProbeSize int
	// Classes, when set, gives some traffic its own policy (by
	// destination, protocol, port or DSCP); the rest takes Policy.
	Classes *scheduler.Classifier
	Logger  *slog.Logger
}

func newPeerPaths(cfg peerPathsConfig) *peerPaths {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	pp := &peerPaths{log: log, engine: cfg.Engine, sched: scheduler.New(cfg.Scheduler), policy: cfg.Policy}
	pp.picker = scheduler.NewFallbackPicker(pp.sched, cfg.Policy, noEnginePath)
	pp.groupPicker = pp.picker
	if cfg.Classes != nil {
		pp.classes = scheduler.NewClassPicker(pp.picker, cfg.Classes)
		pp.groupPicker = pp.classes
		pp.ifaces, pp.peerIfaces = map[scheduler.PathID]string{}, map[scheduler.PathID]string{}
	}
	pp.group = dataplane.NewPathGroup(pp.groupPicker)
	pp.group.KeepSent(true)
	pp.woken, pp.nudged = make(chan struct{}, 1), make(chan struct{}, 1)
	pp.group.SetWake(func() { signal(pp.woken) })
	pp.prober = newPathProber(cfg.Engine, pathProberConfig{
		Outbound: pp.outbound,
		Interval: pp.sched.ProbeInterval,
		Timeout:  2 * time.Second,
		Size:     cfg.ProbeSize,
		Send:     pp.sendProbe,
		Sent:     pp.probeSent,
		Sample:   pp.sample,
		Logger:   log,
	})
	return pp
}

// SetFallback makes path id take the packets the scheduler has no usable
// path for (noEnginePath: drop them).
func (pp *peerPaths) SetFallback(id scheduler.PathID) { pp.picker.SetFallback(id) }

// Policy is the policy the paths are scheduled by.
func (pp *peerPaths) Policy() scheduler.Policy { return pp.policy }

// Group is the path group the peer's routes send through.
func (pp *peerPaths) Group() *dataplane.PathGroup { return pp.group }

// SetSAs sets the SA that seals probes (the current outbound Child SA),
// and the inbound SA whose resequencer follows the paths' delays.
func (pp *peerPaths) SetSAs(out *dataplane.SA, inSPI uint32) {
	pp.mu.Lock()
	pp.out, pp.inSPI = out, inSPI
	pp.mu.Unlock()
}

func (pp *peerPaths) outbound() *dataplane.SA {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.out
}

// AddPath adds path id, sent through member m from local interface iface
// to the peer's interface peerIface ("" when unknown), and starts probing
// it; it carries data once the scheduler verified it.
func (pp *peerPaths) AddPath(id scheduler.PathID, kind scheduler.Kind, tier int, iface, peerIface string, m dataplane.GroupMember) error {
	if err := pp.sched.AddPath(scheduler.PathConfig{ID: id, Kind: kind, Tier: tier}, scheduler.Now()); err != nil {
		return fmt.Errorf("adding path %d: %w", id, err)
	}
	pp.mu.Lock()
	for len(pp.members) <= int(id) {
		pp.members = append(pp.members, dataplane.GroupMember{Path: noEnginePath})
	}
	pp.members[id] = m
	pp.paths = pp.paths.With(id)
	if pp.classes != nil {
		pp.ifaces[id], pp.peerIfaces[id] = iface, peerIface
		pp.classes.SetPathInterfaces(pp.ifaces, pp.peerIfaces)
	}
	pp.publish()
	pp.mu.Unlock()
	pp.prober.AddPath(id, m.Remote)
	signal(pp.nudged)
	return nil
}

// RemovePath stops using and probing path id at once, and sends what may
// still be in flight on it again on the other paths: whether the way is
// gone or only leaves the set, nothing it took is left to the flows'
// retransmission timers.
func (pp *peerPaths) RemovePath(id scheduler.PathID) {
	if id == pp.picker.Fallback() {
		pp.SetFallback(noEnginePath)
	}
	since, known := pp.sched.Unconfirmed(id)
	pp.sched.RemovePath(id)
	pp.prober.RemovePath(id)
	pp.mu.Lock()
	var gone dataplane.GroupMember
	if int(id) < len(pp.members) {
		gone = pp.members[id]
		pp.members[id] = dataplane.GroupMember{Path: noEnginePath}
	}
	pp.paths = pp.paths.Without(id)
	if pp.classes != nil {
		delete(pp.ifaces, id)
		delete(pp.peerIfaces, id)
		pp.classes.SetPathInterfaces(pp.ifaces, pp.peerIfaces)
	}
	pp.publish()
	pp.mu.Unlock()
	if known && gone.Path != noEnginePath {
		pp.reinject(id, gone, since, "removed")
	}
	signal(pp.nudged)
}

// reinject sends again on the other paths, at once and in order, what was
// sent on member m (path id) since, which the peer may not have. At once:
// these datagrams hold up every flow they belong to (the peer's
// resequencer waits for them, or its TCP does), and those flows have
// mostly stopped sending for want of acknowledgements, so they are the
// most urgent traffic; a pace below the surviving paths' rate would let
// the flows' retransmission timers fire first. (A pace by the paths'
// backlog, tried first, starved: a TCP flow moving to a slower path keeps
// its backlog high for a second.)
func (pp *peerPaths) reinject(id scheduler.PathID, m dataplane.GroupMember, since int64, why string) {
	n := pp.engine.Reinject(pp.group, m, since)
	pp.reinjected.Add(uint64(n))
	if n > 0 {
		pp.log.Debug("path "+why+": what it carried since its last confirmation was sent again on the others",
			"path", id, "datagrams", n, "window", time.Duration(scheduler.Now()-since))
	}
}

// waitingReinject is a failed path whose datagrams wait for another path
// to come into service: when it failed, every other path was out of
// service too (a deep queue or a cellular link's gap can make a healthy
// path miss its probes), the picker fell back to the failed path, and a
// reinjection then would have sent nothing. The engine keeps the copies
// until they are collected.
type waitingReinject struct {
	id     scheduler.PathID
	member dataplane.GroupMember
	since  int64
	failed int64 // when it failed (scheduler.Now)
}

// maxReinjectWait is how long a failed path's datagrams wait for another
// path: longer, and TCP has retransmitted them itself.
const maxReinjectWait = time.Second

// failures reinjects what was in flight on the paths that failed since
// the last call (failed is the set seen then) and returns the set now. A
// path that failed while no other could take its datagrams has them
// reinjected as soon as one can, within maxReinjectWait.
func (pp *peerPaths) failures(failed scheduler.PathSet) scheduler.PathSet {
	now := pp.sched.Failed()
	for set := failed &^ now; !set.Empty(); {
		pp.log.Debug("path back in service, or removed", "path", set.Next())
	}
	for set := now &^ failed; !set.Empty(); {
		id := set.Next()
		pp.log.Debug("path out of service", "path", id)
		m, ok := pp.member(id)
		since, known := pp.sched.Unconfirmed(id)
		switch {
		case !ok || !known:
		case pp.otherInService(id, now):
			pp.reinject(id, m, since, "failed")
		default:
			pp.log.Debug("path failed with no other in service: its datagrams wait for one", "path", id)
			pp.waiting = append(pp.waiting, waitingReinject{id: id, member: m, since: since, failed: scheduler.Now()})
		}
	}
	if len(pp.waiting) > 0 {
		kept := pp.waiting[:0]
		for _, w := range pp.waiting {
			switch {
			case !now.Has(w.id), scheduler.Now()-w.failed > int64(maxReinjectWait):
				// Back in service itself, or waited too long.
			case pp.otherInService(w.id, now):
				pp.reinject(w.id, w.member, w.since, "failed, once another path was in service")
			default:
				kept = append(kept, w)
			}
		}
		pp.waiting = kept
	}
	return now
}

// otherInService reports whether a path other than id is active and not
// in failed: one the picker sends on instead of id.
func (pp *peerPaths) otherInService(id scheduler.PathID, failed scheduler.PathSet) bool {
	for set := pp.sched.Paths() &^ failed; !set.Empty(); {
		if other := set.Next(); other != id {
			if st, ok := pp.State(other); ok && st == scheduler.StateActive {
				return true
			}
		}
	}
	return false
}

// State returns the scheduler's state of path id.
func (pp *peerPaths) State(id scheduler.PathID) (scheduler.State, bool) {
	info, ok := pp.sched.Info(id, scheduler.Now())
	return info.State, ok
}

// publish hands the members to the data plane; pp.mu is held.
func (pp *peerPaths) publish() {
	pp.group.Set(pp.groupPicker, pp.members...)
}

// Paths returns the snapshot of every path.
func (pp *peerPaths) Paths() []scheduler.PathInfo {
	pp.mu.Lock()
	set := pp.paths
	pp.mu.Unlock()
	now := scheduler.Now()
	var out []scheduler.PathInfo
	for c := set; !c.Empty(); {
		if info, ok := pp.sched.Info(c.Next(), now); ok {
			out = append(out, info)
		}
	}
	return out
}

// HandleReply takes a probe reply the engine received in the peer's
// inbound SA.
func (pp *peerPaths) HandleReply(ev *dataplane.ProbeEvent) { pp.prober.HandleReply(ev) }

func (pp *peerPaths) member(id scheduler.PathID) (dataplane.GroupMember, bool) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if int(id) >= len(pp.members) || pp.members[id].Path == noEnginePath {
		return dataplane.GroupMember{}, false
	}
	return pp.members[id], true
}

func (pp *peerPaths) sendProbe(out *dataplane.SA, id scheduler.PathID, p dataplane.Probe, size int) error {
	m, ok := pp.member(id)
	if !ok {
		return fmt.Errorf("probing path %d: removed", id)
	}
	return pp.engine.SendGroupProbe(out, pp.group, m, p, size)
}

func (pp *peerPaths) probeSent(id scheduler.PathID, seq uint32, at time.Time) {
	m, ok := pp.member(id)
	if !ok {
		return
	}
	packets, bytes := pp.group.MemberTx(m)
	pp.sched.ProbeSent(id, seq, scheduler.At(at), scheduler.Counters{Packets: packets, Bytes: bytes})
}

func (pp *peerPaths) sample(s probeSample) {
	if s.Lost {
		return // the scheduler's detector times probes out itself (Tick)
	}
	err := pp.sched.ProbeReply(s.Path, scheduler.ProbeReply{Seq: s.Seq,
		Rx: scheduler.Counters{Packets: s.PeerRxPackets, Bytes: s.PeerRxBytes}, PeerArrived: s.PeerArrived}, scheduler.At(s.At))
	if err != nil {
		pp.log.Debug("probe reply", "path", s.Path, "err", err)
	}
}

// Run probes and applies the scheduler's timeouts until ctx ends.
func (pp *peerPaths) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer pp.engine.ForgetSent(pp.group)
	wg.Go(func() { pp.prober.Run(ctx) })
	t := time.NewTimer(tickInterval)
	defer t.Stop()
	var lastSpread, lastJitter time.Duration
	var lastPaths int
	var failed scheduler.PathSet
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-pp.nudged:
		case <-pp.woken:
			if ctx.Err() != nil {
				return nil // the prober may be gone: do not queue calls for it
			}
			// Data after a quiet spell: every path counts as carrying
			// and is probed now, not up to a QuietInterval later, so
			// that one that died meanwhile is seen as soon as it would
			// be under traffic, whichever path the data took.
			pp.sched.DataSent(scheduler.Now())
			for set := pp.sched.Paths(); !set.Empty(); {
				pp.prober.ProbeNow(set.Next())
			}
		}
		pp.sched.Tick(scheduler.Now())
		failed = pp.failures(failed)
		quiet := pp.sched.Quiet()
		if !quiet.Empty() && !pp.group.Armed() && len(pp.woken) == 0 {
			pp.group.ArmWake()
		}
		t.Reset(pp.tickEvery(quiet))
		pp.mu.Lock()
		inSPI, n := pp.inSPI, pp.paths.Len()
		pp.mu.Unlock()
		if inSPI == 0 {
			continue
		}
		if n != lastPaths {
			// As soon as the paths are known, not only once their
			// delays are: until then a gap is inferred lost early
			// from whatever paths delivered data, and a packet on a
			// path that has carried none yet (its probes travel in the
			// probe SA) would be given up while it is in flight and
			// arrive out of order.
			pp.engine.SetOrderPaths(inSPI, n)
			lastPaths = n
		}
		spread, jitter, known := pp.sched.DelaySpread()
		if !known {
			// The resequencer keeps its initial wait until every path
			// has a delay: a spread of the first path alone is 0.
			continue
		}
		if spread != lastSpread || jitter != lastJitter {
			// The peer's paths are ours reversed: their delay spread is
			// close to the one measured here.
			pp.engine.SetOrderDelays(inSPI, spread, jitter)
			lastSpread, lastJitter = spread, jitter
		}
	}
}

// tickEvery is how long until the next Tick: tickInterval while any path
// asks for probes faster than an idle, healthy one, quietTickInterval while
// every path is quiet (probed every QuietInterval; quiet is
// Scheduler.Quiet, read once by the caller), else idleTickInterval.
func (pp *peerPaths) tickEvery(quiet scheduler.PathSet) time.Duration {
	paths := pp.sched.Paths()
	for set := paths; !set.Empty(); {
		if iv := pp.sched.ProbeInterval(set.Next()); iv > 0 && iv < idleProbeEvery {
			return tickInterval
		}
	}
	if !paths.Empty() && quiet == paths {
		return quietTickInterval
	}
	return idleTickInterval
}

// signal makes a non-blocking send on c, a channel of capacity 1 that a
// goroutine waits on for work: a signal already pending is enough.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Order returns the counters of the inbound SA's resequencer, nil when it
// does not restore order.
func (pp *peerPaths) Order() *OrderStatus {
	pp.mu.Lock()
	inSPI := pp.inSPI
	pp.mu.Unlock()
	if inSPI == 0 {
		return nil
	}
	st, held, ok := pp.engine.OrderStats(inSPI)
	if !ok {
		return nil
	}
	return &OrderStatus{InOrder: st.InOrder, Held: st.Held, Released: st.Released, Timeouts: st.Timeouts,
		LostEarly: st.LostEarly, Overflow: st.Overflow, Late: st.Late, Reordered: st.Reordered, Duplicates: st.Duplicates, HeldNow: held}
}

// Status returns every path's scheduler state and estimates with what the
// data plane sent through it (the group's member counters) and received on
// it (the inbound SA's per-source counters: a member's engine path, and
// its remote endpoint when it names one).
func (pp *peerPaths) Status() []ScheduledPath {
	pp.mu.Lock()
	inSPI := pp.inSPI
	pp.mu.Unlock()
	var sources []dataplane.SourceStats
	if inSPI != 0 {
		sources = pp.engine.InboundSources(inSPI)
	}
	infos := pp.Paths()
	out := make([]ScheduledPath, 0, len(infos))
	for _, info := range infos {
		sp := ScheduledPath{ID: int(info.ID), Kind: info.Kind.String(), Tier: info.Tier, State: info.State.String(),
			SRTT: info.SRTT, Rate: info.Rate, Loss: info.Loss, OneWayDelay: info.OneWayDelay, PickerRate: info.PickerRate, Queued: info.Queued}
		if m, ok := pp.member(info.ID); ok {
			sp.EnginePath = int(m.Path)
			sp.TxPackets, sp.TxBytes = pp.group.MemberTx(m)
			if m.Remote != nil {
				sp.Remote = m.Remote.AddrPort().String()
			}
			for _, s := range sources {
				if s.Path == m.Path && (m.Remote == nil || s.From == m.Remote.AddrPort()) {
					sp.RxPackets += s.Packets
					sp.RxBytes += s.Bytes
				}
			}
		}
		out = append(out, sp)
	}
	return out
}

// localInterface returns the name of this host's interface that holds
// address a, "" when none does (or a is unspecified): the local end of a
// path, for traffic classes bound to interfaces. Without classes nothing
// asks, so it lists no interface (a gateway adds paths for every client).
func (pp *peerPaths) localInterface(a netip.Addr) string {
	if pp.classes == nil || !a.IsValid() || a.IsUnspecified() {
		return ""
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, i := range ifaces {
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, x := range addrs {
			if n, ok := x.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
					return i.Name
				}
			}
		}
	}
	return ""
}
