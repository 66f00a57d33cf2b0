package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/mif"
	"github.com/mifsec/mifsec/tun"
	"github.com/urfave/cli/v2"
)

// runConnectProfile runs `mifsec connect ARGS` with a profile holding
// yaml (none when yaml is "-") up to parseConnect, as the binary does
// (withSetup), without the root and running-instance checks.
func runConnectProfile(t *testing.T, yaml string, args ...string) (mif.ClientConfig, string, error) {
	t.Helper()
	dir := t.TempDir()
	psk := writePSK(t, dir, "a secret of enough length")
	path := filepath.Join(dir, "vpn.yaml")
	if yaml != "-" {
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, "PSK", psk)), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	cmd := connectCommand()
	var cfg mif.ClientConfig
	cmd.Action = func(c *cli.Context) error {
		var err error
		cfg, err = parseConnect(c)
		return err
	}
	app := &cli.App{Commands: []*cli.Command{withSetup(cmd, commandSetup{})}, Writer: new(strings.Builder), ErrWriter: new(strings.Builder)}
	err := app.Run(append([]string{"mifsec", "connect"}, args...))
	return cfg, path, err
}

func TestConnectProfileCarriesEverything(t *testing.T) {
	const good = `# a whole profile: no flag needed on the command line
mode: connect
gateway: 192.0.2.2:4500
local-id: client@example.net
remote-id: gw.example.net
psk-file: PSK
remote-ts:
  - 10.1.0.0/24
  - 10.2.0.0/24
ipv6: false
dpd: 5s
mtu: 1300
tun: corp0
dns: file
`
	cfg, _, err := runConnectProfile(t, good)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Session
	if s.Remote != netip.MustParseAddrPort("192.0.2.2:4500") || s.LocalID.String() != "client@example.net" ||
		s.RemoteID.String() != "gw.example.net" || s.RequestIPv6 || s.DPD != 5*time.Second ||
		cfg.TUN.MTU != 1300 || cfg.TUN.Name != "corp0" || cfg.DNS.Mode != tun.DNSFile || len(s.RemoteTS) != 2 {
		t.Errorf("profile not applied: %+v %+v %+v", s.Remote, cfg.TUN, cfg.DNS)
	}
	// The command line wins over the file.
	cfg, _, err = runConnectProfile(t, good, "--dpd", "7s", "--remote-ts", "10.9.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Session.DPD != 7*time.Second || len(cfg.Session.RemoteTS) != 1 {
		t.Errorf("command line lost: dpd %v, remote-ts %v", cfg.Session.DPD, cfg.Session.RemoteTS)
	}
}

