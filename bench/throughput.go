package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
	"github.com/mifsec/mifsec/bench/report"
)

// throughputScenario describes what RunThroughput measures.
const throughputScenario = "two network namespaces joined by one veth pair; one TCP flow through the tunnel, client to server (up) then server to client (down)"

// ThroughputConfig selects the peers and the length of each measurement.
type ThroughputConfig struct {
	// Duration of each TCP transfer (one per direction), at least 1s.
	Duration time.Duration
	// Peers are measured in this order; names from PeerNames.
	Peers []string
	// KeepGoing measures the remaining peers after one fails.
	KeepGoing bool
	peers.PeerOptions
	// Log receives progress messages; nil discards them.
	Log io.Writer
}

// RunThroughput measures each configured peer in a fresh topology of lab,
// tearing it down before the next. Skipped peers are reported, not errors.
// The report holds what was measured even when the error is not nil (a peer
// failed, or ctx ended); the caller closes lab in every case.
func RunThroughput(ctx context.Context, lab *labnet.Lab, cfg ThroughputConfig) (*report.ThroughputReport, error) {
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	list, err := throughputPeers(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkTrafficTools(); err != nil {
		return nil, err
	}
	rep := &report.ThroughputReport{
		Scenario:        throughputScenario,
		StartedAt:       time.Now().UTC().Truncate(time.Second),
		DurationSeconds: cfg.Duration.Seconds(),
		Machine:         report.ReadMachine(),
	}
	rep.Peers, err = peerRunner[peers.Peer, *labnet.Topology, report.PeerResult]{
		what: "throughput run", keepGoing: cfg.KeepGoing, log: log,
		row: func(peer peers.Peer) report.PeerResult { return report.PeerResult{Name: peer.Name()} },
		build: func(ctx context.Context, peer peers.Peer) (*labnet.Topology, error) {
			fmt.Fprintf(log, "%s: setting up (%s)\n", peer.Name(), peer.Version())
			return lab.NewTopology(ctx, peer.Name())
		},
		measure: func(ctx context.Context, peer peers.Peer, topo *labnet.Topology, result *report.PeerResult) error {
			return measureThroughput(ctx, peer, topo, cfg.Duration, result, log)
		},
		record: recordThroughput,
	}.run(ctx, list)
	for i := range rep.Peers {
		// Known once the peer was prepared (mifsec's is os.Executable()).
		rep.Peers[i].Path = list[i].Path()
	}
	rep.SetRatios()
	return rep, err
}

func throughputPeers(cfg ThroughputConfig) ([]peers.Peer, error) {
	if cfg.Duration < time.Second {
		return nil, fmt.Errorf("duration %v is too short: each direction runs at least 1s", cfg.Duration)
	}
	if len(cfg.Peers) == 0 {
		return nil, errors.New("no peers to measure")
	}
	var list []peers.Peer
	seen := map[string]bool{}
	for _, name := range cfg.Peers {
		if seen[name] {
			return nil, fmt.Errorf("peer %q is listed twice", name)
		}
		seen[name] = true
		peer, err := peers.NewPeer(name, cfg.PeerOptions)
		if err != nil {
			return nil, err
		}
		list = append(list, peer)
	}
	return list, nil
}

// recordThroughput stores the runner's outcome in the row.
func recordThroughput(r *report.PeerResult, o peerOutcome) {
	r.Version, r.WallClockSeconds, r.Skipped = o.version, o.wallClock, o.skipped
	r.Errors = append(r.Errors, o.errors...)
}

// measureThroughput brings the tunnel up in topo and runs a TCP flow up
// then down; the runner tears everything down again.
func measureThroughput(ctx context.Context, peer peers.Peer, topo *labnet.Topology, duration time.Duration, result *report.PeerResult, log io.Writer) error {
	if err := peer.Setup(ctx, topo); err != nil {
		return err
	}
	iface := peer.ClientInterface()
	for _, reverse := range []bool{false, true} {
		direction := map[bool]string{false: "up", true: "down"}[reverse]
		before, err := readCounters(ctx, topo, topo.Client, iface)
		if err != nil {
			return err
		}
		fmt.Fprintf(log, "%s: TCP %s for %v\n", peer.Name(), direction, duration)
		measured, err := flowSpec{clientNS: topo.Client, serverNS: topo.Server,
			server: netip.AddrPortFrom(peer.ServerAddr(), trafficPort), bind: peer.ClientAddr(),
			streams: 1, direction: direction, duration: duration}.run(ctx)
		if err != nil {
			return fmt.Errorf("TCP %s: %w", direction, err)
		}
		if measured.Incomplete != "" {
			return fmt.Errorf("TCP %s: cut short after %d bytes: %s", direction, measured.Bytes, measured.Incomplete)
		}
		after, err := readCounters(ctx, topo, topo.Client, iface)
		if err != nil {
			return err
		}
		crossed := after.TxBytes - before.TxBytes
		if reverse {
			crossed = after.RxBytes - before.RxBytes
		}
		if !flowCrossed(measured.Bytes, crossed) {
			return fmt.Errorf("TCP %s: the flow bypassed the tunnel: it moved %d bytes, %s counted only %d",
				direction, measured.Bytes, iface, crossed)
		}
		mbps, retransmits := report.RoundTo(measured.Mbps, 1), measured.Retransmits
		if reverse {
			result.DownMbps, result.DownRetransmits, result.DownSeconds = &mbps, &retransmits, report.RoundTo(measured.Seconds, 2)
		} else {
			result.UpMbps, result.UpRetransmits, result.UpSeconds = &mbps, &retransmits, report.RoundTo(measured.Seconds, 2)
		}
		fmt.Fprintf(log, "%s: %s %.1f Mbit/s, %d retransmits\n", peer.Name(), direction, mbps, retransmits)
	}
	return nil
}
