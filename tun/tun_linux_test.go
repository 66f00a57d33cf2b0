package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// The tests below run in a private network namespace each (testenv.WithNetns),
// so the addresses are only seen there. Test bodies stay on the goroutine that
// entered the namespace, because sockets must be created on that thread.

type family struct {
	name   string
	local  netip.Prefix // address of the TUN interface
	routed netip.Prefix // routed into the TUN interface
	remote netip.Addr   // an address in routed, "behind" the tunnel
}

var families = []family{
	{"ipv4", netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParseAddr("198.51.100.7")},
	{"ipv6", netip.MustParsePrefix("2001:db8:1::1/64"), netip.MustParsePrefix("2001:db8:2::/64"), netip.MustParseAddr("2001:db8:2::7")},
}

const testName = "mifsec0"

// newUpInterface creates an interface with the addresses and routes of all
// families, up, closed when the test ends.
func newUpInterface(t *testing.T, queues int) *Interface {
	t.Helper()
	iface, err := Create(Config{Name: testName, Queues: queues})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iface.Close() })
	if err := iface.SetUp(); err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if err := iface.AddAddress(f.local); err != nil {
			t.Fatal(err)
		}
		if err := iface.AddRoute(f.routed); err != nil {
			t.Fatal(err)
		}
	}
	return iface
}

// received is one packet read from a queue.
type received struct {
	queue    int
	batch    int // packets returned by the Read that returned this one
	pkt      []byte
	headroom bool // the bytes before the offset were left alone
}

// queueReaders reads every given queue in its own goroutine until the
// interface is closed.
type queueReaders struct {
	packets chan received
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	exits   []error
}

func startReaders(t *testing.T, iface *Interface, queues map[int]wgtun.Device) *queueReaders {
	t.Helper()
	r := &queueReaders{packets: make(chan received, 4096), done: make(chan struct{})}
	for q, dev := range queues {
		r.wg.Go(func() { r.read(q, dev) })
	}
	t.Cleanup(func() {
		close(r.done)
		iface.Close()
		r.wg.Wait()
		for _, err := range r.exits {
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("queue reader ended with %v, want os.ErrClosed", err)
			}
		}
	})
	return r
}

func allQueues(iface *Interface) map[int]wgtun.Device {
	m := make(map[int]wgtun.Device)
	for q, dev := range iface.Queues() {
		m[q] = dev
	}
	return m
}

func (r *queueReaders) read(q int, dev wgtun.Device) {
	bufs, sizes := newBatch(dev.BatchSize(), testOffset+2048)
	sentinel := bytes.Repeat([]byte{0xaa}, testOffset)
	for {
		for _, b := range bufs {
			copy(b, sentinel)
		}
		n, err := dev.Read(bufs, sizes, testOffset)
		if err != nil && !errors.Is(err, wgtun.ErrTooManySegments) {
			r.mu.Lock()
			r.exits = append(r.exits, err)
			r.mu.Unlock()
			return
		}
		for i := range n {
			rec := received{
				queue:    q,
				batch:    n,
				pkt:      slices.Clone(bufs[i][testOffset : testOffset+sizes[i]]),
				headroom: bytes.Equal(bufs[i][:testOffset], sentinel),
			}
			select {
			case r.packets <- rec:
			case <-r.done:
				return
			}
		}
	}
}

// next returns the next packet for which match is true, skipping others
// (the kernel's own IPv6 traffic, for one).
func (r *queueReaders) next(t *testing.T, match func(pkt []byte) bool) received {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case rec := <-r.packets:
			if match(rec.pkt) {
				return rec
			}
		case <-timeout:
			t.Fatal("no matching packet read from any queue within 5 s")
		}
	}
}

type segment struct {
	src, dst netip.AddrPort
	proto    byte
	payload  []byte
	tcpSeq   uint32
	tcpFlags byte
}

