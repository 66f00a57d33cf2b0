// Package traffic generates and measures the lab's traffic in Go: bulk TCP
// (or MPTCP) flows with their goodput over time, retransmissions, RTT and
// acknowledged bytes read from the kernel (TCP_INFO, MPTCP_INFO), paced
// UDP streams, and the probe stream that records every packet's one-way
// delay and loss (ProbeStream, ProbeSummary, its outages). Both ends run in
// the calling process; the caller opens the sockets (in whichever network
// namespace it wants) and hands them in, so the package works the same over
// loopback and across namespaces.
package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Directions of a transfer, seen from the client (the side that dials).
const (
	// Up: the client sends, the server receives.
	Up = "up"
	// Down: the server sends, the client receives.
	Down = "down"
)

// Default sampling intervals.
const (
	// defaultInterval is the goodput interval.
	defaultInterval = 100 * time.Millisecond
	// defaultProgressInterval is how often the senders' TCP_INFO is read
	// for acknowledged bytes and retransmissions.
	defaultProgressInterval = 10 * time.Millisecond
)

// helloMagic starts every bulk connection: the client sends it first, so
// the server can tell the lab's flows from anything else that connects.
const helloMagic = 0x4d4c4246 // "MLBF"

// writeChunk is the size of each write of a sender.
const writeChunk = 128 << 10

// Bulk is one bulk transfer of Streams parallel TCP connections in one
// direction for Duration.
type Bulk struct {
	// Streams is the number of parallel connections (at least 1).
	Streams int
	// Direction is Up or Down.
	Direction string
	// Duration is how long the senders send.
	Duration time.Duration
	// Dial opens one client connection (called Streams times).
	Dial func(ctx context.Context) (net.Conn, error)
	// Listener accepts the server's side of the connections; Run does not
	// close it.
	Listener net.Listener
	// Base is the clock the result's times are relative to (seconds since
	// Base); zero means the moment the connections are established.
	Base time.Time
	// Interval is the goodput interval (default defaultInterval);
	// ProgressInterval how often the senders' kernel counters are read
	// (default defaultProgressInterval).
	Interval, ProgressInterval time.Duration
	// Grace is how long after Duration the receivers wait for data still in
	// flight before the transfer is cut off (default 4 s).
	Grace time.Duration
}

// Result is what a bulk transfer measured.
type Result struct {
	Direction string `json:"direction"`
	Streams   int    `json:"streams"`
	// StartS and Seconds place the measurement on the Base clock.
	StartS  float64 `json:"start_s"`
	Seconds float64 `json:"seconds"`
	// Bytes is the payload the receivers got; Mbps the mean goodput.
	Bytes int64   `json:"bytes"`
	Mbps  float64 `json:"mbps"`
	// Retransmits is the senders' retransmitted segments (TCP_INFO
	// tcpi_total_retrans, summed over an MPTCP connection's subflows).
	Retransmits int `json:"retransmits"`
	// RTT from the senders' smoothed RTT (TCP_INFO tcpi_rtt), mean and
	// maximum over the samples, milliseconds.
	RTTMeanMs float64 `json:"rtt_mean_ms"`
	RTTMaxMs  float64 `json:"rtt_max_ms"`
	// MultipathTCP is true when every connection negotiated MPTCP;
	// Subflows is the most subflows one of them had at once.
	MultipathTCP bool `json:"multipath_tcp,omitempty"`
	Subflows     int  `json:"subflows,omitempty"`
	// SlowStartEnd is when the first stream's sender left slow start, nil
	// when it never did or the connection is MPTCP.
	SlowStartEnd *SlowStartEnd `json:"slow_start_end,omitempty"`
	// FirstRetransmits are the first maxRetransmitEvents readings at which
	// the first stream's sender had retransmitted more than at the reading
	// before, with its window then: when a flow lost what, and how its
	// congestion control answered.
	FirstRetransmits []RetransmitEvent `json:"first_retransmits,omitempty"`
	// Intervals is the goodput per Interval.
	Intervals []Interval `json:"intervals"`
	// Progress holds the senders' acknowledged bytes and retransmissions
	// every ProgressInterval (not in JSON: Stall reads it).
	Progress []Progress `json:"-"`
	// Incomplete is set when the transfer did not end normally (a
	// connection failed, or data was still missing at the end of Grace).
	Incomplete string `json:"incomplete,omitempty"`
}

