package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"
)

// The probe stream: UDP packets sent at a fixed interval from the client
// namespace through the tunnel to the protected network, each carrying its
// sequence number and send time. Both ends run in this process (the
// namespaces share its clock), so every packet's one-way delay is exact and
// every missing sequence number is a loss.
//
// Wire format, big endian: magic "MLPB" (4) | sequence (8) | send time in
// nanoseconds since the stream's start (8) | padding up to the size.
const (
	probeMagic     = 0x4d4c5042 // "MLPB"
	ProbeHeaderLen = 20
	ProbePort      = 9191
)

// encodeProbe writes a probe header into b, which must hold ProbeHeaderLen
// bytes.
func encodeProbe(b []byte, seq uint64, sentNs int64) {
	binary.BigEndian.PutUint32(b[0:4], probeMagic)
	binary.BigEndian.PutUint64(b[4:12], seq)
	binary.BigEndian.PutUint64(b[12:20], uint64(sentNs))
}

// parseProbe reads a probe header; ok is false for anything else (a short
// packet, another magic, a negative send time).
func parseProbe(b []byte) (seq uint64, sentNs int64, ok bool) {
	if len(b) < ProbeHeaderLen || binary.BigEndian.Uint32(b[0:4]) != probeMagic {
		return 0, 0, false
	}
	seq = binary.BigEndian.Uint64(b[4:12])
	sentNs = int64(binary.BigEndian.Uint64(b[12:20]))
	if sentNs < 0 {
		return 0, 0, false
	}
	return seq, sentNs, true
}

// probeRecord holds what one probe stream saw: per sequence number, the
// send and receive times in nanoseconds since the stream's start (-1: not
// sent / not received).
type probeRecord struct {
	interval time.Duration
	sent     []int64
	received []int64
	// duplicates and foreign count packets received twice and packets that
	// are not this stream's probes (wrong magic, unknown sequence).
	duplicates, foreign int
	sendErrors          int
}

func newProbeRecord(n int, interval time.Duration) *probeRecord {
	r := &probeRecord{interval: interval, sent: make([]int64, n), received: make([]int64, n)}
	for i := range r.sent {
		r.sent[i], r.received[i] = -1, -1
	}
	return r
}

// record notes the arrival of a probe at recvNs. It does not allocate: it
// runs once per received packet.
func (r *probeRecord) record(b []byte, recvNs int64) {
	seq, _, ok := parseProbe(b)
	if !ok || seq >= uint64(len(r.received)) {
		r.foreign++
		return
	}
	if r.received[seq] >= 0 {
		r.duplicates++
		return
	}
	r.received[seq] = recvNs
}

// SummarizeProbes summarizes a probe stream recorded elsewhere: per
// sequence number, the send and receive times in nanoseconds since the
// stream's start (-1: not sent / not received), one probe every interval.
func SummarizeProbes(interval time.Duration, sent, received []int64) ProbeSummary {
	return (&probeRecord{interval: interval, sent: sent, received: received}).summarize()
}

// ProbeStream sends a probe stream from one socket and receives it on
// another; the caller opens both (in whichever namespaces it measures
// between).
type ProbeStream struct {
	// To is where the probes go: the receiver's address as the sender
	// reaches it.
	To netip.AddrPort
	// Start is the first probe's time after the base time given to Run.
	Start    time.Duration
	Interval time.Duration
	// Size is each probe's size in bytes, at least ProbeHeaderLen.
	Size  int
	Count int

	rec *probeRecord
}

// Run sends Count probes from tx at the interval, starting at base+Start,
// and receives them on rx until all were sent plus a grace period for the
// last ones in flight (or ctx ends). The record's times are relative to
// base, the scenario's start. The caller closes the sockets.
func (p *ProbeStream) Run(ctx context.Context, tx, rx *net.UDPConn, base time.Time) error {
	p.rec = newProbeRecord(p.Count, p.Interval)
	var wg sync.WaitGroup
	wg.Go(func() { p.receive(rx, base) })
	sendErr := p.send(ctx, tx, base)
	// Probes still in flight (queues, delay) get a moment to arrive.
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	rx.SetReadDeadline(time.Now())
	wg.Wait()
	return sendErr
}

// send paces the probes by the clock (not by a ticker), so that a late
// wake-up does not shift every later probe.
func (p *ProbeStream) send(ctx context.Context, tx *net.UDPConn, base time.Time) error {
	buf := make([]byte, p.Size)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for seq := range p.Count {
		due := base.Add(p.Start + time.Duration(seq)*p.Interval)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		// The probe's time is when it was due: a sender held up by a full
		// socket buffer delays the application's data too, and that delay
		// belongs in the one-way delay. A probe that cannot leave before
		// the next one is due is lost (a fixed-rate stream does not queue).
		dueNs := due.Sub(base).Nanoseconds()
		encodeProbe(buf, uint64(seq), dueNs)
		p.rec.sent[seq] = dueNs
		// The deadline leaves a few milliseconds of slack: a sender
		// goroutine woken late on a busy machine is not the tunnel's loss.
		tx.SetWriteDeadline(due.Add(max(p.Interval, 5*time.Millisecond)))
		if _, err := tx.WriteToUDPAddrPort(buf, p.To); err != nil {
			// No route while the tunnel reconnects, for example: the probe
			// counts as sent and lost.
			p.rec.sendErrors++
		}
	}
	return nil
}

