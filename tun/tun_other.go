//go:build !linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Interface is one kernel TUN interface. Creating one needs Linux; on other
// systems Create fails and the in-memory device is what remains.
type Interface struct{}

// Create fails on systems other than Linux.
func Create(cfg Config) (*Interface, error) {
	return nil, fmt.Errorf("creating tun %s: %w", cfg.Name, errors.ErrUnsupported)
}

// Name returns the interface name.
func (i *Interface) Name() string { return "" }

// Index returns the interface index.
func (i *Interface) Index() int { return 0 }

// Queues returns one device per queue.
func (i *Interface) Queues() []wgtun.Device { return nil }

// MTU returns the interface MTU.
func (i *Interface) MTU() int { return 0 }

// SetMTU changes the interface MTU.
func (i *Interface) SetMTU(int) error { return errors.ErrUnsupported }

// AddAddress adds an address to the interface.
func (i *Interface) AddAddress(netip.Prefix) error { return errors.ErrUnsupported }

// AddRoute routes a prefix through the interface.
func (i *Interface) AddRoute(netip.Prefix) error { return errors.ErrUnsupported }

// AddRouteFrom is not supported outside Linux.
func (i *Interface) AddRouteFrom(netip.Prefix, netip.Addr) error { return errors.ErrUnsupported }

// SetUp brings the interface up.
func (i *Interface) SetUp() error { return errors.ErrUnsupported }

// Close releases the interface.
func (i *Interface) Close() error { return nil }
