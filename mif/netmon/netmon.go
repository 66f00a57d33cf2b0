// Package netmon watches the host's network interfaces for the client: it
// owns the netlink subscriptions (links, addresses, routes) of one network
// namespace, a consistent model of the interfaces built from one initial
// dump and the events after it, their classification (ethernet, WLAN,
// cellular, ...), the include/exclude filters and priorities, and the
// decision whether an interface can carry a path to the gateway. It
// publishes snapshots of that model to one consumer, coalescing bursts of
// events but passing on the loss of an interface at once.
package netmon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultSettle is how long a burst of events is collected before a
// snapshot is published.
const DefaultSettle = 50 * time.Millisecond

// Config configures a Monitor.
type Config struct {
	Filter
	// Gateway, when valid, makes each snapshot say which interfaces can
	// reach it (Interface.Usable and Source).
	Gateway netip.Addr
	// Settle is how long events are collected before a snapshot goes out;
	// 0 means DefaultSettle. The loss of a link or of a usable address is
	// published without waiting.
	Settle time.Duration
	Logger *slog.Logger

	// sysfs is where the interfaces' sysfs directories are; empty means
	// /sys/class/net.
	sysfs string
}

// Monitor watches the interfaces of the network namespace that was
// current when New was called.
type Monitor struct {
	cfg     Config
	log     *slog.Logger
	be      backend
	updates chan Snapshot
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	mu   sync.Mutex // a leaf: guards last only
	last Snapshot

	// Owned by the loop.
	st  *state
	seq uint64
	sub *subscription
}

// backend is the netlink side of a monitor, replaced in timer tests.
type backend interface {
	// subscribe starts the link, address and route subscriptions; their
	// channels close after the subscription's done closes, or on a
	// receive error (which is also sent on errs).
	subscribe() (*subscription, error)
	dump() ([]netlink.Link, []netlink.Addr, error)
	routes() ([]netlink.Route, error)
	routeGet(dst netip.Addr, oif int) ([]netlink.Route, error)
	close()
}

type subscription struct {
	done   chan struct{}
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	errs   chan error
}

func newSubscription() *subscription {
	return &subscription{
		done:   make(chan struct{}),
		links:  make(chan netlink.LinkUpdate, 64),
		addrs:  make(chan netlink.AddrUpdate, 256),
		routes: make(chan netlink.RouteUpdate, 256),
		errs:   make(chan error, 1),
	}
}

// stop ends the subscription and waits for its channels to close.
func (s *subscription) stop() {
	close(s.done)
	for range s.links {
	}
	for range s.addrs {
	}
	for range s.routes {
	}
}

// New dumps the interfaces of the current network namespace, publishes
// the first snapshot and keeps watching until Close. The namespace is the
// calling thread's: a caller in another namespace than the process locks
// its goroutine to the thread first.
func New(cfg Config) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	be, err := newNetlinkBackend()
	if err != nil {
		return nil, err
	}
	if cfg.sysfs == "" {
		cfg.sysfs = "/sys/class/net"
	}
	m, err := start(cfg, be)
	if err != nil {
		be.close()
		return nil, err
	}
	return m, nil
}

// start subscribes, dumps and starts the loop.
func start(cfg Config, be backend) (*Monitor, error) {
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	m := &Monitor{cfg: cfg, log: cfg.Logger, be: be, updates: make(chan Snapshot, 1), done: make(chan struct{}), st: newState(cfg.sysfs)}
	if m.log == nil {
		m.log = slog.Default()
	}
	if err := m.resync(); err != nil {
		return nil, err
	}
	m.publish()
	m.wg.Go(m.loop)
	return m, nil
}

// Updates delivers snapshots as the interfaces change, the first one at
// once. It holds at most one: a consumer that falls behind gets the
// newest. It is closed by Close.
func (m *Monitor) Updates() <-chan Snapshot { return m.updates }

// Snapshot returns the latest published snapshot.
func (m *Monitor) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Close stops watching, releases the netlink sockets and closes Updates.
func (m *Monitor) Close() error {
	m.once.Do(func() {
		close(m.done)
		m.wg.Wait()
		m.be.close()
	})
	return nil
}

