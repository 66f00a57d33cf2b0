package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
	"github.com/urfave/cli/v2"
)

// writeProfile writes dir/name.yaml.
func writeProfile(t *testing.T, dir, name, yaml string) string {
	t.Helper()
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFindProfile(t *testing.T) {
	dir := t.TempDir()
	writeProfile(t, dir, "plain", "gateway: vpn.example\n")
	writeProfile(t, dir, "empty", "")
	writeProfile(t, dir, "gw", "mode: gateway\ntun: corp0\n")
	writeProfile(t, dir, "badmode", "tun: x0\nmode: server\n")
	for _, tc := range []struct {
		name, arg     string
		mode, tun     string
		want          string // error, FILE the profile's path
		noProfileFile bool
	}{
		{name: "defaults", arg: "plain", mode: "connect", tun: "mifsec0"},
		{name: "empty", arg: "empty", mode: "connect", tun: "mifsec0"},
		{name: "mode and tun", arg: "gw", mode: "gateway", tun: "corp0"},
		{name: "bad mode", arg: "badmode", want: `FILE:2: mode: "server" is not connect, gateway, peer, static`},
		{name: "missing", arg: "nowhere", want: `no profile "nowhere": FILE does not exist`},
		{name: "path", arg: "../etc/x", want: `profile name "../etc/x": use letters`},
		{name: "hidden", arg: ".gw", want: `profile name ".gw"`},
		{name: "no name", want: "mifsec find needs one profile NAME"},
		{name: "unknown flag after the name", arg: "plain --colour", want: "flag provided but not defined: --colour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *namedProfile
			app := &cli.App{Commands: []*cli.Command{{Name: "find", Flags: []cli.Flag{profileDirFlag()},
				Action: func(c *cli.Context) (err error) {
					got, err = argProfile(c)
					return err
				}}}}
			args := []string{"mifsec", "find", "--profile-dir", dir}
			if tc.arg != "" {
				args = append(args, strings.Fields(tc.arg)...)
			}
			err := app.Run(args)
			if tc.want != "" {
				want := strings.ReplaceAll(tc.want, "FILE", filepath.Join(dir, tc.arg+".yaml"))
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want it to contain %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.mode != tc.mode || got.tun != tc.tun || got.path != filepath.Join(dir, tc.arg+".yaml") {
				t.Fatalf("profile %+v, want mode %s tun %s", got, tc.mode, tc.tun)
			}
		})
	}
}

// runMifsec runs the mifsec binary with the profiles in dir and returns
// its output.
func runMifsec(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(mifsecBinary(t), args...)
	cmd.Env = append(os.Environ(), "MIFSEC_PROFILE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A profile with a mistake is refused by `mifsec up` with the file, line
// and key named, before anything is created.
func TestUpRefusesBadProfile(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	psk := writePSK(t, dir, "a secret of enough length")
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "gateway: 192.0.2.2\nlocal-id: a.example\ncolour: blue\n", "FILE:3: colour: unknown key"},
		{"bad value", "gateway: 192.0.2.2\nlocal-id: a.example\npsk-file: " + psk + "\nmtu: big\n", `FILE:4: mtu: "big" is not a whole number`},
		{"gateway key in a client", "gateway: 192.0.2.2\npool: [10.3.0.0/24]\n", "FILE:2: pool: unknown key"},
		{"client key in a gateway", "mode: gateway\nlocal-id: gw.example\ngateway: 192.0.2.2\n", "FILE:3: gateway: unknown key"},
		{"bad mode", "mode: client\n", `FILE:1: mode: "client" is not connect, gateway, peer, static`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			path := writeProfile(t, dir, name, tc.yaml)
			out, err := runMifsec(t, dir, "up", name)
			if want := strings.ReplaceAll(tc.want, "FILE", path); err == nil || !strings.Contains(out, want) {
				t.Fatalf("mifsec up %s: %v\n%s\nwant it to say %q", name, err, out, want)
			}
		})
	}
	if out, err := runMifsec(t, dir, "up", "absent"); err == nil || !strings.Contains(out, `no profile "absent": `+filepath.Join(dir, "absent.yaml")+" does not exist") {
		t.Fatalf("mifsec up absent: %v\n%s", err, out)
	}
	if out, err := runMifsec(t, dir, "down", "absent"); err == nil || !strings.Contains(out, `no profile "absent"`) {
		t.Fatalf("mifsec down absent: %v\n%s", err, out)
	}
	writeProfile(t, dir, "manual", "mode: static\n")
	for _, cmd := range []string{"down", "status"} {
		if out, err := runMifsec(t, dir, cmd, "manual"); err == nil || !strings.Contains(out, "profile manual is a static tunnel, which has no control socket") {
			t.Fatalf("mifsec %s of a static profile: %v\n%s", cmd, err, out)
		}
	}
}

