package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/bench/linkemu"
	"github.com/mifsec/mifsec/bench/scenarios"
	"github.com/mifsec/mifsec/bench/traffic"
)

// ScenarioReport is everything one scenario run measured, for every peer.
type ScenarioReport struct {
	Scenario        string          `json:"scenario"`
	Description     string          `json:"description"`
	Source          string          `json:"source"`
	StartedAt       time.Time       `json:"started_at"`
	DurationSeconds float64         `json:"duration_seconds"`
	Machine         MachineInfo     `json:"machine"`
	Uplinks         []UplinkInfo    `json:"uplinks"`
	Events          []EventInfo     `json:"events"`
	ClientInterface string          `json:"client_interface"`
	Runs            []PeerRun       `json:"runs"`
	Ratios          []ScenarioRatio `json:"mifsec_ratios,omitempty"`
	// SingleLinks compares mifsec with the sum of its single-link
	// baselines (peers mifsec@UPLINK) of the same run: aggregation.
	SingleLinks *SingleLinkRatio `json:"single_links,omitempty"`
	Notes       []string         `json:"notes,omitempty"`
	// Directions are the directions of the scenario's iperf3 traffic, the
	// main one first; the summary and the plot show them.
	Directions []string `json:"directions"`
	// TCPCongestion is the congestion control of the TCP flows.
	TCPCongestion string `json:"tcp_congestion"`
}

// UplinkInfo describes an uplink as the run began.
type UplinkInfo struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Metric int    `json:"metric"`
	NAT    bool   `json:"nat"`
	// Gateway marks an uplink of the gateway's (its up is towards the
	// gateway too).
	Gateway bool   `json:"gateway,omitempty"`
	Up      string `json:"up"`
	Down    string `json:"down"`
}

// EventInfo is one event of the timeline.
type EventInfo struct {
	AtS    float64 `json:"at_s"`
	Uplink string  `json:"uplink"`
	Action string  `json:"action"`
	What   string  `json:"what"`
}

// PeerRun is one peer's measurement of the scenario.
type PeerRun struct {
	Peer             string   `json:"peer"`
	Version          string   `json:"version,omitempty"`
	Behaviour        string   `json:"behaviour"`
	Skipped          string   `json:"skipped,omitempty"`
	Errors           []string `json:"errors,omitempty"`
	SetupSeconds     float64  `json:"setup_seconds,omitempty"`
	WallClockSeconds float64  `json:"wall_clock_seconds"`
	// Tunnel is the client's own account of its tunnel after the run.
	Tunnel string `json:"tunnel,omitempty"`
	// Paths has one entry per uplink, Total their sum.
	Paths         []PathSummary         `json:"paths,omitempty"`
	Total         *PathSummary          `json:"total,omitempty"`
	Traffic       []TrafficResult       `json:"traffic,omitempty"`
	Probe         *traffic.ProbeSummary `json:"probe,omitempty"`
	Interruptions []Interruption        `json:"interruptions,omitempty"`
	Samples       []Sample              `json:"samples,omitempty"`
	// Logs holds the recent output of each process the run started, by
	// process name (written beside the report, not into it).
	Logs map[string]string `json:"-"`

	// NoTunnel: the peer carries the traffic without a tunnel (mptcp).
	NoTunnel bool `json:"-"`
}

// Sample is the emulators' counters at time T (seconds since the traffic
// started), one entry per uplink.
type Sample struct {
	T       float64        `json:"t"`
	Uplinks []UplinkSample `json:"uplinks"`
}

// UplinkSample is one uplink in one sample. Bytes are what the emulator
// delivered (cumulative); the rates are over the previous sample interval.
type UplinkSample struct {
	UpBytes   uint64  `json:"up_bytes"`
	DownBytes uint64  `json:"down_bytes"`
	UpMbps    float64 `json:"up_mbps"`
	DownMbps  float64 `json:"down_mbps"`
	Drops     uint64  `json:"drops"`
	// Failed is true while the uplink is down or unplugged.
	Failed bool `json:"failed,omitempty"`
}

// PathSummary is an uplink's mean rates over the run and over each phase
// between events.
type PathSummary struct {
	Uplink    string      `json:"uplink"`
	Kind      string      `json:"kind,omitempty"`
	UpMbps    float64     `json:"up_mbps"`
	DownMbps  float64     `json:"down_mbps"`
	UpBytes   uint64      `json:"up_bytes"`
	DownBytes uint64      `json:"down_bytes"`
	Phases    []PhaseRate `json:"phases"`
}