// parse decodes the UDP or TCP segment in an IPv4 or IPv6 packet.
func parse(pkt []byte) (segment, bool) {
	var s segment
	var rest []byte
	switch {
	case len(pkt) >= ipv4HeaderLen && pkt[0]>>4 == 4:
		hl := int(pkt[0]&0x0f) * 4
		if hl < ipv4HeaderLen || len(pkt) < hl {
			return s, false
		}
		s.proto = pkt[9]
		s.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(pkt[12:16])), 0)
		s.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(pkt[16:20])), 0)
		rest = pkt[hl:]
	case len(pkt) >= ipv6HeaderLen && pkt[0]>>4 == 6:
		s.proto = pkt[6]
		s.src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(pkt[8:24])), 0)
		s.dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(pkt[24:40])), 0)
		rest = pkt[ipv6HeaderLen:]
	default:
		return s, false
	}
	switch {
	case s.proto == unix.IPPROTO_UDP && len(rest) >= udpHeaderLen:
		s.payload = rest[udpHeaderLen:]
	case s.proto == unix.IPPROTO_TCP && len(rest) >= 20 && int(rest[12]>>4)*4 <= len(rest):
		s.tcpSeq = binary.BigEndian.Uint32(rest[4:])
		s.tcpFlags = rest[13]
		s.payload = rest[int(rest[12]>>4)*4:]
	default:
		return s, false
	}
	s.src = netip.AddrPortFrom(s.src.Addr(), binary.BigEndian.Uint16(rest[0:]))
	s.dst = netip.AddrPortFrom(s.dst.Addr(), binary.BigEndian.Uint16(rest[2:]))
	return s, true
}

func udpTo(dst netip.AddrPort) func([]byte) bool {
	return func(pkt []byte) bool {
		s, ok := parse(pkt)
		return ok && s.proto == unix.IPPROTO_UDP && s.dst == dst
	}
}

// withHeadroom returns pkt at offset testOffset in a buffer with room to
// coalesce further packets behind it.
func withHeadroom(pkt []byte) []byte {
	buf := make([]byte, testOffset+len(pkt), testOffset+maxMTU)
	copy(buf[testOffset:], pkt)
	return buf
}

// attachedFlags returns the flags the kernel reports for a queue (TUNGETIFF).
func attachedFlags(t *testing.T, dev wgtun.Device) uint16 {
	t.Helper()
	var flags uint16
	var ioctlErr error
	control(t, dev, func(fd int) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ioctlErr = err
			return
		}
		ioctlErr = unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr)
		flags = ifr.Uint16()
	})
	if ioctlErr != nil {
		t.Fatalf("TUNGETIFF: %v", ioctlErr)
	}
	return flags
}

// requireUDPOffloads skips t unless the kernel accepts UDP segmentation
// offloads on TUN queues (Linux 6.2+). Setting the same offloads again is
// harmless.
func requireUDPOffloads(t *testing.T, dev wgtun.Device) {
	t.Helper()
	var err error
	control(t, dev, func(fd int) {
		err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6|unix.TUN_F_USO4|unix.TUN_F_USO6)
	})
	if err != nil {
		t.Skipf("needs a kernel with TUN UDP segmentation offload (Linux 6.2+): TUNSETOFFLOAD: %v", err)
	}
}

// control runs fn with the queue's descriptor without switching it to
// blocking mode (as File().Fd() would).
func control(t *testing.T, dev wgtun.Device, fn func(fd int)) {
	t.Helper()
	rc, err := dev.File().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { fn(int(fd)) }); err != nil {
		t.Fatal(err)
	}
}

func tuntapLink(t *testing.T, name string) *netlink.Tuntap {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("looking up %s: %v", name, err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %s, want tuntap", name, link.Type())
	}
	return tt
}

