package linkemu

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// batch is how many frames one recvmmsg or sendmmsg call moves.
	batch = 64
	// rxBufSize holds the largest super-frame veth passes (64 KiB of IP
	// packet plus Ethernet and VLAN headers) with its virtio-net header.
	rxBufSize = vnetHdrLen + 65536 + 64
	// descsPerDirection bounds the packets in flight per direction.
	descsPerDirection = 1 << 16
	// socketBuffer is the kernel buffer of each packet socket.
	socketBuffer = 8 << 20
	// maxSleep bounds one sleep of the sender while packets wait, so that
	// an earlier deadline (reordering), Down and Close are seen within it.
	maxSleep = 2 * time.Millisecond
	// socketTimeout bounds a blocking receive or send, so that the
	// goroutines see Close within it.
	socketTimeout = 50 * time.Millisecond
	// threadNice is the nice value of the emulator's threads: they must
	// get the CPU as soon as a frame arrives or a deadline is due, also
	// when the lab's endpoints keep both cores busy.
	threadNice = -15
)

// Link is a running emulator between two interfaces.
type Link struct {
	cfg    atomic.Pointer[Config]
	log    *slog.Logger
	fds    [2]int // packet sockets on ifA and ifB
	closed atomic.Bool
	dirs   [2]*direction
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	setMu  sync.Mutex // serialises Set and RestartTraces
	err    error
	base   time.Time
}

// direction is one way through the link: frames received on in and sent on
// out.
type direction struct {
	link  *Link
	name  string
	atob  bool
	in    int // socket file descriptors
	out   int
	bell  chan struct{}
	shape *shaper
	q     *queue
	sf    superFrame

	// Receive batch.
	rxBufs  [][]byte
	rxIov   []unix.Iovec
	rxAddrs []unix.RawSockaddrLinklayer
	rxCmsgs []byte // one rxCmsgLen control buffer per message
	// rxLast is the arrival time given to the last frame: arrival times
	// never go back.
	rxLast int64
	rxMsgs []unix.Mmsghdr

	// Send batch.
	txDescs []*desc
	txIov   []unix.Iovec
	txMsgs  []unix.Mmsghdr

	// Statistics; lastDepart and rate give QueuedBytes.
	packets, bytes, deliveredPackets, deliveredBytes atomic.Uint64
	lossDrops, queueDrops, downDrops, errorDrops     atomic.Uint64
	lastDepart                                       atomic.Int64
	maxLate                                          atomic.Int64
	// downs counts configurations with this direction down; the receiver
	// restarts the shaper's queue when it changes, even if no packet
	// arrived while the link was down.
	downs   atomic.Uint64
	rxDowns uint64
	rate    atomic.Uint64 // float64 bits
}

// Start opens the emulator between interfaces ifA and ifB, both inside the
// named network namespace ns (as in `ip netns`; empty for the current one),
// and forwards frames between them with cfg applied. It returns once
// forwarding runs.
func Start(ns, ifA, ifB string, cfg Config, opts ...Option) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{arenaSize: DefaultBufferSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if !o.seeded {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.seed = binary.LittleEndian.Uint64(b[:])
	}
	if o.arenaSize < 2*rxBufSize {
		return nil, fmt.Errorf("linkemu: buffer size %d bytes: want at least %d", o.arenaSize, 2*rxBufSize)
	}
	if ifA == ifB {
		return nil, fmt.Errorf("linkemu: interfaces A and B are both %q", ifA)
	}
	fds, err := openSockets(ns, ifA, ifB)
	if err != nil {
		return nil, err
	}
	l := &Link{log: o.logger.With("link", ifA+"<->"+ifB), done: make(chan struct{}), base: time.Now()}
	c := cfg.clone()
	c.AtoB.traceStart, c.BtoA.traceStart = 0, 0 // traces start with the link
	l.cfg.Store(&c)
	l.fds = fds
	l.dirs[0] = newDirection(l, ifA+"->"+ifB, true, fds[0], fds[1], o.arenaSize, newShaper(o.seed, 1))
	l.dirs[1] = newDirection(l, ifB+"->"+ifA, false, fds[1], fds[0], o.arenaSize, newShaper(o.seed, 2))
	for _, d := range l.dirs {
		l.wg.Add(2)
		go d.receive()
		go d.send()
	}
	return l, nil
}

