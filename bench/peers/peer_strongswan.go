package peers

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/internal/strongswan/charon"
)

// strongswanChild names the Child SA of the strongSwan peers.
const strongswanChild = "bench"

var (
	strongswanClientAddr = netip.MustParseAddr("10.96.0.1")
	strongswanServerAddr = netip.MustParseAddr("10.96.0.2")
)

// strongswanPeer is strongSwan's charon with the kernel-libipsec backend (no
// kernel ESP here), one charon per namespace, PSK, tunnel mode between
// addresses on lo.
type strongswanPeer struct {
	// name, ike and esp select a suite other than AES-GCM-256: "" for
	// "strongswan" with aes256gcm16-prfsha256-x25519 and aes256gcm16.
	name, ike, esp string
	version        string
	processes      []*labnet.Process
}

func (p *strongswanPeer) Name() string {
	if p.name == "" {
		return "strongswan"
	}
	return p.name
}
func (p *strongswanPeer) Version() string        { return p.version }
func (p *strongswanPeer) Path() string           { return charon.Binary }
func (p *strongswanPeer) ClientAddr() netip.Addr { return strongswanClientAddr }
func (p *strongswanPeer) ServerAddr() netip.Addr { return strongswanServerAddr }

// ClientInterface is kernel-libipsec's TUN device.
func (p *strongswanPeer) ClientInterface() string { return "ipsec0" }

// Optional: a strongSwan that misbehaves is reported as skipped, not as a
// failed run.
func (p *strongswanPeer) Optional() bool { return true }

func (p *strongswanPeer) Prepare(ctx context.Context) error {
	if missing := charon.Missing(); missing != "" {
		return skipf("%s", missing)
	}
	out, err := labnet.RunCommand(ctx, charon.Binary, "--version")
	if err != nil {
		return skipf("%s --version: %v", charon.Binary, err)
	}
	p.version = "unknown"
	for line := range strings.Lines(out) {
		if strings.Contains(line, "strongSwan") {
			p.version = strings.TrimSpace(line)
			break
		}
	}
	return nil
}

type strongswanSide struct {
	Label                         string
	LocalUnderlay, RemoteUnderlay netip.Addr
	LocalInner, RemoteInner       netip.Addr
	PSK                           string
	Child                         string
	IKEProposals, ESPProposals    string
}

// swanctl.conf takes one setting per line.
var swanctlConf = template.Must(template.New("swanctl.conf").Parse(`connections {
	bench {
		version = 2
		local_addrs = {{.LocalUnderlay}}
		remote_addrs = {{.RemoteUnderlay}}
		proposals = {{.IKEProposals}}
		encap = yes
		mobike = no
		local {
			auth = psk
			id = {{.LocalUnderlay}}
		}
		remote {
			auth = psk
			id = {{.RemoteUnderlay}}
		}
		children {
			{{.Child}} {
				local_ts = {{.LocalInner}}/32
				remote_ts = {{.RemoteInner}}/32
				esp_proposals = {{.ESPProposals}}
				mode = tunnel
			}
		}
	}
}
secrets {
	ike-bench {
		id-local = {{.LocalUnderlay}}
		id-remote = {{.RemoteUnderlay}}
		secret = 0x{{.PSK}}
	}
}
`))

func (p *strongswanPeer) Setup(ctx context.Context, topo *labnet.Topology) error {
	err := p.setup(ctx, topo)
	if err != nil && ctx.Err() == nil {
		return skipf("strongSwan did not come up: %v", err)
	}
	return err
}

func (p *strongswanPeer) setup(ctx context.Context, topo *labnet.Topology) error {
	psk, err := labnet.RandomHex(32)
	if err != nil {
		return err
	}
	sides := []struct {
		ns   string
		side strongswanSide
	}{
		{topo.Client, strongswanSide{Label: "client", LocalUnderlay: topo.ClientUnderlay, RemoteUnderlay: topo.ServerUnderlay,
			LocalInner: strongswanClientAddr, RemoteInner: strongswanServerAddr}},
		{topo.Server, strongswanSide{Label: "server", LocalUnderlay: topo.ServerUnderlay, RemoteUnderlay: topo.ClientUnderlay,
			LocalInner: strongswanServerAddr, RemoteInner: strongswanClientAddr}},
	}
	var uris []string
	for _, s := range sides {
		side := s.side
		side.PSK, side.Child = psk, strongswanChild
		side.IKEProposals, side.ESPProposals = p.ike, p.esp
		if side.IKEProposals == "" {
			side.IKEProposals, side.ESPProposals = "aes256gcm16-prfsha256-x25519", "aes256gcm16"
		}
		if _, err := topo.Run(ctx, s.ns, "ip", "addr", "add", netip.PrefixFrom(side.LocalInner, 32).String(), "dev", "lo"); err != nil {
			return fmt.Errorf("inner address: %w", err)
		}
		proc, uri, err := startCharon(ctx, topo.Start, topo.Dir, s.ns, side.Label, swanctlConf, side)
		if proc != nil {
			p.processes = append(p.processes, proc)
		}
		if err != nil {
			return err
		}
		uris = append(uris, uri)
	}
	if _, err := labnet.RunCommand(ctx, "swanctl", "--initiate", "--uri", uris[0], "--child", strongswanChild, "--timeout", "20"); err != nil {
		return fmt.Errorf("initiate: %w\n%s\n%s", err, p.processes[0].Describe(), p.processes[1].Describe())
	}
	return waitForPing(ctx, topo, strongswanClientAddr, strongswanServerAddr, p.processes...)
}

// startCharon starts charon in namespace ns as package charon does, with
// swanctl.conf from the template swanctl and swanctlData, both files written
// under dir; it loads the configuration and returns the process (also on a
// later error, so that the caller stops it) and the vici URI.
func startCharon(ctx context.Context, start func(ns, name string, env []string, args ...string) (*labnet.Process, error),
	dir, ns, label string, swanctl *template.Template, swanctlData any) (*labnet.Process, string, error) {
	dir = filepath.Join(dir, "strongswan-"+label)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create strongSwan directory: %w", err)
	}
	conf, swanctlFile := filepath.Join(dir, "strongswan.conf"), filepath.Join(dir, "swanctl.conf")
	if err := os.WriteFile(conf, []byte(charon.Conf("", 1)), 0o600); err != nil {
		return nil, "", fmt.Errorf("write %s: %w", conf, err)
	}
	if err := writeTemplate(swanctlFile, swanctl, swanctlData); err != nil {
		return nil, "", err
	}
	proc, err := start(ns, "charon ("+label+")", []string{"STRONGSWAN_CONF=" + conf}, charon.Command()...)
	if err != nil {
		return nil, "", err
	}
	socket := charon.SocketPath(proc.PID())
	if err := waitForFile(ctx, socket, proc); err != nil {
		return proc, "", err
	}
	uri := "unix://" + socket
	if _, err := labnet.RunCommandIn(ctx, "", []string{"STRONGSWAN_CONF=" + conf},
		"swanctl", "--load-all", "--uri", uri, "--file", swanctlFile); err != nil {
		return proc, "", fmt.Errorf("load the configuration: %w\n%s", err, proc.Describe())
	}
	return proc, uri, nil
}

func (p *strongswanPeer) Teardown() error {
	labnet.StopAll(p.processes)
	p.processes = nil
	return nil
}

func writeTemplate(path string, tmpl *template.Template, data any) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmpl.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
