package dataplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

func testSA(t testing.TB, spi uint32) *dataplane.SA {
	t.Helper()
	key := make([]byte, dataplane.AES256GCM16.KeyLen())
	rand.Read(key)
	sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: spi, Algorithm: dataplane.AES256GCM16, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

func cloneSA(t testing.TB, sa *dataplane.SA, key []byte) *dataplane.SA {
	t.Helper()
	c, err := dataplane.NewSA(dataplane.SAConfig{SPI: sa.SPI(), Algorithm: dataplane.AES256GCM16, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEngineRouteHelpers(t *testing.T) {
	a, _ := newPair(t, pairConfig{})
	sa1, sa2, sa3 := testSA(t, 0x3001), testSA(t, 0x3002), testSA(t, 0x3003)
	a.e.SetRoutes(nil)
	a.e.AddRoutes(dataplane.Route{Prefix: netip.MustParsePrefix("10.3.0.0/24"), Sources: dataplane.AnyAddress, SA: sa1})
	a.e.AddRoutes(
		dataplane.Route{Prefix: netip.MustParsePrefix("10.3.0.2/32"), Sources: dataplane.AnyAddress, SA: sa2},
		dataplane.Route{Prefix: netip.MustParsePrefix("fd03::2/128"), Sources: dataplane.AnyAddress, SA: sa2})
	r := a.e.Routes()
	if len(r) != 3 || r[2].SA != sa1 || r[0].Prefix.Bits() != 128 {
		t.Fatalf("routes not sorted most specific first: %v", r)
	}
	if n := a.e.ReplaceRouteSA(sa2, sa3); n != 2 {
		t.Fatalf("replaced %d routes, want 2", n)
	}
	if n := a.e.RemoveRoutes(sa2); n != 0 {
		t.Fatalf("removed %d routes of a replaced SA", n)
	}
	if n := a.e.RemoveRoutes(sa3); n != 2 {
		t.Fatalf("removed %d routes, want 2", n)
	}
	if r := a.e.Routes(); len(r) != 1 || r[0].SA != sa1 {
		t.Fatalf("left %v", r)
	}
	r = a.e.Routes()
	r[0].SA = nil // a copy: the engine's list is untouched
	if a.e.Routes()[0].SA != sa1 {
		t.Fatal("Routes returned the engine's own slice")
	}
}

// TestEngineRoutesToTwoClients is a gateway with one socket and two
// clients: each client's routes carry its endpoint, and each client gets
// only its own packets.
func TestEngineRoutesToTwoClients(t *testing.T) {
	listen := func() *udp.Conn {
		c, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	gwConn, c1Conn, c2Conn, nowhere := listen(), listen(), listen(), listen()
	defer nowhere.Close()
	type client struct {
		conn *udp.Conn
		tun  *tun.Memory
		e    *dataplane.Engine
		out  *dataplane.SA // on the gateway
		addr string
	}
	gwTun, err := tun.NewMemory(tun.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := dataplane.NewEngine(dataplane.EngineConfig{
		Queues: []wgtun.Device{gwTun},
		// The path's own Remote is a socket nobody reads: every packet
		// must follow its route's member's Remote.
		Paths: []*dataplane.Path{{ID: 0, Conn: gwConn, Remote: mustEndpoint(t, gwConn, nowhere.LocalAddr())}},
	})
	if err != nil {
		t.Fatal(err)
	}
	clients := []*client{{conn: c1Conn, addr: "10.3.0.2"}, {conn: c2Conn, addr: "10.3.0.3"}}
	for i, c := range clients {
		key := make([]byte, dataplane.AES256GCM16.KeyLen())
		rand.Read(key)
		c.out = cloneSA(t, testSA(t, uint32(0x4001+i)), key)
		if c.tun, err = tun.NewMemory(tun.MemoryConfig{RecordWrites: 100}); err != nil {
			t.Fatal(err)
		}
		c.e, err = dataplane.NewEngine(dataplane.EngineConfig{
			Queues: []wgtun.Device{c.tun},
			Paths:  []*dataplane.Path{{ID: 0, Conn: c.conn, Remote: mustEndpoint(t, c.conn, gwConn.LocalAddr())}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.e.AddInbound(cloneSA(t, c.out, key), c.out, dataplane.AnyAddress, dataplane.AnyAddress); err != nil {
			t.Fatal(err)
		}
		gw.AddRoutes(dataplane.Route{
			Prefix:  netip.PrefixFrom(netip.MustParseAddr(c.addr), 32),
			Sources: dataplane.AnyAddress,
			SA:      c.out,
			Group:   dataplane.NewPathGroup(nil, dataplane.GroupMember{Path: 0, Remote: mustEndpoint(t, gwConn, c.conn.LocalAddr())}),
		})
	}
	run(t, &side{e: gw}, &side{e: clients[0].e}, &side{e: clients[1].e})
	var want [2][][]byte
	for i := range 40 {
		c := i % 2
		p := udpPacket(t, "10.1.0.1:53", clients[c].addr+":1000", bytes.Repeat([]byte{byte(i)}, 10+i))
		want[c] = append(want[c], p)
		if err := gwTun.Inject(p); err != nil {
			t.Fatal(err)
		}
	}
	for c, cl := range clients {
		got := receiveAll(t, cl.tun, len(want[c]))
		for i := range got {
			if !bytes.Equal(got[i], want[c][i]) {
				t.Fatalf("client %d packet %d: got %x want %x", c, i, got[i], want[c][i])
			}
		}
	}
	// Removing one client's routes leaves the other reachable.
	gw.RemoveRoutes(clients[0].out)
	gwTun.Inject(udpPacket(t, "10.1.0.1:53", "10.3.0.2:1000", []byte("gone")))
	last := udpPacket(t, "10.1.0.1:53", "10.3.0.3:1000", []byte("still here"))
	gwTun.Inject(last)
	if got := receiveAll(t, clients[1].tun, 1); !bytes.Equal(got[0], last) {
		t.Fatalf("client 2 got %x", got[0])
	}
	testenv.WaitUntil(t, 10*time.Second, "1 no-route drop at the gateway", func() bool { return gw.Stats.NoRoute.Load() == 1 })
	if n := len(clients[0].tun.Writes()); n != 0 {
		t.Fatalf("client 1 got %d packets after its routes were removed", n)
	}
}
