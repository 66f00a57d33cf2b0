package scenarios

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/linkemu"
)

const validScenario = `
name: t
duration: 10s
uplinks:
  - name: wlan0
    kind: wlan
    link: {rate: 50Mbit, delay: 15ms, jitter: 1ms, queue_time: 50ms}
    up: {rate: 10Mbit}
  - name: wwan0
    nat: true
    link: {rate: 20 Mbit/s, delay: 40ms, loss: 1%, burst: {p: 0.01, r: 0.3, loss_bad: 1}}
events:
  - {at: 6s, uplink: wlan0, action: up}
  - {at: 2s, uplink: wlan0, action: down}
  - {at: 3s, uplink: wwan0, action: set, direction: down, set: {delay: 80ms, loss: 0.05}}
traffic:
  - {kind: tcp, streams: 2}
  - {kind: udp, direction: down, rate: 5Mbit, start: 1s, duration: 5s}
  - {kind: probe}
`

func TestParseScenarioValid(t *testing.T) {
	s, err := ParseScenario(strings.NewReader(validScenario))
	if err != nil {
		t.Fatalf("ParseScenario: %v", err)
	}
	if got := s.UplinkNames(); strings.Join(got, ",") != "wlan0,wwan0" {
		t.Errorf("uplinks = %v", got)
	}
	if s.Uplinks[0].Metric != 100 || s.Uplinks[1].Metric != 200 {
		t.Errorf("default metrics = %d, %d; want 100, 200", s.Uplinks[0].Metric, s.Uplinks[1].Metric)
	}
	if s.Uplinks[1].Kind != "link" {
		t.Errorf("default kind = %q", s.Uplinks[1].Kind)
	}
	if s.Client.Interface != "wlan0" {
		t.Errorf("client interface = %q, want the lowest metric, wlan0", s.Client.Interface)
	}
	if len(s.Peers) != 1 || s.Peers[0] != "mifsec" {
		t.Errorf("default peers = %v", s.Peers)
	}
	if s.TCPCongestion != "cubic" {
		t.Errorf("default TCP congestion control %q, want cubic (the host's default must not decide)", s.TCPCongestion)
	}
	// Events are sorted by time.
	for i, want := range []time.Duration{2 * time.Second, 3 * time.Second, 6 * time.Second} {
		if got := s.Events[i].At.D(); got != want {
			t.Errorf("event %d at %v, want %v", i, got, want)
		}
	}
	cfg := s.Uplinks[0].Shapes()
	if cfg.AtoB.Rate != 10e6 || cfg.BtoA.Rate != 50e6 {
		t.Errorf("wlan0 rates up %v down %v, want 10e6 (override) and 50e6", cfg.AtoB.Rate, cfg.BtoA.Rate)
	}
	if cfg.AtoB.Delay != 15*time.Millisecond || cfg.AtoB.QueueTime != 50*time.Millisecond {
		t.Errorf("wlan0 up keeps the common fields: %+v", cfg.AtoB)
	}
	w := s.Uplinks[1].Shapes()
	if w.AtoB.Rate != 20e6 || w.AtoB.Loss != 0.01 || w.AtoB.Burst == nil || w.AtoB.Burst.R != 0.3 || w.AtoB.Burst.LossBad != 1 {
		t.Errorf("wwan0 shape = %+v", w.AtoB)
	}
	// The set event touches only the down direction.
	after := ApplyEvent(w, s.Events[1])
	if after.BtoA.Delay != 80*time.Millisecond || after.BtoA.Loss != 0.05 || after.AtoB.Delay != 40*time.Millisecond {
		t.Errorf("after set: up %+v down %+v", after.AtoB, after.BtoA)
	}
	down := ApplyEvent(cfg, s.Events[0])
	if !down.AtoB.Down || !down.BtoA.Down {
		t.Errorf("down event leaves the link up: %+v", down)
	}
	if up := ApplyEvent(down, s.Events[2]); up.AtoB.Down || up.BtoA.Down {
		t.Errorf("up event leaves the link down: %+v", up)
	}
	tr := s.Traffic
	if tr[0].Direction != "up" || tr[0].Duration.D() != 10*time.Second || tr[0].Streams != 2 {
		t.Errorf("tcp traffic defaults: %+v", tr[0])
	}
	if tr[2].Interval.D() != defaultProbeEvery || tr[2].Size != defaultProbeSize {
		t.Errorf("probe defaults: %+v", tr[2])
	}
	if got := s.Directions(); strings.Join(got, ",") != "up,down" {
		t.Errorf("directions = %v", got)
	}
}

