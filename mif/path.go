package mif

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/mif/netmon"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/vishvananda/netns"
)

// A path is one way from this host to the gateway: a local interface, its
// address, and the gateway address. It owns a NAT-T socket (4500) and,
// when IKE starts on 500, an IKE socket, both bound to the interface
// (SO_BINDTODEVICE) and to its address, so that the path's packets leave
// through that interface whatever the routing table prefers, and keeps the
// NAT mapping on the way open with its own keepalives.
type path struct {
	gen      uint64           // distinguishes a path from an earlier one on the same interface
	id       scheduler.PathID // the data plane's
	name     string           // the interface's
	index    int
	kind     scheduler.Kind
	priority int
	local    netip.Addr
	gateway  netip.AddrPort // the gateway's NAT-T address
	// usableSince is when the interface became usable (or the path last
	// failed a check): a better path must stay usable for the hysteresis
	// time before traffic moves to it.
	usableSince time.Time

	tr ikeTransport // ike500 (maybe nil) and natT
	dp *dataplane.Path

	stop chan struct{}
	wg   sync.WaitGroup
}

// ikePath is the path as the IKE session knows it.
func (p *path) ikePath() ike.Path {
	return ike.Path{ID: p.name, Local: p.tr.natT.LocalAddr(), Gateway: p.gateway.Addr(), Transport: &p.tr, Interface: p.name}
}

// pathKind maps an interface kind to its MIF_PATH_ADD wire value (kindOf
// maps back); kinds the extension does not name go as unknown.
func pathKind(k scheduler.Kind) wire.PathKind {
	switch k {
	case scheduler.KindEthernet:
		return wire.PathKindEthernet
	case scheduler.KindWLAN:
		return wire.PathKindWLAN
	case scheduler.KindCellular:
		return wire.PathKindCellular
	}
	return wire.PathKindUnknown
}

// pathSetConfig is what a pathSet opens paths with.
type pathSetConfig struct {
	Gateway netip.Addr
	// IKEPort is the gateway's IKE port: when it is not 4500, each path
	// also opens port 500.
	IKEPort uint16
	// Keepalive is the NAT keepalive interval; 0 means keepaliveInterval.
	Keepalive time.Duration
	// Deliver receives the IKE messages of the port 500 sockets.
	Deliver func(msg []byte, from netip.AddrPort, natT bool)
	Logger  *slog.Logger
	// NoOffload opens the sockets without UDP GSO/GRO.
	NoOffload bool
	// EphemeralPorts binds the sockets to ports the kernel picks instead
	// of 4500 and 500: a Peer's answering side holds those on the same
	// addresses.
	EphemeralPorts bool
	// Closing, when set, is told that path id is about to leave the
	// engine, before its engine path is removed (so that no scheduler
	// picks it once the engine no longer has it). It runs with the set
	// locked: it must not call back into the set.
	Closing func(id scheduler.PathID)
}

// pathSet keeps one path per usable interface of the latest snapshot: it
// opens a path when an interface becomes usable and closes it when the
// interface goes away, goes down, loses its address or its route to the
// gateway. Paths are added to and removed from the engine as they come
// and go.
type pathSet struct {
	cfg    pathSetConfig
	log    *slog.Logger
	engine *dataplane.Engine

	// ns is the network namespace the paths' sockets live in: the one
	// current when the set was made (the monitor's).
	ns netns.NsHandle

	// mu is a leaf in mif's lock order: nothing else of mif is locked
	// while it is held.
	mu     sync.Mutex
	paths  map[string]*path // by interface name
	gen    uint64           // of the last path opened
	closed bool
}

// newPathSet returns an empty set whose paths live in the calling
// thread's network namespace.
func newPathSet(cfg pathSetConfig, engine *dataplane.Engine) (*pathSet, error) {
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = keepaliveInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening the current network namespace: %w", err)
	}
	return &pathSet{cfg: cfg, log: cfg.Logger, engine: engine, ns: ns, paths: map[string]*path{}}, nil
}

