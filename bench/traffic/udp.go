package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// udpMagic starts every datagram of a paced UDP stream, followed by its
// sequence number (8 bytes).
const (
	udpMagic     = 0x4d4c4255 // "MLBU"
	udpHeaderLen = 12
)

// parseUDPHeader reads a stream datagram's sequence number; ok is false
// for anything that is not one of the stream's datagrams.
func parseUDPHeader(b []byte) (seq uint64, ok bool) {
	if len(b) < udpHeaderLen || binary.BigEndian.Uint32(b) != udpMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[4:]), true
}

// UDP is a paced UDP stream at a fixed bit rate from Sender to Receiver.
type UDP struct {
	// Sender is connected to Receiver's address (net.DialUDP), or sends to
	// To when To is valid.
	Sender *net.UDPConn
	To     netip.AddrPort
	// Receiver reads the stream; Run does not close either socket.
	Receiver *net.UDPConn
	// Rate in bit/s of the datagrams' payload; Size is each payload's
	// length (default 1200 bytes, at least the 12-byte header).
	Rate     float64
	Size     int
	Duration time.Duration
	// Grace is how long the receiver waits for the last datagrams (default
	// 1 s).
	Grace time.Duration
}

// UDPResult is what a paced UDP stream measured at the receiver.
type UDPResult struct {
	Sent        int     `json:"sent"`
	Received    int     `json:"received"`
	LossPercent float64 `json:"loss_percent"`
	Mbps        float64 `json:"mbps"`
	SendErrors  int     `json:"send_errors"`
}

// Run sends the stream and counts what arrives.
func (u *UDP) Run(ctx context.Context) (*UDPResult, error) {
	size := u.Size
	if size == 0 {
		size = 1200
	}
	switch {
	case u.Sender == nil || u.Receiver == nil:
		return nil, errors.New("udp stream: needs a sender and a receiver")
	case size < udpHeaderLen:
		return nil, fmt.Errorf("udp stream: size %d is below the %d-byte header", size, udpHeaderLen)
	case u.Rate <= 0 || u.Duration <= 0:
		return nil, fmt.Errorf("udp stream: rate %g bit/s and duration %v must be positive", u.Rate, u.Duration)
	}
	grace := u.Grace
	if grace <= 0 {
		grace = time.Second
	}
	gap := time.Duration(float64(size*8) / u.Rate * float64(time.Second))
	count := int(u.Duration / max(gap, time.Nanosecond))
	seen := make([]bool, count)
	var received atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := u.Receiver.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			seq, ok := parseUDPHeader(buf[:n])
			if ok && seq < uint64(count) && !seen[seq] {
				seen[seq] = true
				received.Add(1)
			}
		}
	})
	res := &UDPResult{}
	buf := make([]byte, size)
	binary.BigEndian.PutUint32(buf, udpMagic)
	start := time.Now()
	// Datagrams are paced by the clock, in bursts of what is due, so that
	// a late wake-up does not lower the rate.
	for seq := 0; seq < count; {
		if ctx.Err() != nil {
			break
		}
		due := int(time.Since(start) / max(gap, time.Nanosecond))
		for ; seq < count && seq <= due; seq++ {
			binary.BigEndian.PutUint64(buf[4:], uint64(seq))
			var err error
			if u.To.IsValid() {
				_, err = u.Sender.WriteToUDPAddrPort(buf, u.To)
			} else {
				_, err = u.Sender.Write(buf)
			}
			if err != nil {
				res.SendErrors++
			}
			res.Sent++
		}
		time.Sleep(min(time.Millisecond, gap))
	}
	select {
	case <-ctx.Done():
	case <-time.After(grace):
	}
	u.Receiver.SetReadDeadline(time.Now())
	wg.Wait()
	u.Receiver.SetReadDeadline(time.Time{})
	res.Received = int(received.Load())
	if res.Sent > 0 {
		res.LossPercent = round(100*float64(res.Sent-res.Received)/float64(res.Sent), 2)
	}
	res.Mbps = round(float64(res.Received*size)*8/u.Duration.Seconds()/1e6, 3)
	return res, ctx.Err()
}