func TestParseScenarioErrors(t *testing.T) {
	base := func(edit func(string) string) string { return edit(validScenario) }
	replace := func(old, new string) string {
		return base(func(s string) string {
			if !strings.Contains(s, old) {
				panic("test scenario lacks " + old)
			}
			return strings.Replace(s, old, new, 1)
		})
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "empty"},
		{"not yaml", "name: [", "parse"},
		{"unknown key", replace("duration: 10s", "duration: 10s\nduraton: 5s"), "duraton"},
		{"no name", replace("name: t", ""), "name: missing"},
		{"no duration", replace("duration: 10s", ""), "duration: missing"},
		{"bad duration", replace("duration: 10s", "duration: ten"), `"ten" is not a duration`},
		{"too long", replace("duration: 10s", "duration: 2h"), "longer than the limit"},
		{"bad congestion control", replace("duration: 10s", "duration: 10s\ntcp_congestion: 'bbr; rm'"), "tcp_congestion: \"bbr; rm\" is not a congestion control name"},
		{"no uplinks", "name: t\nduration: 5s\ntraffic: [{kind: probe}]\n", "uplinks: at least one"},
		{"bad rate unit", replace("rate: 50Mbit", "rate: 50MB"), `unknown unit "MB"`},
		{"bad rate", replace("rate: 50Mbit", "rate: fast"), `rate "fast"`},
		{"negative rate", replace("rate: 50Mbit", "rate: -5Mbit"), "negative"},
		{"tiny rate", replace("rate: 50Mbit", "rate: 10bit"), "at least 1000"},
		{"loss over 100%", replace("loss: 1%", "loss: 150%"), "not between 0 and 1"},
		{"bad loss", replace("loss: 1%", "loss: lots"), "not a fraction"},
		{"burst never recovers", replace("r: 0.3", "r: 0"), "never leaves the bad state"},
		{"bad queue", replace("queue_time: 50ms", "queue: 10XB"), `unknown unit "XB"`},
		{"tbf without burst", replace("name: wwan0", "name: wwan0\n    tbf: {rate: 25Mbit, latency: 50ms}"), "uplinks[1].tbf: burst must be set"},
		{"tbf without rate", replace("name: wwan0", "name: wwan0\n    tbf: {burst: 256KiB, latency: 50ms}"), "uplinks[1].tbf: rate must be set"},
		{"tbf bad latency", replace("name: wwan0", "name: wwan0\n    tbf: {rate: 25Mbit, burst: 256KiB, latency: soon}"), `"soon" is not a duration`},
		{"duplicate uplink", replace("name: wwan0", "name: wlan0"), "used twice"},
		{"long interface name", replace("name: wwan0", "name: averyveryverylongname"), "longer than 15"},
		{"lo", replace("name: wwan0", "name: lo"), "loopback"},
		{"event after end", replace("at: 6s", "at: 60s"), "after the end"},
		{"event on unknown uplink", replace("uplink: wlan0, action: down", "uplink: eth9, action: down"), `"eth9" is not an uplink`},
		{"unknown action", replace("action: down", "action: explode"), `"explode" is not down`},
		{"set without fields", replace("action: set, direction: down, set: {delay: 80ms, loss: 0.05}", "action: set"), "needs the fields"},
		{"fields without set", replace("action: down", "action: down, set: {delay: 1ms}"), "only for action"},
		{"bad direction", replace("direction: down, set", "direction: sideways, set"), `"sideways" is not up or down`},
		{"no traffic", replace("traffic:", "trafficx:"), "trafficx"},
		{"unknown traffic", replace("kind: tcp", "kind: quic"), `"quic" is not tcp`},
		{"traffic past end", replace("start: 1s, duration: 5s", "start: 8s, duration: 5s"), "past the end"},
		{"short iperf", replace("start: 1s, duration: 5s", "start: 1s, duration: 500ms"), "whole seconds"},
		{"udp without rate", replace("rate: 5Mbit, ", ""), "needs a rate"},
		{"too many streams", replace("streams: 2", "streams: 99"), "not between 1 and 16"},
		{"probe too small", replace("{kind: probe}", "{kind: probe, size: 4}"), "not between 20 and 1400"},
		{"probe too fast", replace("{kind: probe}", "{kind: probe, interval: 10us}"), "below the minimum"},
		{"probe down", replace("{kind: probe}", "{kind: probe, direction: down}"), "probes go up"},
		{"two probes", replace("{kind: probe}", "{kind: probe}\n  - {kind: probe}"), "at most one probe"},
		{"unknown peer", replace("traffic:", "peers: [openvpn]\ntraffic:"), `unknown peer "openvpn"`},
		{"peer twice", replace("traffic:", "peers: [mifsec, mifsec]\ntraffic:"), "listed twice"},
		{"single link on unknown uplink", replace("traffic:", "peers: [mifsec, mifsec@eth0]\ntraffic:"), `"eth0" is not an uplink`},
		{"client on unknown uplink", replace("traffic:", "client: {interface: eth1}\ntraffic:"), `client.interface: "eth1"`},
		{"client interfaces unknown", replace("traffic:", "client: {interfaces: [wlan0, eth1]}\ntraffic:"), `client.interfaces[1]: "eth1"`},
		{"unknown policy", replace("traffic:", "client: {interfaces: [wlan0, wwan0], policy: bonding}\ntraffic:"), `"bonding" is not a policy`},
		{"policy on one interface", replace("traffic:", "client: {policy: offload}\ntraffic:"), "needs client.interfaces"},
		{"gateway uplink with nat", replace("events:", "gateway_uplinks:\n  - {name: isp0, nat: true, link: {rate: 50Mbit}}\nevents:"), "gateway_uplinks[0]: nat and router"},
		{"gateway uplink with metric", replace("events:", "gateway_uplinks:\n  - {name: isp0, metric: 5, link: {rate: 50Mbit}}\nevents:"), "gateway_uplinks[0].metric"},
		{"gateway uplink named like the client's", replace("events:", "gateway_uplinks:\n  - {name: wlan0, link: {rate: 50Mbit}}\nevents:"), "used twice"},
		{"client on a gateway uplink", replace("events:", "gateway_uplinks:\n  - {name: isp0, link: {rate: 50Mbit}}\nevents:") + "client: {interface: isp0}\n",
			`client.interface: "isp0" is not an uplink of the client`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseScenario(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatalf("ParseScenario accepted it; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestParseRateAndSize(t *testing.T) {
	rates := map[string]float64{"50Mbit": 50e6, "1.5 Gbit/s": 1.5e9, "500kbit": 500e3, "20mbps": 20e6, "1000": 1000, "0": 0}
	for in, want := range rates {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	sizes := map[string]int{"64KiB": 65536, "100kB": 100000, "1MB": 1e6, "1500": 1500, "2 MiB": 2 << 20}
	for in, want := range sizes {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "Mbit", "5 furlongs", "NaN"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "-1", "2GiB", "5 TB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestBuiltinScenarios(t *testing.T) {
	names := BuiltinScenarios()
	for _, want := range []string{"aggregation", "failover", "handover", "lab"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("built-in scenarios %v lack %q", names, want)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			s, err := LoadScenario(name)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != name || s.Summary == "" || s.Description == "" {
				t.Errorf("scenario %s: name %q, summary %q, description %q", name, s.Name, s.Summary, s.Description)
			}
			if s.Source() != "built-in "+name {
				t.Errorf("source = %q", s.Source())
			}
			if summary, err := BuiltinSummary(name); err != nil || summary != s.Summary {
				t.Errorf("BuiltinSummary = %q, %v; want %q", summary, err, s.Summary)
			}
		})
	}
	lab, err := LoadScenario("lab")
	if err != nil {
		t.Fatal(err)
	}
	// mifsec lab must finish in under a minute, setup included.
	if lab.Duration.D() > 40*time.Second {
		t.Errorf("the lab scenario runs %s of traffic; keep it well under a minute", lab.Duration)
	}
	if _, err := LoadScenario("no-such-scenario"); err == nil || !strings.Contains(err.Error(), "built-in: ") {
		t.Errorf("unknown scenario: error %v should list the built-in ones", err)
	}
}

func TestLoadScenarioFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "my.yaml")
	if err := os.WriteFile(path, []byte(validScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadScenario(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Source() != path {
		t.Errorf("source = %q, want %q", s.Source(), path)
	}
	if err := os.WriteFile(path, []byte("name: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadScenario(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a bad file's error %v should name the file", err)
	}
}

// TestGatewayUplinks: the gateway's uplinks follow the client's in the
// links events, samples and reports index, and are events' targets too.
func TestGatewayUplinks(t *testing.T) {
	yaml := strings.Replace(validScenario, "events:", `gateway_uplinks:
  - {name: isp0, link: {rate: 50Mbit, delay: 10ms}}
  - {name: isp1, link: {rate: 50Mbit, delay: 20ms}, tbf: {rate: 50Mbit, burst: 64KiB, latency: 50ms}}
events:
  - {at: 5s, uplink: isp0, action: down}`, 1)
	s, err := ParseScenario(strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.linkNames(); !slices.Equal(got, []string{"wlan0", "wwan0", "isp0", "isp1"}) {
		t.Fatalf("links %v", got)
	}
	if got := s.UplinkNames(); !slices.Equal(got, []string{"wlan0", "wwan0"}) {
		t.Errorf("the client's uplinks %v", got)
	}
	if i := s.UplinkIndex("isp1"); i != 3 || !s.IsGatewayLink(i) || s.IsGatewayLink(1) {
		t.Errorf("isp1 at %d, gateway link: %v", i, s.IsGatewayLink(i))
	}
	if s.GatewayUplinks[0].Metric != 0 || s.Uplinks[1].Metric != 200 {
		t.Errorf("metrics: gateway %d, client %d", s.GatewayUplinks[0].Metric, s.Uplinks[1].Metric)
	}
	// A single-link baseline may name the gateway's uplinks too.
	if _, err := ParseScenario(strings.NewReader(strings.Replace(yaml, "traffic:", "peers: [mifsec, mifsec@isp1]\ntraffic:", 1))); err != nil {
		t.Errorf("mifsec@isp1: %v", err)
	}
	// Normalizing again (SetDuration) keeps it valid.
	if err := s.SetDuration(20 * time.Second); err != nil {
		t.Fatalf("SetDuration: %v", err)
	}
}

func TestSetDuration(t *testing.T) {
	s, err := ParseScenario(strings.NewReader(validScenario))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetDuration(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if s.Duration.D() != 20*time.Second {
		t.Errorf("duration = %s", s.Duration)
	}
	if got := s.Events[0].At.D(); got != 4*time.Second {
		t.Errorf("first event moved to %s, want 4s", got)
	}
	if got := s.Traffic[1]; got.Start.D() != 2*time.Second || got.Duration.D() != 10*time.Second {
		t.Errorf("udp traffic at %s for %s, want 2s for 10s", got.Start, got.Duration)
	}
	if err := s.SetDuration(time.Second); err == nil {
		t.Error("SetDuration(1s) accepted")
	}
}

// traceScenario has a cellular uplink replaying trace files beside it.
const traceScenario = `
name: t
duration: 10s
uplinks:
  - name: wlan0
    link: {rate: 50Mbit}
  - name: wwan0
    link: {trace_up: cell.up, trace_down: sub/cell.down, delay: 40ms, queue_time: 100ms}
events:
  - {at: 5s, uplink: wwan0, action: set, direction: up, set: {rate: 1Mbit}}
traffic:
  - {kind: probe}
`

// writeTraceScenario writes yaml as my.yaml into a directory with the
// traces cell.up (3 opportunities in 10 ms: 3.6 Mbit/s) and sub/cell.down
// and returns the scenario's path.
func writeTraceScenario(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"cell.up": "1\n5\n10\n", "sub/cell.down": "1\n2\n", "empty.up": "\n", "bad.up": "1\n2\nthree\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "my.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestScenarioTraces(t *testing.T) {
	s, err := LoadScenario(writeTraceScenario(t, traceScenario))
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.Uplinks[1].Shapes()
	if cfg.AtoB.Trace == nil || cfg.BtoA.Trace == nil {
		t.Fatalf("traces not in the link's shapes: %+v", cfg)
	}
	if up, down := cfg.AtoB.Trace, cfg.BtoA.Trace; up.Name() != "cell.up" || up.Opportunities() != 3 || down.Name() != "cell.down" || down.Period() != 2*time.Millisecond {
		t.Errorf("up %s (%d), down %s (%v): want cell.up with 3 opportunities, cell.down with a 2 ms period", up.Name(), up.Opportunities(), down.Name(), down.Period())
	}
	if cfg.AtoB.Rate != 0 || cfg.AtoB.Delay != 40*time.Millisecond || cfg.AtoB.QueueTime != 100*time.Millisecond {
		t.Errorf("the other fields apply beside the trace: %+v", cfg.AtoB)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the emulator refuses the shapes: %v", err)
	}
	// A rate set by an event replaces the trace in that direction only.
	after := ApplyEvent(cfg, s.Events[0])
	if after.AtoB.Trace != nil || after.AtoB.Rate != 1e6 || after.BtoA.Trace != cfg.BtoA.Trace {
		t.Errorf("after set rate up: up %+v, down %+v", after.AtoB, after.BtoA)
	}
	// SetDuration checks the scenario again and keeps the traces.
	if err := s.SetDuration(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if s.Uplinks[1].Shapes().AtoB.Trace != cfg.AtoB.Trace {
		t.Errorf("SetDuration lost or reread the trace")
	}
}

func TestScenarioTraceErrors(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(traceScenario, old) {
			panic("trace scenario lacks " + old)
		}
		return strings.Replace(traceScenario, old, new, 1)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"rate and trace", replace("delay: 40ms", "rate: 5Mbit, delay: 40ms"), "uplinks[1].link: rate and a trace"},
		{"override rate", replace("queue_time: 100ms}", "queue_time: 100ms}\n    up: {rate: 2Mbit}"), "uplinks[1].link.trace_up: the up direction replays this trace and up.rate is set"},
		{"missing file", replace("cell.up,", "nosuch.up,"), "uplinks[1].link.trace_up: trace: open "},
		{"empty trace", replace("cell.up,", "empty.up,"), "uplinks[1].link.trace_up: "},
		{"bad line", replace("cell.up,", "bad.up,"), "bad.up: line 3: \"three\" is not a whole number"},
		{"empty name", replace("trace_up: cell.up", "trace_up: ''"), "trace_up: empty file name"},
		{"trace in up", replace("queue_time: 100ms}", "queue_time: 100ms}\n    up: {trace_up: cell.up}"), "uplinks[1].up: trace_up: only in an uplink's link"},
		{"trace in event", replace("set: {rate: 1Mbit}", "set: {trace_down: cell.up}"), "events[0].set: trace_down: only in an uplink's link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadScenario(writeTraceScenario(t, tc.yaml))
			if err == nil {
				t.Fatalf("accepted; want an error with %q", tc.want)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	if _, err := findBuiltinTrace("traces/no-such.up"); err == nil || !strings.Contains(err.Error(), "not inside the binary") {
		t.Errorf("a missing built-in trace: error %v", err)
	}
}

// TestBuiltinTraceScenarios: the LTE scenarios replay the shipped traces,
// every shipped trace is used, and the licence ships with them.
func TestBuiltinTraceScenarios(t *testing.T) {
	want := map[string][2]string{
		"lte-aggregation": {"TMobile-LTE-short.up", "TMobile-LTE-short.down"},
		"lte-handover":    {"TMobile-LTE-short.up", "TMobile-LTE-short.down"},
		"lte-failover":    {"ATT-LTE-driving-2016.up", "ATT-LTE-driving-2016.down"},
	}
	used := map[string]bool{}
	for _, name := range BuiltinScenarios() {
		s, err := LoadScenario(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range s.Uplinks {
			cfg := u.Shapes()
			for _, tr := range []*linkemu.Trace{cfg.AtoB.Trace, cfg.BtoA.Trace} {
				if tr != nil {
					used[tr.Name()] = true
				}
			}
		}
		w, ok := want[name]
		if !ok {
			continue
		}
		cell := s.Uplinks[s.UplinkIndex("wwan0")].Shapes()
		if cell.AtoB.Trace == nil || cell.BtoA.Trace == nil || cell.AtoB.Trace.Name() != w[0] || cell.BtoA.Trace.Name() != w[1] {
			t.Errorf("%s: wwan0 replays %v and %v, want %v", name, cell.AtoB.Trace, cell.BtoA.Trace, w)
		}
	}
	// The means the scenarios' descriptions and docs/lab.md quote.
	for name, mbps := range map[string]float64{"TMobile-LTE-short.up": 13.3, "TMobile-LTE-short.down": 16.7, "ATT-LTE-driving-2016.up": 1.9, "ATT-LTE-driving-2016.down": 4.6} {
		tr, err := linkemu.ReadTrace(filepath.Join("traces", name))
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.MeanRate() / 1e6; math.Abs(got-mbps) > 0.05 {
			t.Errorf("%s: mean %.2f Mbit/s, want %.1f", name, got, mbps)
		}
	}
	entries, err := os.ReadDir("traces")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
		switch e.Name() {
		case "COPYING", "README.md":
		default:
			if !used[e.Name()] {
				t.Errorf("traces/%s ships but no built-in scenario uses it", e.Name())
			}
		}
	}
	for _, f := range []string{"COPYING", "README.md"} {
		if !slices.Contains(files, f) {
			t.Errorf("traces lacks %s (the traces are GPL-3)", f)
		}
	}
}

func TestTBFArgs(t *testing.T) {
	spec := TBFSpec{Rate: 60e6, Burst: 256 << 10, Latency: Duration(50 * time.Millisecond)}
	got := strings.Join(spec.TCArgs(), " ")
	if want := "tbf rate 60000000bit burst 262144 latency 50000us"; got != want {
		t.Errorf("tc arguments %q, want %q", got, want)
	}
}
