package bench

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFlowsCarryCongestionControl: both ends of a lab flow use the
// scenario's congestion control, set on their sockets, in a namespace
// whose default could not be set to it. It picks an algorithm the kernel
// has that the host does not allow as a namespace's default when there is
// one (cubic on a host tuned for bbr, bbr on a fresh Debian), so that it
// fails the way the namespace sysctl did; otherwise the first available
// one that is not the host's default.
func TestFlowsCarryCongestionControl(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	read := func(name string) []string {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			t.Skipf("cannot read the host's congestion controls: %v", err)
		}
		return strings.Fields(string(b))
	}
	available, allowed, def := read("tcp_available_congestion_control"), read("tcp_allowed_congestion_control"), read("tcp_congestion_control")
	cc := ""
	for _, a := range available {
		if !slices.Contains(allowed, a) {
			cc = a
			break
		}
	}
	for _, a := range available {
		if cc == "" && !slices.Contains(def, a) {
			cc = a
		}
	}
	if cc == "" {
		t.Skipf("the kernel has no congestion control but its default (%v)", available)
	}
	lab := newTestLab(t, ctx)
	ns, err := lab.AddNamespace(ctx, "cc")
	if err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddrPort("127.0.0.1:5201")
	ln, err := listenTCPIn(ns, server, false, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := dialerIn(ns, netip.Addr{}, server, false, cc)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var a net.Conn
	select {
	case a = <-accepted:
		defer a.Close()
	case <-ctx.Done():
		t.Fatal("no connection accepted")
	}
	for _, x := range []struct {
		end  string
		conn net.Conn
	}{{"client", c}, {"server", a}} {
		raw, err := x.conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got string
		var gerr error
		raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		if got != cc {
			t.Errorf("%s's socket runs %q, want %q (available %v, allowed as a namespace default %v)", x.end, got, cc, available, allowed)
		}
	}
}

// TestCheckCongestionControl: an algorithm the kernel does not have is
// refused before anything is built, naming the module to load.
func TestCheckCongestionControl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root may give a socket an algorithm the host does not allow")
	}
	if err := CheckCongestionControl("reno"); err != nil {
		t.Fatalf("reno, which every kernel has: %v", err)
	}
	err := CheckCongestionControl("nosuchcc")
	if err == nil || !strings.Contains(err.Error(), "modprobe tcp_nosuchcc") {
		t.Fatalf("an unknown algorithm: %v, want a refusal naming the module", err)
	}
}
