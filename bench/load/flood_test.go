package load

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

func TestFloodIKESAInitRefusesOtherTargets(t *testing.T) {
	src := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	for _, target := range []string{"8.8.8.8:500", "10.0.0.1:500", "[2001:db8::1]:500", "127.0.0.1:0"} {
		if _, err := floodIKESAInit(context.Background(), netip.MustParseAddrPort(target), 10, time.Millisecond, src); err == nil {
			t.Errorf("flood of %s was not refused", target)
		}
	}
	if _, err := floodIKESAInit(context.Background(), netip.MustParseAddrPort("127.0.0.1:500"), maxFloodRate+1, time.Millisecond, src); err == nil {
		t.Error("a rate above MaxFloodRate was not refused")
	}
	if _, err := floodIKESAInit(context.Background(), netip.MustParseAddrPort("127.0.0.1:500"), 10, maxFloodDuration+time.Second, src); err == nil {
		t.Error("a duration above MaxFloodDuration was not refused")
	}
}

func TestFloodIKESAInit(t *testing.T) {
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetReadBuffer(1 << 20); err != nil {
		t.Log(err)
	}
	type got struct {
		n     int
		from  map[netip.Addr]bool
		spis  map[uint64]bool
		error string
	}
	done := make(chan got, 1)
	go func() {
		g := got{from: map[netip.Addr]bool{}, spis: map[uint64]bool{}}
		buf := make([]byte, 2048)
		for {
			l.SetReadDeadline(time.Now().Add(time.Second))
			n, from, err := l.ReadFromUDPAddrPort(buf)
			if err != nil {
				done <- g
				return
			}
			m, err := wire.Parse(buf[:n])
			switch {
			case err != nil:
				g.error = err.Error()
			case m.Exchange != wire.IKE_SA_INIT || m.IsResponse() || !m.IsInitiator() || m.SPIr != 0:
				g.error = "not an IKE_SA_INIT request"
			case wire.Find[*wire.SA](m.Payloads) == nil || wire.Find[*wire.Nonce](m.Payloads) == nil:
				g.error = "SA or Nonce missing"
			default:
				ke := wire.Find[*wire.KE](m.Payloads)
				if ke == nil || ke.Group != wire.DH_CURVE25519 || len(ke.Data) != 32 {
					g.error = "bad KE"
				}
			}
			if g.error != "" {
				done <- g
				return
			}
			g.n++
			g.from[from.Addr()] = true
			g.spis[m.SPIi] = true
		}
	}()
	sources := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")}
	target := l.LocalAddr().(*net.UDPAddr).AddrPort()
	start := time.Now()
	sent, err := floodIKESAInit(context.Background(), target, 1000, 200*time.Millisecond, sources)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	g := <-done
	if g.error != "" {
		t.Fatalf("after %d datagrams: %s", g.n, g.error)
	}
	t.Logf("sent %d in %v, received %d from %d sources", sent, elapsed, g.n, len(g.from))
	if sent != 200 || g.n != sent {
		t.Fatalf("sent %d, received %d, want 200", sent, g.n)
	}
	if len(g.from) != len(sources) || len(g.spis) != g.n {
		t.Fatalf("%d sources, %d distinct SPIs for %d datagrams", len(g.from), len(g.spis), g.n)
	}
	if elapsed > 3*time.Second { // paced for 200 ms; a loaded host stretches it
		t.Fatalf("took %v", elapsed)
	}
}
