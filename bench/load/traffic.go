package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/dataplane"
)

// Traffic through a fleet measures what a gateway carries for many clients
// at once: each traffic client keeps a few ICMP echo requests of a given
// size in flight through its tunnel to ClientsConfig.Target and sends the
// next one as each reply comes back (a closed loop: the fleet never
// offers more than the gateway returns, so the clients, which compute on
// the same host, do not starve the gateway of CPU with traffic it would
// drop). The gateway opens each request, writes it to its TUN device,
// reads the kernel's reply from it and seals that: the replies a fleet
// receives are what the gateway carried each way. The same total number
// of requests is in flight with one client or with thousands, so that a
// comparison between the two measures the gateway, not the window.

// trafficMarker begins the ICMP data of a traffic echo, telling its reply
// from the replies to the fleet's liveness echoes.
const trafficMarker = "mifsec traffic.."

// TrafficConfig describes one traffic phase of a fleet.
type TrafficConfig struct {
	// Clients is how many clients send: the first that many of those that
	// passed their echo (0: all of them).
	Clients  int
	Duration time.Duration
	// Size is the length of each inner IPv4 packet (IP header included),
	// 64 to 1500 (0: 1400); it must fit the gateway's TUN MTU, or the
	// replies come back fragmented and are not counted.
	Size int
	// Window is how many requests are in flight over all the traffic
	// clients together (0: 256), at least one per client.
	Window int
	// Timeout is how long a client waits for any reply before it counts
	// what it has in flight as lost and sends a new window (0: 100 ms).
	Timeout time.Duration
}

// TrafficReport is what a traffic phase carried.
type TrafficReport struct {
	Clients  int
	Size     int
	Window   int // requests in flight per client
	Duration time.Duration
	// Sent and Received count echo requests and replies; Lost those given
	// up on after Timeout (a reply that comes later is still received).
	Sent, Received, Lost uint64
	// MbitPerSecond is the inner bits of the replies per second: what the
	// gateway carried each way.
	MbitPerSecond float64
	// PacketsPerSecond is the replies per second.
	PacketsPerSecond float64
	// ClientMin and ClientMax are the fewest and most replies one client
	// received; Fairness is Jain's index over the clients' replies (1:
	// all equal, 1/Clients: one client got everything).
	ClientMin, ClientMax uint64
	Fairness             float64
	// Silent counts the traffic clients that received no reply at all.
	Silent int
}

func (r TrafficReport) String() string {
	return fmt.Sprintf("traffic, %d clients, %d-byte packets, %d in flight each, %v: %.1f Mbit/s each way (%.0f replies/s), %d sent, %d received, %d lost; per client %d–%d replies, fairness %.3f, %d silent",
		r.Clients, r.Size, r.Window, r.Duration.Round(time.Millisecond), r.MbitPerSecond, r.PacketsPerSecond,
		r.Sent, r.Received, r.Lost, r.ClientMin, r.ClientMax, r.Fairness, r.Silent)
}

// trafficCounters are one client's counters of the phase under way.
type trafficCounters struct {
	received atomic.Uint64
	wake     chan struct{} // a reply came back
}

// Normalize fills in the defaults and refuses what cannot run.
func (t *TrafficConfig) Normalize() error {
	if t.Duration <= 0 {
		return errors.New("traffic: the duration must be positive")
	}
	if t.Size == 0 {
		t.Size = 1400
	}
	if t.Size < 64 || t.Size > 1500 {
		return fmt.Errorf("traffic: packet size %d, want 64 to 1500 bytes", t.Size)
	}
	if t.Window == 0 {
		t.Window = 256
	}
	if t.Window < 0 || t.Clients < 0 {
		return errors.New("traffic: negative window or client count")
	}
	if t.Timeout <= 0 {
		t.Timeout = 100 * time.Millisecond
	}
	return nil
}

