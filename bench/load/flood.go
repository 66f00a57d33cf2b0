package load

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
)

// Bounds of an IKE_SA_INIT flood: it is a test tool, never a weapon.
const (
	maxFloodRate     = 100_000          // requests per second
	maxFloodDuration = 60 * time.Second // per call
	maxFloodSources  = 256
)

// floodTargets are the only destinations a flood may be sent to: loopback
// and the documentation/test ranges the namespace tests put on their veths.
var floodTargets = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("fd00::/8"),
}

// FloodResult is what a flood observed.
type FloodResult struct {
	Sent    int           // requests sent
	Elapsed time.Duration // from the first to the last batch
	Replies int           // IKE_SA_INIT responses received
	Cookies int           // of which demanded a COOKIE
}

// Rate is the achieved send rate in requests per second.
func (r FloodResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// floodIKESAInit sends valid-looking IKE_SA_INIT requests (SA
// aes256gcm16-prfsha256-x25519, a KE with an x25519 public value, a
// nonce, a random SPIi per request) to target at rate requests per second
// for d, spread round-robin over UDP sockets bound to sources (port 0), so
// that they look like many clients; the caller puts those addresses on an
// interface. It paces in batches every millisecond and stops early when ctx
// ends, returning the number of requests sent.
//
// It is bounded: rate at most maxFloodRate, d at most maxFloodDuration, and
// target must be loopback (127.0.0.0/8, ::1) or in the ranges the
// namespace tests use (192.0.2.0/24, 198.51.100.0/24, fd00::/8); any other
// target is refused.
func floodIKESAInit(ctx context.Context, target netip.AddrPort, rate int, d time.Duration, sources []netip.Addr) (sent int, err error) {
	r, err := FloodIKESAInitResult(ctx, target, rate, d, sources)
	return r.Sent, err
}

// FloodIKESAInitResult is floodIKESAInit that also counts the responses,
// and those of them that demand a COOKIE, received until shortly after the
// last request.
func FloodIKESAInitResult(ctx context.Context, target netip.AddrPort, rate int, d time.Duration, sources []netip.Addr) (FloodResult, error) {
	var res FloodResult
	if err := checkFlood(target, rate, d, sources); err != nil {
		return res, err
	}
	templates, err := floodTemplates(4)
	if err != nil {
		return res, err
	}
	// Sockets are created here, on the calling goroutine, so that a caller
	// inside a network namespace gets them in that namespace.
	conns := make([]*net.UDPConn, 0, len(sources))
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, a := range sources {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return res, fmt.Errorf("flood source %s: %w", a, err)
		}
		conns = append(conns, c)
	}
	var replies, cookies atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				n, err := c.Read(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) || isTimeout(err) {
						return
					}
					continue
				}
				m, err := wire.Parse(buf[:n])
				if err != nil || m.Exchange != wire.IKE_SA_INIT || !m.IsResponse() {
					continue
				}
				replies.Add(1)
				if wire.FindNotify(m.Payloads, wire.COOKIE) != nil {
					cookies.Add(1)
				}
			}
		}()
	}
	dst := net.UDPAddrFromAddrPort(target)
	total := int(int64(rate) * int64(d) / int64(time.Second))
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	pkt := make([]byte, len(templates[0]))
	var spi [8]byte
	var sendErr error
	attempts := 0 // sent or dropped by a full socket buffer
loop:
	for attempts < total {
		due := min(total, int(int64(rate)*int64(time.Since(start))/int64(time.Second)))
		for ; attempts < due; attempts++ {
			pkt = append(pkt[:0], templates[attempts%len(templates)]...)
			if _, err := rand.Read(spi[:]); err != nil {
				sendErr = err
				break loop
			}
			copy(pkt[:8], spi[:])
			if _, err := conns[attempts%len(conns)].WriteToUDP(pkt, dst); err != nil {
				// A full socket buffer is congestion, not a failure.
				if isTransient(err) {
					continue
				}
				sendErr = fmt.Errorf("sending to %s: %w", target, err)
				break loop
			}
			res.Sent++
		}
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
	}
	res.Elapsed = time.Since(start)
	// Collect the answers to the last requests, then stop the readers.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	}
	wg.Wait()
	res.Replies, res.Cookies = int(replies.Load()), int(cookies.Load())
	return res, sendErr
}

func checkFlood(target netip.AddrPort, rate int, d time.Duration, sources []netip.Addr) error {
	if rate <= 0 || rate > maxFloodRate {
		return fmt.Errorf("flood rate %d/s: want 1..%d", rate, maxFloodRate)
	}
	if d <= 0 || d > maxFloodDuration {
		return fmt.Errorf("flood duration %v: want up to %v", d, maxFloodDuration)
	}
	if len(sources) == 0 || len(sources) > maxFloodSources {
		return fmt.Errorf("%d flood sources: want 1..%d", len(sources), maxFloodSources)
	}
	if !floodTargetOK(target.Addr()) || target.Port() == 0 {
		return fmt.Errorf("refusing to flood %s: only loopback and the test ranges %v are allowed", target, floodTargets)
	}
	return nil
}

func floodTargetOK(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range floodTargets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// floodTemplates marshals n IKE_SA_INIT requests, each with its own x25519
// public value and nonce; the sender only rewrites SPIi.
func floodTemplates(n int) ([][]byte, error) {
	specs, err := ike.ParseIKEProposals("aes256gcm16-prfsha256-x25519")
	if err != nil {
		return nil, err
	}
	props, err := ike.BuildProposals(specs, nil)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	for i := range out {
		kex, err := ike.NewKeyExchange(wire.DH_CURVE25519)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		m := &wire.Message{SPIi: 1, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: []wire.Payload{
			&wire.SA{Proposals: props},
			&wire.KE{Group: wire.DH_CURVE25519, Data: kex.Public()},
			&wire.Nonce{Data: nonce},
		}}
		if out[i], err = m.Marshal(); err != nil {
			return nil, err
		}
		if len(out[i]) != len(out[0]) || binary.BigEndian.Uint64(out[i][:8]) != 1 {
			return nil, errors.New("flood: unexpected IKE_SA_INIT layout")
		}
	}
	return out, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isTransient reports errors a UDP send may return under load (ENOBUFS,
// EAGAIN) or because an ICMP error arrived for an earlier datagram
// (ECONNREFUSED).
func isTransient(err error) bool {
	return errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ECONNREFUSED)
}
