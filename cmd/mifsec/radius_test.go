package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/internal/testpki"
)

const radiusSecret = "a RADIUS shared secret"

// freeRADIUS is a FreeRADIUS server run by a test.
type freeRADIUS struct {
	cmd    *exec.Cmd
	log    *testenv.SyncBuffer
	done   chan struct{}
	detail string // the accounting records
}

// startFreeRADIUS runs FreeRADIUS in ns on 127.0.0.1 (1812, accounting
// 1813) with EAP-MSCHAPv2 and carol's password, for a client at
// 127.0.0.1 with radiusSecret, until the test ends.
func startFreeRADIUS(t *testing.T, ns string) *freeRADIUS {
	t.Helper()
	if _, err := exec.LookPath("freeradius"); err != nil {
		t.Skip("freeradius not found: apt-get install freeradius")
	}
	dir := t.TempDir()
	for _, d := range []string{"log", "run", "acct"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	conf := strings.NewReplacer("DIR", dir, "SECRET", radiusSecret).Replace(freeRADIUSConf)
	if err := os.WriteFile(filepath.Join(dir, "radiusd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(fmt.Sprintf("carol Cleartext-Password := %q\n", eapPassword)), 0o600); err != nil {
		t.Fatal(err)
	}
	fr := &freeRADIUS{log: &testenv.SyncBuffer{}, done: make(chan struct{}), detail: filepath.Join(dir, "acct", "detail")}
	fr.cmd = exec.Command("ip", "netns", "exec", ns, "freeradius", "-X", "-d", dir)
	fr.cmd.Stdout, fr.cmd.Stderr = fr.log, fr.log
	fr.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := fr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { fr.cmd.Wait(); close(fr.done) }()
	t.Cleanup(fr.stop)
	if !testenv.Eventually(10*time.Second, func() bool { return strings.Contains(fr.log.String(), "Ready to process requests") }) {
		t.Fatalf("FreeRADIUS did not start:\n%s", fr.log.String())
	}
	return fr
}

func (fr *freeRADIUS) stop() {
	select {
	case <-fr.done:
	default:
		fr.cmd.Process.Kill()
		<-fr.done
	}
}

// accounting returns the accounting records written so far.
func (fr *freeRADIUS) accounting() string {
	b, _ := os.ReadFile(fr.detail)
	return string(b)
}

const freeRADIUSConf = `prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = DIR/log
raddbdir = DIR
radacctdir = DIR/acct
name = freeradius
confdir = DIR
modconfdir = DIR
run_dir = DIR/run
db_dir = DIR
libdir = /usr/lib/freeradius
pidfile = DIR/run/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {
	destination = stdout
	colourise = no
	auth = yes
}
security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}
client gateway {
	ipaddr = 127.0.0.1
	secret = "SECRET"
	require_message_authenticator = yes
}
modules {
	mschap {
	}
	files {
		filename = DIR/users
	}
	eap {
		default_eap_type = mschapv2
		timer_expire = 60
		ignore_unknown_eap_types = no
		max_sessions = 4096
		mschapv2 {
		}
	}
	detail {
		filename = DIR/acct/detail
		permissions = 0600
		header = "%t"
	}
}
server default {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = 1812
	}
	listen {
		type = acct
		ipaddr = 127.0.0.1
		port = 1813
	}
	authorize {
		eap {
			ok = return
		}
		files
	}
	authenticate {
		eap
		Auth-Type MS-CHAP {
			mschap
		}
	}
	accounting {
		detail
	}
}
`

// TestEAPRADIUS: a Windows-like strongSwan client logs in through
// `mifsec gateway --radius` to FreeRADIUS (accounting Start and Stop
// recorded); a wrong password is refused; with FreeRADIUS down a login is
// refused with a clear log line and the client already in keeps its
// tunnel.
func TestEAPRADIUS(t *testing.T) {
	requireEAPPlugins(t)
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyRSA3072, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RequireCommand(t, "ping")
	client, gw := testenv.NewNamedNetns(t, "eapcl"), testenv.NewNamedNetns(t, "eapgw")
	testenv.Veth(t, client, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	fr := startFreeRADIUS(t, gw)
	g := startMifsecGatewayTUN(t, gw, "192.0.2.2", eapGatewayTUN, "--local-id", "gw.test",
		"--cert", pki.Gateway.CertFile, "--key", pki.Gateway.KeyFile, "--ca", pki.CA.CertFile,
		"--radius", "127.0.0.1", "--radius-secret-file", writeSecret(t, "radius-secret", radiusSecret+"\n"))
	startClient := func(ns, addr, password string) *strongswan.Charon {
		o := windowsLike(t, pki, addr)
		return strongswan.Start(t, strongswan.Config{Netns: ns, Swanctl: o.swanctl(password), Files: o.files, Charon: eapCharon(o.charon)})
	}
	initiate := func(ch *strongswan.Charon) error {
		_, err := ch.Swanctl("--initiate", "--child", "net", "--timeout", "20")
		return err
	}

	good := startClient(client, "192.0.2.1", eapPassword)
	if err := initiate(good); err != nil {
		t.Fatalf("the right password through RADIUS: %v\ncharon:\n%s\nmifsec:\n%s\nFreeRADIUS:\n%s", err, good.Log(), g.log.String(), fr.log.String())
	}
	if lost := pingLoss(t, client, "10.1.0.1", 20); lost != 0 {
		t.Fatalf("%d of 20 pings lost", lost)
	}
	if cl := gatewayClientsOn(t, eapGatewayTUN); len(cl) != 1 || cl[0].ID != "carol" {
		t.Fatalf("gateway clients %+v, want carol", cl)
	}
	if !testenv.Eventually(5*time.Second, func() bool {
		a := fr.accounting()
		return strings.Contains(a, "Acct-Status-Type = Start") && strings.Contains(a, `User-Name = "carol"`) && strings.Contains(a, "Framed-IP-Address = 10.3.0.2")
	}) {
		t.Fatalf("no accounting Start for carol at 10.3.0.2:\n%s", fr.accounting())
	}

	second := secondClientNetns(t, gw, "eapcl2")
	bad := startClient(second, "198.51.100.1", "not the password")
	if err := initiate(bad); err == nil {
		t.Fatal("a wrong password connected through RADIUS")
	}
	if !strings.Contains(bad.Log(), "AUTHENTICATION_FAILED") {
		t.Fatalf("the wrong password was not refused with AUTHENTICATION_FAILED:\ncharon:\n%s\nmifsec:\n%s", bad.Log(), g.log.String())
	}
	waitForLog(t, g, "the RADIUS server refused EAP user carol")
	bad.Stop()

	good.MustSwanctl("--terminate", "--ike", "cl")
	if !testenv.Eventually(10*time.Second, func() bool { return strings.Contains(fr.accounting(), "Acct-Status-Type = Stop") }) {
		t.Fatalf("no accounting Stop after the client left:\n%s\nmifsec:\n%s", fr.accounting(), g.log.String())
	}
	if err := initiate(good); err != nil {
		t.Fatalf("logging in again: %v\nmifsec:\n%s", err, g.log.String())
	}

	fr.stop()
	late := startClient(second, "198.51.100.1", eapPassword)
	start := time.Now()
	if err := initiate(late); err == nil {
		t.Fatal("a login succeeded with the RADIUS server down")
	}
	waitForLog(t, g, "RADIUS server 127.0.0.1:1812 did not answer")
	if !strings.Contains(late.Log(), "AUTHENTICATION_FAILED") {
		t.Fatalf("the client was not told AUTHENTICATION_FAILED:\n%s", late.Log())
	}
	if lost := pingLoss(t, client, "10.1.0.1", 20); lost != 0 {
		t.Fatalf("the client already in lost %d of 20 pings with the RADIUS server down", lost)
	}
	if strings.Contains(g.log.String(), eapPassword) || strings.Contains(g.log.String(), radiusSecret) {
		t.Fatal("the gateway logged a password or the RADIUS secret")
	}
	t.Logf("RADIUS down: the login was refused within %v", time.Since(start).Round(time.Millisecond))
	for _, line := range strings.Split(g.log.String(), "\n") {
		if strings.Contains(line, "level=WARN") {
			t.Log(line)
		}
	}
}

func TestRADIUSFlags(t *testing.T) {
	secret := writeSecret(t, "radius-secret", radiusSecret+"\n")
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--radius-secret-file", secret}, "--radius-secret-file needs --radius"},
		{[]string{"--radius", "127.0.0.1", "--radius-secret-file", secret}, "--radius needs --cert and --key"},
	} {
		if _, err := parseGatewayArgs(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
		}
	}
}
