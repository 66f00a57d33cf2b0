package report

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/scenarios"
	"github.com/mifsec/mifsec/bench/traffic"
)

// syntheticProbes is the summary of a 10 ms probe stream of n probes, each
// delivered after delay, except the sequence numbers in lost.
func syntheticProbes(n int, delay time.Duration, lost func(seq int) bool) traffic.ProbeSummary {
	sent, received := make([]int64, n), make([]int64, n)
	for i := range n {
		sent[i], received[i] = int64(i)*int64(10*time.Millisecond), -1
		if !lost(i) {
			received[i] = sent[i] + int64(delay) + int64(i%10)*int64(time.Millisecond)
		}
	}
	return traffic.SummarizeProbes(10*time.Millisecond, sent, received)
}

func TestPeerRunSummarize(t *testing.T) {
	sc := reportScenario(t)
	run := PeerRun{Peer: "mifsec", Samples: syntheticSamples()}
	probe := syntheticProbes(1000, 20*time.Millisecond, func(i int) bool { return i >= 500 && i < 730 })
	run.Probe = &probe
	// The TCP flow acknowledges nothing from 5.2 s to 6.0 s and retransmits
	// 7 segments at 5.5 s.
	flow := &traffic.Result{}
	var acked uint64
	for k := 0; k <= 1000; k++ {
		tt := float64(k) / 100
		if tt <= 5.2 || tt >= 6.0 {
			acked += 1000
		}
		var retrans uint32
		if tt >= 5.5 {
			retrans = 7
		}
		flow.Progress = append(flow.Progress, traffic.Progress{T: tt, Acked: acked, Retransmits: retrans})
	}
	// Its goodput: 8 Mbit/s, nothing from 5.2 to 6.0 s, a trickle until
	// 6.5 s.
	flow.Mbps = 8
	for k := 1; k <= 100; k++ {
		tt := float64(k) / 10
		mbps := 8.0
		switch {
		case tt > 5.2+1e-9 && tt <= 6.0+1e-9:
			mbps = 0
		case tt > 6.0+1e-9 && tt <= 6.5+1e-9:
			mbps = 0.3
		}
		flow.Intervals = append(flow.Intervals, traffic.Interval{T: tt, Mbps: mbps})
	}
	retransmits := 7
	mbps := 8.0
	run.Traffic = []TrafficResult{{Kind: scenarios.TrafficTCP, Direction: "up", Mbps: &mbps, Retransmits: &retransmits, Flow: flow,
		SlowStartEnd: &traffic.SlowStartEnd{T: 0.67, Cwnd: 318, Ssthresh: 318, RTTMs: 76, MinRTTMs: 33}}}
	run.Summarize(sc)

	if got := run.Samples[10].Uplinks[0].UpMbps; math.Abs(got-10) > 1e-6 {
		t.Errorf("sample rate at 1 s = %v Mbit/s, want 10", got)
	}
	if got := run.Samples[60].Uplinks[0].UpMbps; got != 0 {
		t.Errorf("sample rate at 6 s = %v Mbit/s, want 0", got)
	}
	wlan, wwan := run.Paths[0], run.Paths[1]
	if wlan.Uplink != "wlan0" || wlan.Kind != "wlan" {
		t.Errorf("path 0 = %s (%s)", wlan.Uplink, wlan.Kind)
	}
	if wlan.UpMbps != 5 || wlan.UpBytes != 10e6/8*5 {
		t.Errorf("wlan0 whole run %v Mbit/s, %d bytes; want 5 and %d", wlan.UpMbps, wlan.UpBytes, uint64(10e6/8*5))
	}
	if len(wlan.Phases) != 2 || wlan.Phases[0].UpMbps != 10 || wlan.Phases[1].UpMbps != 0 {
		t.Errorf("wlan0 phases %+v, want 10 then 0 Mbit/s", wlan.Phases)
	}
	if wwan.DownMbps != 2 || wwan.Phases[1].DownMbps != 2 {
		t.Errorf("wwan0 down %v, phases %+v; want 2", wwan.DownMbps, wwan.Phases)
	}
	if run.Total.UpMbps != 5 || run.Total.DownMbps != 2 || run.Total.Phases[0].UpMbps != 10 {
		t.Errorf("total %+v", run.Total)
	}
	if len(run.Interruptions) != 1 {
		t.Fatalf("interruptions %+v, want 1", run.Interruptions)
	}
	in := run.Interruptions[0]
	if in.AtS != 5 || in.Seconds != 2.3 || in.Lost != 230 || !in.Recovered || in.None {
		t.Errorf("interruption %+v, want 2.3 s from 5 s, recovered", in)
	}
	if in.TCPStallSeconds == nil || math.Abs(*in.TCPStallSeconds-0.8) > 0.015 || *in.TCPRetransmits != 7 || !*in.TCPRecovered {
		t.Errorf("TCP stall %v, retransmits %v, want 0.8 s and 7", in.TCPStallSeconds, in.TCPRetransmits)
	}
	if in.TCPLowSeconds == nil || math.Abs(*in.TCPLowSeconds-1.3) > 1e-6 {
		t.Errorf("TCP low goodput %v, want 1.3 s (stopped, then trickling)", in.TCPLowSeconds)
	}

	report := NewScenarioReport(sc)
	other := run
	other.Peer = "wireguard-go"
	otherTotal := *run.Total
	otherTotal.UpMbps = 2.5
	other.Total = &otherTotal
	other.Interruptions = []Interruption{{Seconds: 4.6}}
	report.Runs = []PeerRun{run, other, {Peer: "strongswan", Skipped: "not installed"}}
	report.Finish()
	if len(report.Ratios) != 2 {
		t.Fatalf("ratios %+v", report.Ratios)
	}
	wg := report.Ratios[0]
	if wg.Peer != "wireguard-go" || *wg.Throughput != 2 || *wg.Interruption != 0.5 {
		t.Errorf("mifsec/wireguard-go = %+v, want throughput 2, interruption 0.5", wg)
	}
	if ss := report.Ratios[1]; ss.Throughput != nil || ss.Interruption != nil {
		t.Errorf("ratios against a skipped peer: %+v, want none", ss)
	}

	var out strings.Builder
	if err := report.WriteSummary(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"Scenario maths",
		"at   5.0s  wlan0 link down",
		"0–5s", "5–10s", "whole run",
		"after wlan0 link down at 5.0s: no probe through for 2.30s (230 lost); TCP stalled at most 0.80s (under a tenth of its mean rate for 1.3s), 7 retransmits",
		"Peers side by side, ranked by throughput (up, mean over the run):",
		"tcp up: 8.0 Mbit/s, 7 retransmits; slow start ended at 0.67 s, window 318 segments, RTT 76.0 ms (min 33.0), without a loss",
		"skipped: not installed",
		"mifsec/wireguard-go: throughput 2.00 (5.0 / 2.5 Mbit/s), interruption 0.50 (2.30 / 4.60 s)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}

	data, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	var back ScenarioReport
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("the JSON report does not parse: %v", err)
	}
	if len(back.Runs) != 3 || len(back.Runs[0].Samples) != 101 || back.Runs[0].Probe.Lost != 230 {
		t.Errorf("JSON round trip lost data: %d runs", len(back.Runs))
	}
	if !strings.Contains(string(data), `"tcp_stall_seconds":0.8`) {
		t.Errorf("report.json has no tcp_stall_seconds of 0.8")
	}
	// The ranking: mifsec (5 Mbit/s) before wireguard-go (2.5); the
	// skipped peer is not ranked.
	if ranked := report.Ranked(); len(ranked) != 2 || ranked[0].Peer != "mifsec" || ranked[1].Peer != "wireguard-go" {
		t.Errorf("ranked %v, want mifsec then wireguard-go", ranked)
	}
	rankLines := regexp.MustCompile(`(?m)^\s+(\d)\s+(\S+)\s+([\d.]+)`).FindAllStringSubmatch(text[strings.Index(text, "Peers side by side"):], -1)
	if len(rankLines) != 2 || rankLines[0][2] != "mifsec" || rankLines[0][3] != "5.0" || rankLines[1][2] != "wireguard-go" {
		t.Errorf("ranking table %q", rankLines)
	}

	// Single-link baselines: mifsec against the sum of what each uplink
	// alone carried through it.
	baseline := func(uplink string, mbps float64) PeerRun {
		b := run
		b.Peer = scenarios.SingleLinkPrefix + uplink
		total := *run.Total
		total.UpMbps = mbps
		b.Total = &total
		return b
	}
	report.Runs = []PeerRun{run, baseline("wlan0", 4), baseline("wwan0", 1.25)}
	report.Finish()
	sl := report.SingleLinks
	if sl == nil || sl.SumMbps != 5.25 || sl.BestMbps != 4 || sl.OfBest != 1.25 || math.Abs(sl.OfSum-5/5.25) > 1e-9 {
		t.Fatalf("single links %+v, want sum 5.25, best 4, of best 1.25", sl)
	}
	out.Reset()
	if err := report.WriteSummary(&out); err != nil {
		t.Fatal(err)
	}
	if want := "mifsec against its single links (wlan0 alone 4.0, wwan0 alone 1.2; sum 5.2 Mbit/s): 5.0 Mbit/s = 95% of the sum, 1.25× the best link"; !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}
}

