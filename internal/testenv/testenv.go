// Package testenv holds helpers shared by the tests of several packages:
// skipping tests whose privileges or tools are missing, and running test code
// in private network namespaces joined by veth pairs.
//
// Network namespaces belong to OS threads, not goroutines. WithNetns and
// InNamedNetns lock the calling goroutine to its thread, move that thread
// into the namespace, run fn and move it back. Inside fn:
//   - sockets, TUN devices and netlink handles created by fn itself live in
//     the namespace and stay there when used later from any goroutine;
//   - goroutines started by fn (including subtests from t.Run) run on other
//     threads, in the original namespace, and do not see the namespace;
//   - t.Cleanup functions run after fn returns, in the original namespace.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsPrefix starts the name of every namespace NewNamedNetns creates, so
// that leftovers of a crashed test run are easy to find and delete.
const NetnsPrefix = "mifsectest-"

// commandTimeout bounds every command run by Exec and the helpers.
const commandTimeout = 30 * time.Second

// debianPackages names the Debian package providing a command, for skip
// messages.
var debianPackages = map[string]string{
	"ip":      "iproute2",
	"ping":    "iputils-ping",
	"iperf3":  "iperf3",
	"nft":     "nftables",
	"tshark":  "tshark",
	"swanctl": "strongswan-swanctl",
	"wg":      "wireguard-tools",
}

// RequireRoot skips t unless it runs as root with CAP_NET_ADMIN and
// CAP_SYS_ADMIN (to configure links and create network namespaces) and
// /dev/net/tun can be opened.
func RequireRoot(t testing.TB) {
	t.Helper()
	if euid := os.Geteuid(); euid != 0 {
		t.Skipf("needs root: running as euid %d (network namespaces, TUN and netlink need root)", euid)
	}
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}} {
		ok, err := hasCapability(c.bit)
		if err != nil {
			t.Skipf("needs root: reading capabilities: %v", err)
		}
		if !ok {
			t.Skipf("needs root: %s is missing from the effective capabilities", c.name)
		}
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("needs root: /dev/net/tun is not usable: %v", err)
	}
	unix.Close(fd)
}

func hasCapability(bit uint) (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	return data[bit/32].Effective&(1<<(bit%32)) != 0, nil
}

// RequireCommand skips t unless the command name is found in PATH (or at
// name, if it is a path).
func RequireCommand(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if pkg, ok := debianPackages[name]; ok {
			t.Skipf("needs command %q (Debian package %s): %v", name, pkg, err)
			return
		}
		t.Skipf("needs command %q: %v", name, err)
	}
}

// MifsecBinary returns the mifsec binary, built once per test process
// (CGO_ENABLED=0, as released) into a temporary directory; it skips t when
// the go command is missing. Every package's tests that run the binary
// share it.
func MifsecBinary(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not found: needed to build the mifsec binary")
	}
	bin, err := buildMifsec()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Main runs a package's tests and then removes the binary MifsecBinary
// built for them, if it did (some 40 MB in the temporary directory per
// test process); it returns m.Run's exit code. A package whose tests call
// MifsecBinary calls it from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	builtMu.Lock()
	defer builtMu.Unlock()
	if builtDir != "" {
		os.RemoveAll(builtDir)
		builtDir = ""
	}
	return code
}

var (
	builtMu  sync.Mutex
	builtDir string // the directory buildMifsec made, for Main to remove
)

var buildMifsec = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "mifsec-test-bin-")
	if err != nil {
		return "", err
	}
	builtMu.Lock()
	builtDir = dir
	builtMu.Unlock()
	bin := filepath.Join(dir, "mifsec")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/mifsec/mifsec/cmd/mifsec")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// WithNetns runs fn on the calling goroutine inside a new, private network
// namespace whose loopback interface is up. The namespace disappears once
// nothing created in it (sockets, netlink handles) is open any more; devices
// left in it are deleted with it. See the package doc for what fn's
// goroutines see. Skips t unless RequireRoot passes.
func WithNetns(t testing.TB, fn func()) {
	t.Helper()
	RequireRoot(t)
	enter(t, "a new network namespace", func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		return setLoopbackUp()
	}, fn)
}

// InNamedNetns runs fn on the calling goroutine inside the named network
// namespace (as created by NewNamedNetns or `ip netns add`). See the package
// doc for what fn's goroutines see.
func InNamedNetns(t testing.TB, name string, fn func()) {
	t.Helper()
	enter(t, "network namespace "+name, func() error {
		target, err := netns.GetFromName(name)
		if err != nil {
			return fmt.Errorf("opening network namespace %s: %w", name, err)
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("entering network namespace %s: %w", name, err)
		}
		return nil
	}, fn)
}

