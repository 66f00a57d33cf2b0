// Package linkemu is the lab's userspace link emulator: it owns the shaping
// of one emulated link between two veth interfaces of a middle network
// namespace (rate or recorded capacity trace, tail-drop queue, delay,
// jitter, random and bursty loss, link down) and the forwarding of every
// frame between them.
//
// # How it works
//
// Start opens one AF_PACKET socket per interface inside the middle namespace
// (on a locked OS thread that joined the namespace and left it again; the
// sockets stay in that namespace). Each direction has a receiving goroutine
// and a sending goroutine:
//
//   - the receiver reads batches of frames with recvmmsg, decides per packet
//     whether it is lost (independent loss, then Gilbert–Elliott) or
//     tail-dropped, gives it a delivery deadline and copies it into a byte
//     arena of the direction; a fixed ring of descriptors hands it over;
//   - the sender keeps the descriptors in a heap ordered by deadline, sleeps
//     until the earliest one and sends everything due with sendmmsg.
//
// Nothing on this path allocates, takes a lock or does a channel operation
// per packet: one doorbell per received batch wakes an idle sender.
//
// The rate is a virtual clock: a packet of n bytes leaves the bottleneck
// n*8/Rate after the previous one left (or after it arrived, when the link
// was idle), and arrives Delay (+ jitter) after it left. The bottleneck
// queue is the time between now and the last departure, converted to bytes
// at Rate; a packet that would make it exceed the limit is tail-dropped. Rate
// and all byte counters count IP packets including their IP header, without
// the Ethernet header (the "wire size" of the IP packet). Loss is decided
// when a packet arrives (as netem does), so a lost packet uses no capacity.
//
// # Traces
//
// A Shape with a Trace replays a recorded capacity instead of a Rate, with
// the semantics of mahimahi's link: the trace lists delivery opportunities
// of TraceOpportunityBytes (whole milliseconds, repeating with the last
// one's time as the period); each sends up to that many bytes of the queue
// in order, a packet leaves with the opportunity that carries its last
// byte, and bytes of an opportunity that finds the queue empty are lost.
// Because the schedule is known in advance, the receiver computes each
// packet's departure when it arrives, like the virtual clock of a Rate: a
// cursor (the next opportunity with bytes left and how many are used) and
// a binary search for the first opportunity at or after the arrival. The
// backlog for the tail-drop limit is the bytes already given to
// opportunities from now on. A trace starts when the link gets it (Start,
// or Set with a different trace) and RestartTraces moves the start.
//
// # Super-frames (GSO/GRO)
//
// veth passes TCP and UDP segmentation-offload super-frames of up to 64 KiB
// between namespaces. The sockets use PACKET_VNET_HDR, so each frame comes
// with its virtio-net header (GSO type and segment size, checksum offsets).
// When the direction shapes packets (Rate, Loss, Burst or Jitter set), the
// receiver cuts super-frames into wire-size packets in software, exactly as
// the kernel's GSO would, and each one is counted, dropped, queued and timed
// on its own. When the direction only delays (or does nothing), super-frames
// are forwarded whole, which keeps the emulator far from being the
// bottleneck. Segments leave with a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM),
// so the kernel or the receiving namespace completes or trusts it as it does
// for any local veth traffic. This leaves the offload settings of the end
// namespaces alone: the lab measures peers with the offloads they would have.
// Measured on the 2-core lab machine (iperf3, one TCP flow, 3 s, other work
// running): plain veth 7.7 Gbit/s; through the emulator 4.3–5.8 Gbit/s with
// super-frames forwarded whole and 2.0–2.8 Gbit/s cut into packets. The
// alternative, TSO/GSO/GRO turned off on the end veths, gave 2.1 and
// 2.0 Gbit/s and changes what the endpoints do. Frames larger than 64 KiB
// (BIG TCP) and GSO types a virtio-net header cannot describe (tunnels) are
// counted in ErrorDrops.
//
// # Timing
//
// Each goroutine of a direction is locked to an OS thread of its own with
// a raised priority (nice -15 when allowed) and blocks in the kernel:
// recvmmsg(2) wakes the receiver as soon as a frame arrives, and the sender
// sleeps with nanosleep(2) (about 0.1 ms late here) rather than on a Go
// timer (up to 1 ms late). A packet's arrival time is the kernel's receive
// timestamp (SO_TIMESTAMPNS), so a burst that waited in the socket buffer
// while the receiver was descheduled still reaches the bottleneck spread
// out as it arrived. Deadlines are never met early; Stats reports the
// largest lateness seen (MaxLate). A process running links should call
// PrioritizeProcess: the emulator's threads need one of the Go runtime's Ps
// after every system call, and on a loaded machine a P held by a starved
// thread of the same process delayed packets by tens of milliseconds.
//
// # Run-time changes
//
// The configuration is an atomic pointer: Update and Set take effect for the
// next packet that arrives; Down also drops what is queued. Update ignores an
// invalid configuration (and logs it); Set returns the validation error.
//
// Frames of every protocol (ARP and IPv6 neighbour discovery included) pass;
// the emulator itself needs no addresses and the middle namespace does no
// routing.
package linkemu

