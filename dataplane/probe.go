package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Path probes are ESP packets with next header 59 (RFC 4303 §2.6: a
// receiver that does not know them discards them as dummy packets) whose
// payload is a probe. They are sealed with the Child SA like any packet,
// so they are authenticated, replay-protected and cost no IKE message ID;
// they measure a path's round-trip time and, through the replier's
// counters, its delivery rate and loss. Layout (docs/mif.md):
//
//	 0               1               2               3
//	+---------------+---------------+---------------+---------------+
//	|      'M'      |      'P'      |  version = 1  |     kind      |
//	+---------------+---------------+---------------+---------------+
//	|            path id            |             flags             |
//	+---------------+---------------+---------------+---------------+
//	|                      sequence number                          |
//	+---------------+---------------+---------------+---------------+
//	|              timestamp (64): the requester's clock,           |
//	|              echoed unchanged in the reply                    |
//	+---------------+---------------+---------------+---------------+
//	  reply only:
//	|  received packets (64) on the path the request came in on,   |
//	|  as the replier counted them                                  |
//	+---------------+---------------+---------------+---------------+
//	|  received bytes (64), likewise                                |
//	+---------------+---------------+---------------+---------------+
//	|  hold time (32): µs between request arrival and reply         |
//	+---------------+---------------+---------------+---------------+
//	  reply with flag 0x0001 only:
//	|  arrival (64): when the request reached the replier, on the   |
//	|  replier's monotonic clock (ns)                               |
//	+---------------+---------------+---------------+---------------+
//	  any kind: padding up to the probed size, ignored
//
// Flags other than 0x0001 are sent as 0 and ignored; a parser that knows
// no flags (mifsec before the arrival time) reads the arrival time as
// padding. The arrival time lets the requester tell a queue on the way
// out from one on the way back: both clocks run at nearly the same rate,
// so the arrival minus the request's sending, whatever the clocks'
// offset, grows by exactly the queue the request met on its way.
//
// The path id is the requester's: a reply goes back on the path the
// request came in on and carries the request's id, so the requester needs
// no state beyond its own sequence numbers.

// ProbeKind says whether a probe asks or answers.
type ProbeKind uint8

const (
	ProbeRequest ProbeKind = 1
	ProbeReply   ProbeKind = 2
)

func (k ProbeKind) String() string {
	switch k {
	case ProbeRequest:
		return "request"
	case ProbeReply:
		return "reply"
	}
	return fmt.Sprintf("probe-kind-%d", uint8(k))
}

// Encoded sizes of the two kinds, without padding.
const (
	probeRequestLen = 20
	probeReplyLen   = 40
	// probeReplyTimedLen is a reply's length with the arrival time
	// (flag probeFlagArrival).
	probeReplyTimedLen = 48
)

const (
	probeVersion     = 1
	maxProbePadding  = 1500
	probeMagic0      = 'M'
	probeMagic1      = 'P'
	probeHoldOffset  = 36
	probeRxPktOffset = 20
	probeRxByOffset  = 28
	probeArrOffset   = 40
	probeFlagsOffset = 6
	probeFlagArrival = 0x0001
)

// Probe is one decoded probe.
type Probe struct {
	Kind      ProbeKind
	PathID    uint16
	Seq       uint32
	Timestamp int64 // the requester's clock (nanoseconds), echoed
	// Reply only: what the replier received on the request's path.
	RxPackets, RxBytes uint64
	HoldMicros         uint32
	// ArrivedAt is, in a reply, when the request reached the replier on
	// the replier's monotonic clock (ns); 0 when the replier does not
	// tell it (an older mifsec).
	ArrivedAt int64
}

// Errors of parseProbe.
var (
	errNotProbe      = errors.New("probe: not a probe (magic or version)")
	errProbeTooShort = errors.New("probe: too short")
	errProbeKind     = errors.New("probe: unknown kind")
)

// parseProbe decodes a probe from the payload of a next-header-59 packet.
// Trailing bytes (padding) are ignored.
func parseProbe(b []byte) (Probe, error) {
	if len(b) < 4 {
		return Probe{}, errProbeTooShort
	}
	if b[0] != probeMagic0 || b[1] != probeMagic1 || b[2] != probeVersion {
		return Probe{}, errNotProbe
	}
	p := Probe{Kind: ProbeKind(b[3])}
	need := 0
	switch p.Kind {
	case ProbeRequest:
		need = probeRequestLen
	case ProbeReply:
		need = probeReplyLen
	default:
		return Probe{}, errProbeKind
	}
	if len(b) < need {
		return Probe{}, errProbeTooShort
	}
	p.PathID = binary.BigEndian.Uint16(b[4:])
	p.Seq = binary.BigEndian.Uint32(b[8:])
	p.Timestamp = int64(binary.BigEndian.Uint64(b[12:]))
	if p.Kind == ProbeReply {
		p.RxPackets = binary.BigEndian.Uint64(b[probeRxPktOffset:])
		p.RxBytes = binary.BigEndian.Uint64(b[probeRxByOffset:])
		p.HoldMicros = binary.BigEndian.Uint32(b[probeHoldOffset:])
		if binary.BigEndian.Uint16(b[probeFlagsOffset:])&probeFlagArrival != 0 && len(b) >= probeReplyTimedLen {
			p.ArrivedAt = int64(binary.BigEndian.Uint64(b[probeArrOffset:]))
		}
	}
	return p, nil
}

// appendProbe appends p's encoding, padded with zeros to at least size
// bytes (at most 1500 bytes of padding), to b.
func appendProbe(b []byte, p Probe, size int) ([]byte, error) {
	n := 0
	switch p.Kind {
	case ProbeRequest:
		n = probeRequestLen
	case ProbeReply:
		n = probeReplyLen
		if p.ArrivedAt != 0 {
			n = probeReplyTimedLen
		}
	default:
		return b, errProbeKind
	}
	if size > n+maxProbePadding {
		return b, fmt.Errorf("probe: size %d exceeds %d bytes", size, n+maxProbePadding)
	}
	start := len(b)
	b = append(b, make([]byte, max(n, size))...)
	q := b[start:]
	q[0], q[1], q[2], q[3] = probeMagic0, probeMagic1, probeVersion, byte(p.Kind)
	binary.BigEndian.PutUint16(q[4:], p.PathID)
	binary.BigEndian.PutUint32(q[8:], p.Seq)
	binary.BigEndian.PutUint64(q[12:], uint64(p.Timestamp))
	if p.Kind == ProbeReply {
		binary.BigEndian.PutUint64(q[probeRxPktOffset:], p.RxPackets)
		binary.BigEndian.PutUint64(q[probeRxByOffset:], p.RxBytes)
		binary.BigEndian.PutUint32(q[probeHoldOffset:], p.HoldMicros)
		if p.ArrivedAt != 0 {
			binary.BigEndian.PutUint16(q[probeFlagsOffset:], probeFlagArrival)
			binary.BigEndian.PutUint64(q[probeArrOffset:], uint64(p.ArrivedAt))
		}
	}
	return b, nil
}
