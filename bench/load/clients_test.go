package load

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/internal/inetsum"
	"github.com/mifsec/mifsec/mif"
)

func TestEchoRequest(t *testing.T) {
	src, dst := netip.MustParseAddr("10.3.0.7"), netip.MustParseAddr("10.1.0.1")
	b := make([]byte, 64)
	n := echoRequest(b, src, dst, 0x1234, 9)
	p := b[:n]
	if n != 44 || p[0] != 0x45 || p[9] != 1 || binary.BigEndian.Uint16(p[2:]) != 44 {
		t.Fatalf("IP header % x", p[:20])
	}
	if got := netip.AddrFrom4([4]byte(p[12:16])); got != src {
		t.Errorf("source %v", got)
	}
	if got := netip.AddrFrom4([4]byte(p[16:20])); got != dst {
		t.Errorf("destination %v", got)
	}
	// A correct Internet checksum sums to zero over what it covers.
	if c := inetsum.Checksum(p[:20]); c != 0 {
		t.Errorf("IP header checksum does not verify: %#x", c)
	}
	if c := inetsum.Checksum(p[20:]); c != 0 {
		t.Errorf("ICMP checksum does not verify: %#x", c)
	}
	if p[20] != 8 || binary.BigEndian.Uint16(p[24:]) != 0x1234 || binary.BigEndian.Uint16(p[26:]) != 9 {
		t.Errorf("ICMP header % x", p[20:28])
	}
}

