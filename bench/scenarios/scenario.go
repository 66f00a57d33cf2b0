package scenarios

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mifsec/mifsec/bench/linkemu"
	"github.com/mifsec/mifsec/bench/traffic"
)

// minProbeSize is the smallest probe packet a scenario may ask for: the
// probe stream's header (magic, sequence number, send time).
const minProbeSize = traffic.ProbeHeaderLen

// Scenario is one lab experiment, read from YAML: a client host with
// several uplinks, each through its own emulated link to the gateway, link
// changes over time, the traffic to measure and the peers to measure it
// with. See docs/lab.md for the file format.
type Scenario struct {
	Name string `yaml:"name"`
	// Summary is one line for command help; Description the whole story.
	Summary     string `yaml:"summary"`
	Description string `yaml:"description"`
	// Duration is how long the traffic runs; events happen within it.
	Duration Duration     `yaml:"duration"`
	Uplinks  []UplinkSpec `yaml:"uplinks"`
	// GatewayUplinks, when given, are the gateway's own uplinks, each with
	// its own emulated link to an ISP router that the client's uplinks
	// reach too (LabNet): a multihomed gateway. The first is its primary
	// address, the one clients connect to; events and reports name them
	// like the client's uplinks. Only link, up, down and tbf apply (no
	// nat, router or metric: the gateway routes by source address).
	GatewayUplinks []UplinkSpec  `yaml:"gateway_uplinks"`
	Events         []EventSpec   `yaml:"events"`
	Traffic        []TrafficSpec `yaml:"traffic"`
	// TCPCongestion is the congestion control of every TCP (and MPTCP)
	// flow of the scenario, on both ends: cubic (the default: what
	// Linux, Windows and macOS hosts run unless told otherwise) or any
	// other the kernel has (bbr). The lab sets it on the flows' sockets,
	// so that figures do not depend on the host's own default.
	TCPCongestion string `yaml:"tcp_congestion"`
	// Peers are measured one after the other, each in a fresh topology.
	Peers  []string   `yaml:"peers"`
	Client ClientSpec `yaml:"client"`
	// Notes are printed with the report (what the scenario shows, what it
	// does not).
	Notes []string `yaml:"notes"`

	// source is the file name or "built-in NAME".
	source string
	// findTrace turns a trace_up/trace_down path into the file to read.
	findTrace func(string) (string, error)
}

// UplinkSpec is one interface of the client host and the emulated link
// behind it.
type UplinkSpec struct {
	// Name is the interface's name in the client namespace (wlan0, wwan0).
	Name string `yaml:"name"`
	// Kind labels the access technology in reports (wlan, cellular, ...).
	Kind string `yaml:"kind"`
	// Metric of the client's default route through this uplink: the lowest
	// is preferred. Zero means 100 × (position + 1).
	Metric int `yaml:"metric"`
	// NAT puts a router that masquerades (nftables) between the link and
	// the gateway.
	NAT bool `yaml:"nat"`
	// Router puts a plain router (no address translation) there.
	Router bool `yaml:"router"`
	// Link shapes both directions; Up (client to gateway) and Down override
	// single fields per direction.
	Link LinkSpec  `yaml:"link"`
	Up   *LinkSpec `yaml:"up"`
	Down *LinkSpec `yaml:"down"`
	// TBF puts the kernel's token bucket shaper (tc tbf) on both
	// directions of the uplink: with a router (NAT or Router) on its interfaces
	// towards the gateway (up) and towards the link (down), a box between
	// the hosts as an ISP's shaper is; without, on the client's interface
	// (up) and the gateway's towards it (down). Token buckets with deep
	// queues are what ISPs and cellular networks shape with; a shaper the
	// project did not write checks the scheduler outside its own
	// emulator.
	TBF *TBFSpec `yaml:"tbf"`

	// The traces read from Link.TraceUp and Link.TraceDown.
	traceUp, traceDown *linkemu.Trace
}

// LinkSpec holds the fields of a link shape that a file sets; unset fields
// keep their previous value.
type LinkSpec struct {
	Rate      *Rate      `yaml:"rate"`
	Delay     *Duration  `yaml:"delay"`
	Jitter    *Duration  `yaml:"jitter"`
	Reorder   *bool      `yaml:"reorder"`
	Loss      *Fraction  `yaml:"loss"`
	Burst     *BurstSpec `yaml:"burst"`
	Queue     *Size      `yaml:"queue"`
	QueueTime *Duration  `yaml:"queue_time"`
	// TraceUp and TraceDown replace Rate in their direction with a
	// recorded capacity trace in mahimahi's format (see
	// linkemu.ParseTrace): a file path, relative to the scenario's file.
	// Only in an uplink's link.
	TraceUp   *string `yaml:"trace_up"`
	TraceDown *string `yaml:"trace_down"`
}

// TBFSpec is a tc tbf qdisc: rate, bucket size (burst) and the longest a
// packet may wait in its queue (latency).
type TBFSpec struct {
	Rate    Rate     `yaml:"rate"`
	Burst   Size     `yaml:"burst"`
	Latency Duration `yaml:"latency"`
}

