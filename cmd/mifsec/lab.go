package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mifsec/mifsec/bench"
	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
	"github.com/mifsec/mifsec/bench/report"
	"github.com/mifsec/mifsec/bench/scenarios"
)

func labCommand() *cli.Command {
	return &cli.Command{
		Name:  "lab",
		Usage: "show mifsec at work: a laptop with WLAN and cellular uplinks, emulated, one of them failing (needs root)",
		Description: "Builds a client host with two uplinks (wlan0: 50 Mbit/s, 15 ms; wwan0: 20 Mbit/s, 40 ms), each through\n" +
			"its own emulated link to a gateway, in network namespaces; runs `mifsec gateway` and `mifsec connect`,\n" +
			"one TCP flow and a probe stream through the tunnel, generated and measured by mifsec itself (no\n" +
			"iperf3 or ping needed); fails the WLAN link for a while; then prints a summary and writes a plot (PNG)\n" +
			"of the throughput per path and a JSON file of everything measured. About 40 s with mifsec alone;\n" +
			"--peers mifsec,mptcp,wireguard-go adds Linux MPTCP and wireguard-go on the same links, side by side.\n" +
			"Everything it creates is removed on exit, on Ctrl-C, and at the next start after a crash.",
		Flags: append(scenarioFlags(),
			&cli.StringFlag{Name: "scenario", Usage: "run this scenario `FILE` (or built-in name) instead of the default"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("lab takes no arguments, got %q (use --scenario FILE)", c.Args().Slice())
			}
			name := c.String("scenario")
			if name == "" {
				name = "lab"
			}
			return runScenarioCommand(c, name, "mifsec-lab")
		},
	}
}

// scenarioFlags are the flags of `mifsec lab` and `mifsec bench SCENARIO`.
func scenarioFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "out", Usage: "write the report, plots and summary into `DIR` (default ./mifsec-<scenario>-<time>)"},
		&cli.DurationFlag{Name: "duration", Usage: "run the traffic this long, events moved in proportion (default: the scenario's)"},
		&cli.StringFlag{Name: "peers", Usage: "comma-separated peers to measure (default: the scenario's): " + strings.Join(scenarios.LabPeerNames, ", ")},
		&cli.BoolFlag{Name: "keep-going", Usage: "measure the remaining peers after one fails"},
		&cli.StringFlag{Name: "tcp-congestion", Usage: "TCP congestion control of the flows on both ends, e.g. bbr (default: the scenario's, else " + scenarios.DefaultTCPCongestion + ")"},
		&cli.StringFlag{Name: "wireguard-go", Usage: "use this wireguard-go binary instead of building one (`PATH`)"},
	}
}

// runScenarioCommand runs a scenario for `mifsec lab` and `mifsec bench
// SCENARIO`, prints the summary and writes the files.
func runScenarioCommand(c *cli.Context, name, outPrefix string) error {
	sc, err := scenarios.LoadScenario(name)
	if err != nil {
		return err
	}
	if d := c.Duration("duration"); d != 0 {
		if err := sc.SetDuration(d); err != nil {
			return fmt.Errorf("--duration: %w", err)
		}
	}
	if cc := c.String("tcp-congestion"); cc != "" {
		if err := sc.SetTCPCongestion(cc); err != nil {
			return fmt.Errorf("--tcp-congestion: %w", err)
		}
	}
	var names []string
	for p := range strings.SplitSeq(c.String("peers"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			names = append(names, p)
		}
	}
	out := c.String("out")
	if out == "" {
		out = fmt.Sprintf("./%s-%s-%s", outPrefix, sc.Name, time.Now().Format("20060102-150405"))
		if outPrefix == "mifsec-lab" && sc.Name == "lab" {
			out = "./mifsec-lab-" + time.Now().Format("20060102-150405")
		}
	}
	mifsecPath, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the mifsec binary: %w", err)
	}
	stderr := c.App.ErrWriter
	if stderr == nil {
		stderr = os.Stderr
	}
	stdout := c.App.Writer
	if stdout == nil {
		stdout = os.Stdout
	}
	con := newConsole(stderr)
	cfg := bench.ScenarioConfig{
		PeerOptions: peers.PeerOptions{MifsecPath: mifsecPath, WireguardGoPath: c.String("wireguard-go"),
			LogLevel: logLevelOf(c)},
		Peers:     names,
		KeepGoing: c.Bool("keep-going"),
		Log:       con,
		Tick:      con.tick,
	}
	// A closed stdout or stderr must not kill the process before it has
	// removed its namespaces and processes.
	signal.Ignore(syscall.SIGPIPE)
	ctx := c.Context
	lab, err := labnet.NewLab(ctx, con)
	if err != nil {
		return err
	}
	defer lab.Close()
	fmt.Fprintf(con, "scenario %s (%s), %s of traffic; output in %s\n", sc.Name, sc.Source(), sc.Duration, out)
	report, runErr := bench.RunScenario(ctx, lab, sc, cfg)
	con.done()
	closeErr := lab.Close()
	if closeErr != nil {
		closeErr = fmt.Errorf("clean up the lab: %w", closeErr)
	}
	if report == nil {
		return errors.Join(runErr, closeErr)
	}
	outErr := writeScenarioOutput(report, out, stdout, stderr)
	return errors.Join(runErr, closeErr, outErr)
}

