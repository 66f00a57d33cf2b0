package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// sampleEvery is how often the emulators' counters are read for the
// per-path throughput over time.
const sampleEvery = 100 * time.Millisecond

// ScenarioConfig says how to run a scenario.
type ScenarioConfig struct {
	PeerOptions
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
func RunScenario(ctx context.Context, lab *Lab, sc *Scenario, cfg ScenarioConfig) (*ScenarioReport, error) {
	log := cfg.Log
	if log == nil {
		log = io.Discard
		cfg.Log = log
	}
	names := sc.Peers
	if len(cfg.Peers) > 0 {
		names = cfg.Peers
	}
	var peers []labPeer
	for _, name := range names {
		peer, err := newLabPeer(name, cfg.PeerOptions)
		if err != nil {
			return nil, err
		}
		peers = append(peers, peer)
	}
	if len(peers) == 0 {
		return nil, errors.New("no peers to measure")
	}
	if err := checkTrafficTools(); err != nil {
		return nil, err
	}
	report := newScenarioReport(sc)
	var failures []error
	for _, peer := range peers {
		run, err := runLabPeer(ctx, lab, sc, peer, cfg)
		report.Runs = append(report.Runs, run)
		if ctx.Err() != nil {
			report.finish()
			return report, fmt.Errorf("scenario %s interrupted during %s: %w", sc.Name, peer.Name(), ctx.Err())
		}
		if err != nil {
			failures = append(failures, fmt.Errorf("%s: %w", peer.Name(), err))
			if !cfg.KeepGoing {
				break
			}
		}
	}
	report.finish()
	return report, errors.Join(failures...)
}

// runLabPeer measures one peer; the error is nil for a skipped peer.
func runLabPeer(ctx context.Context, lab *Lab, sc *Scenario, peer labPeer, cfg ScenarioConfig) (PeerRun, error) {
	start := time.Now()
	run := PeerRun{Peer: peer.Name(), Behaviour: peer.Behaviour(sc)}
	err := measureLabPeer(ctx, lab, sc, peer, cfg, &run)
	run.Version = peer.Version()
	run.WallClockSeconds = roundTo(time.Since(start).Seconds(), 1)
	if err == nil || ctx.Err() != nil {
		if ctx.Err() != nil {
			run.Errors = append(run.Errors, "interrupted: "+ctx.Err().Error())
		}
		return run, err
	}
	reason, skipped := skipReason(err)
	if optional, ok := peer.(optionalPeer); ok && optional.Optional() && !skipped {
		reason, skipped = err.Error(), true
	}
	if skipped {
		run.Skipped = reason
		fmt.Fprintf(cfg.Log, "%s: skipped: %s\n", peer.Name(), reason)
		return run, nil
	}
	run.Errors = append(run.Errors, err.Error())
	fmt.Fprintf(cfg.Log, "%s: failed: %v\n", peer.Name(), err)
	return run, err
}

func measureLabPeer(ctx context.Context, lab *Lab, sc *Scenario, peer labPeer, cfg ScenarioConfig, run *PeerRun) (err error) {
	log := cfg.Log
	if err := peer.Prepare(ctx); err != nil {
		return err
	}
	fmt.Fprintf(log, "%s: building the topology (%d uplinks, emulated links)\n", peer.Name(), len(sc.Uplinks))
	setupStart := time.Now()
	n, err := lab.NewLabNet(ctx, sc.Name+"-"+peer.Name(), sc.Uplinks)
	if err != nil {
		return err
	}
	defer func() {
		run.Logs = n.processLogs()
		err = errors.Join(err, peer.Teardown(), n.Close())
	}()
	if err := n.pinGateway(ctx, n.uplink(sc.Client.Interface)); err != nil {
		return err
	}
	fmt.Fprintf(log, "%s: bringing the tunnel up over %s (%s)\n", peer.Name(), sc.Client.Interface, peer.Version())
	setupCtx, cancel := context.WithTimeout(ctx, peerSetupTimeout)
	err = peer.Setup(setupCtx, n, sc)
	cancel()
	if err != nil {
		return err
	}
	run.SetupSeconds = roundTo(time.Since(setupStart).Seconds(), 2)
	servers, err := startIperfServers(ctx, n, sc)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "%s: tunnel up after %.1fs; running %s for %s\n", peer.Name(), run.SetupSeconds, sc.Name, sc.Duration)
	return runTimeline(ctx, n, sc, peer, cfg, servers, run)
}

