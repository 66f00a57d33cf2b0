package ike

import (
	"testing"
	"time"
)

// countingSequences reports fixed sequence numbers and counts the reads.
type countingSequences struct {
	sent, received uint64
	reads          int
}

func (q *countingSequences) Sequences(*ChildSA) (uint64, uint64) {
	q.reads++
	return q.sent, q.received
}

// TestSequencesReadWhenTheyCouldRunOut: a Child SA whose sequence numbers
// are far from the rekey limit is not read again before they could reach
// it at maxSequenceRate; near the limit it is read at every check, and
// past it the rekey is due.
func TestSequencesReadWhenTheyCouldRunOut(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := &ChildSA{Created: now}
	q := &countingSequences{}
	if c.rekeyDue(0, DefaultRekeySequences, q, now) || q.reads != 1 {
		t.Fatalf("a fresh SA: due, or %d reads", q.reads)
	}
	far := time.Duration(float64(DefaultRekeySequences) / maxSequenceRate * float64(time.Second))
	for _, d := range []time.Duration{time.Second, far / 2, far - time.Millisecond} {
		if c.rekeyDue(0, DefaultRekeySequences, q, now.Add(d)) || q.reads != 1 {
			t.Fatalf("%v later: read %d times, want no second read before %v", d, q.reads, far)
		}
	}
	q.sent = DefaultRekeySequences - 1000
	if c.rekeyDue(0, DefaultRekeySequences, q, now.Add(far)) || q.reads != 2 {
		t.Fatalf("at %v: %d reads, want 2", far, q.reads)
	}
	q.sent = DefaultRekeySequences
	if !c.rekeyDue(0, DefaultRekeySequences, q, now.Add(far+time.Second)) || q.reads != 3 {
		t.Fatalf("past the limit: not due, or %d reads", q.reads)
	}
	esn := &ChildSA{Created: now, ESN: true}
	if esn.rekeyDue(0, 1, q, now) || q.reads != 3 {
		t.Error("an ESN SA was read or rekeyed for its sequence numbers")
	}
}

// TestInstant: an instant gives back the time it was made from, keeps
// the order of times before and after the process started, tells the
// zero Time from every other, and saturates far out instead of wrapping
// (a lifetime of centuries never ends, where Unix nanoseconds would have
// wrapped to 1677).
func TestInstant(t *testing.T) {
	now := time.Now()
	for _, tm := range []time.Time{now, now.Add(-time.Hour), now.Add(90 * time.Minute), time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), instantEpoch} {
		i := instantOf(tm)
		if i.IsZero() || !i.time().Equal(tm) && i.time().Sub(tm).Abs() > time.Nanosecond {
			t.Errorf("%v: instant %d gives back %v", tm, i, i.time())
		}
	}
	if a, b := instantOf(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)), instantOf(now); a >= b {
		t.Errorf("2000 is instant %d, now %d: out of order", a, b)
	}
	if i := instantOf(time.Time{}); !i.IsZero() || !i.time().IsZero() {
		t.Errorf("the zero Time is instant %d, back %v", i, i.time())
	}
	if far := instantOf(now.AddDate(300, 0, 0)); far <= instantOf(now) || !far.time().After(now) {
		t.Errorf("300 years on: instant %d, %v; want after now", far, far.time())
	}
}
