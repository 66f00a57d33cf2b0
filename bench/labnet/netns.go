package labnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/mifsec/mifsec/mif"
)

// NamespacePrefix starts the name of every network namespace the lab
// creates: NamespacePrefix + owner PID + "-" + label. A namespace with this
// prefix whose owner is no longer running was left by a crashed run.
const NamespacePrefix = "mifsec-bench-"

const (
	// stopGrace is how long a process gets to exit after SIGTERM.
	stopGrace = 3 * time.Second
	// cleanupTimeout bounds the commands run while cleaning up, which must
	// not use the (possibly cancelled) context of the run.
	cleanupTimeout = 20 * time.Second
)

// Lab owns the namespaces, processes and temporary files of one benchmark
// run and removes them all in Close, whatever state the run ended in.
type Lab struct {
	owner int
	dir   string

	mu         sync.Mutex
	closed     bool
	namespaces []string
	processes  []*Process
	startedPID []int
}

// Owner is the PID of the process that owns the lab; every name the lab
// and its peers create carries it.
func (l *Lab) Owner() int { return l.owner }

// NewLab removes what crashed earlier runs left behind (see
// removeStaleNamespaces) and prepares a new lab. It needs root. Progress
// messages go to log (may be nil).
func NewLab(ctx context.Context, log io.Writer) (*Lab, error) {
	if log == nil {
		log = io.Discard
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the benchmark lab needs root (network namespaces, TUN devices): run it as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("ip not found: apt-get install iproute2")
	}
	removed, err := removeStaleNamespaces(ctx)
	for _, ns := range removed {
		fmt.Fprintf(log, "removed stale namespace %s left by an earlier run\n", ns)
	}
	if err != nil {
		return nil, err
	}
	removeStaleDirs(os.TempDir())
	removeStaleSockets()
	owner := os.Getpid()
	dir, err := os.MkdirTemp("", NamespacePrefix+strconv.Itoa(owner)+"-")
	if err != nil {
		return nil, fmt.Errorf("create the lab's temporary directory: %w", err)
	}
	return &Lab{owner: owner, dir: dir}, nil
}

// removeStaleDirs removes the temporary directories (configuration files,
// keys) of labs whose owner is gone.
func removeStaleDirs(tempDir string) {
	entries, err := os.ReadDir(tempDir)
	if err != nil {
		return
	}
	for _, entry := range entries {
		if owner, ok := namespaceOwner(entry.Name()); ok && entry.IsDir() && !ProcessAlive(owner) {
			_ = os.RemoveAll(filepath.Join(tempDir, entry.Name()))
		}
	}
}

// LabSocketPrefixes start the names of the files (control sockets, saved
// settings) of the peers a lab runs, followed by the lab's PID: mifsec's in
// mif.ControlDir, wireguard-go's in WireguardSocketDir.
var LabSocketPrefixes = map[string][]string{
	mif.ControlDir:     {"mbk", "mlb"},
	WireguardSocketDir: {"wgb", "wlb"},
}

// removeStaleSockets removes the files that the peers of a killed lab
// could not remove themselves.
func removeStaleSockets() {
	for dir, prefixes := range LabSocketPrefixes {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, entry := range entries {
			if owner, ok := socketOwner(entry.Name(), prefixes); ok && !ProcessAlive(owner) {
				_ = os.Remove(filepath.Join(dir, entry.Name()))
			}
		}
	}
}

// socketOwner reads the lab PID from the name of a peer's file such as
// "mlb1234c.sock" or "mlb1234s.4026532245.sysctl": a prefix, the PID, then
// c (client) or s (server), then a dot.
func socketOwner(name string, prefixes []string) (int, bool) {
	for _, prefix := range prefixes {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end <= 0 || !strings.HasPrefix(rest[end:], "c.") && !strings.HasPrefix(rest[end:], "s.") {
			continue
		}
		if pid, err := strconv.Atoi(rest[:end]); err == nil && pid > 0 {
			return pid, true
		}
	}
	return 0, false
}

// NamespacePrefix returns the prefix of this lab's own namespaces.
func (l *Lab) NamespacePrefix() string {
	return NamespacePrefix + strconv.Itoa(l.owner) + "-"
}

// StartedPIDs lists every process the lab has started.
func (l *Lab) StartedPIDs() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.startedPID)
}