// Traffic runs one traffic phase (see the top of this file) over the
// fleet's established clients and reports what came back. Only after
// StartClients returned, and not while another phase or EchoLoop runs.
func (f *Fleet) Traffic(ctx context.Context, cfg TrafficConfig) (TrafficReport, error) {
	if err := cfg.Normalize(); err != nil {
		return TrafficReport{}, err
	}
	var senders []*fleetClient
	for _, c := range f.clients {
		if f.results[c.i].TrafficOK && (cfg.Clients == 0 || len(senders) < cfg.Clients) {
			senders = append(senders, c)
		}
	}
	if len(senders) == 0 {
		return TrafficReport{}, errors.New("traffic: no client passed its echo")
	}
	if cfg.Clients > len(senders) {
		return TrafficReport{}, fmt.Errorf("traffic: %d clients asked for, %d passed their echo", cfg.Clients, len(senders))
	}
	window := max(1, (cfg.Window+len(senders)-1)/len(senders))
	counters := make([]trafficCounters, len(senders))
	for i, c := range senders {
		counters[i].wake = make(chan struct{}, 1)
		c.traffic.Store(&counters[i])
	}
	defer func() {
		for _, c := range senders {
			c.traffic.Store(nil)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	sent, lost := make([]uint64, len(senders)), make([]uint64, len(senders))
	errs := make([]error, len(senders))
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range senders {
		wg.Go(func() {
			sent[i], lost[i], errs[i] = c.sendTraffic(ctx, &counters[i], cfg.Size, window, cfg.Timeout)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Replies still in flight when the phase ended are not counted: the
	// rate is over the phase's duration alone.
	rep := TrafficReport{Clients: len(senders), Size: cfg.Size, Window: window, Duration: elapsed, ClientMin: math.MaxUint64}
	received := make([]uint64, len(senders))
	var sum, sumSq float64
	for i := range senders {
		received[i] = counters[i].received.Load()
		rep.Sent += sent[i]
		rep.Lost += lost[i]
		rep.Received += received[i]
		rep.ClientMin = min(rep.ClientMin, received[i])
		rep.ClientMax = max(rep.ClientMax, received[i])
		if received[i] == 0 {
			rep.Silent++
		}
		x := float64(received[i])
		sum += x
		sumSq += x * x
	}
	if sumSq > 0 {
		rep.Fairness = sum * sum / (float64(len(senders)) * sumSq)
	}
	rep.PacketsPerSecond = float64(rep.Received) / elapsed.Seconds()
	rep.MbitPerSecond = rep.PacketsPerSecond * float64(cfg.Size) * 8 / 1e6
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	return rep, nil
}

// sendTraffic is one client's closed loop: window requests in flight, a
// new one for each reply, a new window after timeout without any reply.
// It reuses one buffer: the fleet, on the gateway's host, should spend as
// little of its CPU as it can.
func (c *fleetClient) sendTraffic(ctx context.Context, tc *trafficCounters, size, window int, timeout time.Duration) (sent, lost uint64, err error) {
	src := c.address()
	if !src.Is4() {
		return 0, 0, errors.New("traffic: no inner IPv4 address leased")
	}
	buf := make([]byte, dataplane.Headroom+size+dataplane.Tailroom)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var given uint64 // requests counted lost
	for seq := uint16(0); ; {
		for int64(sent)-int64(tc.received.Load())-int64(given) < int64(window) {
			if err := c.sendTrafficEcho(buf, src, seq, size); err != nil {
				return sent, lost, err
			}
			seq++
			sent++
		}
		select {
		case <-ctx.Done():
			return sent, lost, nil
		case <-tc.wake:
		case <-timer.C:
			// Nothing came back for a while: what is in flight is lost.
			inFlight := int64(sent) - int64(tc.received.Load()) - int64(given)
			if inFlight > 0 {
				given += uint64(inFlight)
				lost += uint64(inFlight)
			}
		}
		timer.Reset(timeout) // since Go 1.23 a Reset timer delivers no stale tick
	}
}

// sendTrafficEcho seals an echo request of size bytes, marked as traffic,
// in buf and sends it to the gateway.
func (c *fleetClient) sendTrafficEcho(buf []byte, src netip.Addr, seq uint16, size int) error {
	c.mu.Lock()
	out := c.out
	c.mu.Unlock()
	if out == nil {
		return errors.New("traffic: no outbound SA")
	}
	n := echoRequestData(buf[dataplane.Headroom:], src, c.cfg.Target, c.id, seq, size, trafficMarker)
	pkt, err := out.Seal(buf, n, dataplane.NextHeaderIPv4)
	if err != nil {
		return fmt.Errorf("traffic: sealing an echo: %w", err)
	}
	if _, err := c.conn.WriteToUDPAddrPort(pkt, netip.AddrPortFrom(c.gateway().Addr(), 4500)); err != nil {
		if isTransient(err) {
			return nil // a full socket buffer: the timeout gives the window back
		}
		return fmt.Errorf("traffic: sending an echo: %w", err)
	}
	return nil
}

// countTraffic counts an echo reply payload (its ICMP data) that answers
// a traffic request; it reports whether it was one.
func (c *fleetClient) countTraffic(data []byte) bool {
	if len(data) < len(trafficMarker) || string(data[:len(trafficMarker)]) != trafficMarker {
		return false
	}
	if tc := c.traffic.Load(); tc != nil {
		tc.received.Add(1)
		select {
		case tc.wake <- struct{}{}:
		default:
		}
	}
	return true
}