// validate checks that every field is set.
func (t *TBFSpec) validate() error {
	switch {
	case t.Rate <= 0:
		return errors.New("rate must be set")
	case t.Burst <= 0:
		return errors.New("burst must be set (the bucket size, e.g. 256KiB)")
	case t.Latency <= 0:
		return errors.New("latency must be set (the longest wait in the queue, e.g. 50ms)")
	}
	return nil
}

// TCArgs are the arguments of `tc qdisc replace dev DEV root` for t.
func (t *TBFSpec) TCArgs() []string {
	return []string{"tbf", "rate", fmt.Sprintf("%.0fbit", float64(t.Rate)), "burst", strconv.Itoa(int(t.Burst)),
		"latency", fmt.Sprintf("%dus", t.Latency.D().Microseconds())}
}

// BurstSpec is Gilbert-Elliott burst loss: p is the chance per packet of
// moving from the good to the bad state, r of moving back; loss_good and
// loss_bad are the loss rates in each state.
type BurstSpec struct {
	P        Fraction `yaml:"p"`
	R        Fraction `yaml:"r"`
	LossGood Fraction `yaml:"loss_good"`
	LossBad  Fraction `yaml:"loss_bad"`
}

// Event actions.
const (
	// ActionDown makes the emulated link drop everything (a silent failure:
	// the interface stays up).
	ActionDown = "down"
	// ActionUp restores a link that was down.
	ActionUp = "up"
	// actionSet changes link fields (rate, delay, loss, ...).
	actionSet = "set"
	// ActionUnplug sets the client's interface administratively down (the
	// client's kernel sees it go away), ActionPlug back up.
	ActionUnplug = "unplug"
	ActionPlug   = "plug"
)

// EventSpec is one change at time At after the traffic started.
type EventSpec struct {
	At     Duration `yaml:"at"`
	Uplink string   `yaml:"uplink"`
	Action string   `yaml:"action"`
	// Direction limits a set to "up" or "down"; empty is both.
	Direction string    `yaml:"direction"`
	Set       *LinkSpec `yaml:"set"`
}

// Traffic kinds.
const (
	TrafficTCP   = "tcp"
	TrafficUDP   = "udp"
	TrafficProbe = "probe"
)

// TrafficSpec is one traffic source. tcp and udp run the lab's own traffic
// generator (bench/traffic) between the client and the protected network's
// server; probe sends sequenced, timestamped UDP
// packets at a fixed interval and records each one's one-way delay.
type TrafficSpec struct {
	Kind string `yaml:"kind"`
	// Direction: "up" (client to protected network, the default) or "down".
	Direction string `yaml:"direction"`
	// Streams is iperf3's parallel streams (default 1).
	Streams int `yaml:"streams"`
	// Start and Duration place the traffic in the scenario's timeline
	// (default: all of it).
	Start    Duration `yaml:"start"`
	Duration Duration `yaml:"duration"`
	// Rate is the target rate of udp traffic (iperf3 -b).
	Rate Rate `yaml:"rate"`
	// Interval between probes (default 10ms) and their size in bytes
	// (default 64, at least the probe header).
	Interval Duration `yaml:"interval"`
	Size     Size     `yaml:"size"`
}

// ClientSpec tunes the tunnel clients of the run.
type ClientSpec struct {
	// Interface is the uplink the clients use (default: the preferred one,
	// lowest metric).
	Interface string `yaml:"interface"`
	// Interfaces, when set, gives mifsec every listed uplink (`mifsec
	// connect --interfaces`): one path per uplink, handover between them
	// and, with a mifsec gateway, multipath by Policy. Interface is then
	// only where the gateway's address is taken from.
	Interfaces []string `yaml:"interfaces"`
	// Policy is mifsec's multipath policy (--policy on both ends):
	// single, offload, aggregate or redundant; empty leaves mifsec's
	// default.
	Policy string `yaml:"policy"`
	// DPD, Retransmit and RetransmitTries are passed to `mifsec connect`
	// (--dpd, --retransmit, --retransmit-tries) when set.
	DPD             Duration `yaml:"dpd"`
	Retransmit      Duration `yaml:"retransmit"`
	RetransmitTries int      `yaml:"retransmit_tries"`
}

// Duration is a time.Duration written like "15ms" or "1.5s".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a Go duration string (a bare 0 is one).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeErr(n, "want a duration like 15ms or 2s")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return nodeErr(n, "%q is not a duration (write e.g. 15ms or 2s)", n.Value)
	}
	if v < 0 {
		return nodeErr(n, "duration %s is negative", v)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Rate is a bit rate in bit/s, written like "50Mbit", "1.5 Gbit/s",
// "500kbit" or a plain number of bit/s.
type Rate float64

// UnmarshalYAML reads a rate with an optional unit.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseScalar(n, "want a rate like 50Mbit", parseRate)
	if err != nil {
		return err
	}
	*r = Rate(v)
	return nil
}