// enter locks the goroutine to its thread, runs join to move the thread into
// another namespace, runs fn and moves the thread back. If the thread cannot
// be moved back it stays locked, and the runtime discards it when the test
// goroutine ends.
func enter(t testing.TB, what string, join func() error, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	original, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("opening the current network namespace: %v", err)
	}
	defer original.Close()
	defer func() {
		if err := netns.Set(original); err != nil {
			t.Fatalf("returning from %s: %v", what, err)
		}
		runtime.UnlockOSThread()
	}()
	if err := join(); err != nil {
		t.Fatalf("entering %s: %v", what, err)
	}
	fn()
}

func setLoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("looking up lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// NewNamedNetns creates a named network namespace (`ip netns add`) with its
// loopback up and deletes it when the test ends. The name is NetnsPrefix,
// then prefix reduced to letters, digits, '-' and '_', then a random suffix.
// Skips t unless RequireRoot passes and the ip command exists.
func NewNamedNetns(t testing.TB, prefix string) string {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "ip")
	name := NetnsPrefix + sanitize(prefix, 32) + "-" + randomHex(4)
	Exec(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := run("", "ip", "netns", "delete", name); err != nil {
			t.Errorf("deleting network namespace %s: %v: %s", name, err, out)
		}
	})
	Exec(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// Exec runs the command args inside the named network namespace ns (or in
// the current one when ns is empty) and returns its combined output. It
// fails t if the command fails or runs longer than 30 s.
func Exec(t testing.TB, ns string, args ...string) string {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("Exec in %q: no command", ns)
	}
	out, err := run(ns, args...)
	if err != nil {
		where := "the current network namespace"
		if ns != "" {
			where = "network namespace " + ns
		}
		t.Fatalf("running %q in %s: %v\n%s", strings.Join(args, " "), where, err, out)
	}
	return out
}

func run(ns string, args ...string) (string, error) {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// Veth creates a veth pair with one end in the named namespace nsA and the
// other in nsB, adds addrA and addrB to them (an invalid, zero prefix adds
// none; IPv6 addresses skip duplicate address detection), brings both up and
// returns their names. The pair is deleted when the test ends.
func Veth(t testing.TB, nsA, nsB string, addrA, addrB netip.Prefix) (ifA, ifB string) {
	t.Helper()
	RequireCommand(t, "ip")
	base := "mv" + randomHex(4)
	ifA, ifB = base+"a", base+"b"
	Exec(t, "", "ip", "link", "add", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB)
	t.Cleanup(func() {
		// Deleting one end deletes the pair; a namespace already deleted
		// took the pair with it.
		_, _ = run("", "ip", "-n", nsA, "link", "delete", ifA)
	})
	for _, end := range []struct {
		ns, dev string
		addr    netip.Prefix
	}{{nsA, ifA, addrA}, {nsB, ifB, addrB}} {
		if end.addr.IsValid() {
			args := []string{"ip", "-n", end.ns, "address", "add", end.addr.String(), "dev", end.dev}
			if end.addr.Addr().Is6() {
				args = append(args, "nodad")
			}
			Exec(t, "", args...)
		}
		Exec(t, "", "ip", "-n", end.ns, "link", "set", end.dev, "up")
	}
	return ifA, ifB
}

func sanitize(s string, maxLen int) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() == maxLen {
			break
		}
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SyncBuffer collects what a child process writes to its stdout and stderr
// while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartIperf3Server starts `iperf3 --server` bound to bind in the named
// namespace ns (serving one test when once is set), waits until it listens
// on its port, and stops it when the test ends. Starting the process is not
// enough: a client started at once may find nothing listening yet.
func StartIperf3Server(t testing.TB, ns, bind string, once bool) {
	t.Helper()
	RequireCommand(t, "iperf3")
	args := []string{"netns", "exec", ns, "iperf3", "--server", "--bind", bind}
	if once {
		args = append(args, "--one-off")
	}
	server := exec.Command("ip", args...)
	var out SyncBuffer
	server.Stdout, server.Stderr = &out, &out
	if err := server.Start(); err != nil {
		t.Fatalf("starting iperf3 server in %s: %v", ns, err)
	}
	exited := make(chan struct{})
	go func() { server.Wait(); close(exited) }()
	t.Cleanup(func() {
		server.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if listening, err := run(ns, "ss", "-Hltn", "sport = :5201"); err == nil && strings.TrimSpace(listening) != "" {
			return
		}
		select {
		case <-exited:
			t.Fatalf("iperf3 server in %s ended before listening:\n%s", ns, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("iperf3 server in %s does not listen on port 5201 after 10 s:\n%s", ns, out.String())
		}
	}
}

// Eventually polls cond every 2 ms until it holds or within has passed,
// and reports whether it held: the caller fails with what it knows.
func Eventually(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return cond()
		}
	}
	return true
}

// WaitUntil fails t unless cond holds within the given time; what names
// the condition in the failure. It is the tests' one way to wait for
// something another goroutine or process does.
func WaitUntil(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(within, cond) {
		t.Fatalf("%s: not within %v", what, within)
	}
}
