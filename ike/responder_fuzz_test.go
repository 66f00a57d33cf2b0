package ike

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// The responder's whole message handler under a fuzzer: a real Responder
// (not running: its handle method is driven directly, no sockets, no
// goroutines) and the project's own initiator wired to it synchronously,
// so that a fuzzed message can arrive at any stage of a client's life:
// before any state exists, on a half-open IKE SA, and on an established
// one. The fuzzer cannot forge integrity checksums, so for the deep stages
// the harness seals the fuzzed inner payloads with the IKE SA's real keys
// (and, for IKE_AUTH, recomputes the PSK AUTH over the fuzzed identity):
// every check after decryption is then reachable.

// fuzzGatewayAddr is where the rig's responder listens.
var fuzzGatewayAddr = netip.MustParseAddrPort("192.0.2.1:500")

// fuzzPSK is the key the rig's client authenticates with.
var fuzzPSK = []byte("a pre-shared key for the fuzz rig")

// syncSent is one datagram the responder sent.
type syncSent struct {
	data  []byte
	local netip.Addr // the gateway address it left from
	to    netip.AddrPort
}

// syncGateway is the responder's transport in the rig: it records what
// the responder sends and hands it to the client session's inbox.
type syncGateway struct {
	rig *fuzzRig
}

func (g syncGateway) SendFrom(msg []byte, local netip.Addr, to netip.AddrPort, natT bool) error {
	g.rig.sent = append(g.rig.sent, syncSent{data: append([]byte(nil), msg...), local: local, to: to})
	if g.rig.s != nil && to.Addr() == g.rig.clientAddr {
		g.rig.s.Deliver(msg, netip.AddrPortFrom(fuzzGatewayAddr.Addr(), to.Port()), natT)
	}
	return nil
}

// syncClient is the session's transport: each datagram is handled by the
// responder at once, on the caller's goroutine.
type syncClient struct {
	rig *fuzzRig
}

func (c syncClient) Send(msg []byte, to netip.AddrPort, natT bool) error {
	port := uint16(500)
	if natT {
		port = 4500
	}
	c.rig.fromClient = append(c.rig.fromClient, append([]byte(nil), msg...))
	c.rig.r.handle(inbound{data: append([]byte(nil), msg...), local: to.Addr(), from: netip.AddrPortFrom(c.rig.clientAddr, port), natT: natT})
	return nil
}

// fuzzRig is a responder and one client session wired synchronously.
type fuzzRig struct {
	r          *Responder
	h          *fuzzHandler
	s          *Session
	clientAddr netip.Addr
	sent       []syncSent
	fromClient [][]byte
	init       *initResult // the client's IKE_SA_INIT, when run
}

// fuzzHandler is a ResponderHandler that counts what it holds.
type fuzzHandler struct {
	installed, removed int
}

func (h *fuzzHandler) InstallChild(*RemoteClient, *ChildSA, bool) error { h.installed++; return nil }
func (h *fuzzHandler) SwitchOutbound(*RemoteClient, *ChildSA)           {}
func (h *fuzzHandler) RemoveChild(*RemoteClient, *ChildSA)              { h.removed++ }

func newFuzzRig(tb testing.TB) *fuzzRig { return newFuzzRigWith(tb, nil) }

