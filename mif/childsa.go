package mif

import (
	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
)

// NewChildSAs makes the data plane's two SAs of a negotiated Child SA.
// The outbound SA never checks replays, so it gets the smallest window:
// 2 KiB less per SA, per client on a gateway.
func NewChildSAs(child *ike.ChildSA) (in, out *dataplane.SA, err error) {
	alg, err := dataplane.ParseAlgorithm(child.Algorithm)
	if err != nil {
		return nil, nil, err
	}
	in, err = dataplane.NewSA(dataplane.SAConfig{SPI: child.InSPI, Algorithm: alg, Key: child.InKey, ESN: child.ESN})
	if err != nil {
		return nil, nil, err
	}
	out, err = dataplane.NewSA(dataplane.SAConfig{SPI: child.OutSPI, Algorithm: alg, Key: child.OutKey, ESN: child.ESN,
		ReplayWindow: dataplane.MinReplayWindow})
	if err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

// sequences returns the last sequence number out handed out and the
// highest in accepted; 0 for an SA that is missing.
func sequences(in, out *dataplane.SA) (sent, received uint64) {
	if out != nil {
		sent = out.LastSequence()
	}
	if in != nil {
		received = in.ReplayWindow().Top()
	}
	return sent, received
}

// dropSnapshot returns the engine's drop counters by name: the inbound
// reasons and the outbound packets whose SA ran out of sequence numbers.
func dropSnapshot(s *dataplane.EngineStats) map[string]uint64 {
	m := s.Drops.Snapshot()
	if n := s.SequenceExhausted.Load(); n != 0 {
		m["sequence-exhausted"] = n
	}
	if n := s.SendErrors.Load(); n != 0 {
		m["send-error"] = n // datagrams the kernel refused to send
	}
	return m
}

// Both handlers tell the IKE side how far their Child SAs' sequence
// numbers have gone, so that it rekeys before they run out.
var (
	_ ike.SequenceCounter = (*Client)(nil)
	_ ike.SequenceCounter = (*Gateway)(nil)
)
