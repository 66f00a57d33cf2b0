package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/traffic"
)

// trafficPort is where the protected server (or the throughput scenario's
// server namespace) accepts the measured flows: trafficPort for the first
// traffic entry, trafficPort+1 for the next, ...
const trafficPort = 5201

// flowSpec is one bulk transfer between two namespaces, generated and
// measured in this process (bench/traffic).
type flowSpec struct {
	clientNS, serverNS string
	// server is where the server listens (in serverNS); bind the client's
	// source address, invalid for the kernel's choice.
	server    netip.AddrPort
	bind      netip.Addr
	streams   int
	direction string
	duration  time.Duration
	// base is the scenario's clock; zero for the transfer's own start.
	base time.Time
	// mptcp opens MPTCP sockets on both ends.
	mptcp bool
	// cc is the congestion control of both ends' sockets; "" for the
	// namespaces' default.
	cc string
}

// listenTCPIn opens a TCP (or MPTCP) listener inside namespace ns; its
// connections use congestion control cc ("" for the namespace's default).
func listenTCPIn(ns string, addr netip.AddrPort, mptcp bool, cc string) (net.Listener, error) {
	var ln net.Listener
	err := labnet.InNamespace(ns, func() error {
		lc := net.ListenConfig{Control: congestionControl(cc)}
		lc.SetMultipathTCP(mptcp)
		l, err := lc.Listen(context.Background(), "tcp4", addr.String())
		ln = l
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in namespace %s: %w", addr, ns, err)
	}
	return ln, nil
}

// dialerIn returns a Dial function that opens TCP (or MPTCP) connections
// from namespace ns to addr with congestion control cc ("" for the
// namespace's default).
func dialerIn(ns string, bind netip.Addr, addr netip.AddrPort, mptcp bool, cc string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var conn net.Conn
		err := labnet.InNamespace(ns, func() error {
			d := net.Dialer{Control: congestionControl(cc)}
			d.SetMultipathTCP(mptcp)
			if bind.IsValid() {
				d.LocalAddr = &net.TCPAddr{IP: bind.AsSlice()}
			}
			c, err := d.DialContext(ctx, "tcp4", addr.String())
			conn = c
			return err
		})
		return conn, err
	}
}

// congestionControl returns a socket control function that sets the
// socket's TCP congestion control to cc, or nil for "". The socket
// option, not the namespace's default (net.ipv4.tcp_congestion_control):
// a namespace other than the host's may only default to an algorithm in
// the host's net.ipv4.tcp_allowed_congestion_control, which differs
// between machines, while a root process may set any loaded algorithm on
// its own sockets. A listener's setting passes to the connections it
// accepts; on an MPTCP socket it passes to every subflow.
func congestionControl(cc string) func(network, address string, c syscall.RawConn) error {
	if cc == "" {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = setCongestionControl(int(fd), cc) }); cerr != nil {
			return cerr
		}
		return err
	}
}

// setCongestionControl sets TCP_CONGESTION on socket fd.
func setCongestionControl(fd int, cc string) error {
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc); err != nil {
		return fmt.Errorf("TCP congestion control %q: %w (the kernel may lack it: modprobe tcp_%s)", cc, err, cc)
	}
	return nil
}

// CheckCongestionControl reports whether this process can give its TCP
// sockets congestion control cc, before any namespace is built: a socket
// in the host's namespace takes it (and, as root, loads its module).
func CheckCongestionControl(cc string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("TCP congestion control %q: %w", cc, err)
	}
	defer unix.Close(fd)
	return setCongestionControl(fd, cc)
}

// run opens the server's listener, runs the transfer and closes it. The
// error is for a transfer that could not start; one cut short returns its
// partial result with Incomplete set.
func (f flowSpec) run(ctx context.Context) (*traffic.Result, error) {
	listen := netip.AddrPortFrom(netip.IPv4Unspecified(), f.server.Port())
	ln, err := listenTCPIn(f.serverNS, listen, f.mptcp, f.cc)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	b := &traffic.Bulk{Streams: max(f.streams, 1), Direction: f.direction, Duration: f.duration,
		Dial: dialerIn(f.clientNS, f.bind, f.server, f.mptcp, f.cc), Listener: ln, Base: f.base}
	return b.Run(ctx)
}

// interfaceCounters are an interface's byte counters.
type interfaceCounters struct {
	TxBytes, RxBytes uint64
}

// readCounters reads the byte counters of an interface in namespace ns of
// topology t.
func readCounters(ctx context.Context, t *labnet.Topology, ns, iface string) (interfaceCounters, error) {
	out, err := t.Run(ctx, ns, "ip", "-json", "-stats", "link", "show", "dev", iface)
	if err != nil {
		return interfaceCounters{}, fmt.Errorf("read the counters of %s: %w", iface, err)
	}
	return parseLinkCounters([]byte(jsonPart(out)))
}

// parseLinkCounters reads the byte counters from `ip -json -stats link show
// dev IFACE`.
func parseLinkCounters(data []byte) (interfaceCounters, error) {
	var links []struct {
		Name  string `json:"ifname"`
		Stats *struct {
			Rx struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
			Tx struct {
				Bytes uint64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(data, &links); err != nil {
		return interfaceCounters{}, fmt.Errorf("parse ip link JSON: %w", err)
	}
	if len(links) != 1 || links[0].Stats == nil {
		return interfaceCounters{}, errors.New("ip link JSON has no single interface with stats64")
	}
	return interfaceCounters{TxBytes: links[0].Stats.Tx.Bytes, RxBytes: links[0].Stats.Rx.Bytes}, nil
}

// flowCrossed reports whether an interface that counted delta bytes in the
// flow's direction carried a flow of payload bytes: headers only add, so
// at least 90% (the counters and the flow's measurement differ at the
// edges).
func flowCrossed(payload int64, delta uint64) bool {
	return float64(delta) >= 0.9*float64(payload)
}

// jsonPart cuts anything before the first '{' or '[' (ip netns exec may
// print warnings to the combined output).
func jsonPart(out string) string {
	if i := strings.IndexAny(out, "{["); i > 0 {
		return out[i:]
	}
	return out
}

// trafficTools are what every run needs besides its peers' own tools: the
// traffic itself is generated in this process.
var trafficTools = []labnet.Tool{{Binary: "ip", Package: "iproute2"}}

// checkTrafficTools reports the tools every run needs, all missing ones in
// one error.
func checkTrafficTools() error {
	if missing := labnet.MissingTools(trafficTools); len(missing) > 0 {
		return errors.New(labnet.DescribeMissing(missing))
	}
	return nil
}