// openSockets opens a packet socket on each interface inside namespace ns.
// It runs on a thread of its own, locked and moved into ns; if moving back
// fails the thread is not unlocked, so the runtime discards it.
func openSockets(ns, ifA, ifB string) (fds [2]int, err error) {
	type result struct {
		fds [2]int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var r result
		defer func() { ch <- r }()
		if ns != "" {
			orig, err := netns.Get()
			if err != nil {
				r.err = fmt.Errorf("linkemu: opening the current network namespace: %w", err)
				runtime.UnlockOSThread()
				return
			}
			defer orig.Close()
			target, err := netns.GetFromName(ns)
			if err != nil {
				r.err = fmt.Errorf("linkemu: opening network namespace %s: %w", ns, err)
				runtime.UnlockOSThread()
				return
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				r.err = fmt.Errorf("linkemu: entering network namespace %s: %w", ns, err)
				runtime.UnlockOSThread()
				return
			}
			defer func() {
				if err := netns.Set(orig); err == nil {
					runtime.UnlockOSThread()
				}
			}()
		} else {
			defer runtime.UnlockOSThread()
		}
		for i, name := range []string{ifA, ifB} {
			fd, err := openSocket(name)
			if err != nil {
				for _, fd := range r.fds[:i] {
					unix.Close(fd)
				}
				r.err = fmt.Errorf("linkemu: namespace %q: %w", ns, err)
				return
			}
			r.fds[i] = fd
		}
	}()
	r := <-ch
	return r.fds, r.err
}

// openSocket opens a blocking packet socket (with timeouts) bound to the interface
// name of the current network namespace, for raw frames with a virtio-net
// header, that does not see its own transmitted frames.
func openSocket(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return -1, fmt.Errorf("interface %s: %w", name, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket for %s: %w", name, err)
	}
	opts := []struct {
		level, opt, value int
		what              string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer, "SO_SNDBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("packet socket for %s: setsockopt %s: %w", name, o.what, err)
		}
	}
	tv := unix.NsecToTimeval(int64(socketTimeout))
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("packet socket for %s: socket timeout: %w", name, err)
		}
	}
	// Bind with the protocol only now, so that no frame is queued before
	// the options apply.
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding packet socket to %s: %w", name, err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func newDirection(l *Link, name string, atob bool, in, out int, arenaSize int, sh *shaper) *direction {
	d := &direction{
		link: l, name: name, atob: atob, in: in, out: out,
		bell:    make(chan struct{}, 1),
		shape:   sh,
		q:       newQueue(arenaSize, descsPerDirection),
		rxBufs:  make([][]byte, batch),
		rxIov:   make([]unix.Iovec, batch),
		rxAddrs: make([]unix.RawSockaddrLinklayer, batch),
		rxCmsgs: make([]byte, batch*rxCmsgLen),
		rxMsgs:  make([]unix.Mmsghdr, batch),
		txDescs: make([]*desc, batch),
		txIov:   make([]unix.Iovec, batch),
		txMsgs:  make([]unix.Mmsghdr, batch),
	}
	backing := make([]byte, batch*rxBufSize)
	for i := range batch {
		d.rxBufs[i] = backing[i*rxBufSize : (i+1)*rxBufSize : (i+1)*rxBufSize]
		d.rxIov[i].Base = &d.rxBufs[i][0]
		d.rxIov[i].SetLen(rxBufSize)
		d.txMsgs[i].Hdr.Iov = &d.txIov[i]
		d.txMsgs[i].Hdr.SetIovlen(1)
	}
	return d
}

// shapeNow is the direction's current shape.
func (d *direction) shapeNow() *Shape {
	c := d.link.cfg.Load()
	if d.atob {
		return &c.AtoB
	}
	return &c.BtoA
}

func (d *direction) now() int64 { return int64(time.Since(d.link.base)) }

