package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mifsec/mifsec/bench/load"
	"github.com/mifsec/mifsec/ike"
)

// benchClientsCommand is `mifsec bench clients`: a fleet of in-process
// IKEv2 clients against a running gateway.
func benchClientsCommand() *cli.Command {
	return &cli.Command{
		Name:  "clients",
		Usage: "connect many IKEv2 clients at once to a gateway and pass an echo through each tunnel",
		Description: `Runs --count IKEv2 initiators in this process, each with its own UDP socket, against the
gateway at --gateway (pre-shared key, identities PREFIX-N.fleet.bench). Each sets up an
IKE SA and a Child SA, then sends an ICMP echo request from its leased inner address to
--target (an address in the gateway's protected networks) sealed in its ESP SA and waits
for the sealed reply. Prints the time until all were established, the handshake latency
distribution and how many passed traffic; the clients then delete their IKE SAs (after
--hold).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "gateway", Usage: "the gateway's `ADDR[:PORT]` (port 500 by default)", Required: true},
			&cli.StringFlag{Name: "target", Usage: "inner `ADDR` (IPv4) each client pings through its tunnel", Required: true},
			&cli.IntFlag{Name: "count", Value: 100, Usage: "`N` clients"},
			&cli.StringFlag{Name: "psk-file", Usage: "the pre-shared key, `FILE`", Required: true},
			&cli.StringFlag{Name: "remote-id", Usage: "the gateway's expected `IDENTITY` (default: any)"},
			&cli.StringFlag{Name: "id-prefix", Value: "client", Usage: "client N is `PREFIX`-N.fleet.bench"},
			&cli.StringSliceFlag{Name: "source", Usage: "local `ADDR`s the clients' sockets bind to, round robin (repeatable)"},
			&cli.StringFlag{Name: "ike", Value: "aes256gcm16-prfsha256-x25519", Usage: "IKE `PROPOSALS`"},
			&cli.StringFlag{Name: "esp", Value: "aes256gcm16", Usage: "ESP `PROPOSALS`"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "per client, for the handshake and for the echo"},
			&cli.DurationFlag{Name: "retry", Usage: "a client whose connection attempt fails (gateway silent or busy) tries again after `DURATION`, then doubling up to 8 times that, until --timeout, as a service manager restarts mifsec connect (default: one attempt)"},
			&cli.DurationFlag{Name: "dpd", Value: 10 * time.Second, Usage: "each client checks the gateway is alive after `DURATION` without an IKE message from it, as mifsec connect --dpd"},
			&cli.DurationFlag{Name: "hold", Usage: "keep the clients up this long before deleting their IKE SAs (with --gateway-pid, the gateway's memory is read again at its end)"},
			&cli.Float64Flag{Name: "rate", Usage: "start `N` clients a second (default: all at once)"},
			&cli.IntFlag{Name: "gateway-pid", Usage: "report the gateway process `PID`'s memory and CPU (from /proc; same host)"},
			&cli.StringFlag{Name: "json", Usage: "also write the report and every client's result to `FILE`"},
			&cli.DurationFlag{Name: "traffic", Usage: "once the clients are up, each traffic phase sends echoes through their tunnels for `DURATION`"},
			&cli.StringFlag{Name: "traffic-clients", Usage: "the traffic phases, one after the other, each with that many of the clients, e.g. 1,1000 (`N[,N...]`; default: one phase with all)"},
			&cli.IntFlag{Name: "traffic-size", Value: 1400, Usage: "inner packet `BYTES` of the traffic (within the gateway's TUN MTU)"},
			&cli.IntFlag{Name: "traffic-window", Value: 256, Usage: "`N` echoes in flight over all the clients of a phase"},
		},
		Action: runBenchClients,
	}
}

// benchClientsReport is what --json writes.
type benchClientsReport struct {
	Report  load.ClientsReport  `json:"report"`
	Gateway *gatewayUsage       `json:"gateway,omitempty"`
	Traffic []trafficPhase      `json:"traffic,omitempty"`
	Clients []benchClientResult `json:"clients"`
}

// trafficPhase is one phase of --traffic: what came back, and the CPU
// the gateway (with --gateway-pid) and the fleet itself used meanwhile.
type trafficPhase struct {
	Report load.TrafficReport `json:"report"`
	// Ratio is the phase's replies per second over the first phase's.
	Ratio      float64       `json:"ratio"`
	GatewayCPU time.Duration `json:"gateway_cpu_ns,omitempty"`
	FleetCPU   time.Duration `json:"fleet_cpu_ns"`
}

func (p trafficPhase) String() string {
	s := fmt.Sprintf("%v; %.3f of the first phase; fleet CPU %.0f%% of a core", p.Report, p.Ratio,
		100*p.FleetCPU.Seconds()/max(p.Report.Duration.Seconds(), 1e-9))
	if p.GatewayCPU > 0 {
		// The gateway opened a request and sealed a reply for each.
		s += fmt.Sprintf(", gateway CPU %.0f%% of a core (%.1f µs per packet it carried)",
			100*p.GatewayCPU.Seconds()/max(p.Report.Duration.Seconds(), 1e-9),
			float64(p.GatewayCPU.Microseconds())/max(float64(2*p.Report.Received), 1))
	}
	return s
}

type benchClientResult struct {
	ID          string        `json:"id"`
	Local       string        `json:"local"`
	Address     string        `json:"address,omitempty"`
	Handshake   time.Duration `json:"handshake_ns"`
	Established time.Duration `json:"established_ns"`
	EchoRTT     time.Duration `json:"echo_rtt_ns"`
	Echoes      int           `json:"echoes"`
	Attempts    int           `json:"attempts"`
	TrafficOK   bool          `json:"traffic_ok"`
	Error       string        `json:"error,omitempty"`
}

// gatewayUsage is the gateway process's use of the host, before the
// clients and once they were set up (--gateway-pid).
type gatewayUsage struct {
	PID    int          `json:"pid"`
	Before processUsage `json:"before"`
	Up     processUsage `json:"up"`
	// Held is read at the end of --hold: what the gateway keeps for the
	// same clients once they are idle (it drops an idle SA's expanded
	// cipher within two sweeps, dataplane.CipherIdleSweep, and the Go
	// runtime returns freed pages to the system over minutes).
	Held *processUsage `json:"held,omitempty"`
	Hold time.Duration `json:"hold_ns,omitempty"`
	// Setup is how long the fleet took, from its start until every
	// client succeeded or failed.
	Setup time.Duration `json:"setup_ns"`
}

func (g gatewayUsage) String(established int) string {
	cpu := g.Up.CPU - g.Before.CPU
	return fmt.Sprintf("gateway %d: VmRSS %d kB before, %d kB with %d clients (%d bytes per client); CPU %.1f s in the %.1f s of setup (%.0f%% of a core)",
		g.PID, g.Before.RSSkB, g.Up.RSSkB, established, g.perClient(g.Up, established), cpu.Seconds(), g.Setup.Seconds(), 100*cpu.Seconds()/max(g.Setup.Seconds(), 1e-9))
}

// perClient is the growth of the gateway's VmRSS from before the clients
// to u, in bytes per client established.
func (g gatewayUsage) perClient(u processUsage, established int) int {
	if established <= 0 {
		return 0
	}
	return (u.RSSkB - g.Before.RSSkB) * 1024 / established
}

// heldString is the line on the gateway's memory at the end of --hold.
func (g gatewayUsage) heldString(established int) string {
	return fmt.Sprintf("gateway %d: VmRSS %d kB with the %d clients held idle for %v (%d bytes per client); CPU %.1f s while held",
		g.PID, g.Held.RSSkB, established, g.Hold.Round(time.Second), g.perClient(*g.Held, established), (g.Held.CPU - g.Up.CPU).Seconds())
}

func parseBenchClients(c *cli.Context) (load.ClientsConfig, error) {
	var cfg load.ClientsConfig
	var err error
	if cfg.Gateway, err = parseEndpoint(c.String("gateway"), 500); err != nil {
		return cfg, fmt.Errorf("--gateway: %w", err)
	}
	if cfg.Target, err = netip.ParseAddr(c.String("target")); err != nil || !cfg.Target.Is4() {
		return cfg, fmt.Errorf("--target %q: an IPv4 address", c.String("target"))
	}
	if cfg.Count = c.Int("count"); cfg.Count <= 0 || cfg.Count > 65535 {
		return cfg, errors.New("--count: between 1 and 65535")
	}
	if cfg.PSK, err = readPSKFile(c.String("psk-file")); err != nil {
		return cfg, fmt.Errorf("--psk-file: %w", err)
	}
	if id := c.String("remote-id"); id != "" {
		if cfg.RemoteID, err = ike.ParseIdentity(id); err != nil {
			return cfg, fmt.Errorf("--remote-id: %w", err)
		}
	}
	prefix := c.String("id-prefix")
	if _, err := ike.ParseIdentity(prefix + "-0.fleet.bench"); err != nil {
		return cfg, fmt.Errorf("--id-prefix: %w", err)
	}
	cfg.ID = load.FleetIDs(prefix)
	if cfg.Sources, err = parseAddrs(c.StringSlice("source")); err != nil {
		return cfg, fmt.Errorf("--source: %w", err)
	}
	if cfg.IKE, err = ike.ParseIKEProposals(c.String("ike")); err != nil {
		return cfg, fmt.Errorf("--ike: %w", err)
	}
	if cfg.ESP, err = ike.ParseESPProposals(c.String("esp")); err != nil {
		return cfg, fmt.Errorf("--esp: %w", err)
	}
	if cfg.Timeout = c.Duration("timeout"); cfg.Timeout <= 0 {
		return cfg, errors.New("--timeout must be positive")
	}
	if cfg.Retry = c.Duration("retry"); cfg.Retry < 0 {
		return cfg, errors.New("--retry must not be negative")
	}
	if cfg.StartRate = c.Float64("rate"); cfg.StartRate < 0 {
		return cfg, errors.New("--rate must not be negative")
	}
	if cfg.DPD = c.Duration("dpd"); cfg.DPD <= 0 {
		return cfg, errors.New("--dpd must be positive")
	}
	return cfg, nil
}

// parseTrafficPhases reads --traffic and its companions: nil without
// --traffic.
func parseTrafficPhases(c *cli.Context, count int) ([]load.TrafficConfig, error) {
	d := c.Duration("traffic")
	if d < 0 {
		return nil, errors.New("--traffic must not be negative")
	}
	if d == 0 {
		for _, f := range []string{"traffic-clients", "traffic-size", "traffic-window"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s without --traffic", f)
			}
		}
		return nil, nil
	}
	phase := load.TrafficConfig{Duration: d, Size: c.Int("traffic-size"), Window: c.Int("traffic-window")}
	if phase.Window <= 0 {
		return nil, errors.New("--traffic-window must be positive")
	}
	counts := []int{0}
	if v := c.String("traffic-clients"); v != "" {
		counts = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 || n > count {
				return nil, fmt.Errorf("--traffic-clients %q: each between 1 and --count (%d)", v, count)
			}
			counts = append(counts, n)
		}
	}
	var phases []load.TrafficConfig
	for _, n := range counts {
		p := phase
		p.Clients = n
		if err := p.Normalize(); err != nil {
			return nil, fmt.Errorf("--traffic: %w", err)
		}
		phases = append(phases, p)
	}
	return phases, nil
}

// runTraffic runs the phases one after the other, printing each.
func runTraffic(ctx context.Context, f *load.Fleet, phases []load.TrafficConfig, gatewayPID int) ([]trafficPhase, error) {
	// cpu reads the CPU time the fleet (this process) and the gateway
	// (0 without --gateway-pid) have used so far.
	cpu := func() (fleet, gateway time.Duration, err error) {
		self, err := readProcessUsage(os.Getpid())
		if err != nil {
			return 0, 0, err
		}
		if gatewayPID != 0 {
			gw, err := readProcessUsage(gatewayPID)
			if err != nil {
				return 0, 0, fmt.Errorf("--gateway-pid: %w", err)
			}
			gateway = gw.CPU
		}
		return self.CPU, gateway, nil
	}
	var out []trafficPhase
	for _, cfg := range phases {
		fleet0, gw0, err := cpu()
		if err != nil {
			return out, err
		}
		rep, err := f.Traffic(ctx, cfg)
		if err != nil {
			return out, err
		}
		fleet1, gw1, err := cpu()
		if err != nil {
			return out, err
		}
		p := trafficPhase{Report: rep, FleetCPU: fleet1 - fleet0, GatewayCPU: gw1 - gw0, Ratio: 1}
		if len(out) > 0 {
			p.Ratio = 0
			if first := out[0].Report.PacketsPerSecond; first > 0 {
				p.Ratio = rep.PacketsPerSecond / first
			}
		}
		fmt.Println(p)
		out = append(out, p)
		if rep.Received == 0 {
			return out, fmt.Errorf("traffic with %d clients: no reply came back", rep.Clients)
		}
	}
	return out, nil
}

func runBenchClients(c *cli.Context) error {
	cfg, err := parseBenchClients(c)
	if err != nil {
		return err
	}
	phases, err := parseTrafficPhases(c, cfg.Count)
	if err != nil {
		return err
	}
	var gw *gatewayUsage
	if pid := c.Int("gateway-pid"); pid != 0 {
		gw = &gatewayUsage{PID: pid}
		if gw.Before, err = readProcessUsage(pid); err != nil {
			return fmt.Errorf("--gateway-pid: %w", err)
		}
	}
	start := time.Now()
	f, err := load.StartClients(c.Context, cfg)
	if err != nil {
		return err
	}
	results, rep := f.Results(), f.Report()
	fmt.Println(rep)
	if gw != nil {
		gw.Setup = time.Since(start)
		if gw.Up, err = readProcessUsage(gw.PID); err != nil {
			f.Close()
			return fmt.Errorf("--gateway-pid: %w", err)
		}
		fmt.Println(gw.String(rep.Established))
	}
	var traffic []trafficPhase
	var trafficErr error
	if len(phases) > 0 {
		traffic, trafficErr = runTraffic(c.Context, f, phases, c.Int("gateway-pid"))
	}
	if hold := c.Duration("hold"); hold > 0 {
		select {
		case <-time.After(hold):
		case <-c.Context.Done():
		}
		if gw != nil && c.Context.Err() == nil {
			held, err := readProcessUsage(gw.PID)
			if err != nil {
				f.Close()
				return fmt.Errorf("--gateway-pid: %w", err)
			}
			gw.Held, gw.Hold = &held, hold
			fmt.Println(gw.heldString(rep.Established))
		}
	}
	if path := c.String("json"); path != "" {
		out := benchClientsReport{Report: rep, Gateway: gw, Traffic: traffic}
		for _, r := range results {
			br := benchClientResult{ID: r.ID, Local: r.Local.String(), Handshake: r.Handshake, Established: r.Established,
				EchoRTT: r.EchoRTT, Echoes: r.Echoes, Attempts: r.Attempts, TrafficOK: r.TrafficOK}
			if r.Address.IsValid() {
				br.Address = r.Address.String()
			}
			if r.Err != nil {
				br.Error = r.Err.Error()
			}
			out.Clients = append(out.Clients, br)
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			f.Close()
			return err
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			f.Close()
			return fmt.Errorf("--json: %w", err)
		}
	}
	f.Close()
	if rep.Established != rep.Count || rep.TrafficOK != rep.Count {
		return fmt.Errorf("%d of %d clients established, %d passed traffic", rep.Established, rep.Count, rep.TrafficOK)
	}
	return trafficErr
}
