package main

import (
	"runtime/debug"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestGatewayGC: the gateway's GOGC is 50 unless the GOGC environment
// variable says otherwise, and --gc-percent wins over both; --memory-limit
// sets the runtime's soft limit.
func TestGatewayGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	for _, tc := range []struct {
		name    string
		args    []string
		env     string
		percent int   // after: the runtime's GOGC
		limit   int64 // after: the runtime's memory limit, -1 unchanged
		err     bool
	}{
		{name: "default", percent: defaultGatewayGCPercent, limit: -1},
		{name: "environment wins over the default", env: "200", percent: 100, limit: -1}, // the runtime's, left alone
		{name: "flag wins over the environment", env: "200", args: []string{"--gc-percent", "30"}, percent: 30, limit: -1},
		{name: "memory limit", args: []string{"--memory-limit", "512"}, percent: defaultGatewayGCPercent, limit: 512 << 20},
		{name: "zero percent refused", args: []string{"--gc-percent", "0"}, err: true},
		{name: "negative limit refused", args: []string{"--memory-limit", "-1"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			const unset = int64(1) << 62
			debug.SetMemoryLimit(unset)
			cmd := gatewayCommand()
			var err error
			cmd.Action = func(c *cli.Context) error {
				err = setGatewayGC(c, func(k string) string {
					if k == "GOGC" {
						return tc.env
					}
					return ""
				})
				return nil
			}
			app := &cli.App{Commands: []*cli.Command{cmd}}
			args := append([]string{"mifsec", "gateway", "--local-id", "gw.example", "--pool", "10.3.0.0/24", "--local-ts", "10.1.0.0/24"}, tc.args...)
			if runErr := app.Run(args); runErr != nil {
				t.Fatal(runErr)
			}
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want one: %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if got := debug.SetGCPercent(100); got != tc.percent {
				t.Errorf("GOGC %d, want %d", got, tc.percent)
			}
			want := tc.limit
			if want < 0 {
				want = unset
			}
			if got := debug.SetMemoryLimit(unset); got != want {
				t.Errorf("memory limit %d, want %d", got, want)
			}
		})
	}
}
