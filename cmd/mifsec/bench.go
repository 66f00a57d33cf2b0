package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mifsec/mifsec/bench"
	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
	"github.com/mifsec/mifsec/bench/scenarios"
)

func benchCommand() *cli.Command {
	subcommands := []*cli.Command{benchThroughputCommand(), benchClientsCommand(), benchSoakCommand()}
	for _, name := range scenarios.BuiltinScenarios() {
		subcommands = append(subcommands, benchScenarioCommand(name))
	}
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure mifsec against other tunnels in network namespaces (needs root)",
		ArgsUsage: "SCENARIO | FILE.yaml",
		Description: "`mifsec bench throughput` measures one TCP flow over a plain veth pair. The other scenarios\n" +
			"(" + strings.Join(scenarios.BuiltinScenarios(), ", ") + ", or a scenario file: `mifsec bench [flags] FILE.yaml`)\n" +
			"run on a client host with several emulated uplinks; see docs/lab.md.",
		Flags:       scenarioFlags(),
		Subcommands: subcommands,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("bench needs one scenario: throughput, %s, or a scenario file",
					strings.Join(scenarios.BuiltinScenarios(), ", "))
			}
			return runScenarioCommand(c, c.Args().First(), "mifsec-bench")
		},
	}
}

// inheritFlags takes the scenario flags given before the scenario's name
// (`mifsec bench --out DIR aggregation`) where they were not given after
// it: both levels define them, and the scenario's own would shadow them.
func inheritFlags(c *cli.Context) error {
	lineage := c.Lineage()
	if len(lineage) < 2 {
		return nil
	}
	parent := lineage[1]
	for _, f := range scenarioFlags() {
		name := f.Names()[0]
		if c.IsSet(name) || !parent.IsSet(name) {
			continue
		}
		if err := c.Set(name, fmt.Sprint(parent.Value(name))); err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
	}
	return nil
}

// benchScenarioCommand runs a built-in scenario with its peers.
func benchScenarioCommand(name string) *cli.Command {
	usage := "the " + name + " scenario"
	if summary, err := scenarios.BuiltinSummary(name); err == nil {
		usage = summary
	}
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Flags: scenarioFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("bench %s takes no arguments, got %q", name, c.Args().Slice())
			}
			if err := inheritFlags(c); err != nil {
				return err
			}
			return runScenarioCommand(c, name, "mifsec-bench")
		},
	}
}

func benchThroughputCommand() *cli.Command {
	return &cli.Command{
		Name:  "throughput",
		Usage: "one TCP flow through each tunnel, both directions, in a netns pair over veth",
		Description: "Each peer gets two fresh network namespaces (" + labnet.NamespacePrefix + "PID-PEER-c/-s)\n" +
			"joined by a veth pair; the tunnel runs between them and mifsec itself sends and measures one\n" +
			"TCP flow up (client to server) and down (server to client). Peers: mifsec (this binary's `static` command),\n" +
			"mifsec-ike (this binary's `gateway` and `connect`: IKEv2 with a PSK, AES-256-GCM),\n" +
			"wireguard-go (built from the Go module proxy into the cache directory when missing),\n" +
			"strongswan (charon with kernel-libipsec, when installed), mifsec-aes256-sha256 and\n" +
			"strongswan-aes256-sha256 (the same two on AES-256-CBC with HMAC-SHA2-256-128, the suite\n" +
			"of macOS and iOS clients) and veth (no tunnel); mifsec-ike-aes256-sha256 (mifsec-ike on that\n" +
			"suite) only when named.\n" +
			"Namespaces and processes left by an interrupted earlier run are removed first.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "length of each TCP transfer (one per direction)"},
			&cli.StringFlag{Name: "peers", Value: strings.Join(peers.PeerNames, ","), Usage: "comma-separated peers to measure, in this order"},
			&cli.StringFlag{Name: "json", Value: "bench-out/throughput.json", Usage: "write the JSON report to `FILE`"},
			&cli.BoolFlag{Name: "keep-going", Usage: "measure the remaining peers after one fails"},
			&cli.StringFlag{Name: "wireguard-go", Usage: "use this wireguard-go binary instead of building one (`PATH`)"},
		},
		Action: runBenchThroughput,
	}
}

func runBenchThroughput(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench throughput takes no arguments, got %q", c.Args().Slice())
	}
	var names []string
	for name := range strings.SplitSeq(c.String("peers"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			names = append(names, name)
		}
	}
	mifsecPath, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the mifsec binary: %w", err)
	}
	cfg := bench.ThroughputConfig{
		Duration:  c.Duration("duration"),
		Peers:     names,
		KeepGoing: c.Bool("keep-going"),
		PeerOptions: peers.PeerOptions{
			MifsecPath:      mifsecPath,
			WireguardGoPath: c.String("wireguard-go"),
		},
		Log: c.App.ErrWriter,
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}

	// A closed stdout or stderr (e.g. piped into head) must not kill the
	// process before it has removed its namespaces and processes: writes
	// then fail with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	ctx := c.Context
	lab, err := labnet.NewLab(ctx, cfg.Log)
	if err != nil {
		return err
	}
	// Close works after cancellation too: it uses its own deadline.
	defer lab.Close()
	report, runErr := bench.RunThroughput(ctx, lab, cfg)
	closeErr := lab.Close()
	if closeErr != nil {
		closeErr = fmt.Errorf("clean up the lab: %w", closeErr)
	}
	if report == nil {
		return errors.Join(runErr, closeErr)
	}
	var outErr error
	if err := report.WriteTable(c.App.Writer); err != nil {
		outErr = fmt.Errorf("print the table: %w", err)
	}
	if path := c.String("json"); path != "" {
		if err := report.WriteJSON(path); err != nil {
			outErr = errors.Join(outErr, err)
		} else {
			fmt.Fprintf(cfg.Log, "report written to %s\n", path)
		}
	}
	return errors.Join(runErr, closeErr, outErr)
}
