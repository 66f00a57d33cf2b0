package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"golang.org/x/sys/unix"
)

func mifsecBinary(t *testing.T) string {
	t.Helper()
	return testenv.MifsecBinary(t)
}

// startStatic runs `mifsec static` in ns until the test ends.
func startStatic(t *testing.T, ns string, args ...string) *mifsecProcess {
	t.Helper()
	return startMifsec(t, ns, append([]string{"static"}, args...)...)
}

func randomKey(t *testing.T, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeKeyFile writes a hex key to a file of mode 600 in dir.
func writeKeyFile(t *testing.T, dir, name, key string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// staticTopology is two namespaces joined by a veth pair with a mifsec
// static tunnel between them, IPv4 and IPv6 inside.
type staticTopology struct {
	nsA, nsB string
	a, b     *mifsecProcess
}

// newStaticTopology starts both ends; extra flags, if any, go to both.
func newStaticTopology(t *testing.T, alg string, keyLen int, corruptKey bool, extra ...string) *staticTopology {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ping")
	top := &staticTopology{nsA: testenv.NewNamedNetns(t, "st-a"), nsB: testenv.NewNamedNetns(t, "st-b")}
	testenv.Veth(t, top.nsA, top.nsB, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	keyAB, keyBA := randomKey(t, keyLen), randomKey(t, keyLen)
	keyABatB := keyAB
	if corruptKey {
		keyABatB = randomKey(t, keyLen)
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	common := append([]string{"--alg", alg, "--tun", "mst0"}, extra...)
	top.a = startStatic(t, top.nsA, append(common, "--local", "192.0.2.1", "--remote", "192.0.2.2",
		"--spi-out", "0x1001", "--spi-in", "0x2002", "--key-out-file", writeKeyFile(t, dirA, "out", keyAB),
		"--key-in-file", writeKeyFile(t, dirA, "in", keyBA), "--state-dir", filepath.Join(dirA, "state"),
		"--address", "10.98.0.1/24", "--address", "fd98::1/64")...)
	top.b = startStatic(t, top.nsB, append(common, "--local", "192.0.2.2", "--remote", "192.0.2.1",
		"--spi-out", "0x2002", "--spi-in", "0x1001", "--key-out-file", writeKeyFile(t, dirB, "out", keyBA),
		"--key-in-file", writeKeyFile(t, dirB, "in", keyABatB), "--state-dir", filepath.Join(dirB, "state"),
		"--address", "10.98.0.2/24", "--address", "fd98::2/64")...)
	for _, ns := range []string{top.nsA, top.nsB} {
		waitForLink(t, ns, "mst0")
	}
	return top
}

func waitForLink(t *testing.T, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", ns, "-o", "addr", "show", "dev", name).CombinedOutput()
		if err == nil && strings.Contains(string(out), "inet6 fd98") && !strings.Contains(string(out), "tentative") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not up within 10s: %s %v", name, ns, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(ns, addr string, count int) error {
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", addr, ns, err, out)
	}
	return nil
}

func TestStaticTunnelCarriesTraffic(t *testing.T) {
	for _, tc := range []struct {
		alg    string
		keyLen int
	}{{"aes256gcm16", 36}, {"aes128gcm16", 20}, {"chacha20poly1305", 36}, {"aes256-sha256", 64}, {"aes128-sha1", 36}, {"aes256-sha512", 96}} {
		t.Run(tc.alg, func(t *testing.T) {
			top := newStaticTopology(t, tc.alg, tc.keyLen, false)
			// By default static runs as nobody with CAP_NET_ADMIN only.
			waitForLog(t, top.a, "privileges dropped")
			checkPrivileges(t, "static", top.a.cmd.Process.Pid, 65534, unix.CAP_NET_ADMIN)
			for _, addr := range []string{"10.98.0.2", "fd98::2"} {
				if err := ping(top.nsA, addr, 3); err != nil {
					t.Fatal(err)
				}
			}
			for _, server := range []string{"10.98.0.2", "fd98::2"} {
				t.Run("tcp to "+server, func(t *testing.T) {
					tcpTransfer(t, top.nsA, top.nsB, server, 16<<20)
				})
			}
			logA, logB := top.a.stop(t), top.b.stop(t)
			for name, log := range map[string]string{"a": logA, "b": logB} {
				if !strings.Contains(log, "tunnel down") || strings.Contains(log, "panic") {
					t.Fatalf("peer %s did not stop cleanly:\n%s", name, log)
				}
			}
		})
	}
}

// tcpTransfer sends size random bytes over TCP from nsA to server in nsB
// and compares their SHA-256 on both ends.
func tcpTransfer(t *testing.T, nsA, nsB, server string, size int) {
	var ln net.Listener
	testenv.InNamedNetns(t, nsB, func() {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(server, "5201"))
		if err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		received <- h.Sum(nil)
	}()
	var conn net.Conn
	testenv.InNamedNetns(t, nsA, func() {
		var err error
		d := net.Dialer{Timeout: 5 * time.Second}
		conn, err = d.DialContext(context.Background(), "tcp", net.JoinHostPort(server, "5201"))
		if err != nil {
			t.Fatal(err)
		}
	})
	data := make([]byte, size)
	rand.Read(data)
	start := time.Now()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	want := sha256.Sum256(data)
	select {
	case got := <-received:
		if !bytes.Equal(got, want[:]) {
			t.Fatalf("checksum of received bytes %x, sent %x", got, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("transfer did not finish in 60s")
	}
	t.Logf("%d MB in %v", size>>20, time.Since(start).Round(time.Millisecond))
}

var dropsRE = regexp.MustCompile(`bad-icv:(\d+)`)

// TestStaticWrongKeyCountsICVDrops keys one direction wrongly: pings fail,
// nothing crashes and the receiver counts the bad ICVs.
func TestStaticWrongKeyCountsICVDrops(t *testing.T) {
	top := newStaticTopology(t, "aes256gcm16", 36, true)
	if err := ping(top.nsA, "10.98.0.2", 3); err == nil {
		t.Fatal("ping passed with a wrong key")
	}
	logB := top.b.stop(t)
	m := dropsRE.FindStringSubmatch(logB)
	if m == nil {
		t.Fatalf("no bad-icv drops in b's log:\n%s", logB)
	}
	if n, _ := strconv.Atoi(m[1]); n < 3 {
		t.Fatalf("%d bad-icv drops, want at least 3", n)
	}
	if strings.Contains(logB, "panic") || !strings.Contains(logB, "tunnel down") {
		t.Fatalf("b did not stop cleanly:\n%s", logB)
	}
}