func waitLinkGone(t *testing.T, index int) {
	t.Helper()
	// Other tests' namespace churn holds the RTNL lock on a loaded host.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := netlink.LinkByIndex(index)
		if err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("interface %d still exists 2 s after the last queue closed", index)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCreateOpensOffloadQueues(t *testing.T) {
	testenv.WithNetns(t, func() {
		iface, err := Create(Config{Name: testName, MTU: 1420, Queues: 4, TxQueueLen: 3000})
		if err != nil {
			t.Fatal(err)
		}
		defer iface.Close()
		if iface.Name() != testName || iface.MTU() != 1420 {
			t.Errorf("Name %q, MTU %d", iface.Name(), iface.MTU())
		}
		queues := iface.Queues()
		if len(queues) != 4 {
			t.Fatalf("%d queues, want 4", len(queues))
		}
		const want = unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE
		for q, dev := range queues {
			if got := attachedFlags(t, dev); got&want != want {
				t.Errorf("queue %d: flags %#x lack %#x", q, got, want)
			}
			// A queue batches only when wgtun found IFF_VNET_HDR and the
			// kernel accepted TUNSETOFFLOAD on it.
			if dev.BatchSize() != conn.IdealBatchSize {
				t.Errorf("queue %d: BatchSize %d, want %d (offloads on)", q, dev.BatchSize(), conn.IdealBatchSize)
			}
			if name, err := dev.Name(); err != nil || name != testName {
				t.Errorf("queue %d: Name = %q, %v", q, name, err)
			}
		}
		link := tuntapLink(t, testName)
		wantFlags := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_MULTI_QUEUE
		if link.Mode != netlink.TUNTAP_MODE_TUN || link.Flags&wantFlags != wantFlags || link.Queues != 4 ||
			link.MTU != 1420 || link.Index != iface.Index() || link.Flags&netlink.TUNTAP_NO_PI == 0 {
			t.Errorf("kernel reports mode %d, flags %#x, %d queues, MTU %d, index %d; want TUN with %#x, 4 queues, MTU 1420, index %d",
				link.Mode, link.Flags, link.Queues, link.MTU, link.Index, wantFlags, iface.Index())
		}
		if link.TxQLen != 3000 {
			t.Errorf("transmit queue length %d, want 3000", link.TxQLen)
		}
	})
}

func TestCreateQueueCounts(t *testing.T) {
	for _, queues := range []int{1, 2, maxQueues} {
		t.Run(fmt.Sprint(queues), func(t *testing.T) {
			testenv.WithNetns(t, func() {
				iface, err := Create(Config{Queues: queues})
				if err != nil {
					t.Fatal(err)
				}
				defer iface.Close()
				if !strings.HasPrefix(iface.Name(), "tun") {
					t.Errorf("kernel-chosen name %q", iface.Name())
				}
				if link := tuntapLink(t, iface.Name()); link.Queues != queues || len(iface.Queues()) != queues {
					t.Errorf("kernel reports %d queues, Queues() has %d, want %d", link.Queues, len(iface.Queues()), queues)
				}
				if err := iface.Close(); err != nil {
					t.Fatal(err)
				}
				waitLinkGone(t, iface.Index())
			})
		})
	}
}

func TestCreateRefusesExistingName(t *testing.T) {
	testenv.WithNetns(t, func() {
		first, err := Create(Config{Name: testName, Queues: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		second, err := Create(Config{Name: testName, Queues: 1})
		if err == nil {
			second.Close()
			t.Fatal("second Create of the same name succeeded")
		}
		if want := "creating tun mifsec0: interface mifsec0 already exists"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
		if link := tuntapLink(t, testName); link.Queues != 1 {
			t.Errorf("the existing interface has %d queues, want 1", link.Queues)
		}
	})
}

func TestAddressesRoutesAndClose(t *testing.T) {
	testenv.WithNetns(t, func() {
		iface := newUpInterface(t, 2)
		link := tuntapLink(t, testName)
		if link.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("link flags %v / %#x, want up and multi-queue", link.Attrs().Flags, link.Flags)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == f.local.String() }) {
				t.Errorf("%s: address %s missing from %v", f.name, f.local, addrs)
			}
			routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == f.routed.String() }) {
				t.Errorf("%s: route %s missing from %v", f.name, f.routed, routes)
			}
		}

		// An extra queue opened behind the Interface's back keeps the link
		// alive through Close, so what Close removed itself can be seen.
		extra, _, err := openQueue(testName)
		if err != nil {
			t.Fatal(err)
		}
		if err := iface.Close(); err != nil {
			t.Fatal(err)
		}
		addrs, err = netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == f.local.String() }) {
				t.Errorf("%s: address %s still present after Close", f.name, f.local)
			}
			if slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == f.routed.String() }) {
				t.Errorf("%s: route %s still present after Close", f.name, f.routed)
			}
		}
		if err := iface.AddAddress(families[0].local); !errors.Is(err, os.ErrClosed) {
			t.Errorf("AddAddress after Close: %v, want os.ErrClosed", err)
		}
		if err := iface.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		unix.Close(extra)
		waitLinkGone(t, iface.Index())
	})
}