// receive is the receiving goroutine: batches of frames in, verdicts and
// deadlines out to the queue, one doorbell per batch. It blocks in
// recvmmsg on a thread of its own (see emulatorThread), so the kernel wakes
// it directly when frames arrive.
func (d *direction) receive() {
	defer d.link.wg.Done()
	emulatorThread()
	errCount := 0
	for !d.link.closed.Load() {
		d.resetRx()
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(d.in), uintptr(unsafe.Pointer(&d.rxMsgs[0])), uintptr(len(d.rxMsgs)), unix.MSG_WAITFORONE, 0, 0)
		switch errno {
		case 0:
		case unix.EAGAIN, unix.EINTR:
			continue // timeout: look at closed again
		default:
			// EINVAL: a frame the kernel cannot describe in a
			// virtio-net header (it is consumed); ENETDOWN: the
			// interface went down. Neither stops the link.
			d.errorDrops.Add(1)
			if errCount++; errCount%1000 == 1 {
				d.link.log.Warn("linkemu: receive error", "direction", d.name, "err", errno, "count", errCount)
			}
			if errno != unix.EINVAL {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		wall := time.Now()
		now, wallNs := int64(wall.Sub(d.link.base)), wall.UnixNano()
		s := d.shapeNow()
		if n := d.downs.Load(); n != d.rxDowns {
			d.rxDowns = n
			d.shape.restart(now)
		}
		for i := range int(n) {
			m := &d.rxMsgs[i]
			d.ingest(s, d.arrival(i, now, wallNs), d.rxBufs[i][:m.Len], m.Hdr.Flags, d.rxAddrs[i].Pkttype)
		}
		d.q.publish()
		select {
		case d.bell <- struct{}{}:
		default:
		}
	}
}

// emulatorThread locks the calling goroutine to its OS thread for good and
// raises the thread's priority (best effort: it needs CAP_SYS_NICE). The
// thread ends with the goroutine, so the raised priority never leaks into
// other goroutines.
func emulatorThread() {
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), threadNice)
}

func (d *direction) resetRx() {
	for i := range d.rxMsgs {
		m := &d.rxMsgs[i]
		m.Hdr = unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&d.rxAddrs[i])),
			Namelen: unix.SizeofSockaddrLinklayer,
			Iov:     &d.rxIov[i],
			Control: &d.rxCmsgs[i*rxCmsgLen],
		}
		m.Hdr.SetControllen(rxCmsgLen)
		m.Hdr.SetIovlen(1)
		m.Len = 0
	}
}

// rxCmsgLen holds one SCM_TIMESTAMPNS control message.
var rxCmsgLen = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

// arrival is when frame i of the batch arrived, on the link's monotonic
// clock: the kernel's receive timestamp (SO_TIMESTAMPNS, wall clock)
// converted with the wall and monotonic readings taken after the batch
// (now, wallNs). Timing each frame from when the kernel saw it, not from
// when the emulator got round to reading it, keeps a burst that waited in
// the socket buffer (the emulator was descheduled) from reaching the
// bottleneck queue as one clump.
func (d *direction) arrival(i int, now, wallNs int64) int64 {
	t := now
	m := &d.rxMsgs[i]
	if m.Hdr.Controllen >= uint64(rxCmsgLen) {
		c := d.rxCmsgs[i*rxCmsgLen : (i+1)*rxCmsgLen]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS {
			ts := (*unix.Timespec)(unsafe.Pointer(&c[unix.CmsgLen(0)]))
			// A frame older than a second means the wall clock
			// stepped: fall back to now.
			if age := wallNs - ts.Nano(); age >= 0 && age < int64(time.Second) {
				t = now - age
			}
		}
	}
	t = max(t, d.rxLast)
	d.rxLast = t
	return t
}

