package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

const cloneDevicePath = "/dev/net/tun"

// queueFlags are the flags every queue attaches with. The kernel requires
// the same IFF_MULTI_QUEUE and IFF_VNET_HDR on every queue of an interface.
const queueFlags = unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE

// Interface is one kernel TUN interface with one or more queues.
//
// Each queue is a golang.zx2c4.com/wireguard/tun NativeTun with virtio-net
// header offloads on: Read splits TSO/USO superpackets from the kernel into
// MTU-sized packets, Write coalesces TCP and UDP packets of one flow into
// superpackets (GRO). The kernel spreads flows over the queues by flow hash,
// so one worker goroutine per queue keeps each flow in order.
//
// Addresses, routes and link state are changed through a netlink socket
// opened by Create, so every method acts on the network namespace the
// interface was created in, whichever goroutine or thread calls it.
type Interface struct {
	name   string
	index  int
	queues []wgtun.Device
	nl     *netlink.Handle

	mu     sync.Mutex
	mtu    int
	addrs  []netip.Prefix
	routes []netip.Prefix
	closed bool
}

// Create makes a TUN interface in the calling thread's network namespace and
// opens cfg.Queues queues on it. The interface is down until SetUp.
//
// Every queue is opened on /dev/net/tun with IFF_TUN, IFF_NO_PI, IFF_VNET_HDR
// and IFF_MULTI_QUEUE and handed to wgtun.CreateUnmonitoredTUNFromFD, which
// enables TCP (TSO4/TSO6, checksum) and, where the kernel has them (Linux
// 6.2+), UDP (USO4/USO6) offloads on it. Create fails if a queue comes up
// without offloads. An existing interface of the same name is refused, so
// Create never attaches to someone else's device.
func Create(cfg Config) (*Interface, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("creating tun %s: %w", cfg.Name, err)
	}
	iface, err := create(cfg)
	if err != nil {
		name := cfg.Name
		if name == "" {
			name = "(unnamed)"
		}
		return nil, fmt.Errorf("creating tun %s: %w", name, err)
	}
	return iface, nil
}

func create(cfg Config) (_ *Interface, err error) {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	iface := &Interface{nl: nl, mtu: cfg.MTU}
	defer func() {
		if err != nil {
			iface.closeQueues()
			nl.Close()
		}
	}()

	if cfg.Name != "" {
		_, err := nl.LinkByName(cfg.Name)
		if err == nil {
			return nil, fmt.Errorf("interface %s already exists", cfg.Name)
		}
		if !isLinkNotFound(err) {
			return nil, fmt.Errorf("looking up interface %s: %w", cfg.Name, err)
		}
	}

	name := cfg.Name
	for q := range cfg.Queues {
		fd, attachedName, err := openQueue(name)
		if err != nil {
			if errors.Is(err, unix.E2BIG) {
				err = fmt.Errorf("%w (the kernel allows at most %d queues)", err, maxQueues)
			}
			return nil, fmt.Errorf("opening queue %d of %d: %w", q+1, cfg.Queues, err)
		}
		name = attachedName
		// From here the descriptor belongs to an *os.File inside the wgtun
		// device, even when CreateUnmonitoredTUNFromFD fails: closing fd
		// ourselves could close an unrelated descriptor reused after the
		// file's finalizer runs.
		dev, _, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
		if err != nil {
			return nil, fmt.Errorf("setting up queue %d of %d: %w", q+1, cfg.Queues, err)
		}
		iface.queues = append(iface.queues, dev)
		if dev.BatchSize() <= 1 {
			return nil, fmt.Errorf("queue %d of %d came up without virtio-net header offloads", q+1, cfg.Queues)
		}
	}
	iface.name = name

	link, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up interface %s: %w", name, err)
	}
	iface.index = link.Attrs().Index
	if err := nl.LinkSetMTU(link, cfg.MTU); err != nil {
		return nil, fmt.Errorf("setting MTU %d: %w", cfg.MTU, err)
	}
	if cfg.TxQueueLen > 0 {
		// The kernel resizes the queues' rings, already attached, to it.
		if err := nl.LinkSetTxQLen(link, cfg.TxQueueLen); err != nil {
			return nil, fmt.Errorf("setting transmit queue length %d: %w", cfg.TxQueueLen, err)
		}
	}
	return iface, nil
}

