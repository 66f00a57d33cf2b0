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
