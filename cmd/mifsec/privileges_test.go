package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
	"golang.org/x/sys/unix"
)

// procStatus is what /proc/PID/status says about a process's credentials.
type procStatus struct {
	uid, gid                       [4]int
	capEff, capPrm, capBnd, capInh uint64
	capAmb                         uint64
	noNewPrivs                     bool
	comm                           string
}

func readProcStatus(t *testing.T, path string) procStatus {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st procStatus
	for _, line := range strings.Split(string(b), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		hex := func() uint64 { v, _ := strconv.ParseUint(value, 16, 64); return v }
		ids := func() (out [4]int) {
			for i, f := range strings.Fields(value) {
				if i < 4 {
					out[i], _ = strconv.Atoi(f)
				}
			}
			return out
		}
		switch key {
		case "Name":
			st.comm = value
		case "Uid":
			st.uid = ids()
		case "Gid":
			st.gid = ids()
		case "CapEff":
			st.capEff = hex()
		case "CapPrm":
			st.capPrm = hex()
		case "CapBnd":
			st.capBnd = hex()
		case "CapInh":
			st.capInh = hex()
		case "CapAmb":
			st.capAmb = hex()
		case "NoNewPrivs":
			st.noNewPrivs = value == "1"
		}
	}
	return st
}

// checkPrivileges asserts that every thread of pid runs as uid with
// exactly the capabilities caps, in every set, and cannot regain others.
// Credentials are per thread in Linux: /proc/PID/status shows the main
// thread's only, so each /proc/PID/task/TID/status is read.
func checkPrivileges(t *testing.T, what string, pid, uid int, caps ...uint) {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("%s: threads of pid %d: %v %v", what, pid, tasks, err)
	}
	for _, task := range tasks {
		checkThreadPrivileges(t, what+" "+task, task, uid, caps...)
	}
}

func checkThreadPrivileges(t *testing.T, what, path string, uid int, caps ...uint) {
	t.Helper()
	var want uint64
	for _, c := range caps {
		want |= 1 << c
	}
	st := readProcStatus(t, path)
	if st.comm != "mifsec" {
		t.Fatalf("%s is %q, not mifsec", what, st.comm)
	}
	for i, id := range st.uid {
		if id != uid {
			t.Errorf("%s: uid %v (real, effective, saved, fs), want %d in all (the %dth is %d)", what, st.uid, uid, i, id)
			break
		}
	}
	if uid != 0 && st.gid[0] == 0 {
		t.Errorf("%s: gid %v, still root's group", what, st.gid)
	}
	if st.capEff != want || st.capPrm != want || st.capBnd != want {
		t.Errorf("%s: CapEff %#x CapPrm %#x CapBnd %#x, want %#x in each", what, st.capEff, st.capPrm, st.capBnd, want)
	}
	if st.capInh != 0 || st.capAmb != 0 {
		t.Errorf("%s: CapInh %#x CapAmb %#x, want none", what, st.capInh, st.capAmb)
	}
	if !st.noNewPrivs {
		t.Errorf("%s: no_new_privs not set", what)
	}
}

func waitForLog(t *testing.T, p *mifsecProcess, text string) {
	t.Helper()
	if !testenv.Eventually(10*time.Second, func() bool { return strings.Contains(p.log.String(), text) }) {
		t.Fatalf("no %q in the log:\n%s", text, p.log.String())
	}
}

// TestPrivilegesDropped runs `mifsec connect` against `mifsec gateway` and
// reads both processes' credentials: by default both stay uid 0, the
// client with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, the gateway with
// CAP_NET_ADMIN only; with --user nobody both run as nobody. In every case
// the bounding set holds only those capabilities, no_new_privs is set,
// traffic passes, and the gateway restores IP forwarding when it stops.
// On b74fb06 both ran as root with every capability.
func TestPrivilegesDropped(t *testing.T) {
	const psk = "a secret only the two share"
	nobody, err := lookupUser("nobody")
	if err != nil || nobody == nil {
		t.Skipf("no user nobody on this host: %v", err)
	}
	for _, tc := range []struct {
		name                 string
		gatewayArgs, clArgs  []string
		gatewayUID, clientID int
	}{
		{name: "defaults", gatewayUID: 0, clientID: 0},
		{name: "both as nobody", gatewayArgs: []string{"--user", "nobody"}, clArgs: []string{"--user", "nobody"},
			gatewayUID: nobody.uid, clientID: nobody.uid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, gw, g := mifsecGatewayTopologyWith(t, append([]string{"--local-id", "gw.example",
				"--psk-file", writePSK(t, t.TempDir(), psk)}, tc.gatewayArgs...)...)
			if tc.gatewayUID != 0 {
				// Unprivileged, neither can remove its files from
				// /run/mifsec on exit (documented): the test does.
				var st unix.Stat_t
				if err := unix.Stat("/run/netns/"+gw, &st); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					removeStaleSocket(mif.ControlSocket("mpd0"))
					removeStaleSocket(mif.ControlSocket("mgw0"))
					os.Remove(filepath.Join(mif.ControlDir, fmt.Sprintf("mgw0.%d.sysctl", st.Ino)))
				})
			}
			waitForLog(t, g, "privileges dropped")
			c := startConnect(t, client, "mpd0", append([]string{"--gateway", "192.0.2.2", "--local-id", "client.example",
				"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false"}, tc.clArgs...)...)
			c.waitEstablished(t, 10*time.Second)
			waitForLog(t, c.mifsecProcess, "privileges dropped")
			checkPrivileges(t, "gateway", g.cmd.Process.Pid, tc.gatewayUID, unix.CAP_NET_ADMIN)
			checkPrivileges(t, "client", c.cmd.Process.Pid, tc.clientID, unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE)
			if err := ping(client, "10.1.0.1", 3); err != nil {
				t.Fatalf("%v\nclient:\n%s\ngateway:\n%s", err, c.log.String(), g.log.String())
			}
			if fwd := strings.TrimSpace(testenv.Exec(t, gw, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "1" {
				t.Fatalf("forwarding %q while the gateway runs", fwd)
			}
			c.stop(t)
			log := g.stop(t)
			if strings.Contains(log, "restoring a sysctl") {
				t.Fatalf("the gateway could not restore a sysctl:\n%s", log)
			}
			if fwd := strings.TrimSpace(testenv.Exec(t, gw, "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "0" {
				t.Fatalf("forwarding %q after the gateway stopped, want 0 as before", fwd)
			}
		})
	}
}

// removeStaleSocket removes the control socket at path unless an instance
// (of another test, in another namespace) answers on it.
func removeStaleSocket(path string) {
	if conn, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		conn.Close()
		return
	}
	os.Remove(path)
}

func TestLookupUser(t *testing.T) {
	for _, name := range []string{"", "root", "0"} {
		if as, err := lookupUser(name); err != nil || as != nil {
			t.Errorf("lookupUser(%q) = %+v, %v; want uid 0 kept", name, as, err)
		}
	}
	if _, err := lookupUser("no-such-user-mifsec"); err == nil {
		t.Error("an unknown user was accepted")
	}
	if as, err := lookupUser("65534"); err != nil || as == nil || as.uid != 65534 {
		t.Errorf("lookupUser(65534) = %+v, %v", as, err)
	}
}