// ingest handles one received frame (virtio-net header first).
//
// This is the per-packet path: no allocation, no lock.
func (d *direction) ingest(s *Shape, now int64, buf []byte, flags int32, pkttype uint8) {
	switch pkttype {
	case unix.PACKET_HOST, unix.PACKET_BROADCAST, unix.PACKET_MULTICAST, unix.PACKET_OTHERHOST:
	default:
		return // our own or looped-back frames
	}
	if flags&unix.MSG_TRUNC != 0 || len(buf) < vnetHdrLen+14 {
		d.packets.Add(1)
		d.errorDrops.Add(1)
		return
	}
	h := decodeVnetHdr(buf)
	frame := buf[vnetHdrLen:]
	if h.gsoType == gsoNone || (!s.shapesPackets() && !s.Down && h.flags&vnetFlagNeedsCsum != 0) {
		// One packet, or a super-frame that only needs delaying: forward
		// it whole.
		wire, pkts := wireSize(frame), 1
		if h.gsoType != gsoNone {
			if err := d.sf.parse(h, frame); err != nil {
				d.packets.Add(1)
				d.errorDrops.Add(1)
				return
			}
			pkts = d.sf.segs
			wire = d.sf.payload + pkts*(d.sf.hdrLen-d.sf.l3)
		}
		d.packets.Add(uint64(pkts))
		d.bytes.Add(uint64(wire))
		deadline, v := d.shape.admit(s, now, wire)
		if !d.count(v, pkts) {
			return
		}
		dst, pos, ok := d.q.reserve(len(buf))
		if !ok {
			d.errorDrops.Add(uint64(pkts))
			return
		}
		copy(dst, buf)
		d.q.commit(pos, len(buf), deadline, wire, pkts)
		d.noteRate(s)
		return
	}
	if err := d.sf.parse(h, frame); err != nil {
		d.packets.Add(1)
		d.errorDrops.Add(1)
		return
	}
	for i := range d.sf.segs {
		wire := d.sf.wire(i)
		d.packets.Add(1)
		d.bytes.Add(uint64(wire))
		deadline, v := d.shape.admit(s, now, wire)
		if !d.count(v, 1) {
			continue
		}
		n := vnetHdrLen + d.sf.segLen(i)
		dst, pos, ok := d.q.reserve(n)
		if !ok {
			d.errorDrops.Add(1)
			continue
		}
		d.sf.write(i, dst)
		d.q.commit(pos, n, deadline, wire, 1)
	}
	d.noteRate(s)
}

// count counts a drop verdict and reports whether the packet goes on.
func (d *direction) count(v verdict, pkts int) bool {
	switch v {
	case dropLoss:
		d.lossDrops.Add(uint64(pkts))
	case dropQueue:
		d.queueDrops.Add(uint64(pkts))
	case dropDown:
		d.downDrops.Add(uint64(pkts))
	default:
		return true
	}
	return false
}

func (d *direction) noteRate(s *Shape) {
	d.lastDepart.Store(d.shape.lastDepart)
	d.rate.Store(floatBits(s.rate()))
}

// send is the sending goroutine: it sleeps until the earliest deadline and
// sends everything due in batches. It runs on a thread of its own and
// sleeps with nanosleep(2) (about 0.1 ms late) rather than on a Go timer
// (up to 1 ms late, and later when the runtime's own threads wait for a
// busy CPU).
func (d *direction) send() {
	defer d.link.wg.Done()
	emulatorThread()
	q := d.q
	for !d.link.closed.Load() {
		q.pull()
		if d.shapeNow().Down {
			for q.waiting() > 0 {
				e := q.pop()
				d.downDrops.Add(uint64(e.pkts))
				q.done(e)
			}
		}
		first, ok := q.earliest()
		if !ok {
			select {
			case <-d.bell:
			case <-d.link.done:
			}
			continue
		}
		if wait := time.Duration(first.deadline - d.now()); wait > 0 {
			ts := unix.NsecToTimespec(int64(min(wait, maxSleep)))
			_ = unix.Nanosleep(&ts, nil)
			continue
		}
		d.flush()
	}
}

