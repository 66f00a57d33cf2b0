package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/internal/testpki"
	"github.com/mifsec/mifsec/mif"
	"github.com/urfave/cli/v2"
)

// gatewayTopology is a client namespace and a gateway namespace joined by a
// veth pair; the gateway runs strongSwan and protects 10.1.0.0/24 (an
// address on its lo) and hands out addresses from 10.3.0.0/24.
type gatewayTopology struct {
	client, gw string
	charon     *strongswan.Charon
	dir        string
}

type gatewayOptions struct {
	proposals, espProposals string
	auth                    string // "psk" or "pubkey"
	pki                     *testpki.PKI
	childRekey, ikeRekey    string // strongSwan durations, "" for its defaults
	psk                     string
	ipv6Inner               bool   // also protect fd01::/64 and hand out fd03::/64 addresses
	ipv6Outer               bool   // the client reaches the gateway at fd02::2 only
	charon                  string // extra strongswan.conf lines for charon
}

// gatewayAddr is where the client reaches the gateway.
func (o gatewayOptions) gatewayAddr() string {
	if o.ipv6Outer {
		return "fd02::2"
	}
	return "192.0.2.2"
}

func newGatewayTopology(t *testing.T, o gatewayOptions) *gatewayTopology {
	strongswan.Require(t)
	testenv.RequireCommand(t, "ping")
	top := &gatewayTopology{client: testenv.NewNamedNetns(t, "cl"), gw: testenv.NewNamedNetns(t, "gw"), dir: t.TempDir()}
	ifC, ifG := testenv.Veth(t, top.client, top.gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, top.gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	if o.ipv6Outer {
		testenv.Exec(t, top.client, "ip", "addr", "del", "192.0.2.1/24", "dev", ifC)
		testenv.Exec(t, top.gw, "ip", "addr", "del", "192.0.2.2/24", "dev", ifG)
		testenv.Exec(t, top.client, "ip", "addr", "add", "fd02::1/64", "dev", ifC, "nodad")
		testenv.Exec(t, top.gw, "ip", "addr", "add", "fd02::2/64", "dev", ifG, "nodad")
	}
	if o.ipv6Inner {
		testenv.Exec(t, top.gw, "ip", "addr", "add", "fd01::1/64", "dev", "lo")
	}
	top.charon = strongswan.Start(t, strongswan.Config{Netns: top.gw, Swanctl: gatewaySwanctl(o), Files: gatewayFiles(t, o), Charon: o.charon})
	return top
}

func gatewaySwanctl(o gatewayOptions) string {
	rekey := ""
	if o.ikeRekey != "" {
		rekey = "\t\trekey_time = " + o.ikeRekey + "\n"
	}
	childRekey := ""
	if o.childRekey != "" {
		childRekey = "\t\t\t\trekey_time = " + o.childRekey + "\n"
	}
	local, remote := "\t\t\tauth = psk\n\t\t\tid = gw.example\n", "\t\t\tauth = psk\n\t\t\tid = client.example\n"
	secrets := fmt.Sprintf("secrets {\n\tike-1 {\n\t\tid-gw = gw.example\n\t\tid-cl = client.example\n\t\tsecret = %q\n\t}\n}\n", o.psk)
	if o.auth == "pubkey" {
		local = "\t\t\tauth = pubkey\n\t\t\tcerts = gateway.pem\n\t\t\tid = " + o.pki.Gateway.Identity.String() + "\n"
		remote = "\t\t\tauth = pubkey\n\t\t\tid = " + o.pki.Client.Identity.String() + "\n"
		secrets = ""
	}
	pools, localTS, pool6 := "pool4", "10.1.0.0/24", ""
	if o.ipv6Inner {
		pools, localTS = "pool4,pool6", "10.1.0.0/24,fd01::/64"
		pool6 = "\tpool6 {\n\t\taddrs = fd03::/120\n\t}\n"
	}
	return fmt.Sprintf(`connections {
	gw {
		version = 2
		local_addrs = %s
		pools = %s
		proposals = %s
%s		local {
%s		}
		remote {
%s		}
		children {
			net {
				local_ts = %s
				esp_proposals = %s
%s			}
		}
	}
}
pools {
	pool4 {
		addrs = 10.3.0.0/24
		dns = 10.1.0.53
	}
%s}
%s`, o.gatewayAddr(), pools, o.proposals, rekey, local, remote, localTS, o.espProposals, childRekey, pool6, secrets)
}

func gatewayFiles(t *testing.T, o gatewayOptions) map[string][]byte {
	if o.auth != "pubkey" {
		return nil
	}
	return swanctlFiles(t, o.pki.CA.CertFile, "gateway", o.pki.Gateway.CertFile, o.pki.Gateway.KeyFile)
}

// swanctlFiles reads a CA certificate and one end's certificate and key
// into swanctl's layout (x509ca/, x509/NAME.pem, private/NAME.key).
func swanctlFiles(t *testing.T, caFile, name, certFile, keyFile string) map[string][]byte {
	t.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return map[string][]byte{
		"x509ca/ca.pem":            read(caFile),
		"x509/" + name + ".pem":    read(certFile),
		"private/" + name + ".key": read(keyFile),
	}
}

// connectProcess is a running `mifsec connect`.
type connectProcess struct {
	*mifsecProcess
	tun string
}

func startConnect(t *testing.T, ns, tunName string, args ...string) *connectProcess {
	t.Helper()
	// --dns off: the namespaces share the host's /etc/resolv.conf; a test
	// of DNS gives its own --dns (the last one wins).
	p := startMifsec(t, ns, append([]string{"--log-level", "debug", "connect", "--tun", tunName, "--dns", "off"}, args...)...)
	return &connectProcess{mifsecProcess: p, tun: tunName}
}

func (p *connectProcess) status(t *testing.T) (mif.Status, error) {
	raw, err := mif.ReadStatus(mif.ControlSocket(p.tun))
	if err != nil {
		return mif.Status{}, err
	}
	var st mif.Status
	err = json.Unmarshal(raw, &st)
	return st, err
}

// waitEstablished waits until the session is established.
func (p *connectProcess) waitEstablished(t *testing.T, within time.Duration) mif.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := p.status(t)
		if err == nil && st.Session.State == "established" {
			return st
		}
		select {
		case <-p.done:
			t.Fatalf("mifsec connect exited:\n%s", p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not established within %v (status %+v, %v):\n%s", within, st.Session, err, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writePSK(t *testing.T, dir, psk string) string {
	path := filepath.Join(dir, "psk")
	if err := os.WriteFile(path, []byte(psk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConnectToStrongSwan(t *testing.T) {
	for i, tc := range []struct{ name, ike, esp string }{
		{"aes256gcm16-x25519", "aes256gcm16-prfsha256-x25519", "aes256gcm16"},
		{"chacha20poly1305-ecp256", "chacha20poly1305-prfsha256-ecp256", "chacha20poly1305"},
		{"aes256-sha256-modp2048", "aes256-sha256-modp2048", "aes256-sha256"},
		{"aes128-sha512-ecp384", "aes128-sha512-ecp384", "aes128-sha512"},
		{"aes256-sha1-modp1024", "aes256-sha1-modp1024", "aes256-sha1"},
	} {
		t.Run("psk/"+tc.name, func(t *testing.T) {
			const psk = "a secret only the two share"
			top := newGatewayTopology(t, gatewayOptions{proposals: tc.ike, espProposals: tc.esp, auth: "psk", psk: psk})
			// A TUN (and control socket) name of its own per case.
			c := startConnect(t, top.client, fmt.Sprintf("mss%d", i), "--gateway", "192.0.2.2", "--local-id", "client.example",
				"--remote-id", "gw.example", "--psk-file", writePSK(t, top.dir, psk), "--ike", tc.ike, "--esp", tc.esp, "--ipv6=false")
			st := c.waitEstablished(t, 10*time.Second)
			if len(st.Session.Addresses) != 1 || !strings.HasPrefix(st.Session.Addresses[0], "10.3.0.") {
				t.Fatalf("assigned addresses %v, want one from 10.3.0.0/24", st.Session.Addresses)
			}
			if err := ping(top.client, "10.1.0.1", 3); err != nil {
				t.Fatalf("%v\nmifsec:\n%s\ncharon:\n%s", err, c.log.String(), top.charon.Log())
			}
			if st.Session.Child == nil || st.Session.Child.Algorithm != tc.esp {
				t.Fatalf("Child SA %+v, want ESP %s", st.Session.Child, tc.esp)
			}
			if weak := len(st.Session.Weak) > 0; weak != strings.Contains(tc.ike, "sha1") {
				t.Fatalf("weak algorithms %v for IKE %s", st.Session.Weak, tc.ike)
			}
			if lost := pingLoss(t, top.client, "10.1.0.1", 20); lost != 0 {
				t.Fatalf("%d of 20 pings lost\nmifsec:\n%s\ncharon:\n%s", lost, c.log.String(), top.charon.Log())
			}
		})
	}
}

func TestConnectWithCertificates(t *testing.T) {
	strongswan.Require(t)
	for _, tc := range []struct {
		name, ike, esp string
		key            testpki.KeyType
	}{
		{"p256/aes256gcm16-x25519", "aes256gcm16-prfsha256-x25519", "aes256gcm16", testpki.KeyECDSAP256},
		{"p256/chacha20poly1305-ecp256", "chacha20poly1305-prfsha256-ecp256", "chacha20poly1305", testpki.KeyECDSAP256},
		{"p384/aes128gcm16-ecp384", "aes128gcm16-prfsha384-ecp384", "aes128gcm16", testpki.KeyECDSAP384},
		// RSA-3072 certificates make IKE_AUTH larger than one datagram:
		// both sides fragment (RFC 7383).
		{"rsa3072/aes256gcm16-x25519", "aes256gcm16-prfsha256-x25519", "aes256gcm16", testpki.KeyRSA3072},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			top := newGatewayTopology(t, gatewayOptions{proposals: tc.ike, espProposals: tc.esp, auth: "pubkey", pki: pki})
			c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", pki.Client.Identity.String(),
				"--remote-id", pki.Gateway.Identity.String(), "--cert", pki.Client.CertFile, "--key", pki.Client.KeyFile,
				"--ca", pki.CA.CertFile, "--ike", tc.ike, "--esp", tc.esp, "--ipv6=false")
			c.waitEstablished(t, 10*time.Second)
			if err := ping(top.client, "10.1.0.1", 3); err != nil {
				t.Fatalf("%v\nmifsec:\n%s\ncharon:\n%s", err, c.log.String(), top.charon.Log())
			}
			if tc.key == testpki.KeyRSA3072 {
				log := top.charon.Log()
				if !strings.Contains(log, "received fragment #") || !strings.Contains(log, "generating IKE_AUTH response 1 [ EF(") {
					t.Fatalf("IKE_AUTH was not fragmented both ways:\n%s", log)
				}
			}
		})
	}
}

// TestConnectWithCookie runs against a gateway that demands a cookie
// (RFC 7296 §2.6) from an address with a half-open IKE SA: a bare
// IKE_SA_INIT from the client's address leaves one behind first.
func TestConnectWithCookie(t *testing.T) {
	const psk = "cookie test secret"
	top := newGatewayTopology(t, gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16",
		auth: "psk", psk: psk, charon: "\tcookie_threshold_ip = 1\n"})
	specs, err := ike.ParseIKEProposals("aes256gcm16-prfsha256-x25519")
	if err != nil {
		t.Fatal(err)
	}
	proposals, err := ike.BuildProposals(specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	kex, err := ike.NewKeyExchange(wire.DH_CURVE25519)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := ike.RandomNonce(32)
	halfOpen := &wire.Message{SPIi: ike.RandomSPI(), Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: []wire.Payload{
		&wire.SA{Proposals: proposals}, &wire.KE{Group: wire.DH_CURVE25519, Data: kex.Public()}, &wire.Nonce{Data: nonce}}}
	req, err := halfOpen.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	testenv.InNamedNetns(t, top.client, func() {
		conn, err := net.Dial("udp", "192.0.2.2:500")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(req)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 2048)); err != nil {
			t.Fatalf("no answer to the half-open IKE_SA_INIT: %v", err)
		}
	})
	c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--psk-file", writePSK(t, top.dir, psk), "--ipv6=false")
	c.waitEstablished(t, 10*time.Second)
	if !strings.Contains(top.charon.Log(), "N(COOKIE)") {
		t.Fatalf("the gateway never asked for a cookie:\n%s", top.charon.Log())
	}
	if err := ping(top.client, "10.1.0.1", 2); err != nil {
		t.Fatal(err)
	}
}

