package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
	benchreport "github.com/mifsec/mifsec/bench/report"
	"github.com/mifsec/mifsec/bench/scenarios"
	"github.com/mifsec/mifsec/internal/testenv"
)

// labNamespaces lists the namespaces of the lab owned by pid.
func labNamespaces(t *testing.T, pid int) []string {
	t.Helper()
	out, err := labnet.RunCommand(context.Background(), "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], labnet.NamespacePrefix+strconv.Itoa(pid)+"-") {
			names = append(names, f[0])
		}
	}
	return names
}

// TestLabCommand runs `mifsec lab` as a newcomer would, shortened to 6 s:
// the tunnel comes up over wlan0, traffic crosses the emulated WLAN link,
// the link fails at 2 s and returns at 4 s, and the summary, the JSON
// report and the PNG come out and make sense.
func TestLabCommand(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mifsec := testenv.MifsecBinary(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.CommandContext(ctx, mifsec, "lab", "--duration", "6s", "--out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	if err != nil {
		t.Fatalf("mifsec lab: %v", err)
	}
	if ns := labNamespaces(t, cmd.Process.Pid); len(ns) > 0 {
		t.Errorf("namespaces left behind: %v", ns)
	}
	summary := stdout.String()
	for _, want := range []string{"Scenario lab", "wlan0 link down", "wlan0 link up", "whole run", "probes every"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q", want)
		}
	}

	data, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var report benchreport.ScenarioReport
	if err := json.Unmarshal(data, &report); err != nil {
		t.Fatalf("report.json does not parse: %v", err)
	}
	if len(report.Runs) != 1 || report.Runs[0].Peer != "mifsec" {
		t.Fatalf("report runs: %+v", report.Runs)
	}
	run := report.Runs[0]
	if len(run.Errors) > 0 || run.Skipped != "" {
		t.Fatalf("mifsec run: errors %q, skipped %q", run.Errors, run.Skipped)
	}
	if len(run.Paths) != 2 || run.Paths[0].Uplink != "wlan0" {
		t.Fatalf("paths: %+v", run.Paths)
	}
	// The tunnel runs over wlan0 while it is healthy (offload): megabytes
	// crossed its emulated link, next to nothing the cellular one before
	// the failure; during the failure cellular carries the traffic.
	if wlan := run.Paths[0]; wlan.UpBytes < 1<<20 {
		t.Errorf("only %d bytes crossed the WLAN link", wlan.UpBytes)
	}
	var wlanBefore, wwanBefore, wwanDuring float64
	var failedSamples int
	for _, s := range run.Samples {
		wlan, wwan := s.Uplinks[0], s.Uplinks[1]
		switch {
		case s.T < 1.9:
			wlanBefore += wlan.UpMbps
			wwanBefore += wwan.UpMbps
		case s.T > 2.5 && s.T < 3.9:
			wwanDuring += wwan.UpMbps
		}
		if wlan.Failed {
			failedSamples++
			if s.T > 2.3 && s.T < 3.9 && wlan.UpMbps > 0.5 {
				t.Errorf("at %.1fs the failed WLAN link carried %.1f Mbit/s", s.T, wlan.UpMbps)
			}
		}
	}
	if wwanBefore > wlanBefore/50 {
		t.Errorf("before the failure cellular carried %.1f%% of WLAN's traffic, want under 2%% (probes only)", 100*wwanBefore/wlanBefore)
	}
	if wwanDuring < 5 {
		t.Errorf("during the WLAN failure cellular carried %.1f Mbit/s·samples, want the traffic", wwanDuring)
	}
	if failedSamples < 15 || failedSamples > 25 {
		t.Errorf("%d samples show wlan0 failed, want about 20 (2 s of 100 ms samples)", failedSamples)
	}
	if run.Total.Phases[0].UpMbps < 5 {
		t.Errorf("before the failure the tunnel carried %.1f Mbit/s, want several", run.Total.Phases[0].UpMbps)
	}
	if run.Probe == nil || run.Probe.Sent == 0 || run.Probe.Received == 0 || len(run.Interruptions) != 2 {
		t.Fatalf("probe %+v, interruptions %+v (want one for the failure, one for the return)", run.Probe, run.Interruptions)
	}
	// The TCP flow, generated and measured by the lab itself, reports its
	// stall for both events, and its goodput every 100 ms.
	for _, in := range run.Interruptions {
		if in.TCPStallSeconds == nil || in.TCPRetransmits == nil {
			t.Errorf("interruption %+v has no TCP stall", in)
		} else if *in.TCPStallSeconds > 2 {
			t.Errorf("after %s the TCP flow stalled %.2fs, want under 2 s", in.Event, *in.TCPStallSeconds)
		}
	}
	if tcp := run.Traffic[0]; tcp.Kind != scenarios.TrafficTCP || tcp.Mbps == nil || *tcp.Mbps < 5 || len(tcp.Goodput) < 50 || tcp.RTTMeanMs <= 0 {
		t.Errorf("tcp result %+v, want several Mbit/s, 100 ms goodput samples and an RTT", tcp)
	}
	for _, want := range []string{"TCP stalled at most", "Peers side by side"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	// Probes every 10 ms lost for at most a second (the target is
	// 300 ms; a loaded test machine gets slack).
	if in := run.Interruptions[0]; !in.None && in.Seconds > 1 {
		t.Errorf("interruption after the WLAN failure %+v, want well under a second", in)
	}

	f, err := os.Open(filepath.Join(out, "throughput-mifsec.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the plot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != benchreport.PlotWidth || b.Dy() != benchreport.PlotHeight {
		t.Errorf("plot is %dx%d, want %dx%d", b.Dx(), b.Dy(), benchreport.PlotWidth, benchreport.PlotHeight)
	}
	for _, name := range []string{"summary.txt", "throughput.png"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Error(err)
		}
	}
}

// TestLabKilledThenRerun kills `mifsec lab` with SIGKILL while its traffic
// runs, then runs the lab again: afterwards no namespace of either run and
// no process of the killed run is left.
func TestLabKilledThenRerun(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mifsec := testenv.MifsecBinary(t)

	first := exec.CommandContext(ctx, mifsec, "lab", "--duration", "20s", "--out", filepath.Join(t.TempDir(), "first"))
	log := &testenv.SyncBuffer{}
	first.Stdout, first.Stderr = log, log
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { first.Wait(); close(exited) }()
	t.Cleanup(func() { first.Process.Kill(); <-exited })
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(log.String(), "running lab") {
		if time.Now().After(deadline) {
			t.Fatalf("the lab's traffic did not start within 60s:\n%s", log.String())
		}
		select {
		case <-exited:
			t.Fatalf("the lab ended before its traffic started:\n%s", log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(time.Second)
	namespaces := labNamespaces(t, first.Process.Pid)
	if len(namespaces) < 5 {
		t.Fatalf("the running lab has namespaces %v, want client, gateway, protected and two links", namespaces)
	}
	var pids []int
	for _, ns := range namespaces {
		out, err := labnet.RunCommand(ctx, "ip", "netns", "pids", ns)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, labnet.ParsePIDs(out)...)
	}
	if len(pids) < 2 {
		t.Fatalf("the running lab has processes %v in its namespaces, want gateway and client", pids)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited

	second := exec.CommandContext(ctx, mifsec, "lab", "--duration", "3s", "--out", filepath.Join(t.TempDir(), "second"))
	out, err := second.CombinedOutput()
	if err != nil {
		t.Fatalf("the lab after a killed one: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "removed stale namespace") {
		t.Errorf("the second run did not report removing the killed run's namespaces:\n%s", out)
	}
	for _, pid := range []int{first.Process.Pid, second.Process.Pid} {
		if ns := labNamespaces(t, pid); len(ns) > 0 {
			t.Errorf("namespaces of lab %d left behind: %v", pid, ns)
		}
	}
	for _, pid := range pids {
		if labnet.ProcessAlive(pid) {
			t.Errorf("process %d of the killed lab is still alive", pid)
		}
	}
	for dir, prefixes := range labnet.LabSocketPrefixes {
		for _, prefix := range prefixes {
			sockets, _ := filepath.Glob(filepath.Join(dir, prefix+strconv.Itoa(first.Process.Pid)+"*"))
			if len(sockets) > 0 {
				t.Errorf("control sockets of the killed lab left behind: %v", sockets)
			}
		}
	}
}

// TestScenarioNATAndUnplug runs mifsec over the cellular uplink behind a
// masquerading router while the WLAN interface is unplugged and plugged
// in again: the tunnel crosses the NAT, the traffic stays on wwan0, and the
// unplugged interface shows as failed in the samples.
func TestScenarioNATAndUnplug(t *testing.T) {
	requireLab(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not found: apt-get install nftables")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mifsec := testenv.MifsecBinary(t)
	sc, err := scenarios.ParseScenario(strings.NewReader(`
name: nat
duration: 4s
uplinks:
  - {name: wlan0, kind: wlan, link: {rate: 50Mbit, delay: 5ms}}
  - {name: wwan0, kind: cellular, nat: true, link: {rate: 20Mbit, delay: 10ms}}
events:
  - {at: 1s, uplink: wlan0, action: unplug}
  - {at: 2s, uplink: wlan0, action: plug}
  - {at: 3s, uplink: wwan0, action: set, set: {rate: 10Mbit}}
traffic:
  - {kind: tcp}
  - {kind: probe, interval: 20ms}
client: {interface: wwan0}
`))
	if err != nil {
		t.Fatal(err)
	}
	lab := newTestLab(t, ctx)
	report, err := RunScenario(ctx, lab, sc, ScenarioConfig{PeerOptions: peers.PeerOptions{MifsecPath: mifsec}, Log: testLog{t}})
	if err != nil {
		t.Fatalf("RunScenario: %v", err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("Lab.Close: %v", err)
	}
	assertCleanedUp(t, lab)
	run := report.Runs[0]
	if len(run.Errors) > 0 {
		t.Fatalf("errors: %q", run.Errors)
	}
	wlan, wwan := run.Paths[0], run.Paths[1]
	if wwan.UpBytes < 512<<10 || wlan.UpBytes > wwan.UpBytes/10 {
		t.Errorf("bytes up: wlan0 %d, wwan0 %d; want the traffic on wwan0", wlan.UpBytes, wwan.UpBytes)
	}
	// The rate change at 3 s halves what the link can carry.
	if ph := wwan.Phases; len(ph) != 4 || ph[3].UpMbps > 13 {
		t.Errorf("wwan0 phases %+v, want about 10 Mbit/s after 3 s (13 with what was queued before the change)", ph)
	}
	var failed int
	for _, s := range run.Samples {
		if s.Uplinks[0].Failed {
			failed++
			// The plug event clears the mark after its ip(8) commands
			// ran, which a loaded host may stretch by a few samples.
			if s.T < 0.95 || s.T > 2.5 {
				t.Errorf("wlan0 marked failed at %.2fs, outside its unplugged second", s.T)
			}
		}
	}
	if failed < 8 {
		t.Errorf("wlan0 failed in %d samples, want about 10", failed)
	}
	if run.Probe == nil || run.Probe.Received < run.Probe.Sent*9/10 {
		t.Errorf("probes through the NAT: %+v", run.Probe)
	}
}

// TestScenarioMPTCPUsesBothUplinks runs the mptcp peer (kernel MPTCP, no
// tunnel) with two flows, one up and one down, over two healthy emulated
// uplinks, one behind NAT: the connections negotiate MPTCP, open a subflow
// per uplink, and both links carry a real share of the traffic; then the
// WLAN link fails and the TCP stall is measured.
func TestScenarioMPTCPUsesBothUplinks(t *testing.T) {
	requireLab(t)
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		t.Skip("the kernel has no MPTCP")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not found: apt-get install nftables")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc, err := scenarios.ParseScenario(strings.NewReader(`
name: mptcp
duration: 6s
uplinks:
  - {name: wlan0, kind: wlan, link: {rate: 20Mbit, delay: 5ms, queue_time: 50ms}}
  - {name: wwan0, kind: cellular, nat: true, link: {rate: 10Mbit, delay: 20ms, queue_time: 50ms}}
events:
  - {at: 4s, uplink: wlan0, action: down}
traffic:
  - {kind: tcp, direction: up}
  - {kind: tcp, direction: down, streams: 2}
peers: [mptcp]
`))
	if err != nil {
		t.Fatal(err)
	}
	lab := newTestLab(t, ctx)
	report, err := RunScenario(ctx, lab, sc, ScenarioConfig{Log: testLog{t}})
	if err != nil {
		t.Fatalf("RunScenario: %v", err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("Lab.Close: %v", err)
	}
	assertCleanedUp(t, lab)
	run := report.Runs[0]
	if run.Skipped != "" || len(run.Errors) > 0 {
		t.Fatalf("mptcp: skipped %q, errors %q", run.Skipped, run.Errors)
	}
	for _, tr := range run.Traffic {
		if !tr.MultipathTCP || tr.Subflows < 2 {
			t.Errorf("%s flow: MPTCP %v with %d subflows, want MPTCP over both uplinks", tr.Direction, tr.MultipathTCP, tr.Subflows)
		}
	}
	// Before the failure both links carry a real share in each direction.
	wlan, wwan := run.Paths[0].Phases[0], run.Paths[1].Phases[0]
	if wlan.UpMbps < 2 || wwan.UpMbps < 2 || wlan.DownMbps < 2 || wwan.DownMbps < 2 {
		t.Errorf("before the failure: wlan0 %+v, wwan0 %+v; want both links used both ways", wlan, wwan)
	}
	if !strings.Contains(run.Tunnel, "bytes up per uplink: wlan0") {
		t.Errorf("tunnel state %q lacks the split over the uplinks", run.Tunnel)
	}
	if len(run.Interruptions) != 1 || run.Interruptions[0].TCPStallSeconds == nil {
		t.Fatalf("interruptions %+v, want the failure's TCP stall", run.Interruptions)
	}
}