// Close stops every process the lab started, deletes every namespace it
// created (killing whatever still runs inside) and removes its temporary
// files. It is safe to call more than once and after the run's context was
// cancelled.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	processes := l.processes
	namespaces := l.namespaces
	l.processes, l.namespaces = nil, nil
	l.mu.Unlock()

	StopAll(processes)
	var errs []error
	for _, ns := range namespaces {
		if err := DeleteNamespace(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(l.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", l.dir, err))
	}
	return errors.Join(errs...)
}

func StopAll(processes []*Process) {
	var wg sync.WaitGroup
	for _, p := range processes {
		wg.Go(func() { p.Stop(stopGrace) })
	}
	wg.Wait()
}

// AddNamespace creates the namespace NamespacePrefix+owner+"-"+label with
// its loopback up. The name is registered for Close before it is created, so
// it is returned, and removed later, even when creating it fails halfway.
func (l *Lab) AddNamespace(ctx context.Context, label string) (string, error) {
	name := l.NamespacePrefix() + label
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return "", errors.New("the lab is closed")
	}
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	if _, err := RunCommand(ctx, "ip", "netns", "add", name); err != nil {
		return name, fmt.Errorf("create namespace: %w", err)
	}
	if _, err := RunCommand(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return name, fmt.Errorf("namespace %s: %w", name, err)
	}
	return name, nil
}

// removeNamespace stops the lab's processes in the namespace and deletes it.
func (l *Lab) removeNamespace(name string) error {
	l.mu.Lock()
	var inside, others []*Process
	for _, p := range l.processes {
		if p.namespace == name {
			inside = append(inside, p)
		} else {
			others = append(others, p)
		}
	}
	l.processes = others
	l.namespaces = slices.DeleteFunc(l.namespaces, func(ns string) bool { return ns == name })
	l.mu.Unlock()
	StopAll(inside)
	return DeleteNamespace(name)
}

// start runs args in namespace ns (in the lab's own namespace when ns is
// empty) with extra environment variables, and tracks it until Close.
func (l *Lab) start(ns, name string, env []string, args ...string) (*Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("the lab is closed")
	}
	cmd := exec.Command(args[0], args[1:]...)
	if ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	cmd.Env = append(os.Environ(), env...)
	p, err := startProcess(name, cmd)
	if err != nil {
		return nil, err
	}
	p.namespace = ns
	l.processes = append(l.processes, p)
	l.startedPID = append(l.startedPID, p.PID())
	return p, nil
}

// run runs args to completion in namespace ns and returns its combined
// output; the error includes the output.
func (l *Lab) run(ctx context.Context, ns string, args ...string) (string, error) {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	return RunCommand(ctx, args[0], args[1:]...)
}

// RunCommand runs a short command in its own process group, killed as a
// group when ctx ends, and returns its combined output. The error names the
// command and includes its output.
func RunCommand(ctx context.Context, name string, args ...string) (string, error) {
	return RunCommandIn(ctx, "", nil, append([]string{name}, args...)...)
}

// RunCommandIn is RunCommand in working directory dir (the current one when
// empty) with extra environment variables.
func RunCommandIn(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	name := args[0]
	args = args[1:]
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = ownGroup()
	cmd.Cancel = func() error {
		killGroup(cmd.Process.Pid, syscall.SIGKILL)
		return nil
	}
	cmd.WaitDelay = 2 * time.Second
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	text := out.String()
	if err != nil {
		line := strings.Join(append([]string{name}, args...), " ")
		if ctxErr := ctx.Err(); ctxErr != nil {
			return text, fmt.Errorf("%s: %w", line, ctxErr)
		}
		if msg := strings.TrimSpace(text); msg != "" {
			return text, fmt.Errorf("%s: %w: %s", line, err, msg)
		}
		return text, fmt.Errorf("%s: %w", line, err)
	}
	return text, nil
}

// removeStaleNamespaces deletes every namespace named with NamespacePrefix
// whose owning process is gone, after killing the processes still running
// inside it. It returns the names it removed.
func removeStaleNamespaces(ctx context.Context) ([]string, error) {
	out, err := RunCommand(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	stale := staleNamespaces(out, ProcessAlive)
	var errs []error
	var removed []string
	for _, ns := range stale {
		if err := DeleteNamespace(ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, ns)
	}
	return removed, errors.Join(errs...)
}

// staleNamespaces picks, from the output of `ip netns list`, the lab
// namespaces whose owner PID is not alive (or cannot be read from the name).
func staleNamespaces(ipNetnsList string, alive func(pid int) bool) []string {
	var stale []string
	for line := range strings.Lines(ipNetnsList) {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], NamespacePrefix) {
			continue
		}
		name := fields[0]
		owner, ok := namespaceOwner(name)
		if ok && alive(owner) {
			continue
		}
		stale = append(stale, name)
	}
	return stale
}