// PhaseRate is the mean rate between two events.
type PhaseRate struct {
	FromS    float64 `json:"from_s"`
	ToS      float64 `json:"to_s"`
	UpMbps   float64 `json:"up_mbps"`
	DownMbps float64 `json:"down_mbps"`
}

// TrafficResult is one traffic entry's outcome as the lab's traffic
// generator (bench/traffic) measured it: goodput at the receivers, the
// senders' retransmissions and RTT from TCP_INFO, UDP's loss.
type TrafficResult struct {
	Kind        string   `json:"kind"`
	Direction   string   `json:"direction"`
	Streams     int      `json:"streams,omitempty"`
	StartS      float64  `json:"start_s"`
	Seconds     float64  `json:"seconds"`
	Mbps        *float64 `json:"mbps,omitempty"`
	Retransmits *int     `json:"retransmits,omitempty"`
	LossPercent *float64 `json:"loss_percent,omitempty"`
	// Bytes is the TCP payload the receivers got.
	Bytes int64 `json:"bytes,omitempty"`
	// RTTMeanMs and RTTMaxMs are the senders' smoothed RTT (TCP_INFO).
	RTTMeanMs float64 `json:"rtt_mean_ms,omitempty"`
	RTTMaxMs  float64 `json:"rtt_max_ms,omitempty"`
	// MultipathTCP is true when the connections ran as MPTCP; Subflows is
	// the most subflows one of them had.
	MultipathTCP bool `json:"multipath_tcp,omitempty"`
	Subflows     int  `json:"subflows,omitempty"`
	// SlowStartEnd is when the (first) sender left slow start.
	SlowStartEnd *traffic.SlowStartEnd `json:"slow_start_end,omitempty"`
	// FirstRetransmits are the first readings at which that sender had
	// retransmitted more, with its window.
	FirstRetransmits []traffic.RetransmitEvent `json:"first_retransmits,omitempty"`
	// Goodput is the received rate per 100 ms (t: end of the interval,
	// seconds since the scenario's start).
	Goodput []traffic.Interval `json:"goodput,omitempty"`
	Error   string             `json:"error,omitempty"`

	// Flow is the whole measurement, with the acknowledged bytes every
	// 10 ms that the stalls are computed from (not in the JSON report).
	Flow *traffic.Result `json:"-"`
}

// Interruption is what an event (a link failing, degrading or returning)
// did to the traffic: how long the probe stream got nothing through, and
// how long the TCP flow made no progress.
type Interruption struct {
	Event  string  `json:"event"`
	Action string  `json:"action"`
	AtS    float64 `json:"at_s"`
	// Seconds, Lost and Recovered are the probe stream's outage after the
	// event; None is true when no probe was lost around it.
	Seconds   float64 `json:"seconds"`
	Lost      int     `json:"lost_probes"`
	Recovered bool    `json:"recovered"`
	None      bool    `json:"none,omitempty"`
	// TCPStallSeconds is the longest time, from the event until the next
	// one (or the end), in which the TCP flow had no new bytes
	// acknowledged (the senders' TCP_INFO read every 10 ms); nil without a
	// TCP flow running. TCPRetransmits is what the senders retransmitted
	// from the event until a second after that stall; TCPRecovered is
	// false when the flow never moved again before the window's end.
	TCPStallSeconds *float64 `json:"tcp_stall_seconds,omitempty"`
	TCPStallFromS   *float64 `json:"tcp_stall_from_s,omitempty"`
	TCPRetransmits  *int     `json:"tcp_retransmits,omitempty"`
	TCPRecovered    *bool    `json:"tcp_recovered,omitempty"`
	// TCPLowSeconds is the longest run of 100 ms intervals in the same
	// window in which the flow's goodput stayed below lowGoodputFraction
	// of its mean over the run: a flow that trickles (a packet now and
	// then ends a stall) is as good as stopped for its user.
	TCPLowSeconds *float64 `json:"tcp_low_seconds,omitempty"`
}

// slowStartCause says whether a sender that left slow start had lost
// anything by then.
func slowStartCause(retransmits uint32) string {
	if retransmits == 0 {
		return "without a loss (the congestion control's own exit)"
	}
	return fmt.Sprintf("after %d retransmits", retransmits)
}

// lowGoodputFraction is the share of a flow's mean goodput below which an
// interval counts as a user would feel a stop.
const lowGoodputFraction = 0.1

