package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/strongswan/charon"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/internal/testpki"
)

// The EAP tests use namespaces, TUN devices and control sockets of their
// own (prefix eap) so that they run beside the other gateway tests.
const (
	eapGatewayTUN = "eapgw0"
	eapClientTUN  = "eapc0"
	eapPassword   = "carol's long password"
)

// requireEAPPlugins skips a test whose strongSwan needs EAP-MSCHAPv2.
func requireEAPPlugins(t *testing.T) {
	t.Helper()
	strongswan.Require(t)
	for _, p := range []string{"eap-identity", "eap-mschapv2"} {
		if _, err := os.Stat("/usr/lib/ipsec/plugins/libstrongswan-" + p + ".so"); err != nil {
			t.Skipf("strongSwan plugin %s not found: apt-get install libcharon-extauth-plugins", p)
		}
	}
}

// eapCharon is the strongswan.conf charon lines of an EAP peer: the
// plugin list with EAP-Identity and EAP-MSCHAPv2 (the later load wins),
// and extra.
func eapCharon(extra string) string {
	return "\tload = " + charon.Plugins + " eap-identity eap-mschapv2\n" + extra
}

// eapSecret is a swanctl secrets section with the password of carol.
func eapSecret(password string) string {
	return fmt.Sprintf("secrets {\n\teap-carol {\n\t\tid = carol\n\t\tsecret = %q\n\t}\n}\n", password)
}

func writeSecret(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// eapClient is a strongSwan client of `mifsec gateway` made to look like
// one of the IKEv2 clients built into operating systems.
type eapClient struct {
	ike, esp string
	local    string // the local section's lines
	remote   string // the remote section's lines
	charon   string // strongswan.conf charon lines
	files    map[string][]byte
}

func (o eapClient) swanctl(password string) string {
	return strongSwanClient{ike: o.ike, esp: o.esp, local: o.local, remote: o.remote, secrets: eapSecret(password)}.swanctl()
}

// TestEAPStrongSwanClients: strongSwan clients configured like the
// Windows 10/11 built-in client (IDi its address, no IDr, no
// SIGNATURE_HASH_ALGORITHMS, SHA-1 and MODP-1024), like macOS/iOS, and
// one with a client certificate log in to a gateway run with its default
// proposals; each passes ping and TCP through the tunnel.
func TestEAPStrongSwanClients(t *testing.T) {
	requireEAPPlugins(t)
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyRSA3072, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	caOnly := map[string][]byte{"x509ca/ca.pem": mustRead(t, pki.CA.CertFile)}
	eapLocal := "\t\t\tauth = eap-mschapv2\n\t\t\teap_id = carol\n"
	for _, tc := range []struct {
		name   string
		client eapClient
		id     string // the identity the gateway lists
		weak   bool
		// what the client's log must show of the gateway's IKE_AUTH
		// response
		saw []string
	}{
		{"windows", eapClient{
			ike: "aes256-sha1-modp1024,aes128-sha1-modp1024,aes256-sha256-modp1024", esp: "aes256-sha1,aes128-sha1",
			local: eapLocal + "\t\t\tid = 192.0.2.1\n", remote: "\t\t\tauth = pubkey\n",
			// Windows sends no SIGNATURE_HASH_ALGORITHMS and checks
			// method 1 (RSA with SHA-1) only.
			charon: "\tsignature_authentication = no\n", files: caOnly,
		}, "carol", true, []string{
			"reassembled fragmented IKE message",                        // the response with the RSA-3072 chain
			"authentication of 'gw.test' with RSA signature successful", // method 1: RSA with SHA-1
		}},
		{"apple", eapClient{
			ike: "aes256-sha256-modp2048,aes256-sha256-ecp256", esp: "aes256-sha256",
			local: eapLocal + "\t\t\tid = carol\n", remote: "\t\t\tauth = pubkey\n\t\t\tid = gw.test\n", files: caOnly,
		}, "carol", false, nil},
		{"certificate", eapClient{
			ike: "aes256-sha256-modp2048,aes256-sha1-modp1024", esp: "aes256-sha256,aes256-sha1",
			local:  "\t\t\tauth = pubkey\n\t\t\tcerts = client.pem\n\t\t\tid = " + pki.Client.Identity.String() + "\n",
			remote: "\t\t\tauth = pubkey\n\t\t\tid = gw.test\n",
			files:  swanctlFiles(t, pki.CA.CertFile, "client", pki.Client.CertFile, pki.Client.KeyFile),
		}, pki.Client.Identity.String(), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, gw, g := eapGatewayTopology(t, pki)
			ch := strongswan.Start(t, strongswan.Config{Netns: client, Swanctl: tc.client.swanctl(eapPassword),
				Files: tc.client.files, Charon: eapCharon(tc.client.charon)})
			if out, err := ch.Swanctl("--initiate", "--child", "net", "--timeout", "20"); err != nil {
				t.Fatalf("swanctl --initiate: %v\n%s\ncharon:\n%s\nmifsec:\n%s", err, out, ch.Log(), g.log.String())
			}
			if lost := pingLoss(t, client, "10.1.0.1", 50); lost != 0 {
				t.Fatalf("%d of 50 pings lost\ncharon:\n%s\nmifsec:\n%s", lost, ch.Log(), g.log.String())
			}
			tcpTransfer(t, client, gw, "10.1.0.1", 4<<20)
			cl := gatewayClientsOn(t, eapGatewayTUN)
			if len(cl) != 1 || cl[0].ID != tc.id || (len(cl[0].Weak) > 0) != tc.weak {
				t.Fatalf("gateway clients %+v, want %s (weak algorithms: %v)", cl, tc.id, tc.weak)
			}
			if strings.Contains(g.log.String(), eapPassword) {
				t.Fatal("the gateway logged the password")
			}
			for _, want := range tc.saw {
				if !strings.Contains(ch.Log(), want) {
					t.Fatalf("the client's log lacks %q:\n%s", want, ch.Log())
				}
			}
			t.Logf("%s: client %s, IKE %s, ESP %s, weak %v", tc.name, cl[0].ID, cl[0].IKESuite, cl[0].Algorithm, cl[0].Weak)
		})
	}
}