// resync (re)starts the subscriptions and replaces the model with a dump.
// Subscribing before dumping means no change falls between the two: events
// queued meanwhile are replayed on top of the dump, which converges since
// each event states the whole of one link or address.
func (m *Monitor) resync() error {
	if m.sub != nil {
		m.sub.stop()
		m.sub = nil
	}
	sub, err := m.be.subscribe()
	if err != nil {
		return fmt.Errorf("netmon: subscribing to netlink: %w", err)
	}
	m.sub = sub
	links, addrs, err := m.be.dump()
	if err != nil {
		sub.stop()
		m.sub = nil
		return fmt.Errorf("netmon: listing interfaces: %w", err)
	}
	m.st.reset(links, addrs)
	return nil
}

// loop applies events and publishes snapshots until Close.
func (m *Monitor) loop() {
	defer func() {
		if m.sub != nil {
			m.sub.stop()
		}
		close(m.updates)
	}()
	var (
		settle  *time.Timer
		settleC <-chan time.Time
		retry   <-chan time.Time
	)
	pending := false
	for {
		loss, broken := false, false
		var linksC chan netlink.LinkUpdate
		var addrsC chan netlink.AddrUpdate
		var routesC chan netlink.RouteUpdate
		var errsC chan error
		if m.sub != nil {
			linksC, addrsC, routesC, errsC = m.sub.links, m.sub.addrs, m.sub.routes, m.sub.errs
		}
		select {
		case <-m.done:
			if settle != nil {
				settle.Stop()
			}
			return
		case u, ok := <-linksC:
			broken = !ok
			if ok {
				loss = m.st.applyLink(u)
				pending = true
			}
		case u, ok := <-addrsC:
			broken = !ok
			if ok {
				loss = m.st.applyAddr(u)
				pending = true
			}
		case u, ok := <-routesC:
			broken = !ok
			if ok {
				loss = u.Type == unix.RTM_DELROUTE && isDefault(u.Route)
				pending = true
			}
		case err := <-errsC:
			m.log.Warn("netlink subscription failed, listing the interfaces again", "err", err)
			broken = true
		case <-settleC:
			settleC = nil
			m.publish()
			pending = false
			continue
		case <-retry:
			retry = nil
			broken = true
		}
		if broken {
			if err := m.resync(); err != nil {
				m.log.Warn("watching interfaces", "err", err)
				retry = time.After(time.Second)
				continue
			}
			loss, pending = true, true
		}
		// Take whatever else is queued already, so that a burst that
		// arrived together is published as one snapshot.
		loss = m.drain() || loss
		if loss {
			if settle != nil {
				settle.Stop()
			}
			settleC = nil
			m.publish()
			pending = false
			continue
		}
		if pending && settleC == nil {
			if settle == nil {
				settle = time.NewTimer(m.cfg.Settle)
			} else {
				settle.Reset(m.cfg.Settle)
			}
			settleC = settle.C
		}
	}
}

