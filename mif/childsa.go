package mif

import (
	"errors"
	"fmt"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
)

// A probe SA's inbound replay window. Probes of a few paths, each a few
// dozen a second (a hundred while a path is suspect), reorder across paths
// by as many as the quicker paths carry while a slower one's queue holds
// its own: a cellular queue of 1.5 s (a recorded AT&T link) holds back 200
// and more, which a window of 128 dropped as too old, counted lost by the
// prober. The window starts at 128 packets (64 bytes) and grows to 1024
// (512 bytes) once the peer may send over several paths (receiveOverPaths,
// for a session that negotiated the MIF extension) or a probe comes half
// the window late.
const (
	probeReplayWindow      = 1024
	probeReplayWindowStart = 128
)

// NewChildSAs makes the data plane's two SAs of a negotiated Child SA, in
// its mode, each with its probe SA when the Child SA has one (docs/mif.md;
// probes are never carried in transport mode: they have no IP header).
// The outbound SA never checks replays, so it has no window.
func NewChildSAs(child *ike.ChildSA) (in, out *dataplane.SA, err error) {
	alg, err := dataplane.ParseAlgorithm(child.Algorithm)
	if err != nil {
		return nil, nil, err
	}
	in, err = dataplane.NewSA(dataplane.SAConfig{SPI: child.InSPI, Algorithm: alg, Key: child.InKey, ESN: child.ESN, Transport: child.Transport})
	if err != nil {
		return nil, nil, err
	}
	out, err = dataplane.NewSA(dataplane.SAConfig{SPI: child.OutSPI, Algorithm: alg, Key: child.OutKey, ESN: child.ESN,
		Outbound: true, Transport: child.Transport})
	if err != nil {
		return nil, nil, err
	}
	if p := child.Probe; p != nil {
		// Made by the first probe each way (dataplane.SA.ProbeSA): a
		// client with one path may never probe.
		if err := errors.Join(
			in.SetProbeSAConfig(dataplane.SAConfig{SPI: p.InSPI, Algorithm: alg, Key: p.InKey, ESN: child.ESN, ReplayWindow: probeReplayWindow, ReplayWindowStart: probeReplayWindowStart}),
			out.SetProbeSAConfig(dataplane.SAConfig{SPI: p.OutSPI, Algorithm: alg, Key: p.OutKey, ESN: child.ESN, Outbound: true})); err != nil {
			return nil, nil, fmt.Errorf("probe SA: %w", err)
		}
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
// numbers have gone, so that it rekeys before they run out, and how many
// packets their inbound SAs accepted, so that ESP counts as a sign of life.
var (
	_ ike.SequenceCounter   = (*Client)(nil)
	_ ike.SequenceCounter   = (*Gateway)(nil)
	_ ike.Activity          = (*Client)(nil)
	_ ike.ResponderActivity = (*Gateway)(nil)
)