// TestEAPStrongSwanWrongPassword: a Windows-like client with a wrong
// password is refused with AUTHENTICATION_FAILED, and the gateway serves
// the right password from another client right after.
func TestEAPStrongSwanWrongPassword(t *testing.T) {
	requireEAPPlugins(t)
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyRSA3072, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	client, gw, g := eapGatewayTopology(t, pki)
	windows := windowsLike(t, pki, "192.0.2.1")
	bad := strongswan.Start(t, strongswan.Config{Netns: client, Swanctl: windows.swanctl("not the password"),
		Files: windows.files, Charon: eapCharon(windows.charon)})
	if out, err := bad.Swanctl("--initiate", "--child", "net", "--timeout", "20"); err == nil {
		t.Fatalf("a wrong password connected:\n%s", out)
	}
	if !strings.Contains(bad.Log(), "AUTHENTICATION_FAILED") {
		t.Fatalf("the client was not told AUTHENTICATION_FAILED:\n%s", bad.Log())
	}
	waitForLog(t, g, "wrong password for EAP user carol")

	second := secondClientNetns(t, gw, "eapcl2")
	windows = windowsLike(t, pki, "198.51.100.1")
	good := strongswan.Start(t, strongswan.Config{Netns: second, Swanctl: windows.swanctl(eapPassword),
		Files: windows.files, Charon: eapCharon(windows.charon)})
	start := time.Now()
	if out, err := good.Swanctl("--initiate", "--child", "net", "--timeout", "20"); err != nil {
		t.Fatalf("the right password after a wrong one: %v\n%s\ncharon:\n%s\nmifsec:\n%s", err, out, good.Log(), g.log.String())
	}
	if lost := pingLoss(t, second, "10.1.0.1", 20); lost != 0 {
		t.Fatalf("%d of 20 pings lost", lost)
	}
	if cl := gatewayClientsOn(t, eapGatewayTUN); len(cl) != 1 || cl[0].ID != "carol" {
		t.Fatalf("gateway clients %+v, want carol alone", cl)
	}
	t.Logf("the right password connected %v after the wrong one was refused", time.Since(start).Round(time.Millisecond))
}