// parseRate reads a bit rate: a number with an optional unit bit, kbit,
// Mbit or Gbit (also kbps, Mbps, Gbps; "/s" may follow; case does not
// matter). Byte units are refused: link rates are in bits.
func parseRate(s string) (float64, error) {
	v, unit, err := parseNumber(s, "rate", "want a number with a unit such as 50Mbit")
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("rate %q is negative", s)
	}
	scale, ok := map[string]float64{
		"": 1, "bit": 1, "bps": 1,
		"k": 1e3, "kbit": 1e3, "kbps": 1e3,
		"m": 1e6, "mbit": 1e6, "mbps": 1e6,
		"g": 1e9, "gbit": 1e9, "gbps": 1e9,
	}[strings.TrimSuffix(strings.ToLower(unit), "/s")]
	if !ok {
		return 0, fmt.Errorf("rate %q: unknown unit %q (use bit, kbit, Mbit or Gbit)", s, unit)
	}
	return v * scale, nil
}

// Size is a byte count, written like "64KiB", "100kB", "1MB" or a plain
// number of bytes.
type Size int

// UnmarshalYAML reads a size with an optional unit.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseScalar(n, "want a size like 64KiB", parseSize)
	if err != nil {
		return err
	}
	*z = Size(v)
	return nil
}

// parseSize reads a byte count: a number with an optional unit B, kB, KiB,
// MB or MiB.
func parseSize(s string) (int, error) {
	v, unit, err := parseNumber(s, "size", "want a number of bytes, optionally with kB, KiB, MB or MiB")
	if err != nil {
		return 0, err
	}
	scale, ok := map[string]float64{"": 1, "b": 1, "kb": 1e3, "kib": 1 << 10, "mb": 1e6, "mib": 1 << 20}[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, kB, KiB, MB or MiB)", s, unit)
	}
	v *= scale
	if v < 0 || v > 1<<30 {
		return 0, fmt.Errorf("size %q is out of range (0 to 1GiB)", s)
	}
	return int(v), nil
}

// Fraction is a probability in [0,1], written as "1%" or 0.01.
type Fraction float64

// UnmarshalYAML reads a fraction or a percentage.
func (f *Fraction) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeErr(n, "want a fraction like 0.01 or 1%%")
	}
	s := strings.TrimSpace(n.Value)
	scale := 1.0
	if rest, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = strings.TrimSpace(rest), 0.01
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) {
		return nodeErr(n, "%q is not a fraction (write e.g. 0.01 or 1%%)", n.Value)
	}
	v *= scale
	if v < 0 || v > 1 {
		return nodeErr(n, "%q is not between 0 and 1 (0%% and 100%%)", n.Value)
	}
	*f = Fraction(v)
	return nil
}

// splitNumber splits "50 Mbit" into "50" and "Mbit".
func splitNumber(s string) (num, unit string) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool {
		return !(r >= '0' && r <= '9' || r == '.' || r == '-' || r == '+')
	})
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// parseNumber splits s into a finite number and the unit after it; the
// error names what (a rate, a size) and says what was wanted.
func parseNumber(s, what, want string) (v float64, unit string, err error) {
	num, unit := splitNumber(s)
	v, err = strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, "", fmt.Errorf("%s %q: %s", what, s, want)
	}
	return v, unit, nil
}

// parseScalar reads a YAML scalar with parse; want is the error for any
// other kind of node. Errors carry the node's line.
func parseScalar[T any](n *yaml.Node, want string, parse func(string) (T, error)) (T, error) {
	var v T
	if n.Kind != yaml.ScalarNode {
		return v, nodeErr(n, "%s", want)
	}
	v, err := parse(n.Value)
	if err != nil {
		return v, nodeErr(n, "%v", err)
	}
	return v, nil
}

func nodeErr(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, args...))
}

//go:embed *.yaml
var builtinScenarios embed.FS

// BuiltinScenarios lists the names of the scenarios built into the binary.
func BuiltinScenarios() []string {
	entries, err := builtinScenarios.ReadDir(".")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// LoadScenario returns the built-in scenario with this name or, when there
// is none, reads the file at this path. A file's traces are relative to
// its directory; the built-in scenarios' traces are read from
// bench/scenarios/traces of mifsec's source (see builtinTraceDirs).
func LoadScenario(nameOrPath string) (*Scenario, error) {
	if !strings.ContainsAny(nameOrPath, "/.") {
		data, err := builtinScenarios.ReadFile(nameOrPath + ".yaml")
		if err == nil {
			s, err := parseScenario(bytes.NewReader(data), findBuiltinTrace)
			if err != nil {
				return nil, fmt.Errorf("built-in scenario %s: %w", nameOrPath, err)
			}
			s.source = "built-in " + nameOrPath
			return s, nil
		}
		if _, statErr := os.Stat(nameOrPath); statErr != nil {
			return nil, fmt.Errorf("no built-in scenario %q and no such file (built-in: %s)",
				nameOrPath, strings.Join(BuiltinScenarios(), ", "))
		}
	}
	f, err := os.Open(nameOrPath)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	dir := filepath.Dir(nameOrPath)
	s, err := parseScenario(f, func(name string) (string, error) { return relativeTo(dir, name), nil })
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", nameOrPath, err)
	}
	s.source = nameOrPath
	return s, nil
}

