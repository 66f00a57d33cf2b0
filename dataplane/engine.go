package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Path is one way to the peer: a socket and the peer's address on it.
type Path struct {
	ID     scheduler.PathID
	Conn   *udp.Conn
	Remote *udp.Endpoint
	Stats  PathStats
}

// PathStats count what one path's socket carried: ESP datagrams sent
// (sealed bytes) and datagrams of every kind received (bytes as on the
// wire, without the IP and UDP headers).
type PathStats struct {
	TxPackets, TxBytes atomic.Uint64
	RxPackets, RxBytes atomic.Uint64
}

// Route sends inner packets to destinations in Prefix through SA, if their
// source is in Sources (the SA's local traffic selectors; RFC 4301 §5.1: a
// packet from any other source is dropped and counted in
// Stats.SourcePolicy, so a host cannot send what the SA does not cover),
// on the member of Group its picker chooses per packet. A route on one
// path is a group of one (a gateway's route to a client behind one socket
// is the member with the client's Endpoint); a nil Group is the group of
// path 0 to its Remote.
type Route struct {
	Prefix  netip.Prefix
	Sources Selectors
	SA      *SA
	Group   *PathGroup
}

// EngineConfig is what an Engine runs on.
type EngineConfig struct {
	// Queues are the TUN device's queues; one outbound worker each.
	Queues []wgtun.Device
	// Paths are the sockets to the peer at start; more come and go with
	// AddPath and RemovePath. IDs must be distinct.
	Paths []*Path
	// OnProbeReply receives the replies to path probes (docs/mif.md) that
	// arrive in inbound SAs; requests are answered by the engine itself
	// (AddInbound). It runs on the receiving worker: it must be quick and
	// must not keep ev after it returns. nil counts replies as dummies.
	OnProbeReply func(ev *ProbeEvent)
	// RescueRefused resends, on another path to its Remote, what a path's
	// socket refused because its interface went down or lost its route:
	// the moments between an interface going away and the conductor
	// removing its path lose nothing. For a client, whose paths all lead
	// to the same gateway; not for a gateway, whose path Remotes are not
	// peers.
	RescueRefused bool
	// Control receives the IKE messages (without the non-ESP marker) that
	// arrive on a path's socket. It runs on the receiving worker and must
	// not keep msg after it returns.
	Control func(msg []byte, from netip.AddrPort, path *Path)
	Logger  *slog.Logger
}

// EngineStats are the engine's counters.
type EngineStats struct {
	TxPackets, TxBytes atomic.Uint64 // inner packets sealed and sent, inner bytes
	RxPackets, RxBytes atomic.Uint64 // inner packets opened and written to the TUN
	Keepalives         atomic.Uint64 // NAT keepalives received
	Dummies            atomic.Uint64 // next header 59 packets consumed that were not probes
	Probes             atomic.Uint64 // probe requests answered and replies handed to OnProbeReply
	ProbesUnanswered   atomic.Uint64 // probe requests in an SA with no outbound pair, or whose reply failed
	Rescued            atomic.Uint64 // datagrams resent on another path after theirs refused them
	Reinjected         atomic.Uint64 // datagrams sent again on another path after theirs failed (Reinject)
	IKEMessages        atomic.Uint64 // handed to Control
	NoRoute            atomic.Uint64 // outbound packets with no SA for their destination
	SourcePolicy       atomic.Uint64 // outbound packets whose source is outside their route's Sources
	NoPath             atomic.Uint64 // outbound packets whose chosen path is gone
	SendErrors         atomic.Uint64 // datagrams the kernel refused
	MSSClamped         atomic.Uint64 // TCP SYNs whose MSS was lowered to fit the TUN MTU (mss.go)
	TUNErrors          atomic.Uint64 // failed TUN reads or writes
	Drops              DropCounters  // inbound drops of every reason

	// SequenceExhausted counts outbound packets dropped because their SA
	// had handed out its last sequence number (it was not rekeyed in time).
	SequenceExhausted atomic.Uint64
}

// exhaustedLogInterval is the least time between two log lines about SAs
// whose sequence numbers ran out: the drops themselves are counted.
const exhaustedLogInterval = 10 * time.Second