// writeScenarioOutput prints the summary and writes summary.txt,
// report.json, a plot of every measured peer side by side
// (throughput.png) and one plot per peer into dir.
func writeScenarioOutput(report *report.ScenarioReport, dir string, stdout, log io.Writer) error {
	var summary strings.Builder
	if err := report.WriteSummary(&summary); err != nil {
		return err
	}
	var errs []error
	if _, err := io.WriteString(stdout, "\n"+summary.String()); err != nil {
		errs = append(errs, fmt.Errorf("print the summary: %w", err))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return errors.Join(append(errs, fmt.Errorf("create %s: %w", dir, err))...)
	}
	var written []string
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary.String()), 0o644); err != nil {
		errs = append(errs, fmt.Errorf("write the summary: %w", err))
	} else {
		written = append(written, filepath.Join(dir, "summary.txt"))
	}
	if err := report.WriteJSON(filepath.Join(dir, "report.json")); err != nil {
		errs = append(errs, err)
	} else {
		written = append(written, filepath.Join(dir, "report.json"))
	}
	all := filepath.Join(dir, "throughput.png")
	if ok, err := report.WriteComparisonPlotFile(all); err != nil {
		errs = append(errs, err)
	} else if ok {
		written = append(written, all)
	}
	for _, run := range report.Runs {
		if len(run.Samples) == 0 {
			continue
		}
		path := filepath.Join(dir, "throughput-"+run.Peer+".png")
		if err := report.WritePlotFile(path, run); err != nil {
			errs = append(errs, err)
		} else {
			written = append(written, path)
		}
	}
	for _, run := range report.Runs {
		for name, text := range run.Logs {
			path := filepath.Join(dir, "logs", run.Peer+"-"+logFileName(name)+".log")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				errs = append(errs, err)
				break
			}
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("write a log: %w", err))
			}
		}
	}
	fmt.Fprintf(log, "\nwritten: %s (and the processes' output in %s)\n", strings.Join(written, ", "), filepath.Join(dir, "logs"))
	return errors.Join(errs...)
}

// logFileName turns a process name ("mifsec connect", "wireguard-go
// (client)") into a file name.
func logFileName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, name)
}

// console writes progress lines to a terminal with a progress bar below
// them, or plain lines (a few per peer) when the output is not a terminal.
type console struct {
	mu       sync.Mutex
	out      io.Writer
	terminal bool
	bar      *progressbar.ProgressBar
	peer     string
	lastLine time.Duration
}

func newConsole(out io.Writer) *console {
	c := &console{out: out}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		c.terminal = true
	}
	return c
}

// Write prints log lines above the progress bar.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bar != nil {
		c.bar.Clear()
	}
	n, err := c.out.Write(p)
	if c.bar != nil {
		c.bar.RenderBlank()
	}
	return n, err
}

// tick moves the progress of peer's traffic phase.
func (c *console) tick(peer string, elapsed, total time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.terminal {
		if peer != c.peer {
			c.peer, c.lastLine = peer, 0
		}
		if elapsed-c.lastLine >= 5*time.Second || elapsed >= total && c.lastLine < total {
			c.lastLine = elapsed.Truncate(time.Second)
			fmt.Fprintf(c.out, "%s: %2.0fs of %s\n", peer, min(elapsed, total).Seconds(), total)
		}
		return
	}
	if c.bar == nil || peer != c.peer {
		c.finishBar()
		c.peer = peer
		c.bar = progressbar.NewOptions64(total.Milliseconds(),
			progressbar.OptionSetWriter(c.out),
			progressbar.OptionSetDescription(peer),
			progressbar.OptionSetWidth(40),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	c.bar.Set64(min(elapsed, total).Milliseconds())
	if elapsed >= total {
		c.finishBar()
	}
}

func (c *console) finishBar() {
	if c.bar != nil {
		c.bar.Finish()
		c.bar.Clear()
		c.bar = nil
	}
}

// done removes the progress bar.
func (c *console) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishBar()
}

// logLevelOf is the --log-level given before the command, which the lab
// passes on to the mifsec processes it starts; "" when it was not given.
func logLevelOf(c *cli.Context) string {
	if c.IsSet("log-level") {
		return c.String("log-level")
	}
	return ""
}