func TestEchoReply(t *testing.T) {
	b := make([]byte, 64)
	n := echoRequest(b, netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.3.0.7"), 7, 3)
	reply := func(mod func(p []byte)) []byte {
		p := append([]byte(nil), b[:n]...)
		p[20] = 0 // echo reply
		if mod != nil {
			mod(p)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		p    []byte
		id   uint16
		ok   bool
	}{
		{"reply", reply(nil), 7, true},
		{"other identifier", reply(nil), 8, false},
		{"request", b[:n], 7, false},
		{"not ICMP", reply(func(p []byte) { p[9] = 17 }), 7, false},
		{"IPv6", reply(func(p []byte) { p[0] = 0x60 }), 7, false},
		{"header length too short", reply(func(p []byte) { p[0] = 0x44 }), 7, false},
		{"header length past the end", reply(func(p []byte) { p[0] = 0x4f }), 7, false},
		{"truncated", reply(nil)[:25], 7, false},
		{"empty", nil, 7, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, data, ok := echoReply(tc.p, tc.id)
			if ok != tc.ok || (ok && (seq != 3 || string(data) != "mifsec fleet 01.")) {
				t.Fatalf("echoReply = %d, %q, %v; want ok %v", seq, data, ok, tc.ok)
			}
		})
	}
}

func FuzzEchoReply(f *testing.F) {
	b := make([]byte, 64)
	n := echoRequest(b, netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.3.0.7"), 7, 3)
	b[20] = 0
	f.Add(b[:n], uint16(7))
	f.Add([]byte{0x4f, 0, 0, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, p []byte, id uint16) {
		seq, data, ok := echoReply(p, id)
		if ok && (len(p) < 28 || binary.BigEndian.Uint16(p[int(p[0]&0xf)*4+6:]) != seq ||
			string(data) != string(p[int(p[0]&0xf)*4+8:])) {
			t.Fatalf("accepted % x as an echo reply with sequence %d, data % x", p, seq, data)
		}
	})
}

func TestSummarizeClients(t *testing.T) {
	var results []ClientResult
	for i := range 100 {
		results = append(results, ClientResult{Handshake: time.Duration(i+1) * time.Millisecond,
			Established: time.Duration(i+10) * time.Millisecond, TrafficOK: i%10 != 0, EchoRTT: time.Millisecond})
	}
	results = append(results, ClientResult{Err: errors.New("connecting: timeout")}, ClientResult{Err: errors.New("connecting: timeout")})
	r := summarizeClients(results)
	if r.Count != 102 || r.Established != 100 || r.TrafficOK != 90 {
		t.Errorf("counts %+v", r)
	}
	if r.HandshakeP50 != 50*time.Millisecond || r.HandshakeP99 != 99*time.Millisecond || r.HandshakeMax != 100*time.Millisecond {
		t.Errorf("handshake quantiles %v %v %v", r.HandshakeP50, r.HandshakeP99, r.HandshakeMax)
	}
	if r.All != 0 {
		t.Errorf("All = %v although two clients never connected", r.All)
	}
	if len(r.Errors) != 1 || !strings.HasPrefix(r.Errors[0], "2× ") {
		t.Errorf("errors %q", r.Errors)
	}
	if r := summarizeClients(results[:100]); r.All != 109*time.Millisecond {
		t.Errorf("All = %v, want the last client's 109ms", r.All)
	}
}

func TestStartClientsRefuses(t *testing.T) {
	gw, target := netip.MustParseAddrPort("192.0.2.2:500"), netip.MustParseAddr("10.1.0.1")
	for _, tc := range []struct {
		name string
		cfg  ClientsConfig
	}{
		{"no clients", ClientsConfig{Gateway: gw, Target: target, PSK: []byte("k")}},
		{"no gateway", ClientsConfig{Count: 1, Target: target, PSK: []byte("k")}},
		{"IPv6 target", ClientsConfig{Count: 1, Gateway: gw, Target: netip.MustParseAddr("fd01::1"), PSK: []byte("k")}},
		{"no credentials", ClientsConfig{Count: 1, Gateway: gw, Target: target}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, err := StartClients(context.Background(), tc.cfg); err == nil {
				f.Close()
				t.Fatal("accepted")
			}
		})
	}
}

// TestStartClientsNoGateway runs a fleet against a port nobody answers:
// every client fails with a timeout, none hangs.
func TestStartClientsNoGateway(t *testing.T) {
	f, err := StartClients(context.Background(), ClientsConfig{Count: 3, Gateway: netip.MustParseAddrPort("127.0.0.1:9"),
		Target: netip.MustParseAddr("10.1.0.1"), PSK: []byte("k"), Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := f.Report()
	if r.Established != 0 || r.TrafficOK != 0 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "3×") {
		t.Fatalf("report %v", r)
	}
}

// TestPingWaitsForTunnel: a client whose session tore its tunnel down
// (no outbound SA) waits for the new one within its echo timeout, and its
// echo then counts as passed after a reconnect; one whose tunnel does not
// come back fails saying so.
func TestPingWaitsForTunnel(t *testing.T) {
	// The echoes go to the gateway's port 4500: a socket there takes
	// them, so that they reach nobody else.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4500})
	if err != nil {
		t.Skipf("needs 127.0.0.1:4500 free for the echoes: %v", err)
	}
	defer sink.Close()
	key := make([]byte, 36)
	_, out, err := mif.NewChildSAs(&ike.ChildSA{InSPI: 0x1001, OutSPI: 0x2002, Algorithm: "aes256gcm16", InKey: key, OutKey: key})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		back    bool // the tunnel comes back after 1.5 s
		wantErr string
	}{
		{"tunnel back", true, ""},
		{"tunnel gone", false, "no tunnel again within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cfg := &ClientsConfig{Gateway: netip.MustParseAddrPort("127.0.0.1:500"), Target: netip.MustParseAddr("10.1.0.1"), Timeout: 4 * time.Second}
			c := &fleetClient{cfg: cfg, conn: conn, echo: make(chan uint16, 64), addrs: []netip.Prefix{netip.MustParsePrefix("10.3.0.2/32")}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			if tc.back {
				wg.Go(func() {
					select {
					case <-ctx.Done():
						return
					case <-time.After(1500 * time.Millisecond):
					}
					c.mu.Lock()
					c.out, c.addrs = out, []netip.Prefix{netip.MustParsePrefix("10.3.0.9/32")}
					c.mu.Unlock()
					// The gateway's replies: every sequence number now and
					// then (awaitEcho drops the others).
					for ctx.Err() == nil {
						for seq := uint16(1); seq < 16; seq++ {
							select {
							case c.echo <- seq:
							default:
							}
						}
						time.Sleep(50 * time.Millisecond)
					}
				})
			}
			_, echoes, reconnected, err := c.ping(ctx, netip.MustParseAddr("10.3.0.2"))
			if !reconnected {
				t.Error("a ping that found no tunnel does not say so")
			}
			if tc.wantErr == "" && (err != nil || echoes < 2) {
				t.Fatalf("ping through the new tunnel: %v after %d echoes", err, echoes)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ping without a tunnel: %v, want %q", err, tc.wantErr)
			}
		})
	}
	r := summarizeClients([]ClientResult{{Handshake: time.Second, TrafficOK: true, Reconnected: true}, {Handshake: time.Second, TrafficOK: true}})
	if r.Reconnected != 1 || !strings.Contains(r.String(), "1 passed their echo only after their tunnel was set up again") {
		t.Fatalf("report %+v: %s", r, r)
	}
}