// newFuzzRigWith is newFuzzRig with the responder's configuration changed
// by mod.
func newFuzzRigWith(tb testing.TB, mod func(*ResponderConfig)) *fuzzRig {
	tb.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ikeP, espP := mustFuzzProposals(tb)
	rig := &fuzzRig{h: &fuzzHandler{}, clientAddr: netip.MustParseAddr("192.0.2.10")}
	cfg := ResponderConfig{
		LocalID: Identity{Type: wire.IDFQDN, Data: []byte("gw.mifsec.test")},
		PSK:     fuzzPSK,
		IKE:     ikeP, ESP: espP,
		Pools:           []netip.Prefix{netip.MustParsePrefix("10.3.0.0/28"), netip.MustParsePrefix("fd03::/64")},
		DNS:             []netip.Addr{netip.MustParseAddr("10.1.0.53")},
		LocalTS:         []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd01::/64")},
		CookieThreshold: 4, MaxHalfOpen: 8,
		Logger:         quiet,
		MobilityConfig: MobilityConfig{},
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewResponder(cfg, syncGateway{rig}, rig.h)
	if err != nil {
		tb.Fatal(err)
	}
	rig.r = r
	s, err := NewSession(SessionConfig{
		Remote:  fuzzGatewayAddr,
		LocalID: Identity{Type: wire.IDRFC822, Data: []byte("client@mifsec.test")},
		PSK:     fuzzPSK, IKE: ikeP, ESP: espP,
		RequestIPv4: true, RequestIPv6: true,
		Retransmit:     RetransmitPolicy{Timeout: time.Hour, Tries: 1},
		Logger:         quiet,
		MobilityConfig: MobilityConfig{},
	}, syncClient{rig}, &childLog{})
	if err != nil {
		tb.Fatal(err)
	}
	rig.s = s
	return rig
}

func mustFuzzProposals(tb testing.TB) ([]ProposalSpec, []ProposalSpec) {
	tb.Helper()
	i, err := ParseIKEProposals("aes256gcm16-prfsha256-x25519")
	if err != nil {
		tb.Fatal(err)
	}
	e, err := ParseESPProposals("aes256gcm16-x25519,aes128gcm16")
	if err != nil {
		tb.Fatal(err)
	}
	return i, e
}

// halfOpen runs the client's IKE_SA_INIT only.
func (rig *fuzzRig) halfOpen(tb testing.TB) {
	tb.Helper()
	rig.s.remote, rig.s.natT = rig.s.cfg.Remote, false
	init, err := rig.s.initExchange(context.Background())
	if err != nil {
		tb.Fatalf("IKE_SA_INIT in the fuzz rig: %v", err)
	}
	rig.s.remote, rig.s.natT = netip.AddrPortFrom(rig.s.remote.Addr(), 4500), true
	rig.init = init
}

// establish runs IKE_SA_INIT and IKE_AUTH.
func (rig *fuzzRig) establish(tb testing.TB) {
	tb.Helper()
	rig.halfOpen(tb)
	if err := rig.s.authExchange(context.Background(), rig.init, true); err != nil {
		tb.Fatalf("IKE_AUTH in the fuzz rig: %v", err)
	}
}

// deliver hands the responder one datagram from the client's address.
func (rig *fuzzRig) deliver(data []byte, natT bool) {
	port := uint16(500)
	if natT {
		port = 4500
	}
	rig.r.handle(inbound{data: data, from: netip.AddrPortFrom(rig.clientAddr, port), natT: natT})
}

// sealFromClient seals payloads as a request of the client's IKE SA sa.
func (rig *fuzzRig) sealFromClient(sa *ikeSA, exchange wire.ExchangeType, id uint32, payloads []wire.Payload) [][]byte {
	datagrams, err := sealMessage(sa, exchange, id, false, payloads)
	if err != nil {
		return nil // a payload the codec refuses to marshal: nothing to send
	}
	return datagrams
}

// fixAuth replaces the AUTH data of an IKE_AUTH request with the PSK MAC
// a client of the fuzzed identity would compute, so that the responder's
// checks after authentication are reached.
func (rig *fuzzRig) fixAuth(ps []wire.Payload) {
	idi, auth := wire.FindID(ps, false), wire.Find[*wire.Auth](ps)
	if idi == nil || auth == nil || auth.Method != wire.AuthPSK || rig.init == nil {
		return
	}
	sa := rig.init.sa
	id := Identity{Type: idi.IDType, Data: idi.Data}
	octets := initiatorSignedOctets(sa.keys.prf().Sum, rig.init.request, sa.nr, sa.keys.SKpi(), id.PayloadBody())
	auth.Data = pSKAuth(sa.keys.prf().Sum, fuzzPSK, octets)
}

// checkInvariants fails when the responder's tables disagree with each
// other or with the limits.
func (rig *fuzzRig) checkInvariants(t *testing.T) {
	t.Helper()
	r := rig.r
	if len(r.halfOpen) > r.cfg.MaxHalfOpen {
		t.Fatalf("%d half-open IKE SAs, the limit is %d", len(r.halfOpen), r.cfg.MaxHalfOpen)
	}
	for k, sa := range r.halfOpen {
		if r.sas[k] != sa {
			t.Fatal("a half-open IKE SA is missing from the IKE SA table")
		}
		if sa.half == nil {
			t.Fatal("a half-open IKE SA has no half-open state")
		}
	}
	leases := 0
	for _, c := range r.clients {
		if r.sas[saKey{c.sa.spiI, c.sa.spiR}] != c.sa {
			t.Fatalf("client %s: its IKE SA is not in the table", c.ID)
		}
		leases += len(c.Addresses)
	}
	pooled := 0
	for _, p := range r.pools {
		pooled += p.Leased()
	}
	if pooled != leases {
		t.Fatalf("pools hold %d leases, clients %d", pooled, leases)
	}
	for k, sa := range r.sas {
		if sa.client != nil && !containsClient(r.clients, sa.client) {
			t.Fatalf("IKE SA %x of a client that left is still known", k.spiR)
		}
		if sa.client != nil && sa.half != nil {
			t.Fatalf("IKE SA %x of an admitted client kept its half-open state", k.spiR)
		}
	}
	perID := map[string]int{}
	for _, c := range r.clients {
		if perID[c.key]++; r.cfg.MaxSAsPerIdentity > 0 && perID[c.key] > r.cfg.MaxSAsPerIdentity {
			t.Fatalf("identity %s holds %d IKE SAs, the limit is %d", c.ID, perID[c.key], r.cfg.MaxSAsPerIdentity)
		}
		if c.key != c.ID.Key() {
			t.Fatalf("client filed as %q, its canonical identity is %q", c.key, c.ID.Key())
		}
	}
	bySource := 0
	for src, list := range r.perSource {
		if len(list) == 0 || len(list) > r.cfg.MaxHalfOpenPerSource {
			t.Fatalf("source %v holds %d half-open IKE SAs", src, len(list))
		}
		for _, sa := range list {
			if r.halfOpen[saKey{sa.spiI, sa.spiR}] != sa || sourceOf(sa.from) != src {
				t.Fatal("the per-source table names an IKE SA that is not half-open from that source")
			}
		}
		bySource += len(list)
	}
	if bySource != len(r.halfOpen) {
		t.Fatalf("per-source table holds %d half-open IKE SAs, the table %d", bySource, len(r.halfOpen))
	}
	for k, sa := range r.initIndex {
		if r.halfOpen[saKey{sa.spiI, sa.spiR}] != sa || k.spiI != sa.spiI || k.from != sa.from {
			t.Fatal("the retransmission index names an IKE SA that is not half-open")
		}
	}
	for _, s := range rig.sent {
		if s.to.Addr() != rig.clientAddr && s.to.Addr() != fuzzAttacker.Addr() {
			t.Fatalf("the responder sent to %v, from which nothing came", s.to)
		}
	}
}

func containsClient(cs []*rClient, c *rClient) bool {
	for _, o := range cs {
		if o == c {
			return true
		}
	}
	return false
}

// fuzzAttacker is the source of raw fuzzed datagrams.
var fuzzAttacker = netip.MustParseAddrPort("198.51.100.7:500")

// Fuzz stages: what the rig has done before the fuzzed input arrives.
const (
	fuzzRawFresh       = iota // a raw datagram to a responder with no state
	fuzzAuthPayloads          // IKE_AUTH inner payloads on a half-open IKE SA
	fuzzClientPayloads        // a request's inner payloads on an established IKE SA
	fuzzRawEstablished        // a raw datagram, SPIs set to an established IKE SA
	fuzzRawDraining           // a raw datagram to a draining gateway whose client was redirected (redirect.go)
	fuzzStages
)

// fuzzResponderSeeds builds the seed corpus from a real exchange between
// the project's initiator and responder: the raw IKE_SA_INIT and IKE_AUTH
// datagrams and the inner payloads of IKE_AUTH, rekeys, a liveness check,
// MOBIKE and MIF requests and deletes.
func fuzzResponderSeeds(f *testing.F) {
	rig := newFuzzRig(f)
	rig.establish(f)
	ctx := context.Background()
	// Inner payloads of what the client sent, decrypted with the
	// responder's keys.
	addInner := func(raw []byte) {
		m, err := wire.Parse(raw)
		if err != nil || m.Exchange == wire.IKE_SA_INIT {
			return
		}
		sa := rig.r.sas[saKey{m.SPIi, m.SPIr}]
		if sa == nil {
			return
		}
		inner, err := m.Decrypt(sa.keys.in)
		if err != nil {
			return
		}
		first, b, err := wire.MarshalPayloads(inner)
		if err != nil {
			f.Fatal(err)
		}
		stage := uint8(fuzzClientPayloads)
		if m.Exchange == wire.IKE_AUTH {
			stage = fuzzAuthPayloads
		}
		f.Add(stage, uint8(m.Exchange), append([]byte{byte(first)}, b...))
	}
	for _, raw := range rig.fromClient {
		f.Add(uint8(fuzzRawFresh), uint8(0), raw)
		f.Add(uint8(fuzzRawEstablished), uint8(0), raw)
		f.Add(uint8(fuzzRawDraining), uint8(0), raw)
		addInner(raw)
	}
	rig.fromClient = nil
	if err := rig.s.rekeyChild(ctx); err != nil {
		f.Fatal(err)
	}
	if _, err := rig.s.exchange(ctx, rig.s.sa, wire.INFORMATIONAL, nil, rig.s.cfg.Retransmit); err != nil {
		f.Fatal(err)
	}
	for _, raw := range rig.fromClient {
		addInner(raw)
	}
	// Hand-made requests the exchange above does not send.
	for _, ps := range [][]wire.Payload{
		{&wire.Notify{NotifyType: wire.UPDATE_SA_ADDRESSES}, &wire.Notify{NotifyType: wire.COOKIE2, Data: newCookie2()},
			&wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: make([]byte, 20)}, &wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: make([]byte, 20)}},
		{&wire.Notify{NotifyType: wire.MIF_PATH_ADD, Data: wire.PathAdd{ID: 2, Kind: wire.PathKindCellular, Priority: 1}.Marshal()}, &wire.Notify{NotifyType: wire.COOKIE2, Data: newCookie2()}},
		{&wire.Notify{NotifyType: wire.MIF_PATH_REMOVE, Data: wire.PathRemoveData(2)}},
		{&wire.Delete{Protocol: wire.ProtoESP, SPIs: [][]byte{{0, 0, 1, 0}}}},
		{&wire.Delete{Protocol: wire.ProtoIKE}},
		{&wire.Notify{NotifyType: wire.ADDITIONAL_IP4_ADDRESS, Data: []byte{192, 0, 2, 11}}},
	} {
		first, b, err := wire.MarshalPayloads(ps)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(fuzzClientPayloads), uint8(wire.INFORMATIONAL), append([]byte{byte(first)}, b...))
	}
	// A traffic selector payload with many ranges, the costly case.
	var many []wire.TrafficSelector
	for i := range 40 {
		a := netip.AddrFrom4([4]byte{10, 3, 0, byte(2 * i)})
		many = append(many, wire.TrafficSelector{EndPort: 65535, Start: a, End: a.Next()})
	}
	first, b, err := wire.MarshalPayloads([]wire.Payload{
		&wire.ID{IDType: wire.IDFQDN, Data: []byte("c.example")}, &wire.Auth{Method: wire.AuthPSK, Data: make([]byte, 32)},
		&wire.CP{CfgType: wire.CFG_REQUEST, Attributes: []wire.CPAttribute{{Type: wire.INTERNAL_IP4_ADDRESS}}},
		&wire.SA{Proposals: offerESP(rig.s.cfg.ESP, 0x1000, false)},
		&wire.TS{Selectors: many}, &wire.TS{Responder: true, Selectors: many},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(fuzzAuthPayloads), uint8(wire.IKE_AUTH), append([]byte{byte(first)}, b...))
}

