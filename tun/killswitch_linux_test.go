package tun

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A packet the output hook drops makes sendto fail with EPERM: the tests
// below see what the kill switch lets out by what the kernel refuses to
// send. Each runs in a private network namespace with one end of a veth
// pair ("phys", 192.0.2.1/24 and 2001:db8::1/64) standing for a physical
// interface; its other end, with no address, takes what is let out.

func withPhysicalLink(t *testing.T, fn func()) {
	testenv.WithNetns(t, func() {
		link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "phys"}, PeerName: "wire"}
		if err := netlink.LinkAdd(link); err != nil {
			t.Fatalf("adding a veth pair: %v", err)
		}
		if err := netlink.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wire"}}); err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"192.0.2.1/24", "2001:db8::1/64"} {
			addr, _ := netlink.ParseAddr(a)
			addr.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(link, addr); err != nil {
				t.Fatal(err)
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		fn()
	})
}

// sendUDP sends one datagram from the local port (0: any) to to.
func sendUDP(t *testing.T, fromPort uint16, to netip.AddrPort) error {
	t.Helper()
	local := &net.UDPAddr{Port: int(fromPort)}
	c, err := net.ListenUDP("udp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.WriteToUDPAddrPort([]byte("probe"), to)
	return err
}

// sendICMPv6 sends one ICMPv6 message of the type to the address.
func sendICMPv6(t *testing.T, typ byte, to netip.Addr) error {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	msg := make([]byte, 24) // type, code, checksum (the kernel fills it), body
	msg[0] = typ
	return unix.Sendto(fd, msg, 0, &unix.SockaddrInet6{Addr: to.As16()})
}

func requireSent(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v, want it let out", what, err)
	}
}

func requireDropped(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("%s: %v, want EPERM (dropped by the kill switch)", what, err)
	}
}

func TestKillSwitchLetsOutOnlyTheTunnel(t *testing.T) {
	withPhysicalLink(t, func() {
		iface, err := Create(Config{Name: "ks0", MTU: 1400})
		if err != nil {
			t.Fatal(err)
		}
		defer iface.Close()
		if err := iface.AddAddress(netip.MustParsePrefix("10.9.0.1/24")); err != nil {
			t.Fatal(err)
		}
		if err := iface.SetUp(); err != nil {
			t.Fatal(err)
		}
		gw := netip.MustParseAddr("192.0.2.9")
		before := sendUDP(t, 0, netip.AddrPortFrom(gw, 53))
		requireSent(t, "UDP to the physical link before the kill switch", before)

		ks, err := NewKillSwitch(KillSwitchConfig{Link: "ks0", Peers: []netip.AddrPort{
			netip.AddrPortFrom(gw, 500), netip.AddrPortFrom(gw, 4500)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			what string
			err  error
			out  bool
		}{
			{"IKE to the gateway", sendUDP(t, 0, netip.AddrPortFrom(gw, 500)), true},
			{"ESP in UDP to the gateway", sendUDP(t, 0, netip.AddrPortFrom(gw, 4500)), true},
			{"into the tunnel", sendUDP(t, 0, netip.MustParseAddrPort("10.9.0.2:53")), true},
			{"loopback", sendUDP(t, 0, netip.MustParseAddrPort("127.0.0.1:9")), true},
			{"DHCPv4 request", sendUDP(t, 68, netip.MustParseAddrPort("192.0.2.9:67")), true},
			{"DHCPv6 request", sendUDP(t, 546, netip.MustParseAddrPort("[2001:db8::9]:547")), true},
			{"neighbour solicitation", sendICMPv6(t, 135, netip.MustParseAddr("2001:db8::9")), true},
			{"router solicitation", sendICMPv6(t, 133, netip.MustParseAddr("2001:db8::9")), true},
			{"DNS to the gateway's address", sendUDP(t, 0, netip.AddrPortFrom(gw, 53)), false},
			{"another port of the gateway", sendUDP(t, 0, netip.AddrPortFrom(gw, 4501)), false},
			{"UDP to another host", sendUDP(t, 0, netip.MustParseAddrPort("192.0.2.7:4500")), false},
			{"IPv6 UDP on the link", sendUDP(t, 0, netip.MustParseAddrPort("[2001:db8::9]:4500")), false},
			{"ICMPv6 echo request", sendICMPv6(t, 128, netip.MustParseAddr("2001:db8::9")), false},
			{"DHCP's port from another source port", sendUDP(t, 0, netip.MustParseAddrPort("192.0.2.9:67")), false},
		} {
			if tc.out {
				requireSent(t, tc.what, tc.err)
			} else {
				requireDropped(t, tc.what, tc.err)
			}
		}
		packets, _, err := ks.Dropped()
		if err != nil || packets != 6 {
			t.Errorf("Dropped() = %d, %v; want the 6 refused packets", packets, err)
		}

		if err := ks.Close(); err != nil {
			t.Fatal(err)
		}
		requireSent(t, "UDP to the physical link after Close", sendUDP(t, 0, netip.AddrPortFrom(gw, 53)))
		if left, err := RemoveStaleKillSwitch("ks0"); left || err != nil {
			t.Errorf("RemoveStaleKillSwitch after Close = %v, %v; want nothing left", left, err)
		}
	})
}

// TestKillSwitchLeftByACrash: a run that dies keeps the host closed; the
// next one on the same link replaces the table, or removes it.
func TestKillSwitchLeftByACrash(t *testing.T) {
	withPhysicalLink(t, func() {
		cfg := KillSwitchConfig{Link: "ks1", Peers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.9:4500")}}
		if _, err := NewKillSwitch(cfg); err != nil { // never closed: the crash
			t.Fatal(err)
		}
		requireDropped(t, "UDP after the crash", sendUDP(t, 0, netip.MustParseAddrPort("192.0.2.9:53")))

		// The next run with the kill switch replaces the table: one
		// table, whose counter starts again.
		ks, err := NewKillSwitch(cfg)
		if err != nil {
			t.Fatalf("installing over a leftover table: %v", err)
		}
		if packets, _, err := ks.Dropped(); err != nil || packets != 0 {
			t.Errorf("Dropped() of the new table = %d, %v; want 0", packets, err)
		}
		requireDropped(t, "UDP under the new table", sendUDP(t, 0, netip.MustParseAddrPort("192.0.2.9:53")))

		// A run without the kill switch removes what the crash left.
		left, err := RemoveStaleKillSwitch("ks1")
		if err != nil || !left {
			t.Fatalf("RemoveStaleKillSwitch = %v, %v; want the leftover table removed", left, err)
		}
		requireSent(t, "UDP once the leftover is removed", sendUDP(t, 0, netip.MustParseAddrPort("192.0.2.9:53")))
		if left, err := RemoveStaleKillSwitch("ks1"); left || err != nil {
			t.Errorf("second RemoveStaleKillSwitch = %v, %v; want nothing left", left, err)
		}
		if _, err := RemoveStaleKillSwitch("other0"); err != nil {
			t.Errorf("RemoveStaleKillSwitch for a link that never had one: %v", err)
		}
	})
}

func TestKillSwitchRefusesBadConfig(t *testing.T) {
	for _, cfg := range []KillSwitchConfig{
		{Link: ""},
		{Link: "a/b"},
		{Link: "ks0", Peers: []netip.AddrPort{{}}},
		{Link: "ks0", Peers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.9:0")}},
	} {
		if ks, err := NewKillSwitch(cfg); err == nil {
			ks.Close()
			t.Errorf("NewKillSwitch(%+v) succeeded", cfg)
		}
	}
}