// openQueue attaches one queue to the interface name (or to a new interface
// named by the kernel when name is empty) and returns the non-blocking
// descriptor and the interface name.
func openQueue(name string) (int, string, error) {
	fd, err := unix.Open(cloneDevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("opening %s: %w", cloneDevicePath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	ifr.SetUint16(queueFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("TUNSETIFF: %w", err)
	}
	// Non-blocking before the descriptor becomes an *os.File, so that the
	// runtime poller owns it and Close unblocks a pending Read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("setting non-blocking mode: %w", err)
	}
	return fd, ifr.Name(), nil
}

func isLinkNotFound(err error) bool {
	var notFound netlink.LinkNotFoundError
	return errors.As(err, &notFound) || errors.Is(err, unix.ENODEV)
}

// Name returns the interface name.
func (i *Interface) Name() string { return i.name }

// Index returns the interface index.
func (i *Interface) Index() int { return i.index }

// Queues returns one device per queue, each to be owned by one goroutine.
//
// Read and Write on a queue need offset >= VirtioNetHdrLen. Read needs
// len(bufs) >= BatchSize() (one kernel superpacket may split into that many
// packets; fewer buffers give wgtun.ErrTooManySegments) and each buffer at
// least offset+MTU bytes. Write overwrites bufs[i][offset-VirtioNetHdrLen:offset]
// and, to coalesce, may append later packets of a flow to the first packet's
// buffer up to its capacity; the count it returns is in bytes, not packets.
//
// The queues are unmonitored: their Events channel carries nothing and is
// closed by Close. Link state is for a netlink watcher of Index().
//
// Closing one queue leaves the others working; the kernel moves its flows to
// the remaining queues. The interface disappears when its last queue closes.
func (i *Interface) Queues() []wgtun.Device { return slices.Clone(i.queues) }

// MTU returns the MTU last set by Create or SetMTU.
func (i *Interface) MTU() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.mtu
}

// SetMTU changes the interface MTU. An interface with an IPv6 address needs
// at least minIPv6MTU.
func (i *Interface) SetMTU(mtu int) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := validateMTU(mtu); err != nil {
		return fmt.Errorf("setting MTU of %s: %w", i.name, err)
	}
	if mtu < minIPv6MTU && slices.ContainsFunc(i.addrs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		return fmt.Errorf("setting MTU of %s: %d is below %d, the IPv6 minimum, and the interface has an IPv6 address", i.name, mtu, minIPv6MTU)
	}
	if err := i.usable(); err != nil {
		return fmt.Errorf("setting MTU of %s: %w", i.name, err)
	}
	if err := i.nl.LinkSetMTU(i.link(), mtu); err != nil {
		return fmt.Errorf("setting MTU of %s to %d: %w", i.name, mtu, err)
	}
	i.mtu = mtu
	return nil
}

// AddAddress adds an IPv4 or IPv6 address with its prefix length, e.g.
// 192.0.2.1/24 or 2001:db8::1/64. IPv6 addresses skip duplicate address
// detection (the tunnel's address is assigned by the peer) and need an MTU
// of at least minIPv6MTU. On an up interface AddAddress returns once the
// address is usable (the kernel completes IPv6 addresses asynchronously).
// Close removes the addresses added here.
func (i *Interface) AddAddress(p netip.Prefix) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !p.IsValid() || p.Addr().Zone() != "" {
		return fmt.Errorf("adding address %s to %s: not a valid address prefix", p, i.name)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	if p.Addr().Is6() && i.mtu < minIPv6MTU {
		return fmt.Errorf("adding address %s to %s: MTU %d is below %d, the IPv6 minimum", p, i.name, i.mtu, minIPv6MTU)
	}
	if err := i.usable(); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", p, i.name, err)
	}
	if err := i.nl.AddrAdd(i.link(), netlinkAddr(p)); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", p, i.name, err)
	}
	i.addrs = append(i.addrs, p)
	if err := i.waitAddressesUsable(); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", p, i.name, err)
	}
	return nil
}

// addressSetupTimeout bounds the wait for the kernel to finish setting up an
// IPv6 address.
const addressSetupTimeout = 2 * time.Second