// SingleLinkRatio is mifsec's rate against what each uplink alone carried
// through mifsec in the same run.
type SingleLinkRatio struct {
	Links      map[string]float64 `json:"links_mbps"`
	SumMbps    float64            `json:"sum_mbps"`
	BestMbps   float64            `json:"best_mbps"`
	MifsecMbps float64            `json:"mifsec_mbps"`
	OfSum      float64            `json:"of_sum"`
	OfBest     float64            `json:"of_best"`
}

// ScenarioRatio compares mifsec with another peer of the same run:
// Throughput is mifsec's mean total rate over the peer's (higher is
// better for mifsec); Interruption is mifsec's total interruption over the
// peer's (lower is better).
type ScenarioRatio struct {
	Peer         string   `json:"peer"`
	Throughput   *float64 `json:"throughput"`
	Interruption *float64 `json:"interruption"`
	// The totals the ratios come from: mean Mbit/s in the main direction
	// and seconds without traffic after failure events.
	MifsecMbps          *float64 `json:"mifsec_mbps"`
	PeerMbps            *float64 `json:"peer_mbps"`
	MifsecInterruptionS *float64 `json:"mifsec_interruption_s"`
	PeerInterruptionS   *float64 `json:"peer_interruption_s"`
}

// NewScenarioReport starts the report of a run of sc: the scenario, its
// links and events, and the machine, before any peer ran.
func NewScenarioReport(sc *scenarios.Scenario) *ScenarioReport {
	r := &ScenarioReport{
		Scenario: sc.Name, Description: sc.Description, Source: sc.Source(),
		StartedAt: time.Now().UTC().Truncate(time.Second), DurationSeconds: sc.Duration.D().Seconds(),
		Machine: ReadMachine(), ClientInterface: sc.Client.Interface, Notes: sc.Notes,
		Directions: sc.Directions(), TCPCongestion: sc.TCPCongestion,
	}
	for i, u := range sc.Links() {
		cfg := u.Shapes()
		r.Uplinks = append(r.Uplinks, UplinkInfo{Name: u.Name, Kind: u.Kind, Metric: u.Metric, NAT: u.NAT, Gateway: sc.IsGatewayLink(i),
			Up: describeShape(cfg.AtoB), Down: describeShape(cfg.BtoA)})
	}
	for _, e := range sc.Events {
		r.Events = append(r.Events, EventInfo{AtS: e.At.D().Seconds(), Uplink: e.Uplink, Action: e.Action, What: e.Describe()})
	}
	return r
}

// Finish computes the ratios once every peer ran.
func (r *ScenarioReport) Finish() {
	r.Ratios = nil
	i := slices.IndexFunc(r.Runs, func(p PeerRun) bool { return p.Peer == "mifsec" })
	if i < 0 {
		return
	}
	mifsec := r.Runs[i]
	r.SingleLinks = nil
	if m := mainRate(mifsec, r.Directions); m != nil {
		sl := &SingleLinkRatio{Links: map[string]float64{}, MifsecMbps: *m}
		for _, p := range r.Runs {
			uplink, ok := strings.CutPrefix(p.Peer, scenarios.SingleLinkPrefix)
			if v := mainRate(p, r.Directions); ok && v != nil {
				sl.Links[uplink] = *v
				sl.SumMbps += *v
				sl.BestMbps = max(sl.BestMbps, *v)
			}
		}
		if len(sl.Links) > 0 && sl.SumMbps > 0 {
			sl.OfSum, sl.OfBest = sl.MifsecMbps/sl.SumMbps, sl.MifsecMbps/sl.BestMbps
			r.SingleLinks = sl
		}
	}
	for _, p := range r.Runs {
		if p.Peer == "mifsec" {
			continue
		}
		ra := ScenarioRatio{Peer: p.Peer,
			MifsecMbps: mainRate(mifsec, r.Directions), PeerMbps: mainRate(p, r.Directions),
			MifsecInterruptionS: totalInterruption(mifsec), PeerInterruptionS: totalInterruption(p)}
		ra.Throughput = ratio(ra.MifsecMbps, ra.PeerMbps)
		ra.Interruption = ratio(ra.MifsecInterruptionS, ra.PeerInterruptionS)
		r.Ratios = append(r.Ratios, ra)
	}
}

// mainRate is the run's mean total rate in the scenario's first traffic
// direction; nil when not measured.
func mainRate(p PeerRun, dirs []string) *float64 {
	if p.Total == nil {
		return nil
	}
	v := p.Total.UpMbps
	if len(dirs) > 0 && dirs[0] == "down" {
		v = p.Total.DownMbps
	}
	return &v
}

