package mif

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/scheduler"
	"github.com/mifsec/mifsec/tun"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// TestFallbackPicker checks that packets go to the fallback path while
// the scheduler has no usable path, that the fallback follows SetFallback
// and RemovePath, and that a pick allocates nothing (it runs per packet).
func TestFallbackPicker(t *testing.T) {
	pp := newPeerPaths(peerPathsConfig{Engine: nil, Policy: scheduler.PolicyOffload, Logger: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		name string
		set  func()
		want scheduler.PathID
	}{
		{"no fallback drops", func() {}, noEnginePath},
		{"fallback", func() { pp.SetFallback(3) }, 3},
		{"moved", func() { pp.SetFallback(1) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			if got := pp.picker.Pick(1400); got != tc.want {
				t.Errorf("Pick = %d, want %d", got, tc.want)
			}
		})
	}
	if n := testing.AllocsPerRun(1000, func() { pp.picker.Pick(1400) }); n != 0 {
		t.Errorf("Pick allocates %v times per packet", n)
	}
	// Removing the fallback path drops again rather than sending to a
	// path that is gone.
	go pp.prober.Run(t.Context())
	pp.RemovePath(1)
	if got := pp.picker.Pick(1400); got != noEnginePath {
		t.Errorf("after removing the fallback path: Pick = %d", got)
	}
}

// TestGatewayMultipathPeer drives the gateway's ResponderPathHandler the
// way the responder does for a MIF client: the first MIF path turns
// multipath on for that client only (path 0 is its IKE address), the
// routes move to the client's group, a MOBIKE move re-points path 0 with
// the priority of the MIF path at the new address, a removed path leaves
// the group, and the client's last Child SA stops its goroutines.
func TestGatewayMultipathPeer(t *testing.T) {
	conn, err := udp.Listen(context.Background(), udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := tun.NewMemory(tun.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	self, err := conn.NewEndpoint(conn.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{addr: netip.MustParseAddr("127.0.0.1"), natT: conn, path: &dataplane.Path{ID: 0, Conn: conn, Remote: self}}
	engine, err := dataplane.NewEngine(dataplane.EngineConfig{Queues: []wgtun.Device{mem}, Paths: []*dataplane.Path{l.path}})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	g := &Gateway{cfg: GatewayConfig{Policy: scheduler.PolicyOffload}, listeners: []*listener{l}, engine: engine,
		kids: map[uint32]*gatewayChild{}, clients: map[*ike.RemoteClient]*gatewayClient{}, mpeers: map[*ike.RemoteClient]*gatewayPeer{},
		log: slog.New(slog.DiscardHandler), runCtx: t.Context()}

	mif := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.10:4500")}
	plain := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.11:4500")}
	key := make([]byte, 36)
	install := func(c *ike.RemoteClient, spi uint32, prefix string) {
		t.Helper()
		child := &ike.ChildSA{InSPI: spi, OutSPI: spi + 1, Algorithm: "aes256gcm16", InKey: key, OutKey: key,
			LocalTS: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, RemoteTS: []netip.Prefix{netip.MustParsePrefix(prefix)}}
		if err := g.InstallChild(c, child, true); err != nil {
			t.Fatal(err)
		}
	}
	install(mif, 0x1000, "10.3.0.2/32")
	install(plain, 0x2000, "10.3.0.3/32")
	for _, spi := range []uint32{0x1000, 0x2000} {
		if _, ok := g.probeKids.Load(spi); ok {
			t.Errorf("Child SA %#x of a client with one path is kept for probe replies", spi)
		}
	}

	g.PathAdded(mif, ike.PathInfo{ID: 2, Kind: wire.PathKindCellular, Priority: 2, Remote: netip.MustParseAddrPort("198.51.100.7:4500")})
	g.mu.Lock()
	p := g.mpeers[mif]
	npeers := len(g.mpeers)
	g.mu.Unlock()
	if p == nil || npeers != 1 {
		t.Fatalf("peers %d, client's %v: want multipath for the MIF client only", npeers, p)
	}
	if v, ok := g.probeKids.Load(uint32(0x1000)); !ok || v.(*gatewayChild).peer.Load() != p {
		t.Error("the client's probes do not reach its peer")
	}
	if _, ok := g.probeKids.Load(uint32(0x2000)); ok {
		t.Error("the client without multipath is kept for probe replies")
	}
	for _, r := range engine.Routes() {
		want := g.kids[0x2000].group
		if r.Prefix.String() == "10.3.0.2/32" {
			want = p.pp.Group()
		}
		if r.Group != want {
			t.Errorf("route %v sends on the wrong group", r.Prefix)
		}
	}
	remotes := func() map[scheduler.PathID]string {
		out := map[scheduler.PathID]string{}
		for _, sp := range p.pp.Status() {
			out[scheduler.PathID(sp.ID)] = sp.Remote
		}
		return out
	}
	if got := remotes(); len(got) != 2 || got[0] != "192.0.2.10:4500" || got[2] != "198.51.100.7:4500" {
		t.Errorf("paths %v", got)
	}

	// The client moves IKE to its cellular path.
	mif.Remote = netip.MustParseAddrPort("198.51.100.7:4500")
	g.ClientMoved(mif)
	for _, sp := range p.pp.Status() {
		if sp.ID == 0 && (sp.Remote != "198.51.100.7:4500" || sp.Tier != 2 || sp.Kind != "cellular") {
			t.Errorf("path 0 after the move: %+v", sp)
		}
	}
	g.PathRemoved(mif, 2)
	if got := remotes(); len(got) != 1 || got[0] != "198.51.100.7:4500" {
		t.Errorf("paths after removing 2: %v", got)
	}

	// A client without a Child SA that announces paths starts nothing:
	// nothing would ever stop it.
	childless := &ike.RemoteClient{Remote: netip.MustParseAddrPort("192.0.2.12:4500")}
	for id := uint16(1); id <= 50; id++ {
		g.PathAdded(childless, ike.PathInfo{ID: id, Kind: wire.PathKindWLAN, Remote: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), 4500+id)})
	}
	g.mu.Lock()
	_, started := g.mpeers[childless]
	g.mu.Unlock()
	if started {
		t.Error("paths of a client without a Child SA started its multipath scheduling (goroutines nothing would stop)")
	}

	g.RemoveChild(mif, &ike.ChildSA{InSPI: 0x1000})
	select {
	case <-p.done:
	default:
		t.Error("the client's multipath goroutines still run after its last Child SA went")
	}
	g.mu.Lock()
	npeers = len(g.mpeers)
	g.mu.Unlock()
	if npeers != 0 {
		t.Errorf("%d peers left", npeers)
	}
}