// Engine is the data plane of one TUN device: it moves packets between the
// TUN device and the paths.
//
//	outbound, one worker per TUN queue (the kernel keeps a flow on one queue):
//
//	  TUN queue ─Read batch─▶ SA by inner destination ─▶ sequence numbers, one
//	  atomic per run of packets for one SA ─▶ seal in place ─▶ scheduler picks
//	  the path ─▶ per-path udp.Sender, GSO by iovec ─▶ sendmmsg
//
//	inbound, one worker per path socket:
//
//	  udp.Receiver: recvmmsg with GRO ─▶ split by segment size ─▶ demux: IKE to Control,
//	  keepalive counted, ESP on ─▶ SA by SPI ─▶ replay check, open straight
//	  into a TUN buffer, replay update ─▶ inner header and selector check ─▶
//	  TUN Write batch (GRO coalescing); a probe request (next header 59) is
//	  answered here with the inbound SA's pair, a reply goes to OnProbeReply
//
// Each worker runs its packets to completion: no lock, no channel and no
// allocation per packet; a batch takes one system call in and one or a few
// out. The alternative, wireguard-go's parallel crypto workers behind
// per-peer ordered queues, spreads a single flow over all cores but hands
// every packet between goroutines twice. Measured on the target, a 2-core
// host where the tunnel shares the cores with the application and the
// kernel's TCP stack, this engine carries 1.8-2.3 times wireguard-go's
// single-flow throughput (README "Performance"); a parallel-crypto variant
// of this engine has not been built to isolate the concurrency design from
// the rest. Decrypting from the receive buffer into the TUN buffer (OpenTo)
// makes the split of a GRO train free, and sealing in place with GSO by
// iovec makes the send side copy-free.
//
// Workers read the route and inbound SA tables without a lock; writers
// change them in place under the table's mutex, a client's entries at a
// time (table.go, routes.go). The path table is read through an atomic
// pointer; its writers copy it and swap it under pathMu.
//
// Lock order: the route table's mutex, inMu and pathMu are never held together; inMu
// comes before an inbound SA's reorder.mu (RemoveInbound closes the
// reorder under it) and its expandMu (GrowReplayWindow and RestoreOrder
// grow its probe SA's window). The packet path takes none of them but reorder.mu,
// once per batch of an SA that restores order.
type Engine struct {
	cfg     EngineConfig
	log     *slog.Logger
	path0   *PathGroup // the group of a Route without one
	routes  *routeTable
	inbound *table[uint32, *inboundSA] // by SPI: a data SA's entry under its probe SA's SPI too
	inMu    sync.Mutex                 // serialises writers of inbound
	// lastLocal is the local selectors of the inbound SA added last
	// (under inMu): the next SA with the same ones shares them, as a
	// gateway's clients mostly do (nothing changes an SA's selectors).
	lastLocal Selectors
	paths     atomic.Pointer[pathTable]
	closing   atomic.Bool
	Stats     EngineStats

	// pathMu serialises AddPath, RemovePath, Run and Close; running says
	// Run started the workers, so AddPath starts the new path's.
	pathMu    sync.Mutex
	running   bool
	workers   sync.WaitGroup
	receiving map[*Path]chan struct{} // closed when the path's receive worker ended

	// rings are the outbound workers' copies of recent datagrams
	// (reinject.go); ringMu guards the slice.
	ringMu sync.Mutex
	rings  []*sentRing

	lastExhaustedLog atomic.Int64 // unix nanoseconds of the last log line about an SA out of sequence numbers

	// idleMu serialises ReleaseIdleCiphers; idleSweeps numbers its calls.
	idleMu     sync.Mutex
	idleSweeps uint32

	// mss4 and mss6 are the largest MSS a TCP SYN crossing the tunnel may
	// announce, from the TUN MTU (0: not clamped).
	mss4, mss6 uint16
}

type inboundSA struct {
	sa      *SA
	pair    *SA       // the outbound SA of the same Child SA: answers probe requests
	remote  Selectors // inner source addresses the peer may send from
	local   Selectors // inner destination addresses the peer may send to
	sources sourceCounters
	reorder atomic.Pointer[reorder] // nil: packets go to the TUN as they come
	// transport is the header a transport-mode SA rebuilds in front of
	// each payload (transport.go); nil in tunnel mode.
	transport *transportHeader
}

// ProbeEvent is a probe that arrived: in which SA, on which path, from
// where, and what that SA received so far on that path from that source
// (for the reply's counters).
type ProbeEvent struct {
	Probe    Probe
	SPI      uint32 // the inbound SA it arrived in
	Path     *Path
	From     netip.AddrPort
	Received SourceStats
}

// tunBatch is the number of packets moved per TUN read or write.
const tunBatch = 128

// NewEngine checks cfg and returns an engine that does not run yet.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if len(cfg.Queues) == 0 {
		return nil, errors.New("engine: no TUN queue")
	}
	paths := &pathTable{}
	for _, p := range cfg.Paths {
		if err := checkPath(p); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		if paths.get(p.ID) != nil {
			return nil, fmt.Errorf("engine: two paths with ID %d", p.ID)
		}
		paths = paths.with(p)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, path0: NewPathGroup(nil, GroupMember{Path: 0})}
	e.paths.Store(paths)
	if e.log == nil {
		e.log = slog.Default()
	}
	e.routes = newRouteTable()
	e.inbound = newTable[uint32, *inboundSA](hashSPI)
	if mtu, err := cfg.Queues[0].MTU(); err == nil {
		e.mss4, e.mss6 = mssFor(mtu)
	}
	return e, nil
}

// SetRoutes replaces the outbound routes. The most specific prefix wins.
func (e *Engine) SetRoutes(routes []Route) { e.routes.set(routes) }