// totalInterruption sums the run's interruptions in seconds; nil without
// a probe stream.
func totalInterruption(p PeerRun) *float64 {
	if p.Probe == nil {
		return nil
	}
	var sum float64
	for _, i := range p.Interruptions {
		if i.Action == scenarios.ActionDown || i.Action == scenarios.ActionUnplug || i.Action == "" {
			sum += i.Seconds
		}
	}
	return &sum
}

// longestStall is the longest TCP stall after any event of the run; nil
// when none was measured.
func longestStall(p PeerRun) *float64 {
	var longest *float64
	for _, i := range p.Interruptions {
		if i.TCPStallSeconds != nil && (longest == nil || *i.TCPStallSeconds > *longest) {
			longest = i.TCPStallSeconds
		}
	}
	return longest
}

// longestLow is the longest time after any event in which the TCP flow
// ran below lowGoodputFraction of its mean; nil when not measured.
func longestLow(p PeerRun) *float64 {
	var longest *float64
	for _, i := range p.Interruptions {
		if i.TCPLowSeconds != nil && (longest == nil || *i.TCPLowSeconds > *longest) {
			longest = i.TCPLowSeconds
		}
	}
	return longest
}

// tcpRetransmits sums the retransmits of the run's TCP flows; nil without
// one.
func tcpRetransmits(p PeerRun) *int {
	var sum *int
	for _, t := range p.Traffic {
		if t.Retransmits != nil {
			if sum == nil {
				sum = new(int)
			}
			*sum += *t.Retransmits
		}
	}
	return sum
}

// Ranked orders the runs that were measured by their mean throughput in
// the main direction, best first; the shorter longest TCP stall breaks a
// tie.
func (r *ScenarioReport) Ranked() []PeerRun {
	var runs []PeerRun
	for _, p := range r.Runs {
		if mainRate(p, r.Directions) != nil {
			runs = append(runs, p)
		}
	}
	slices.SortStableFunc(runs, func(a, b PeerRun) int {
		ra, rb := *mainRate(a, r.Directions), *mainRate(b, r.Directions)
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		sa, sb := longestStall(a), longestStall(b)
		if sa != nil && sb != nil {
			switch {
			case *sa < *sb:
				return -1
			case *sa > *sb:
				return 1
			}
		}
		return 0
	})
	return runs
}

// writeRanking writes the table of every measured peer side by side.
func (r *ScenarioReport) writeRanking(b *strings.Builder) {
	ranked := r.Ranked()
	if len(ranked) == 0 {
		return
	}
	dir := r.Directions[0]
	fmt.Fprintf(b, "\nPeers side by side, ranked by throughput (%s, mean over the run):\n", dir)
	header := []string{"  #  peer", "Mbit/s", "retransmits", "longest TCP stall", "TCP under 1/10 rate", "probe outage"}
	rows := [][]string{header}
	for i, p := range ranked {
		stall := "-"
		if s := longestStall(p); s != nil {
			stall = fmt.Sprintf("%.2fs", *s)
		}
		low := "-"
		if l := longestLow(p); l != nil {
			low = fmt.Sprintf("%.1fs", *l)
		}
		outage := "-"
		if o := totalInterruption(p); o != nil && r.hasFailures() {
			outage = fmt.Sprintf("%.2fs", *o)
		}
		rows = append(rows, []string{fmt.Sprintf("  %d  %s", i+1, p.Peer), FormatFloat(mainRate(p, r.Directions), 1),
			formatInt(tcpRetransmits(p)), stall, low, outage})
	}
	writeAligned(b, rows)
}

