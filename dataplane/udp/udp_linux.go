package udp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mifsec/mifsec/scheduler"
	"golang.org/x/sys/unix"
)

const (
	// defaultSocketBuffer is the send and receive buffer size asked for.
	defaultSocketBuffer = 7 << 20
	// maxGSOSegments is the kernel's limit on datagrams per GSO message.
	maxGSOSegments = 64
	// maxGSOBytes bounds one GSO message's payload (an IP packet's limit
	// less IPv4 and UDP headers).
	maxGSOBytes = 65535 - 20 - 8
	// MaxDatagram is the largest UDP payload a receive buffer holds.
	MaxDatagram = 65535
)

// Config says where a Conn listens.
type Config struct {
	Local netip.AddrPort // address and port to bind; the zero Addr binds all
	// Device binds the socket to one interface (SO_BINDTODEVICE), so that a
	// path's packets leave and arrive through that interface only.
	Device string
	// SocketBuffer is the send and receive buffer size in bytes;
	// 0 means defaultSocketBuffer.
	SocketBuffer int
	// NoOffload turns segmentation and receive offload off (for tests and
	// for comparing).
	NoOffload bool
	// ReuseAddr sets SO_REUSEADDR, so that a wildcard and specific
	// addresses may be bound on the same port.
	ReuseAddr bool
}

// Conn is one UDP socket carrying ESP (and IKE behind the non-ESP marker).
type Conn struct {
	conn  *net.UDPConn
	rc    syscall.RawConn
	local netip.AddrPort
	is6   bool
	gso   atomic.Bool
	gro   bool
}

// Listen opens the socket described by cfg.
func Listen(ctx context.Context, cfg Config) (*Conn, error) {
	bufSize := cfg.SocketBuffer
	if bufSize == 0 {
		bufSize = defaultSocketBuffer
	}
	network := "udp4"
	if cfg.Local.Addr().Is6() && !cfg.Local.Addr().Is4In6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = setSocketOptions(int(fd), cfg.Device, bufSize)
			if serr == nil && cfg.ReuseAddr {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, network, cfg.Local.String())
	if err != nil {
		return nil, fmt.Errorf("listening on udp %s: %w", cfg.Local, err)
	}
	conn := pc.(*net.UDPConn)
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("udp %s: %w", cfg.Local, err)
	}
	c := &Conn{conn: conn, rc: rc, local: conn.LocalAddr().(*net.UDPAddr).AddrPort(), is6: network == "udp6"}
	if !cfg.NoOffload {
		rc.Control(func(fd uintptr) {
			// GSO is usable where the option can be read back.
			_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
			c.gso.Store(err == nil)
			c.gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		})
	}
	return c, nil
}

func setSocketOptions(fd int, device string, bufSize int) error {
	// DF off for IPv4 (on a dual-stack socket too): see the package
	// comment on narrow paths. An IPv6-only socket refuses the IPv4
	// option, which does not matter.
	unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
	if device != "" {
		if err := unix.BindToDevice(fd, device); err != nil {
			return fmt.Errorf("binding socket to %s: %w", device, err)
		}
	}
	// The *FORCE variants pass the system limits (net.core.rmem_max) and
	// need CAP_NET_ADMIN; without it the kernel caps the plain request.
	for _, opt := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[0], bufSize) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[1], bufSize)
		}
	}
	return nil
}

// LocalAddr returns the address the socket is bound to.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Offloads reports whether segmentation and receive offload are on.
func (c *Conn) Offloads() (gso, gro bool) { return c.gso.Load(), c.gro }

// Close closes the socket; blocked Senders and Receivers return.
func (c *Conn) Close() error { return c.conn.Close() }

// WriteTo sends one datagram (IKE messages, keepalives): not for the hot path.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) error {
	_, err := c.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Endpoint is a remote UDP address encoded once as the socket address the
// kernel takes.
type Endpoint struct {
	addr  netip.AddrPort
	raw   unix.RawSockaddrInet6 // big enough for either family
	rawLn uint32
	// gsoLimit, when set, is the largest datagram the Sender coalesces
	// into GSO messages to this endpoint, until gsoLimitUntil (on
	// scheduler.Now's clock): a larger one made the kernel refuse its
	// message, because the path MTU it learned is smaller.
	gsoLimit      atomic.Uint32
	gsoLimitUntil atomic.Int64
}

