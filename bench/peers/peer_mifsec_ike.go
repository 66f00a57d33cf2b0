package peers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/mif"
)

const (
	mifsecIKEProposal = "aes256gcm16-prfsha256-x25519"
	mifsecIKEPool     = "10.95.0.0/24"
	mifsecIKEClientID = "client.bench"
	mifsecIKEServerID = "gateway.bench"
)

// mifsecIKEServerAddr is the inner address on the server's lo that the
// gateway protects (--local-ts) and iperf3's server listens on.
var mifsecIKEServerAddr = netip.MustParseAddr("10.94.0.1")

// mifsecIKEPeer is this binary's `mifsec gateway` in the server namespace
// and `mifsec connect` in the client namespace: ESP keyed by IKEv2 (PSK),
// AES-256-GCM for both.
type mifsecIKEPeer struct {
	binary  string
	version string
	// name, ike and esp select a suite other than AES-GCM-256: "" for
	// "mifsec-ike" with mifsecIKEProposal and mifsecAlg.
	name, ike, esp string

	clientTUN, serverTUN string
	processes            []*labnet.Process
}

func (p *mifsecIKEPeer) Name() string {
	if p.name == "" {
		return "mifsec-ike"
	}
	return p.name
}

// proposals are the IKE and ESP proposals both ends are given.
func (p *mifsecIKEPeer) proposals() (ikeProposal, espProposal string) {
	if p.ike == "" {
		return mifsecIKEProposal, mifsecAlg
	}
	return p.ike, p.esp
}

func (p *mifsecIKEPeer) Version() string         { return p.version }
func (p *mifsecIKEPeer) Path() string            { return p.binary }
func (p *mifsecIKEPeer) ClientAddr() netip.Addr  { return netip.Addr{} }
func (p *mifsecIKEPeer) ServerAddr() netip.Addr  { return mifsecIKEServerAddr }
func (p *mifsecIKEPeer) ClientInterface() string { return p.clientTUN }

func (p *mifsecIKEPeer) Prepare(ctx context.Context) error {
	binary, version, err := checkMifsec(ctx, p.binary, "gateway", "connect")
	p.binary = binary
	if err != nil {
		return err
	}
	ikeProposal, espProposal := p.proposals()
	p.version = version + ", IKEv2 PSK " + ikeProposal + ", ESP " + espProposal
	return nil
}

func (p *mifsecIKEPeer) Setup(ctx context.Context, topo *labnet.Topology) error {
	// The control sockets (/run/mifsec/<tun>.sock) are shared by every
	// namespace: the TUN names carry the lab's PID so that they collide
	// neither with another run nor with a mifsec running on the host.
	p.clientTUN = fmt.Sprintf("mbk%dc", topo.Lab.Owner())
	p.serverTUN = fmt.Sprintf("mbk%ds", topo.Lab.Owner())
	ikeProposal, espProposal := p.proposals()
	psk, err := labnet.RandomHex(32)
	if err != nil {
		return err
	}
	pskFile := filepath.Join(topo.Dir, "psk")
	if err := os.WriteFile(pskFile, []byte(psk+"\n"), 0o600); err != nil {
		return fmt.Errorf("write the PSK: %w", err)
	}
	if _, err := topo.Run(ctx, topo.Server, "ip", "addr", "add",
		netip.PrefixFrom(mifsecIKEServerAddr, 32).String(), "dev", "lo"); err != nil {
		return err
	}
	gateway, err := topo.Start(topo.Server, "mifsec gateway (server)", nil, p.binary, "gateway",
		"--listen", topo.ServerUnderlay.String(), "--local-id", mifsecIKEServerID, "--psk-file", pskFile,
		"--pool", mifsecIKEPool, "--local-ts", netip.PrefixFrom(mifsecIKEServerAddr, 32).String(),
		"--ike", ikeProposal, "--esp", espProposal, "--tun", p.serverTUN)
	if err != nil {
		return err
	}
	p.processes = append(p.processes, gateway)
	// The gateway serves its control socket once it listens for IKE.
	if err := labnet.WaitForSocket(ctx, mif.ControlSocket(p.serverTUN), gateway); err != nil {
		return err
	}
	client, err := topo.Start(topo.Client, "mifsec connect (client)", nil, p.binary, "connect",
		"--gateway", topo.ServerUnderlay.String(), "--local-id", mifsecIKEClientID,
		"--remote-id", mifsecIKEServerID, "--psk-file", pskFile,
		"--ike", ikeProposal, "--esp", espProposal, "--tun", p.clientTUN, "--ipv6=false")
	if err != nil {
		return err
	}
	p.processes = append(p.processes, client)
	return waitForPing(ctx, topo, netip.Addr{}, mifsecIKEServerAddr, p.processes...)
}

func (p *mifsecIKEPeer) Teardown() error {
	labnet.StopAll(p.processes)
	p.processes = nil
	// Both remove their control sockets on SIGTERM; not after SIGKILL.
	var errs []error
	for _, name := range []string{p.clientTUN, p.serverTUN} {
		if name == "" {
			continue
		}
		if err := os.Remove(mif.ControlSocket(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
