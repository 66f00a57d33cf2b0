package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
)

// Without CAP_NET_ADMIN each command that needs root says so, and nothing
// else: not even the missing profile is looked at.
func TestNeedsRootMessage(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "setpriv")
	bin := mifsecBinary(t)
	for _, args := range [][]string{
		{"connect", "--config", "/nonexistent/vpn.yaml"},
		{"gateway", "--config", "/nonexistent/gw.yaml"},
		{"static", "--config", "/nonexistent/static.yaml"},
		{"lab", "--duration", "1s"},
	} {
		// Root without any capability: the bounding set is empty.
		cmd := exec.Command("setpriv", append([]string{"--bounding-set=-all", "--inh-caps=-all", bin}, args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("%s: %v, want exit status 1:\n%s", args[0], err, out)
		}
		want := "mifsec: mifsec " + args[0] + " needs root:"
		if !strings.HasPrefix(string(out), want) || strings.Count(string(out), "\n") != 1 {
			t.Errorf("%s printed\n%s\nwant one line starting %q", args[0], out, want)
		}
	}
}

// A second instance on a TUN name whose control socket answers is refused
// before it creates anything.
func TestAlreadyRunningMessage(t *testing.T) {
	testenv.RequireRoot(t)
	name := fmt.Sprintf("mfrun%d", os.Getpid()%1000000)
	sock := mif.ControlSocket(name)
	os.MkdirAll(filepath.Dir(sock), 0o700)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(sock)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	psk := writePSK(t, t.TempDir(), "a secret of enough length")
	out, err := exec.Command(mifsecBinary(t), "connect", "--gateway", "192.0.2.1", "--local-id", "client.example",
		"--psk-file", psk, "--tun", name, "--dns", "off").CombinedOutput()
	want := "mifsec: mifsec is already running on " + name + " (its control socket " + sock + " answers"
	if err == nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("second instance: %v\n%s\nwant it to start %q", err, out, want)
	}
	if _, err := net.InterfaceByName(name); err == nil {
		t.Errorf("the refused instance created %s", name)
	}
	// A stale socket (no one answers) does not count.
	ln.Close()
	if err := refuseRunning(name); err != nil {
		t.Errorf("stale socket: %v", err)
	}
}

func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/mifsec/mifsec", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-12-03T09:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := versionText(bi, true), "v0.3.0 (commit 0123456789abcdef of 2026-12-03T09:00:00Z, with uncommitted changes; go1.26.0)"; got != want {
		t.Errorf("versionText = %q, want %q", got, want)
	}
	bi.Main.Version, bi.Settings = "(devel)", nil
	if got := versionText(bi, true); !strings.HasPrefix(got, "dev (commit unknown") {
		t.Errorf("without VCS information: %q", got)
	}
}

// A binary built from a git checkout names its commit.
func TestVersionCommandNamesCommit(t *testing.T) {
	testenv.RequireCommand(t, "git")
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "mifsec")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if meta, _ := exec.Command("go", "version", "-m", bin).Output(); !strings.Contains(string(meta), "vcs.revision") {
		top, _ := exec.Command("git", "rev-parse", "--show-toplevel").Output()
		if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err == nil && !fi.IsDir() {
			t.Skip("go stamps no VCS information in a git worktree (its .git is a file); run from a clone")
		}
		t.Fatalf("go build -buildvcs=true stamped no commit:\n%s", meta)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "commit " + strings.TrimSpace(string(head)); !strings.Contains(string(out), want) || !strings.HasPrefix(string(out), "mifsec ") {
		t.Errorf("mifsec version printed %q, want it to name %q", out, want)
	}
	if out, _ := exec.Command(bin, "--version").Output(); !strings.Contains(string(out), strings.TrimSpace(string(head))) {
		t.Errorf("mifsec --version printed %q", out)
	}
}
