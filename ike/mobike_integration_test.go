package ike

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/testenv"
)

// udpPath is a Transport on one UDP socket bound to one local address and
// port 4500: the non-ESP marker goes before every IKE message.
type udpPath struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sent int
}

func (u *udpPath) Send(msg []byte, to netip.AddrPort, natT bool) error {
	b := msg
	if natT {
		b = append(make([]byte, 4, 4+len(msg)), msg...)
	}
	u.mu.Lock()
	u.sent++
	u.mu.Unlock()
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

func (u *udpPath) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sent
}

// serve hands IKE messages (those behind the non-ESP marker) to deliver
// until the socket closes.
func (u *udpPath) serve(deliver func([]byte, netip.AddrPort, bool)) {
	buf := make([]byte, 65536)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n > 4 && buf[0]|buf[1]|buf[2]|buf[3] == 0 {
			deliver(buf[4:n], from, true)
		}
	}
}

// ikeSARe matches an IKE SA of `swanctl --list-sas`: its SPIs, then its
// local and remote endpoints.
var ikeSARe = regexp.MustCompile(`(?s)gw: #\d+, ESTABLISHED, IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r\*?.*?local\s+'[^']*' @ (\S+)\s.*?remote\s+'[^']*' @ (\S+)`)

type swanSA struct{ spiI, spiR, local, remote string }

func listIKESA(t *testing.T, c *strongswan.Charon) swanSA {
	t.Helper()
	out := c.MustSwanctl("--list-sas")
	m := ikeSARe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no established IKE SA in swanctl --list-sas:\n%s", out)
	}
	return swanSA{m[1], m[2], m[3], m[4]}
}

