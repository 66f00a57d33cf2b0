package labnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// outputLimit is how much of a process's most recent output is kept for
// error messages.
const outputLimit = 64 << 10

// Process is a long-running command started by the lab, in its own process
// group so that it and everything it forks can be signalled together.
type Process struct {
	name      string
	namespace string
	cmd       *exec.Cmd
	output    *tailBuffer
	done      chan struct{}

	waitErr error
}

// Name is a short label for messages, e.g. "wireguard-go (client)".
func (p *Process) Name() string { return p.name }

// PID is the process ID. ip netns exec, unshare and sh -c 'exec ...' all
// replace themselves, so it is also the PID of the final program.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns the most recent stdout and stderr of the process.
func (p *Process) Output() string { return p.output.String() }

// ExitError describes how the process ended; nil while it runs.
func (p *Process) ExitError() error {
	if !p.Exited() {
		return nil
	}
	if p.waitErr == nil {
		return errors.New("exited with status 0")
	}
	return p.waitErr
}

// Describe returns the name, PID, state and recent output, for error messages.
func (p *Process) Describe() string {
	state := "running"
	if p.Exited() {
		state = p.ExitError().Error()
	}
	out := strings.TrimSpace(p.Output())
	if out == "" {
		out = "(no output)"
	}
	return fmt.Sprintf("%s [pid %d, %s]:\n%s", p.name, p.PID(), state, indent(out))
}

// Stop sends SIGTERM to the process group, waits up to grace for the
// process to end, then sends SIGKILL to the group. It returns once the
// process has been reaped. An ended process is left alone: its PID may
// already belong to another process (whatever it left in its namespace is
// killed when the namespace is deleted).
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	killGroup(p.PID(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	killGroup(p.PID(), syscall.SIGKILL)
	<-p.done
}

func startProcess(name string, cmd *exec.Cmd) (*Process, error) {
	p := &Process{name: name, cmd: cmd, output: &tailBuffer{limit: outputLimit}, done: make(chan struct{})}
	cmd.Stdout = p.output
	cmd.Stderr = p.output
	cmd.SysProcAttr = ownGroup()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// ownGroup puts a child in its own process group (so a terminal's SIGINT
// does not reach it before the lab stops it in order) and has the kernel
// kill it if the lab's process dies without cleaning up.
func ownGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup signals the process group led by pid; errors (the group is
// already gone) are of no interest.
func killGroup(pid int, sig syscall.Signal) {
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(-pid, sig)
	_ = syscall.Kill(pid, sig)
}

// ProcessAlive reports whether a process with this PID exists (and is not
// a zombie).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// tailBuffer is an io.Writer safe for concurrent use that keeps the last
// limit bytes written.
type tailBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.limit; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// FirstLine is s up to its first newline.
func FirstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// Tool is an external program a run needs and the Debian package that has
// it.
type Tool struct{ Binary, Package string }

// MissingTools returns the tools that are not in PATH, once each.
func MissingTools(tools []Tool) []Tool {
	var missing []Tool
	seen := map[string]bool{}
	for _, t := range tools {
		if seen[t.Binary] {
			continue
		}
		seen[t.Binary] = true
		if _, err := exec.LookPath(t.Binary); err != nil {
			missing = append(missing, t)
		}
	}
	return missing
}

// DescribeMissing names the missing tools and the one apt-get command that
// installs them all.
func DescribeMissing(missing []Tool) string {
	var names, pkgs []string
	seen := map[string]bool{}
	for _, t := range missing {
		names = append(names, t.Binary)
		if !seen[t.Package] {
			seen[t.Package] = true
			pkgs = append(pkgs, t.Package)
		}
	}
	return fmt.Sprintf("%s not found: apt-get install %s", strings.Join(names, ", "), strings.Join(pkgs, " "))
}

// RandomHex is n random bytes in hex (pre-shared keys).
func RandomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// WaitForSocket waits until the unix socket at path accepts connections,
// failing early when proc ends.
func WaitForSocket(ctx context.Context, path string, proc *Process) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			conn.Close()
			return nil
		}
		if proc.Exited() {
			return fmt.Errorf("%s ended while starting:\n%s", proc.Name(), proc.Describe())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not open %s within 10s (%v):\n%s", proc.Name(), path, err, proc.Describe())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