// waitAddressesUsable waits, if the interface is up, until the kernel routes
// every IPv6 address added here locally. The kernel finishes IPv6 address
// setup in a work queue after the address is added or the link comes up,
// even without duplicate address detection; until then packets to the
// address are dropped. IPv4 addresses are usable at once.
func (i *Interface) waitAddressesUsable() error {
	link, err := i.nl.LinkByIndex(i.index)
	if err != nil {
		return fmt.Errorf("looking up link state: %w", err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return nil
	}
	deadline := time.Now().Add(addressSetupTimeout)
	for _, p := range i.addrs {
		if !p.Addr().Is6() {
			continue
		}
		for !i.routedLocally(p.Addr()) {
			if time.Now().After(deadline) {
				return fmt.Errorf("IPv6 address %s not usable %v after it was added", p.Addr(), addressSetupTimeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

func (i *Interface) routedLocally(a netip.Addr) bool {
	routes, err := i.nl.RouteGet(a.AsSlice())
	if err != nil {
		return false
	}
	return slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Type == unix.RTN_LOCAL })
}

// AddRoute routes the IPv4 or IPv6 prefix p (host bits are ignored) through
// the interface in the main table. The interface must be up (SetUp): the
// kernel refuses routes through a down link. Close removes the routes added
// here.
func (i *Interface) AddRoute(p netip.Prefix) error {
	return i.AddRouteFrom(p, netip.Addr{})
}

// AddRouteFrom is AddRoute with src, an address of this host of p's
// family, as the preferred source of the host's packets on the route (the
// zero Addr: the kernel chooses). Two hosts that protect traffic between
// stable addresses (an address on lo) need it: the tunnel has no address
// of its own to lend the packets.
func (i *Interface) AddRouteFrom(p netip.Prefix, src netip.Addr) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !p.IsValid() || p.Addr().Zone() != "" {
		return fmt.Errorf("adding route %s via %s: not a valid prefix", p, i.name)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
	if err := i.usable(); err != nil {
		return fmt.Errorf("adding route %s via %s: %w", p, i.name, err)
	}
	r := i.netlinkRoute(p)
	if src = src.Unmap(); src.IsValid() {
		if src.Is4() != p.Addr().Is4() {
			return fmt.Errorf("adding route %s via %s: source %s is of the other family", p, i.name, src)
		}
		r.Src = src.AsSlice()
	}
	if err := i.nl.RouteAdd(r); err != nil {
		if errors.Is(err, unix.ENETDOWN) {
			return fmt.Errorf("adding route %s via %s: %w (routes need the interface up: call SetUp first)", p, i.name, err)
		}
		return fmt.Errorf("adding route %s via %s: %w", p, i.name, err)
	}
	i.routes = append(i.routes, p)
	return nil
}

// SetUp brings the interface up and returns once its IPv6 addresses are
// usable.
func (i *Interface) SetUp() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.usable(); err != nil {
		return fmt.Errorf("bringing %s up: %w", i.name, err)
	}
	if err := i.nl.LinkSetUp(i.link()); err != nil {
		return fmt.Errorf("bringing %s up: %w", i.name, err)
	}
	if err := i.waitAddressesUsable(); err != nil {
		return fmt.Errorf("bringing %s up: %w", i.name, err)
	}
	return nil
}

// Close removes the routes and addresses added through the Interface, closes
// every queue (a Read blocked on a queue returns an error matching
// os.ErrClosed) and with the last queue the kernel deletes the interface.
// Calling Close again returns nil.
func (i *Interface) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	var errs []error
	for _, p := range slices.Backward(i.routes) {
		if err := i.nl.RouteDel(i.netlinkRoute(p)); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("removing route %s: %w", p, err))
		}
	}
	for _, p := range slices.Backward(i.addrs) {
		if err := i.nl.AddrDel(i.link(), netlinkAddr(p)); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("removing address %s: %w", p, err))
		}
	}
	i.routes, i.addrs = nil, nil
	errs = append(errs, i.closeQueues())
	i.nl.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing tun %s: %w", i.name, err)
	}
	return nil
}

func (i *Interface) closeQueues() error {
	var errs []error
	for q, dev := range i.queues {
		if err := dev.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("closing queue %d: %w", q+1, err))
		}
	}
	return errors.Join(errs...)
}

func (i *Interface) usable() error {
	if i.closed {
		return os.ErrClosed
	}
	return nil
}

// link names the interface by index for netlink calls.
func (i *Interface) link() netlink.Link {
	return &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: i.index, Name: i.name}}
}

func (i *Interface) netlinkRoute(p netip.Prefix) *netlink.Route {
	r := &netlink.Route{LinkIndex: i.index, Dst: ipNet(p)}
	if p.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

func netlinkAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// isGone reports whether a netlink delete failed only because the object or
// the interface no longer exists.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL)
}
