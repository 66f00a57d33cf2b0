package ike

import (
	"bytes"
	"math/rand/v2"
	"time"
)

// DefaultRekeySequences is the sequence number past which a Child SA
// without extended sequence numbers is rekeyed: 90% of the 2^32 an SA may
// send (at 300,000 packets a second the last 10% last 24 minutes).
const DefaultRekeySequences = 1 << 32 / 10 * 9

// SequenceCounter is implemented by a Handler or ResponderHandler whose
// data plane tells how far a Child SA's sequence numbers have gone: the
// session then rekeys before they run out. Sequences must be cheap (it
// runs again as soon as the numbers could have reached the limit at
// maxSequenceRate).
type SequenceCounter interface {
	// Sequences returns the last sequence number c's outbound SA handed
	// out and the highest its inbound SA accepted.
	Sequences(c *ChildSA) (sent, received uint64)
}

// rekeyKind is the rekey a side has started and awaits the answer to.
type rekeyKind uint8

const (
	notRekeying rekeyKind = iota
	rekeyingChild
	rekeyingIKE
)

// jittered returns d less a random part of up to 10%.
func jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - rand.N(d/10+1)
}

// instant is a moment as nanoseconds since the process started
// (instantEpoch), 0 for none: 8 bytes where a time.Time takes 24, for the
// times a gateway keeps per client (rekeys, liveness, its next visit). It
// is taken with the monotonic clock where the time has it (time.Time.Sub),
// so that a step of the wall clock moves no timer (a step forward would
// otherwise make every held client's rekey due at once), and saturates
// some 292 years out instead of wrapping.
type instant int64

// instantEpoch is what instants count from.
var instantEpoch = time.Now()

// instantOf returns t as an instant; the zero Time as the zero instant.
func instantOf(t time.Time) instant {
	if t.IsZero() {
		return 0
	}
	if d := t.Sub(instantEpoch); d != 0 {
		return instant(d)
	}
	return 1 // the epoch itself, told from none
}

// time returns i as a time.Time; the zero instant as the zero Time, before
// every time a clock gives.
func (i instant) time() time.Time {
	if i == 0 {
		return time.Time{}
	}
	return instantEpoch.Add(time.Duration(i))
}

// IsZero says whether i is unset.
func (i instant) IsZero() bool { return i == 0 }

// retryDelay is how long a refused rekey waits before it is tried again:
// 2 to 10 s, random, so that two ends that refused each other's rekeys
// (one rekeying its IKE SA, the other a Child SA) do not retry in step.
func retryDelay() time.Duration { return 2*time.Second + rand.N(8*time.Second) }

// rekeyDue says whether c should be rekeyed now: its lifetime (jittered
// once) is over, or it has no ESN and its sequence numbers passed limit
// (when h can tell). A refused rekey holds both off until retryAt.
func (c *ChildSA) rekeyDue(lifetime time.Duration, limit uint64, h any, now time.Time) bool {
	if now.Before(c.retryAt.time()) {
		return false
	}
	if lifetime > 0 {
		if c.rekeyAt.IsZero() {
			c.rekeyAt = instantOf(c.Created.Add(jittered(lifetime)))
		}
		if !now.Before(c.rekeyAt.time()) {
			return true
		}
	}
	return c.sequencesRunningOut(limit, h, now)
}

// maxSequenceRate bounds how fast one SA's sequence numbers go: 100
// million packets a second, beyond what any SA of a data plane carries.
// A Child SA whose numbers are far from the limit cannot reach it before
// the distance at that rate, and is not read again until then: a gateway
// read every client's counters at every tick, some 5 % of its loop's time
// with 100,000 clients.
const maxSequenceRate = 100e6

// sequencesRunningOut says whether c, without ESN, sent or received past
// limit.
func (c *ChildSA) sequencesRunningOut(limit uint64, h any, now time.Time) bool {
	sc, ok := h.(SequenceCounter)
	if c.ESN || !ok || now.UnixNano() < c.seqCheckAt {
		return false
	}
	sent, received := sc.Sequences(c)
	if sent >= limit || received >= limit {
		return true
	}
	left := float64(limit - max(sent, received))
	c.seqCheckAt = now.UnixNano() + int64(left/maxSequenceRate*1e9)
	return false
}

// retryLater holds off c's next rekey for retryDelay.
func (c *ChildSA) retryLater(now time.Time) { c.retryAt = instantOf(now.Add(retryDelay())) }

// rekeyDue says whether sa's lifetime (jittered once) is over; a zero
// lifetime never ends.
func (sa *ikeSA) rekeyDue(lifetime time.Duration, now time.Time) bool {
	if lifetime <= 0 || now.Before(sa.retryAt.time()) {
		return false
	}
	if sa.rekeyAt.IsZero() {
		sa.rekeyAt = instantOf(sa.created.Add(jittered(lifetime)))
	}
	return !now.Before(sa.rekeyAt.time())
}

// retryLater holds off sa's next rekey for retryDelay.
func (sa *ikeSA) retryLater(now time.Time) { sa.retryAt = instantOf(now.Add(retryDelay())) }

// lowestNonceIn reports whether the lowest of the four nonces of two
// colliding rekey exchanges (Ni, Nr of each) is one of a's: the SA that
// exchange a created is then the redundant one, to be deleted by a's
// initiator (RFC 7296 §2.8.1). Both ends see the same four nonces and
// reach the same answer.
func lowestNonceIn(a, b [2][]byte) bool {
	lowest := func(n [2][]byte) []byte {
		if bytes.Compare(n[0], n[1]) <= 0 {
			return n[0]
		}
		return n[1]
	}
	return bytes.Compare(lowest(a), lowest(b)) < 0
}

// nextRekeyCheck is when rekeyDue may next say yes for c: its lifetime's
// end or its next read of the sequence numbers, not before retryAt; ok is
// false when neither can come.
func (c *ChildSA) nextRekeyCheck(lifetime time.Duration, h any) (at time.Time, ok bool) {
	if lifetime > 0 {
		if c.rekeyAt.IsZero() {
			c.rekeyAt = instantOf(c.Created.Add(jittered(lifetime)))
		}
		at, ok = c.rekeyAt.time(), true
	}
	if _, counts := h.(SequenceCounter); counts && !c.ESN {
		if t := time.Unix(0, c.seqCheckAt); !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	if ok && at.Before(c.retryAt.time()) {
		at = c.retryAt.time()
	}
	return at, ok
}

// nextRekeyCheck is when rekeyDue may next say yes for sa; ok is false
// for a lifetime that never ends.
func (sa *ikeSA) nextRekeyCheck(lifetime time.Duration) (at time.Time, ok bool) {
	if lifetime <= 0 {
		return at, false
	}
	if sa.rekeyAt.IsZero() {
		sa.rekeyAt = instantOf(sa.created.Add(jittered(lifetime)))
	}
	if sa.rekeyAt.time().Before(sa.retryAt.time()) {
		return sa.retryAt.time(), true
	}
	return sa.rekeyAt.time(), true
}