func (p *ProbeStream) receive(rx *net.UDPConn, base time.Time) {
	buf := make([]byte, 2048)
	for {
		n, err := rx.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.rec.record(buf[:n], time.Since(base).Nanoseconds())
	}
}

// Summary is what the stream measured; false before Run.
func (p *ProbeStream) Summary() (ProbeSummary, bool) {
	if p.rec == nil {
		return ProbeSummary{}, false
	}
	return p.rec.summarize(), true
}

// ProbeSummary is what a probe stream measured.
type ProbeSummary struct {
	IntervalMs  float64 `json:"interval_ms"`
	Sent        int     `json:"sent"`
	Received    int     `json:"received"`
	Lost        int     `json:"lost"`
	LossPercent float64 `json:"loss_percent"`
	Duplicates  int     `json:"duplicates"`
	SendErrors  int     `json:"send_errors"`
	// One-way delay of the received probes, milliseconds.
	DelayMinMs float64 `json:"delay_min_ms"`
	DelayP50Ms float64 `json:"delay_p50_ms"`
	DelayP95Ms float64 `json:"delay_p95_ms"`
	DelayP99Ms float64 `json:"delay_p99_ms"`
	DelayMaxMs float64 `json:"delay_max_ms"`
	// Outages are the runs of consecutive lost probes longer than
	// outageMinProbes: from the first lost probe's send time to the next
	// delivered one's (or the end of the stream).
	Outages []Outage `json:"outages"`
}

// Outage is a stretch of time in which no probe got through.
type Outage struct {
	StartS    float64 `json:"start_s"`
	EndS      float64 `json:"end_s"`
	Seconds   float64 `json:"seconds"`
	Lost      int     `json:"lost"`
	Recovered bool    `json:"recovered"`
}

// outageMinProbes: shorter runs of losses are loss, not an interruption.
const outageMinProbes = 3

// summarize computes the summary of a finished stream.
func (r *probeRecord) summarize() ProbeSummary {
	s := ProbeSummary{IntervalMs: float64(r.interval) / 1e6, Duplicates: r.duplicates, SendErrors: r.sendErrors}
	var delays []float64
	runStart := -1
	lastSent := int64(0)
	closeRun := func(end int, recovered bool, endNs int64) {
		if runStart >= 0 && end-runStart >= outageMinProbes {
			start := r.sent[runStart]
			s.Outages = append(s.Outages, Outage{
				StartS: round(float64(start)/1e9, 3), EndS: round(float64(endNs)/1e9, 3),
				Seconds: round(float64(endNs-start)/1e9, 3), Lost: end - runStart, Recovered: recovered,
			})
		}
		runStart = -1
	}
	for i, sent := range r.sent {
		if sent < 0 {
			continue // never sent: the run was cut short
		}
		s.Sent++
		lastSent = sent
		if recv := r.received[i]; recv >= 0 {
			s.Received++
			delays = append(delays, float64(recv-sent)/1e6)
			closeRun(i, true, sent)
			continue
		}
		if runStart < 0 {
			runStart = i
		}
	}
	closeRun(len(r.sent), false, lastSent+int64(r.interval))
	s.Lost = s.Sent - s.Received
	if s.Sent > 0 {
		s.LossPercent = round(100*float64(s.Lost)/float64(s.Sent), 2)
	}
	if len(delays) > 0 {
		slices.Sort(delays)
		s.DelayMinMs = round(delays[0], 2)
		s.DelayP50Ms = round(percentile(delays, 50), 2)
		s.DelayP95Ms = round(percentile(delays, 95), 2)
		s.DelayP99Ms = round(percentile(delays, 99), 2)
		s.DelayMaxMs = round(delays[len(delays)-1], 2)
	}
	return s
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// OutageAt returns the outage that a failure at time t (seconds) caused:
// the longest one that is still going on at t or starts within a second
// after it (packets in flight when the link failed are lost too, and a
// failure may show a little after the event), but began no more than half
// a second before it.
func (s ProbeSummary) OutageAt(t float64) (Outage, bool) {
	var best Outage
	found := false
	for _, o := range s.Outages {
		if o.EndS > t && o.StartS >= t-0.5 && o.StartS <= t+1 && (!found || o.Seconds > best.Seconds) {
			best, found = o, true
		}
	}
	return best, found
}