func TestAddressAndRouteRules(t *testing.T) {
	testenv.WithNetns(t, func() {
		iface, err := Create(Config{Name: testName, MTU: 1000, Queues: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer iface.Close()
		steps := []struct {
			desc    string
			do      func() error
			wantErr string
		}{
			{"IPv6 address below the IPv6 MTU", func() error { return iface.AddAddress(families[1].local) }, "MTU 1000 is below 1280"},
			{"IPv4 address", func() error { return iface.AddAddress(families[0].local) }, ""},
			{"invalid address", func() error { return iface.AddAddress(netip.Prefix{}) }, "not a valid address prefix"},
			{"invalid route", func() error { return iface.AddRoute(netip.Prefix{}) }, "not a valid prefix"},
			{"route while down", func() error { return iface.AddRoute(families[0].routed) }, "call SetUp first"},
			{"up", iface.SetUp, ""},
			{"route with host bits", func() error { return iface.AddRoute(netip.MustParsePrefix("203.0.113.9/24")) }, ""},
			{"IPv6 MTU", func() error { return iface.SetMTU(minIPv6MTU) }, ""},
			{"IPv6 address", func() error { return iface.AddAddress(families[1].local) }, ""},
			{"MTU below IPv6 with an IPv6 address", func() error { return iface.SetMTU(minIPv6MTU - 1) }, "has an IPv6 address"},
			{"MTU too large", func() error { return iface.SetMTU(maxMTU + 1) }, "out of range"},
			{"IPv6 route", func() error { return iface.AddRoute(families[1].routed) }, ""},
			{"duplicate route", func() error { return iface.AddRoute(families[1].routed) }, "adding route 2001:db8:2::/64 via mifsec0: file exists"},
		}
		for _, s := range steps {
			err := s.do()
			switch {
			case s.wantErr == "" && err != nil:
				t.Errorf("%s: %v", s.desc, err)
			case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
				t.Errorf("%s: error %v, want one containing %q", s.desc, err, s.wantErr)
			}
		}
		if link := tuntapLink(t, testName); link.MTU != minIPv6MTU || iface.MTU() != minIPv6MTU {
			t.Errorf("MTU: kernel %d, Interface %d; want %d", link.MTU, iface.MTU(), minIPv6MTU)
		}
		routes, err := netlink.RouteList(tuntapLink(t, testName), netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == "203.0.113.0/24" }) {
			t.Errorf("masked route 203.0.113.0/24 missing from %v", routes)
		}
	})
}

func TestReadPacketFromSocket(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			testenv.WithNetns(t, func() {
				iface := newUpInterface(t, 4)
				readers := startReaders(t, iface, allQueues(iface))
				dst := netip.AddrPortFrom(f.remote, 5000)
				sock, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
				if err != nil {
					t.Fatal(err)
				}
				defer sock.Close()
				if _, err := sock.Write([]byte("into the tunnel")); err != nil {
					t.Fatal(err)
				}
				rec := readers.next(t, udpTo(dst))
				s, _ := parse(rec.pkt)
				if string(s.payload) != "into the tunnel" || s.src.Addr() != f.local.Addr() {
					t.Errorf("read %q from %s, want %q from %s", s.payload, s.src, "into the tunnel", f.local.Addr())
				}
				if !rec.headroom {
					t.Error("Read wrote before the offset")
				}
			})
		})
	}
}