// flush sends every due packet, up to one batch.
func (d *direction) flush() {
	q := d.q
	now := d.now()
	n := 0
	for n < batch {
		first, ok := q.earliest()
		if !ok || first.deadline > now {
			break
		}
		e := q.pop()
		if late := now - e.deadline; late > d.maxLate.Load() {
			d.maxLate.Store(late)
		}
		b := q.bytes(e)
		d.txDescs[n] = e
		d.txIov[n].Base = &b[0]
		d.txIov[n].SetLen(len(b))
		n++
	}
	for from := 0; from < n; {
		sent, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(d.out), uintptr(unsafe.Pointer(&d.txMsgs[from])), uintptr(n-from), 0, 0, 0)
		switch errno {
		case 0:
			for _, e := range d.txDescs[from : from+int(sent)] {
				d.deliveredPackets.Add(uint64(e.pkts))
				d.deliveredBytes.Add(uint64(e.wire))
				q.done(e)
			}
			from += int(sent)
		case unix.EAGAIN, unix.EINTR:
			if d.link.closed.Load() {
				return // Close drops what is left
			}
		default:
			// The first frame failed (interface down, frame too
			// large): drop it and go on with the rest.
			e := d.txDescs[from]
			d.errorDrops.Add(uint64(e.pkts))
			q.done(e)
			from++
		}
	}
}

func (d *direction) stats(now int64) DirectionStats {
	return DirectionStats{
		Packets:          d.packets.Load(),
		Bytes:            d.bytes.Load(),
		DeliveredPackets: d.deliveredPackets.Load(),
		DeliveredBytes:   d.deliveredBytes.Load(),
		LossDrops:        d.lossDrops.Load(),
		QueueDrops:       d.queueDrops.Load(),
		DownDrops:        d.downDrops.Load(),
		ErrorDrops:       d.errorDrops.Load(),
		MaxLate:          time.Duration(d.maxLate.Load()),
		QueuedBytes:      queuedBytes(d.lastDepart.Load(), now, floatFromBits(d.rate.Load())),
	}
}

// Update replaces the configuration for packets arriving from now on (Down
// also drops queued packets). An invalid configuration is logged and
// ignored; use Set to get the error.
func (l *Link) Update(cfg Config) {
	if err := l.Set(cfg); err != nil {
		l.log.Error("linkemu: ignoring invalid configuration", "err", err)
	}
}

// Set validates cfg and, if it is valid, replaces the configuration like
// Update.
func (l *Link) Set(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c := cfg.clone()
	l.setMu.Lock()
	// A direction that keeps its trace keeps its place in it; a new
	// trace starts now.
	cur, now := l.cfg.Load(), int64(time.Since(l.base))
	for i, s := range c.shapes() {
		if prev := cur.shapes()[i]; s.Trace != nil && s.Trace == prev.Trace {
			s.traceStart = prev.traceStart
		} else {
			s.traceStart = now
		}
	}
	l.cfg.Store(&c)
	l.setMu.Unlock()
	for i, d := range l.dirs {
		if (i == 0 && c.AtoB.Down) || (i == 1 && c.BtoA.Down) {
			d.downs.Add(1)
		}
		select {
		case d.bell <- struct{}{}:
		default:
		}
	}
	return nil
}

// RestartTraces makes the traces of both directions start again at at
// (which may be a little in the future: packets before it wait for the
// trace's first delivery opportunity), so that links replay their traces
// in step with a timeline that begins at at. Packets already queued keep
// their departure times. Directions without a trace are unaffected.
func (l *Link) RestartTraces(at time.Time) {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	c := l.cfg.Load().clone()
	for _, s := range c.shapes() {
		s.traceStart = int64(at.Sub(l.base))
	}
	l.cfg.Store(&c)
}

// Config returns the current configuration.
func (l *Link) Config() Config { return l.cfg.Load().clone() }

// Stats returns the counters of both directions.
func (l *Link) Stats() Stats {
	now := int64(time.Since(l.base))
	return Stats{AtoB: l.dirs[0].stats(now), BtoA: l.dirs[1].stats(now)}
}

// Close stops forwarding, drops what is queued, waits for the goroutines to
// end (at most about 50 ms) and closes the sockets. It is idempotent.
func (l *Link) Close() error {
	l.once.Do(func() {
		l.closed.Store(true)
		close(l.done)
		// The goroutines see closed within socketTimeout; closing the
		// sockets only after they ended means no call can reach a
		// reused descriptor.
		l.wg.Wait()
		var errs []error
		for i, fd := range l.fds {
			if err := unix.Close(fd); err != nil {
				errs = append(errs, fmt.Errorf("linkemu: closing socket %d: %w", i, err))
			}
		}
		l.err = errors.Join(errs...)
	})
	return l.err
}