// BuiltinSummary is the summary line of the built-in scenario name, read
// without checking the scenario or loading its traces (for command help,
// built at every start of the binary).
func BuiltinSummary(name string) (string, error) {
	data, err := builtinScenarios.ReadFile(name + ".yaml")
	if err != nil {
		return "", fmt.Errorf("no built-in scenario %q", name)
	}
	var head struct {
		Summary string `yaml:"summary"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return "", fmt.Errorf("built-in scenario %s: %w", name, err)
	}
	return head.Summary, nil
}

// Source is where the scenario came from: a file name or "built-in NAME".
func (s *Scenario) Source() string { return s.source }

// ParseScenario reads a scenario from YAML, fills in the defaults and
// checks it; trace files are relative to the working directory. Unknown
// keys are errors (a misspelt key would otherwise be silently ignored).
func ParseScenario(r io.Reader) (*Scenario, error) {
	return parseScenario(r, func(name string) (string, error) { return name, nil })
}

// relativeTo resolves a trace path written in a scenario file in dir.
func relativeTo(dir, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

// builtinTraceDirs are where the built-in scenarios' traces are looked
// for, in order: they are GPL-3 data that ships beside the scenarios in
// mifsec's source (bench/scenarios/traces), not inside the binary. The
// candidates are bench/scenarios under the working directory (the README
// runs mifsec from the source tree), beside the executable, and in the
// source tree the binary was built from.
func builtinTraceDirs() []string {
	var dirs []string
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, filepath.Join(wd, "bench", "scenarios"))
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "bench", "scenarios"))
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dirs = append(dirs, filepath.Dir(file))
	}
	var distinct []string
	for _, d := range dirs {
		if !slices.Contains(distinct, d) {
			distinct = append(distinct, d)
		}
	}
	return distinct
}

// findBuiltinTrace finds a built-in scenario's trace file.
func findBuiltinTrace(name string) (string, error) {
	dirs := builtinTraceDirs()
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s: the built-in scenarios' traces come with mifsec's source "+
		"(bench/scenarios/traces, GPL-3), not inside the binary; run mifsec from the source tree", name, strings.Join(dirs, ", "))
}

func parseScenario(r io.Reader, findTrace func(string) (string, error)) (*Scenario, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	s := Scenario{findTrace: findTrace}
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the scenario is empty")
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := s.normalize(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Limits of a scenario, so that a typo cannot ask for an hour-long run or a
// hundred namespaces.
const (
	maxUplinks          = 4
	maxScenarioDuration = 10 * time.Minute
	maxStreams          = 16
	minProbeInterval    = time.Millisecond
	defaultProbeSize    = 64
	defaultProbeEvery   = 10 * time.Millisecond
)

// SingleLinkPrefix names a single-link baseline peer: "mifsec@wlan0" is
// mifsec bound to that one uplink, what the uplink alone carries through
// the tunnel, measured in the same run as the multipath peers.
const SingleLinkPrefix = "mifsec@"

// LabPeerNames are the peers a scenario can run (besides the single-link
// baselines, SingleLinkPrefix + an uplink's name).
var LabPeerNames = []string{"mifsec", "mptcp", "wireguard-go", "strongswan"}

// normalize fills defaults and validates; errors name the field.
func (s *Scenario) normalize() error {
	if s.Name == "" {
		return errors.New("name: missing")
	}
	if s.Duration <= 0 {
		return errors.New("duration: missing (e.g. duration: 30s)")
	}
	if s.Duration.D() > maxScenarioDuration {
		return fmt.Errorf("duration: %s is longer than the limit of %s", s.Duration, maxScenarioDuration)
	}
	if len(s.Uplinks) == 0 {
		return errors.New("uplinks: at least one is needed")
	}
	if len(s.Uplinks) > maxUplinks {
		return fmt.Errorf("uplinks: %d given, at most %d", len(s.Uplinks), maxUplinks)
	}
	if err := s.SetTCPCongestion(s.TCPCongestion); err != nil {
		return fmt.Errorf("tcp_congestion: %w", err)
	}
	for _, step := range []func() error{s.normalizeUplinks, s.normalizeEvents, s.validateShapes, s.normalizeTraffic, s.normalizePeers, s.normalizeClient} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// isUplink reports whether name is one of the scenario's uplinks.
func (s *Scenario) isUplink(name string) bool { return s.UplinkIndex(name) >= 0 }

// Links returns every emulated link of the scenario: the client's
// uplinks, then the gateway's. Events, samples and reports index them in
// this order.
func (s *Scenario) Links() []UplinkSpec {
	return append(slices.Clone(s.Uplinks), s.GatewayUplinks...)
}

// IsGatewayLink reports whether link i of links() is one of the gateway's.
func (s *Scenario) IsGatewayLink(i int) bool { return i >= len(s.Uplinks) }

// normalizeUplinks checks the uplinks (the client's and the gateway's),
// gives each a metric (100 per position) and kind by default, and loads
// their traces.
func (s *Scenario) normalizeUplinks() error {
	if len(s.GatewayUplinks) > maxUplinks {
		return fmt.Errorf("gateway_uplinks: %d given, at most %d", len(s.GatewayUplinks), maxUplinks)
	}
	for i := range s.GatewayUplinks {
		u := &s.GatewayUplinks[i]
		field := fmt.Sprintf("gateway_uplinks[%d]", i)
		switch {
		case u.NAT || u.Router:
			return fmt.Errorf("%s: nat and router are for the client's uplinks (the gateway's sit on the ISP router)", field)
		case u.Metric != 0:
			return fmt.Errorf("%s.metric: the gateway's uplinks are used in their order (the first is its primary address)", field)
		}
		if err := s.normalizeUplink(field, len(s.Uplinks)+i, u); err != nil {
			return err
		}
	}
	for i := range s.Uplinks {
		if err := s.normalizeUplink(fmt.Sprintf("uplinks[%d]", i), i, &s.Uplinks[i]); err != nil {
			return err
		}
	}
	return nil
}

// normalizeUplink checks link i of links(), u, named field in errors.
func (s *Scenario) normalizeUplink(field string, i int, u *UplinkSpec) error {
	if err := validInterfaceName(u.Name); err != nil {
		return fmt.Errorf("%s.name: %w", field, err)
	}
	if s.UplinkIndex(u.Name) < i {
		return fmt.Errorf("%s.name: %q is used twice", field, u.Name)
	}
	if u.Metric == 0 && !s.IsGatewayLink(i) {
		u.Metric = 100 * (i + 1)
	}
	if u.Metric < 0 {
		return fmt.Errorf("%s.metric: %d is negative", field, u.Metric)
	}
	if u.Kind == "" {
		u.Kind = "link"
	}
	for dir, spec := range map[string]*LinkSpec{"link": &u.Link, "up": u.Up, "down": u.Down} {
		if spec == nil {
			continue
		}
		if err := spec.validate(dir == "link"); err != nil {
			return fmt.Errorf("%s.%s: %w", field, dir, err)
		}
	}
	if err := s.loadTraces(u); err != nil {
		return fmt.Errorf("%s.link.%w", field, err)
	}
	if u.TBF != nil {
		if err := u.TBF.validate(); err != nil {
			return fmt.Errorf("%s.tbf: %w", field, err)
		}
	}
	return nil
}

// IsClientUplink reports whether name is one of the client's uplinks.
func (s *Scenario) IsClientUplink(name string) bool {
	return slices.ContainsFunc(s.Uplinks, func(u UplinkSpec) bool { return u.Name == name })
}

// linkNames lists every link's name (links()).
func (s *Scenario) linkNames() []string {
	var names []string
	for _, u := range s.Links() {
		names = append(names, u.Name)
	}
	return names
}

// normalizeEvents checks each event against the uplinks and its action.
func (s *Scenario) normalizeEvents() error {
	for i := range s.Events {
		e := &s.Events[i]
		field := fmt.Sprintf("events[%d]", i)
		if e.At.D() > s.Duration.D() {
			return fmt.Errorf("%s.at: %s is after the end of the scenario (%s)", field, e.At, s.Duration)
		}
		if !s.isUplink(e.Uplink) {
			return fmt.Errorf("%s.uplink: %q is not an uplink (have %s)", field, e.Uplink, strings.Join(s.linkNames(), ", "))
		}
		switch e.Action {
		case ActionDown, ActionUp, ActionUnplug, ActionPlug:
			if e.Set != nil {
				return fmt.Errorf("%s.set: only for action %q", field, actionSet)
			}
		case actionSet:
			if e.Set == nil {
				return fmt.Errorf("%s.set: action set needs the fields to change", field)
			}
			if err := e.Set.validate(false); err != nil {
				return fmt.Errorf("%s.set: %w", field, err)
			}
		case "":
			return fmt.Errorf("%s.action: missing (down, up, set, unplug or plug)", field)
		default:
			return fmt.Errorf("%s.action: %q is not down, up, set, unplug or plug", field, e.Action)
		}
		switch e.Direction {
		case "", "up", "down":
		default:
			return fmt.Errorf("%s.direction: %q is not up or down", field, e.Direction)
		}
		if e.Direction != "" && e.Action != actionSet && e.Action != ActionDown && e.Action != ActionUp {
			return fmt.Errorf("%s.direction: not for action %q", field, e.Action)
		}
	}
	return nil
}

// validateShapes sorts the events by time and checks that what the emulator
// would be asked to do, at the start and after every event, is valid.
func (s *Scenario) validateShapes() error {
	sort.SliceStable(s.Events, func(i, j int) bool { return s.Events[i].At < s.Events[j].At })
	links := s.Links()
	configs := make([]linkemu.Config, len(links))
	for i, u := range links {
		configs[i] = u.Shapes()
		if err := configs[i].Validate(); err != nil {
			return fmt.Errorf("uplink %s: %w", u.Name, err)
		}
	}
	for _, e := range s.Events {
		i := s.UplinkIndex(e.Uplink)
		configs[i] = ApplyEvent(configs[i], e)
		if err := configs[i].Validate(); err != nil {
			return fmt.Errorf("event at %s on %s: %w", e.At, e.Uplink, err)
		}
	}
	return nil
}

// normalizeTraffic checks the traffic streams and fills in their defaults.
func (s *Scenario) normalizeTraffic() error {
	if len(s.Traffic) == 0 {
		return errors.New("traffic: nothing to measure")
	}
	probes := 0
	for i := range s.Traffic {
		t := &s.Traffic[i]
		if err := t.normalize(fmt.Sprintf("traffic[%d]", i), s.Duration); err != nil {
			return err
		}
		if t.Kind == TrafficProbe {
			probes++
		}
	}
	if probes > 1 {
		return errors.New("traffic: at most one probe stream")
	}
	return nil
}

// normalize checks one traffic stream of a scenario lasting scenario and
// fills in its defaults (up, to the end, one stream, the probe's interval and
// size); errors start with field.
func (t *TrafficSpec) normalize(field string, scenario Duration) error {
	switch t.Kind {
	case TrafficTCP, TrafficUDP, TrafficProbe:
	case "":
		return fmt.Errorf("%s.kind: missing (tcp, udp or probe)", field)
	default:
		return fmt.Errorf("%s.kind: %q is not tcp, udp or probe", field, t.Kind)
	}
	switch t.Direction {
	case "":
		t.Direction = "up"
	case "up", "down":
	default:
		return fmt.Errorf("%s.direction: %q is not up or down", field, t.Direction)
	}
	if t.Start.D() >= scenario.D() {
		return fmt.Errorf("%s.start: %s is not before the end of the scenario (%s)", field, t.Start, scenario)
	}
	if t.Duration == 0 {
		t.Duration = scenario - t.Start
	}
	if t.Start+t.Duration > scenario {
		return fmt.Errorf("%s.duration: start %s + %s runs past the end of the scenario (%s)", field, t.Start, t.Duration, scenario)
	}
	switch t.Kind {
	case TrafficTCP, TrafficUDP:
		if t.Duration.D() < time.Second {
			return fmt.Errorf("%s.duration: %s is too short: iperf3 measures whole seconds", field, t.Duration)
		}
		if t.Streams == 0 {
			t.Streams = 1
		}
		if t.Streams < 0 || t.Streams > maxStreams {
			return fmt.Errorf("%s.streams: %d is not between 1 and %d", field, t.Streams, maxStreams)
		}
		if t.Kind == TrafficUDP && t.Rate <= 0 {
			return fmt.Errorf("%s.rate: udp traffic needs a rate (e.g. rate: 10Mbit)", field)
		}
		if t.Interval != 0 || t.Size != 0 {
			return fmt.Errorf("%s: interval and size are for probe traffic", field)
		}
	case TrafficProbe:
		if t.Streams != 0 || t.Rate != 0 {
			return fmt.Errorf("%s: streams and rate are for tcp and udp traffic", field)
		}
		if t.Direction != "up" {
			return fmt.Errorf("%s.direction: probes go up (client to protected network)", field)
		}
		if t.Interval == 0 {
			t.Interval = Duration(defaultProbeEvery)
		}
		if t.Interval.D() < minProbeInterval {
			return fmt.Errorf("%s.interval: %s is below the minimum of %s", field, t.Interval, minProbeInterval)
		}
		if t.Size == 0 {
			t.Size = defaultProbeSize
		}
		if t.Size < minProbeSize || t.Size > 1400 {
			return fmt.Errorf("%s.size: %d is not between %d and 1400 bytes", field, t.Size, minProbeSize)
		}
	}
	return nil
}

// normalizePeers checks the peers (mifsec by default).
func (s *Scenario) normalizePeers() error {
	if len(s.Peers) == 0 {
		s.Peers = []string{"mifsec"}
	}
	seen := map[string]bool{}
	for i, p := range s.Peers {
		if uplink, ok := strings.CutPrefix(p, SingleLinkPrefix); ok {
			if !s.isUplink(uplink) {
				return fmt.Errorf("peers[%d]: %q: %q is not an uplink (have %s)", i, p, uplink, strings.Join(s.linkNames(), ", "))
			}
		} else if !slices.Contains(LabPeerNames, p) {
			return fmt.Errorf("peers[%d]: unknown peer %q (known: %s, and %sUPLINK)", i, p, strings.Join(LabPeerNames, ", "), SingleLinkPrefix)
		}
		if seen[p] {
			return fmt.Errorf("peers[%d]: %q is listed twice", i, p)
		}
		seen[p] = true
	}
	return nil
}

// normalizeClient checks the client's settings; its interface is the
// preferred uplink by default.
func (s *Scenario) normalizeClient() error {
	if s.Client.Interface == "" {
		s.Client.Interface = s.preferredUplink()
	} else if !s.IsClientUplink(s.Client.Interface) {
		return fmt.Errorf("client.interface: %q is not an uplink of the client (have %s)", s.Client.Interface, strings.Join(s.UplinkNames(), ", "))
	}
	if s.Client.RetransmitTries < 0 {
		return fmt.Errorf("client.retransmit_tries: %d is negative", s.Client.RetransmitTries)
	}
	for i, name := range s.Client.Interfaces {
		if !s.IsClientUplink(name) {
			return fmt.Errorf("client.interfaces[%d]: %q is not an uplink of the client (have %s)", i, name, strings.Join(s.UplinkNames(), ", "))
		}
	}
	switch s.Client.Policy {
	case "", "single", "offload", "aggregate", "redundant":
	default:
		return fmt.Errorf("client.policy: %q is not a policy (single, offload, aggregate or redundant)", s.Client.Policy)
	}
	if s.Client.Policy != "" && len(s.Client.Interfaces) == 0 {
		return errors.New("client.policy needs client.interfaces: with one interface there is nothing to choose")
	}
	return nil
}

// DefaultTCPCongestion is the congestion control of a scenario's flows
// unless it names another.
const DefaultTCPCongestion = "cubic"

// SetTCPCongestion sets the congestion control of the scenario's TCP
// flows ("" for DefaultTCPCongestion). Whether the kernel has it is
// checked when the lab sets it.
func (s *Scenario) SetTCPCongestion(name string) error {
	if name == "" {
		name = DefaultTCPCongestion
	}
	if len(name) > 15 || strings.IndexFunc(name, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') }) >= 0 {
		return fmt.Errorf("%q is not a congestion control name (cubic, bbr, reno, ...)", name)
	}
	s.TCPCongestion = name
	return nil
}

// SetDuration changes the scenario's length, scaling the times of events
// and traffic by the same factor so that the story stays the same.
func (s *Scenario) SetDuration(d time.Duration) error {
	if d < 2*time.Second || d > maxScenarioDuration {
		return fmt.Errorf("duration %s is not between 2s and %s", d, maxScenarioDuration)
	}
	scale := func(v Duration) Duration {
		return Duration(time.Duration(float64(v) * float64(d) / float64(s.Duration)).Round(100 * time.Millisecond))
	}
	for i := range s.Events {
		s.Events[i].At = scale(s.Events[i].At)
	}
	for i := range s.Traffic {
		t := &s.Traffic[i]
		t.Start, t.Duration = scale(t.Start), scale(t.Duration)
		if t.Kind != TrafficProbe {
			// iperf3 runs whole seconds.
			t.Duration = Duration(max(time.Second, t.Duration.D().Truncate(time.Second)))
		}
	}
	s.Duration = Duration(d)
	return s.normalize()
}

// UplinkNames lists the client's uplinks' interface names in order.
func (s *Scenario) UplinkNames() []string {
	var names []string
	for _, u := range s.Uplinks {
		names = append(names, u.Name)
	}
	return names
}

// preferredUplink is the uplink with the lowest metric (the first on ties).
func (s *Scenario) preferredUplink() string {
	best := 0
	for i, u := range s.Uplinks {
		if u.Metric < s.Uplinks[best].Metric {
			best = i
		}
	}
	return s.Uplinks[best].Name
}

// UplinkIndex returns the position of the named uplink in links(), or -1.
func (s *Scenario) UplinkIndex(name string) int {
	return slices.IndexFunc(s.Links(), func(u UplinkSpec) bool { return u.Name == name })
}

// validInterfaceName checks a Linux interface name.
func validInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("missing")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 bytes", name)
	case strings.ContainsAny(name, "/: \t\n") || name == "." || name == "..":
		return fmt.Errorf("%q is not a valid interface name", name)
	case name == "lo":
		return errors.New(`"lo" is the loopback interface`)
	}
	return nil
}

// validate checks the ranges the emulator accepts; traces are allowed in
// an uplink's link only.
func (l *LinkSpec) validate(link bool) error {
	if !link {
		if l.TraceUp != nil {
			return errors.New("trace_up: only in an uplink's link")
		}
		if l.TraceDown != nil {
			return errors.New("trace_down: only in an uplink's link")
		}
	}
	if l.Rate != nil && (l.TraceUp != nil || l.TraceDown != nil) {
		return errors.New("rate and a trace (trace_up, trace_down): give one, a trace replaces the rate in its direction")
	}
	for key, p := range map[string]*string{"trace_up": l.TraceUp, "trace_down": l.TraceDown} {
		if p != nil && strings.TrimSpace(*p) == "" {
			return fmt.Errorf("%s: empty file name", key)
		}
	}
	if l.Burst != nil {
		b := l.Burst
		if b.R == 0 {
			return errors.New("burst.r: 0 never leaves the bad state")
		}
	}
	return nil
}

// loadTraces reads the uplink's trace files (once) and checks that no
// direction has both a trace and a rate; errors start with the key.
func (s *Scenario) loadTraces(u *UplinkSpec) error {
	for _, tc := range []struct {
		key      string
		file     *string
		override *LinkSpec
		dir      string
		trace    **linkemu.Trace
	}{{"trace_up", u.Link.TraceUp, u.Up, "up", &u.traceUp}, {"trace_down", u.Link.TraceDown, u.Down, "down", &u.traceDown}} {
		if tc.file == nil {
			continue
		}
		if tc.override != nil && tc.override.Rate != nil {
			return fmt.Errorf("%s: the %s direction replays this trace and %s.rate is set: give one", tc.key, tc.dir, tc.dir)
		}
		if *tc.trace != nil {
			continue // loaded already (SetDuration checks again)
		}
		find := s.findTrace
		if find == nil {
			find = func(name string) (string, error) { return name, nil }
		}
		path, err := find(*tc.file)
		if err != nil {
			return fmt.Errorf("%s: %w", tc.key, err)
		}
		t, err := linkemu.ReadTrace(path)
		if err != nil {
			return fmt.Errorf("%s: %w", tc.key, err)
		}
		*tc.trace = t
	}
	return nil
}

// Shapes returns the emulator's configuration of the uplink at the start:
// AtoB is client to gateway (up), BtoA gateway to client (down).
func (u UplinkSpec) Shapes() linkemu.Config {
	var up, down linkemu.Shape
	u.Link.apply(&up)
	u.Link.apply(&down)
	up.Trace, down.Trace = u.traceUp, u.traceDown
	if u.Up != nil {
		u.Up.apply(&up)
	}
	if u.Down != nil {
		u.Down.apply(&down)
	}
	return linkemu.Config{AtoB: up, BtoA: down}
}

// apply sets the fields that l sets on shape (traces are Shapes'). A rate
// replaces a trace: an event may set a trace-driven link to a fixed rate.
func (l *LinkSpec) apply(shape *linkemu.Shape) {
	if l.Rate != nil {
		shape.Rate = float64(*l.Rate)
		shape.Trace = nil
	}
	if l.Delay != nil {
		shape.Delay = l.Delay.D()
	}
	if l.Jitter != nil {
		shape.Jitter = l.Jitter.D()
	}
	if l.Reorder != nil {
		shape.Reorder = *l.Reorder
	}
	if l.Loss != nil {
		shape.Loss = float64(*l.Loss)
	}
	if l.Burst != nil {
		b := l.Burst
		if b.P == 0 && b.LossBad == 0 && b.LossGood == 0 {
			shape.Burst = nil
		} else {
			shape.Burst = &linkemu.GilbertElliott{P: float64(b.P), R: float64(b.R), LossGood: float64(b.LossGood), LossBad: float64(b.LossBad)}
		}
	}
	if l.Queue != nil {
		shape.QueueBytes = int(*l.Queue)
	}
	if l.QueueTime != nil {
		shape.QueueTime = l.QueueTime.D()
	}
}

// ApplyEvent returns the link configuration after the event.
func ApplyEvent(cfg linkemu.Config, e EventSpec) linkemu.Config {
	dirs := []*linkemu.Shape{&cfg.AtoB, &cfg.BtoA}
	switch e.Direction {
	case "up":
		dirs = dirs[:1]
	case "down":
		dirs = dirs[1:]
	}
	for _, shape := range dirs {
		switch e.Action {
		case ActionDown:
			shape.Down = true
		case ActionUp:
			shape.Down = false
		case actionSet:
			e.Set.apply(shape)
		}
	}
	return cfg
}

// Describe says what the event does, for logs, reports and the plot.
func (e EventSpec) Describe() string {
	var what string
	switch e.Action {
	case ActionDown:
		what = "link down"
	case ActionUp:
		what = "link up"
	case ActionUnplug:
		what = "unplugged"
	case ActionPlug:
		what = "plugged in"
	case actionSet:
		var parts []string
		l := e.Set
		if l.Rate != nil {
			parts = append(parts, "rate "+FormatRate(float64(*l.Rate)))
		}
		if l.Delay != nil {
			parts = append(parts, "delay "+l.Delay.String())
		}
		if l.Jitter != nil {
			parts = append(parts, "jitter "+l.Jitter.String())
		}
		if l.Loss != nil {
			parts = append(parts, "loss "+strconv.FormatFloat(float64(*l.Loss)*100, 'g', 3, 64)+"%")
		}
		if l.Burst != nil {
			parts = append(parts, "burst loss")
		}
		if l.Queue != nil || l.QueueTime != nil {
			parts = append(parts, "queue")
		}
		what = strings.Join(parts, ", ")
	}
	if e.Direction != "" {
		what += " (" + e.Direction + ")"
	}
	return e.Uplink + " " + what
}

// FormatRate writes a rate in the largest unit that keeps it at least 1.
func FormatRate(bps float64) string {
	switch {
	case bps == 0:
		return "unlimited"
	case bps >= 1e9:
		return strconv.FormatFloat(bps/1e9, 'g', 4, 64) + " Gbit/s"
	case bps >= 1e6:
		return strconv.FormatFloat(bps/1e6, 'g', 4, 64) + " Mbit/s"
	case bps >= 1e3:
		return strconv.FormatFloat(bps/1e3, 'g', 4, 64) + " kbit/s"
	}
	return strconv.FormatFloat(bps, 'g', 4, 64) + " bit/s"
}

// Directions lists the directions of the scenario's tcp and udp traffic
// ("up" when there is none: probes go up).
func (s *Scenario) Directions() []string {
	var dirs []string
	for _, t := range s.Traffic {
		if t.Kind != TrafficProbe && !slices.Contains(dirs, t.Direction) {
			dirs = append(dirs, t.Direction)
		}
	}
	if len(dirs) == 0 {
		dirs = []string{"up"}
	}
	slices.Sort(dirs)
	slices.Reverse(dirs) // up first
	return dirs
}