// windowsLike is a strongSwan client set up as the IKEv2 client of Windows
// with carol's login: IDi its address addr, no IDr, no
// SIGNATURE_HASH_ALGORITHMS, AES-CBC with SHA-1 over MODP-1024.
func windowsLike(t *testing.T, pki *testpki.PKI, addr string) eapClient {
	return eapClient{ike: "aes256-sha1-modp1024", esp: "aes256-sha1",
		local: "\t\t\tauth = eap-mschapv2\n\t\t\teap_id = carol\n\t\t\tid = " + addr + "\n", remote: "\t\t\tauth = pubkey\n",
		charon: "\tsignature_authentication = no\n", files: map[string][]byte{"x509ca/ca.pem": mustRead(t, pki.CA.CertFile)}}
}

// eapGatewayTopology is a client and a gateway namespace; the gateway runs
// `mifsec gateway` with pki's gateway certificate, carol as EAP user and
// its default proposals.
func eapGatewayTopology(t *testing.T, pki *testpki.PKI) (client, gw string, g *mifsecProcess) {
	t.Helper()
	testenv.RequireCommand(t, "ping")
	client, gw = testenv.NewNamedNetns(t, "eapcl"), testenv.NewNamedNetns(t, "eapgw")
	testenv.Veth(t, client, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	users := writeSecret(t, "eap-users", "# EAP users\ncarol "+eapPassword+"\ndave another password\n")
	return client, gw, startMifsecGatewayTUN(t, gw, "192.0.2.2", eapGatewayTUN, "--local-id", "gw.test",
		"--cert", pki.Gateway.CertFile, "--key", pki.Gateway.KeyFile, "--ca", pki.CA.CertFile, "--eap-users", users)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEAPConnectToStrongSwan: `mifsec connect --eap-identity` logs in to a
// strongSwan gateway with remote { auth = eap-mschapv2 }, with AES-GCM
// and with AES-CBC suites; a wrong password is refused.
func TestEAPConnectToStrongSwan(t *testing.T) {
	requireEAPPlugins(t)
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyECDSAP256, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ike, esp, password string
	}{
		{"gcm", "aes256gcm16-prfsha256-x25519", "aes256gcm16", eapPassword},
		{"cbc", "aes256-sha256-modp2048", "aes256-sha256", eapPassword},
		{"wrong password", "aes256gcm16-prfsha256-x25519", "aes256gcm16", "a guess"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.RequireCommand(t, "ping")
			client, gw := testenv.NewNamedNetns(t, "eapcl"), testenv.NewNamedNetns(t, "eapgw")
			testenv.Veth(t, client, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
			testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
			ch := strongswan.Start(t, strongswan.Config{Netns: gw, Swanctl: eapGatewaySwanctl(tc.ike, tc.esp),
				Files: swanctlFiles(t, pki.CA.CertFile, "gateway", pki.Gateway.CertFile, pki.Gateway.KeyFile), Charon: eapCharon("")})
			c := startConnect(t, client, eapClientTUN, "--gateway", "192.0.2.2", "--remote-id", "gw.test",
				"--eap-identity", "carol", "--password-file", writeSecret(t, "password", tc.password+"\n"),
				"--ca", pki.CA.CertFile, "--ike", tc.ike, "--esp", tc.esp, "--ipv6=false")
			if tc.password != eapPassword {
				// The first attempt failing, mifsec connect exits with the
				// reason.
				if out := c.refused(t, 20*time.Second); !strings.Contains(out, "refused the EAP login") {
					t.Fatalf("want a failure saying the login was refused:\n%s\ncharon:\n%s", out, ch.Log())
				}
				if strings.Contains(c.log.String(), tc.password) {
					t.Fatal("mifsec connect logged the password")
				}
				t.Logf("refused: %s", c.log.String()[strings.LastIndex(c.log.String(), "mifsec:"):])
				return
			}
			st := c.waitEstablished(t, 20*time.Second)
			if lost := pingLoss(t, client, "10.1.0.1", 30); lost != 0 {
				t.Fatalf("%d of 30 pings lost\n%s\ncharon:\n%s", lost, c.log.String(), ch.Log())
			}
			if strings.Contains(c.log.String(), tc.password) {
				t.Fatal("mifsec connect logged the password")
			}
			t.Logf("%s: IKE %s, ESP %s, addresses %v", tc.name, st.Session.IKESuite, st.Session.Child.Algorithm, st.Session.Addresses)
		})
	}
}

// refused waits up to within for a `mifsec connect` whose first attempt
// the gateway refuses to exit with a failure, and returns its output.
func (p *connectProcess) refused(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("mifsec connect still runs %v after it was refused:\n%s", within, p.log.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatalf("mifsec connect exited with status 0 after it was refused:\n%s", p.log.String())
	}
	return p.log.String()
}

// eapGatewaySwanctl is a strongSwan gateway that proves itself with its
// certificate and logs clients in by EAP-MSCHAPv2 (carol).
func eapGatewaySwanctl(ike, esp string) string {
	return fmt.Sprintf(`connections {
	gw {
		version = 2
		local_addrs = 192.0.2.2
		pools = pool4
		proposals = %s
		local {
			auth = pubkey
			certs = gateway.pem
			id = gw.test
		}
		remote {
			auth = eap-mschapv2
			eap_id = %%any
		}
		children {
			net {
				local_ts = 10.1.0.0/24
				esp_proposals = %s
			}
		}
	}
}
pools {
	pool4 {
		addrs = 10.3.0.0/24
		dns = 10.1.0.53
	}
}
%s`, ike, esp, eapSecret(eapPassword))
}

// TestEAPConnectToMifsecGateway: `mifsec connect --eap-identity` logs in to
// `mifsec gateway --eap-users`; after the operator changes the password
// and sends SIGHUP, the old password is refused and the new one works.
func TestEAPConnectToMifsecGateway(t *testing.T) {
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyECDSAP256, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	client, _, g := eapGatewayTopology(t, pki)
	connect := func(password string) *connectProcess {
		t.Helper()
		return startConnect(t, client, eapClientTUN, "--gateway", "192.0.2.2", "--remote-id", "gw.test",
			"--eap-identity", "carol", "--password-file", writeSecret(t, "password", password+"\n"), "--ca", pki.CA.CertFile, "--ipv6=false")
	}
	c := connect(eapPassword)
	st := c.waitEstablished(t, 15*time.Second)
	if lost := pingLoss(t, client, "10.1.0.1", 20); lost != 0 {
		t.Fatalf("%d of 20 pings lost", lost)
	}
	if cl := gatewayClientsOn(t, eapGatewayTUN); len(cl) != 1 || cl[0].ID != "carol" {
		t.Fatalf("gateway clients %+v, want carol", cl)
	}
	t.Logf("connected: IKE %s, ESP %s, addresses %v", st.Session.IKESuite, st.Session.Child.Algorithm, st.Session.Addresses)
	c.stop(t)

	const newPassword = "carol's new password"
	users := g.cmd.Args[slices.Index(g.cmd.Args, "--eap-users")+1]
	if err := os.WriteFile(users, []byte("carol "+newPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(5*time.Second, func() bool { return strings.Contains(g.log.String(), "EAP users reloaded") }) {
		t.Fatalf("no reload in the gateway's log:\n%s", g.log.String())
	}
	if out := connect(eapPassword).refused(t, 20*time.Second); !strings.Contains(out, "the gateway rejected our credentials") ||
		!strings.Contains(g.log.String(), "wrong password for EAP user carol") {
		t.Fatalf("the old password was not refused as a wrong one:\n%s\ngateway:\n%s", out, g.log.String())
	}
	connect(newPassword).waitEstablished(t, 15*time.Second)
	if log := g.log.String(); strings.Contains(log, eapPassword) || strings.Contains(log, newPassword) {
		t.Fatal("the gateway logged a password")
	}
}

func TestEAPConnectFlags(t *testing.T) {
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	password := writeSecret(t, "password", "a password\n")
	open := filepath.Join(t.TempDir(), "open")
	if err := os.WriteFile(open, []byte("a password\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	psk := writePSK(t, t.TempDir(), "a secret of enough length")
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"EAP without --local-id", []string{"--remote-id", "gw.test", "--eap-identity", "carol", "--password-file", password, "--ca", pki.CA.CertFile}, ""},
		{"EAP with --local-id", []string{"--local-id", "carol@example.org", "--remote-id", "gw.test", "--eap-identity", `CORP\carol`, "--password-file", password, "--ca", pki.CA.CertFile}, ""},
		{"no --ca", []string{"--eap-identity", "carol", "--password-file", password}, "--eap-identity needs --ca"},
		{"no --password-file", []string{"--eap-identity", "carol", "--ca", pki.CA.CertFile, "--remote-id", "gw.test"}, "--eap-identity needs --password-file"},
		{"--password-file alone", []string{"--local-id", "c.example", "--psk-file", psk, "--password-file", password}, "--password-file needs --eap-identity"},
		{"EAP and a PSK", []string{"--eap-identity", "carol", "--password-file", password, "--psk-file", psk, "--ca", pki.CA.CertFile}, "excludes --psk-file"},
		{"password file open to others", []string{"--remote-id", "gw.test", "--eap-identity", "carol", "--password-file", open, "--ca", pki.CA.CertFile}, "mode 0644"},
		{"neither --local-id nor EAP", []string{"--psk-file", psk}, "--local-id is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConnectFlags(t, append([]string{"--gateway", "192.0.2.2"}, tc.args...)...)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Session.EAP == nil || cfg.Session.PSK != nil || cfg.Session.CAs == nil {
					t.Fatalf("session config %+v: want EAP credentials and CAs, no PSK", cfg.Session)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "a password") {
				t.Fatalf("the error %q shows the password", err)
			}
		})
	}
}

func TestReadEAPUsers(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		mode       os.FileMode
		users      int
		err        string
	}{
		{"users", "# comment\n\ncarol  pass word with spaces \nCORP\\dave\ts3cr3tpw\n", 0o600, 2, ""},
		{"open to the group", "carol s3cr3tpw\n", 0o640, 0, "mode 0640"},
		{"no password", "carol\n", 0o600, 0, ":1: want an identity and its password"},
		{"twice", "carol s3cr3tpw\ncarol 0therpw\n", 0o600, 0, ":2: a second password for carol"},
		{"nobody", "# nobody\n", 0o600, 0, "names no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			if err := os.WriteFile(path, []byte(tc.text), tc.mode); err != nil {
				t.Fatal(err)
			}
			users, err := readEAPUsers(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "s3cr3tpw") || strings.Contains(err.Error(), "0therpw") {
					t.Fatalf("the error %q shows a password", err)
				}
				return
			}
			if err != nil || users.Len() != tc.users {
				t.Fatalf("%v users, %v; want %d", users, err, tc.users)
			}
		})
	}
}

