package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mifsec/mifsec/internal/testenv"
	"golang.org/x/sys/unix"
)

// wireTap counts the frames a namespace receives on its interfaces (not
// loopback), sorted into what a kill switch lets out of the client (IKE and
// ESP to the gateway, ARP, IPv6 neighbour discovery) and everything else:
// the leaks. AF_PACKET sees a frame before the receiving host's tc or
// netfilter ingress, so frames a cut link then drops are counted too.
type wireTap struct {
	fd      int
	gateway netip.Addr
	mu      sync.Mutex
	ike     int      // UDP to the gateway's ports 500 and 4500
	leaks   []string // one line per leaked frame
	done    chan struct{}
}

func newWireTap(t *testing.T, ns string, gateway netip.Addr) *wireTap {
	w := &wireTap{gateway: gateway, done: make(chan struct{})}
	testenv.InNamedNetns(t, ns, func() {
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			t.Fatalf("AF_PACKET socket: %v", err)
		}
		w.fd = fd
	})
	unix.SetsockoptTimeval(w.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	go w.run()
	t.Cleanup(func() { w.stop() })
	return w
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (w *wireTap) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

func (w *wireTap) run() {
	defer unix.Close(w.fd)
	buf := make([]byte, 65536)
	for {
		select {
		case <-w.done:
			return
		default:
		}
		n, from, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			continue // the receive timeout: look at done again
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING || ll.Hatype == unix.ARPHRD_LOOPBACK {
			continue
		}
		w.classify(buf[:n])
	}
}

// classify sorts one Ethernet frame.
func (w *wireTap) classify(f []byte) {
	if len(f) < 14 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	etherType, ip := binary.BigEndian.Uint16(f[12:]), f[14:]
	switch etherType {
	case unix.ETH_P_ARP:
		return
	case unix.ETH_P_IP:
		if len(ip) >= 24 && ip[9] == unix.IPPROTO_UDP {
			dst := netip.AddrFrom4([4]byte(ip[16:20]))
			l4 := ip[int(ip[0]&0x0f)*4:]
			if port := binary.BigEndian.Uint16(l4[2:]); dst == w.gateway && (port == 500 || port == 4500) {
				w.ike++
				return
			}
		}
		if len(ip) >= 20 {
			w.leaks = append(w.leaks, fmt.Sprintf("IPv4 protocol %d to %v", ip[9], netip.AddrFrom4([4]byte(ip[16:20]))))
		}
	case unix.ETH_P_IPV6:
		next, l4 := ip[6], 40
		if next == 0 && len(ip) >= 48 { // hop-by-hop options, as MLD reports carry
			next, l4 = ip[40], 40+(int(ip[41])+1)*8
		}
		if len(ip) > l4 && next == unix.IPPROTO_ICMPV6 && (ip[l4] >= 133 && ip[l4] <= 136 || ip[l4] == 143) {
			return // neighbour discovery and MLD reports
		}
		if len(ip) >= 40 {
			w.leaks = append(w.leaks, fmt.Sprintf("IPv6 next header %d to %v", ip[6], netip.AddrFrom16([16]byte(ip[24:40]))))
		}
	default:
		w.leaks = append(w.leaks, fmt.Sprintf("ethertype %#04x", etherType))
	}
}

// counts returns what the tap has seen so far.
func (w *wireTap) counts() (ike int, leaks []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ike, append([]string(nil), w.leaks...)
}

// reset forgets what the tap has seen.
func (w *wireTap) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ike, w.leaks = 0, nil
}

// cutIngress drops every frame arriving on ns's interface dev (after the
// tap has seen it): the gateway's link is down as far as the client can
// tell, while the client's own interface stays up. It returns the undo.
func cutIngress(t *testing.T, ns, dev string) (restore func()) {
	table := &nftables.Table{Family: nftables.TableFamilyNetdev, Name: "cut"}
	drop := nftables.ChainPolicyDrop
	prio := nftables.ChainPriorityFilter
	testenv.InNamedNetns(t, ns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		c.AddTable(table)
		c.AddChain(&nftables.Chain{Name: "in", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookIngress, Priority: prio, Device: dev, Policy: &drop})
		if err := c.Flush(); err != nil {
			t.Fatalf("cutting %s's link: %v", ns, err)
		}
	})
	return func() {
		testenv.InNamedNetns(t, ns, func() {
			c, _ := nftables.New()
			c.DelTable(table)
			if err := c.Flush(); err != nil {
				t.Fatalf("restoring %s's link: %v", ns, err)
			}
		})
	}
}

