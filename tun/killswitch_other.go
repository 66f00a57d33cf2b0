//go:build !linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
)

// KillSwitchConfig says what a kill switch lets out of the host.
type KillSwitchConfig struct {
	Link  string
	Peers []netip.AddrPort
}

// KillSwitch needs Linux's nftables.
type KillSwitch struct{}

// NewKillSwitch fails on systems other than Linux.
func NewKillSwitch(cfg KillSwitchConfig) (*KillSwitch, error) {
	return nil, fmt.Errorf("kill switch: %w", errors.ErrUnsupported)
}

// Dropped fails on systems other than Linux.
func (k *KillSwitch) Dropped() (packets, bytes uint64, err error) { return 0, 0, errors.ErrUnsupported }

// Close does nothing on systems other than Linux.
func (k *KillSwitch) Close() error { return nil }

// RemoveStaleKillSwitch finds nothing on systems other than Linux.
func RemoveStaleKillSwitch(string) (bool, error) { return false, nil }
