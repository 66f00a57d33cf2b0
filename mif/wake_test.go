package mif

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/mif/netmon"
)

func TestSleepDetector(t *testing.T) {
	var boot, mono time.Duration
	d := newSleepDetector(func() (time.Duration, time.Duration) { return boot, mono })
	for _, tc := range []struct {
		name       string
		boot, mono time.Duration // how far each clock moves
		want       time.Duration
	}{
		{"awake", time.Second, time.Second, 0},
		{"a late reading", 1500 * time.Millisecond, 300 * time.Millisecond, 0},
		{"asleep for an hour", time.Hour + time.Second, time.Second, time.Hour},
		{"awake again", time.Second, time.Second, 0},
		{"asleep just long enough", minSleep + time.Second, time.Second, minSleep},
	} {
		boot, mono = boot+tc.boot, mono+tc.mono
		if got := d.slept(); got != tc.want {
			t.Errorf("%s: slept() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The real clocks of a machine that does not sleep during the test.
	real := newSleepDetector(readClocks)
	time.Sleep(10 * time.Millisecond)
	if got := real.slept(); got != 0 {
		t.Errorf("the real clocks say the machine slept %v", got)
	}
}

func TestRouteChanged(t *testing.T) {
	via := func(gw string, metric int) *netmon.DefaultRoute {
		return &netmon.DefaultRoute{Gateway: netip.MustParseAddr(gw), Metric: metric}
	}
	snap := func(ifaces ...netmon.Interface) netmon.Snapshot { return netmon.Snapshot{Interfaces: ifaces} }
	wlan := netmon.Interface{Name: "wlan0", Default4: via("192.168.1.1", 600)}
	for _, tc := range []struct {
		name          string
		before, after netmon.Snapshot
		want          bool
	}{
		{"unchanged", snap(wlan), snap(wlan), false},
		{"another router", snap(wlan), snap(netmon.Interface{Name: "wlan0", Default4: via("192.168.1.254", 600)}), true},
		{"another metric", snap(wlan), snap(netmon.Interface{Name: "wlan0", Default4: via("192.168.1.1", 100)}), true},
		{"route gone", snap(wlan), snap(netmon.Interface{Name: "wlan0"}), true},
		{"an IPv6 route appears", snap(wlan), snap(netmon.Interface{Name: "wlan0", Default4: wlan.Default4, Default6: via("fe80::1", 1024)}), true},
		{"another interface changed", snap(wlan, netmon.Interface{Name: "eth0"}), snap(wlan, netmon.Interface{Name: "eth0", Default4: via("10.0.0.1", 100)}), false},
		{"the interface is gone", snap(wlan), snap(), false},
	} {
		if got := routeChanged(tc.before, tc.after, "wlan0"); got != tc.want {
			t.Errorf("%s: routeChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}