// TestConnectIPv6 asks for IPv4 and IPv6 inner addresses, once over an
// IPv4 and once over an IPv6-only outer path.
func TestConnectIPv6(t *testing.T) {
	for _, outer6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("outer-ipv6=%v", outer6), func(t *testing.T) {
			const psk = "an IPv6 test secret"
			o := gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16", auth: "psk", psk: psk, ipv6Inner: true, ipv6Outer: outer6}
			top := newGatewayTopology(t, o)
			c := startConnect(t, top.client, "mcl0", "--gateway", o.gatewayAddr(), "--local-id", "client.example",
				"--psk-file", writePSK(t, top.dir, psk))
			st := c.waitEstablished(t, 10*time.Second)
			var v4, v6 bool
			for _, a := range st.Session.Addresses {
				v4 = v4 || strings.HasPrefix(a, "10.3.0.")
				v6 = v6 || strings.HasPrefix(a, "fd03::")
			}
			if !v4 || !v6 {
				t.Fatalf("assigned %v, want an address from each pool", st.Session.Addresses)
			}
			for _, dst := range []string{"10.1.0.1", "fd01::1"} {
				if err := ping(top.client, dst, 3); err != nil {
					t.Fatalf("%v\nmifsec:\n%s\ncharon:\n%s", err, c.log.String(), top.charon.Log())
				}
			}
		})
	}
}

