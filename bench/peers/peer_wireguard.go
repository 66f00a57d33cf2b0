package peers

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
)

const (
	wireguardModule = "golang.zx2c4.com/wireguard@latest"
	wireguardPort   = 51820
)

var (
	wireguardClientAddr = netip.MustParseAddr("10.97.0.1")
	wireguardServerAddr = netip.MustParseAddr("10.97.0.2")
)

// wireguardPeer is wireguard-go configured with wg from wireguard-tools.
type wireguardPeer struct {
	binary   string
	cacheDir string
	version  string

	processes  []*labnet.Process
	interfaces []string
}

func (p *wireguardPeer) Name() string           { return "wireguard-go" }
func (p *wireguardPeer) Version() string        { return p.version }
func (p *wireguardPeer) Path() string           { return p.binary }
func (p *wireguardPeer) ClientAddr() netip.Addr { return netip.Addr{} }
func (p *wireguardPeer) ServerAddr() netip.Addr { return wireguardServerAddr }

func (p *wireguardPeer) ClientInterface() string {
	if len(p.interfaces) == 0 {
		return ""
	}
	return p.interfaces[0]
}

func (p *wireguardPeer) Prepare(ctx context.Context) error {
	if _, err := exec.LookPath("wg"); err != nil {
		return skipf("wg not found: apt-get install wireguard-tools")
	}
	if p.binary == "" {
		binary, err := WireguardGo(ctx, p.cacheDir)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return skipf("%v", err)
		}
		p.binary = binary
	} else if _, err := os.Stat(p.binary); err != nil {
		return fmt.Errorf("--wireguard-go: %w", err)
	}
	out, err := labnet.RunCommand(ctx, p.binary, "--version")
	if err != nil {
		return fmt.Errorf("wireguard-go --version: %w", err)
	}
	p.version = strings.TrimSpace(labnet.FirstLine(out))
	return nil
}

// WireguardGo returns the path of wireguard-go in cacheDir/bin (the user
// cache directory's mifsec folder when cacheDir is empty), building the
// module proxy's latest version there with `go install` when it is missing.
func WireguardGo(ctx context.Context, cacheDir string) (string, error) {
	if cacheDir == "" {
		userCache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("find a cache directory for wireguard-go: %w", err)
		}
		cacheDir = filepath.Join(userCache, "mifsec")
	}
	binDir := filepath.Join(cacheDir, "bin")
	binary := filepath.Join(binDir, "wireguard")
	if _, err := os.Stat(binary); err == nil {
		return binary, nil
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
		if _, statErr := os.Stat(goTool); statErr != nil {
			return "", fmt.Errorf("wireguard-go is not in %s and the go tool to build it is not found", binDir)
		}
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", binDir, err)
	}
	cmd := []string{goTool, "install", wireguardModule}
	if _, err := labnet.RunCommandIn(ctx, cacheDir, []string{"GOBIN=" + binDir}, cmd...); err != nil {
		return "", fmt.Errorf("build wireguard-go (GOBIN=%s go install %s): %w", binDir, wireguardModule, err)
	}
	if _, err := os.Stat(binary); err != nil {
		return "", fmt.Errorf("go install %s did not produce %s: %w", wireguardModule, binary, err)
	}
	return binary, nil
}

func (p *wireguardPeer) Setup(ctx context.Context, topo *labnet.Topology) error {
	type side struct {
		ns, iface     string
		addr, remote  netip.Addr
		endpoint      netip.Addr
		private, publ string
	}
	// The UAPI socket directory is shared by all namespaces and all runs:
	// the owner's PID keeps the names distinct.
	tag := strconv.Itoa(topo.Lab.Owner())
	sides := []*side{
		{ns: topo.Client, iface: "wgb" + tag + "c", addr: wireguardClientAddr, remote: wireguardServerAddr, endpoint: topo.ServerUnderlay},
		{ns: topo.Server, iface: "wgb" + tag + "s", addr: wireguardServerAddr, remote: wireguardClientAddr, endpoint: topo.ClientUnderlay},
	}
	for _, s := range sides {
		var err error
		if s.private, s.publ, err = wireguardKeyPair(); err != nil {
			return err
		}
	}
	for i, s := range sides {
		peerArgs := []string{"endpoint", netip.AddrPortFrom(s.endpoint, wireguardPort).String(),
			"allowed-ips", netip.PrefixFrom(s.remote, 32).String()}
		if err := p.startSide(ctx, topo.Start, topo.Run, topo.Dir, s.ns, s.iface, s.private, sides[1-i].publ,
			peerArgs, netip.PrefixFrom(s.addr, 24)); err != nil {
			return err
		}
	}
	return waitForPing(ctx, topo, netip.Addr{}, wireguardServerAddr, p.processes...)
}

// startSide starts wireguard-go on iface in namespace ns, gives it its key
// and its peer (peerPub with peerArgs for `wg set ... peer`), addresses it
// and brings it up. The process and interface are recorded in p at once,
// so that Teardown stops them whatever fails later.
func (p *wireguardPeer) startSide(ctx context.Context,
	start func(ns, name string, env []string, args ...string) (*labnet.Process, error),
	run func(ctx context.Context, ns string, args ...string) (string, error),
	dir, ns, iface, privateKey, peerPub string, peerArgs []string, addr netip.Prefix) error {
	proc, err := start(ns, "wireguard-go "+iface, []string{"WG_PROCESS_FOREGROUND=1"}, p.binary, iface)
	if err != nil {
		return err
	}
	p.processes = append(p.processes, proc)
	p.interfaces = append(p.interfaces, iface)
	if err := waitForFile(ctx, filepath.Join(labnet.WireguardSocketDir, iface+".sock"), proc); err != nil {
		return err
	}
	keyFile := filepath.Join(dir, iface+".key")
	if err := os.WriteFile(keyFile, []byte(privateKey+"\n"), 0o600); err != nil {
		return fmt.Errorf("write wireguard key: %w", err)
	}
	args := append([]string{"wg", "set", iface, "private-key", keyFile, "listen-port", strconv.Itoa(wireguardPort),
		"peer", peerPub}, peerArgs...)
	if _, err := run(ctx, ns, args...); err != nil {
		return fmt.Errorf("configure wireguard-go: %w", err)
	}
	if _, err := run(ctx, ns, "ip", "addr", "add", addr.String(), "dev", iface); err != nil {
		return fmt.Errorf("address wireguard interface: %w", err)
	}
	if _, err := run(ctx, ns, "ip", "link", "set", iface, "up"); err != nil {
		return fmt.Errorf("bring wireguard interface up: %w", err)
	}
	return nil
}

func (p *wireguardPeer) Teardown() error {
	labnet.StopAll(p.processes)
	p.processes = nil
	var errs []error
	for _, iface := range p.interfaces {
		err := os.Remove(filepath.Join(labnet.WireguardSocketDir, iface+".sock"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove wireguard-go's socket: %w", err))
		}
	}
	p.interfaces = nil
	return errors.Join(errs...)
}

// wireguardKeyPair returns a new Curve25519 private key and its public key,
// base64 as wg expects them.
func wireguardKeyPair() (private, public string, err error) {
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate wireguard key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key.Bytes()),
		base64.StdEncoding.EncodeToString(key.PublicKey().Bytes()), nil
}

// waitForFile polls until path exists, failing early when proc ends.
func waitForFile(ctx context.Context, path string, proc *labnet.Process) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if proc.Exited() {
			return fmt.Errorf("%s ended before creating %s:\n%s", proc.Name(), path, proc.Describe())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not create %s within 10s:\n%s", proc.Name(), path, proc.Describe())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
