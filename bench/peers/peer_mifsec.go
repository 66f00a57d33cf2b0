package peers

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/dataplane"
)

const (
	mifsecAlg       = "aes256gcm16"
	mifsecTUN       = "mifsec0"
	mifsecClientSPI = "0x1001" // SPI of the client→server SA
	mifsecServerSPI = "0x2002" // SPI of the server→client SA
)

var (
	mifsecClientAddr = netip.MustParseAddr("10.98.0.1")
	mifsecServerAddr = netip.MustParseAddr("10.98.0.2")
)

// mifsecPeer is this binary's `mifsec static`: ESP with static keys, no IKE.
type mifsecPeer struct {
	binary  string
	version string
	// name and alg select an ESP transform other than AES-GCM-256: ""
	// for "mifsec" with aes256gcm16.
	name, alg string

	processes []*labnet.Process
}

func (p *mifsecPeer) Name() string {
	if p.name == "" {
		return "mifsec"
	}
	return p.name
}

func (p *mifsecPeer) algorithm() string {
	if p.alg == "" {
		return mifsecAlg
	}
	return p.alg
}
func (p *mifsecPeer) Version() string         { return p.version }
func (p *mifsecPeer) Path() string            { return p.binary }
func (p *mifsecPeer) ClientAddr() netip.Addr  { return netip.Addr{} }
func (p *mifsecPeer) ServerAddr() netip.Addr  { return mifsecServerAddr }
func (p *mifsecPeer) ClientInterface() string { return mifsecTUN }

func (p *mifsecPeer) Prepare(ctx context.Context) error {
	binary, version, err := checkMifsec(ctx, p.binary, "static")
	p.binary = binary
	if err != nil {
		return err
	}
	p.version = version
	return nil
}

// checkMifsec finds the mifsec binary (os.Executable when binary is
// empty), checks that each of the commands runs, and returns the binary
// and the first line of its --version. A binary without one of the
// commands is a *SkipError.
func checkMifsec(ctx context.Context, binary string, commands ...string) (path, version string, err error) {
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return "", "", fmt.Errorf("find the mifsec binary: %w", err)
		}
	}
	for _, command := range commands {
		if _, err := labnet.RunCommand(ctx, binary, command, "--help"); err != nil {
			if ctx.Err() != nil {
				return binary, "", ctx.Err()
			}
			return binary, "", skipf("%s has no working `%s` command (%s)", binary, command, labnet.FirstLine(err.Error()))
		}
	}
	out, err := labnet.RunCommand(ctx, binary, "--version")
	if err != nil {
		return binary, "", fmt.Errorf("mifsec --version: %w", err)
	}
	return binary, strings.TrimSpace(labnet.FirstLine(out)), nil
}

func (p *mifsecPeer) Setup(ctx context.Context, topo *labnet.Topology) error {
	alg, err := dataplane.ParseAlgorithm(p.algorithm())
	if err != nil {
		return err
	}
	clientToServer, err := labnet.RandomHex(alg.KeyLen())
	if err != nil {
		return err
	}
	serverToClient, err := labnet.RandomHex(alg.KeyLen())
	if err != nil {
		return err
	}
	sides := []struct {
		ns, label     string
		local, remote netip.Addr
		spiOut, spiIn string
		keyOut, keyIn string
		address       netip.Prefix
	}{
		{topo.Client, "client", topo.ClientUnderlay, topo.ServerUnderlay, mifsecClientSPI, mifsecServerSPI,
			clientToServer, serverToClient, netip.PrefixFrom(mifsecClientAddr, 24)},
		{topo.Server, "server", topo.ServerUnderlay, topo.ClientUnderlay, mifsecServerSPI, mifsecClientSPI,
			serverToClient, clientToServer, netip.PrefixFrom(mifsecServerAddr, 24)},
	}
	for _, s := range sides {
		// Keys go through the environment, never the command line; each
		// side records its sequence numbers in a state directory of its own.
		proc, err := topo.Start(s.ns, "mifsec static ("+s.label+")", []string{"MIFSEC_KEY_OUT=" + s.keyOut, "MIFSEC_KEY_IN=" + s.keyIn}, p.binary, "static",
			"--local", s.local.String(), "--remote", s.remote.String(),
			"--spi-out", s.spiOut, "--spi-in", s.spiIn, "--state-dir", filepath.Join(topo.Dir, "static-state-"+s.label),
			"--alg", alg.String(), "--tun", mifsecTUN, "--address", s.address.String())
		if err != nil {
			return err
		}
		p.processes = append(p.processes, proc)
	}
	return waitForPing(ctx, topo, netip.Addr{}, mifsecServerAddr, p.processes...)
}

func (p *mifsecPeer) Teardown() error {
	labnet.StopAll(p.processes)
	p.processes = nil
	return nil
}