// gsoLimitTime is how long a refused GSO segment size stays off for an
// endpoint: the kernel forgets a learned path MTU after 10 minutes
// (net.ipv4.route.mtu_expires), and so does the Sender.
const gsoLimitTime = 10 * time.Minute

// maxGSOSegment returns the largest datagram that may go into a GSO message
// to e at monotonic time now (0: any).
func (e *Endpoint) maxGSOSegment(now int64) int {
	lim := e.gsoLimit.Load()
	if lim == 0 {
		return 0
	}
	if now >= e.gsoLimitUntil.Load() {
		e.gsoLimit.Store(0)
		return 0
	}
	return int(lim)
}

// limitGSO keeps datagrams of size segSize and larger out of GSO messages to
// e for gsoLimitTime.
func (e *Endpoint) limitGSO(segSize int, now int64) {
	e.gsoLimitUntil.Store(now + int64(gsoLimitTime))
	e.gsoLimit.Store(uint32(max(segSize-1, 1)))
}

// NewEndpoint encodes ap for a socket of c's family.
func (c *Conn) NewEndpoint(ap netip.AddrPort) (*Endpoint, error) {
	e := &Endpoint{addr: ap}
	a := ap.Addr()
	switch {
	case !c.is6 && (a.Is4() || a.Is4In6()):
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&e.raw))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		sa.Addr = a.Unmap().As4()
		e.rawLn = unix.SizeofSockaddrInet4
	case c.is6:
		e.raw.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&e.raw.Port))[:], ap.Port())
		e.raw.Addr = a.As16()
		e.rawLn = unix.SizeofSockaddrInet6
	default:
		return nil, fmt.Errorf("endpoint %s: socket on %s is IPv4 only", ap, c.local)
	}
	return e, nil
}

// AddrPort returns the endpoint's address.
func (e *Endpoint) AddrPort() netip.AddrPort { return e.addr }

// mmsghdr is struct mmsghdr of sendmmsg(2) and recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// gsoControlLen is the space of one UDP_SEGMENT control message.
var gsoControlLen = unix.CmsgSpace(2)

// Sender batches outbound datagrams for one goroutine.
type Sender struct {
	c     *Conn
	pkts  [][]byte
	eps   []*Endpoint
	msgs  []mmsghdr
	iovs  []unix.Iovec
	oob   []byte
	nmsgs int
	done  int
	err   error
	now   int64 // scheduler.Now() at the start of Flush
	write func(fd uintptr) bool

	// Errors counts datagrams the kernel refused (after retries).
	Errors uint64

	// refused holds the datagrams of the last Flush that the kernel
	// refused because the socket's way out is gone (interface down, no
	// route): another path may still carry them.
	refused [][]byte
}

// NewSender returns a Sender for up to batch datagrams per Flush.
func (c *Conn) NewSender(batch int) *Sender {
	s := &Sender{
		c:       c,
		pkts:    make([][]byte, 0, batch),
		eps:     make([]*Endpoint, 0, batch),
		refused: make([][]byte, 0, batch),
		msgs:    make([]mmsghdr, batch),
		iovs:    make([]unix.Iovec, batch),
		oob:     make([]byte, batch*gsoControlLen),
	}
	s.write = s.writeMessages
	return s
}

// Len returns the number of datagrams queued.
func (s *Sender) Len() int { return len(s.pkts) }

// Bytes returns the size of the queued datagrams.
func (s *Sender) Bytes() uint64 {
	var n uint64
	for _, p := range s.pkts {
		n += uint64(len(p))
	}
	return n
}

// Add queues one datagram to ep. pkt must stay untouched until Flush
// returns. It reports false (and queues nothing) when the batch is full.
func (s *Sender) Add(pkt []byte, ep *Endpoint) bool {
	if len(s.pkts) == cap(s.pkts) {
		return false
	}
	s.pkts = append(s.pkts, pkt)
	s.eps = append(s.eps, ep)
	return true
}