// TestEAPStrongSwanUntrustedGateway: a client that cannot verify the
// gateway's certificate gives up with an INFORMATIONAL N(AUTHENTICATION_
// FAILED) in the half-open IKE SA, which the gateway takes (answers and
// drops the IKE SA), and sends no EAP.
func TestEAPStrongSwanUntrustedGateway(t *testing.T) {
	requireEAPPlugins(t)
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyRSA3072, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyECDSAP256, GatewayName: "gw.test"})
	if err != nil {
		t.Fatal(err)
	}
	client, _, g := eapGatewayTopology(t, pki)
	o := windowsLike(t, other, "192.0.2.1") // trusts another CA
	ch := strongswan.Start(t, strongswan.Config{Netns: client, Swanctl: o.swanctl(eapPassword), Files: o.files, Charon: eapCharon(o.charon)})
	if out, err := ch.Swanctl("--initiate", "--child", "net", "--timeout", "20"); err == nil {
		t.Fatalf("connected to a gateway it cannot verify:\n%s", out)
	}
	// strongSwan does not wait for the answer; the gateway's log shows it
	// took the request (TestResponderEAP checks the answer and that the
	// IKE SA goes).
	if !strings.Contains(ch.Log(), "INFORMATIONAL request 2 [ N(AUTH_FAILED) ]") ||
		!testenv.Eventually(5*time.Second, func() bool {
			return strings.Contains(g.log.String(), "client gave up its EAP login") && strings.Contains(g.log.String(), "authentication_failed=true")
		}) {
		t.Fatalf("the client's N(AUTHENTICATION_FAILED) was not taken:\n%s\nmifsec:\n%s", ch.Log(), g.log.String())
	}
	if strings.Contains(ch.Log(), "EAP/RES") {
		t.Fatalf("the client sent EAP to a gateway it could not verify:\n%s", ch.Log())
	}
}