// tryToLeak sends what applications of the client host send while the
// tunnel is down: pings and UDP and TCP to the local network, to the
// gateway's address and to the internet, over IPv4 and IPv6.
func tryToLeak(ns string) {
	run := func(args ...string) {
		exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).Run()
	}
	var wg sync.WaitGroup
	for _, args := range [][]string{
		{"ping", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.2"},
		{"ping", "-c", "3", "-i", "0.2", "-W", "1", "198.18.0.1"},
		{"ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", "2001:db8:2::2"},
		{"ping", "-c", "3", "-i", "0.2", "-W", "1", "10.1.0.1"}, // into the tunnel's routes
	} {
		wg.Go(func() { run(args...) })
	}
	for _, to := range []string{"192.0.2.2:53", "198.18.0.1:443", "[2001:db8:2::2]:53"} {
		host, port, _ := net.SplitHostPort(to)
		wg.Go(func() { run("bash", "-c", fmt.Sprintf("echo leak > /dev/udp/%s/%s", host, port)) })
		wg.Go(func() { run("timeout", "2", "bash", "-c", fmt.Sprintf("echo leak > /dev/tcp/%s/%s", host, port)) })
	}
	wg.Wait()
}

// linkOf returns the interface of ns that holds the address.
func linkOf(t *testing.T, ns, addr string) string {
	t.Helper()
	fields := strings.Fields(testenv.Exec(t, ns, "ip", "-o", "addr", "show", "to", addr))
	if len(fields) < 2 {
		t.Fatalf("no interface of %s holds %s", ns, addr)
	}
	return fields[1]
}

// TestConnectKillSwitch (issue 18, acceptance 2): with --kill-switch, while
// the gateway is unreachable no packet of the client host's leaves its
// physical interface except IKE/ESP to the gateway, counted on the wire;
// after a clean exit normal traffic flows again.
func TestConnectKillSwitch(t *testing.T) {
	testenv.RequireCommand(t, "bash")
	testenv.RequireCommand(t, "timeout")
	const psk = "a kill switch test secret"
	gwDev := ""
	client, gw, g := mifsecGatewayTopologyAfter(t, func(client, gw string) {
		// A default route and IPv6 on the link: without the kill switch,
		// traffic to anywhere would leave through it.
		testenv.Exec(t, client, "ip", "route", "add", "default", "via", "192.0.2.2")
		testenv.Exec(t, gw, "ip", "addr", "add", "198.18.0.1/32", "dev", "lo")
		gwDev = linkOf(t, gw, "192.0.2.2")
		testenv.Exec(t, gw, "ip", "addr", "add", "2001:db8:2::2/64", "dev", gwDev, "nodad")
		testenv.Exec(t, client, "ip", "addr", "add", "2001:db8:2::1/64", "dev", linkOf(t, client, "192.0.2.1"), "nodad")
	}, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk))
	tap := newWireTap(t, gw, netip.MustParseAddr("192.0.2.2"))

	// The tap and the leak attempts work: without the kill switch they
	// reach the wire.
	tryToLeak(client)
	time.Sleep(200 * time.Millisecond)
	if _, leaks := tap.counts(); len(leaks) < 5 {
		t.Fatalf("without a kill switch only %d frames reached the wire (%v): the test cannot see leaks", len(leaks), leaks)
	}

	c := startConnect(t, client, "mks0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false",
		"--kill-switch", "--dpd", "1s", "--retransmit", "300ms", "--retransmit-tries", "2")
	c.waitEstablished(t, 10*time.Second)
	if err := ping(client, "10.1.0.1", 3); err != nil {
		t.Fatalf("the tunnel under the kill switch: %v\n%s\ngateway:\n%s", err, c.log.String(), g.log.String())
	}

	// The gateway's link goes down: DPD fails, the client reconnects,
	// again and again; applications keep trying meanwhile.
	tap.reset()
	restore := cutIngress(t, gw, gwDev)
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		tryToLeak(client)
	}
	time.Sleep(200 * time.Millisecond)
	ike, leaks := tap.counts()
	if len(leaks) > 0 {
		t.Errorf("%d frames left the client outside the tunnel while the gateway was unreachable:\n%s", len(leaks), strings.Join(leaks, "\n"))
	}
	if ike == 0 {
		t.Errorf("no IKE/ESP to the gateway was seen on the wire during the outage: the tap is blind\n%s", c.log.String())
	}
	st, err := c.status(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.KillSwitch == nil || st.KillSwitch.DroppedPackets == 0 {
		t.Fatalf("status shows kill switch %+v, want the dropped packets counted", st.KillSwitch)
	}
	t.Logf("during the outage: %d IKE/ESP frames to the gateway, 0 leaks; kill switch dropped %d packets", ike, st.KillSwitch.DroppedPackets)

	// A clean exit removes it: traffic to the link flows again.
	restore()
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("mifsec connect still runs 10 s after Ctrl-C:\n%s", c.log.String())
	}
	if err := ping(client, "192.0.2.2", 2); err != nil {
		t.Errorf("after a clean exit: %v", err)
	}
	if out := testenv.Exec(t, client, "ip", "-6", "route", "show"); !strings.Contains(out, "2001:db8:2::/64") {
		t.Errorf("IPv6 routes gone after the exit: %s", out)
	}
	if err := exec.Command("ip", "netns", "exec", client, "ping", "-6", "-c", "2", "-W", "2", "2001:db8:2::2").Run(); err != nil {
		t.Errorf("IPv6 after a clean exit: %v", err)
	}
}