// Flush sends every queued datagram and empties the batch. A datagram the
// kernel refuses is counted in Errors and the first such error returned;
// the others are still sent.
func (s *Sender) Flush() error {
	clear(s.refused)
	s.refused = s.refused[:0]
	if len(s.pkts) == 0 {
		return nil
	}
	var first error
	start := 0
	s.now = scheduler.Now()
	for start < len(s.pkts) {
		gso := s.c.gso.Load()
		s.build(start, gso)
		s.done, s.err = 0, nil
		if err := s.c.rc.Write(s.write); err != nil {
			first = err // the socket is closed
			break
		}
		if s.err == nil {
			break
		}
		if gso && (errors.Is(s.err, unix.EIO) || errors.Is(s.err, unix.EINVAL)) {
			// The route's device cannot checksum segmented UDP: fall
			// back to one datagram per message, from the failed one on.
			s.c.gso.Store(false)
			start = s.firstPacketOf(s.done)
			continue
		}
		if errors.Is(s.err, unix.EMSGSIZE) && s.msgs[s.done].hdr.Iovlen > 1 {
			// The path to this endpoint is narrower than the message's
			// segments: send them one per message, for the kernel to
			// fragment (see the package comment on narrow paths).
			failed := s.firstPacketOf(s.done)
			s.eps[failed].limitGSO(len(s.pkts[failed]), s.now)
			start = failed
			continue
		}
		// Skip the refused message and go on with the rest.
		failed := s.firstPacketOf(s.done)
		next := s.firstPacketOf(s.done + 1)
		s.Errors += uint64(next - failed)
		if pathGone(s.err) {
			s.refused = append(s.refused, s.pkts[failed:next]...)
		}
		if first == nil {
			first = s.err
		}
		start = next
	}
	clear(s.pkts) // drop references to packet memory
	clear(s.eps)
	s.pkts, s.eps = s.pkts[:0], s.eps[:0]
	return first
}

// Refused returns the datagrams of the last Flush that were refused because
// the socket's way out is gone (see pathGone); they stay valid as long as
// the packet memory the caller queued. The next Flush forgets them.
func (s *Sender) Refused() [][]byte { return s.refused }

// pathGone reports whether a send error means the socket cannot reach
// anything now (its interface is down or gone, or it has no route), as
// opposed to a problem with one datagram.
func pathGone(err error) bool {
	for _, e := range []unix.Errno{unix.ENETDOWN, unix.ENETUNREACH, unix.EHOSTUNREACH, unix.ENODEV, unix.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// firstPacketOf returns the index in s.pkts of message m's first datagram.
func (s *Sender) firstPacketOf(m int) int {
	if m >= s.nmsgs {
		return len(s.pkts)
	}
	base := uintptr(unsafe.Pointer(&s.iovs[0]))
	return int((uintptr(unsafe.Pointer(s.msgs[m].hdr.Iov)) - base) / unsafe.Sizeof(s.iovs[0]))
}

// build lays out messages for s.pkts[start:], grouping runs of datagrams of
// one size to one endpoint into GSO messages when gso is on.
func (s *Sender) build(start int, gso bool) {
	s.nmsgs = 0
	var segSize, segs, bytes, segLimit int
	var cur *mmsghdr
	for i := start; i < len(s.pkts); i++ {
		pkt := s.pkts[i]
		iov := &s.iovs[i]
		iov.Base = unsafe.SliceData(pkt)
		iov.SetLen(len(pkt))
		if gso && cur != nil && s.eps[i] == s.eps[i-1] && len(pkt) <= segSize &&
			segs < maxGSOSegments && bytes+len(pkt) <= maxGSOBytes && len(s.pkts[i-1]) == segSize &&
			(segLimit == 0 || segSize <= segLimit) {
			// Extend the message: same destination, not larger than the
			// segment size, and no shorter datagram before it.
			cur.hdr.Iovlen++
			segs++
			bytes += len(pkt)
			if segs == 2 {
				oob := s.oob[s.nmsgs*gsoControlLen-gsoControlLen:][:gsoControlLen]
				h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
				h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
				h.SetLen(unix.CmsgLen(2))
				binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(segSize))
				cur.hdr.Control = &oob[0]
				cur.hdr.SetControllen(gsoControlLen)
			}
			continue
		}
		cur = &s.msgs[s.nmsgs]
		s.nmsgs++
		*cur = mmsghdr{}
		cur.hdr.Name = (*byte)(unsafe.Pointer(&s.eps[i].raw))
		cur.hdr.Namelen = s.eps[i].rawLn
		cur.hdr.Iov = iov
		cur.hdr.Iovlen = 1
		segSize, segs, bytes = len(pkt), 1, len(pkt)
		if gso {
			segLimit = s.eps[i].maxGSOSegment(s.now)
		}
	}
}

// writeMessages is the poller callback: it returns false to wait until the
// socket is writable again.
func (s *Sender) writeMessages(fd uintptr) bool {
	for s.done < s.nmsgs {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.msgs[s.done])), uintptr(s.nmsgs-s.done), 0, 0, 0)
		switch errno {
		case 0:
			s.done += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			s.err = errno
			return true
		}
	}
	return true
}

