package main

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
)

// clientResolvConf is the client namespace's own /etc/resolv.conf (`ip
// netns exec` binds /etc/netns/NS/resolv.conf over it in a private mount
// namespace): odd on purpose, so that "byte for byte" means something.
const clientResolvConf = "# café Wi-Fi\nnameserver 198.51.100.53\nsearch lan\noptions edns0 ndots:2\n\n; no final newline"

// serveCorpDNS answers A queries for names under corp.test with 10.1.0.7,
// for vpn.test (a gateway's name) with 192.0.2.2, and anything else with
// NXDOMAIN, on addr:53 in the namespace ns, until the test ends.
func serveCorpDNS(t *testing.T, ns string, addr string) {
	t.Helper()
	var conn *net.UDPConn
	testenv.InNamedNetns(t, ns, func() {
		var err error
		if conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 53))); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if reply := corpDNSReply(buf[:n]); reply != nil {
				conn.WriteToUDPAddrPort(reply, from)
			}
		}
	}()
}

// corpDNSReply builds the answer to one query (one question).
func corpDNSReply(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i+1:i+1+l])))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	end := i + 5
	name := strings.Join(labels, ".")
	r := append([]byte(nil), q[:end]...)
	r[2], r[3] = 0x84|q[2]&0x01, 0x80 // response, authoritative, RD copied, RA
	binary.BigEndian.PutUint16(r[6:], 0)
	binary.BigEndian.PutUint16(r[8:], 0)
	binary.BigEndian.PutUint16(r[10:], 0)
	var a [4]byte
	switch {
	case name == "vpn.test":
		a = [4]byte{192, 0, 2, 2}
	case name == "corp.test" || strings.HasSuffix(name, ".corp.test"):
		a = [4]byte{10, 1, 0, 7}
	default:
		r[3] |= 3 // NXDOMAIN
		return r
	}
	if qtype == 1 {
		binary.BigEndian.PutUint16(r[6:], 1)
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		r = append(r, a[:]...)
	}
	return r
}

// dnsTopology is a client namespace with its own resolv.conf and a mifsec
// gateway handing out --dns 10.100.0.53 --dns-domain corp.test, where a DNS
// server answers for corp.test.
type dnsTopology struct {
	client, gw string
	resolvConf string // the client's, as seen from outside its mount namespace
	stateDir   string
	psk        string
}

