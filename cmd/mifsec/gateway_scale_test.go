package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/load"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/internal/testpki"
	"github.com/mifsec/mifsec/mif"
	"github.com/urfave/cli/v2"
)

// scaleGateway is `mifsec gateway` in its own namespace with a TUN device
// of a unique name, reached from a client namespace over a veth pair
// (192.0.2.1 → 192.0.2.2); it protects 10.1.0.0/24 (10.1.0.1 on its lo).
type scaleGateway struct {
	client, gw string
	tun        string
	args       []string // of the gateway command
	p          *mifsecProcess
}

func startScaleGateway(t *testing.T, args ...string) *scaleGateway {
	t.Helper()
	return startScaleGatewayWith(t, nil, args...)
}

// startScaleGatewayWith is startScaleGateway with setup run on the
// namespaces before the gateway starts.
func startScaleGatewayWith(t *testing.T, setup func(s *scaleGateway), args ...string) *scaleGateway {
	t.Helper()
	s := &scaleGateway{client: testenv.NewNamedNetns(t, "scl"), gw: testenv.NewNamedNetns(t, "sgw"),
		tun: fmt.Sprintf("msc%x", time.Now().UnixNano()&0xffffff)}
	testenv.Veth(t, s.client, s.gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, s.gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	if setup != nil {
		setup(s)
	}
	s.args = append([]string{"--log-level", "info", "gateway", "--tun", s.tun,
		"--pool", scalePool(), "--local-ts", "10.1.0.0/24"}, args...)
	s.start(t)
	return s
}

// scalePool is the gateway's address pool: a /23, or a /16 when
// MIFSEC_SCALE_CLIENTS asks for more clients than a /23 holds.
func scalePool() string {
	if n, err := strconv.Atoi(os.Getenv("MIFSEC_SCALE_CLIENTS")); err == nil && n > 500 {
		return "10.3.0.0/16"
	}
	return "10.3.0.0/23"
}

// start starts the gateway (again) and waits for its status socket.
func (s *scaleGateway) start(t *testing.T) {
	t.Helper()
	s.p = startMifsec(t, s.gw, s.args...)
	s.waitStatus(t)
}

func (s *scaleGateway) waitStatus(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := mif.ReadStatus(mif.ControlSocket(s.tun)); err == nil {
			return
		}
		select {
		case <-s.p.done:
			t.Fatalf("mifsec gateway exited:\n%s", s.p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mifsec gateway did not start within 10s:\n%s", s.p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *scaleGateway) status(t *testing.T) mif.GatewayStatus {
	t.Helper()
	return s.readStatus(t, mif.ReadStatus)
}

// summary reads the gateway's status without the list of clients.
func (s *scaleGateway) summary(t *testing.T) mif.GatewayStatus {
	t.Helper()
	return s.readStatus(t, mif.ReadSummary)
}

func (s *scaleGateway) readStatus(t *testing.T, read func(string) (json.RawMessage, error)) mif.GatewayStatus {
	t.Helper()
	raw, err := read(mif.ControlSocket(s.tun))
	if err != nil {
		t.Fatal(err)
	}
	var st mif.GatewayStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitClients waits until the gateway has n clients and n addresses
// leased.
func (s *scaleGateway) waitClients(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := s.status(t)
		leased := 0
		for _, p := range st.Pools {
			leased += p.Leased
		}
		if len(st.Clients) == n && leased == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway has %d clients and %d addresses leased after %v, want %d\n%s", len(st.Clients), leased, within, n,
				tail(s.p.log.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processMemory(t *testing.T, pid int) processUsage {
	t.Helper()
	u, err := readProcessUsage(pid)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startFleet runs a client fleet from the client namespace.
func (s *scaleGateway) startFleet(t *testing.T, cfg load.ClientsConfig) *load.Fleet {
	t.Helper()
	return startFleetIn(t, s.client, cfg)
}

// startFleetIn runs a client fleet from namespace ns; the gateway is
// 192.0.2.2:500 and the target 10.1.0.1 unless cfg names them.
func startFleetIn(t *testing.T, ns string, cfg load.ClientsConfig) *load.Fleet {
	t.Helper()
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = netip.MustParseAddrPort("192.0.2.2:500")
	}
	if !cfg.Target.IsValid() {
		cfg.Target = netip.MustParseAddr("10.1.0.1")
	}
	var f *load.Fleet
	var err error
	testenv.InNamedNetns(t, ns, func() {
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Minute, cfg.Timeout+30*time.Second))
		defer cancel()
		f, err = load.StartClients(ctx, cfg)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// checkFleet asserts that every client was established within limit and
// passed traffic, and that the gateway's status shows each with its own
// address and traffic counters.
func (s *scaleGateway) checkFleet(t *testing.T, f *load.Fleet, n int, limit time.Duration) {
	t.Helper()
	rep := f.Report()
	t.Logf("%v", rep)
	if rep.Established != n || rep.All > limit {
		t.Errorf("%d of %d clients established, the last after %v; want all within %v", rep.Established, n, rep.All, limit)
	}
	if rep.TrafficOK != n {
		t.Errorf("%d of %d clients passed traffic", rep.TrafficOK, n)
	}
	st := s.status(t)
	if len(st.Clients) != n || st.ClientCount != n {
		t.Fatalf("gateway status shows %d clients (counted %d), want %d", len(st.Clients), st.ClientCount, n)
	}
	// The summary counts them without listing them; its counters are the
	// status's.
	if sum := s.summary(t); sum.ClientCount != n || sum.Clients != nil || sum.InboundSAs != st.InboundSAs || len(sum.Pools) != len(st.Pools) {
		t.Errorf("summary: %d clients counted, %d listed, %d inbound SAs, %d pools; want %d, none, %d, %d",
			sum.ClientCount, len(sum.Clients), sum.InboundSAs, len(sum.Pools), n, st.InboundSAs, len(st.Pools))
	}
	seen := map[string]bool{}
	for _, c := range st.Clients {
		if len(c.Addresses) != 1 || seen[c.Addresses[0]] {
			t.Errorf("client %s has addresses %v (shared or not one)", c.ID, c.Addresses)
			continue
		}
		seen[c.Addresses[0]] = true
		if c.RxPackets == 0 || c.TxPackets == 0 {
			t.Errorf("client %s: received %d, sent %d packets, want its own echo counted both ways", c.ID, c.RxPackets, c.TxPackets)
		}
	}
	if t.Failed() {
		t.Logf("gateway (tail):\n%s", tail(s.p.log.String(), 40))
	}
}

// TestMifsecGatewayScale connects 200 clients (MIFSEC_SCALE_CLIENTS) at
// once to the `mifsec gateway` binary with a pre-shared key: all must be
// established within 10 s and pass an echo through their tunnel; the
// gateway's memory per client is logged; deleting the clients' IKE SAs
// must leave the gateway with no client and no lease.
func TestMifsecGatewayScale(t *testing.T) {
	if testing.Short() {
		t.Skip("connects 200 clients")
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv("MIFSEC_SCALE_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	const psk = "a secret every client shares"
	s := startScaleGateway(t, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk))
	pid := s.p.cmd.Process.Pid
	time.Sleep(200 * time.Millisecond) // let the gateway's start-up allocations settle
	before := processMemory(t, pid)

	// Beyond the default 200 clients (a measurement of memory per client,
	// docs/gateway-scale.md), the clients, which compute on the same host,
	// get longer to be set up.
	limit, timeout := 10*time.Second, time.Duration(0)
	if n > 200 {
		limit, timeout = time.Minute, time.Minute
	}
	f := s.startFleet(t, load.ClientsConfig{Count: n, PSK: []byte(psk), RemoteID: ike.Identity{Type: wire.IDFQDN, Data: []byte("gw.example")},
		Timeout: timeout})
	after := processMemory(t, pid)
	up := max(f.Report().Established, 1) // the clients the gateway holds
	t.Logf("gateway memory: VmRSS %d kB before, %d kB with %d clients (%d bytes per client); Pss %d kB → %d kB (%d bytes per client)",
		before.RSSkB, after.RSSkB, up, (after.RSSkB-before.RSSkB)*1024/up, before.PsskB, after.PsskB, (after.PsskB-before.PsskB)*1024/up)
	s.checkFleet(t, f, n, limit)

	// Every client deletes its IKE SA: the gateway forgets them all and
	// the pool is whole again.
	start := time.Now()
	f.Close()
	s.waitClients(t, 0, 10*time.Second)
	t.Logf("%d clients deleted their IKE SAs; the gateway released them all within %v", n, time.Since(start).Round(time.Millisecond))
}

// TestMifsecGatewayScaleCertificates is the scale test with a certificate
// per client (ECDSA P-256), fewer clients: the gateway verifies a chain
// and a signature per client and signs its own AUTH.
func TestMifsecGatewayScaleCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("connects 50 clients")
	}
	const n = 50
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: testpki.KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	cas, err := ike.NewTrustStore(pki.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	type cred struct {
		id   ike.Identity
		key  crypto.Signer
		cert *x509.Certificate
	}
	creds := make([]cred, n)
	for i := range creds {
		email := fmt.Sprintf("client-%d@fleet.bench", i)
		key, cert := issueClientCert(t, pki.CA, email)
		id, err := ike.ParseIdentity("email:" + email)
		if err != nil {
			t.Fatal(err)
		}
		creds[i] = cred{id, key, cert}
	}
	s := startScaleGateway(t, "--local-id", pki.Gateway.Identity.String(),
		"--cert", pki.Gateway.CertFile, "--key", pki.Gateway.KeyFile, "--ca", pki.CA.CertFile)
	f := s.startFleet(t, load.ClientsConfig{Count: n, CAs: cas, RemoteID: pki.Gateway.Identity,
		Credentials: func(i int) (ike.Identity, crypto.Signer, []*x509.Certificate, error) {
			return creds[i].id, creds[i].key, []*x509.Certificate{creds[i].cert}, nil
		}})
	s.checkFleet(t, f, n, 10*time.Second)
	f.Close()
	s.waitClients(t, 0, 10*time.Second)
}

// issueClientCert issues an ECDSA P-256 client certificate for email,
// signed by ca.
func issueClientCert(t *testing.T, ca testpki.Credential, email string) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{Organization: []string{"mifsec test"}, CommonName: email},
		EmailAddresses: []string{email},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// TestMifsecGatewayDPD runs the gateway with --dpd 2s: clients that answer
// its liveness checks stay; clients that go silent (sockets closed, no
// Delete) are dropped and their addresses return to the pool.
func TestMifsecGatewayDPD(t *testing.T) {
	const psk = "a secret every client shares"
	const n = 3
	s := startScaleGateway(t, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk),
		"--dpd", "2s", "--retransmit", "200ms", "--retransmit-tries", "3")
	f := s.startFleet(t, load.ClientsConfig{Count: n, PSK: []byte(psk)})
	s.checkFleet(t, f, n, 10*time.Second)
	// The clients' own DPD is 10 s: the gateway checks them at 2 s, 4 s,
	// ... and they answer.
	time.Sleep(5 * time.Second)
	st := s.status(t)
	if len(st.Clients) != n {
		t.Fatalf("%d clients after 5 s of answered liveness checks, want %d", len(st.Clients), n)
	}
	for _, c := range st.Clients {
		if c.DPDChecks == 0 {
			t.Errorf("client %s: no liveness check in 5 s with --dpd 2s", c.ID)
		}
	}
	// Silence: after 2 s the check, 0.2+0.36+0.65 s of retransmissions,
	// and the 1 s tick, every client is gone.
	start := time.Now()
	f.Abandon()
	s.waitClients(t, 0, 10*time.Second)
	t.Logf("silent clients dropped after %v", time.Since(start).Round(100*time.Millisecond))
	// The gateway logs before it drops a client, but its stderr reaches
	// s.p.log through a pipe copied by another goroutine: wait for it.
	waitForLog(t, s.p, "no answer to a liveness check")
}

// TestMifsecGatewayListenSeveral runs the gateway on two addresses, each
// on its own veth: a client fleet talks to each, and every message and
// ESP packet of the gateway must come from the address its client talks
// to (the fleet drops anything else).
func TestMifsecGatewayListenSeveral(t *testing.T) {
	const psk = "a secret every client shares"
	var other string
	s := startScaleGatewayWith(t, func(s *scaleGateway) {
		other = testenv.NewNamedNetns(t, "scl2")
		testenv.Veth(t, other, s.gw, netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24"))
	}, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--listen", "192.0.2.2,198.51.100.2")
	a := s.startFleet(t, load.ClientsConfig{Count: 3, PSK: []byte(psk), ID: load.FleetIDs("a")})
	b := startFleetIn(t, other, load.ClientsConfig{Count: 3, PSK: []byte(psk), ID: load.FleetIDs("b"),
		Gateway: netip.MustParseAddrPort("198.51.100.2:500")})
	for name, f := range map[string]*load.Fleet{"192.0.2.2": a, "198.51.100.2": b} {
		if rep := f.Report(); rep.Established != 3 || rep.TrafficOK != 3 {
			t.Errorf("clients of %s: %v", name, rep)
		}
	}
	st := s.status(t)
	if len(st.Clients) != 6 || st.Listen != "192.0.2.2:4500,198.51.100.2:4500" {
		t.Errorf("gateway status: %d clients, listening on %q", len(st.Clients), st.Listen)
	}
	a.Close()
	b.Close()
	s.waitClients(t, 0, 10*time.Second)
}

// TestBenchClientsCommand runs `bench clients` (the subcommand on its own
// app) from the client namespace against the gateway binary.
func TestBenchClientsCommand(t *testing.T) {
	const psk = "a secret every client shares"
	pskFile := writePSK(t, t.TempDir(), psk)
	s := startScaleGateway(t, "--local-id", "gw.example", "--psk-file", pskFile)
	out := filepath.Join(t.TempDir(), "clients.json")
	app := &cli.App{Name: "mifsec", Commands: []*cli.Command{benchClientsCommand()}}
	var err error
	testenv.InNamedNetns(t, s.client, func() {
		err = app.Run([]string{"mifsec", "clients", "--gateway", "192.0.2.2", "--target", "10.1.0.1", "--count", "8",
			"--psk-file", pskFile, "--remote-id", "gw.example", "--json", out, "--rate", "40",
			"--gateway-pid", strconv.Itoa(s.p.cmd.Process.Pid), "--traffic", "700ms", "--traffic-clients", "1,8", "--traffic-size", "1200"})
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchClientsReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Report.Established != 8 || rep.Report.TrafficOK != 8 || len(rep.Clients) != 8 || rep.Clients[7].ID != "client-7.fleet.bench" {
		t.Fatalf("report %+v", rep)
	}
	// --rate 40: client 7 started 175 ms after the first.
	if e := rep.Clients[7].Established; e < 175*time.Millisecond {
		t.Errorf("client 7 established %v after the start, before its turn at --rate 40", e)
	}
	// --gateway-pid: the gateway's memory and CPU, read from /proc.
	if g := rep.Report; rep.Gateway == nil || rep.Gateway.Before.RSSkB <= 0 || rep.Gateway.Up.RSSkB <= 0 ||
		rep.Gateway.Up.CPU < rep.Gateway.Before.CPU || rep.Gateway.Setup < 175*time.Millisecond {
		t.Errorf("gateway usage %+v (report %+v)", rep.Gateway, g)
	}
	// --traffic: a phase with one client, then one with all eight, each
	// carried through the gateway both ways.
	if len(rep.Traffic) != 2 {
		t.Fatalf("%d traffic phases, want 2", len(rep.Traffic))
	}
	for i, want := range []int{1, 8} {
		p := rep.Traffic[i]
		if r := p.Report; r.Clients != want || r.Size != 1200 || r.Received == 0 || r.Silent != 0 || r.Received > r.Sent ||
			r.MbitPerSecond <= 0 || p.FleetCPU <= 0 || p.GatewayCPU <= 0 || p.Ratio <= 0 {
			t.Errorf("phase %d: %+v", i, p)
		}
	}
	if w := rep.Traffic[1].Report.Window; w != 256/8 {
		t.Errorf("eight clients have %d echoes in flight each, want 256/8", w)
	}
	s.waitClients(t, 0, 10*time.Second)

	// Without a gateway at the address, the command fails and says so.
	testenv.InNamedNetns(t, s.client, func() {
		err = app.Run([]string{"mifsec", "clients", "--gateway", "192.0.2.9", "--target", "10.1.0.1", "--count", "2",
			"--psk-file", pskFile, "--timeout", "500ms"})
	})
	if err == nil || !strings.Contains(err.Error(), "0 of 2 clients established") {
		t.Fatalf("against no gateway: %v", err)
	}
}

// TestFleetRetry: clients whose gateway drops their first requests (its
// IKE port closed by nftables for a while) give up after their one
// attempt; with Retry they try again, as a restarted mifsec connect does,
// and all get in once it answers.
func TestFleetRetry(t *testing.T) {
	testenv.RequireCommand(t, "nft")
	const psk = "a secret every client shares"
	s := startScaleGateway(t, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk))
	// Two quick tries: an attempt fails within some 0.3 s.
	quick := ike.RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 2}
	for _, tc := range []struct {
		name  string
		retry time.Duration
		want  int
	}{{"one attempt", 0, 0}, {"retry", 200 * time.Millisecond, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Exec(t, s.gw, "nft", "add table inet fleetretry; add chain inet fleetretry in { type filter hook input priority 0; }; add rule inet fleetretry in udp dport 500 drop")
			opened := time.AfterFunc(1500*time.Millisecond, func() {
				exec.Command("ip", "netns", "exec", s.gw, "nft", "delete table inet fleetretry").Run()
			})
			defer func() {
				if opened.Stop() {
					testenv.Exec(t, s.gw, "nft", "delete table inet fleetretry")
				}
			}()
			f := s.startFleet(t, load.ClientsConfig{Count: 4, PSK: []byte(psk), Retransmit: quick, Retry: tc.retry, Timeout: 10 * time.Second})
			rep := f.Report()
			t.Logf("%v", rep)
			if rep.Established != tc.want || rep.TrafficOK != tc.want {
				t.Fatalf("%d clients established, %d passed traffic; want %d", rep.Established, rep.TrafficOK, tc.want)
			}
			if tc.retry > 0 && rep.Retried != tc.want {
				t.Errorf("%d clients established after more than one attempt, want all %d", rep.Retried, tc.want)
			}
			f.Close()
			s.waitClients(t, 0, 10*time.Second)
		})
	}
}

// TestBenchClientsRefuses: bad flags are refused before any client starts.
func TestBenchClientsRefuses(t *testing.T) {
	pskFile := writePSK(t, t.TempDir(), "a secret every client shares")
	app := &cli.App{Name: "mifsec", Commands: []*cli.Command{benchClientsCommand()}}
	base := []string{"mifsec", "clients", "--gateway", "192.0.2.9", "--target", "10.1.0.1", "--count", "4", "--psk-file", pskFile}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--count", "0"}, "--count"},
		{[]string{"--target", "fd00::1"}, "--target"},
		{[]string{"--rate", "-1"}, "--rate"},
		{[]string{"--traffic-clients", "2"}, "--traffic-clients without --traffic"},
		{[]string{"--traffic", "1s", "--traffic-clients", "1,5"}, "between 1 and --count"},
		{[]string{"--traffic", "1s", "--traffic-clients", "x"}, "--traffic-clients"},
		{[]string{"--traffic", "1s", "--traffic-size", "2000"}, "packet size"},
		{[]string{"--traffic", "1s", "--traffic-window", "0"}, "--traffic-window"},
		{[]string{"--traffic", "-1s"}, "--traffic must not be negative"},
	} {
		start := time.Now()
		err := app.Run(append(slices.Clone(base), tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error about %s", tc.args, err, tc.want)
		}
		if time.Since(start) > time.Second {
			t.Errorf("%q: refused after %v: clients were started", tc.args, time.Since(start))
		}
	}
}

// TestMifsecGatewayInitialContact: clients whose host "reboots" (they go
// silent without a Delete) connect again with the same identities and
// INITIAL_CONTACT: the gateway drops their old IKE SAs, Child SAs and
// leases at once, without waiting for a liveness check.
func TestMifsecGatewayInitialContact(t *testing.T) {
	const psk = "a secret every client shares"
	const n = 4
	s := startScaleGateway(t, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--dpd", "0")
	old := s.startFleet(t, load.ClientsConfig{Count: n, PSK: []byte(psk), ID: load.FleetIDs("host")})
	s.checkFleet(t, old, n, 10*time.Second)
	old.Abandon()
	again := s.startFleet(t, load.ClientsConfig{Count: n, PSK: []byte(psk), ID: load.FleetIDs("host")})
	s.checkFleet(t, again, n, 10*time.Second) // n clients, each with its own address and traffic
	st := s.status(t)
	ports := map[uint16]bool{} // of the reconnected clients' sockets
	for _, r := range again.Results() {
		ports[r.Local.Port()] = true
	}
	leased := 0
	for _, p := range st.Pools {
		leased += p.Leased
	}
	for _, c := range st.Clients {
		if ap, err := netip.ParseAddrPort(c.Remote); err != nil || !ports[ap.Port()] {
			t.Errorf("client %s at %s is not one of the reconnected clients (ports %v)", c.ID, c.Remote, ports)
		}
	}
	if leased != n {
		t.Errorf("%d addresses leased for %d clients: the replaced ones were not released", leased, n)
	}
}

// TestMifsecGatewayEnforcesLocalTS: a client that ignores its selectors and
// sends to addresses the gateway did not grant (--local-ts 10.1.0.0/24) —
// another network on the gateway host, the gateway's own outer address —
// gets nothing through: the gateway drops the packets as "policy", and a
// client of the same gateway still reaches the granted network.
func TestMifsecGatewayEnforcesLocalTS(t *testing.T) {
	const psk = "a secret every client shares"
	s := startScaleGatewayWith(t, func(s *scaleGateway) {
		testenv.Exec(t, s.gw, "ip", "addr", "add", "10.9.0.1/24", "dev", "lo")
	}, "--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk))
	gwID := ike.Identity{Type: wire.IDFQDN, Data: []byte("gw.example")}
	for i, target := range []string{"10.9.0.1", "192.0.2.2"} {
		f := s.startFleet(t, load.ClientsConfig{Count: 1, PSK: []byte(psk), RemoteID: gwID,
			Target: netip.MustParseAddr(target), RemoteTS: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, Timeout: 3 * time.Second,
			ID: func(int) ike.Identity {
				return ike.Identity{Type: wire.IDFQDN, Data: fmt.Appendf(nil, "rogue%d.example", i)}
			}})
		rep := f.Report()
		if rep.Established != 1 {
			t.Fatalf("the rogue client was not established: %v", rep)
		}
		if rep.TrafficOK != 0 {
			t.Errorf("an echo to %s outside --local-ts came back through the tunnel", target)
		}
		if drops := s.status(t).Drops["policy"]; drops == 0 {
			t.Errorf("after echoes to %s the gateway counted no policy drop", target)
		}
		f.Close()
	}
	f := s.startFleet(t, load.ClientsConfig{Count: 1, PSK: []byte(psk), RemoteID: gwID,
		ID: func(int) ike.Identity { return ike.Identity{Type: wire.IDFQDN, Data: []byte("honest.example")} }})
	if rep := f.Report(); rep.TrafficOK != 1 {
		t.Fatalf("a client echoing to 10.1.0.1 inside --local-ts got no reply: %v", rep)
	}
}

// TestFleetAgainstStrongSwanGateway: the load harness against strongSwan's
// charon (kernel-libipsec) as the gateway, as bench/scripts/gateway/fleet.sh
// runs it beside mifsec's: every client is established, passes an echo and
// carries traffic through charon's userspace ESP.
func TestFleetAgainstStrongSwanGateway(t *testing.T) {
	const psk = "a secret every client shares"
	const n = 20
	cl, gw := testenv.NewNamedNetns(t, "fsc"), testenv.NewNamedNetns(t, "fsg")
	testenv.Veth(t, cl, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	// The configuration bench/scripts/gateway/fleet.sh gives charon.
	conf, err := os.ReadFile("../../bench/scripts/gateway/swanctl-fleet.conf")
	if err != nil {
		t.Fatal(err)
	}
	strongswan.Start(t, strongswan.Config{Netns: gw, Swanctl: strings.ReplaceAll(string(conf), "@PSK@", psk),
		// All clients come from one address: charon's default blocks an
		// address with more than five half-open IKE SAs.
		Charon: "\tblock_threshold = 1000\n\tcookie_threshold = 1000\n"})
	f := startFleetIn(t, cl, load.ClientsConfig{Count: n, PSK: []byte(psk), RemoteID: ike.Identity{Type: wire.IDFQDN, Data: []byte("gw.example")}})
	rep := f.Report()
	if rep.Established != n || rep.TrafficOK != n {
		t.Fatalf("against charon: %v", rep)
	}
	tr, err := f.Traffic(context.Background(), load.TrafficConfig{Duration: time.Second, Size: 1200})
	t.Logf("%v", tr)
	if err != nil || tr.Clients != n || tr.Received == 0 || tr.Silent != 0 {
		t.Fatalf("traffic through charon: %v, %v", tr, err)
	}
}
