package labnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mifsec/mifsec/internal/inetsum"
)

// ICMP echo, sent from a raw socket in a namespace: how the lab checks that
// a tunnel carries traffic, without the ping binary.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	icmpHeaderLen   = 8
)

// encodeEcho writes an ICMPv4 echo request with this identifier and
// sequence number and a payload into b (icmpHeaderLen + len(payload)
// bytes) and returns it.
func encodeEcho(b []byte, id, seq uint16, payload []byte) []byte {
	b = append(b[:0], icmpEchoRequest, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:], inetsum.Checksum(b))
	return b
}

// parseEchoReply reads an ICMPv4 message; ok is true for a well-formed
// echo reply (valid checksum) with identifier id.
func parseEchoReply(b []byte, id uint16) (seq uint16, ok bool) {
	if len(b) < icmpHeaderLen || b[0] != icmpEchoReply || b[1] != 0 || inetsum.Checksum(b) != 0 {
		return 0, false
	}
	if binary.BigEndian.Uint16(b[4:]) != id {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[6:]), true
}

// echoAttempts and echoWait: how often and how long WaitForEcho tries.
const (
	echoAttempts = 20
	echoWait     = time.Second
)

// WaitForEcho sends ICMP echo requests from namespace ns (from src when
// valid) to dst until one is answered, failing early when one of the
// tunnel's processes ends.
func WaitForEcho(ctx context.Context, ns string, src, dst netip.Addr, processes ...*Process) error {
	local := "0.0.0.0"
	if src.IsValid() {
		local = src.String()
	}
	var conn net.PacketConn
	err := InNamespace(ns, func() error {
		c, err := net.ListenPacket("ip4:icmp", local)
		conn = c
		return err
	})
	if err != nil {
		return fmt.Errorf("ICMP socket in namespace %s: %w", ns, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	id := uint16(rand.Uint32())
	to := &net.IPAddr{IP: dst.AsSlice()}
	out := make([]byte, 0, 64)
	in := make([]byte, 1500)
	var lastErr error
	for seq := range uint16(echoAttempts) {
		for _, p := range processes {
			if p.Exited() {
				return fmt.Errorf("%s ended while the tunnel came up:\n%s", p.Name(), p.Describe())
			}
		}
		sent := time.Now()
		if _, err := conn.WriteTo(encodeEcho(out, id, seq, []byte("mifsec-lab")), to); err != nil {
			lastErr = err
			// No route yet: try again after the wait.
			if !SleepUntil(ctx, sent.Add(echoWait/4)) {
				return ctx.Err()
			}
			continue
		}
		conn.SetReadDeadline(sent.Add(echoWait))
		for {
			n, _, err := conn.ReadFrom(in)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					lastErr = fmt.Errorf("no reply within %v", echoWait)
					break
				}
				lastErr = err
				break
			}
			if got, ok := parseEchoReply(in[:n], id); ok && got == seq {
				return nil
			}
		}
	}
	var details strings.Builder
	for _, p := range processes {
		details.WriteString("\n")
		details.WriteString(p.Describe())
	}
	return fmt.Errorf("no echo reply from %s through the tunnel after %d tries (last: %v)%s",
		dst, echoAttempts, lastErr, details.String())
}

// SleepUntil waits until t; false when ctx ended first.
func SleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
