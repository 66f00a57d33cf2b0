package dataplane

import (
	"fmt"
	"sync/atomic"
)

// DropReason says why the data plane discarded a packet it received.
type DropReason uint8

// Every reason for which an inbound packet is dropped. Each has its own
// counter so that an operator can tell an attack (bad ICV, replays) from a
// misconfiguration (unknown SPI) or a broken peer (bad padding).
const (
	DropRunt          DropReason = iota // too short to be ESP, or a bad UDP-encapsulation header
	DropUnknownSPI                      // no inbound SA has this SPI
	DropBadICV                          // authentication failed
	DropReplayed                        // sequence number already received
	DropTooOld                          // sequence number left of the replay window
	DropBadPadding                      // trailer inconsistent: pad length or pad bytes wrong
	DropBadNextHeader                   // next header is neither IPv4, IPv6 nor dummy
	DropBadInner                        // inner packet's IP header is malformed
	DropPolicy                          // inner source or destination outside the SA's traffic selectors
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	DropRunt:          "runt",
	DropUnknownSPI:    "unknown-spi",
	DropBadICV:        "bad-icv",
	DropReplayed:      "replayed",
	DropTooOld:        "too-old",
	DropBadPadding:    "bad-padding",
	DropBadNextHeader: "bad-next-header",
	DropBadInner:      "bad-inner",
	DropPolicy:        "policy",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropReasonNames[r]
	}
	return fmt.Sprintf("drop-reason-%d", uint8(r))
}

// dropError is the error returned for a dropped packet. The values are
// preallocated (one per reason) so that dropping never allocates.
type dropError struct{ Reason DropReason }

func (e *dropError) Error() string { return "esp: packet dropped: " + e.Reason.String() }

var dropErrors = func() (errs [numDropReasons]*dropError) {
	for i := range errs {
		errs[i] = &dropError{Reason: DropReason(i)}
	}
	return errs
}()

// The errors Open and the demultiplexer return; compare with errors.Is.
var (
	ErrRunt          error = dropErrors[DropRunt]
	ErrUnknownSPI    error = dropErrors[DropUnknownSPI]
	ErrBadICV        error = dropErrors[DropBadICV]
	ErrReplayed      error = dropErrors[DropReplayed]
	ErrTooOld        error = dropErrors[DropTooOld]
	ErrBadPadding    error = dropErrors[DropBadPadding]
	ErrBadNextHeader error = dropErrors[DropBadNextHeader]
	ErrBadInner      error = dropErrors[DropBadInner]
	ErrPolicy        error = dropErrors[DropPolicy]
)

// DropCounters counts dropped packets per reason. It is safe for concurrent
// use; the zero value is ready. Its counters are allocated with the first
// drop: every SA has its own, and most SAs of a gateway (four per client)
// never drop a packet, so they hold a nil pointer, not 18 counters
// (issue 19: compact per-client state).
type DropCounters struct {
	counts atomic.Pointer[[numDropReasons]atomic.Uint64]
}

// Add counts one packet dropped for reason r.
func (c *DropCounters) Add(r DropReason) {
	if r >= numDropReasons {
		return
	}
	counts := c.counts.Load()
	if counts == nil {
		c.counts.CompareAndSwap(nil, new([numDropReasons]atomic.Uint64))
		counts = c.counts.Load() // ours or the one another packet's drop set first
	}
	counts[r].Add(1)
}

// Get returns how many packets were dropped for reason r.
func (c *DropCounters) Get(r DropReason) uint64 {
	if counts := c.counts.Load(); counts != nil && r < numDropReasons {
		return counts[r].Load()
	}
	return 0
}

// Snapshot returns the non-zero counters by reason name.
func (c *DropCounters) Snapshot() map[string]uint64 {
	m := make(map[string]uint64)
	counts := c.counts.Load()
	if counts == nil {
		return m
	}
	for i := range counts {
		if v := counts[i].Load(); v != 0 {
			m[DropReason(i).String()] = v
		}
	}
	return m
}