// startIperfServers starts one iperf3 server in the protected network per
// tcp or udp traffic entry, on ports iperfPort, iperfPort+1, ...
func startIperfServers(ctx context.Context, n *LabNet, sc *Scenario) (map[int]int, error) {
	ports := map[int]int{}
	for i, t := range sc.Traffic {
		if t.Kind == TrafficProbe {
			continue
		}
		port := iperfPort + len(ports)
		server, err := n.Start(n.Protected, "iperf3 server :"+strconv.Itoa(port), nil,
			"iperf3", "--server", "--one-off", "--port", strconv.Itoa(port))
		if err != nil {
			return nil, err
		}
		if err := waitListeningIn(ctx, n, n.Protected, server, port); err != nil {
			return nil, err
		}
		ports[i] = port
	}
	return ports, nil
}

// runTimeline starts the traffic, samples the links and applies the events
// on the scenario's clock, then collects the results into run.
func runTimeline(ctx context.Context, n *LabNet, sc *Scenario, peer labPeer, cfg ScenarioConfig, ports map[int]int, run *PeerRun) error {
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
	var samples []Sample
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
			if !sleepUntil(timelineCtx, base.Add(e.At.D())) {
				return
			}
			i := sc.uplinkIndex(e.Uplink)
			if err := n.apply(timelineCtx, n.Uplinks[i], e); err != nil {
				eventErr = errors.Join(eventErr, err)
				continue
			}
			failedMu.Lock()
			switch e.Action {
			case ActionDown, ActionUnplug:
				failed[i] = true
			case ActionUp, ActionPlug:
				failed[i] = false
			}
			failedMu.Unlock()
			fmt.Fprintf(cfg.Log, "%s: %5.1fs %s\n", peer.Name(), e.At.D().Seconds(), e.describe())
		}
	})

	results := make([]TrafficResult, len(sc.Traffic))
	var probe *probeStream
	var probeErr error
	for i, t := range sc.Traffic {
		results[i] = TrafficResult{Kind: t.Kind, Direction: t.Direction, Streams: t.Streams,
			StartS: t.Start.D().Seconds(), Seconds: t.Duration.D().Seconds()}
		if t.Kind == TrafficProbe {
			probe = &probeStream{src: n.Client, dst: n.Protected, to: netip.AddrPortFrom(labServerAddr, probePort),
				start: t.Start.D(), interval: t.Interval.D(), size: int(t.Size), count: int(t.Duration.D() / t.Interval.D()), bind: peer.ClientAddr()}
			wg.Go(func() { probeErr = probe.run(timelineCtx, base) })
			continue
		}
		wg.Go(func() {
			if !sleepUntil(timelineCtx, base.Add(t.Start.D())) {
				results[i].Error = "not started: interrupted"
				return
			}
			runLabIperf(timelineCtx, n, t, ports[i], peer.ClientAddr(), &results[i])
		})
	}
	// The timeline ends at the scenario's end; traffic still running then
	// (iperf3 waiting for a dead tunnel) gets a short grace.
	go func() {
		sleepUntil(timelineCtx, base.Add(total+iperfGrace))
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
	if probe != nil && probe.rec != nil {
		summary := probe.rec.summarize()
		run.Probe = &summary
		if probeErr != nil {
			run.Errors = append(run.Errors, "probe: "+probeErr.Error())
		}
	}
	run.summarize(sc)
	return eventErr
}