// TestConnectInvalidKERetry offers x25519 first to a gateway that only
// takes ECP-256: the gateway answers INVALID_KE_PAYLOAD and the client
// retries with the group it asks for.
func TestConnectInvalidKERetry(t *testing.T) {
	const psk = "key exchange secret"
	top := newGatewayTopology(t, gatewayOptions{proposals: "aes256gcm16-prfsha256-ecp256", espProposals: "aes256gcm16", auth: "psk", psk: psk})
	c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--psk-file", writePSK(t, top.dir, psk), "--ike", "aes256gcm16-prfsha256-x25519-ecp256", "--ipv6=false")
	st := c.waitEstablished(t, 10*time.Second)
	if !strings.Contains(st.Session.IKESuite, "ecp256") {
		t.Fatalf("IKE suite %q, want ECP-256 after the retry", st.Session.IKESuite)
	}
	if !strings.Contains(top.charon.Log(), "N(INVAL_KE)") {
		t.Fatalf("the gateway never asked for another group:\n%s", top.charon.Log()[:min(3000, len(top.charon.Log()))])
	}
	if err := ping(top.client, "10.1.0.1", 2); err != nil {
		t.Fatal(err)
	}
}

func TestConnectWrongPSKFails(t *testing.T) {
	top := newGatewayTopology(t, gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16", auth: "psk", psk: "the right secret key"})
	c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--psk-file", writePSK(t, top.dir, "the wrong secret key"), "--ipv6=false")
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("mifsec connect still running with a wrong PSK:\n%s", c.log.String())
	}
	t.Log(c.log.String())
	if c.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("exit status 0 with a wrong PSK")
	}
	if !strings.Contains(c.log.String(), "authentication failed") {
		t.Fatalf("no \"authentication failed\" in the output:\n%s", c.log.String())
	}
	if strings.Contains(c.log.String(), "wrong") {
		t.Fatal("the pre-shared key appears in the output")
	}
}

func TestConnectNoCommonProposal(t *testing.T) {
	top := newGatewayTopology(t, gatewayOptions{proposals: "aes128gcm16-prfsha384-ecp384", espProposals: "aes128gcm16", auth: "psk", psk: "a proposal test secret"})
	c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--psk-file", writePSK(t, top.dir, "a proposal test secret"), "--ike", "chacha20poly1305-prfsha256-x25519", "--ipv6=false",
		// An unprotected error answer does not end the wait for a valid
		// one (RFC 7296 §2.21.1): the client gives up when its
		// retransmissions are spent, 1+1.8+3.2 s here.
		"--retransmit-tries", "3")
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("still running:\n%s", c.log.String())
	}
	out := c.log.String()
	t.Log(out)
	if c.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(out, "no proposal chosen") || !strings.Contains(out, "chacha20poly1305") {
		t.Fatalf("want a non-zero exit naming the refused proposal:\n%s", out)
	}
}