// Interval is the goodput over the interval that ends at T.
type Interval struct {
	T    float64 `json:"t"`
	Mbps float64 `json:"mbps"`
}

// SlowStartEnd is a sender's state at the first reading with a slow-start
// threshold set (TCP_INFO tcpi_snd_ssthresh below "infinite"). With no
// retransmission by then, slow start was ended by the congestion
// control's own exit (CUBIC's HyStart: the round trip grew, or the
// acknowledgements' train spread), not by a loss.
type SlowStartEnd struct {
	T           float64 `json:"t"`
	Ssthresh    uint32  `json:"ssthresh_segments"`
	Cwnd        uint32  `json:"cwnd_segments"`
	RTTMs       float64 `json:"rtt_ms"`
	MinRTTMs    float64 `json:"min_rtt_ms"`
	Retransmits uint32  `json:"retransmits"`
}

// RetransmitEvent is a reading of a sender whose retransmissions grew.
type RetransmitEvent struct {
	T           float64 `json:"t"`
	Retransmits uint32  `json:"retransmits"`
	Cwnd        uint32  `json:"cwnd_segments"`
	Ssthresh    uint32  `json:"ssthresh_segments"`
	// SpuriousRetransmits (the receiver's D-SACKs) and ReorderingsSeen
	// so far: a loss inferred from reordering, not a lost packet.
	SpuriousRetransmits uint32 `json:"spurious_retransmits"`
	ReorderingsSeen     uint32 `json:"reorderings_seen"`
}

// maxRetransmitEvents bounds Result.FirstRetransmits.
const maxRetransmitEvents = 16

// infiniteSsthresh is TCP_INFO's slow-start threshold before the first
// congestion event (TCP_INFINITE_SSTHRESH).
const infiniteSsthresh = 0x7fffffff

// Progress is the senders' state at T: bytes acknowledged by the receivers
// and segments retransmitted so far, summed over the streams.
type Progress struct {
	T           float64
	Acked       uint64
	Retransmits uint32
}