// drain applies the events queued now, without blocking, and reports
// whether one was a loss.
func (m *Monitor) drain() (loss bool) {
	if m.sub == nil {
		return false
	}
	for range 1024 {
		select {
		case u, ok := <-m.sub.links:
			if !ok {
				return loss
			}
			loss = m.st.applyLink(u) || loss
		case u, ok := <-m.sub.addrs:
			if !ok {
				return loss
			}
			loss = m.st.applyAddr(u) || loss
		case u, ok := <-m.sub.routes:
			if !ok {
				return loss
			}
			loss = (u.Type == unix.RTM_DELROUTE && isDefault(u.Route)) || loss
		default:
			return loss
		}
	}
	return loss
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// publish builds a snapshot and hands it to the consumer if it differs
// from the last one. Routes are listed afresh each time rather than
// followed through events: the kernel flushes IPv4 routes of a link that
// goes down or loses an address without announcing it.
func (m *Monitor) publish() {
	routes, err := m.be.routes()
	if err != nil {
		m.log.Warn("listing routes", "err", err)
	}
	snap := m.st.build(&m.cfg.Filter, routes)
	if m.cfg.Gateway.IsValid() {
		for i := range snap.Interfaces {
			m.checkUsable(&snap.Interfaces[i])
		}
	}
	now := time.Now()
	m.mu.Lock()
	for i := range snap.Interfaces {
		in := &snap.Interfaces[i]
		if !in.Usable {
			continue
		}
		in.UsableSince = now
		if prev, ok := m.last.Lookup(in.Name); ok && prev.Usable && prev.Index == in.Index {
			in.UsableSince = prev.UsableSince
		}
	}
	if m.seq > 0 && snap.sameAs(m.last) {
		m.mu.Unlock()
		return
	}
	m.seq++
	snap.Seq = m.seq
	m.last = snap
	m.mu.Unlock()
	// Latest wins: replace a snapshot the consumer has not taken. The
	// loop is the only sender, so the second send cannot block.
	select {
	case m.updates <- snap:
	default:
		select {
		case <-m.updates:
		default:
		}
		m.updates <- snap
	}
}

// checkUsable decides Interface.Usable and Source for the gateway: the
// kernel is asked for the route to the gateway out of this interface. With
// an output interface given and no route through it, Linux answers with a
// route that assumes the gateway is on the link; such an answer (no
// next-hop gateway) counts only when the gateway is inside one of the
// interface's prefixes.
func (m *Monitor) checkUsable(i *Interface) {
	gw := m.cfg.Gateway.Unmap()
	is6 := gw.Is6()
	if !i.Up || !i.HasAddr(is6) {
		return
	}
	routes, err := m.be.routeGet(gw, i.Index)
	if err != nil || len(routes) == 0 {
		return
	}
	r := routes[0]
	if r.Type != 0 && r.Type != unix.RTN_UNICAST {
		return
	}
	onLink := false
	for _, p := range i.Addrs {
		if p.Masked().Contains(gw) {
			onLink = true
		}
	}
	if len(r.Gw) == 0 && !onLink {
		return
	}
	var src netip.Addr
	if a, ok := netip.AddrFromSlice(r.Src); ok {
		src = a.Unmap()
	}
	own := false
	for _, p := range i.Addrs {
		if p.Addr() == src {
			own = true
		}
	}
	if !own {
		// The kernel chose an address of another interface, or one not
		// usable (deprecated): take the interface's first.
		src = netip.Addr{}
		for _, p := range i.Addrs {
			if p.Addr().Is6() == is6 {
				src = p.Addr()
				break
			}
		}
	}
	i.Usable, i.Source = true, src
}

// netlinkBackend is the real backend: netlink sockets in the namespace
// current at creation.
type netlinkBackend struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

func newNetlinkBackend() (*netlinkBackend, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("netmon: opening the current network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netmon: opening netlink: %w", err)
	}
	return &netlinkBackend{ns: ns, h: h}, nil
}

// receiveBuffer is the netlink sockets' receive buffer: large, so that a
// burst (an interface with many addresses going away) does not overflow
// it; an overflow still only costs a resync.
const receiveBuffer = 1 << 20

func (b *netlinkBackend) subscribe() (*subscription, error) {
	s := newSubscription()
	onErr := func(err error) {
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return
		}
		select {
		case <-s.done:
			return // the socket was closed on purpose
		default:
		}
		select {
		case s.errs <- err:
		default:
		}
	}
	ns := b.ns
	// Each subscription's receive goroutine closes its channel when it
	// ends; channels of subscriptions that did not start are closed here
	// so that stop can wait on all three.
	var started [3]bool
	fail := func(err error) (*subscription, error) {
		close(s.done)
		if !started[0] {
			close(s.links)
		}
		if !started[1] {
			close(s.addrs)
		}
		if !started[2] {
			close(s.routes)
		}
		for range s.links {
		}
		for range s.addrs {
		}
		for range s.routes {
		}
		return nil, err
	}
	if err := netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: receiveBuffer}); err != nil {
		return fail(fmt.Errorf("links: %w", err))
	}
	started[0] = true
	if err := netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: receiveBuffer}); err != nil {
		return fail(fmt.Errorf("addresses: %w", err))
	}
	started[1] = true
	if err := netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: receiveBuffer}); err != nil {
		return fail(fmt.Errorf("routes: %w", err))
	}
	return s, nil
}

func (b *netlinkBackend) dump() ([]netlink.Link, []netlink.Addr, error) {
	for range 5 {
		links, err := b.h.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		addrs, err := b.h.AddrList(nil, netlink.FAMILY_ALL)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		return links, addrs, nil
	}
	return nil, nil, netlink.ErrDumpInterrupted
}

func (b *netlinkBackend) routes() ([]netlink.Route, error) {
	var err error
	for range 5 {
		var rs []netlink.Route
		rs, err = b.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return rs, err
		}
	}
	return nil, err
}

func (b *netlinkBackend) routeGet(dst netip.Addr, oif int) ([]netlink.Route, error) {
	return b.h.RouteGetWithOptions(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{OifIndex: oif})
}

func (b *netlinkBackend) close() {
	b.h.Close()
	b.ns.Close()
}