// pingLoss pings addr from ns count times at 10/s and returns how many
// answers were lost.
func pingLoss(t *testing.T, ns, addr string, count int) int {
	// -w lets ping wait for late replies after the last request (without
	// it, a reply later than twice the largest RTT seen counts as lost);
	// with it, ping sends more requests while replies are missing. -D -O
	// print when each request went unanswered, so that a loss can be
	// placed in the peers' logs.
	out, _ := exec.Command("ip", "netns", "exec", ns, "ping", "-D", "-O", "-c", fmt.Sprint(count), "-i", "0.1", "-W", "1",
		"-w", fmt.Sprint(count/10+10), addr).CombinedOutput()
	var sent, received int
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.Contains(line, "packets transmitted"):
			fmt.Sscanf(line, "%d packets transmitted, %d received", &sent, &received)
		case strings.Contains(line, "no answer yet"):
			t.Logf("ping %s: %s (unix time)", addr, line)
		}
	}
	if sent < count {
		t.Fatalf("ping did not run as expected:\n%s", out)
	}
	return sent - received
}

// TestRekeyWithoutLoss rekeys the Child SA every 10 s and the IKE SA every
// 20 s, started by strongSwan or by mifsec, while a ping runs at 10/s for
// 60 s: no packet may be lost and the IKE SA's identity may change only by
// rekeying, never by reconnecting.
func TestRekeyWithoutLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute per case")
	}
	for _, by := range []string{"strongswan", "mifsec"} {
		t.Run("by "+by, func(t *testing.T) {
			const psk = "a rekey test secret"
			o := gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16-x25519", auth: "psk", psk: psk}
			// The client offers ESN first, as its defaults do; strongSwan
			// with kernel-libipsec takes the 32-bit transform, in IKE_AUTH
			// and in every rekey.
			args := []string{"--gateway", "192.0.2.2", "--local-id", "client.example", "--remote-id", "gw.example",
				"--psk-file", "", "--ike", o.proposals, "--esp", o.espProposals + "-esn-noesn", "--ipv6=false"}
			if by == "strongswan" {
				o.childRekey, o.ikeRekey = "10s", "20s"
			} else {
				args = append(args, "--child-rekey", "10s", "--ike-rekey", "20s")
			}
			top := newGatewayTopology(t, o)
			args[7] = writePSK(t, top.dir, psk)
			c := startConnect(t, top.client, "mcl0", args...)
			c.waitEstablished(t, 10*time.Second)
			lost := pingLoss(t, top.client, "10.1.0.1", 600)
			st, err := c.status(t)
			if err != nil {
				t.Fatal(err)
			}
			if lost != 0 {
				t.Errorf("%d of 600 pings lost during rekeying\nmifsec:\n%s", lost, c.log.String())
			}
			if st.Session.ChildRekeys < 4 || st.Session.IKERekeys < 2 {
				t.Errorf("%d Child SA and %d IKE SA rekeys in 60 s, want at least 4 and 2", st.Session.ChildRekeys, st.Session.IKERekeys)
			}
			if st.Session.Reconnects != 0 {
				t.Errorf("reconnected %d times", st.Session.Reconnects)
			}
			t.Logf("child rekeys %d, IKE rekeys %d, lost %d", st.Session.ChildRekeys, st.Session.IKERekeys, lost)
		})
	}
}

// TestGatewayRestart kills strongSwan and starts it again: the client
// notices (DPD 2 s, three tries from 500 ms), reconnects and traffic flows
// again, within 10 s of charon being back on an idle host.
func TestGatewayRestart(t *testing.T) {
	const psk = "a restart test secret"
	o := gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16", auth: "psk", psk: psk}
	top := newGatewayTopology(t, o)
	c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--psk-file", writePSK(t, top.dir, psk), "--ipv6=false", "--dpd", "2s", "--retransmit", "500ms", "--retransmit-tries", "3")
	c.waitEstablished(t, 10*time.Second)
	top.charon.Kill()
	top.charon = strongswan.Start(t, strongswan.Config{Netns: top.gw, Swanctl: gatewaySwanctl(o)})
	restarted := time.Now() // charon's own start-up on a loaded host is not the client's doing
	for {
		if ping(top.client, "10.1.0.1", 1) == nil {
			break
		}
		if time.Since(restarted) > 30*time.Second {
			t.Fatalf("no traffic 30 s after the gateway restarted\nmifsec:\n%s", c.log.String())
		}
	}
	took := time.Since(restarted)
	st, _ := c.status(t)
	t.Logf("traffic again %v after the restart, reconnects %d", took.Round(100*time.Millisecond), st.Session.Reconnects)
	// 10 s is the goal; 15 s leave room for a loaded test host.
	if took > 15*time.Second {
		t.Errorf("took %v to recover, want within 10 s", took)
	}
	if st.Session.Reconnects < 1 {
		t.Errorf("no reconnect recorded")
	}
}