// AddRoutes adds routes to the existing ones, in place: the cost does not
// grow with the routes there are (routes.go).
func (e *Engine) AddRoutes(routes ...Route) { e.routes.add(routes) }

// RemoveRoutes removes every route through sa and reports how many there
// were.
func (e *Engine) RemoveRoutes(sa *SA) int { return e.routes.removeSA(sa) }

// ReplaceRouteSA moves the routes through old to new (a rekeyed Child SA)
// and reports how many moved.
func (e *Engine) ReplaceRouteSA(old, new *SA) int {
	return e.routes.change(old, func(r *Route) { r.SA = new })
}

// SetRouteGroup makes the routes through sa send on group g and reports
// how many there were.
func (e *Engine) SetRouteGroup(sa *SA, g *PathGroup) int {
	return e.routes.change(sa, func(r *Route) { r.Group = g })
}

// Routes returns a copy of the outbound routes, most specific first.
func (e *Engine) Routes() []Route { return e.routes.all() }

// RoutesTo returns the routes of prefix p exactly (not those that merely
// contain it), in the order added.
func (e *Engine) RoutesTo(p netip.Prefix) []Route { return e.routes.to(p) }

// AddInbound makes sa receive ESP; decrypted packets must come from an
// address in remote and go to an address in local (RFC 4301 §5.2: the
// inner header must match both sides of the SA's selectors). Anything else
// is dropped and counted as DropPolicy: a peer reaches only what it was
// granted.
//
// pair is the outbound SA of the same Child SA: a probe request that
// arrives in sa is answered with it, on the receive worker, without a
// round through the conductor; nil leaves requests unanswered (counted).
func (e *Engine) AddInbound(sa, pair *SA, remote, local Selectors) error {
	if sa.SPI() < 256 {
		// RFC 4303 §2.1: 0 is local-only (and on port 4500 the non-ESP
		// marker) and 1-255 are reserved.
		return fmt.Errorf("inbound SA: SPI %#x is reserved", sa.SPI())
	}
	if len(remote) == 0 || len(local) == 0 {
		return fmt.Errorf("inbound SA: SPI %#x: no traffic selectors for the peer's or this side", sa.SPI())
	}
	if sa.ReplayWindow() == nil {
		return fmt.Errorf("inbound SA: SPI %#x was made to seal only (SAConfig.Outbound)", sa.SPI())
	}
	probe := sa.ProbeSPI()
	if probe != 0 && (pair == nil || pair.ProbeSPI() == 0) {
		return fmt.Errorf("inbound SA: SPI %#x has a probe SA but its outbound pair has none to answer with", sa.SPI())
	}
	if probe != 0 && probe < 256 {
		return fmt.Errorf("inbound SA: SPI %#x: probe SA SPI %#x is reserved", sa.SPI(), probe)
	}
	e.inMu.Lock()
	defer e.inMu.Unlock()
	if _, dup := e.inbound.get(sa.SPI()); dup {
		return fmt.Errorf("inbound SA: SPI %#x already in use", sa.SPI())
	}
	if probe != 0 {
		if _, dup := e.inbound.get(probe); dup {
			return fmt.Errorf("inbound SA: SPI %#x: probe SA SPI %#x already in use", sa.SPI(), probe)
		}
	}
	var th *transportHeader
	if sa.Transport() {
		var err error
		if th, err = newTransportHeader(remote, local); err != nil {
			return fmt.Errorf("inbound SA: SPI %#x: %w", sa.SPI(), err)
		}
	}
	if !slices.Equal(local, e.lastLocal) {
		e.lastLocal = slices.Clip(slices.Clone(local))
	}
	in := &inboundSA{sa: sa, pair: pair, remote: slices.Clone(remote), local: e.lastLocal, transport: th}
	if probe != 0 {
		// The probe SA first: a data SA that receives has its probe SA.
		// Its SPI leads to the data SA's entry (a probe is opened with
		// sa.ProbeSA(), answered with pair's and counted in the data
		// SA's counters): no entry of its own.
		e.inbound.set(probe, in)
	}
	e.inbound.set(sa.SPI(), in)
	return nil
}

// dataEntry returns the entry of the inbound data SA spi; nil if there is
// none, or spi is a probe SA's.
func (e *Engine) dataEntry(spi uint32) *inboundSA {
	in, _ := e.inbound.get(spi)
	if in == nil || in.sa.SPI() != spi {
		return nil
	}
	return in
}

// InboundSPIInUse reports whether spi leads to an inbound SA, data or
// probe: the SPI a new inbound SA must not take. It takes no lock.
func (e *Engine) InboundSPIInUse(spi uint32) bool {
	_, ok := e.inbound.get(spi)
	return ok
}

// dataEntries yields each inbound data SA's entry once.
func (e *Engine) dataEntries(yield func(*inboundSA) bool) {
	for spi, in := range e.inbound.all {
		if spi == in.sa.SPI() && !yield(in) {
			return
		}
	}
}

