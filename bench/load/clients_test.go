package load

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/inetsum"
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