// Receiver reads batches of datagrams for one goroutine.
type Receiver struct {
	c        *Conn
	headroom int // bytes left free in front of every message
	bufs     [][]byte
	msgs     []mmsghdr
	iovs     []unix.Iovec
	oob      []byte
	names    []unix.RawSockaddrInet6
	n        int
	err      error
	read     func(fd uintptr) bool
}

var groControlLen = unix.CmsgSpace(4)

// NewReceiver returns a Receiver reading up to batch messages per call, each
// into its own buffer of MaxDatagram bytes (with receive offload one message
// holds up to 64 datagrams) after headroom free bytes, so that the reader
// can open the first datagram in place.
func (c *Conn) NewReceiver(batch, headroom int) *Receiver {
	r := &Receiver{
		c:        c,
		headroom: headroom,
		bufs:     make([][]byte, batch),
		msgs:     make([]mmsghdr, batch),
		iovs:     make([]unix.Iovec, batch),
		oob:      make([]byte, batch*groControlLen),
		names:    make([]unix.RawSockaddrInet6, batch),
	}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, headroom+MaxDatagram)
	}
	r.read = r.readMessages
	return r
}

// Read waits for datagrams and returns how many messages arrived.
func (r *Receiver) Read() (int, error) {
	for i := range r.msgs {
		r.iovs[i].Base = &r.bufs[i][r.headroom]
		r.iovs[i].SetLen(MaxDatagram)
		r.msgs[i] = mmsghdr{}
		r.msgs[i].hdr.Iov = &r.iovs[i]
		r.msgs[i].hdr.Iovlen = 1
		r.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.msgs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		if r.c.gro {
			r.msgs[i].hdr.Control = &r.oob[i*groControlLen]
			r.msgs[i].hdr.SetControllen(groControlLen)
		}
	}
	r.n, r.err = 0, nil
	if err := r.c.rc.Read(r.read); err != nil {
		return 0, err
	}
	return r.n, r.err
}

func (r *Receiver) readMessages(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)), 0, 0, 0)
		switch errno {
		case 0:
			r.n = int(n)
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			r.err = errno
			return true
		}
	}
}

// Message returns message i of the last Read: its buffer (the data starts
// after the headroom), its length, the size of each datagram in it (the whole
// length when the kernel did not coalesce), and its source.
func (r *Receiver) Message(i int) (buf []byte, n, segSize int, from netip.AddrPort) {
	m := &r.msgs[i]
	n = int(m.len)
	segSize = n
	if r.c.gro && m.hdr.Controllen > 0 {
		if s := groSegmentSize(r.oob[i*groControlLen : i*groControlLen+int(m.hdr.Controllen)]); s > 0 {
			segSize = s
		}
	}
	return r.bufs[i], n, segSize, sockaddrToAddrPort(&r.names[i])
}

// groSegmentSize finds the UDP_GRO control message without allocating.
func groSegmentSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && int(h.Len) >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(len(oob), unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0))):]
	}
	return 0
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}