// Run connects the streams, transfers for Duration and returns the
// measurement. A transfer that starts but is cut off (a broken tunnel)
// returns its partial result with Incomplete set and a nil error; the error
// is for transfers that could not start.
func (b *Bulk) Run(ctx context.Context) (*Result, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	interval, progressEvery, grace := b.Interval, b.ProgressInterval, b.Grace
	if interval <= 0 {
		interval = defaultInterval
	}
	if progressEvery <= 0 {
		progressEvery = defaultProgressInterval
	}
	if grace <= 0 {
		grace = 4 * time.Second
	}
	clients, servers, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range append(clients, servers...) {
			c.Close()
		}
	}()
	senders, receivers := clients, servers
	if b.Direction == Down {
		senders, receivers = servers, clients
	}
	start := time.Now()
	base := b.Base
	if base.IsZero() {
		base = start
	}
	since := func(t time.Time) float64 { return t.Sub(base).Seconds() }
	end := start.Add(b.Duration)
	res := &Result{Direction: b.Direction, Streams: b.Streams, StartS: since(start), MultipathTCP: true}
	infos := make([]*senderInfo, len(senders))
	for i, c := range senders {
		infos[i] = newSenderInfo(c)
		res.MultipathTCP = res.MultipathTCP && infos[i].mptcp
	}

	var received atomic.Int64
	var failures sync.Map
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A cancelled run unblocks every read and write at once.
	stop := context.AfterFunc(runCtx, func() {
		for _, c := range append(clients, servers...) {
			c.SetDeadline(time.Now())
		}
	})
	defer stop()
	for i, c := range senders {
		wg.Go(func() {
			if err := send(c, end); err != nil {
				failures.Store(i, fmt.Sprintf("stream %d: send: %v", i, err))
			}
		})
	}
	readersDone := make(chan struct{})
	var readers sync.WaitGroup
	for i, c := range receivers {
		readers.Go(func() {
			c.SetReadDeadline(end.Add(grace))
			if err := receive(c, &received); err != nil {
				failures.Store(len(senders)+i, fmt.Sprintf("stream %d: receive: %v", i, err))
			}
		})
	}
	go func() { readers.Wait(); close(readersDone) }()

	// The sampler runs until the receivers are done.
	var lastBytes int64
	nextInterval := start.Add(interval)
	var rttSum float64
	var rttSamples int
	var firstRetransmits uint32
	ticker := time.NewTicker(progressEvery)
	defer ticker.Stop()
	sample := func(now time.Time) {
		p := Progress{T: since(now)}
		for _, in := range infos {
			st := in.read()
			p.Acked += st.acked
			p.Retransmits += st.retransmits
			if st.rttUs > 0 {
				rttSum += float64(st.rttUs) / 1000
				rttSamples++
				res.RTTMaxMs = max(res.RTTMaxMs, float64(st.rttUs)/1000)
			}
			res.Subflows = max(res.Subflows, st.subflows)
		}
		first := infos[0].last
		if first.retransmits > firstRetransmits && len(res.FirstRetransmits) < maxRetransmitEvents {
			res.FirstRetransmits = append(res.FirstRetransmits, RetransmitEvent{T: round(p.T, 3),
				Retransmits: first.retransmits, Cwnd: first.cwnd, Ssthresh: min(first.ssthresh, infiniteSsthresh),
				SpuriousRetransmits: first.dsackDups, ReorderingsSeen: first.reordSeen})
		}
		firstRetransmits = first.retransmits
		if res.SlowStartEnd == nil && first.ssthresh != 0 && first.ssthresh < infiniteSsthresh {
			res.SlowStartEnd = &SlowStartEnd{T: round(p.T, 3), Ssthresh: first.ssthresh, Cwnd: first.cwnd,
				RTTMs: round(float64(first.rttUs)/1000, 2), MinRTTMs: round(float64(first.minRTTUs)/1000, 2),
				Retransmits: first.retransmits}
		}
		res.Progress = append(res.Progress, p)
		for !now.Before(nextInterval) {
			got := received.Load()
			res.Intervals = append(res.Intervals, Interval{T: round(since(nextInterval), 3),
				Mbps: round(float64(got-lastBytes)*8/interval.Seconds()/1e6, 3)})
			lastBytes = got
			nextInterval = nextInterval.Add(interval)
		}
	}
	sample(start)
