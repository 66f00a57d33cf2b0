package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

const (
	charonBinary     = "/usr/lib/ipsec/charon"
	strongswanPlugin = "/usr/lib/ipsec/plugins/libstrongswan-%s.so"
	// strongswanPlugins is the explicit plugin list: openssl first for its
	// AES-NI AES-GCM (the software aes/gcm plugins are ~15× slower), kdf for
	// the IKE key derivation, kernel-libipsec for userspace ESP.
	strongswanPlugins = "random nonce openssl aesni aes sha1 sha2 hmac gcm chapoly curve25519 x509 pem pkcs1 pkcs8 pubkey kdf gmp kernel-libipsec kernel-netlink socket-default vici attr updown"
	strongswanChild   = "bench"
	// The vici socket lives in charon's private /run; the lab reaches it
	// through /proc/PID/root. Its name is not the default so that a host
	// charon's socket is never mistaken for it before the private /run is
	// mounted.
	strongswanSocket = "/run/mifsec-bench-charon.vici"
)

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
	processes      []*Process
}

func (p *strongswanPeer) Name() string {
	if p.name == "" {
		return "strongswan"
	}
	return p.name
}
func (p *strongswanPeer) Version() string        { return p.version }
func (p *strongswanPeer) Path() string           { return charonBinary }
func (p *strongswanPeer) ClientAddr() netip.Addr { return strongswanClientAddr }
func (p *strongswanPeer) ServerAddr() netip.Addr { return strongswanServerAddr }

// ClientInterface is kernel-libipsec's TUN device.
func (p *strongswanPeer) ClientInterface() string { return "ipsec0" }

// Optional: a strongSwan that misbehaves is reported as skipped, not as a
// failed run.
func (p *strongswanPeer) Optional() bool { return true }

func (p *strongswanPeer) Prepare(ctx context.Context) error {
	const packages = "apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins"
	if _, err := os.Stat(charonBinary); err != nil {
		return skipf("%s not found: %s", charonBinary, packages)
	}
	for _, tool := range []string{"swanctl", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			return skipf("%s not found: %s", tool, packages)
		}
	}
	for plugin, pkg := range map[string]string{
		"openssl":         "libstrongswan-standard-plugins",
		"kernel-libipsec": "libcharon-extra-plugins",
		"kdf":             "libstrongswan-extra-plugins",
	} {
		path := fmt.Sprintf(strongswanPlugin, plugin)
		if _, err := os.Stat(path); err != nil {
			return skipf("strongSwan plugin %s not found (%s): apt-get install %s", plugin, path, pkg)
		}
	}
	out, err := runCommand(ctx, charonBinary, "--version")
	if err != nil {
		return skipf("%s --version: %v", charonBinary, err)
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
	Plugins                       string
	Socket                        string
	Child                         string
	IKEProposals, ESPProposals    string
}

var strongswanConf = template.Must(template.New("strongswan.conf").Parse(`charon {
	load = {{.Plugins}}
	filelog {
		stderr {
			default = 1
			ike = 1
			time_format = %T
		}
	}
	plugins {
		kernel-libipsec {
			allow_peer_ts = yes
		}
		vici {
			socket = unix://{{.Socket}}
		}
	}
}
`))

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

func (p *strongswanPeer) Setup(ctx context.Context, topo *Topology) error {
	err := p.setup(ctx, topo)
	if err != nil && ctx.Err() == nil {
		return skipf("strongSwan did not come up: %v", err)
	}
	return err
}

func (p *strongswanPeer) setup(ctx context.Context, topo *Topology) error {
	psk, err := randomHex(32)
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
		side.PSK, side.Plugins, side.Socket, side.Child = psk, strongswanPlugins, strongswanSocket, strongswanChild
		side.IKEProposals, side.ESPProposals = p.ike, p.esp
		if side.IKEProposals == "" {
			side.IKEProposals, side.ESPProposals = "aes256gcm16-prfsha256-x25519", "aes256gcm16"
		}
		if _, err := topo.Run(ctx, s.ns, "ip", "addr", "add", netip.PrefixFrom(side.LocalInner, 32).String(), "dev", "lo"); err != nil {
			return fmt.Errorf("inner address: %w", err)
		}
		charon, uri, err := startCharon(ctx, topo.Start, topo.Dir, s.ns, side.Label, side, swanctlConf, side)
		if charon != nil {
			p.processes = append(p.processes, charon)
		}
		if err != nil {
			return err
		}
		uris = append(uris, uri)
	}
	if _, err := runCommand(ctx, "swanctl", "--initiate", "--uri", uris[0], "--child", strongswanChild, "--timeout", "20"); err != nil {
		return fmt.Errorf("initiate: %w\n%s\n%s", err, p.processes[0].Describe(), p.processes[1].Describe())
	}
	return waitForPing(ctx, topo, strongswanClientAddr, strongswanServerAddr, p.processes...)
}

// startCharon starts charon in namespace ns, inside its own mount
// namespace with a private /run (which keeps the pid files and vici sockets
// of several charons apart), with strongswan.conf from confData and
// swanctl.conf from the template swanctl and swanctlData, written under
// dir; it loads the configuration and returns the process (also on a later
// error, so that the caller stops it) and the vici URI.
func startCharon(ctx context.Context, start func(ns, name string, env []string, args ...string) (*Process, error),
	dir, ns, label string, confData any, swanctl *template.Template, swanctlData any) (*Process, string, error) {
	dir = filepath.Join(dir, "strongswan-"+label)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create strongSwan directory: %w", err)
	}
	conf, swanctlFile := filepath.Join(dir, "strongswan.conf"), filepath.Join(dir, "swanctl.conf")
	if err := writeTemplate(conf, strongswanConf, confData); err != nil {
		return nil, "", err
	}
	if err := writeTemplate(swanctlFile, swanctl, swanctlData); err != nil {
		return nil, "", err
	}
	charon, err := start(ns, "charon ("+label+")", []string{"STRONGSWAN_CONF=" + conf},
		"unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /run && exec "+charonBinary)
	if err != nil {
		return nil, "", err
	}
	socket := filepath.Join("/proc", strconv.Itoa(charon.PID()), "root", strongswanSocket)
	if err := waitForFile(ctx, socket, charon); err != nil {
		return charon, "", err
	}
	uri := "unix://" + socket
	if _, err := runCommandIn(ctx, "", []string{"STRONGSWAN_CONF=" + conf},
		"swanctl", "--load-all", "--uri", uri, "--file", swanctlFile); err != nil {
		return charon, "", fmt.Errorf("load the configuration: %w\n%s", err, charon.Describe())
	}
	return charon, uri, nil
}

func (p *strongswanPeer) Teardown() error {
	stopAll(p.processes)
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