// TestConnectThroughput measures one TCP flow from a mifsec client to a
// host behind a strongSwan gateway. strongSwan's userspace ESP is the
// limit; the figure is logged.
func TestConnectThroughput(t *testing.T) {
	testenv.RequireCommand(t, "iperf3")
	const psk = "a throughput test secret"
	top := newGatewayTopology(t, gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16", auth: "psk", psk: psk})
	c := startConnect(t, top.client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--psk-file", writePSK(t, top.dir, psk), "--ipv6=false")
	c.waitEstablished(t, 10*time.Second)
	testenv.StartIperf3Server(t, top.gw, "10.1.0.1", true)
	out, err := exec.Command("ip", "netns", "exec", top.client, "iperf3", "-c", "10.1.0.1", "-t", "5", "-J").Output()
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	mbps := r.End.SumReceived.BitsPerSecond / 1e6
	if mbps <= 0 {
		t.Fatalf("no throughput:\n%s", out)
	}
	t.Logf("mifsec connect -> strongSwan 5.9.8 (kernel-libipsec): %.0f Mbit/s, one TCP flow", mbps)
}

// parseConnectArgs runs `mifsec connect ARGS` up to parseConnect.
func parseConnectArgs(t *testing.T, args ...string) (mif.ClientConfig, error) {
	t.Helper()
	psk := writePSK(t, t.TempDir(), "a secret of enough length")
	return parseConnectFlags(t, append([]string{"--gateway", "192.0.2.2", "--local-id", "client.example", "--psk-file", psk}, args...)...)
}

// parseConnectFlags parses `mifsec connect` args as the binary does.
func parseConnectFlags(t *testing.T, args ...string) (mif.ClientConfig, error) {
	t.Helper()
	cmd := connectCommand()
	var cfg mif.ClientConfig
	var perr error
	cmd.Action = func(c *cli.Context) error {
		cfg, perr = parseConnect(c)
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{withSetup(cmd, commandSetup{})}} // as the binary reads --config
	if err := app.Run(append([]string{"mifsec", "connect"}, args...)); err != nil {
		return cfg, err
	}
	return cfg, perr
}

func TestParseConnectInterfaces(t *testing.T) {
	t.Run("single interface by default", func(t *testing.T) {
		cfg, err := parseConnectArgs(t, "--interface", "eth0")
		if err != nil || cfg.Interfaces != nil || cfg.Device != "eth0" {
			t.Fatalf("cfg %+v, %v", cfg.Interfaces, err)
		}
	})
	t.Run("flags", func(t *testing.T) {
		cfg, err := parseConnectArgs(t, "--interfaces", "wl*, wwan0", "--exclude-interfaces", "wlan9",
			"--interface-priority", "wwan0=0", "--interface-priority", "wlan=4", "--handover-hysteresis", "5s")
		if err != nil {
			t.Fatal(err)
		}
		ic := cfg.Interfaces
		if ic == nil || !slices.Equal(ic.Include, []string{"wl*", "wwan0"}) || !slices.Equal(ic.Exclude, []string{"wlan9"}) ||
			ic.Priorities["wwan0"] != 0 || ic.Priorities["wlan"] != 4 || len(ic.Priorities) != 2 || ic.Hysteresis != 5*time.Second {
			t.Errorf("interfaces %+v", ic)
		}
	})
	t.Run("exclude alone watches the rest", func(t *testing.T) {
		cfg, err := parseConnectArgs(t, "--exclude-interfaces", "docker*")
		if err != nil || cfg.Interfaces == nil || len(cfg.Interfaces.Include) != 0 || cfg.Interfaces.Hysteresis != mif.DefaultHysteresis {
			t.Fatalf("cfg %+v, %v", cfg.Interfaces, err)
		}
	})
	t.Run("YAML", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "c.yaml")
		yaml := "interfaces: \"wlan*,eth*\"\ninterface-priority:\n  - wlan0=0\n  - cellular=1\nhandover-hysteresis: 3s\n"
		if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConnectArgs(t, "--config", conf)
		if err != nil {
			t.Fatal(err)
		}
		ic := cfg.Interfaces
		if ic == nil || !slices.Equal(ic.Include, []string{"wlan*", "eth*"}) || ic.Priorities["wlan0"] != 0 ||
			ic.Priorities["cellular"] != 1 || ic.Hysteresis != 3*time.Second {
			t.Errorf("interfaces from YAML %+v", ic)
		}
	})
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"bad glob", []string{"--interfaces", "wl[an"}, "--interfaces"},
		{"bad exclude", []string{"--exclude-interfaces", "["}, "--exclude-interfaces"},
		{"priority without monitoring", []string{"--interface-priority", "wlan0=1"}, "needs --interfaces"},
		{"bad priority", []string{"--interfaces", "*", "--interface-priority", "wlan0"}, "NAME=N"},
		{"priority out of range", []string{"--interfaces", "*", "--interface-priority", "wlan0=300"}, "0 to 255"},
		{"both modes", []string{"--interfaces", "*", "--interface", "eth0"}, "exclude each other"},
		{"empty list", []string{"--interfaces", " , "}, "no interface pattern"},
		{"negative hysteresis", []string{"--interfaces", "*", "--handover-hysteresis", "-1s"}, "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConnectArgs(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// linkTwoUplinks joins namespace client to gw with a WLAN-like (wlan0,
// 10.74.1.2) and a cellular-like (wwan0, 10.74.2.2) veth; gw has 192.0.2.2
// and the protected 10.1.0.1/24 on its lo, reachable through both, and the
// client's default route prefers wlan0.
func linkTwoUplinks(t *testing.T, client, gw string) {
	t.Helper()
	for _, c := range [][]string{
		{"ip", "-n", client, "link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0p", "netns", gw},
		{"ip", "-n", client, "link", "add", "wwan0", "type", "veth", "peer", "name", "wwan0p", "netns", gw},
		{"ip", "-n", gw, "address", "add", "10.74.1.1/24", "dev", "wlan0p"},
		{"ip", "-n", gw, "address", "add", "10.74.2.1/24", "dev", "wwan0p"},
		{"ip", "-n", gw, "address", "add", "192.0.2.2/32", "dev", "lo"},
		{"ip", "-n", gw, "address", "add", "10.1.0.1/24", "dev", "lo"},
		{"ip", "-n", gw, "link", "set", "wlan0p", "up"},
		{"ip", "-n", gw, "link", "set", "wwan0p", "up"},
		{"ip", "-n", client, "address", "add", "10.74.1.2/24", "dev", "wlan0"},
		{"ip", "-n", client, "address", "add", "10.74.2.2/24", "dev", "wwan0"},
		{"ip", "-n", client, "link", "set", "wlan0", "up"},
		{"ip", "-n", client, "link", "set", "wwan0", "up"},
		{"ip", "-n", client, "route", "add", "default", "via", "10.74.1.1", "dev", "wlan0", "metric", "100"},
		{"ip", "-n", client, "route", "add", "default", "via", "10.74.2.1", "dev", "wwan0", "metric", "200"},
	} {
		testenv.Exec(t, "", c...)
	}
}

// handoverTopology is a client namespace with a WLAN-like (wlan0,
// 10.74.1.2) and a cellular-like (wwan0, 10.74.2.2) veth to a strongSwan
// gateway whose address 192.0.2.2 sits on its lo, reachable through both;
// the client's default route prefers wlan0.
func newHandoverTopology(t *testing.T, o gatewayOptions) *gatewayTopology {
	strongswan.Require(t)
	testenv.RequireCommand(t, "ping")
	top := &gatewayTopology{client: testenv.NewNamedNetns(t, "ho-cl"), gw: testenv.NewNamedNetns(t, "ho-gw"), dir: t.TempDir()}
	// No IPv6 on the gateway's links: the link-local addresses' duplicate
	// address detection, which ends each time a link comes up, is a roam
	// event to charon. It then probes the client's path itself, and when
	// that coincides with the client's own move charon holds back the
	// Child SA rekey its kernel-libipsec needs after a move: seen in CI as
	// 25 s of probing the client's old address (ten probes 2.5 s apart)
	// after an address change, and likely behind a 1.5 s wait for that
	// rekey after a planned move (charon's log was not kept then). The
	// tests are about the client.
	testenv.Exec(t, top.gw, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	linkTwoUplinks(t, top.client, top.gw)
	top.charon = strongswan.Start(t, strongswan.Config{Netns: top.gw, Swanctl: gatewaySwanctl(o), Files: gatewayFiles(t, o), Charon: o.charon})
	return top
}

// pingGaps pings addr from ns every interval, count times, and returns the
// replies received and the longest run of lost replies.
func pingGaps(ns, addr string, interval time.Duration, count int) (received, longestLoss int, out string) {
	b, _ := exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-c", fmt.Sprint(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1", addr).CombinedOutput()
	last := 0
	for _, line := range strings.Split(string(b), "\n") {
		_, rest, ok := strings.Cut(line, "icmp_seq=")
		if !ok {
			continue
		}
		var seq int
		if _, err := fmt.Sscanf(rest, "%d", &seq); err != nil {
			continue
		}
		received++
		longestLoss = max(longestLoss, seq-last-1)
		last = seq
	}
	longestLoss = max(longestLoss, count-last)
	return received, longestLoss, string(b)
}

// waitPath waits until the client's IKE SA and ESP use the path on iface.
func (p *connectProcess) waitPath(t *testing.T, iface string, within time.Duration) mif.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := p.status(t)
		if err == nil && st.Device == iface && st.Session.Path == iface {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("not on %s within %v (status %+v, %v):\n%s", iface, within, st, err, p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConnectHandover runs `mifsec connect --interfaces` over two
// interfaces to strongSwan (MOBIKE): when the active WLAN goes down the
// session moves to cellular at once; when WLAN returns it moves back after
// the hysteresis and a path check.
func TestConnectHandover(t *testing.T) {
	const psk = "a handover test secret"
	o := gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16", auth: "psk", psk: psk}
	top := newHandoverTopology(t, o)
	c := startConnect(t, top.client, "mho0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, top.dir, psk), "--ipv6=false",
		"--interfaces", "wlan*,wwan*", "--handover-hysteresis", "1s")
	st := c.waitEstablished(t, 10*time.Second)
	if !st.Session.MOBIKE {
		t.Fatalf("MOBIKE not negotiated: %+v", st.Session)
	}
	if len(st.Paths) != 2 || st.Device != "wlan0" {
		t.Fatalf("paths %+v on %q, want wlan0 and wwan0 on wlan0", st.Paths, st.Device)
	}
	if err := ping(top.client, "10.1.0.1", 2); err != nil {
		t.Fatalf("%v\nmifsec:\n%s", err, c.log.String())
	}

	const interval = 20 * time.Millisecond
	type result struct {
		received, lost int
		out            string
	}
	run := func(count int) <-chan result {
		ch := make(chan result, 1)
		go func() {
			r, l, out := pingGaps(top.client, "10.1.0.1", interval, count)
			ch <- result{r, l, out}
		}()
		return ch
	}

	// The IKE SA must stay the same throughout: MOBIKE moves it, nothing
	// re-authenticates.
	first, _ := c.status(t)
	spiI, spiR := first.Session.IKESPIi, first.Session.IKESPIr
	if spiI == "" || spiR == "" {
		t.Fatalf("no IKE SA in the status: %+v", first.Session)
	}

	// Break: the active interface goes down under a 50/s ping.
	pings := run(150)
	time.Sleep(time.Second)
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "down")
	down := time.Now()
	st = c.waitPath(t, "wwan0", 5*time.Second)
	t.Logf("on wwan0 %v after wlan0 went down", time.Since(down).Round(time.Millisecond))
	r := <-pings
	t.Logf("break: %d of 150 replies, longest gap %d pings (%v)", r.received, r.lost, time.Duration(r.lost+1)*interval)
	if r.lost > 50 { // 1 s; about 50 ms on an idle host
		t.Errorf("traffic stopped for %d pings of %v:\n%s\nmifsec:\n%s", r.lost, interval, r.out, c.log.String())
	}
	if st.Session.PathUpdates < 1 || len(st.Paths) != 1 || st.Session.Reconnects != 0 {
		t.Errorf("after the break: %+v", st)
	}

	// Flap: wlan0 returns for less than the hysteresis time; the session
	// stays on wwan0.
	updates := st.Session.PathUpdates
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "up")
	flapFrom := time.Now() // wlan0 is usable once its default route is in
	testenv.Exec(t, top.client, "ip", "route", "add", "default", "via", "10.74.1.1", "dev", "wlan0", "metric", "100")
	time.Sleep(400 * time.Millisecond)
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "down")
	// At most this long usable: a loaded host may stretch the 400 ms.
	flap := time.Since(flapFrom)
	time.Sleep(1500 * time.Millisecond)
	switch st, _ := c.status(t); {
	case flap >= 900*time.Millisecond:
		t.Logf("wlan0 was up for %v, too near the 1 s hysteresis to test it", flap.Round(time.Millisecond))
	case st.Device != "wwan0" || st.Session.PathUpdates != updates:
		t.Errorf("a WLAN up for %v moved the session (hysteresis 1 s): on %s, %d updates, want wwan0, %d",
			flap.Round(time.Millisecond), st.Device, st.Session.PathUpdates, updates)
	}

	// Return: wlan0 comes back; the session moves back once it has been
	// usable for the hysteresis time and passed a path check.
	pings = run(200)
	time.Sleep(500 * time.Millisecond)
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "up")
	up := time.Now() // no later than wlan0 became usable
	testenv.Exec(t, top.client, "ip", "route", "add", "default", "via", "10.74.1.1", "dev", "wlan0", "metric", "100")
	usable := time.Now() // no earlier than wlan0 became usable
	time.Sleep(700 * time.Millisecond)
	if st, _ := c.status(t); st.Device != "wwan0" && time.Since(usable) < time.Second {
		t.Errorf("moved back to %s within %v of wlan0 returning: the hysteresis is 1 s", st.Device, time.Since(usable).Round(time.Millisecond))
	}
	st = c.waitPath(t, "wlan0", 5*time.Second)
	took := time.Since(up)
	t.Logf("back on wlan0 %v after it returned", took.Round(time.Millisecond))
	if took < time.Second {
		t.Errorf("moved back after %v, before the 1 s hysteresis", took)
	}
	r = <-pings
	t.Logf("return: %d of 200 replies, longest gap %d pings", r.received, r.lost)
	if r.lost > 5 {
		t.Errorf("a planned move lost %d pings in a row:\n%s\nmifsec:\n%s", r.lost, r.out, c.log.String())
	}
	if st.Session.PathUpdates < 2 || len(st.Paths) != 2 || st.Session.Reconnects != 0 {
		t.Errorf("after the return: %+v", st)
	}
	if st.Session.IKESPIi != spiI || st.Session.IKESPIr != spiR {
		t.Errorf("the IKE SA changed from %s/%s to %s/%s: the handover re-authenticated", spiI, spiR, st.Session.IKESPIi, st.Session.IKESPIr)
	}
}

