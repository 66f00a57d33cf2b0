package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
	"github.com/mifsec/mifsec/bench/report"
	"github.com/mifsec/mifsec/bench/scenarios"
	"github.com/mifsec/mifsec/bench/traffic"
)

// sampleEvery is how often the emulators' counters are read for the
// per-path throughput over time.
const sampleEvery = 100 * time.Millisecond

// ScenarioConfig says how to run a scenario.
type ScenarioConfig struct {
	peers.PeerOptions
	// Peers overrides the scenario's list when not empty.
	Peers []string
	// KeepGoing measures the remaining peers after one fails.
	KeepGoing bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Tick, when set, is called about every sampleEvery while traffic runs,
	// with the peer's name, the time since the traffic started and the
	// scenario's duration (for a progress bar).
	Tick func(peer string, elapsed, total time.Duration)
}

// RunScenario measures each of the scenario's peers in a fresh topology of
// lab, one after the other. Skipped peers are reported, not errors. The
// report holds what was measured even when the error is not nil (a peer
// failed, or ctx ended); the caller closes lab in every case.
func RunScenario(ctx context.Context, lab *labnet.Lab, sc *scenarios.Scenario, cfg ScenarioConfig) (*report.ScenarioReport, error) {
	log := cfg.Log
	if log == nil {
		log = io.Discard
		cfg.Log = log
	}
	names := sc.Peers
	if len(cfg.Peers) > 0 {
		names = cfg.Peers
	}
	var list []peers.LabPeer
	for _, name := range names {
		peer, err := peers.NewLabPeer(name, cfg.PeerOptions)
		if err != nil {
			return nil, err
		}
		list = append(list, peer)
	}
	if len(list) == 0 {
		return nil, errors.New("no peers to measure")
	}
	if err := checkPrerequisites(sc, list, len(cfg.Peers) > 0, log); err != nil {
		return nil, err
	}
	if err := CheckCongestionControl(sc.TCPCongestion); err != nil {
		return nil, err
	}
	rep := report.NewScenarioReport(sc)
	// The setup time counts from building the topology; peers run one at
	// a time.
	var setupStart time.Time
	runs, err := peerRunner[peers.LabPeer, *labnet.LabNet, report.PeerRun]{
		what: "scenario " + sc.Name, keepGoing: cfg.KeepGoing, log: log,
		row: func(peer peers.LabPeer) report.PeerRun {
			return report.PeerRun{Peer: peer.Name(), Behaviour: peer.Behaviour(sc), NoTunnel: hasNoTunnel(peer)}
		},
		build: func(ctx context.Context, peer peers.LabPeer) (*labnet.LabNet, error) {
			fmt.Fprintf(log, "%s: building the topology (%d uplinks, emulated links)\n", peer.Name(), len(sc.Uplinks))
			setupStart = time.Now()
			return lab.NewLabNet(ctx, sc.Name+"-"+peer.Name(), sc)
		},
		measure: func(ctx context.Context, peer peers.LabPeer, n *labnet.LabNet, run *report.PeerRun) error {
			return measureScenario(ctx, n, sc, peer, cfg, setupStart, run)
		},
		record: recordScenario,
	}.run(ctx, list)
	rep.Runs = runs
	rep.Finish()
	return rep, err
}

// toolUser is a peer that runs external programs of its own.
type toolUser interface{ Tools() []labnet.Tool }

// checkPrerequisites looks for every program the run needs before anything
// starts, and names all the missing ones with their Debian packages in one
// message: an error when the lab itself or a peer the user asked for
// (explicit) needs them; otherwise a note that the peers lacking them will
// be skipped.
func checkPrerequisites(sc *scenarios.Scenario, list []peers.LabPeer, explicit bool, log io.Writer) error {
	needed := slices.Clone(trafficTools)
	if slices.ContainsFunc(sc.Uplinks, func(u scenarios.UplinkSpec) bool { return u.NAT }) {
		needed = append(needed, labnet.Tool{Binary: "nft", Package: "nftables"})
	}
	missing := labnet.MissingTools(needed)
	var skipped []string
	var peerMissing []labnet.Tool
	for _, p := range list {
		tu, ok := p.(toolUser)
		if !ok {
			continue
		}
		if m := labnet.MissingTools(tu.Tools()); len(m) > 0 {
			skipped = append(skipped, p.Name())
			peerMissing = append(peerMissing, m...)
		}
	}
	if len(missing) > 0 || explicit && len(peerMissing) > 0 {
		return errors.New(labnet.DescribeMissing(labnet.MissingTools(append(missing, peerMissing...))))
	}
	if len(peerMissing) > 0 {
		fmt.Fprintf(log, "%s; without them %s will be skipped\n", labnet.DescribeMissing(labnet.MissingTools(peerMissing)), strings.Join(skipped, ", "))
	}
	return nil
}