// Summarize fills the per-sample rates, the per-path and total summaries
// and the interruptions from the samples and the probe summary.
func (p *PeerRun) Summarize(sc *scenarios.Scenario) {
	fillRates(p.Samples)
	bounds := phaseBounds(sc)
	p.Paths = nil
	total := PathSummary{Uplink: "total"}
	for i, u := range sc.Links() {
		path := summarizePath(p.Samples, i, bounds)
		path.Uplink, path.Kind = u.Name, u.Kind
		p.Paths = append(p.Paths, path)
		if sc.IsGatewayLink(i) {
			continue // the client's uplinks carried the same traffic
		}
		total.UpMbps += path.UpMbps
		total.DownMbps += path.DownMbps
		total.UpBytes += path.UpBytes
		total.DownBytes += path.DownBytes
		if total.Phases == nil {
			total.Phases = make([]PhaseRate, len(path.Phases))
		}
		for k, ph := range path.Phases {
			total.Phases[k].FromS, total.Phases[k].ToS = ph.FromS, ph.ToS
			total.Phases[k].UpMbps += ph.UpMbps
			total.Phases[k].DownMbps += ph.DownMbps
		}
	}
	total.UpMbps, total.DownMbps = RoundTo(total.UpMbps, 2), RoundTo(total.DownMbps, 2)
	for k := range total.Phases {
		total.Phases[k].UpMbps, total.Phases[k].DownMbps = RoundTo(total.Phases[k].UpMbps, 2), RoundTo(total.Phases[k].DownMbps, 2)
	}
	p.Total = &total
	p.Interruptions = nil
	if p.Probe == nil && !slices.ContainsFunc(p.Traffic, func(t TrafficResult) bool { return t.Flow != nil }) {
		return
	}
	for k, e := range sc.Events {
		at := e.At.D().Seconds()
		in := Interruption{Event: e.Describe(), Action: e.Action, AtS: at}
		if p.Probe != nil {
			if o, ok := p.Probe.OutageAt(at); ok {
				in.Seconds, in.Lost, in.Recovered = o.Seconds, o.Lost, o.Recovered
			} else {
				in.None, in.Recovered = true, true
			}
		}
		// The event's effect on TCP lasts until the next event.
		until := sc.Duration.D().Seconds()
		for _, next := range sc.Events[k+1:] {
			if t := next.At.D().Seconds(); t > at {
				until = t
				break
			}
		}
		in.addStall(p.Traffic, at, until)
		p.Interruptions = append(p.Interruptions, in)
	}
}

// addStall fills the TCP figures from the longest stall of the flows
// running between from and to.
func (in *Interruption) addStall(flows []TrafficResult, from, to float64) {
	var worst *traffic.Stall
	retransmits := 0
	low := 0.0
	for _, t := range flows {
		if t.Flow == nil {
			continue
		}
		st, ok := t.Flow.Stall(from, to)
		if !ok {
			continue
		}
		// A stall is time below any rate; the 100 ms intervals may cut
		// it short at its edges.
		l, _ := t.Flow.LowGoodput(from, to, lowGoodputFraction)
		low = max(low, l, st.Seconds)
		retransmits += st.Retransmits
		if worst == nil || st.Seconds > worst.Seconds {
			worst = &st
		}
	}
	if worst == nil {
		return
	}
	seconds, start, recovered := worst.Seconds, worst.StartS, worst.Recovered
	in.TCPStallSeconds, in.TCPStallFromS, in.TCPRetransmits, in.TCPRecovered = &seconds, &start, &retransmits, &recovered
	in.TCPLowSeconds = &low
}

// fillRates computes each sample's rates from the byte counters.
func fillRates(samples []Sample) {
	for k := 1; k < len(samples); k++ {
		dt := samples[k].T - samples[k-1].T
		if dt <= 0 {
			continue
		}
		for i := range samples[k].Uplinks {
			cur, prev := &samples[k].Uplinks[i], samples[k-1].Uplinks[i]
			cur.UpMbps = RoundTo(mbps(cur.UpBytes-min(prev.UpBytes, cur.UpBytes), dt), 3)
			cur.DownMbps = RoundTo(mbps(cur.DownBytes-min(prev.DownBytes, cur.DownBytes), dt), 3)
		}
	}
}

func mbps(bytes uint64, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(bytes) * 8 / seconds / 1e6
}

// phaseBounds are 0, every distinct event time, and the end.
func phaseBounds(sc *scenarios.Scenario) []float64 {
	bounds := []float64{0}
	for _, e := range sc.Events {
		at := e.At.D().Seconds()
		if at > bounds[len(bounds)-1] && at < sc.Duration.D().Seconds() {
			bounds = append(bounds, at)
		}
	}
	return append(bounds, sc.Duration.D().Seconds())
}