func TestConnectProfileErrors(t *testing.T) {
	base := "gateway: 192.0.2.2\nlocal-id: client.example\npsk-file: PSK\n"
	for _, tc := range []struct {
		name, yaml string
		args       []string
		want       string // FILE stands for the profile's path
	}{
		{"unknown key", base + "remote_id: gw.example\n", nil, `FILE:4: remote_id: unknown key (did you mean "remote-id"?)`},
		{"unknown key, no suggestion", base + "colour: blue\n", nil, `FILE:4: colour: unknown key`},
		{"--config inside", base + "config: other.yaml\n", nil, `FILE:4: config: unknown key`},
		{"help", base + "help: true\n", nil, `FILE:4: help: unknown key`},
		{"not a number", base + "mtu: big\n", nil, `FILE:4: mtu: "big" is not a whole number`},
		{"not a duration", base + "dpd: 10\n", nil, `FILE:4: dpd: "10" is not a duration`},
		{"not a bool", base + "ipv6: maybe\n", nil, `FILE:4: ipv6: "maybe" is not true or false`},
		{"list for one value", "gateway:\n  - 192.0.2.2\n  - 192.0.2.3\nlocal-id: a.example\n", nil, `FILE:2: gateway: a list where one value belongs`},
		{"empty value", base + "remote-id:\n", nil, `FILE:4: remote-id: no value`},
		{"twice", base + "dpd: 5s\ndpd: 6s\n", nil, `FILE:5: dpd: given again (first on line 4)`},
		{"mode of another command", base + "mode: gateway\n", nil, `FILE:4: mode: the profile is for mifsec gateway, not mifsec connect`},
		{"unknown mode", base + "mode: client\n", nil, `FILE:4: mode: "client" is not connect, gateway, peer, static`},
		{"mode twice", base + "mode: connect\nmode: connect\n", nil, `FILE:5: mode: given again (first on line 4)`},
		{"bad value found later", "gateway: not a host!\nlocal-id: client.example\npsk-file: PSK\n", nil, `FILE:1: --gateway: "not a host!" is neither`},
		{"bad mode", base + "dns: systemd\n", nil, `FILE:4: --dns: DNS mode "systemd"`},
		{"syntax", base + "dpd: 5s: x\n", nil, `FILE:4: mapping values are not allowed`},
		{"not a mapping", "- gateway\n", nil, `FILE:1: want a mapping`},
		{"missing required", "psk-file: PSK\n", nil, `needs --gateway (on the command line or as keys in FILE)`},
		{"no profile, missing required", "-", []string{"--psk-file", "x"}, `needs --gateway; see mifsec connect --help`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, path, err := runConnectProfile(t, tc.yaml, tc.args...)
			want := strings.ReplaceAll(tc.want, "FILE", path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v\nwant it to contain %q", err, want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, _, err := runConnectProfile(t, "-", "--config", "/nonexistent/vpn.yaml")
		if err == nil || err.Error() != "--config: /nonexistent/vpn.yaml does not exist" {
			t.Errorf("error %v", err)
		}
	})
}

// The gateway's required flags come from its profile too.
func TestGatewayProfileCarriesRequired(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gw.yaml")
	psk := writePSK(t, dir, "a secret of enough length")
	yaml := fmt.Sprintf("mode: gateway\nlocal-id: gw.example\npsk-file: %s\npool: [10.3.0.0/24]\nlocal-ts:\n  - 10.1.0.0/24\ndns: [10.1.0.53]\ndns-domain: [corp.test]\n", psk)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := gatewayCommand()
	var cfg mif.GatewayConfig
	cmd.Action = func(c *cli.Context) (err error) {
		cfg, err = parseGateway(c)
		return err
	}
	app := &cli.App{Commands: []*cli.Command{withSetup(cmd, commandSetup{})}}
	if err := app.Run([]string{"mifsec", "gateway", "--config", path}); err != nil {
		t.Fatal(err)
	}
	r := cfg.Responder
	if r.LocalID.String() != "gw.example" || len(r.Pools) != 1 || len(r.LocalTS) != 1 || len(r.DNSDomains) != 1 || r.DNSDomains[0] != "corp.test" {
		t.Errorf("gateway profile not applied: %+v", r)
	}
}

// static's required flags come from its profile too, and its mistakes are
// named by line.
func TestStaticProfile(t *testing.T) {
	dir := t.TempDir()
	// Keys come from private files, never from the profile itself.
	keyOut, keyIn := filepath.Join(dir, "out.key"), filepath.Join(dir, "in.key")
	if err := os.WriteFile(keyOut, []byte(strings.Repeat("ab", 36)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyIn, []byte(strings.Repeat("cd", 36)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := "mode: static\nlocal: 192.0.2.1\nremote: 192.0.2.2\nspi-out: 0x1001\nspi-in: 0x2002\nkey-out-file: " + keyOut + "\nkey-in-file: " + keyIn + "\naddress: [10.98.0.1/24]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"good", good, ""},
		{"unknown key", good + "spi_out: 0x1\n", "FILE:9: spi_out: unknown key (did you mean \"spi-out\"?)"},
		{"bad value", strings.Replace(good, "0x1001", "0x10", 1), "FILE:4: --spi-out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := staticCommand()
			var cfg *staticConfig
			cmd.Action = func(c *cli.Context) (err error) {
				cfg, err = parseStatic(c)
				return err
			}
			app := &cli.App{Commands: []*cli.Command{withSetup(cmd, commandSetup{})}}
			err := app.Run([]string{"mifsec", "static", "--config", path})
			if tc.want == "" {
				if err != nil || cfg == nil || cfg.tunName != "mifsec0" {
					t.Fatalf("good profile: %v", err)
				}
				return
			}
			if want := strings.ReplaceAll(tc.want, "FILE", path); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want it to contain %q", err, want)
			}
		})
	}
}