// TestConnectWaitsForInterface starts `mifsec connect --interfaces` with
// no usable interface: it connects once one comes up, and follows the
// active interface to a new address.
func TestConnectWaitsForInterface(t *testing.T) {
	const psk = "a waiting test secret"
	o := gatewayOptions{proposals: "aes256gcm16-prfsha256-x25519", espProposals: "aes256gcm16", auth: "psk", psk: psk}
	top := newHandoverTopology(t, o)
	testenv.Exec(t, top.client, "ip", "link", "set", "wlan0", "down")
	testenv.Exec(t, top.client, "ip", "link", "set", "wwan0", "down")
	c := startConnect(t, top.client, "mwt0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, top.dir, psk), "--ipv6=false",
		"--interfaces", "w*")
	// Once it answers (a loaded host may take a while to start it), it
	// must wait a second without connecting.
	var err error
	if !testenv.Eventually(10*time.Second, func() bool { _, err = c.status(t); return err == nil }) {
		t.Fatalf("no status 10 s after the start: %v\n%s", err, c.log.String())
	}
	time.Sleep(time.Second)
	if st, err := c.status(t); err != nil || st.Session.State == "established" || len(st.Paths) != 0 {
		t.Fatalf("without an interface: %+v, %v", st, err)
	}
	testenv.Exec(t, top.client, "ip", "link", "set", "wwan0", "up")
	testenv.Exec(t, top.client, "ip", "route", "add", "default", "via", "10.74.2.1", "dev", "wwan0")
	st := c.waitEstablished(t, 10*time.Second)
	if st.Device != "wwan0" || len(st.Paths) != 1 || st.Paths[0].Local != "10.74.2.2:4500" {
		t.Fatalf("established on %q with paths %+v, want wwan0 from 10.74.2.2", st.Device, st.Paths)
	}
	if err := ping(top.client, "10.1.0.1", 2); err != nil {
		t.Fatalf("%v\nmifsec:\n%s", err, c.log.String())
	}

	// A new address on the active interface: the path is replaced and
	// the session moves to it.
	testenv.Exec(t, top.client, "ip", "address", "del", "10.74.2.2/24", "dev", "wwan0")
	testenv.Exec(t, top.client, "ip", "address", "add", "10.74.2.3/24", "dev", "wwan0")
	testenv.Exec(t, top.client, "ip", "route", "add", "default", "via", "10.74.2.1", "dev", "wwan0")
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.status(t)
		if err == nil && st.Session.PathUpdates >= 1 && st.Session.PathLocal == "10.74.2.3:4500" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session did not move to the new address: %+v, %v\n%s", st, err, c.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// strongSwan rekeys the Child SA right after an address update (its
	// kernel-libipsec cannot move an SA in place): traffic flows again
	// within a few seconds, without a reconnect (the allowance covers a
	// lost CREATE_CHILD_SA).
	moved := time.Now()
	if !testenv.Eventually(20*time.Second, func() bool { err = ping(top.client, "10.1.0.1", 1); return err == nil }) {
		st, serr := c.status(t)
		t.Fatalf("after the address change: %v\nstatus: %+v (%v)\nmifsec:\n%s\ncharon:\n%s", err, st, serr, c.log.String(), top.charon.Log())
	}
	t.Logf("traffic flowed again %v after the move", time.Since(moved).Round(time.Millisecond))
	if st, _ := c.status(t); st.Session.Reconnects != 0 {
		t.Errorf("reconnected %d times", st.Session.Reconnects)
	}
}