func TestSampleAt(t *testing.T) {
	samples := []Sample{{T: 0}, {T: 0.1}, {T: 0.2}, {T: 0.3}}
	for _, tt := range []struct{ t, want float64 }{{-1, 0}, {0, 0}, {0.15, 0.1}, {0.2, 0.2}, {5, 0.3}} {
		if got := sampleAt(samples, tt.t).T; got != tt.want {
			t.Errorf("sampleAt(%v) = %v, want %v", tt.t, got, tt.want)
		}
	}
}

func TestWritePlot(t *testing.T) {
	sc := reportScenario(t)
	run := PeerRun{Peer: "mifsec", Samples: syntheticSamples()}
	run.Summarize(sc)
	report := NewScenarioReport(sc)
	report.Runs = []PeerRun{run}
	var buf bytes.Buffer
	if err := report.WritePlot(&buf, run); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("the plot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != PlotWidth || b.Dy() != PlotHeight {
		t.Errorf("plot is %dx%d, want %dx%d", b.Dx(), b.Dy(), PlotWidth, PlotHeight)
	}
	// An empty run (the peer failed before traffic) still plots.
	buf.Reset()
	if err := report.WritePlot(&buf, PeerRun{Peer: "x"}); err != nil {
		t.Errorf("plot of an empty run: %v", err)
	}
}