// TestReadSplitsUDPSuperpacketsOnEveryQueue sends UDP GSO superpackets
// (UDP_SEGMENT) into the interface from new flows until every queue has read
// one. Without the USO offload the kernel would segment before the TUN and
// each Read would return one packet; with it, one Read returns them all.
func TestReadSplitsUDPSuperpacketsOnEveryQueue(t *testing.T) {
	const queues, segments, segmentSize, maxFlows = 4, 4, 1000, 200
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			testenv.WithNetns(t, func() {
				iface := newUpInterface(t, queues)
				requireUDPOffloads(t, iface.Queues()[0])
				readers := startReaders(t, iface, allQueues(iface))
				dst := netip.AddrPortFrom(f.remote, 6000)
				seen := make(map[int]bool)
				for flow := 0; flow < maxFlows && len(seen) < queues; flow++ {
					sock, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
					if err != nil {
						t.Fatal(err)
					}
					rc, err := sock.SyscallConn()
					if err != nil {
						t.Fatal(err)
					}
					var optErr error
					if err := rc.Control(func(fd uintptr) {
						optErr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, segmentSize)
					}); err != nil || optErr != nil {
						t.Fatalf("UDP_SEGMENT: %v %v", err, optErr)
					}
					if _, err := sock.Write(make([]byte, segments*segmentSize)); err != nil {
						t.Fatal(err)
					}
					src := netip.MustParseAddrPort(sock.LocalAddr().String())
					sock.Close()
					for i := range segments {
						rec := readers.next(t, func(pkt []byte) bool {
							s, ok := parse(pkt)
							return ok && s.proto == unix.IPPROTO_UDP && s.src.Port() == src.Port() && s.dst == dst
						})
						s, _ := parse(rec.pkt)
						if rec.batch != segments || len(s.payload) != segmentSize {
							t.Fatalf("flow %d segment %d: one Read returned %d packets with %d-byte payload, want %d of %d",
								flow, i, rec.batch, len(s.payload), segments, segmentSize)
						}
						seen[rec.queue] = true
					}
				}
				if len(seen) < queues {
					t.Errorf("after %d flows only queues %v read superpackets", maxFlows, seen)
				}
				t.Logf("superpackets of %d segments split on all %d queues", segments, queues)
			})
		})
	}
}

// TestReadSplitsTCPSuperpackets answers a TCP handshake through the
// interface and checks that the kernel's first flight of data arrives as a
// TSO superpacket: one Read returns several segments.
func TestReadSplitsTCPSuperpackets(t *testing.T) {
	const mss = 1000
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			testenv.WithNetns(t, func() {
				iface := newUpInterface(t, 2)
				queues := iface.Queues()
				readers := startReaders(t, iface, allQueues(iface))
				server := netip.AddrPortFrom(f.remote, 80)
				batches := make(chan int, 64)
				stop := make(chan struct{})
				responderErr := make(chan error, 1)
				go func() { responderErr <- respondTCP(readers, queues, server, mss, batches, stop) }()
				defer func() {
					close(stop)
					if err := <-responderErr; err != nil {
						t.Error(err)
					}
				}()

				c, err := net.DialTimeout("tcp", server.String(), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				tcp := c.(*net.TCPConn)
				defer tcp.Close()
				_ = tcp.SetLinger(0)
				_ = tcp.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
				_, _ = tcp.Write(make([]byte, 20*mss))

				largest := 0
				timeout := time.After(5 * time.Second)
				for largest < 2 {
					select {
					case n := <-batches:
						largest = max(largest, n)
					case <-timeout:
						t.Fatalf("no Read returned more than %d TCP segment(s) within 5 s", largest)
					}
				}
				t.Logf("one Read returned %d TCP segments of a superpacket", largest)
			})
		})
	}
}

// respondTCP answers SYNs to server with a SYN-ACK announcing mss, written to
// the queue the SYN came from, and reports the batch size of every Read that
// returned data for server, until stop is closed.
func respondTCP(readers *queueReaders, queues []wgtun.Device, server netip.AddrPort, mss uint16, batches chan<- int, stop <-chan struct{}) error {
	for {
		var rec received
		select {
		case rec = <-readers.packets:
		case <-stop:
			return nil
		}
		s, ok := parse(rec.pkt)
		if !ok || s.proto != unix.IPPROTO_TCP || s.dst != server {
			continue
		}
		const syn, ack = 0x02, 0x10
		if s.tcpFlags&(syn|ack) == syn {
			hdr := make([]byte, 24)
			binary.BigEndian.PutUint16(hdr[0:], server.Port())
			binary.BigEndian.PutUint16(hdr[2:], s.src.Port())
			binary.BigEndian.PutUint32(hdr[4:], 1000)
			binary.BigEndian.PutUint32(hdr[8:], s.tcpSeq+1)
			hdr[12] = 6 << 4
			hdr[13] = syn | ack
			binary.BigEndian.PutUint16(hdr[14:], 65535)
			hdr[20], hdr[21] = 2, 4 // MSS option
			binary.BigEndian.PutUint16(hdr[22:], mss)
			pkt, err := ipPacket(server.Addr(), s.src.Addr(), unix.IPPROTO_TCP, hdr, 16)
			if err != nil {
				return err
			}
			if _, err := queues[rec.queue].Write([][]byte{withHeadroom(pkt)}, testOffset); err != nil {
				return fmt.Errorf("writing SYN-ACK: %w", err)
			}
			continue
		}
		if len(s.payload) > 0 {
			select {
			case batches <- rec.batch:
			default:
			}
		}
	}
}