// TestConnectFollowsAddressChange (issue 18, acceptance 6): the default
// client, on the one interface the routing table uses, keeps its tunnel
// when that interface is renumbered (DHCP gives another address, another
// network on the same Wi-Fi interface): the gap is at most 1 s, and the
// gateway sends to the new address.
func TestConnectFollowsAddressChange(t *testing.T) {
	const psk = "an address change secret"
	client, _, g := mifsecGatewayTopology(t, psk)
	c := startConnect(t, client, "mren0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false")
	st := c.waitEstablished(t, 10*time.Second)
	dev := linkOf(t, client, "192.0.2.1")
	if st.Device != dev || len(st.Paths) != 1 {
		t.Fatalf("paths %+v on %q, want one on %s", st.Paths, st.Device, dev)
	}
	if err := ping(client, "10.1.0.1", 2); err != nil {
		t.Fatalf("%v\n%s", err, c.log.String())
	}
	const interval = 20 * time.Millisecond
	type result struct {
		received, lost int
		out            string
	}
	done := make(chan result)
	go func() {
		r, l, out := pingGaps(client, "10.1.0.1", interval, 150)
		done <- result{r, l, out}
	}()
	time.Sleep(time.Second)
	// As a DHCP client renumbers: the old lease goes, the new one comes
	// (the route to the gateway goes and comes with them).
	testenv.Exec(t, client, "ip", "addr", "del", "192.0.2.1/24", "dev", dev)
	testenv.Exec(t, client, "ip", "addr", "add", "192.0.2.11/24", "dev", dev)
	r := <-done
	gap := time.Duration(r.lost) * interval
	t.Logf("renumbered 192.0.2.1 -> 192.0.2.11: %d of 150 replies, longest gap %v", r.received, gap)
	if gap > time.Second {
		t.Errorf("longest gap %v, want at most 1 s\n%s\nclient:\n%s\ngateway:\n%s", gap, r.out, c.log.String(), g.log.String())
	}
	if cl := gatewayClients(t); len(cl) != 1 || !strings.HasPrefix(cl[0].Remote, "192.0.2.11:") {
		t.Errorf("the gateway sends to %+v, want 192.0.2.11", cl)
	}
	if st, _ := c.status(t); st.Session.State != "established" || len(st.Paths) != 1 || !strings.HasPrefix(st.Paths[0].Local, "192.0.2.11:") {
		t.Errorf("after the change: %s, paths %+v", st.Session.State, st.Paths)
	}
}