// FuzzResponderHandle feeds arbitrary input to the responder's message
// handler at each stage of a client's life. The handler must not panic,
// must keep its tables consistent (every client's IKE SA known, leases
// matching the clients, half-open SAs within the limit) and must send
// only to sources messages came from.
func FuzzResponderHandle(f *testing.F) {
	fuzzResponderSeeds(f)
	f.Fuzz(func(t *testing.T, stage, exchange uint8, data []byte) {
		rig := runFuzzStage(t, stage, exchange, data)
		rig.r.tick()
		rig.checkInvariants(t)
	})
}

// runFuzzStage builds a rig, brings it to stage and delivers data.
func runFuzzStage(t *testing.T, stage, exchange uint8, data []byte) *fuzzRig {
	rig := newFuzzRig(t)
	switch stage % fuzzStages {
	case fuzzRawFresh:
		rig.r.handle(inbound{data: data, from: fuzzAttacker})
		rig.r.handle(inbound{data: data, from: fuzzAttacker}) // a retransmission
	case fuzzAuthPayloads:
		rig.halfOpen(t)
		ps := fuzzInner(data)
		if ps == nil {
			return rig
		}
		rig.fixAuth(ps)
		for range 2 { // the second is a retransmission
			for _, d := range rig.sealFromClient(rig.init.sa, wire.IKE_AUTH, 1, ps) {
				rig.deliver(d, true)
			}
		}
	case fuzzClientPayloads:
		rig.establish(t)
		ps := fuzzInner(data)
		if ps == nil {
			return rig
		}
		ex := wire.ExchangeType(exchange)
		if ex < wire.IKE_SA_INIT || ex > wire.INFORMATIONAL+1 {
			ex = wire.INFORMATIONAL
		}
		datagrams := rig.sealFromClient(rig.s.sa, ex, rig.s.sa.nextOut, ps)
		for range 2 {
			for _, d := range datagrams {
				rig.deliver(d, true)
			}
		}
	case fuzzRawEstablished:
		rig.establish(t)
		if len(data) >= 16 {
			binary.BigEndian.PutUint64(data[0:], rig.s.sa.spiI)
			binary.BigEndian.PutUint64(data[8:], rig.s.sa.spiR)
		}
		rig.deliver(data, true)
		rig.r.handle(inbound{data: data, from: fuzzAttacker, natT: true})
	case fuzzRawDraining:
		rig = newFuzzRigWith(t, func(c *ResponderConfig) {
			r, err := NewStaticRedirector([]netip.Addr{netip.MustParseAddr("192.0.2.200")})
			if err != nil {
				t.Fatal(err)
			}
			c.Redirector = r
		})
		rig.establish(t)
		now := rig.r.cfg.Now()
		rig.r.draining, rig.r.drainUntil = true, now.Add(time.Hour)
		rig.r.drainTick(now) // the client is sent an INFORMATIONAL with REDIRECT
		rig.r.handle(inbound{data: data, from: fuzzAttacker})
		rig.deliver(data, false)
	}
	return rig
}