// TestMOBIKEWithStrongSwan moves an IKE SA between two client interfaces
// against strongSwan: connect with MOBIKE on path 1, test path 2, update
// the addresses to path 2, then check strongSwan's view and that liveness
// checks work on path 2 alone.
func TestMOBIKEWithStrongSwan(t *testing.T) {
	strongswan.Require(t)
	testenv.RequireRoot(t)
	cl, gw := testenv.NewNamedNetns(t, "mobike-cl"), testenv.NewNamedNetns(t, "mobike-gw")
	if1, _ := testenv.Veth(t, cl, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Veth(t, cl, gw, netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24"))
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	const psk = "a secret the client and strongSwan share"
	charon := strongswan.Start(t, strongswan.Config{Netns: gw, Swanctl: fmt.Sprintf(`connections {
	gw {
		version = 2
		proposals = aes256gcm16-prfsha256-x25519
		pools = pool4
		mobike = yes
		local {
			auth = psk
			id = gw.example
		}
		remote {
			auth = psk
			id = client.example
		}
		children {
			net {
				local_ts = 10.1.0.0/24
				esp_proposals = aes256gcm16
			}
		}
	}
}
pools {
	pool4 {
		addrs = 10.3.0.0/24
	}
}
secrets {
	ike-1 {
		id-gw = gw.example
		id-cl = client.example
		secret = %q
	}
}
`, psk)})

	var u1, u2 *udpPath
	testenv.InNamedNetns(t, cl, func() {
		for _, p := range []struct {
			u    **udpPath
			addr string
		}{{&u1, "192.0.2.1:4500"}, {&u2, "198.51.100.1:4500"}} {
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(p.addr)))
			if err != nil {
				t.Fatalf("binding %s: %v", p.addr, err)
			}
			t.Cleanup(func() { conn.Close() })
			*p.u = &udpPath{conn: conn}
		}
	})
	path1 := Path{ID: "veth1", Local: netip.MustParseAddrPort("192.0.2.1:4500"), Transport: u1}
	path2 := Path{ID: "veth2", Local: netip.MustParseAddrPort("198.51.100.1:4500"), Gateway: netip.MustParseAddr("198.51.100.2"), Transport: u2}

	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	h := &pathLog{}
	p1 := path1
	s, err := NewSession(SessionConfig{Remote: netip.MustParseAddrPort("192.0.2.2:4500"), LocalID: mustID(t, "client.example"),
		RemoteID: mustID(t, "gw.example"), PSK: []byte(psk), IKE: ikeP, ESP: espP, RequestIPv4: true, DPD: time.Hour,
		MobilityConfig: MobilityConfig{Path: &p1, PathCheck: RetransmitPolicy{Timeout: time.Second, Tries: 3}}}, nil, h)
	if err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	for _, u := range []*udpPath{u1, u2} {
		readers.Go(func() { u.serve(s.Deliver) })
	}
	t.Cleanup(func() { u1.conn.Close(); u2.conn.Close(); readers.Wait() })

	ctx, cancel := context.WithCancel(context.Background())
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	if err := s.Connect(cctx); err != nil {
		cancel()
		t.Fatalf("connect: %v\ncharon:\n%s", err, charon.Log())
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if !s.MOBIKE() {
		t.Fatalf("strongSwan did not negotiate MOBIKE\ncharon:\n%s", charon.Log())
	}
	st := s.Status()
	if !slices.Contains(st.GatewayAddresses, "198.51.100.2") {
		t.Fatalf("strongSwan's other address is not among the gateway's additional addresses %v", st.GatewayAddresses)
	}
	before := listIKESA(t, charon)
	if before.spiI != st.IKESPIi || before.spiR != st.IKESPIr || before.remote != "192.0.2.1[4500]" {
		t.Fatalf("strongSwan's IKE SA %+v, ours %s_%s from 192.0.2.1", before, st.IKESPIi, st.IKESPIr)
	}

	call := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := f(ctx); err != nil {
			t.Fatalf("%s: %v\ncharon:\n%s", what, err, charon.Log())
		}
	}
	var rtt time.Duration
	call("CheckPath", func(ctx context.Context) (err error) { rtt, err = s.CheckPath(ctx, path2); return err })
	t.Logf("path test on path 2: RTT %v", rtt)
	if sa := listIKESA(t, charon); sa.remote != "192.0.2.1[4500]" {
		t.Fatalf("a path test moved strongSwan's IKE SA: %+v", sa)
	}

	var took time.Duration
	call("UpdateAddresses", func(ctx context.Context) error {
		start := time.Now()
		err := s.UpdateAddresses(ctx, path2)
		took = time.Since(start)
		return err
	})
	t.Logf("UpdateAddresses to path 2 took %.2f ms", float64(took.Microseconds())/1000)
	after := listIKESA(t, charon)
	if after.spiI != before.spiI || after.spiR != before.spiR {
		t.Fatalf("the IKE SA changed SPIs: %+v -> %+v", before, after)
	}
	if after.remote != "198.51.100.1[4500]" || after.local != "198.51.100.2[4500]" {
		t.Fatalf("strongSwan's IKE SA after the update: %+v\n%s", after, charon.MustSwanctl("--list-sas"))
	}
	// strongSwan's requests after the update (kernel-libipsec rekeys the
	// Child SA to move it) are answered on path 2.
	if log := charon.Log(); strings.Contains(log[strings.Index(log, "N(UPD_SA_ADDR)"):], "received packet: from 192.0.2.1") {
		t.Fatalf("answers to strongSwan left on path 1 after the update:\n%s", log)
	}
	if ch := h.changes(); len(ch) != 1 || ch[0].ID != "veth2" {
		t.Fatalf("PathChanged calls %+v", ch)
	}

	// Path 1 goes away: liveness checks keep working on path 2 alone.
	testenv.Exec(t, cl, "ip", "link", "set", if1, "down")
	sent1, sent2 := u1.count(), u2.count()
	for i := range 3 {
		call(fmt.Sprintf("liveness check %d", i), func(ctx context.Context) error {
			return s.call(ctx, func(loop context.Context, r *callResult) error {
				_, err := s.exchange(loop, s.sa, wire.INFORMATIONAL, nil, s.cfg.Retransmit)
				r.set(err)
				return nil
			})
		})
	}
	if u1.count() != sent1 || u2.count() < sent2+3 {
		t.Fatalf("liveness checks sent %d on path 1 and %d on path 2", u1.count()-sent1, u2.count()-sent2)
	}
	// And a second path test, now of the dead path 1, fails without
	// harming the IKE SA.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if _, err := s.CheckPath(ctx2, path1); !errors.Is(err, ErrPathSilent) {
		t.Fatalf("path test of a dead path: %v", err)
	}
	if final := listIKESA(t, charon); final.spiI != before.spiI || final.remote != "198.51.100.1[4500]" || s.Status().Reconnects != 0 {
		t.Fatalf("after the failed path test: strongSwan %+v, reconnects %d", final, s.Status().Reconnects)
	}
	if strings.Contains(charon.Log(), "COOKIE2 mismatch") {
		t.Fatalf("strongSwan saw a COOKIE2 mismatch:\n%s", charon.Log())
	}
}