// TestConnectChecksGatewayOnRouteChange (issue 18, scope 4): the gateway
// restarts and forgets the session; nothing tells the client until, a
// moment later, its default route changes (another router on the same
// network, as after a network change or a resume). The client checks the
// gateway at once and reconnects within 3 s (about 1 s as a rule), where
// DPD (10 s, then its retransmissions) would leave the tunnel dead for
// half a minute.
func TestConnectChecksGatewayOnRouteChange(t *testing.T) {
	const psk = "a route change secret"
	gwArgs := []string{"--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk)}
	client, gw, g := mifsecGatewayTopologyAfter(t, func(client, gw string) {
		testenv.Exec(t, client, "ip", "route", "add", "default", "via", "192.0.2.2")
	}, gwArgs...)
	c := startConnect(t, client, "mrt0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false")
	c.waitEstablished(t, 10*time.Second)
	if err := ping(client, "10.1.0.1", 1); err != nil {
		t.Fatal(err)
	}
	g.cmd.Process.Kill()
	<-g.done
	g = startMifsecGateway(t, gw, "192.0.2.2", gwArgs...)

	changed := time.Now()
	testenv.Exec(t, client, "ip", "route", "replace", "default", "via", "192.0.2.3")
	var st mif.Status
	if !testenv.Eventually(5*time.Second, func() bool {
		var err error
		st, err = c.status(t)
		return err == nil && st.Session.Reconnects == 1 && st.Session.State == "established"
	}) {
		t.Fatalf("5 s after the route changed: %s, %d reconnects\nclient:\n%s", st.Session.State, st.Session.Reconnects, c.log.String())
	}
	took := time.Since(changed)
	t.Logf("reconnected %v after the default route changed", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("reconnected %v after the route changed, want within 3 s", took)
	}
	waitForLog(t, c.mifsecProcess, "the default route changed: checking that the gateway still knows the session")
	if err := ping(client, "10.1.0.1", 2); err != nil {
		t.Errorf("after reconnecting: %v\ngateway:\n%s", err, g.log.String())
	}
}

// TestConnectWaitsForNetwork (issue 18): `mifsec connect` started before
// the network is up (no route to the gateway) waits for an interface that
// reaches it instead of exiting, and connects once the link comes up.
func TestConnectWaitsForNetwork(t *testing.T) {
	const psk = "a waiting for the network secret"
	var dev string
	client, _, g := mifsecGatewayTopologyAfter(t, func(client, gw string) {
		dev = linkOf(t, client, "192.0.2.1")
		testenv.Exec(t, client, "ip", "link", "set", dev, "down")
	}, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk))
	c := startConnect(t, client, "mwn0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false")
	var err error
	if !testenv.Eventually(10*time.Second, func() bool { _, err = c.status(t); return err == nil }) {
		t.Fatalf("no status 10 s after the start (exited?): %v\n%s", err, c.log.String())
	}
	time.Sleep(time.Second)
	if st, err := c.status(t); err != nil || st.Session.State == "established" {
		t.Fatalf("without a network: %+v, %v", st.Session, err)
	}
	if !strings.Contains(c.log.String(), "no route to the gateway yet") {
		t.Errorf("the wait is not in the log:\n%s", c.log.String())
	}
	testenv.Exec(t, client, "ip", "link", "set", dev, "up")
	st := c.waitEstablished(t, 10*time.Second)
	if st.Device != dev {
		t.Errorf("established on %q, want %s", st.Device, dev)
	}
	if err := ping(client, "10.1.0.1", 2); err != nil {
		t.Fatalf("%v\nclient:\n%s\ngateway:\n%s", err, c.log.String(), g.log.String())
	}
}