// summarizePath computes uplink i's mean rates over the whole run and
// between consecutive bounds.
func summarizePath(samples []Sample, i int, bounds []float64) PathSummary {
	var s PathSummary
	if len(samples) == 0 {
		return s
	}
	first, last := samples[0], samples[len(samples)-1]
	s.UpBytes = last.Uplinks[i].UpBytes - first.Uplinks[i].UpBytes
	s.DownBytes = last.Uplinks[i].DownBytes - first.Uplinks[i].DownBytes
	span := last.T - first.T
	s.UpMbps, s.DownMbps = RoundTo(mbps(s.UpBytes, span), 2), RoundTo(mbps(s.DownBytes, span), 2)
	for k := 0; k+1 < len(bounds); k++ {
		a, b := sampleAt(samples, bounds[k]), sampleAt(samples, bounds[k+1])
		ph := PhaseRate{FromS: bounds[k], ToS: bounds[k+1]}
		if dt := b.T - a.T; dt > 0 {
			ph.UpMbps = RoundTo(mbps(b.Uplinks[i].UpBytes-min(a.Uplinks[i].UpBytes, b.Uplinks[i].UpBytes), dt), 2)
			ph.DownMbps = RoundTo(mbps(b.Uplinks[i].DownBytes-min(a.Uplinks[i].DownBytes, b.Uplinks[i].DownBytes), dt), 2)
		}
		s.Phases = append(s.Phases, ph)
	}
	return s
}

// sampleAt returns the last sample taken at or before t (the first one
// when t precedes them all).
func sampleAt(samples []Sample, t float64) Sample {
	k, _ := slices.BinarySearchFunc(samples, t, func(s Sample, t float64) int {
		switch {
		case s.T < t-1e-9:
			return -1
		case s.T > t+1e-9:
			return 1
		}
		return 0
	})
	if k < len(samples) && samples[k].T <= t+1e-9 {
		return samples[k]
	}
	return samples[max(k-1, 0)]
}

// describeShape writes one direction of a link for the report.
func describeShape(s linkemu.Shape) string {
	parts := []string{scenarios.FormatRate(s.Rate)}
	if t := s.Trace; t != nil {
		parts[0] = fmt.Sprintf("trace %s (mean %s)", t.Name(), scenarios.FormatRate(t.MeanRate()))
	}
	if s.Delay > 0 {
		d := s.Delay.String()
		if s.Jitter > 0 {
			d += " ± " + s.Jitter.String()
		}
		parts = append(parts, d)
	}
	if s.Loss > 0 {
		parts = append(parts, fmt.Sprintf("%.3g%% loss", s.Loss*100))
	}
	if s.Burst != nil {
		parts = append(parts, "burst loss")
	}
	if s.QueueTime > 0 {
		parts = append(parts, "queue "+s.QueueTime.String())
	} else if s.QueueBytes > 0 {
		parts = append(parts, fmt.Sprintf("queue %d bytes", s.QueueBytes))
	}
	return strings.Join(parts, ", ")
}

