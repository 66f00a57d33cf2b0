package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/godbus/dbus/v5"
)

// ResolvedBus is the part of a D-Bus connection that resolvedDNS uses: a
// method call on systemd-resolved's Manager object.
type ResolvedBus interface {
	// Running reports whether org.freedesktop.resolve1 has an owner.
	Running() bool
	// CallManager calls org.freedesktop.resolve1.Manager.METHOD.
	CallManager(method string, args ...any) error
	Close() error
}

const (
	resolvedName    = "org.freedesktop.resolve1"
	resolvedPath    = "/org/freedesktop/resolve1"
	resolvedManager = "org.freedesktop.resolve1.Manager"
)

// systemBus is ResolvedBus on a godbus connection.
type systemBus struct{ conn *dbus.Conn }

// connectResolvedBus returns a ResolvedBus on the D-Bus at address, or on
// the system bus when address is "".
func connectResolvedBus(address string) (ResolvedBus, error) {
	var conn *dbus.Conn
	var err error
	if address == "" {
		conn, err = dbus.ConnectSystemBus()
	} else {
		conn, err = dbus.Connect(address)
	}
	if err != nil {
		return nil, err
	}
	return systemBus{conn}, nil
}

func (b systemBus) Running() bool {
	var has bool
	err := b.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&has)
	return err == nil && has
}

func (b systemBus) CallManager(method string, args ...any) error {
	return b.conn.Object(resolvedName, resolvedPath).Call(resolvedManager+"."+method, 0, args...).Err
}

func (b systemBus) Close() error { return b.conn.Close() }

func connectBus(opts DNSOptions) (ResolvedBus, error) {
	if opts.Bus != nil {
		return opts.Bus()
	}
	return connectResolvedBus("")
}

func resolvedRunning(opts DNSOptions) bool {
	bus, err := connectBus(opts)
	if err != nil {
		return false
	}
	defer bus.Close()
	return bus.Running()
}

// resolvedDNS sets the link's servers (SetLinkDNS) and routing-only
// domains (SetLinkDomains with "~domain"; "~." and SetLinkDefaultRoute for
// a full tunnel) in systemd-resolved, and reverts the link on Restore.
// resolved forgets a link that goes away, so a crash leaves nothing behind.
type resolvedDNS struct {
	opts DNSOptions
	bus  ResolvedBus
	log  *slog.Logger

	mu      sync.Mutex
	ifindex int32 // of the link while applied
}

func newResolvedDNS(opts DNSOptions) (*resolvedDNS, error) {
	bus, err := connectBus(opts)
	if err != nil {
		return nil, fmt.Errorf("DNS mode resolved: connecting to the system bus: %w", err)
	}
	if !bus.Running() {
		bus.Close()
		return nil, errors.New("DNS mode resolved: systemd-resolved is not running")
	}
	return &resolvedDNS{opts: opts, bus: bus, log: opts.Logger}, nil
}

func (d *resolvedDNS) Mode() DNSMode { return DNSResolved }

// resolvedAddress is one (iay) of SetLinkDNS: address family and bytes.
type resolvedAddress struct {
	Family  int32
	Address []byte
}

// resolvedDomain is one (sb) of SetLinkDomains.
type resolvedDomain struct {
	Domain      string
	RoutingOnly bool
}

// resolvedArgs returns SetLinkDNS's and SetLinkDomains's arrays for s.
func resolvedArgs(s DNSSettings) ([]resolvedAddress, []resolvedDomain) {
	addrs := make([]resolvedAddress, 0, len(s.Servers))
	for _, a := range s.Servers {
		family := int32(2) // AF_INET
		if a.Is6() && !a.Is4In6() {
			family = 10 // AF_INET6
		}
		addrs = append(addrs, resolvedAddress{Family: family, Address: a.Unmap().AsSlice()})
	}
	domains := make([]resolvedDomain, 0, len(s.Domains)+1)
	for _, dom := range s.Domains {
		domains = append(domains, resolvedDomain{Domain: dom, RoutingOnly: true})
	}
	if s.DefaultRoute {
		domains = append(domains, resolvedDomain{Domain: ".", RoutingOnly: true})
	}
	return addrs, domains
}

func (d *resolvedDNS) Apply(s DNSSettings) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ifi, err := net.InterfaceByName(d.opts.Link)
	if err != nil {
		return fmt.Errorf("DNS: %w", err)
	}
	idx := int32(ifi.Index)
	addrs, domains := resolvedArgs(s)
	d.ifindex = idx
	if err := d.bus.CallManager("SetLinkDNS", idx, addrs); err != nil {
		return fmt.Errorf("DNS: systemd-resolved SetLinkDNS: %w", err)
	}
	if err := d.bus.CallManager("SetLinkDomains", idx, domains); err != nil {
		return fmt.Errorf("DNS: systemd-resolved SetLinkDomains: %w", err)
	}
	// SetLinkDefaultRoute came with systemd 240; older ones route by "~."
	// alone.
	if err := d.bus.CallManager("SetLinkDefaultRoute", idx, s.DefaultRoute); err != nil {
		d.log.Debug("systemd-resolved SetLinkDefaultRoute", "err", err)
	}
	d.log.Info("DNS settings applied", "mode", DNSResolved, "link", d.opts.Link, "servers", s.Servers, "domains", s.Domains, "default_route", s.DefaultRoute)
	return nil
}

func (d *resolvedDNS) Restore() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.bus.Close()
	if d.ifindex == 0 {
		return nil
	}
	idx := d.ifindex
	d.ifindex = 0
	if err := d.bus.CallManager("RevertLink", idx); err != nil {
		if _, gone := net.InterfaceByName(d.opts.Link); gone != nil {
			return nil // the link went, and resolved forgot it
		}
		return fmt.Errorf("DNS: systemd-resolved RevertLink: %w", err)
	}
	return nil
}