loop:
	for {
		select {
		case <-readersDone:
			break loop
		case now := <-ticker.C:
			sample(now)
		}
	}
	finished := time.Now()
	wg.Wait()
	sample(time.Now())

	res.Bytes = received.Load()
	// The receivers drain what was in flight when the senders stopped:
	// that data belongs to the measured time.
	measured := min(finished.Sub(start), end.Sub(start))
	res.Seconds = round(measured.Seconds(), 3)
	if measured > 0 {
		res.Mbps = round(float64(res.Bytes)*8/measured.Seconds()/1e6, 3)
	}
	last := res.Progress[len(res.Progress)-1]
	res.Retransmits = int(last.Retransmits)
	if rttSamples > 0 {
		res.RTTMeanMs = round(rttSum/float64(rttSamples), 2)
	}
	res.RTTMaxMs = round(res.RTTMaxMs, 2)
	if res.Subflows == 0 {
		res.MultipathTCP = false
	}
	var problems []string
	failures.Range(func(_, v any) bool { problems = append(problems, v.(string)); return true })
	if len(problems) > 0 {
		res.Incomplete = problems[0]
		if len(problems) > 1 {
			res.Incomplete += fmt.Sprintf(" (and %d more)", len(problems)-1)
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

func (b *Bulk) check() error {
	switch {
	case b.Streams < 1:
		return fmt.Errorf("bulk transfer: %d streams, want at least 1", b.Streams)
	case b.Direction != Up && b.Direction != Down:
		return fmt.Errorf("bulk transfer: direction %q is not %q or %q", b.Direction, Up, Down)
	case b.Duration <= 0:
		return fmt.Errorf("bulk transfer: duration %v is not positive", b.Duration)
	case b.Dial == nil || b.Listener == nil:
		return errors.New("bulk transfer: needs a Dial function and a Listener")
	}
	return nil
}

// connectTimeout bounds establishing the connections.
const connectTimeout = 5 * time.Second

// connect dials the streams and accepts them; every accepted connection
// must start with the hello.
func (b *Bulk) connect(ctx context.Context) (clients, servers []net.Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	type accepted struct {
		conn net.Conn
		err  error
	}
	acceptc := make(chan accepted, b.Streams)
	deadline, _ := ctx.Deadline()
	setDeadline(b.Listener, deadline)
	defer setDeadline(b.Listener, time.Time{})
	go func() {
		defer close(acceptc)
		for range b.Streams {
			if ctx.Err() != nil {
				acceptc <- accepted{nil, ctx.Err()}
				return
			}
			c, err := acceptHello(b.Listener)
			acceptc <- accepted{c, err}
			if err != nil {
				return
			}
		}
	}()
	// fail closes everything and waits for the acceptor, which a listener
	// deadline in the past ends.
	fail := func(err error) ([]net.Conn, []net.Conn, error) {
		cancel()
		setDeadline(b.Listener, time.Now())
		for a := range acceptc {
			if a.conn != nil {
				a.conn.Close()
			}
		}
		for _, c := range append(clients, servers...) {
			c.Close()
		}
		return nil, nil, err
	}
	var hello [4]byte
	binary.BigEndian.PutUint32(hello[:], helloMagic)
	for i := range b.Streams {
		c, err := b.Dial(ctx)
		if err != nil {
			return fail(fmt.Errorf("bulk transfer: connect stream %d: %w", i, err))
		}
		clients = append(clients, c)
		c.SetWriteDeadline(time.Now().Add(connectTimeout))
		if _, err := c.Write(hello[:]); err != nil {
			return fail(fmt.Errorf("bulk transfer: stream %d: send the hello: %w", i, err))
		}
		c.SetWriteDeadline(time.Time{})
	}
	for range b.Streams {
		a, ok := <-acceptc
		if !ok || a.err != nil {
			return fail(fmt.Errorf("bulk transfer: accept: %w", a.err))
		}
		servers = append(servers, a.conn)
	}
	return clients, servers, nil
}

// setDeadline sets a listener's accept deadline when it has one.
func setDeadline(ln net.Listener, t time.Time) {
	if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		dl.SetDeadline(t)
	}
}

// acceptHello accepts one connection that starts with the hello, closing
// any other.
func acceptHello(ln net.Listener) (net.Conn, error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		var hello [4]byte
		c.SetReadDeadline(time.Now().Add(connectTimeout))
		if _, err := io.ReadFull(c, hello[:]); err != nil || binary.BigEndian.Uint32(hello[:]) != helloMagic {
			c.Close()
			continue
		}
		c.SetReadDeadline(time.Time{})
		return c, nil
	}
}

// send writes until end, then closes its side of the connection.
func send(c net.Conn, end time.Time) error {
	buf := make([]byte, writeChunk)
	c.SetWriteDeadline(end)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return err
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		return cw.CloseWrite()
	}
	return nil
}

// receive reads until the sender closes, counting the bytes.
func receive(c net.Conn, counter *atomic.Int64) error {
	buf := make([]byte, writeChunk)
	for {
		n, err := c.Read(buf)
		counter.Add(int64(n))
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func round(v float64, decimals int) float64 {
	scale := 1.0
	for range decimals {
		scale *= 10
	}
	if v < 0 {
		return -float64(int64(-v*scale+0.5)) / scale
	}
	return float64(int64(v*scale+0.5)) / scale
}