// WriteSummary prints what the newcomer wants to know: per peer, the
// throughput per path in each phase, the interruptions, loss and delay;
// then the ratios between the peers.
func (r *ScenarioReport) WriteSummary(w io.Writer) error {
	var b strings.Builder
	wrap(&b, "", fmt.Sprintf("Scenario %s (%s): %s", r.Scenario, r.Source, r.Description))
	for _, u := range r.Uplinks {
		nat := ""
		if u.NAT {
			nat = ", behind NAT"
		}
		fmt.Fprintf(&b, "  %-6s %-9s up %s; down %s%s\n", u.Name, u.Kind, u.Up, u.Down, nat)
	}
	for _, e := range r.Events {
		fmt.Fprintf(&b, "  at %5.1fs  %s\n", e.AtS, e.What)
	}
	for _, p := range r.Runs {
		b.WriteString("\n")
		r.writeRun(&b, p)
	}
	r.writeRanking(&b)
	if len(r.Ratios) > 0 {
		b.WriteString("\nmifsec compared with the other peers of this run:\n")
		for _, ra := range r.Ratios {
			fmt.Fprintf(&b, "  mifsec/%s: throughput %s (%s / %s Mbit/s)", ra.Peer,
				FormatFloat(ra.Throughput, 2), FormatFloat(ra.MifsecMbps, 1), FormatFloat(ra.PeerMbps, 1))
			if r.hasFailures() && (ra.MifsecInterruptionS != nil || ra.PeerInterruptionS != nil) {
				fmt.Fprintf(&b, ", interruption %s (%s / %s s)", FormatFloat(ra.Interruption, 2),
					FormatFloat(ra.MifsecInterruptionS, 2), FormatFloat(ra.PeerInterruptionS, 2))
			}
			b.WriteString("\n")
		}
	}
	if sl := r.SingleLinks; sl != nil {
		names := slices.Sorted(maps.Keys(sl.Links))
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s alone %.1f", n, sl.Links[n]))
		}
		fmt.Fprintf(&b, "  mifsec against its single links (%s; sum %.1f Mbit/s): %.1f Mbit/s = %.0f%% of the sum, %.2f× the best link\n",
			strings.Join(parts, ", "), sl.SumMbps, sl.MifsecMbps, 100*sl.OfSum, sl.OfBest)
	}
	for _, n := range r.Notes {
		b.WriteString("\n")
		wrap(&b, "", "Note: "+n)
	}
	fmt.Fprintf(&b, "\nTCP congestion control %s; %d CPUs, kernel %s, load average %.2f at start; figures measured on a busy machine are preliminary.\n",
		r.TCPCongestion, r.Machine.NumCPU, r.Machine.Kernel, r.Machine.LoadAverage)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *ScenarioReport) writeRun(b *strings.Builder, p PeerRun) {
	fmt.Fprintf(b, "%s", p.Peer)
	if p.Version != "" {
		fmt.Fprintf(b, " (%s)", p.Version)
	}
	b.WriteString(":\n")
	if p.Skipped != "" {
		fmt.Fprintf(b, "  skipped: %s\n", oneLine(p.Skipped, 400))
		return
	}
	for _, e := range p.Errors {
		fmt.Fprintf(b, "  error: %s\n", oneLine(e, 400))
	}
	if p.Total == nil {
		return
	}
	ready := "tunnel up"
	if p.NoTunnel {
		ready = "ready (no tunnel)"
	}
	wrap(b, "  ", fmt.Sprintf("%s in %.1fs; %s", ready, p.SetupSeconds, p.Behaviour))
	for _, dir := range r.Directions {
		header := []string{fmt.Sprintf("  %s, Mbit/s", dir)}
		for _, ph := range p.Total.Phases {
			header = append(header, fmt.Sprintf("%g–%gs", RoundTo(ph.FromS, 1), RoundTo(ph.ToS, 1)))
		}
		header = append(header, "whole run")
		rows := [][]string{header}
		for _, path := range append(slices.Clone(p.Paths), *p.Total) {
			row := []string{"    " + path.Uplink}
			for _, ph := range path.Phases {
				row = append(row, fmt.Sprintf("%.1f", pick(dir, ph.UpMbps, ph.DownMbps)))
			}
			row = append(row, fmt.Sprintf("%.1f", pick(dir, path.UpMbps, path.DownMbps)))
			rows = append(rows, row)
		}
		writeAligned(b, rows)
	}
	for _, t := range p.Traffic {
		if t.Kind == scenarios.TrafficProbe {
			continue
		}
		fmt.Fprintf(b, "  %s %s", t.Kind, t.Direction)
		if t.Streams > 1 {
			fmt.Fprintf(b, " (%d streams)", t.Streams)
		}
		switch {
		case t.Mbps != nil:
			fmt.Fprintf(b, ": %.1f Mbit/s", *t.Mbps)
			if t.Retransmits != nil {
				fmt.Fprintf(b, ", %d retransmits", *t.Retransmits)
			}
			if t.RTTMeanMs > 0 {
				fmt.Fprintf(b, ", RTT mean %.1f ms (max %.1f)", t.RTTMeanMs, t.RTTMaxMs)
			}
			if t.MultipathTCP {
				fmt.Fprintf(b, ", MPTCP with up to %d subflows", t.Subflows)
			}
			if s := t.SlowStartEnd; s != nil {
				fmt.Fprintf(b, "; slow start ended at %.2f s, window %d segments, RTT %.1f ms (min %.1f), %s",
					s.T-t.StartS, s.Cwnd, s.RTTMs, s.MinRTTMs, slowStartCause(s.Retransmits))
			}
			if t.LossPercent != nil {
				fmt.Fprintf(b, ", %.2f%% lost", *t.LossPercent)
			}
			if t.Error != "" {
				fmt.Fprintf(b, " (%s)", oneLine(t.Error, 200))
			}
		default:
			fmt.Fprintf(b, ": %s", oneLine(t.Error, 300))
		}
		b.WriteString("\n")
	}
	if pr := p.Probe; pr != nil {
		fmt.Fprintf(b, "  probes every %gms: %d sent, %d lost (%.1f%%); one-way delay min %.1f, median %.1f, p95 %.1f, p99 %.1f ms\n",
			pr.IntervalMs, pr.Sent, pr.Lost, pr.LossPercent, pr.DelayMinMs, pr.DelayP50Ms, pr.DelayP95Ms, pr.DelayP99Ms)
		if pr.SendErrors > 0 {
			fmt.Fprintf(b, "    of the lost, %d never entered the tunnel (the probe sender could not send them in time or had no route): %d lost inside it\n",
				pr.SendErrors, pr.Lost-pr.SendErrors)
		}
	}
	matched := map[float64]bool{}
	for _, in := range p.Interruptions {
		if pr := p.Probe; pr != nil && !in.None {
			if o, ok := pr.OutageAt(in.AtS); ok {
				matched[o.StartS] = true
			}
		}
		fmt.Fprintf(b, "  after %s at %.1fs: %s\n", in.Event, in.AtS, in.describe(p.Probe != nil))
	}
	if pr := p.Probe; pr != nil {
		for _, o := range pr.Outages {
			// Short gaps are loss, listed in the JSON report only.
			if matched[o.StartS] || o.Seconds < summaryOutageMin {
				continue
			}
			if o.Recovered {
				fmt.Fprintf(b, "  no traffic from %.2fs to %.2fs (%.2fs, %d probes lost)\n", o.StartS, o.EndS, o.Seconds, o.Lost)
			} else {
				fmt.Fprintf(b, "  no traffic from %.2fs to the end (%.2fs, %d probes lost)\n", o.StartS, o.Seconds, o.Lost)
			}
		}
	}
	if p.Tunnel != "" {
		wrap(b, "  ", "client's status at the end: "+p.Tunnel)
	}
}