// namespaceOwner extracts the owner PID from a lab namespace name.
func namespaceOwner(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamespacePrefix)
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// DeleteNamespace kills every process inside the namespace, then deletes it.
func DeleteNamespace(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := killNamespaceProcesses(ctx, name); err != nil {
		return err
	}
	if _, err := RunCommand(ctx, "ip", "netns", "del", name); err != nil {
		if _, statErr := os.Stat(filepath.Join("/run/netns", name)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete namespace: %w", err)
	}
	return nil
}

// killNamespaceProcesses sends SIGKILL to every process in the namespace and
// waits until none is left.
func killNamespaceProcesses(ctx context.Context, name string) error {
	for {
		out, err := RunCommand(ctx, "ip", "netns", "pids", name)
		if err != nil {
			if _, statErr := os.Stat(filepath.Join("/run/netns", name)); errors.Is(statErr, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("list processes in namespace %s: %w", name, err)
		}
		pids := ParsePIDs(out)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v in namespace %s do not exit: %w", pids, name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ParsePIDs reads the alive PIDs from `ip netns pids` output, one per line.
func ParsePIDs(out string) []int {
	var pids []int
	for _, field := range strings.Fields(out) {
		if pid, err := strconv.Atoi(field); err == nil && ProcessAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Topology is a pair of namespaces, client and server, joined by one veth
// pair named veth0 on both sides.
type Topology struct {
	Lab            *Lab
	Client, Server string
	ClientUnderlay netip.Addr
	ServerUnderlay netip.Addr
	// Dir is a private temporary directory for configuration files.
	Dir string
}

// Underlay addresses of every topology (each lives in its own namespaces).
var (
	clientUnderlay = netip.MustParseAddr("10.99.0.1")
	serverUnderlay = netip.MustParseAddr("10.99.0.2")
)

const underlayBits = 24

// NewTopology creates the namespaces <prefix><owner>-<label>-c and -s and
// the veth pair between them.
func (l *Lab) NewTopology(ctx context.Context, label string) (*Topology, error) {
	t := &Topology{Lab: l, ClientUnderlay: clientUnderlay, ServerUnderlay: serverUnderlay}
	if err := t.build(ctx, label); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	return t, nil
}

func (t *Topology) build(ctx context.Context, label string) error {
	l := t.Lab
	var err error
	if t.Client, err = l.AddNamespace(ctx, label+"-c"); err != nil {
		return err
	}
	if t.Server, err = l.AddNamespace(ctx, label+"-s"); err != nil {
		return err
	}
	if _, err := RunCommand(ctx, "ip", "link", "add", "veth0", "netns", t.Client, "type", "veth",
		"peer", "name", "veth0", "netns", t.Server); err != nil {
		return fmt.Errorf("create veth pair: %w", err)
	}
	for ns, addr := range map[string]netip.Addr{t.Client: t.ClientUnderlay, t.Server: t.ServerUnderlay} {
		prefix := netip.PrefixFrom(addr, underlayBits).String()
		if _, err := RunCommand(ctx, "ip", "-n", ns, "addr", "add", prefix, "dev", "veth0"); err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		if _, err := RunCommand(ctx, "ip", "-n", ns, "link", "set", "veth0", "up"); err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	if t.Dir, err = os.MkdirTemp(l.dir, label+"-"); err != nil {
		return fmt.Errorf("create the topology's directory: %w", err)
	}
	return nil
}

// Close stops the processes in both namespaces and deletes them.
func (t *Topology) Close() error {
	var errs []error
	for _, ns := range []string{t.Client, t.Server} {
		if ns != "" {
			errs = append(errs, t.Lab.removeNamespace(ns))
		}
	}
	if t.Dir != "" {
		errs = append(errs, os.RemoveAll(t.Dir))
	}
	return errors.Join(errs...)
}

// Start runs a long-lived command inside namespace ns, tracked by the lab.
func (t *Topology) Start(ns, name string, env []string, args ...string) (*Process, error) {
	return t.Lab.start(ns, name, env, args...)
}

// Run runs a command to completion inside namespace ns.
func (t *Topology) Run(ctx context.Context, ns string, args ...string) (string, error) {
	return t.Lab.run(ctx, ns, args...)
}

func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// ListenUDPIn opens a UDP socket inside network namespace ns: the thread
// enters the namespace only while the socket is created, and a socket stays
// in the namespace it was created in.
func ListenUDPIn(ns string, laddr netip.AddrPort) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := InNamespace(ns, func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("UDP socket in namespace %s: %w", ns, err)
	}
	return conn, nil
}

// InNamespace runs fn on a thread inside network namespace ns. A thread
// that cannot return to the original namespace is left locked, so the
// runtime discards it instead of reusing it.
func InNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		original, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open the current network namespace: %w", err)
			return
		}
		defer original.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", ns, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(original); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", ns, err))
			return // the thread stays locked and ends with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// WireguardSocketDir holds wireguard-go's UAPI sockets; it is not per
// namespace.
const WireguardSocketDir = "/var/run/wireguard"

// KernelRelease is the running kernel's release.
func KernelRelease() string {
	release, err := ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(release)
}