import (
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Shape is how one direction of a link treats packets. The zero Shape passes everything at once, unlimited.
type Shape struct {
	Rate       float64         // bits per second of IP packets (IP header included, Ethernet header not); 0 = unlimited
	QueueBytes int             // tail-drop limit of the bottleneck queue in bytes; 0 = default (see DefaultQueueTime)
	QueueTime  time.Duration   // alternative limit: the queue holds at most this much time at Rate (bufferbloat); used when QueueBytes == 0 and > 0
	Delay      time.Duration   // fixed one-way propagation delay
	Jitter     time.Duration   // uniform extra delay in [0, Jitter); packets are not reordered unless Reorder is true
	Reorder    bool            // let jitter reorder packets
	Loss       float64         // independent random loss probability 0..1
	Burst      *GilbertElliott // optional bursty loss, applied in addition to Loss
	Down       bool            // drop everything
	// Trace replaces Rate with a recorded capacity (see Trace): delivery
	// opportunities of TraceOpportunityBytes each, replayed from the
	// moment the link got this trace (Start, or a Set with a different
	// trace; RestartTraces moves it). QueueTime is then time at the
	// trace's mean rate.
	Trace *Trace

	// traceStart is when Trace began, on the link's clock; Link keeps it.
	traceStart int64
}

// GilbertElliott is a two-state bursty loss model evaluated per packet: a
// packet is lost with the loss probability of the current state, then the
// state changes with probability P (good to bad) or R (bad to good). With
// LossGood 0 and LossBad 1 loss bursts last 1/R packets on average and the
// long-run loss rate is P/(P+R).
type GilbertElliott struct {
	P        float64 // probability good -> bad per packet
	R        float64 // probability bad -> good per packet
	LossGood float64 // loss probability in the good state (usually 0)
	LossBad  float64 // loss probability in the bad state (e.g. 1)
}

// Config is both directions of a link: AtoB is what enters on interface A and leaves on B.
type Config struct{ AtoB, BtoA Shape }

// DefaultQueueTime sizes the bottleneck queue when a Shape with a Rate sets
// neither QueueBytes nor QueueTime: the queue holds this much time at Rate,
// but at least MinQueueBytes.
const DefaultQueueTime = 100 * time.Millisecond

// MinQueueBytes is the smallest default queue (about 43 full-size packets),
// so that slow links still absorb a burst.
const MinQueueBytes = 64 << 10

// MaxDelay bounds Delay + Jitter.
const MaxDelay = time.Minute

// Validate reports the first invalid field of either direction.
func (c Config) Validate() error {
	if err := c.AtoB.Validate(); err != nil {
		return fmt.Errorf("linkemu: AtoB: %w", err)
	}
	if err := c.BtoA.Validate(); err != nil {
		return fmt.Errorf("linkemu: BtoA: %w", err)
	}
	return nil
}

// Validate reports the first invalid field of s.
func (s Shape) Validate() error {
	switch {
	case math.IsNaN(s.Rate) || math.IsInf(s.Rate, 0) || s.Rate < 0:
		return fmt.Errorf("rate %v bit/s: want a finite number >= 0", s.Rate)
	case s.Rate > 0 && s.Rate < 1000:
		return fmt.Errorf("rate %v bit/s: want 0 (unlimited) or at least 1000", s.Rate)
	case s.Rate > 0 && s.Trace != nil:
		return fmt.Errorf("rate %v bit/s and trace %s: give one, the trace replaces the rate", s.Rate, s.Trace.Name())
	case s.QueueBytes < 0:
		return fmt.Errorf("queue %d bytes: want >= 0", s.QueueBytes)
	case s.QueueTime < 0:
		return fmt.Errorf("queue time %v: want >= 0", s.QueueTime)
	case s.Delay < 0:
		return fmt.Errorf("delay %v: want >= 0", s.Delay)
	case s.Jitter < 0:
		return fmt.Errorf("jitter %v: want >= 0", s.Jitter)
	case s.Delay > MaxDelay || s.Jitter > MaxDelay || s.Delay+s.Jitter > MaxDelay:
		return fmt.Errorf("delay %v + jitter %v: want at most %v", s.Delay, s.Jitter, MaxDelay)
	}
	if s.Trace != nil {
		if err := s.Trace.validate(); err != nil {
			return err
		}
	}
	if err := checkProbability("loss", s.Loss); err != nil {
		return err
	}
	if b := s.Burst; b != nil {
		for _, p := range []struct {
			name string
			v    float64
		}{{"burst P", b.P}, {"burst R", b.R}, {"burst LossGood", b.LossGood}, {"burst LossBad", b.LossBad}} {
			if err := checkProbability(p.name, p.v); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkProbability(name string, p float64) error {
	if math.IsNaN(p) || p < 0 || p > 1 {
		return fmt.Errorf("%s %v: want a probability in [0, 1]", name, p)
	}
	return nil
}

// rate is the bottleneck's rate in bit/s: Rate, or the trace's mean.
func (s *Shape) rate() float64 {
	if s.Trace != nil {
		return s.Trace.MeanRate()
	}
	return s.Rate
}

// queueLimit is the tail-drop limit in bytes for a shape with a Rate or a
// Trace.
func (s *Shape) queueLimit() float64 {
	if s.QueueBytes > 0 {
		return float64(s.QueueBytes)
	}
	t := s.QueueTime
	if t <= 0 {
		t = DefaultQueueTime
	}
	limit := s.rate() / 8 * t.Seconds()
	if s.QueueTime <= 0 && limit < MinQueueBytes {
		limit = MinQueueBytes
	}
	return limit
}

// shapesPackets reports whether the shape treats packets one by one, so
// that super-frames must be cut into wire-size packets first.
func (s *Shape) shapesPackets() bool {
	return s.Rate > 0 || s.Trace != nil || s.Loss > 0 || s.Burst != nil || s.Jitter > 0
}

// shapes is both directions, AtoB first.
func (c *Config) shapes() [2]*Shape { return [2]*Shape{&c.AtoB, &c.BtoA} }

// clone returns a copy of c that shares no mutable memory with it (a
// Trace is immutable and shared).
func (c Config) clone() Config {
	for _, s := range []*Shape{&c.AtoB, &c.BtoA} {
		if s.Burst != nil {
			b := *s.Burst
			s.Burst = &b
		}
	}
	return c
}

// DirectionStats counts one direction (monotonic counters, safe to read concurrently).
type DirectionStats struct {
	Packets, Bytes                   uint64 // entered (wire-size packets; a super-frame counts as its segments)
	DeliveredPackets, DeliveredBytes uint64
	LossDrops, QueueDrops, DownDrops uint64
	// ErrorDrops counts frames that could not be forwarded: truncated or
	// malformed super-frames, a full emulator buffer, send errors.
	ErrorDrops uint64
	// MaxLate is the longest a packet has waited beyond its deadline
	// before it was handed to the kernel: how well the emulator kept up.
	MaxLate     time.Duration
	QueuedBytes int64 // now: bytes waiting for the bottleneck (not yet serialised at Rate; with a Trace, estimated at its mean rate)
}

// Stats is both directions of a link.
type Stats struct{ AtoB, BtoA DirectionStats }

// Option changes how Start builds a Link.
type Option func(*options)

type options struct {
	seed      uint64
	seeded    bool
	logger    *slog.Logger
	arenaSize int
}

// DefaultBufferSize is the default memory per direction for packets in
// flight (queued or delayed): 32 MiB hold 268 ms at 1 Gbit/s.
const DefaultBufferSize = 32 << 20

// WithSeed makes the loss and jitter decisions reproducible.
func WithSeed(seed uint64) Option {
	return func(o *options) { o.seed, o.seeded = seed, true }
}

// WithLogger sets where the link reports ignored configurations and socket
// errors (default: slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithBufferSize sets the memory per direction for packets in flight. A
// packet that finds it full is counted in ErrorDrops.
func WithBufferSize(bytes int) Option {
	return func(o *options) { o.arenaSize = bytes }
}