// stallLaterThan is how long after an event its longest TCP stall may
// start before the summary says where it starts.
const stallLaterThan = 1.0

// describe says what the event did to the probes and the TCP flow.
func (in Interruption) describe(probes bool) string {
	var parts []string
	if probes {
		switch {
		case in.None:
			parts = append(parts, "no probe lost")
		case in.Recovered:
			parts = append(parts, fmt.Sprintf("no probe through for %.2fs (%d lost)", in.Seconds, in.Lost))
		default:
			parts = append(parts, fmt.Sprintf("no probe through until the end (%.2fs, %d lost)", in.Seconds, in.Lost))
		}
	}
	if in.TCPStallSeconds != nil {
		tcp := fmt.Sprintf("TCP stalled at most %.2fs", *in.TCPStallSeconds)
		if in.TCPRecovered != nil && !*in.TCPRecovered {
			tcp = fmt.Sprintf("TCP stalled %.2fs, to the next event or the end", *in.TCPStallSeconds)
		}
		if in.TCPStallFromS != nil && *in.TCPStallFromS-in.AtS >= stallLaterThan {
			// The longest stall is not the event's own: say where it
			// is (a recorded link's own outage, seconds later).
			tcp += fmt.Sprintf(", starting %.1fs after it", *in.TCPStallFromS-in.AtS)
		}
		if in.TCPLowSeconds != nil && *in.TCPLowSeconds > *in.TCPStallSeconds+0.1 {
			tcp += fmt.Sprintf(" (under a tenth of its mean rate for %.1fs)", *in.TCPLowSeconds)
		}
		if in.TCPRetransmits != nil {
			tcp += fmt.Sprintf(", %d retransmits", *in.TCPRetransmits)
		}
		parts = append(parts, tcp)
	}
	if len(parts) == 0 {
		return "not measured"
	}
	return strings.Join(parts, "; ")
}

// hasFailures reports whether the scenario fails a link (down, unplug).
func (r *ScenarioReport) hasFailures() bool {
	return slices.ContainsFunc(r.Events, func(e EventInfo) bool { return e.Action == scenarios.ActionDown || e.Action == scenarios.ActionUnplug })
}

// summaryWidth is where the summary wraps long lines.
const summaryWidth = 100

// wrap writes text in lines of at most summaryWidth bytes, each starting
// with indent (continuation lines with two more spaces).
func wrap(b *strings.Builder, indent, text string) {
	line := indent
	for i, word := range strings.Fields(text) {
		if i > 0 && len(line)+1+len(word) > summaryWidth {
			b.WriteString(line + "\n")
			line = indent + "  " + word
			continue
		}
		if i > 0 {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
}

// summaryOutageMin is the shortest outage the summary lists besides those
// that follow an event.
const summaryOutageMin = 0.25

func pick(dir string, up, down float64) float64 {
	if dir == "down" {
		return down
	}
	return up
}

// writeAligned writes rows with the first column left-aligned and the
// others right-aligned.
func writeAligned(b *strings.Builder, rows [][]string) {
	widths := map[int]int{}
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len([]rune(cell)))
		}
	}
	for _, row := range rows {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(cell)))
			if i == 0 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString("  " + pad + cell)
			}
		}
		b.WriteString("\n")
	}
}

// WriteJSON writes the report to path, creating its directory.
func (r *ScenarioReport) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