func TestWriteComparisonPlot(t *testing.T) {
	sc := reportScenario(t)
	report := NewScenarioReport(sc)
	for _, name := range []string{"mifsec", "mptcp", "wireguard-go"} {
		run := PeerRun{Peer: name, Samples: syntheticSamples()}
		run.Summarize(sc)
		report.Runs = append(report.Runs, run)
	}
	report.Runs = append(report.Runs, PeerRun{Peer: "strongswan", Skipped: "not installed"})
	var buf bytes.Buffer
	ok, err := report.WriteComparisonPlot(&buf)
	if err != nil || !ok {
		t.Fatalf("WriteComparisonPlot = %v, %v", ok, err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("the plot is not a PNG: %v", err)
	}
	// One panel per measured peer: the skipped one has none.
	if b := img.Bounds(); b.Dx() != PlotWidth || b.Dy() != 3*comparisonPanelHeight+comparisonHeader {
		t.Errorf("plot is %dx%d, want %dx%d", b.Dx(), b.Dy(), PlotWidth, 3*comparisonPanelHeight+comparisonHeader)
	}
	empty := NewScenarioReport(sc)
	if ok, err := empty.WriteComparisonPlot(&buf); ok || err != nil {
		t.Errorf("a report without samples plotted: %v, %v", ok, err)
	}
}

func TestOutageAtPicksTheLongest(t *testing.T) {
	s := traffic.ProbeSummary{Outages: []traffic.Outage{
		{StartS: 9.2, EndS: 9.3, Seconds: 0.1},
		{StartS: 10.0, EndS: 10.16, Seconds: 0.16},
		{StartS: 10.31, EndS: 18.04, Seconds: 7.73},
		{StartS: 19.4, EndS: 25, Seconds: 5.6},
	}}
	o, ok := s.OutageAt(10)
	if !ok || o.StartS != 10.31 {
		t.Errorf("outageAt(10) = %+v, %v; want the 7.73 s outage from 10.31 s", o, ok)
	}
}

// TestInterruptionSaysWhereALateStallStarts: a longest stall that starts
// well after its event (a recorded link's own outage) is said to, so that
// it is not read as the event's; one at the event is not.
func TestInterruptionSaysWhereALateStallStarts(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	recovered, notRecovered := true, false
	for _, tc := range []struct {
		name      string
		from      float64
		recovered *bool
		want      string
	}{
		{"at the event", 11.1, &recovered, "TCP stalled at most 0.60s"},
		{"seconds later", 19.1, &notRecovered, "TCP stalled 0.93s, to the next event or the end, starting 8.1s after it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seconds := 0.60
			if tc.from > 12 {
				seconds = 0.93
			}
			in := Interruption{AtS: 11, TCPStallSeconds: f(seconds), TCPStallFromS: f(tc.from), TCPRecovered: tc.recovered}
			got := in.describe(false)
			if !strings.HasPrefix(got, tc.want) || (tc.from < 12 && strings.Contains(got, "after it")) {
				t.Fatalf("%q, want it to start with %q", got, tc.want)
			}
		})
	}
}

