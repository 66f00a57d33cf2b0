package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mifsec/mifsec/bench/load"
)

// benchSoakCommand is `mifsec bench soak`: a gateway under an hour of
// rekeys, flaps and churn, its memory and goroutines sampled.
func benchSoakCommand() *cli.Command {
	return &cli.Command{
		Name:  "soak",
		Usage: "run a mifsec gateway for a long time under rekeys, link flaps and client churn, and watch it for leaks",
		Description: `Starts ` + "`mifsec gateway`" + ` in a network namespace and --clients in-process IKEv2 clients
in another, joined by a veth pair. Each client rekeys its Child SA every --child-rekey and its
IKE SA every --ike-rekey and pings through its tunnel every second; the clients' link goes
down for --flap-for every --flap-every; every --churn-every, --churn of the clients delete
their IKE SAs and connect again. Samples the gateway's RSS, goroutines and SAs every 5 s.
At the end every client leaves and the gateway must hold no client, SA or lease.
Writes summary.txt, report.json and soak.png into --out. Needs root.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "clients", Value: 100, Usage: "`N` clients connected at any time"},
			&cli.DurationFlag{Name: "duration", Value: time.Hour, Usage: "how long"},
			&cli.DurationFlag{Name: "child-rekey", Value: 10 * time.Second, Usage: "each client rekeys its Child SA this often"},
			&cli.DurationFlag{Name: "ike-rekey", Value: time.Minute, Usage: "each client rekeys its IKE SA this often"},
			&cli.DurationFlag{Name: "flap-every", Value: 30 * time.Second, Usage: "the link goes down this often"},
			&cli.DurationFlag{Name: "flap-for", Value: time.Second, Usage: "for this long"},
			&cli.DurationFlag{Name: "churn-every", Value: 20 * time.Second, Usage: "this often --churn clients leave and come back"},
			&cli.IntFlag{Name: "churn", Value: 5, Usage: "`N` clients that leave and come back"},
			&cli.StringFlag{Name: "out", Usage: "write the report into `DIR` (default ./mifsec-soak-DATE-TIME)"},
		},
		Action: runBenchSoak,
	}
}

func runBenchSoak(c *cli.Context) error {
	cfg := load.SoakConfig{Clients: c.Int("clients"), Duration: c.Duration("duration"), ChildRekey: c.Duration("child-rekey"),
		IKERekey: c.Duration("ike-rekey"), FlapEvery: c.Duration("flap-every"), FlapFor: c.Duration("flap-for"),
		ChurnEvery: c.Duration("churn-every"), ChurnClients: c.Int("churn"), Log: os.Stderr}
	if cfg.ChurnClients == 0 {
		cfg.ChurnClients = -1 // explicit 0: no churn (the config's zero means the default)
	}
	out := c.String("out")
	if out == "" {
		out = "mifsec-soak-" + time.Now().Format("20060102-150405")
	}
	rep, err := load.RunSoak(c.Context, cfg)
	if err != nil {
		return err
	}
	fmt.Print(rep.Summary())
	if err := rep.WriteFiles(out); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Printf("  report, plot and summary in %s/\n", out)
	if rep.Leaked() {
		return fmt.Errorf("the gateway kept state of clients that left")
	}
	return nil
}