// TestFuzzRigReachesDeep checks that the harness gets past
// authentication: the client's real IKE_AUTH payloads, under another
// identity, authenticate and install a Child SA, and a Delete of the IKE
// SA on an established one drops the client.
func TestFuzzRigReachesDeep(t *testing.T) {
	seed := newFuzzRig(t)
	seed.establish(t)
	var inner []wire.Payload
	for _, raw := range seed.fromClient {
		m, err := wire.Parse(raw)
		if err != nil || m.Exchange != wire.IKE_AUTH {
			continue
		}
		if inner, err = m.Decrypt(seed.r.sas[saKey{m.SPIi, m.SPIr}].keys.in); err != nil {
			t.Fatal(err)
		}
	}
	wire.FindID(inner, false).Data = []byte("other@mifsec.test")
	first, b, err := wire.MarshalPayloads(inner)
	if err != nil {
		t.Fatal(err)
	}
	rig := runFuzzStage(t, fuzzAuthPayloads, uint8(wire.IKE_AUTH), append([]byte{byte(first)}, b...))
	if rig.h.installed != 1 || len(rig.r.clients) != 1 || rig.r.clients[0].ID.String() != "other@mifsec.test" {
		t.Fatalf("IKE_AUTH through the harness: %d Child SAs installed, clients %d", rig.h.installed, len(rig.r.clients))
	}
	rig.checkInvariants(t)

	first, b, err = wire.MarshalPayloads([]wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}})
	if err != nil {
		t.Fatal(err)
	}
	rig = runFuzzStage(t, fuzzClientPayloads, uint8(wire.INFORMATIONAL), append([]byte{byte(first)}, b...))
	if len(rig.r.clients) != 0 || rig.h.removed != 1 {
		t.Fatalf("a Delete through the harness left %d clients, removed %d Child SAs", len(rig.r.clients), rig.h.removed)
	}
	rig.checkInvariants(t)
}