// TestReportLinks: the report lists the gateway's uplinks after the
// client's, and describes a trace-driven link by its trace.
func TestReportLinks(t *testing.T) {
	s, err := scenarios.LoadScenario("gateway-aggregation")
	if err != nil {
		t.Fatal(err)
	}
	r := NewScenarioReport(s)
	clients := len(s.Uplinks)
	if len(r.Uplinks) != clients+len(s.GatewayUplinks) || len(s.GatewayUplinks) == 0 ||
		r.Uplinks[clients-1].Gateway || !r.Uplinks[clients].Gateway {
		t.Errorf("report uplinks %+v", r.Uplinks)
	}
	s, err = scenarios.LoadScenario("lte-aggregation")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(s.Uplinks, func(u scenarios.UplinkSpec) bool { return u.Shapes().AtoB.Trace != nil })
	if i < 0 {
		t.Fatal("lte-aggregation has no trace-driven uplink")
	}
	if got := describeShape(s.Uplinks[i].Shapes().AtoB); !strings.Contains(got, "trace TMobile-LTE-short.up (mean ") {
		t.Errorf("report describes the link as %q", got)
	}
}

// syntheticSamples: uplink 0 carries 10 Mbit/s up until 5 s and nothing
// after; uplink 1 carries 2 Mbit/s down throughout. 100 ms samples, 10 s.
func syntheticSamples() []Sample {
	var samples []Sample
	var up0, down1 uint64
	for k := 0; k <= 100; k++ {
		t := float64(k) / 10
		if k > 0 && t <= 5 {
			up0 += 10e6 / 8 / 10
		}
		if k > 0 {
			down1 += 2e6 / 8 / 10
		}
		samples = append(samples, Sample{T: t, Uplinks: []UplinkSample{
			{UpBytes: up0, Failed: t > 5},
			{DownBytes: down1},
		}})
	}
	return samples
}

func reportScenario(t *testing.T) *scenarios.Scenario {
	t.Helper()
	s, err := scenarios.ParseScenario(strings.NewReader(`
name: maths
description: test
duration: 10s
uplinks:
  - {name: wlan0, kind: wlan, link: {rate: 50Mbit, delay: 15ms}}
  - {name: wwan0, kind: cellular, link: {rate: 20Mbit, delay: 40ms}}
events:
  - {at: 5s, uplink: wlan0, action: down}
traffic:
  - {kind: tcp}
  - {kind: probe}
`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