// InboundSAs returns how many SAs receive, not counting probe SAs (each
// lives and dies with its data SA).
func (e *Engine) InboundSAs() int {
	n := 0
	for range e.dataEntries {
		n++
	}
	return n
}

// RemoveInbound stops sa with this SPI, and its probe SA, from receiving.
func (e *Engine) RemoveInbound(spi uint32) {
	e.inMu.Lock()
	defer e.inMu.Unlock()
	in := e.dataEntry(spi)
	if in == nil {
		return
	}
	e.inbound.delete(spi)
	if probe := in.sa.ProbeSPI(); probe != 0 {
		if p, _ := e.inbound.get(probe); p == in {
			e.inbound.delete(probe)
		}
	}
	if r := in.reorder.Load(); r != nil {
		r.close()
	}
}

// Run moves packets until ctx ends, then closes the queues and the paths'
// sockets and returns when every worker has stopped.
func (e *Engine) Run(ctx context.Context) error {
	e.pathMu.Lock()
	if e.running || e.closing.Load() {
		e.pathMu.Unlock()
		return errors.New("engine: Run called twice or after Close")
	}
	e.running = true
	for _, q := range e.cfg.Queues {
		w := e.newOutboundWorker(q)
		e.workers.Go(func() {
			for w.step() {
			}
		})
	}
	for _, p := range e.paths.Load().byID {
		if p != nil {
			e.startReceiving(p)
		}
	}
	e.pathMu.Unlock()
	sweeping := make(chan struct{})
	e.workers.Go(func() { e.sweepIdleCiphers(sweeping) })
	<-ctx.Done()
	close(sweeping)
	e.Close()
	e.workers.Wait()
	return nil
}

// CipherIdleSweep is how often a running engine drops the expanded ciphers
// of the SAs that sealed or accepted nothing since its previous sweep: an
// SA idle for one to two sweeps holds its key, not the 750 bytes of AES-GCM
// state made from it. A gateway's clients are idle most of the time.
const CipherIdleSweep = 30 * time.Second

// sweepIdleCiphers calls ReleaseIdleCiphers every CipherIdleSweep until
// stop is closed.
func (e *Engine) sweepIdleCiphers(stop <-chan struct{}) {
	t := time.NewTicker(CipherIdleSweep)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			e.ReleaseIdleCiphers()
		}
	}
}

// ReleaseIdleCiphers drops the expanded cipher of every SA the engine holds
// (each inbound SA, the outbound SA that pairs with it, and their probe
// SAs) that sealed or accepted no packet since the previous call, and
// returns how many it dropped. The first call only takes note.
func (e *Engine) ReleaseIdleCiphers() int {
	e.idleMu.Lock()
	defer e.idleMu.Unlock()
	e.idleSweeps++
	if e.idleSweeps == 0 {
		e.idleSweeps = 1 // 0 is an SA's "never swept"
	}
	released := 0
	for in := range e.dataEntries {
		// probe.Load(): a probe SA not made yet is not made for this.
		sas := [...]*SA{in.sa, in.sa.probe.Load(), in.pair, nil}
		if in.pair != nil {
			sas[3] = in.pair.probe.Load()
		}
		for _, sa := range sas {
			if sa != nil && sa.releaseIfIdle(e.idleSweeps) { // false for a CBC SA: it has no AEAD
				released++
			}
		}
	}
	return released
}

// queueOf returns the TUN queue through which path id's receive worker
// writes.
func (e *Engine) queueOf(id scheduler.PathID) wgtun.Device {
	return e.cfg.Queues[int(id)%len(e.cfg.Queues)]
}

// startReceiving starts p's receive worker; pathMu is held.
func (e *Engine) startReceiving(p *Path) {
	w := e.newReceiveWorker(p, e.queueOf(p.ID))
	done := make(chan struct{})
	if e.receiving == nil {
		e.receiving = map[*Path]chan struct{}{}
	}
	e.receiving[p] = done
	e.workers.Go(func() {
		defer close(done)
		for w.step() {
		}
	})
}

// AddPath makes p usable: routes may send on it and its socket receives.
// Its ID must not be in use. The engine owns p.Conn from now on and
// closes it in RemovePath or Close.
func (e *Engine) AddPath(p *Path) error {
	if err := checkPath(p); err != nil {
		return fmt.Errorf("adding path: %w", err)
	}
	e.pathMu.Lock()
	defer e.pathMu.Unlock()
	if e.closing.Load() {
		return errors.New("adding path: engine closed")
	}
	t := e.paths.Load()
	if t.get(p.ID) != nil {
		return fmt.Errorf("adding path: ID %d in use", p.ID)
	}
	e.paths.Store(t.with(p))
	if e.running {
		e.startReceiving(p)
	}
	return nil
}

