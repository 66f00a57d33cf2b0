package mif

import (
	"testing"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
)

// TestSequences: the counters the IKE side rekeys by are the outbound
// SA's last sequence number and the inbound SA's highest accepted one,
// read without allocating.
func TestSequences(t *testing.T) {
	key := make([]byte, 36)
	in, out, err := NewChildSAs(&ike.ChildSA{InSPI: 0x1001, OutSPI: 0x2002, Algorithm: "aes256gcm16", InKey: key, OutKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.ReserveSequence(1000); err != nil {
		t.Fatal(err)
	}
	if err := in.ReplayWindow().Accept(77); err != nil {
		t.Fatal(err)
	}
	if sent, received := sequences(in, out); sent != 1000 || received != 77 {
		t.Fatalf("sequences %d sent, %d received, want 1000 and 77", sent, received)
	}
	if sent, received := sequences(nil, nil); sent != 0 || received != 0 {
		t.Fatalf("missing SAs: %d, %d", sent, received)
	}
	if n := testing.AllocsPerRun(100, func() { sequences(in, out) }); n != 0 {
		t.Fatalf("%v allocations per read", n)
	}
	var st dataplane.EngineStats
	st.SequenceExhausted.Add(3)
	if got := dropSnapshot(&st)["sequence-exhausted"]; got != 3 {
		t.Fatalf("drop snapshot has %d sequence-exhausted, want 3", got)
	}
}

// TestNewChildSAsWithProbeSA: a Child SA with a probe SA gives data plane
// SAs that carry theirs, with the probe SA's SPIs; one without gives
// none.
func TestNewChildSAsWithProbeSA(t *testing.T) {
	key := make([]byte, 36)
	child := &ike.ChildSA{InSPI: 0x1001, OutSPI: 0x2002, Algorithm: "aes256gcm16", InKey: key, OutKey: key,
		Probe: &ike.ProbeSA{InSPI: 0x1101, OutSPI: 0x2202, InKey: key, OutKey: key}}
	in, out, err := NewChildSAs(child)
	if err != nil {
		t.Fatal(err)
	}
	if p := in.ProbeSA(); p == nil || p.SPI() != 0x1101 {
		t.Fatalf("inbound probe SA %v, want SPI 0x1101", p)
	}
	if p := out.ProbeSA(); p == nil || p.SPI() != 0x2202 {
		t.Fatalf("outbound probe SA %v, want SPI 0x2202", p)
	}
	child.Probe.InKey = key[:5]
	if _, _, err := NewChildSAs(child); err == nil {
		t.Fatal("a probe SA with a short key was made")
	}
	child.Probe = nil
	if in, out, err = NewChildSAs(child); err != nil || in.ProbeSA() != nil || out.ProbeSA() != nil {
		t.Fatalf("without a probe SA: %v, %v, %v", in.ProbeSA(), out.ProbeSA(), err)
	}
}