func newDNSTopology(t *testing.T, localTS ...string) *dnsTopology {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "getent")
	d := &dnsTopology{client: testenv.NewNamedNetns(t, "dnscl"), gw: testenv.NewNamedNetns(t, "dnsgw"), stateDir: t.TempDir()}
	testenv.Veth(t, d.client, d.gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, d.gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	testenv.Exec(t, d.gw, "ip", "addr", "add", "10.100.0.53/32", "dev", "lo")
	serveCorpDNS(t, d.gw, "10.100.0.53")
	dir := filepath.Join("/etc/netns", d.client)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d.resolvConf = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(d.resolvConf, []byte(clientResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.psk = writePSK(t, t.TempDir(), "a secret of enough length")
	args := []string{"--log-level", "debug", "gateway", "--tun", "mgw" + d.gw[len(d.gw)-4:], "--listen", "192.0.2.2",
		"--pool", "10.3.0.0/24", "--dns", "10.100.0.53", "--dns-domain", "corp.test",
		"--local-id", "gw.example", "--psk-file", d.psk}
	for _, ts := range localTS {
		args = append(args, "--local-ts", ts)
	}
	g := startMifsec(t, d.gw, args...)
	if !testenv.Eventually(10*time.Second, func() bool {
		_, err := mif.ReadStatus(mif.ControlSocket("mgw" + d.gw[len(d.gw)-4:]))
		return err == nil
	}) {
		t.Fatalf("mifsec gateway did not start:\n%s", g.log.String())
	}
	return d
}

func (d *dnsTopology) connect(t *testing.T, dnsMode string) *connectProcess {
	t.Helper()
	p := startConnect(t, d.client, "mcl"+d.client[len(d.client)-4:], "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", d.psk, "--ipv6=false", "--dns", dnsMode, "--state-dir", d.stateDir)
	p.waitEstablished(t, 15*time.Second)
	return p
}

func (d *dnsTopology) resolvConfNow(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(d.resolvConf)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lookup resolves name inside the client namespace through the C
// library's resolver, which reads /etc/resolv.conf.
func (d *dnsTopology) lookup(t *testing.T, name string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", d.client, "getent", "ahostsv4", name).CombinedOutput()
	return string(out)
}

// waitFile waits until the client's resolv.conf satisfies ok.
func (d *dnsTopology) waitFile(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	var got string
	if !testenv.Eventually(10*time.Second, func() bool { got = d.resolvConfNow(t); return ok(got) }) {
		t.Fatalf("resolv.conf never %s:\n%s", what, got)
	}
	return got
}

func isOriginal(s string) bool { return s == clientResolvConf }

// TestConnectDNSFile: with --dns file the client's resolv.conf sends
// corp.test (split tunnel) and then everything (full tunnel) to the
// gateway's 10.100.0.53; Ctrl-C and SIGTERM put the original back byte for
// byte; after kill -9 the next start puts it back first.
func TestConnectDNSFile(t *testing.T) {
	t.Run("split tunnel, Ctrl-C", func(t *testing.T) {
		d := newDNSTopology(t, "10.1.0.0/24", "10.100.0.0/24")
		p := d.connect(t, "file")
		got := d.waitFile(t, "rewritten", func(s string) bool { return !isOriginal(s) })
		if ns := fileNameservers(got); len(ns) != 2 || ns[0] != "10.100.0.53" || ns[1] != "198.51.100.53" {
			t.Errorf("split tunnel: nameservers %v, want 10.100.0.53 first, then the original\n%s", ns, got)
		}
		if !strings.Contains(got, "search corp.test lan\n") {
			t.Errorf("search domains:\n%s", got)
		}
		if out := d.lookup(t, "intranet.corp.test"); !strings.Contains(out, "10.1.0.7") {
			t.Errorf("intranet.corp.test did not resolve through the tunnel: %q", out)
		}
		p.cmd.Process.Signal(syscall.SIGINT)
		<-p.done
		if got := d.resolvConfNow(t); !isOriginal(got) {
			t.Errorf("after Ctrl-C: %q, want the original byte for byte", got)
		}
		if entries, _ := os.ReadDir(d.stateDir); len(entries) != 0 {
			t.Errorf("state left after a clean exit: %v", entries)
		}
	})
	t.Run("full tunnel, SIGTERM, kill -9", func(t *testing.T) {
		d := newDNSTopology(t, "0.0.0.0/0")
		p := d.connect(t, "file")
		got := d.waitFile(t, "rewritten", func(s string) bool { return !isOriginal(s) })
		if ns := fileNameservers(got); len(ns) != 1 || ns[0] != "10.100.0.53" {
			t.Errorf("full tunnel: nameservers %v, want only 10.100.0.53\n%s", ns, got)
		}
		if out := d.lookup(t, "intranet.corp.test"); !strings.Contains(out, "10.1.0.7") {
			t.Errorf("intranet.corp.test did not resolve through the tunnel: %q", out)
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		if got := d.resolvConfNow(t); !isOriginal(got) {
			t.Errorf("after SIGTERM: %q, want the original byte for byte", got)
		}

		p = d.connect(t, "file")
		d.waitFile(t, "rewritten", func(s string) bool { return !isOriginal(s) })
		p.cmd.Process.Kill()
		<-p.done
		if isOriginal(d.resolvConfNow(t)) {
			t.Fatal("kill -9 cannot restore anything: the test is broken")
		}
		// The next start restores the original before it writes its own:
		// a clean stop of it then leaves the original, not the crashed
		// run's file.
		p = d.connect(t, "file")
		d.waitFile(t, "rewritten", func(s string) bool { return !isOriginal(s) })
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		if got := d.resolvConfNow(t); !isOriginal(got) {
			t.Errorf("after kill -9, a new start and SIGTERM: %q, want the original byte for byte", got)
		}
		// With --dns off, the next start after a crash restores it too.
		p = d.connect(t, "file")
		d.waitFile(t, "rewritten", func(s string) bool { return !isOriginal(s) })
		p.cmd.Process.Kill()
		<-p.done
		p = d.connect(t, "off")
		if got := d.resolvConfNow(t); !isOriginal(got) {
			t.Errorf("after kill -9 and a start with --dns off: %q", got)
		}
		if !strings.Contains(p.stop(t), "undoing the DNS settings of a mifsec that stopped without cleaning up") {
			t.Error("the recovery was not logged")
		}
	})
}

func fileNameservers(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}

// TestConnectGatewayByName (issue 18, acceptance 6): `--gateway vpn.test`
// is looked up through the system's resolver (the client namespace's own
// resolv.conf names a DNS server), and the name is the identity the
// gateway must prove.
func TestConnectGatewayByName(t *testing.T) {
	const psk = "a gateway by name secret"
	client, _, g := mifsecGatewayTopologyAfter(t, func(client, gw string) {
		testenv.Exec(t, gw, "ip", "addr", "add", "10.100.0.53/32", "dev", "lo")
		serveCorpDNS(t, gw, "10.100.0.53")
		testenv.Exec(t, client, "ip", "route", "add", "10.100.0.53/32", "via", "192.0.2.2")
		dir := filepath.Join("/etc/netns", client)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 10.100.0.53\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}, "--local-id", "vpn.test", "--psk-file", writePSK(t, t.TempDir(), psk))
	c := startConnect(t, client, "mnm0", "--gateway", "vpn.test", "--local-id", "client.example",
		"--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false")
	st := c.waitEstablished(t, 10*time.Second)
	if st.Session.Gateway != "192.0.2.2:500" {
		t.Errorf("connected to %s, want vpn.test's 192.0.2.2:500", st.Session.Gateway)
	}
	if err := ping(client, "10.1.0.1", 2); err != nil {
		t.Fatalf("%v\nclient:\n%s\ngateway:\n%s", err, c.log.String(), g.log.String())
	}
}
