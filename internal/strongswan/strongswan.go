// Package strongswan runs strongSwan's charon, with its userspace ESP
// backend (kernel-libipsec), inside a test's network namespace: the
// reference IKEv2 peer of mifsec's interoperability tests.
//
// Each charon runs in its own mount namespace with a private /run, so
// several can run at once and none touches the host's. Tests write the
// swanctl.conf they need; Start adds strongswan.conf with an explicit plugin
// list (openssl first for AES-NI, kdf for the IKE key derivation). How charon
// is configured and started is package charon's, shared with the benchmark.
package strongswan

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/strongswan/charon"
	"github.com/mifsec/mifsec/internal/testenv"
)

// Available reports what is missing to run charon, or "" if nothing is.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root (network and mount namespaces)"
	}
	return charon.Missing()
}

// Require skips the test unless charon can run here.
func Require(t testing.TB) {
	t.Helper()
	if missing := Available(); missing != "" {
		t.Skip("strongSwan: " + missing)
	}
}

// Config is one charon's setup.
type Config struct {
	// Netns is the named network namespace charon runs in.
	Netns string
	// Swanctl is the swanctl.conf text (one setting per line).
	Swanctl string
	// Files are written beside swanctl.conf before loading, by relative
	// path: x509/gw.pem, x509ca/ca.pem, private/gw.key and so on.
	Files map[string][]byte
	// Charon adds lines to strongswan.conf's charon section.
	Charon string
}

// Charon is a running charon.
type Charon struct {
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	log  *testenv.SyncBuffer
	done chan struct{}
	uri  string
}

// Start runs charon in cfg.Netns, loads cfg.Swanctl and stops charon when
// the test ends.
func Start(t testing.TB, cfg Config) *Charon {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	strongswanConf := charon.Conf("\tport = 500\n\tport_nat_t = 4500\n\tretransmit_timeout = 1\n\tretransmit_tries = 3\n"+cfg.Charon, 2)
	if err := os.WriteFile(filepath.Join(dir, "strongswan.conf"), []byte(strongswanConf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "swanctl.conf"), []byte(cfg.Swanctl), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, data := range cfg.Files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := &Charon{t: t, dir: dir, log: &testenv.SyncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command("ip", append([]string{"netns", "exec", cfg.Netns}, charon.Command()...)...)
	c.cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting charon: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.Stop)
	c.uri = "unix://" + charon.SocketPath(c.cmd.Process.Pid)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(strings.TrimPrefix(c.uri, "unix://")); err == nil {
			break
		}
		select {
		case <-c.done:
			t.Fatalf("charon exited during start:\n%s", c.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("charon's vici socket did not appear within 15s:\n%s", c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := c.Swanctl("--load-all", "--noprompt", "--file", filepath.Join(dir, "swanctl.conf")); err != nil {
		t.Fatalf("swanctl --load-all: %v\n%s\ncharon:\n%s", err, out, c.Log())
	}
	return c
}

// Swanctl runs swanctl against this charon.
func (c *Charon) Swanctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "swanctl", append(args, "--uri", c.uri)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustSwanctl runs swanctl and fails the test on an error.
func (c *Charon) MustSwanctl(args ...string) string {
	c.t.Helper()
	out, err := c.Swanctl(args...)
	if err != nil {
		c.t.Fatalf("swanctl %s: %v\n%s\ncharon:\n%s", strings.Join(args, " "), err, out, c.Log())
	}
	return out
}

// Log returns what charon logged so far.
func (c *Charon) Log() string { return c.log.String() }

// Stop kills charon (and with it its ports 500 and 4500).
func (c *Charon) Stop() {
	select {
	case <-c.done:
		return
	default:
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// Kill kills charon at once, as a crash would: it sends no Delete.
func (c *Charon) Kill() {
	select {
	case <-c.done:
		return
	default:
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// Exited reports whether charon has stopped.
func (c *Charon) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
