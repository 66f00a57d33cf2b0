package peers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/mifsec/mifsec/bench/labnet"
)

// Lifecycle is what every measured peer has, in a throughput run (Peer)
// as in a scenario (LabPeer), and all that the runner in bench calls: a
// name, a check of what it needs before any namespace exists, a version,
// and a teardown of what its Setup started. Setup itself differs: a Peer
// comes up between the two namespaces of a labnet.Topology, a LabPeer on
// the labnet.LabNet a scenario describes (see the package comment).
type Lifecycle interface {
	// Name is the peer's name on the command line and in reports.
	Name() string
	// Prepare finds (or builds) what the peer needs before any namespace
	// exists. It returns a *skipError when the peer cannot run here.
	Prepare(ctx context.Context) error
	// Version describes the peer's software.
	Version() string
	// Teardown stops what Setup started; the network is removed after.
	Teardown() error
}

// Peer is one system measured by the throughput scenario: a tunnel between
// the two namespaces of a topology (or none, for the plain veth reference).
type Peer interface {
	Lifecycle
	// Path is the peer's main binary.
	Path() string
	// Setup brings the tunnel up in topo and returns once traffic passes.
	Setup(ctx context.Context, topo *labnet.Topology) error
	// ClientAddr is the source address the measured flow binds to in the
	// client namespace; the zero Addr lets the kernel choose.
	ClientAddr() netip.Addr
	// ServerAddr is where the flow reaches the server through the tunnel.
	ServerAddr() netip.Addr
	// ClientInterface is the client namespace's interface that the
	// measured flow must cross (the tunnel's TUN device), checked against
	// its byte counters so that a flow bypassing the tunnel is an error.
	ClientInterface() string
}

// skipError says why a peer cannot be measured on this machine.
type skipError struct{ Reason string }

func (e *skipError) Error() string { return "skipped: " + e.Reason }

func skipf(format string, args ...any) error {
	return &skipError{Reason: fmt.Sprintf(format, args...)}
}

// SkipReason returns the reason when err is a *skipError.
func SkipReason(err error) (string, bool) {
	var skip *skipError
	if errors.As(err, &skip) {
		return skip.Reason, true
	}
	return "", false
}

// PeerNames lists the peers in the default order of a run.
var PeerNames = []string{"mifsec", "mifsec-ike", "wireguard-go", "strongswan", "mifsec-aes256-sha256", "strongswan-aes256-sha256", "veth"}

// morePeerNames are peers a run measures only when named.
var morePeerNames = []string{"mifsec-ike-" + CBCSuite}

// CBCSuite is the AES-CBC suite the -aes256-sha256 peers run: what the
// IKEv2 clients of macOS and iOS negotiate.
const CBCSuite = "aes256-sha256"

// PeerOptions locates the peers' binaries.
type PeerOptions struct {
	// MifsecPath is the mifsec binary (usually os.Executable()).
	MifsecPath string
	// WireguardGoPath is a wireguard-go binary; empty builds the module
	// proxy's latest version into CacheDir.
	WireguardGoPath string
	// CacheDir holds built peers; empty means the user cache directory.
	CacheDir string
	// LogLevel is the --log-level of the mifsec processes a lab run
	// starts (their output goes to the run's logs/); empty means theirs.
	LogLevel string
}

// NewPeer returns the peer with this name.
func NewPeer(name string, opts PeerOptions) (Peer, error) {
	switch name {
	case "mifsec":
		return &mifsecPeer{binary: opts.MifsecPath}, nil
	case "mifsec-ike":
		return &mifsecIKEPeer{binary: opts.MifsecPath}, nil
	case "wireguard-go":
		return &wireguardPeer{binary: opts.WireguardGoPath, cacheDir: opts.CacheDir}, nil
	case "strongswan":
		return &strongswanPeer{}, nil
	case "mifsec-" + CBCSuite:
		return &mifsecPeer{binary: opts.MifsecPath, name: name, alg: CBCSuite}, nil
	case "mifsec-ike-" + CBCSuite:
		return &mifsecIKEPeer{binary: opts.MifsecPath, name: name, ike: CBCSuite + "-modp2048", esp: CBCSuite}, nil
	case "strongswan-" + CBCSuite:
		return &strongswanPeer{name: name, ike: CBCSuite + "-modp2048", esp: CBCSuite}, nil
	case "veth":
		return &vethPeer{}, nil
	}
	return nil, fmt.Errorf("unknown peer %q (known: %s)", name, strings.Join(slices.Concat(PeerNames, morePeerNames), ", "))
}

// waitForPing sends ICMP echo requests to dst from the client namespace
// until a reply comes back, failing early when one of the tunnel's
// processes ends.
func waitForPing(ctx context.Context, topo *labnet.Topology, src, dst netip.Addr, processes ...*labnet.Process) error {
	return labnet.WaitForEcho(ctx, topo.Client, src, dst, processes...)
}

// vethPeer is the reference: no tunnel, the flow straight over the veth pair.
type vethPeer struct{ topo *labnet.Topology }

func (p *vethPeer) Name() string                      { return "veth" }
func (p *vethPeer) Prepare(ctx context.Context) error { return nil }
func (p *vethPeer) Version() string                   { return "kernel " + labnet.KernelRelease() }
func (p *vethPeer) Path() string                      { return "" }
func (p *vethPeer) ClientAddr() netip.Addr            { return netip.Addr{} }
func (p *vethPeer) ServerAddr() netip.Addr            { return p.topo.ServerUnderlay }
func (p *vethPeer) ClientInterface() string           { return "veth0" }
func (p *vethPeer) Teardown() error                   { return nil }

func (p *vethPeer) Setup(ctx context.Context, topo *labnet.Topology) error {
	p.topo = topo
	return waitForPing(ctx, topo, netip.Addr{}, topo.ServerUnderlay)
}