// recordScenario stores the runner's outcome in the row.
func recordScenario(r *report.PeerRun, o peerOutcome) {
	r.Version, r.WallClockSeconds, r.Skipped = o.version, o.wallClock, o.skipped
	r.Errors = append(r.Errors, o.errors...)
}

// measureScenario brings the peer up on n and runs the scenario's
// timeline; the runner tears everything down again.
func measureScenario(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario, peer peers.LabPeer, cfg ScenarioConfig, setupStart time.Time, run *report.PeerRun) error {
	log := cfg.Log
	defer func() { run.Logs = n.ProcessLogs() }()
	if err := n.PinGateway(ctx, n.Uplink(sc.Client.Interface)); err != nil {
		return err
	}
	if hasNoTunnel(peer) {
		fmt.Fprintf(log, "%s: setting up (%s)\n", peer.Name(), peer.Version())
	} else {
		fmt.Fprintf(log, "%s: bringing the tunnel up over %s (%s)\n", peer.Name(), sc.Client.Interface, peer.Version())
	}
	setupCtx, cancel := context.WithTimeout(ctx, peerSetupTimeout)
	err := peer.Setup(setupCtx, n, sc)
	cancel()
	if err != nil {
		return err
	}
	run.SetupSeconds = report.RoundTo(time.Since(setupStart).Seconds(), 2)
	fmt.Fprintf(log, "%s: ready after %.1fs; running %s for %s\n", peer.Name(), run.SetupSeconds, sc.Name, sc.Duration)
	return runTimeline(ctx, n, sc, peer, cfg, run)
}

// runTimeline starts the traffic, samples the links and applies the events
// on the scenario's clock, then collects the results into run.
func runTimeline(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario, peer peers.LabPeer, cfg ScenarioConfig, run *report.PeerRun) error {
	// A short lead lets every goroutine be ready at time zero.
	base := time.Now().Add(50 * time.Millisecond)
	// Every peer meets the same stretch of a trace-driven link's trace.
	n.StartTraces(base)
	total := sc.Duration.D()
	var wg sync.WaitGroup
	timelineCtx, stopTimeline := context.WithCancel(ctx)
	defer stopTimeline()

	failed := make([]bool, len(n.Uplinks))
	var failedMu sync.Mutex
	var samples []report.Sample
	wg.Go(func() {
		samples = sampleLinks(timelineCtx, n, base, total, func() []bool {
			failedMu.Lock()
			defer failedMu.Unlock()
			return append([]bool(nil), failed...)
		}, func(elapsed time.Duration) {
			if cfg.Tick != nil {
				cfg.Tick(peer.Name(), elapsed, total)
			}
		})
	})

	var eventErr error
	wg.Go(func() {
		for _, e := range sc.Events {
			if !labnet.SleepUntil(timelineCtx, base.Add(e.At.D())) {
				return
			}
			i := sc.UplinkIndex(e.Uplink)
			if err := n.Apply(timelineCtx, n.Uplinks[i], e); err != nil {
				eventErr = errors.Join(eventErr, err)
				continue
			}
			failedMu.Lock()
			switch e.Action {
			case scenarios.ActionDown, scenarios.ActionUnplug:
				failed[i] = true
			case scenarios.ActionUp, scenarios.ActionPlug:
				failed[i] = false
			}
			failedMu.Unlock()
			fmt.Fprintf(cfg.Log, "%s: %5.1fs %s\n", peer.Name(), e.At.D().Seconds(), e.Describe())
		}
	})

	results := make([]report.TrafficResult, len(sc.Traffic))
	var probe *traffic.ProbeStream
	var probeErr error
	for i, t := range sc.Traffic {
		results[i] = report.TrafficResult{Kind: t.Kind, Direction: t.Direction, Streams: t.Streams,
			StartS: t.Start.D().Seconds(), Seconds: t.Duration.D().Seconds()}
		if t.Kind == scenarios.TrafficProbe {
			probe = &traffic.ProbeStream{To: netip.AddrPortFrom(labnet.LabServerAddr, traffic.ProbePort),
				Start: t.Start.D(), Interval: t.Interval.D(), Size: int(t.Size), Count: int(t.Duration.D() / t.Interval.D())}
			wg.Go(func() { probeErr = runProbe(timelineCtx, n, probe, peer.ClientAddr(), base) })
			continue
		}
		port := uint16(trafficPort + i)
		wg.Go(func() {
			if !labnet.SleepUntil(timelineCtx, base.Add(t.Start.D())) {
				results[i].Error = "not started: interrupted"
				return
			}
			runLabTraffic(timelineCtx, n, t, sc.TCPCongestion, port, peer, base, &results[i])
		})
	}
	// The timeline ends at the scenario's end; traffic still running then
	// (data in flight through a dead tunnel) gets a short grace.
	go func() {
		labnet.SleepUntil(timelineCtx, base.Add(total+trafficGrace))
		stopTimeline()
	}()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	run.Samples = samples
	run.Traffic = results
	if ts, ok := peer.(tunnelStater); ok {
		run.Tunnel = ts.TunnelState()
	}
	if probe != nil {
		if summary, ok := probe.Summary(); ok {
			run.Probe = &summary
			if probeErr != nil {
				run.Errors = append(run.Errors, "probe: "+probeErr.Error())
			}
		}
	}
	run.Summarize(sc)
	if mp, ok := peer.(multipathPeer); ok && mp.MultipathTCP() {
		run.Tunnel = joinNonEmpty(run.Tunnel, uplinkShares(run, sc))
	}
	return eventErr
}