func TestWritePacketToSocketFromEveryQueue(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			testenv.WithNetns(t, func() {
				iface := newUpInterface(t, 4)
				sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.local.Addr(), 0)))
				if err != nil {
					t.Fatal(err)
				}
				defer sock.Close()
				local := netip.MustParseAddrPort(sock.LocalAddr().String())
				for q, dev := range iface.Queues() {
					from := netip.AddrPortFrom(f.remote, uint16(4000+q))
					payload := fmt.Sprintf("out of queue %d", q)
					pkt, err := UDPPacket(from, local, []byte(payload))
					if err != nil {
						t.Fatal(err)
					}
					if _, err := dev.Write([][]byte{withHeadroom(pkt)}, testOffset); err != nil {
						t.Fatalf("queue %d: Write: %v", q, err)
					}
					_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
					buf := make([]byte, 2048)
					n, got, err := sock.ReadFromUDPAddrPort(buf)
					if err != nil {
						t.Fatalf("queue %d: %v", q, err)
					}
					if string(buf[:n]) != payload || got != from {
						t.Errorf("queue %d: socket got %q from %s, want %q from %s", q, buf[:n], got, payload, from)
					}
				}
			})
		})
	}
}

// TestWriteCoalescesUDP writes several datagrams of one flow in one Write. A
// socket with UDP_GRO receives them as the one superpacket the queue wrote
// (with the segment size in a control message); a plain socket receives the
// datagrams the kernel splits it back into.
func TestWriteCoalescesUDP(t *testing.T) {
	const segments, segmentSize = 4, 1000
	for _, f := range families {
		for _, gro := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/udp_gro=%v", f.name, gro), func(t *testing.T) {
				testenv.WithNetns(t, func() {
					iface := newUpInterface(t, 2)
					requireUDPOffloads(t, iface.Queues()[0])
					sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.local.Addr(), 0)))
					if err != nil {
						t.Fatal(err)
					}
					defer sock.Close()
					if gro {
						rc, _ := sock.SyscallConn()
						var optErr error
						if err := rc.Control(func(fd uintptr) {
							optErr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
						}); err != nil || optErr != nil {
							t.Fatalf("UDP_GRO: %v %v", err, optErr)
						}
					}
					local := netip.MustParseAddrPort(sock.LocalAddr().String())
					from := netip.AddrPortFrom(f.remote, 4000)
					var bufs [][]byte
					for i := range segments {
						pkt, err := UDPPacket(from, local, bytes.Repeat([]byte{byte('a' + i)}, segmentSize))
						if err != nil {
							t.Fatal(err)
						}
						bufs = append(bufs, withHeadroom(pkt))
					}
					if _, err := iface.Queues()[0].Write(bufs, testOffset); err != nil {
						t.Fatal(err)
					}

					var got [][]byte
					var gsoSizes []int
					buf, oob := make([]byte, 65536), make([]byte, 128)
					_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
					for total := 0; total < segments*segmentSize; {
						n, oobn, _, _, err := sock.ReadMsgUDPAddrPort(buf, oob)
						if err != nil {
							t.Fatalf("after %d of %d bytes: %v", total, segments*segmentSize, err)
						}
						got = append(got, slices.Clone(buf[:n]))
						gsoSizes = append(gsoSizes, udpGROSize(t, oob[:oobn]))
						total += n
					}
					want := bytes.Join(func() [][]byte {
						var p [][]byte
						for i := range segments {
							p = append(p, bytes.Repeat([]byte{byte('a' + i)}, segmentSize))
						}
						return p
					}(), nil)
					if !bytes.Equal(bytes.Join(got, nil), want) {
						t.Error("received payload differs from what was written")
					}
					if gro {
						if len(got) != 1 || gsoSizes[0] != segmentSize {
							t.Errorf("UDP_GRO socket got %d reads with segment sizes %v, want 1 superpacket of %d-byte segments", len(got), gsoSizes, segmentSize)
						}
					} else if len(got) != segments {
						t.Errorf("plain socket got %d datagrams, want %d", len(got), segments)
					}
				})
			})
		}
	}
}