// notifySocket is a stand-in for systemd's notification socket: it
// records what the instance sends.
type notifySocket struct {
	path string
	log  testenv.SyncBuffer // datagrams, each followed by "\n--\n"
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.log.Write(append(buf[:k:k], "\n--\n"...))
		}
	}()
	return n
}

// has reports whether a line of a datagram received was line.
func (n *notifySocket) has(line string) bool {
	for _, l := range strings.Split(n.log.String(), "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestNotifierReports(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if openNotifier() != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET")
	}
	sock := newNotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock.path)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{ctx: ctx, notify: openNotifier()}
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.report(time.Millisecond, func() (bool, string) {
			calls++
			switch {
			case calls < 3:
				return false, "connecting"
			case calls < 5:
				return true, "connected"
			}
			cancel()
			return true, "connected"
		})
	}()
	<-done
	want := "STATUS=connecting\n\n--\nREADY=1\nSTATUS=connected\n\n--\n"
	testenv.WaitUntil(t, 5*time.Second, "the notifications", func() bool { return sock.log.String() == want })
}

// TestProfileUpStatusDown runs a gateway and a client from profiles with
// `mifsec up NAME` and nothing else, each under a stand-in for systemd's
// notification socket; reads the client with `mifsec status NAME --json`
// and stops both with `mifsec down NAME`.
func TestProfileUpStatusDown(t *testing.T) {
	testenv.RequireCommand(t, "ping")
	client, gw := testenv.NewNamedNetns(t, "prcl"), testenv.NewNamedNetns(t, "prgw")
	testenv.Veth(t, client, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	dir := t.TempDir()
	psk := writePSK(t, dir, "a secret only the two share")
	writeProfile(t, dir, "profgw", fmt.Sprintf(`mode: gateway
tun: profgw0
listen: [192.0.2.2]
local-id: gw.example
psk-file: %s
pool: [10.3.0.0/24]
local-ts: [10.1.0.0/24]
`, psk))
	writeProfile(t, dir, "office", fmt.Sprintf(`# the office VPN
gateway: 192.0.2.2
local-id: client.example
remote-id: gw.example
psk-file: %s
tun: profcl0
ipv6: false
dns: off
`, psk))

	gwNotify, clNotify := newNotifySocket(t), newNotifySocket(t)
	g := startMifsecEnv(t, gw, []string{"MIFSEC_PROFILE_DIR=" + dir, "NOTIFY_SOCKET=" + gwNotify.path}, "--log-level", "debug", "up", "profgw")
	testenv.WaitUntil(t, 10*time.Second, "the gateway's READY=1", func() bool { return gwNotify.has("READY=1") })
	c := startMifsecEnv(t, client, []string{"MIFSEC_PROFILE_DIR=" + dir, "NOTIFY_SOCKET=" + clNotify.path}, "--log-level", "debug", "up", "office")
	if !testenv.Eventually(15*time.Second, func() bool { return clNotify.has("READY=1") }) {
		t.Fatalf("no READY=1 from the client:\n%s\nclient:\n%s\ngateway:\n%s", clNotify.log.String(), c.log.String(), g.log.String())
	}
	// READY=1 came once the session was established: its STATUS= says so.
	if !strings.Contains(clNotify.log.String(), "READY=1\nSTATUS=connected to 192.0.2.2") {
		t.Errorf("READY=1 did not come with the established state:\n%s", clNotify.log.String())
	}
	// The gateway's STATUS= counts its clients (from its summary).
	if !testenv.Eventually(5*time.Second, func() bool { return strings.Contains(gwNotify.log.String(), ", clients: 1\n") }) {
		t.Errorf("the gateway's STATUS= does not count its client:\n%s", gwNotify.log.String())
	}
	if err := ping(client, "10.1.0.1", 3); err != nil {
		t.Fatalf("%v\nclient:\n%s", err, c.log.String())
	}

	out, err := runMifsec(t, dir, "status", "office", "--json")
	if err != nil {
		t.Fatalf("mifsec status office --json: %v\n%s", err, out)
	}
	var st struct {
		Session struct {
			State   string `json:"state"`
			IKESPIi string `json:"ike_spi_i"`
			IKESPIr string `json:"ike_spi_r"`
			Child   *struct {
				InSPI  string `json:"in_spi"`
				OutSPI string `json:"out_spi"`
			} `json:"child"`
		} `json:"session"`
		Interface string `json:"interface"`
		Paths     []struct {
			Local, Remote string
		} `json:"paths"`
		TxPackets *uint64 `json:"tx_packets"`
		RxPackets *uint64 `json:"rx_packets"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("mifsec status office --json does not parse: %v\n%s", err, out)
	}
	s := st.Session
	if s.State != "established" || s.IKESPIi == "" || s.IKESPIr == "" || s.Child == nil || s.Child.InSPI == "" || s.Child.OutSPI == "" ||
		st.Interface != "profcl0" || len(st.Paths) != 1 || st.Paths[0].Remote != "192.0.2.2:4500" ||
		st.TxPackets == nil || *st.TxPackets < 3 || st.RxPackets == nil || *st.RxPackets < 3 {
		t.Fatalf("mifsec status office --json lacks the IKE SA, Child SA, path or counters:\n%s", out)
	}
	// With no name, both instances are listed (and any other running).
	out, err = runMifsec(t, dir, "status", "--json")
	var list []struct{ TUN string }
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || !strings.Contains(out, `"tun": "profcl0"`) || !strings.Contains(out, `"tun": "profgw0"`) {
		t.Fatalf("mifsec status --json with two instances: %v\n%s", err, out)
	}
	out, err = runMifsec(t, dir, "status", "profgw")
	if err != nil || !strings.Contains(out, "1 clients") || !strings.Contains(out, "client.example") {
		t.Fatalf("mifsec status profgw: %v\n%s", err, out)
	}

	// down: the IKE SA is deleted (the gateway forgets the client), the
	// TUN device goes, the process exits 0 after STOPPING=1.
	if out, err := runMifsec(t, dir, "down", "office"); err != nil || !strings.Contains(out, "office stopped") {
		t.Fatalf("mifsec down office: %v\n%s\nclient:\n%s", err, out, c.log.String())
	}
	select {
	case <-c.done:
	default:
		t.Fatalf("mifsec down returned before the instance exited:\n%s", c.log.String())
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("mifsec up office exited %d after mifsec down:\n%s", code, c.log.String())
	}
	if !clNotify.has("STOPPING=1") {
		t.Errorf("no STOPPING=1 from the client:\n%s", clNotify.log.String())
	}
	if out, err := exec.Command("ip", "netns", "exec", client, "ip", "link", "show", "profcl0").CombinedOutput(); err == nil {
		t.Errorf("profcl0 is still there after mifsec down:\n%s", out)
	}
	testenv.WaitUntil(t, 5*time.Second, "the gateway to drop the client", func() bool {
		raw, err := mif.ReadStatus(mif.ControlSocket("profgw0"))
		var gst mif.GatewayStatus
		return err == nil && json.Unmarshal(raw, &gst) == nil && len(gst.Clients) == 0
	})
	if out, err := runMifsec(t, dir, "down", "office"); err == nil || !strings.Contains(out, "profile office is not running") {
		t.Fatalf("mifsec down of a stopped profile: %v\n%s", err, out)
	}
	if out, err := runMifsec(t, dir, "down", "profgw"); err != nil {
		t.Fatalf("mifsec down profgw: %v\n%s", err, out)
	}
	<-g.done
	if code := g.cmd.ProcessState.ExitCode(); code != 0 || !gwNotify.has("STOPPING=1") {
		t.Fatalf("the gateway exited %d (STOPPING=1 sent: %v):\n%s", code, gwNotify.has("STOPPING=1"), g.log.String())
	}
}

// The unit `mifsec install` writes runs this program's `up NAME` and is
// one systemd accepts.
func TestInstallUnit(t *testing.T) {
	prefix := t.TempDir()
	bin := mifsecBinary(t)
	out, err := exec.Command(bin, "install", "--prefix", prefix).CombinedOutput()
	if err != nil {
		t.Fatalf("mifsec install: %v\n%s", err, out)
	}
	path := filepath.Join(prefix, "etc/systemd/system", unitName)
	unit, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nExecStart=" + bin + " up %i\n", "\nType=notify\n", "\nRestart=on-failure\n", "\nCapabilityBoundingSet=CAP_NET_ADMIN "} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q:\n%s", want, unit)
		}
	}
	if fi, err := os.Stat(filepath.Join(prefix, "etc/mifsec")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("profile directory: %v %v", fi, err)
	}
	if out, err := exec.Command(bin, "install", "--prefix", prefix, "--bin", "mifsec").CombinedOutput(); err == nil {
		t.Errorf("install with a relative --bin succeeded:\n%s", out)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed: the unit is not verified")
	}
	// An instance of the template, checked as systemd would load it.
	// It also loads units of the host the template pulls in, and warns
	// about theirs (a distribution's freeradius.service, say): only what
	// it says about this unit counts.
	out, err = exec.Command("systemd-analyze", "verify", filepath.Join(filepath.Dir(path), "mifsec@office.service")).CombinedOutput()
	var ours []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "mifsec") {
			ours = append(ours, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestProfileUpStatic runs both ends of a static tunnel from profiles with
// `mifsec up NAME`: each tells systemd READY=1 and, on SIGTERM, STOPPING=1.
func TestProfileUpStatic(t *testing.T) {
	testenv.RequireCommand(t, "ping")
	nsA, nsB := testenv.NewNamedNetns(t, "prsa"), testenv.NewNamedNetns(t, "prsb")
	testenv.Veth(t, nsA, nsB, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	dir := t.TempDir()
	keyAB, keyBA := writeKeyFile(t, dir, "ab", randomKey(t, 36)), writeKeyFile(t, dir, "ba", randomKey(t, 36))
	side := func(name, local, remote, out, in, keyOut, keyIn, addr string) {
		writeProfile(t, dir, name, fmt.Sprintf(`mode: static
tun: %s0
local: %s
remote: %s
spi-out: %s
spi-in: %s
key-out-file: %s
key-in-file: %s
state-dir: %s
address: [%s]
`, name, local, remote, out, in, keyOut, keyIn, filepath.Join(dir, name+"-state"), addr))
	}
	side("prsa", "192.0.2.1", "192.0.2.2", "0x1001", "0x2002", keyAB, keyBA, "10.96.0.1/24")
	side("prsb", "192.0.2.2", "192.0.2.1", "0x2002", "0x1001", keyBA, keyAB, "10.96.0.2/24")
	notifyA, notifyB := newNotifySocket(t), newNotifySocket(t)
	a := startMifsecEnv(t, nsA, []string{"MIFSEC_PROFILE_DIR=" + dir, "NOTIFY_SOCKET=" + notifyA.path}, "up", "prsa")
	startMifsecEnv(t, nsB, []string{"MIFSEC_PROFILE_DIR=" + dir, "NOTIFY_SOCKET=" + notifyB.path}, "up", "prsb")
	for _, n := range []*notifySocket{notifyA, notifyB} {
		if !testenv.Eventually(10*time.Second, func() bool { return n.has("READY=1") }) {
			t.Fatalf("no READY=1 from a static tunnel:\n%s\n%s", n.log.String(), a.log.String())
		}
	}
	if err := ping(nsA, "10.96.0.2", 3); err != nil {
		t.Fatalf("%v\n%s", err, a.log.String())
	}
	a.stop(t)
	if code := a.cmd.ProcessState.ExitCode(); code != 0 || !notifyA.has("STOPPING=1") {
		t.Fatalf("static tunnel on SIGTERM: exit %d, notifications:\n%s\n%s", code, notifyA.log.String(), a.log.String())
	}
}

// Flags after the profile name count as flags: `mifsec status office --json`.
func TestCommandArgs(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		names []string
		json  bool
		tun   string
		err   string
	}{
		{args: []string{"office"}, names: []string{"office"}},
		{args: []string{"office", "--json"}, names: []string{"office"}, json: true},
		{args: []string{"office", "--json=false", "-tun", "x0"}, names: []string{"office"}, tun: "x0"},
		{args: []string{"office", "--tun=x1", "home"}, names: []string{"office", "home"}, tun: "x1"},
		{args: []string{"office", "--", "--json"}, names: []string{"office", "--json"}},
		{args: []string{"office", "--tun"}, err: "flag needs an argument: --tun"},
		{args: []string{"office", "--json=maybe"}, err: "--json=maybe: "},
		{args: []string{"office", "--colour"}, err: "flag provided but not defined: --colour"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var names []string
			var asJSON bool
			var tun string
			app := &cli.App{Commands: []*cli.Command{{Name: "status",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json"}, &cli.StringFlag{Name: "tun"}},
				Action: func(c *cli.Context) (err error) {
					names, err = commandArgs(c)
					asJSON, tun = c.Bool("json"), c.String("tun")
					return err
				}}}}
			err := app.Run(append([]string{"mifsec", "status"}, tc.args...))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(names, tc.names) || asJSON != tc.json || tun != tc.tun {
				t.Fatalf("names %q json %v tun %q (%v), want %q %v %q", names, asJSON, tun, err, tc.names, tc.json, tc.tun)
			}
		})
	}
}