// uplinkShares says how the run's bytes in the main direction split over
// the uplinks (the emulators' counters), so that a multipath transport that
// left an uplink unused shows it.
func uplinkShares(run *report.PeerRun, sc *scenarios.Scenario) string {
	dirs := sc.Directions()
	var total uint64
	bytes := make([]uint64, len(run.Paths))
	for i, p := range run.Paths {
		bytes[i] = p.UpBytes
		if dirs[0] == "down" {
			bytes[i] = p.DownBytes
		}
		total += bytes[i]
	}
	if total == 0 {
		return "no bytes crossed the uplinks"
	}
	var parts, unused []string
	for i, p := range run.Paths {
		share := float64(bytes[i]) / float64(total)
		parts = append(parts, fmt.Sprintf("%s %.0f%%", p.Uplink, 100*share))
		if share < 0.01 {
			unused = append(unused, p.Uplink)
		}
	}
	text := fmt.Sprintf("bytes %s per uplink: %s", dirs[0], strings.Join(parts, ", "))
	if len(unused) > 0 {
		text += fmt.Sprintf(" (%s carried less than 1%%: no subflow used it)", strings.Join(unused, ", "))
	}
	return text
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// trafficGrace is how long after the scenario's end the receivers of the
// traffic wait for data still in flight before the flows are cut off.
const trafficGrace = 4 * time.Second

// sampleLinks reads every uplink's emulator counters every sampleEvery
// from base until base+total, and returns the samples.
func sampleLinks(ctx context.Context, n *labnet.LabNet, base time.Time, total time.Duration, failed func() []bool, tick func(time.Duration)) []report.Sample {
	samples := make([]report.Sample, 0, int(total/sampleEvery)+2)
	for k := 0; ; k++ {
		if !labnet.SleepUntil(ctx, base.Add(time.Duration(k)*sampleEvery)) {
			return samples
		}
		now := time.Since(base)
		down := failed()
		s := report.Sample{T: report.RoundTo(now.Seconds(), 3), Uplinks: make([]report.UplinkSample, len(n.Uplinks))}
		for i, u := range n.Uplinks {
			st := u.Stats()
			s.Uplinks[i] = report.UplinkSample{
				UpBytes: st.AtoB.DeliveredBytes, DownBytes: st.BtoA.DeliveredBytes,
				Drops:  st.AtoB.LossDrops + st.AtoB.QueueDrops + st.AtoB.DownDrops + st.BtoA.LossDrops + st.BtoA.QueueDrops + st.BtoA.DownDrops,
				Failed: down[i],
			}
		}
		samples = append(samples, s)
		tick(now)
		if now >= total {
			return samples
		}
	}
}

// multipathPeer is a peer whose traffic runs as MPTCP connections.
type multipathPeer interface{ MultipathTCP() bool }

// hasNoTunnel reports whether the peer carries the traffic without a
// tunnel (kernel MPTCP).
func hasNoTunnel(peer peers.LabPeer) bool {
	mp, ok := peer.(multipathPeer)
	return ok && mp.MultipathTCP()
}

// runLabTraffic runs one tcp or udp traffic entry (TCP with congestion
// control cc) from the client
// namespace to the protected server, in this process.
func runLabTraffic(ctx context.Context, n *labnet.LabNet, t scenarios.TrafficSpec, cc string, port uint16, peer peers.LabPeer, base time.Time, result *report.TrafficResult) {
	server := netip.AddrPortFrom(labnet.LabServerAddr, port)
	if t.Kind == scenarios.TrafficUDP {
		runLabUDP(ctx, n, t, server, peer.ClientAddr(), result)
		return
	}
	mp, _ := peer.(multipathPeer)
	flow := flowSpec{clientNS: n.Client, serverNS: n.Protected, server: server, bind: peer.ClientAddr(),
		streams: t.Streams, direction: t.Direction, duration: t.Duration.D(), base: base,
		mptcp: mp != nil && mp.MultipathTCP(), cc: cc}
	res, err := flow.run(ctx)
	if res == nil {
		if ctx.Err() != nil {
			result.Error = "the flow had not connected when the scenario ended (the tunnel was not carrying traffic)"
		} else {
			result.Error = err.Error()
		}
		return
	}
	result.Flow = res
	mbps, retransmits := report.RoundTo(res.Mbps, 2), res.Retransmits
	result.Mbps, result.Retransmits = &mbps, &retransmits
	result.Bytes = res.Bytes
	result.RTTMeanMs, result.RTTMaxMs = res.RTTMeanMs, res.RTTMaxMs
	result.MultipathTCP, result.Subflows = res.MultipathTCP, res.Subflows
	result.SlowStartEnd, result.FirstRetransmits = res.SlowStartEnd, res.FirstRetransmits
	result.Goodput = res.Intervals
	if res.Incomplete != "" {
		result.Error = "cut short: " + res.Incomplete
	}
}

// runLabUDP runs a paced UDP stream from the client namespace (up) or to
// it (down).
func runLabUDP(ctx context.Context, n *labnet.LabNet, t scenarios.TrafficSpec, server netip.AddrPort, bind netip.Addr, result *report.TrafficResult) {
	from := netip.IPv4Unspecified()
	if bind.IsValid() {
		from = bind
	}
	serverConn, err := labnet.ListenUDPIn(n.Protected, netip.AddrPortFrom(netip.IPv4Unspecified(), server.Port()))
	if err != nil {
		result.Error = err.Error()
		return
	}
	defer serverConn.Close()
	var clientConn *net.UDPConn
	err = labnet.InNamespace(n.Client, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), net.UDPAddrFromAddrPort(server))
		clientConn = c
		return err
	})
	if err != nil {
		result.Error = fmt.Sprintf("UDP socket in namespace %s: %v", n.Client, err)
		return
	}
	defer clientConn.Close()
	stream := &traffic.UDP{Sender: clientConn, Receiver: serverConn, Rate: float64(t.Rate), Duration: t.Duration.D()}
	if t.Direction == "down" {
		// The server sends from its port to where the client's datagrams
		// come from, so the client's connected socket takes them.
		to, err := learnClient(ctx, clientConn, serverConn)
		if err != nil {
			result.Error = err.Error()
			return
		}
		stream.Sender, stream.To, stream.Receiver = serverConn, to, clientConn
	}
	res, err := stream.Run(ctx)
	if err != nil && res == nil {
		result.Error = err.Error()
		return
	}
	mbps, lost := report.RoundTo(res.Mbps, 2), res.LossPercent
	result.Mbps, result.LossPercent = &mbps, &lost
	if ctx.Err() != nil {
		result.Error = "interrupted"
	}
}