// udpGROSize returns the segment size in a UDP_GRO control message, or 0.
func udpGROSize(t *testing.T, oob []byte) int {
	t.Helper()
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return 0
}

func TestClosingOneQueueKeepsTheOthers(t *testing.T) {
	testenv.WithNetns(t, func() {
		iface := newUpInterface(t, 3)
		queues := iface.Queues()
		if err := queues[0].Close(); err != nil {
			t.Fatal(err)
		}
		bufs, sizes := newBatch(1, testOffset+2048)
		if _, err := queues[0].Read(bufs, sizes, testOffset); !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read on the closed queue: %v, want os.ErrClosed", err)
		}
		if link := tuntapLink(t, testName); link.Queues != 2 {
			t.Errorf("kernel reports %d queues after closing one, want 2", link.Queues)
		}
		readers := startReaders(t, iface, map[int]wgtun.Device{1: queues[1], 2: queues[2]})

		f := families[0]
		for port := uint16(5000); port < 5008; port++ {
			dst := netip.AddrPortFrom(f.remote, port)
			sock, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				t.Fatal(err)
			}
			_, err = sock.Write([]byte("still flowing"))
			sock.Close()
			if err != nil {
				t.Fatal(err)
			}
			if rec := readers.next(t, udpTo(dst)); rec.queue == 0 {
				t.Errorf("packet to %s read from the closed queue", dst)
			}
		}

		sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.local.Addr(), 0)))
		if err != nil {
			t.Fatal(err)
		}
		defer sock.Close()
		pkt, err := UDPPacket(netip.AddrPortFrom(f.remote, 4000), netip.MustParseAddrPort(sock.LocalAddr().String()), []byte("from queue 2"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := queues[2].Write([][]byte{withHeadroom(pkt)}, testOffset); err != nil {
			t.Fatal(err)
		}
		_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		if n, err := sock.Read(buf); err != nil || string(buf[:n]) != "from queue 2" {
			t.Errorf("socket read %q, %v", buf[:n], err)
		}

		if err := iface.Close(); err != nil {
			t.Errorf("Close with one queue already closed: %v", err)
		}
		waitLinkGone(t, iface.Index())
	})
}

func TestCloseUnblocksReads(t *testing.T) {
	testenv.WithNetns(t, func() {
		iface, err := Create(Config{Name: testName, Queues: 3})
		if err != nil {
			t.Fatal(err)
		}
		results := make(chan error, 3)
		for _, dev := range iface.Queues() {
			go func() {
				bufs, sizes := newBatch(dev.BatchSize(), testOffset+2048)
				_, err := dev.Read(bufs, sizes, testOffset)
				results <- err
			}()
		}
		time.Sleep(50 * time.Millisecond)
		if err := iface.Close(); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			select {
			case err := <-results:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("blocked Read returned %v, want os.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Read still blocked 5 s after Close")
			}
		}
		for _, dev := range iface.Queues() {
			if _, ok := <-dev.Events(); ok {
				t.Error("a queue's Events channel delivered an event instead of being closed")
			}
		}
		waitLinkGone(t, iface.Index())
	})
}

func TestIPv6AddressUsableWhenCallsReturn(t *testing.T) {
	f := families[1]
	tests := []struct {
		desc    string
		upFirst bool
	}{
		{"added to an up interface", true},
		{"added before SetUp", false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			testenv.WithNetns(t, func() {
				iface, err := Create(Config{Name: testName, Queues: 1})
				if err != nil {
					t.Fatal(err)
				}
				defer iface.Close()
				steps := []func() error{func() error { return iface.AddAddress(f.local) }, iface.SetUp}
				if tt.upFirst {
					slices.Reverse(steps)
				}
				for _, step := range steps {
					if err := step(); err != nil {
						t.Fatal(err)
					}
				}
				routes, err := netlink.RouteGet(f.local.Addr().AsSlice())
				if err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Type == unix.RTN_LOCAL }) {
					t.Errorf("%s is not routed locally right after the calls returned: %v", f.local.Addr(), routes)
				}
			})
		})
	}
}