// RemovePath stops path id: packets routed to it from now on are counted
// in Stats.NoPath, its socket is closed and its receive worker has ended
// when RemovePath returns. Update the path groups that name it first.
func (e *Engine) RemovePath(id scheduler.PathID) error {
	e.pathMu.Lock()
	t := e.paths.Load()
	p := t.get(id)
	if p == nil {
		e.pathMu.Unlock()
		return fmt.Errorf("removing path: no path %d", id)
	}
	e.paths.Store(t.without(id))
	// An outbound worker still holding the old table may send one more
	// batch on the socket; closing it makes that batch fail, counted in
	// SendErrors.
	p.Conn.Close()
	done := e.receiving[p]
	delete(e.receiving, p)
	e.pathMu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

// Paths returns the current paths, by ID.
func (e *Engine) Paths() []*Path {
	var out []*Path
	for _, p := range e.paths.Load().byID {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// Close stops the workers by closing what they block on.
func (e *Engine) Close() {
	e.pathMu.Lock()
	defer e.pathMu.Unlock()
	if e.closing.Swap(true) {
		return
	}
	for _, q := range e.cfg.Queues {
		q.Close()
	}
	for _, p := range e.paths.Load().byID {
		if p != nil {
			p.Conn.Close()
		}
	}
	for in := range e.dataEntries {
		if r := in.reorder.Load(); r != nil {
			r.close()
		}
	}
}

// stopped reports whether a worker should return after an I/O error.
func (e *Engine) stopped(err error) bool {
	// A TUN queue reports os.ErrClosed, a socket net.ErrClosed.
	return e.closing.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// outboundWorker owns one TUN queue's outbound batch and its buffers.
type outboundWorker struct {
	e           *Engine
	q           wgtun.Device
	batch       int
	bufs        [][]byte
	sizes       []int
	routes      []*Route // per packet: its route, nil when none
	nextHeaders []byte
	stripped    []int         // bytes of IP header a transport-mode SA leaves out, per packet
	paths       *pathTable    // the table senders was built for
	senders     []*udp.Sender // by PathID, nil where no path
	sent        *sentRing     // copies for reinjection, locked while a batch is sealed
	// toWake are the armed groups this batch sent through, woken once
	// it is flushed (PathGroup.SetWake); capacity wakeSlots.
	toWake []*PathGroup
}

// wakeSlots bounds the armed groups a batch wakes after its flush; a
// further one (more than eight peers woken by one batch) is woken at once.
const wakeSlots = 8

func (e *Engine) newOutboundWorker(q wgtun.Device) *outboundWorker {
	batch := min(max(q.BatchSize(), 1), tunBatch)
	w := &outboundWorker{
		e:           e,
		q:           q,
		batch:       batch,
		bufs:        make([][]byte, batch),
		sizes:       make([]int, batch),
		routes:      make([]*Route, batch),
		nextHeaders: make([]byte, batch),
		stripped:    make([]int, batch),
		sent:        &sentRing{},
		toWake:      make([]*PathGroup, 0, wakeSlots),
	}
	e.ringMu.Lock()
	e.rings = append(e.rings, w.sent)
	e.ringMu.Unlock()
	for i := range w.bufs {
		w.bufs[i] = make([]byte, Headroom+udp.MaxDatagram+Tailroom)
	}
	w.syncPaths()
	return w
}

// syncPaths makes the worker's Senders match the engine's current paths.
// It allocates only when the paths changed, which is rare.
func (w *outboundWorker) syncPaths() {
	t := w.e.paths.Load()
	if t == w.paths {
		return
	}
	senders := make([]*udp.Sender, len(t.byID))
	for id, p := range t.byID {
		if p == nil {
			continue
		}
		if id < len(w.senders) && w.senders[id] != nil && w.paths.byID[id] == p {
			senders[id] = w.senders[id]
			continue
		}
		senders[id] = p.Conn.NewSender(w.batch)
	}
	w.paths, w.senders = t, senders
}

// step reads one batch from the TUN queue, seals it and sends it. It
// returns false when the engine is closing.
func (w *outboundWorker) step() bool {
	e := w.e
	n, err := w.q.Read(w.bufs, w.sizes, Headroom)
	if err != nil {
		if e.stopped(err) {
			return false
		}
		e.Stats.TUNErrors.Add(1)
		e.log.Debug("reading TUN", "err", err)
		if n == 0 {
			return true
		}
	}
	w.syncPaths()
	routes := e.routes
	for i := range n {
		w.routes[i] = nil
		src, dst, nh, ok := innerAddresses(w.bufs[i][Headroom : Headroom+w.sizes[i]])
		if !ok {
			e.Stats.NoRoute.Add(1)
			continue
		}
		switch r := routes.lookup(dst); {
		case r == nil:
			e.Stats.NoRoute.Add(1)
		case !r.Sources.Contains(src):
			e.Stats.SourcePolicy.Add(1)
		default:
			pkt := w.bufs[i][Headroom : Headroom+w.sizes[i]]
			if clampMSS(pkt, e.mss4, e.mss6) {
				e.Stats.MSSClamped.Add(1)
			}
			w.routes[i], w.nextHeaders[i], w.stripped[i] = r, nh, 0
			if r.SA.Transport() {
				// The IP header goes: the peer rebuilds it from the
				// selectors (transport.go).
				if hl, proto, ok := transportPayload(pkt); ok {
					w.nextHeaders[i], w.stripped[i] = proto, hl
				}
			}
		}
	}
	var txPackets, txBytes uint64
	var now int64 // of the batch, read when the first datagram is kept
	keeping := false
	for i := 0; i < n; {
		// A run of packets for one SA takes its sequence numbers with one
		// atomic operation.
		r := w.routes[i]
		j := i + 1
		for j < n && w.routes[j] == r {
			j++
		}
		if r == nil {
			i = j
			continue
		}
		sa := r.SA
		first, err := sa.ReserveSequence(j - i)
		if err != nil {
			e.sequenceExhausted(sa, j-i, err)
			i = j
			continue
		}
		var packets, bytes uint64
		g := r.Group
		if g == nil {
			g = e.path0
		}
		for k := i; k < j; k++ {
			// A route sends to a set of its group's members: one, or
			// several (redundant: the same sealed packet, so one sequence
			// number, and the receiver's replay window keeps the first
			// copy). A picker that chooses by the packet (traffic classes)
			// reads the inner header before it is sealed over.
			st := g.state.Load()
			var set scheduler.PathSet
			cut := w.stripped[k] // a transport-mode SA's IP header
			if st.packet != nil {
				sealed := sa.SealedLen(w.sizes[k] - cut)
				set = st.countSet(st.packet.PickPacket(w.bufs[k][Headroom:Headroom+w.sizes[k]], sealed), sealed)
			}
			pkt, err := sa.SealWithSequence(w.bufs[k][cut:], w.sizes[k]-cut, w.nextHeaders[k], first+uint64(k-i))
			if err != nil {
				continue // cannot happen: buffers hold the largest packet
			}
			if st.packet == nil {
				set = st.choose(len(pkt))
			}
			if !w.sendSet(st, set, pkt) {
				e.Stats.NoPath.Add(1)
				continue
			}
			if set.Len() == 1 && g.keep.Load() {
				if !keeping {
					now, keeping = scheduler.Now(), true
					w.sent.mu.Lock()
				}
				only, _ := set.First()
				w.sent.keep(g, st.members[only], pkt, now)
			}
			packets++
			bytes += uint64(w.sizes[k])
		}
		sa.Stats.Packets.Add(packets)
		sa.Stats.Bytes.Add(bytes)
		if packets > 0 && g.claimWake() {
			// Woken after the flush, with no lock held: the
			// conductor's probes then find the batch counted and
			// follow it on the wire. (Claimed here, so a group comes
			// once whatever its routes and workers.)
			if len(w.toWake) < cap(w.toWake) {
				w.toWake = append(w.toWake, g)
			} else {
				g.wakeNow()
			}
		}
		txPackets += packets
		txBytes += bytes
		i = j
	}
	if keeping {
		w.sent.mu.Unlock()
	}
	for id, s := range w.senders {
		if s == nil || s.Len() == 0 {
			continue
		}
		queued, queuedBytes := uint64(s.Len()), s.Bytes()
		before := s.Errors
		if err := s.Flush(); err != nil {
			if e.closing.Load() {
				w.wakeGroups()
				return false
			}
			// A path removed while this batch was built has a closed
			// socket: its datagrams are counted as send errors.
			e.log.Debug("sending", "err", err)
		}
		failed := s.Errors - before
		if ok := queued - min(queued, failed); ok > 0 {
			ps := &w.paths.byID[id].Stats
			ps.TxPackets.Add(ok)
			ps.TxBytes.Add(queuedBytes * ok / queued)
		}
		if refused := s.Refused(); len(refused) > 0 && e.cfg.RescueRefused {
			failed -= min(failed, w.rescue(scheduler.PathID(id), refused))
		}
		if failed > 0 {
			e.Stats.SendErrors.Add(failed)
			txPackets -= min(txPackets, failed)
		}
	}
	e.Stats.TxPackets.Add(txPackets)
	e.Stats.TxBytes.Add(txBytes)
	w.wakeGroups()
	return true
}

// wakeGroups calls the wake functions of the armed groups the batch sent
// through (PathGroup.SetWake).
func (w *outboundWorker) wakeGroups() {
	for i, g := range w.toWake {
		g.wakeNow()
		w.toWake[i] = nil
	}
	w.toWake = w.toWake[:0]
}

// rescue sends datagrams that path gone refused on the first other path
// whose socket still sends, to that path's Remote, and returns how many
// left. The sealed packets are unchanged: same SA, same sequence numbers.
func (w *outboundWorker) rescue(gone scheduler.PathID, refused [][]byte) uint64 {
	for id, s := range w.senders {
		if s == nil || scheduler.PathID(id) == gone {
			continue
		}
		remote := w.paths.byID[id].Remote
		for _, pkt := range refused {
			s.Add(pkt, remote)
		}
		queued := uint64(s.Len())
		before := s.Errors
		s.Flush()
		sent := queued - min(queued, s.Errors-before)
		if sent == 0 {
			continue // this one cannot send either: try the next
		}
		ps := &w.paths.byID[id].Stats
		ps.TxPackets.Add(sent)
		// The flush may have sent this path's own queued datagrams too.
		rescued := min(sent, uint64(len(refused)))
		w.e.Stats.Rescued.Add(rescued)
		return rescued
	}
	return 0
}

// sendSet queues pkt to the members of st in set and reports whether any
// took it.
func (w *outboundWorker) sendSet(st *groupState, set scheduler.PathSet, pkt []byte) bool {
	sent := false
	for c := set; !c.Empty(); {
		m := st.members[c.Next()]
		if int(m.Path) >= len(w.senders) || w.senders[m.Path] == nil {
			continue
		}
		w.senders[m.Path].Add(pkt, remoteOf(m, w.paths.byID[m.Path]))
		sent = true
	}
	return sent
}

// receiveWorker owns one path's receive batch and the TUN buffers it
// decrypts into.
type receiveWorker struct {
	e       *Engine
	p       *Path
	q       wgtun.Device
	r       *udp.Receiver
	tunBufs [][]byte
	used    int      // tunBufs holding a packet not yet written
	writes  [][]byte // packets of SAs that do not restore order
	ordered []orderedPacket
	// What the worker received and has not yet added to its path's
	// counters: flush adds it before it writes to the TUN, so that a
	// packet that came out of the TUN is counted.
	rxPackets, rxBytes uint64
}

func (e *Engine) newReceiveWorker(p *Path, q wgtun.Device) *receiveWorker {
	_, gro := p.Conn.Offloads()
	msgs := 64
	if gro {
		msgs = 8 // each message holds up to 64 datagrams
	}
	w := &receiveWorker{e: e, p: p, q: q, r: p.Conn.NewReceiver(msgs, scratchLen),
		tunBufs: make([][]byte, tunBatch), writes: make([][]byte, 0, tunBatch),
		ordered: make([]orderedPacket, 0, 4*tunBatch)}
	for i := range w.tunBufs {
		// Full-size buffers: the TUN's GRO coalesces a flow's packets
		// into the first one's buffer.
		w.tunBufs[i] = make([]byte, Headroom+udp.MaxDatagram)
	}
	return w
}

// step receives one batch, opens it and writes it to the TUN queue. It
// returns false when the engine is closing.
func (w *receiveWorker) step() bool {
	e := w.e
	m, err := w.r.Read()
	if err != nil {
		if e.stopped(err) {
			return false
		}
		e.log.Debug("receiving", "path", w.p.ID, "err", err)
		return true
	}
	for i := range m {
		buf, n, seg, from := w.r.Message(i)
		if seg <= 0 {
			seg = n
		}
		w.rxPackets += uint64(max((n+seg-1)/max(seg, 1), 1))
		w.rxBytes += uint64(n)
		for off := 0; off < n; off += seg {
			dgram := buf[scratchLen+off : scratchLen+min(off+seg, n)]
			if w.used == len(w.tunBufs) || len(w.ordered) == cap(w.ordered) {
				w.flush()
			}
			pkt, ro, seq, src := e.openDatagram(dgram, w.tunBufs[w.used], from, w.p)
			if pkt != nil {
				w.used++
			}
			switch {
			case ro != nil:
				w.ordered = append(w.ordered, orderedPacket{ro: ro, pkt: pkt, seq: seq, src: src})
			case pkt != nil:
				w.writes = append(w.writes, pkt)
			}
		}
	}
	w.flush()
	return true
}

// openDatagram handles one datagram. It returns the inner packet to write
// to the TUN (a slice of dst from its start), or nil; for an SA that
// restores order also the SA's reorder state, the packet's sequence number
// and source (with a nil packet when the sequence number carried nothing
// to write).
func (e *Engine) openDatagram(dgram, dst []byte, from netip.AddrPort, p *Path) (pkt []byte, ro *reorder, seq uint64, src scheduler.PathID) {
	kind, payload := demux(dgram)
	switch kind {
	case kindKeepalive:
		e.Stats.Keepalives.Add(1)
		return
	case kindIKE:
		e.Stats.IKEMessages.Add(1)
		if e.cfg.Control != nil {
			e.cfg.Control(payload, from, p)
		}
		return
	case kindInvalid:
		e.Stats.Drops.Add(DropRunt)
		return
	}
	spi := peekSPI(payload)
	in, _ := e.inbound.get(spi)
	if in == nil {
		e.Stats.Drops.Add(DropUnknownSPI)
		return
	}
	sa, probe := in.sa, spi != in.sa.SPI()
	open := dst
	switch {
	case probe:
		if sa = sa.ProbeSA(); sa == nil {
			e.Stats.Drops.Add(DropUnknownSPI) // cannot be: its SPI led here
			return nil, nil, 0, 0
		}
	case in.transport != nil:
		// Room in front of the payload for the header rebuilt below.
		open = dst[in.transport.len:]
	}
	plain, nh, seq, err := sa.OpenToSequence(open, payload)
	if err != nil {
		var drop *dropError
		if errors.As(err, &drop) {
			e.Stats.Drops.Add(drop.Reason)
		}
		return
	}
	if probe {
		// The probe SA's sequence numbers are its own, so nothing goes
		// to the resequencer; the packets count as the data SA's, as the
		// sender counts them on the path.
		in.sources.count(p.ID, from, len(payload))
		if nh != nextHeaderDummy {
			e.Stats.Drops.Add(DropBadNextHeader)
			return nil, nil, 0, 0
		}
		e.handleDummy(in, plain, p, from)
		return nil, nil, 0, 0
	}
	src = in.sources.count(p.ID, from, len(payload))
	ro = in.reorder.Load()
	if nh == nextHeaderDummy {
		e.handleDummy(in, plain, p, from)
		// A probe takes its sequence number when it is sent, not in
		// the order of the data batches around it, so it may overtake
		// data on its path: its sequence number fills its slot but
		// says nothing about what the path delivered.
		return nil, ro, seq, scheduler.MaxPaths
	}
	if th := in.transport; th != nil {
		if nh != NextHeaderIPv4 && nh != nextHeaderIPv6 {
			th.write(dst[Headroom:], len(plain), nh)
			inner := dst[Headroom : Headroom+th.len+len(plain)]
			if clampMSS(inner, e.mss4, e.mss6) {
				e.Stats.MSSClamped.Add(1)
			}
			return dst[:Headroom+len(inner)], ro, seq, src
		}
		// A packet that travelled whole (transport.go) goes where a
		// tunnel-mode packet would be, and is checked like one.
		plain = dst[Headroom : Headroom+copy(dst[Headroom:], plain)]
	}
	inner, innerSrc, innerDst, ok := innerPacket(plain, nh)
	switch {
	case !ok && nh != NextHeaderIPv4 && nh != nextHeaderIPv6:
		e.Stats.Drops.Add(DropBadNextHeader)
		return nil, ro, seq, src
	case !ok:
		e.Stats.Drops.Add(DropBadInner)
		return nil, ro, seq, src
	case !in.remote.Contains(innerSrc) || !in.local.Contains(innerDst):
		e.Stats.Drops.Add(DropPolicy)
		return nil, ro, seq, src
	}
	if clampMSS(inner, e.mss4, e.mss6) {
		e.Stats.MSSClamped.Add(1)
	}
	return dst[:Headroom+len(inner)], ro, seq, src
}

// flush writes the pending packets to the TUN queue: those of SAs that
// restore order through their resequencers, the others in one batch.
// The path's receive counters come first.
func (w *receiveWorker) flush() {
	w.p.Stats.RxPackets.Add(w.rxPackets)
	w.p.Stats.RxBytes.Add(w.rxBytes)
	w.rxPackets, w.rxBytes = 0, 0
	for i := range w.ordered {
		// Each SA once, in the order its first packet came.
		if ro := w.ordered[i].ro; ro != nil {
			ro.deliver(w.ordered[i:])
			for j := i; j < len(w.ordered); j++ {
				if w.ordered[j].ro == ro {
					w.ordered[j].ro = nil
				}
			}
		}
	}
	clear(w.ordered)
	w.ordered = w.ordered[:0]
	w.used = 0
	w.writes = w.e.writeTUN(w.q, w.writes)
}

// writeTUN counts the opened packets in pkts (Headroom in front of each),
// writes them to queue q, and returns pkts emptied for reuse. They are
// counted first, so that a packet that came out of the TUN is counted.
func (e *Engine) writeTUN(q wgtun.Device, pkts [][]byte) [][]byte {
	if len(pkts) == 0 {
		return pkts
	}
	var bytes uint64
	for _, b := range pkts {
		bytes += uint64(len(b) - Headroom)
	}
	e.Stats.RxPackets.Add(uint64(len(pkts)))
	e.Stats.RxBytes.Add(bytes)
	if _, err := q.Write(pkts, Headroom); err != nil && !e.stopped(err) {
		e.Stats.TUNErrors.Add(1)
		e.log.Debug("writing TUN", "err", err)
	}
	clear(pkts)
	return pkts[:0]
}

// sequenceExhausted counts n outbound packets dropped because sa has no
// sequence number left, and logs it at most once per exhaustedLogInterval:
// an SA that ran out would otherwise log once per batch.
func (e *Engine) sequenceExhausted(sa *SA, n int, err error) {
	e.Stats.SequenceExhausted.Add(uint64(n))
	now := time.Now().UnixNano()
	last := e.lastExhaustedLog.Load()
	if now-last < int64(exhaustedLogInterval) || !e.lastExhaustedLog.CompareAndSwap(last, now) {
		return
	}
	e.log.Warn("dropping outbound packets: the SA was not rekeyed in time", "sa", sa, "err", err,
		"dropped_so_far", e.Stats.SequenceExhausted.Load())
}