// learnClient has the client send datagrams until one reaches the server,
// and returns the client's address as the server sees it (the tunnel's
// inner address, or a NAT's).
func learnClient(ctx context.Context, client, server *net.UDPConn) (netip.AddrPort, error) {
	buf := make([]byte, 64)
	defer server.SetReadDeadline(time.Time{})
	for range 20 {
		if _, err := client.Write([]byte("hello")); err != nil && ctx.Err() != nil {
			return netip.AddrPort{}, ctx.Err()
		}
		server.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		if _, from, err := server.ReadFromUDPAddrPort(buf); err == nil {
			return from, nil
		}
	}
	return netip.AddrPort{}, errors.New("udp down: the client's datagrams never reached the server")
}

// tunnelStater is a peer that can describe its tunnel's state after the
// run (reconnections, addresses).
type tunnelStater interface{ TunnelState() string }

// peerSetupTimeout bounds bringing one tunnel up.
const peerSetupTimeout = 30 * time.Second

// runProbe runs the probe stream from the client namespace (from bind when
// valid) to the protected network.
func runProbe(ctx context.Context, n *labnet.LabNet, probe *traffic.ProbeStream, bind netip.Addr, base time.Time) error {
	rx, err := labnet.ListenUDPIn(n.Protected, netip.AddrPortFrom(netip.IPv4Unspecified(), probe.To.Port()))
	if err != nil {
		return err
	}
	defer rx.Close()
	from := netip.IPv4Unspecified()
	if bind.IsValid() {
		from = bind
	}
	tx, err := labnet.ListenUDPIn(n.Client, netip.AddrPortFrom(from, 0))
	if err != nil {
		return err
	}
	defer tx.Close()
	return probe.Run(ctx, tx, rx, base)
}
