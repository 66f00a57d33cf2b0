package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
)

// mifsecProcess is the mifsec binary running in a network namespace.
type mifsecProcess struct {
	cmd  *exec.Cmd
	log  *testenv.SyncBuffer // stdout and stderr
	done chan struct{}       // closed when it has exited
}

// startMifsec runs `mifsec args...` in ns; it is stopped when the test ends.
func startMifsec(t *testing.T, ns string, args ...string) *mifsecProcess {
	t.Helper()
	return startMifsecEnv(t, ns, nil, args...)
}

// startMifsecEnv is startMifsec with env (NAME=VALUE) added to the
// environment.
func startMifsecEnv(t *testing.T, ns string, env []string, args ...string) *mifsecProcess {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, mifsecBinary(t)}, args...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	p := &mifsecProcess{cmd: cmd, log: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the process with SIGTERM and returns what it printed.
func (p *mifsecProcess) stop(t *testing.T) string {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			t.Errorf("mifsec did not stop within 10s of SIGTERM:\n%s", p.log.String())
		}
	}
	return p.log.String()
}