// iperfGrace is how long after the scenario's end an iperf3 client may
// still be busy reporting before it is stopped.
const iperfGrace = 4 * time.Second

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// sampleLinks reads every uplink's emulator counters every sampleEvery
// from base until base+total, and returns the samples.
func sampleLinks(ctx context.Context, n *LabNet, base time.Time, total time.Duration, failed func() []bool, tick func(time.Duration)) []Sample {
	samples := make([]Sample, 0, int(total/sampleEvery)+2)
	for k := 0; ; k++ {
		if !sleepUntil(ctx, base.Add(time.Duration(k)*sampleEvery)) {
			return samples
		}
		now := time.Since(base)
		down := failed()
		s := Sample{T: roundTo(now.Seconds(), 3), Uplinks: make([]UplinkSample, len(n.Uplinks))}
		for i, u := range n.Uplinks {
			st := u.Stats()
			s.Uplinks[i] = UplinkSample{
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

// runLabIperf runs one iperf3 client in the client namespace.
func runLabIperf(ctx context.Context, n *LabNet, t TrafficSpec, port int, bind netip.Addr, result *TrafficResult) {
	args := []string{"iperf3", "--client", labServerAddr.String(), "--port", strconv.Itoa(port),
		"--time", strconv.Itoa(int(t.Duration.D() / time.Second)), "--json", "--connect-timeout", "3000",
		"--parallel", strconv.Itoa(t.Streams)}
	if t.Kind == TrafficUDP {
		args = append(args, "--udp", "--bitrate", strconv.FormatFloat(float64(t.Rate), 'f', 0, 64))
	}
	if bind.IsValid() {
		args = append(args, "--bind", bind.String())
	}
	if t.Direction == "down" {
		args = append(args, "--reverse")
	}
	out, runErr := n.Run(ctx, n.Client, args...)
	mbps, retransmits, lost, parseErr := parseIperfSummary([]byte(jsonPart(out)))
	switch {
	case parseErr == nil:
		result.Mbps, result.Retransmits, result.LossPercent = &mbps, retransmits, lost
	case ctx.Err() != nil:
		result.Error = "iperf3 had not finished when the scenario ended (the tunnel was not carrying traffic)"
	case runErr != nil:
		result.Error = fmt.Sprintf("%v (%v)", parseErr, firstLine(runErr.Error()))
	default:
		result.Error = parseErr.Error()
	}
}

// parseIperfSummary reads the received rate of a TCP or UDP iperf3 test,
// with TCP's retransmits or UDP's loss.
func parseIperfSummary(data []byte) (mbps float64, retransmits *int, lossPercent *float64, err error) {
	var udp struct {
		Start struct {
			TestStart struct {
				Protocol string `json:"protocol"`
			} `json:"test_start"`
		} `json:"start"`
		End struct {
			Sum *struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				LostPercent   float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(data, &udp); err != nil {
		return 0, nil, nil, fmt.Errorf("parse iperf3 JSON output: %w", err)
	}
	if udp.Error != "" {
		return 0, nil, nil, fmt.Errorf("iperf3: %s", udp.Error)
	}
	switch udp.Start.TestStart.Protocol {
	case "TCP":
		r, err := ParseIperfJSON(data)
		if err != nil {
			return 0, nil, nil, err
		}
		mbps = roundTo(r.Mbps(), 2)
		return mbps, &r.Retransmits, nil, nil
	case "UDP":
		if udp.End.Sum == nil {
			return 0, nil, nil, errors.New("iperf3 UDP output has no end.sum")
		}
		mbps = roundTo(udp.End.Sum.BitsPerSecond/1e6, 2)
		lost := roundTo(udp.End.Sum.LostPercent, 2)
		return mbps, nil, &lost, nil
	}
	return 0, nil, nil, fmt.Errorf("iperf3 output for unknown protocol %q", udp.Start.TestStart.Protocol)
}

// waitListeningIn polls until namespace ns listens on the TCP port.
func waitListeningIn(ctx context.Context, n *LabNet, ns string, server *Process, port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := n.Run(ctx, ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if err == nil && len(out) > 0 {
			return nil
		}
		if server.Exited() {
			return fmt.Errorf("%s ended before listening:\n%s", server.Name(), server.Describe())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on port %d after 10s:\n%s", server.Name(), port, server.Describe())
		}
		if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			return ctx.Err()
		}
	}
}