// inNamespace runs fn on a thread in the set's network namespace: sockets
// are created in the namespace of the thread that opens them, and
// SO_BINDTODEVICE resolves the interface name there, while the goroutine
// that follows the monitor may run on any thread (in a test, threads of
// another namespace).
func (s *pathSet) inNamespace(fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening the current network namespace: %w", err)
	}
	defer cur.Close()
	if cur.Equal(s.ns) {
		runtime.UnlockOSThread()
		return fn()
	}
	if err := netns.Set(s.ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering the paths' network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(cur); err != nil {
		// The thread stays locked, and ends with the goroutine rather
		// than serve others in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leaving the paths' network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// pathChange says what an update did.
type pathChange struct {
	Added, Removed []string
}

// update reconciles the paths with a snapshot. A path stays when its
// interface is still usable with the same index and source address;
// otherwise it is closed, and a new one opens if the interface is usable
// in its new shape. A path that fails to open is logged and retried with
// the next snapshot.
func (s *pathSet) update(ctx context.Context, snap netmon.Snapshot, now time.Time) (pathChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch pathChange
	if s.closed {
		return ch, errors.New("paths closed")
	}
	usable := map[string]netmon.Interface{}
	for _, i := range snap.Interfaces {
		if i.Usable && i.Source.IsValid() {
			usable[i.Name] = i
		}
	}
	for name, p := range s.paths {
		i, ok := usable[name]
		if ok && i.Index == p.index && i.Source == p.local {
			p.kind, p.priority = i.Kind, i.Priority
			// The interface may have gone and come back between two
			// snapshots read here: the hysteresis restarts with it.
			if i.UsableSince.After(p.usableSince) {
				p.usableSince = i.UsableSince
			}
			continue
		}
		s.closeLocked(p)
		ch.Removed = append(ch.Removed, name)
	}
	var errs []error
	for _, name := range sortedKeys(usable) {
		if _, ok := s.paths[name]; ok {
			continue
		}
		var p *path
		err := s.inNamespace(func() (err error) {
			p, err = s.openLocked(ctx, usable[name], now)
			return err
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.paths[name] = p
		ch.Added = append(ch.Added, name)
	}
	return ch, errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// freeIDLocked returns the smallest path ID no path uses: the engine
// indexes its path table by ID, so IDs are reused rather than grown.
func (s *pathSet) freeIDLocked() scheduler.PathID {
	used := map[scheduler.PathID]bool{}
	for _, p := range s.paths {
		used[p.id] = true
	}
	var id scheduler.PathID
	for used[id] {
		id++
	}
	return id
}

// openLocked opens the sockets of a path on interface i, adds the path to
// the engine and starts its keepalives (and its port 500 reader).
func (s *pathSet) openLocked(ctx context.Context, i netmon.Interface, now time.Time) (_ *path, err error) {
	s.gen++
	p := &path{
		gen: s.gen, id: s.freeIDLocked(), name: i.Name, index: i.Index, kind: i.Kind, priority: i.Priority,
		local: i.Source, gateway: netip.AddrPortFrom(s.cfg.Gateway, 4500), usableSince: now,
		stop: make(chan struct{}),
	}
	if !i.UsableSince.IsZero() {
		p.usableSince = i.UsableSince
	}
	defer func() {
		if err != nil {
			if p.tr.natT != nil && p.dp == nil {
				p.tr.natT.Close()
			}
			if p.tr.ike500 != nil {
				p.tr.ike500.Close()
			}
		}
	}()
	natTPort, ikePort := uint16(4500), uint16(500)
	if s.cfg.EphemeralPorts {
		natTPort, ikePort = 0, 0
	}
	if p.tr.natT, err = udp.Listen(ctx, udp.Config{
		Local: netip.AddrPortFrom(i.Source, natTPort), Device: i.Name, NoOffload: s.cfg.NoOffload}); err != nil {
		return nil, fmt.Errorf("path on %s: %w", i.Name, err)
	}
	if s.cfg.IKEPort != 4500 {
		pc, err := bindToDevice(i.Name).ListenPacket(ctx, "udp", netip.AddrPortFrom(i.Source, ikePort).String())
		if err != nil {
			return nil, fmt.Errorf("path on %s: opening IKE port 500: %w", i.Name, err)
		}
		p.tr.ike500 = pc.(*net.UDPConn)
	}
	remote, err := p.tr.natT.NewEndpoint(p.gateway)
	if err != nil {
		return nil, fmt.Errorf("path on %s: %w", i.Name, err)
	}
	dp := &dataplane.Path{ID: p.id, Conn: p.tr.natT, Remote: remote}
	if err := s.engine.AddPath(dp); err != nil {
		return nil, fmt.Errorf("path on %s: %w", i.Name, err)
	}
	p.dp = dp // the engine owns the socket from here on
	if p.tr.ike500 != nil && s.cfg.Deliver != nil {
		p.wg.Go(func() { p.tr.readPort500(s.cfg.Deliver) })
	}
	p.wg.Go(func() { p.sendKeepalives(s.cfg.Keepalive, s.log) })
	s.log.Info("path up", "interface", p.name, "kind", p.kind, "priority", p.priority,
		"local", p.tr.natT.LocalAddr(), "gateway", p.gateway, "id", p.id)
	return p, nil
}

// closeLocked removes a path from the engine (which closes its NAT-T
// socket), closes its IKE socket and waits for its goroutines.
func (s *pathSet) closeLocked(p *path) {
	delete(s.paths, p.name)
	close(p.stop)
	if s.cfg.Closing != nil {
		s.cfg.Closing(p.id)
	}
	if err := s.engine.RemovePath(p.id); err != nil {
		s.log.Debug("removing path", "interface", p.name, "err", err)
	}
	if p.tr.ike500 != nil {
		p.tr.ike500.Close()
	}
	p.wg.Wait()
	s.log.Info("path down", "interface", p.name, "local", p.local, "id", p.id)
}

// sendKeepalives sends a NAT keepalive (RFC 3948 §2.3) on the path every
// interval until the path closes, so that a NAT between the interface and
// the gateway keeps this path's mapping even while traffic uses another.
func (p *path) sendKeepalives(interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	keepalive := []byte{0xff}
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.tr.natT.WriteTo(keepalive, p.gateway); err != nil {
				log.Debug("sending NAT keepalive", "interface", p.name, "err", err)
			}
		}
	}
}

// close closes every path.
func (s *pathSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, p := range s.paths {
		s.closeLocked(p)
	}
	s.ns.Close()
}

// pathInfo is a copy of a path's state for decisions and status.
type pathInfo struct {
	Gen         uint64
	ID          scheduler.PathID
	Name        string
	Kind        scheduler.Kind
	Priority    int
	Local       netip.AddrPort
	Gateway     netip.AddrPort
	UsableSince time.Time
	GSO, GRO    bool
	ike         ike.Path
}

func (p *path) info() pathInfo {
	gso, gro := p.tr.natT.Offloads()
	return pathInfo{Gen: p.gen, ID: p.id, Name: p.name, Kind: p.kind, Priority: p.priority, Local: p.tr.natT.LocalAddr(),
		Gateway: p.gateway, UsableSince: p.usableSince, GSO: gso, GRO: gro, ike: p.ikePath()}
}

// list returns the paths, best priority first (then by name).
func (s *pathSet) list() []pathInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]pathInfo, 0, len(s.paths))
	for _, p := range s.paths {
		out = append(out, p.info())
	}
	slices.SortFunc(out, func(a, b pathInfo) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// get returns the path on interface name.
func (s *pathSet) get(name string) (pathInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.paths[name]
	if !ok {
		return pathInfo{}, false
	}
	return p.info(), true
}

// restartHysteresis makes path name wait the hysteresis time again (it
// failed a check).
func (s *pathSet) restartHysteresis(name string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.paths[name]; ok {
		p.usableSince = now
	}
}

// endpoint returns to as a remote endpoint of path name's NAT-T socket.
func (s *pathSet) endpoint(name string, to netip.AddrPort) (*udp.Endpoint, error) {
	s.mu.Lock()
	p, ok := s.paths[name]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no path on %s", name)
	}
	return p.tr.natT.NewEndpoint(to)
}

// send sends an IKE message on path name's sockets.
func (s *pathSet) send(name string, msg []byte, to netip.AddrPort, natT bool) error {
	s.mu.Lock()
	p, ok := s.paths[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no path on %s", name)
	}
	return p.tr.Send(msg, to, natT)
}