// fuzzInner parses a fuzzed inner payload chain: the first byte is the
// first payload's type. nil when it does not parse.
func fuzzInner(data []byte) []wire.Payload {
	if len(data) == 0 {
		return nil
	}
	ps, err := wire.ParsePayloads(wire.PayloadType(data[0]), data[1:])
	if err != nil {
		return nil
	}
	if ps == nil {
		ps = []wire.Payload{}
	}
	return ps
}

// TestFuzzRigDrains checks that the draining stage reaches the redirects:
// the established client is sent a REDIRECT, and the client's own
// IKE_SA_INIT, delivered again from elsewhere and from the client, is
// answered with one each time, with no new state.
func TestFuzzRigDrains(t *testing.T) {
	seed := newFuzzRig(t)
	seed.establish(t)
	var init []byte
	for _, raw := range seed.fromClient {
		if m, err := wire.Parse(raw); err == nil && m.Exchange == wire.IKE_SA_INIT {
			init = raw
		}
	}
	if init == nil {
		t.Fatal("no IKE_SA_INIT from the client")
	}
	rig := runFuzzStage(t, fuzzRawDraining, 0, init)
	if rig.r.redirected != 3 || len(rig.r.halfOpen) != 0 {
		t.Fatalf("%d redirects, %d half-open IKE SAs; want 3 (the client's IKE SA, its IKE_SA_INIT twice) and none", rig.r.redirected, len(rig.r.halfOpen))
	}
	rig.checkInvariants(t)
}
