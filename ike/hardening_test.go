package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testenv"
)

// Regression tests for the security review's findings on the responder
// (limits.go, identity.go's Canonical, selectors.go).

func TestIdentityCanonical(t *testing.T) {
	same := [][2]string{
		{"alice.example", "ALICE.example"},
		{"alice.example", "alice.example."},
		{"alice.example", "Alice.Example.."},
		{"alice@example.org", "ALICE@Example.ORG"},
		{"alice@example.org", "alice@example.org."},
		{"C=CH, O=strongSwan, CN=alice", "c=ch, o=STRONGSWAN, cn=Alice"},
		{"C=CH, O=strongSwan, CN=alice", "C=CH,  O=strongSwan,CN=  alice  "},
		{"C=CH, O=strongSwan, CN=alice + UID=7", "C=CH, O=strongSwan, UID=7 + CN=alice"},
		{"10.0.0.1", "ipv6:::ffff:10.0.0.1"},
		{"2001:db8::1", "2001:DB8:0:0::1"},
	}
	for _, tc := range same {
		a, b := mustID(t, tc[0]), mustID(t, tc[1])
		if a.Key() != b.Key() {
			t.Errorf("%q and %q: keys %q and %q differ", tc[0], tc[1], a.Key(), b.Key())
		}
		if !a.Canonical().Equal(b.Canonical()) {
			t.Errorf("%q and %q: canonical forms not Equal", tc[0], tc[1])
		}
	}
	different := [][2]string{
		{"alice.example", "alice.example.org"},
		{"alice.example", "fqdn:alice@example"},
		{"alice@example.org", "bob@example.org"},
		{"alice@example.org", "fqdn:alice@example.org"}, // type differs
		{"C=CH, CN=alice", "C=CH, CN=bob"},
		{"C=CH, CN=alice", "CN=alice, C=CH"}, // RDN order matters
		{"@#0a0b", "@#0A0C"},
		{"10.0.0.1", "10.0.0.2"},
		{"alice.example", "\u212alice.example"}, // only ASCII is folded
	}
	for _, tc := range different {
		a, b := mustID(t, tc[0]), mustID(t, tc[1])
		if a.Key() == b.Key() {
			t.Errorf("%q and %q share the key %q", tc[0], tc[1], a.Key())
		}
	}
	// The canonical form of a canonical form is itself.
	for _, tc := range append(same, different...) {
		c := mustID(t, tc[1]).Canonical()
		if c.Canonical().Key() != c.Key() || !bytes.Equal(c.Canonical().Data, c.Data) {
			t.Errorf("%q: canonicalising twice changes it", tc[1])
		}
	}
}

// M1: another spelling of a client's identity with the shared key neither
// authenticates as that client nor evicts it; the client itself may use
// any spelling with its own key and keeps its lease.
func TestResponderIdentitySpellings(t *testing.T) {
	shared, aliceKey := []byte("the shared key"), []byte("alice's own key")
	w, _ := startResponder(t, ResponderConfig{PSK: shared, ClientPSKs: map[string][]byte{"alice.example": aliceKey}})
	alice, ach := w.newClient(t, "192.0.2.40", SessionConfig{PSK: aliceKey, LocalID: mustID(t, "alice.example")})
	connect(t, alice, true)
	for i, spelling := range []string{"ALICE.example", "alice.example.", "Alice.Example."} {
		addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(41 + i)}).String()
		mallory, _ := w.newClient(t, addr, SessionConfig{PSK: shared, LocalID: mustID(t, spelling)})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := mallory.connect(ctx, true)
		cancel()
		if !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("%q with the shared key: %v, want authentication to fail", spelling, err)
		}
		if st := clients(t, w); len(st) != 1 || st[0].IKESPIi != alice.Status().IKESPIi {
			t.Fatalf("after %q: clients %+v, want Alice's IKE SA only", spelling, st)
		}
	}
	// Alice again, from another host, spelled otherwise, with her key:
	// INITIAL_CONTACT replaces her old IKE SA and she keeps her address.
	again, ach2 := w.newClient(t, "192.0.2.50", SessionConfig{PSK: aliceKey, LocalID: mustID(t, "ALICE.EXAMPLE.")})
	connect(t, again, true)
	st := clients(t, w)
	if len(st) != 1 || st[0].IKESPIi != again.Status().IKESPIi || st[0].ID != "alice.example" {
		t.Fatalf("after Alice's reconnect: %+v", st)
	}
	if !slices.Equal(ach.addrs, ach2.addrs) {
		t.Fatalf("Alice's lease changed with the spelling: %v then %v", ach.addrs, ach2.addrs)
	}
}

func TestResponderPSKSpellingsTwice(t *testing.T) {
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	_, err := NewResponder(ResponderConfig{LocalID: mustID(t, "gw.example"), IKE: ikeP, ESP: espP,
		LocalTS:    []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")},
		ClientPSKs: map[string][]byte{"alice.example": []byte("one"), "ALICE.example.": []byte("two")}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "two pre-shared keys") {
		t.Fatalf("two keys for one identity in two spellings: %v", err)
	}
}

// lastRequestFrom returns the last datagram the rig's client sent.
func (rig *fuzzRig) lastRequest(t *testing.T) []byte {
	t.Helper()
	if len(rig.fromClient) == 0 {
		t.Fatal("the client sent nothing")
	}
	return rig.fromClient[len(rig.fromClient)-1]
}

// sentTo counts the datagrams the responder sent to a.
func (rig *fuzzRig) sentTo(a netip.AddrPort) int {
	n := 0
	for _, s := range rig.sent {
		if s.to == a {
			n++
		}
	}
	return n
}

// M2: the cached response goes out again only for a byte-identical copy
// of the request, from the client's address, a bounded number of times.
func TestResponderRetransmissionNoReflection(t *testing.T) {
	rig := newFuzzRig(t)
	rig.establish(t)
	if _, err := rig.s.exchange(context.Background(), rig.s.sa, wire.INFORMATIONAL, nil, rig.s.cfg.Retransmit); err != nil {
		t.Fatal(err)
	}
	req := rig.lastRequest(t)
	client := netip.AddrPortFrom(rig.clientAddr, 4500)
	victim := netip.MustParseAddrPort("203.0.113.9:4500")

	rig.r.handle(inbound{data: slices.Clone(req), from: victim, natT: true})
	if n := rig.sentTo(victim); n != 0 {
		t.Fatalf("a copy of the client's request from a spoofed source got %d datagrams", n)
	}
	forged := slices.Clone(req)
	forged[len(forged)-1] ^= 1
	before := rig.sentTo(client)
	rig.deliver(forged, true)
	if rig.sentTo(client) != before {
		t.Fatal("a retransmission that fails the integrity check was answered")
	}
	rig.deliver(slices.Clone(req), true)
	if rig.sentTo(client) != before+1 {
		t.Fatal("a genuine retransmission from the client was not answered")
	}
	for range 3 * maxResends {
		rig.deliver(slices.Clone(req), true)
	}
	if got := rig.sentTo(client) - before; got != maxResends {
		t.Fatalf("the response was sent again %d times, want at most %d", got, maxResends)
	}
}

// M2 for IKE_SA_INIT: its response goes again only to the source of the
// request and only for the same bytes.
func TestResponderInitRetransmission(t *testing.T) {
	rig := newFuzzRig(t)
	rig.halfOpen(t)
	req := rig.fromClient[0]
	client := netip.AddrPortFrom(rig.clientAddr, 500)
	first := rig.sent[0].data
	spiR := func(b []byte) uint64 { return binary.BigEndian.Uint64(b[8:16]) }

	rig.deliver(slices.Clone(req), false)
	if last := rig.sent[len(rig.sent)-1]; last.to != client || !bytes.Equal(last.data, first) {
		t.Fatal("a retransmitted IKE_SA_INIT did not get the same response")
	}
	other := netip.AddrPortFrom(rig.clientAddr, 501)
	rig.r.handle(inbound{data: slices.Clone(req), from: other})
	for _, s := range rig.sent {
		if s.to == other && spiR(s.data) == spiR(first) {
			t.Fatal("the cached IKE_SA_INIT response went to another source")
		}
	}
	changed := slices.Clone(req)
	changed[len(changed)-1] ^= 1 // the last payload's data
	n := len(rig.sent)
	rig.deliver(changed, false)
	for _, s := range rig.sent[n:] {
		if spiR(s.data) == spiR(first) {
			t.Fatal("the cached IKE_SA_INIT response answered different bytes")
		}
	}
}

// worstSelectors is a TS payload's worth of selectors that each split
// into the most prefixes: [::1, ffff:...:fffe] is 254 prefixes.
func worstSelectors(n int) []wire.TrafficSelector {
	out := make([]wire.TrafficSelector, n)
	for i := range out {
		out[i] = wire.TrafficSelector{EndPort: 65535, Start: netip.MustParseAddr("::1"),
			End: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")}
	}
	return out
}

// narrowWorst is what firstChild does with a worst-case request.
func narrowWorst(ts []wire.TrafficSelector, local, addrs []netip.Prefix) int {
	l, _ := narrowSelectors(ts, local, maxChildPrefixes)
	r, _ := narrowSelectors(ts, addrs, maxChildPrefixes)
	return len(l) + len(r)
}

// M5: a request with the most selectors allowed, each the costliest
// range, is narrowed with a bounded amount of work: a few allocations
// (the original code allocated per bit of every prefix and compared every
// result with every other), and ranges that would come to more prefixes
// than a Child SA may have are refused before they are built.
func TestSelectorWorkBound(t *testing.T) {
	ts := worstSelectors(maxSelectors)
	local := []netip.Prefix{netip.MustParsePrefix("fd01::/64"), netip.MustParsePrefix("2001:db8::/32")}
	addrs := []netip.Prefix{netip.MustParsePrefix("fd03::2/128")}
	if got := len(rangeToPrefixes(ts[0].Start, ts[0].End)); got != 254 {
		t.Fatalf("the worst range splits into %d prefixes, want 254", got)
	}
	if n := narrowWorst(ts, local, addrs); n != 3 {
		t.Fatalf("narrowing gave %d prefixes, want 3 (both local prefixes and the address)", n)
	}
	allocs := testing.AllocsPerRun(20, func() { narrowWorst(ts, local, addrs) })
	if allocs > 16 {
		t.Fatalf("narrowing a worst-case request took %.0f allocations, want at most 16", allocs)
	}
	// Ranges inside the local selectors that split into many prefixes
	// each: refused once past the bound, without building them all.
	var inside []wire.TrafficSelector
	for i := range maxSelectors {
		inside = append(inside, wire.TrafficSelector{EndPort: 65535,
			Start: netip.AddrFrom16([16]byte{0xfd, 1, 8: byte(2 * i), 15: 1}),
			End:   netip.AddrFrom16([16]byte{0xfd, 1, 8: byte(2 * i), 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xfe})})
	}
	if out, ok := narrowSelectors(inside, local, maxChildPrefixes); ok || out != nil {
		t.Fatalf("%d ranges of ~110 prefixes each were accepted as %d prefixes", len(inside), len(out))
	}
	allocs = testing.AllocsPerRun(20, func() { narrowSelectors(inside, local, maxChildPrefixes) })
	if allocs > 16 {
		t.Fatalf("refusing many prefixes took %.0f allocations, want at most 16", allocs)
	}
	// The same ranges, one per selector, within the bound, give the exact
	// addresses: narrowing keeps what is inside and drops what is not.
	got, ok := narrowSelectors([]wire.TrafficSelector{
		{Start: netip.MustParseAddr("10.0.255.255"), End: netip.MustParseAddr("10.1.0.9")},
		{Start: netip.MustParseAddr("10.1.0.8"), End: netip.MustParseAddr("10.1.0.15")},
		{Start: netip.MustParseAddr("10.9.0.0"), End: netip.MustParseAddr("10.9.0.1")},
	}, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, maxChildPrefixes)
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/28")}; !ok || !slices.Equal(got, want) {
		t.Fatalf("narrowing overlapping ranges: %v, want %v", got, want)
	}
}

// BenchmarkWorstCaseSelectors is the time a worst-case request's
// selectors cost the IKE goroutine.
func BenchmarkWorstCaseSelectors(b *testing.B) {
	ts := worstSelectors(maxSelectors)
	local := []netip.Prefix{netip.MustParsePrefix("fd01::/64"), netip.MustParsePrefix("2001:db8::/32")}
	addrs := []netip.Prefix{netip.MustParsePrefix("fd03::2/128")}
	b.ReportAllocs()
	for b.Loop() {
		narrowWorst(ts, local, addrs)
	}
}

// referenceRangeToPrefixes is the obvious, slow split of a range into
// prefixes, to check the fast one against.
func referenceRangeToPrefixes(start, end netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for {
		bits := start.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(start, bits-1)
			if p.Masked().Addr() != start || end.Less(lastAddr(p)) {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(start, bits)
		out = append(out, p)
		last := lastAddr(p)
		if last == end || !last.Next().IsValid() {
			return out
		}
		start = last.Next()
	}
}

func TestRangeToPrefixesMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func(is4 bool) netip.Addr {
		if is4 {
			return netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		}
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 { // long runs of zeros and ones
			for i := 4 + rng.IntN(12); i < 16; i++ {
				b[i] = byte(0xff * rng.IntN(2))
			}
		}
		return netip.AddrFrom16(b)
	}
	cases := [][2]string{{"0.0.0.0", "255.255.255.255"}, {"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"10.0.0.0", "10.0.0.0"}, {"255.255.255.255", "255.255.255.255"}, {"::1", "::1"}, {"0.0.0.1", "255.255.255.254"}}
	for range 2000 {
		is4 := rng.IntN(2) == 0
		a, b := randAddr(is4), randAddr(is4)
		if b.Less(a) {
			a, b = b, a
		}
		cases = append(cases, [2]string{a.String(), b.String()})
	}
	for _, c := range cases {
		a, b := netip.MustParseAddr(c[0]), netip.MustParseAddr(c[1])
		if got, want := rangeToPrefixes(a, b), referenceRangeToPrefixes(a, b); !slices.Equal(got, want) {
			t.Fatalf("[%s, %s]: %v, want %v", a, b, got, want)
		}
	}
	if got := rangeToPrefixes(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")); got != nil {
		t.Fatalf("a reversed range gave %v", got)
	}
}

// authReply runs the rig's client's IKE_AUTH with its payloads changed by
// mod and returns the responder's decrypted answer.
func (rig *fuzzRig) authReply(t *testing.T, mod func([]wire.Payload) []wire.Payload) []wire.Payload {
	t.Helper()
	seed := newFuzzRig(t)
	seed.establish(t)
	var inner []wire.Payload
	for _, raw := range seed.fromClient {
		if m, err := wire.Parse(raw); err == nil && m.Exchange == wire.IKE_AUTH {
			if inner, err = m.Decrypt(seed.r.sas[saKey{m.SPIi, m.SPIr}].keys.in); err != nil {
				t.Fatal(err)
			}
		}
	}
	inner = mod(inner)
	rig.halfOpen(t)
	rig.fixAuth(inner)
	n := len(rig.sent)
	for _, d := range rig.sealFromClient(rig.init.sa, wire.IKE_AUTH, 1, inner) {
		rig.deliver(d, true)
	}
	for _, s := range rig.sent[n:] {
		m, err := wire.Parse(s.data)
		if err != nil || m.Exchange != wire.IKE_AUTH {
			continue
		}
		reply, err := m.Decrypt(rig.init.sa.keys.in)
		if err != nil {
			t.Fatal(err)
		}
		return reply
	}
	t.Fatal("no IKE_AUTH response")
	return nil
}

// M5, M11: more selectors than allowed are refused with TS_UNACCEPTABLE,
// and the client refused its Child SA leaves nothing behind.
func TestResponderTooManySelectors(t *testing.T) {
	rig := newFuzzRig(t)
	reply := rig.authReply(t, func(ps []wire.Payload) []wire.Payload {
		for _, p := range ps {
			if ts, ok := p.(*wire.TS); ok {
				ts.Selectors = worstSelectors(maxSelectors + 1)
			}
		}
		return ps
	})
	if wire.FindNotify(reply, wire.TS_UNACCEPTABLE) == nil {
		t.Fatalf("%d selectors: answer %v, want TS_UNACCEPTABLE", maxSelectors+1, reply)
	}
	if len(rig.r.clients) != 0 || len(rig.r.sas) != 0 || rig.r.pools[0].Leased() != 0 {
		t.Fatalf("a client refused its Child SA left %d clients, %d IKE SAs, %d leases",
			len(rig.r.clients), len(rig.r.sas), rig.r.pools[0].Leased())
	}
}

// initRequest builds an IKE_SA_INIT request as an initiator would, with a
// nonce of nonceLen bytes and, when not nil, a cookie.
func initRequest(t testing.TB, spiI uint64, ikeSpec string, nonceLen int, cookie []byte) []byte {
	t.Helper()
	specs, err := ParseIKEProposals(ikeSpec)
	if err != nil {
		t.Fatal(err)
	}
	kex, err := NewKeyExchange(firstDHGroup(specs))
	if err != nil {
		t.Fatal(err)
	}
	var ps []wire.Payload
	if cookie != nil {
		ps = append(ps, &wire.Notify{NotifyType: wire.COOKIE, Data: cookie})
	}
	ps = append(ps, &wire.SA{Proposals: offerIKE(specs)}, &wire.KE{Group: kex.Group(), Data: kex.Public()}, &wire.Nonce{Data: make([]byte, nonceLen)})
	b, err := (&wire.Message{SPIi: spiI, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: ps}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// initAnswer is what the responder's last datagram to a says: a cookie
// to return, whether it created an IKE SA (a KE payload), an error.
func (rig *fuzzRig) initAnswer(t *testing.T, from netip.AddrPort, n int) (cookie []byte, ke bool, notify wire.NotifyType) {
	t.Helper()
	for _, s := range slices.Backward(rig.sent[n:]) {
		if s.to != from {
			continue
		}
		m, err := wire.Parse(s.data)
		if err != nil {
			t.Fatal(err)
		}
		if c := wire.FindNotify(m.Payloads, wire.COOKIE); c != nil {
			return c.Data, false, 0
		}
		if wire.Find[*wire.KE](m.Payloads) != nil {
			return nil, true, 0
		}
		if ns := wire.FindAll[*wire.Notify](m.Payloads); len(ns) > 0 {
			return nil, false, ns[0].NotifyType
		}
	}
	return nil, false, 0
}

// exchangeInit sends an IKE_SA_INIT from from, returning the cookie when
// asked for one, as a host that receives its answers does; it reports
// whether an IKE SA was created.
func (rig *fuzzRig) exchangeInit(t *testing.T, from netip.AddrPort, spiI uint64) bool {
	t.Helper()
	var cookie []byte
	for range 2 {
		n := len(rig.sent)
		rig.r.handle(inbound{data: initRequest(t, spiI, "aes256gcm16-prfsha256-x25519", 32, cookie), from: from})
		c, ke, _ := rig.initAnswer(t, from, n)
		if c == nil {
			return ke
		}
		cookie = c
	}
	return false
}

// M7: one host cannot fill the half-open table: beyond its share it
// must return a cookie and may only replace its own stale half-open IKE
// SAs; another host still gets in.
func TestResponderPerSourceLimits(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rig := newFuzzRigWith(t, func(c *ResponderConfig) {
		c.MaxHalfOpen, c.CookieThreshold, c.MaxHalfOpenPerSource = 64, 16, 4
		c.Now = func() time.Time { return now }
	})
	attacker := netip.MustParseAddr("198.51.100.66")
	flood := func(first, n int) (created int) {
		for i := range n {
			if rig.exchangeInit(t, netip.AddrPortFrom(attacker, uint16(first+i)), uint64(first+i)) {
				created++
			}
			if len(rig.r.halfOpen) > 4 {
				t.Fatalf("request %d: %d half-open IKE SAs from one host, the limit is 4", i, len(rig.r.halfOpen))
			}
		}
		return created
	}
	if created := flood(1000, 200); created != 4 {
		t.Fatalf("one host made the gateway create %d IKE SAs, want its share, 4", created)
	}
	now = now.Add(staleHalfOpen + time.Second) // its half-open SAs are stale now
	if created := flood(2000, 50); created != 4 || len(rig.r.halfOpen) != 4 {
		t.Fatalf("later: %d IKE SAs created (want the 4 stale ones replaced), %d half-open (want 4)", created, len(rig.r.halfOpen))
	}
	// IPv6 sources count by /64.
	for i := range 20 {
		from := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(i + 1)}), 500)
		rig.exchangeInit(t, from, uint64(3000+i))
	}
	if n := len(rig.r.perSource[netip.MustParsePrefix("2001:db8::/64")]); n != 4 {
		t.Fatalf("one IPv6 /64 holds %d half-open IKE SAs, want 4", n)
	}
	if !rig.exchangeInit(t, netip.MustParseAddrPort("192.0.2.77:500"), 4242) {
		t.Fatal("another host was kept out")
	}
}

// M7: the Diffie-Hellman work one source causes is paced by its budget;
// another source still gets in.
func TestResponderDHBudget(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	x25519 := dhCost(wire.DH_CURVE25519)
	rig := newFuzzRigWith(t, func(c *ResponderConfig) {
		c.MaxHalfOpen, c.CookieThreshold, c.MaxHalfOpenPerSource = 1000, 1000, 1000
		c.SourceDHBudget, c.DHBudget = 3*x25519, 100*x25519 // bursts of 6 and 200 exchanges
		c.IKE, _ = ParseIKEProposals("aes256gcm16-prfsha256-x25519,aes256gcm16-prfsha256-modp2048")
		c.Now = func() time.Time { return now }
	})
	attacker := netip.MustParseAddr("198.51.100.66")
	flood := func(first, n int) (created int) {
		for i := range n {
			if rig.exchangeInit(t, netip.AddrPortFrom(attacker, uint16(first+i)), uint64(first+i)) {
				created++
			}
		}
		return created
	}
	if created := flood(1000, 100); created != 6 {
		t.Fatalf("one source got %d Diffie-Hellman exchanges at once, want its burst, 6", created)
	}
	now = now.Add(time.Second)
	if created := flood(2000, 100); created != 3 {
		t.Fatalf("one second later: %d exchanges, want the budget's 3", created)
	}
	if !rig.exchangeInit(t, netip.MustParseAddrPort("192.0.2.77:500"), 4242) {
		t.Fatal("another source was kept out")
	}
	// MODP-2048 costs more than 50 X25519 exchanges: with this budget a
	// source gets none.
	if dhCost(wire.DH_MODP_2048) < 50*x25519 {
		t.Fatalf("MODP-2048 costs %v, X25519 %v", dhCost(wire.DH_MODP_2048), x25519)
	}
	n := len(rig.sent)
	rig.r.handle(inbound{data: initRequest(t, 5, "aes256gcm16-prfsha256-modp2048", 32, nil), from: netip.MustParseAddrPort("192.0.2.78:500")})
	if _, ke, notify := rig.initAnswer(t, netip.MustParseAddrPort("192.0.2.78:500"), n); ke || notify != 0 {
		t.Fatalf("a MODP-2048 exchange beyond the source's budget: computed %v, notify %d; want it dropped", ke, notify)
	}
	now = now.Add(time.Hour) // the global budget's burst covers one
	rig.r.cfg.SourceDHBudget = dhCost(wire.DH_MODP_2048)
	n = len(rig.sent)
	rig.r.handle(inbound{data: initRequest(t, 6, "aes256gcm16-prfsha256-modp2048", 32, nil), from: netip.MustParseAddrPort("192.0.2.79:500")})
	if _, ke, _ := rig.initAnswer(t, netip.MustParseAddrPort("192.0.2.79:500"), n); !ke {
		t.Fatal("a MODP-2048 exchange within the budgets was not computed")
	}
}

// TestResponderLargeDHBudget: a budget too large to matter (an hour of
// Diffie-Hellman a second) lets every IKE_SA_INIT through; the refill of a
// new source's bucket, from the zero time, overflowed a Duration and
// dropped them all.
func TestResponderLargeDHBudget(t *testing.T) {
	rig := newFuzzRigWith(t, func(c *ResponderConfig) {
		c.CookieThreshold, c.MaxHalfOpen = 1<<20, 1<<20
		c.SourceDHBudget, c.DHBudget = time.Hour, time.Hour
	})
	for i := range 3 {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), 500)
		n := len(rig.sent)
		rig.r.handle(inbound{data: initRequest(t, uint64(i+1), "aes256gcm16-prfsha256-x25519", 32, nil), from: from})
		if _, ke, notify := rig.initAnswer(t, from, n); !ke {
			t.Fatalf("IKE_SA_INIT %d: no IKE SA (notify %v, failures %v)", i, notify, rig.r.failures)
		}
	}
}

// A source that reached its half-open share must bring cookies for the
// calm-down after it dropped below, as all sources must after the table's
// cookie threshold (TestResponderCookieCalmDown): clients behind one NAT
// retry with their cookies while copies of their first requests wait.
func TestResponderSourceCookieCalmDown(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rig := newFuzzRigWith(t, func(c *ResponderConfig) {
		c.MaxHalfOpenPerSource, c.CookieThreshold, c.HalfOpenTimeout = 2, 100, time.Second
		c.Now = func() time.Time { return now }
	})
	nat := netip.MustParseAddr("192.0.2.81")
	spi := uint64(800)
	answer := func(from netip.AddrPort) (cookie bool) {
		t.Helper()
		spi++
		n := len(rig.sent)
		rig.r.handle(inbound{data: initRequest(t, spi, "aes256gcm16-prfsha256-x25519", 32, nil), from: from})
		c, ke, notify := rig.initAnswer(t, from, n)
		if c == nil && !ke {
			t.Fatalf("request from %v: neither a cookie nor an IKE SA (notify %v)", from, notify)
		}
		return c != nil
	}
	for port := range uint16(2) {
		if answer(netip.AddrPortFrom(nat, 4000+port)) {
			t.Fatal("a cookie below the source's share")
		}
	}
	if !answer(netip.AddrPortFrom(nat, 4002)) {
		t.Fatal("no cookie at the source's share")
	}
	now = now.Add(2 * time.Second)
	rig.r.tick()
	if len(rig.r.perSource) != 0 {
		t.Fatalf("half-open IKE SAs left: %v", rig.r.perSource)
	}
	if !answer(netip.AddrPortFrom(nat, 4003)) {
		t.Fatal("no cookie 2 s after the source was at its share")
	}
	if answer(netip.MustParseAddrPort("192.0.2.82:500")) {
		t.Fatal("another source had to bring a cookie")
	}
	now = now.Add(cookieCalmDown)
	rig.r.tick()
	if answer(netip.AddrPortFrom(nat, 4004)) {
		t.Fatal("a cookie after the calm-down")
	}
}

// M7: a spoofer that filled a victim's half-open share cannot keep the
// victim out: once they are stale, the victim returns the cookie and
// replaces the oldest.
func TestResponderSourceShareNotStuck(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rig := newFuzzRigWith(t, func(c *ResponderConfig) {
		c.MaxHalfOpenPerSource, c.CookieThreshold = 2, 100
		c.Now = func() time.Time { return now }
	})
	victim := netip.MustParseAddrPort("192.0.2.80:500")
	for i := range 2 { // spoofed: below the cookie threshold no cookie is asked
		rig.r.handle(inbound{data: initRequest(t, uint64(100+i), "aes256gcm16-prfsha256-x25519", 32, nil), from: victim})
	}
	if len(rig.r.halfOpen) != 2 {
		t.Fatalf("%d half-open", len(rig.r.halfOpen))
	}
	if rig.exchangeInit(t, victim, 776) {
		t.Fatal("a fresh half-open IKE SA was replaced: a handshake in progress would be cut short")
	}
	now = now.Add(staleHalfOpen)
	if !rig.exchangeInit(t, victim, 777) {
		t.Fatal("the victim was kept out of its own share")
	}
	if len(rig.r.halfOpen) != 2 {
		t.Fatalf("%d half-open after the replacement, want 2", len(rig.r.halfOpen))
	}
}

// L10: a nonce shorter than half the PRF's key is refused.
func TestResponderNonceLength(t *testing.T) {
	rig := newFuzzRigWith(t, func(c *ResponderConfig) {
		c.IKE, _ = ParseIKEProposals("aes256gcm16-prfsha512-x25519")
	})
	from := netip.MustParseAddrPort("192.0.2.90:500")
	for _, tc := range []struct {
		n  int
		ok bool
	}{{16, false}, {31, false}, {32, true}} {
		n := len(rig.sent)
		rig.r.handle(inbound{data: initRequest(t, uint64(tc.n), "aes256gcm16-prfsha512-x25519", tc.n, nil), from: from})
		_, ke, notify := rig.initAnswer(t, from, n)
		if ke != tc.ok || !tc.ok && notify != wire.INVALID_SYNTAX {
			t.Errorf("nonce of %d bytes with prfsha512: IKE SA %v, notify %d", tc.n, ke, notify)
		}
	}
}

// M11: an identity holds a bounded number of IKE SAs; INITIAL_CONTACT
// replaces them.
func TestResponderSAsPerIdentity(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k"), MaxSAsPerIdentity: 2})
	for i := range 2 {
		s, _ := w.newClient(t, netip.AddrFrom4([4]byte{192, 0, 2, byte(60 + i)}).String(), SessionConfig{PSK: []byte("k")})
		connect(t, s, false)
	}
	third, _ := w.newClient(t, "192.0.2.62", SessionConfig{PSK: []byte("k")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := third.connect(ctx, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("a third IKE SA of one identity: %v, want it refused", err)
	}
	if n := len(clients(t, w)); n != 2 {
		t.Fatalf("%d clients, want 2", n)
	}
	if n := leased(t, w); n != 4 {
		t.Fatalf("%d addresses leased for two clients", n)
	}
	other, _ := w.newClient(t, "192.0.2.63", SessionConfig{PSK: []byte("k"), LocalID: mustID(t, "other@mifsec.test")})
	connect(t, other, false)
	again, _ := w.newClient(t, "192.0.2.64", SessionConfig{PSK: []byte("k")})
	connect(t, again, true)
	st := clients(t, w)
	if len(st) != 2 || st[0].ID != "other@mifsec.test" || st[1].IKESPIi != again.Status().IKESPIi {
		t.Fatalf("after INITIAL_CONTACT: %+v", st)
	}
}

// A client that gave up on an IKE SA while its IKE_AUTH waited in the
// gateway's queue, and set up a newer one: the stale IKE_AUTH, handled
// last, carries INITIAL_CONTACT like the newer one's did. It is refused
// (counted as superseded) rather than dropping the IKE SA the client
// uses; an INITIAL_CONTACT from an IKE SA begun after the other's was
// established still replaces it.
func TestResponderStaleInitialContact(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stale, _ := w.newClient(t, "192.0.2.70", SessionConfig{PSK: []byte("k")})
	stale.remote, stale.natT = stale.cfg.Remote, false
	init, err := stale.initExchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live, _ := w.newClient(t, "192.0.2.71", SessionConfig{PSK: []byte("k")})
	connect(t, live, true)
	stale.remote, stale.natT = netip.AddrPortFrom(stale.remote.Addr(), 4500), true
	if err := stale.authExchange(ctx, init, true); err == nil {
		t.Fatal("the IKE_AUTH of an IKE SA begun before the established one was accepted")
	}
	st := clients(t, w)
	if len(st) != 1 || st[0].IKESPIi != live.Status().IKESPIi {
		t.Fatalf("after the stale INITIAL_CONTACT: %+v, want only the newer IKE SA %s", st, live.Status().IKESPIi)
	}
	if n := w.r.Failures(ctx)[FailSuperseded]; n != 1 {
		t.Fatalf("%s counted %d times, want 1", FailSuperseded, n)
	}
	if n := leased(t, w); n != 2 {
		t.Fatalf("%d addresses leased for one client", n)
	}
	again, _ := w.newClient(t, "192.0.2.72", SessionConfig{PSK: []byte("k")})
	connect(t, again, true)
	if st := clients(t, w); len(st) != 1 || st[0].IKESPIi != again.Status().IKESPIi {
		t.Fatalf("after a newer INITIAL_CONTACT: %+v, want only %s", st, again.Status().IKESPIi)
	}
}

// M11: a client refused its Child SA does not linger with its IKE SA.
func TestResponderChildRefusedFreesClient(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
	s, _ := w.newClient(t, "192.0.2.70", SessionConfig{PSK: []byte("k"),
		RemoteTS: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}) // outside the gateway's 10.1.0.0/24
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.connect(ctx, true); err == nil {
		t.Fatal("a Child SA outside the local selectors was accepted")
	}
	testenv.WaitUntil(t, 5*time.Second, "the gateway to forget every client", func() bool { return len(clients(t, w)) == 0 })
	if n := leased(t, w); n != 0 {
		t.Fatalf("%d addresses still leased", n)
	}
	w.r.do(ctx, func() {
		if len(w.r.sas) != 0 {
			t.Errorf("%d IKE SAs left", len(w.r.sas))
		}
	})
}

// L8: what a client chose as its identity reaches neither the status
// nor the log with control characters.
func TestIdentityPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"alice.example":           "alice.example",
		"evil\x1b[2J\x1b]0;x\x07": `evil\x1b[2J\x1b]0;x\x07`,
		"rtl\u202eexe.txt":        `rtl\u202eexe.txt`,
		"bad\xffutf8":             `bad\xffutf8`,
		"grüße":                   "grüße",
		"a\nb\tc\x7f":             `a\x0ab\x09c\x7f`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
	evil := Identity{Type: wire.IDFQDN, Data: []byte("x\x1b[31mred")}
	var log bytes.Buffer
	slog.New(slog.NewTextHandler(&log, nil)).Info("client", "id", evil)
	if bytes.ContainsRune(log.Bytes(), 0x1b) {
		t.Fatalf("log line carries an escape: %q", log.String())
	}
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
	s, _ := w.newClient(t, "192.0.2.71", SessionConfig{PSK: []byte("k"), LocalID: evil})
	connect(t, s, true)
	st := clients(t, w)
	if len(st) != 1 || strings.ContainsRune(st[0].ID, 0x1b) || st[0].ID != `x\x1b[31mred` {
		t.Fatalf("status shows %q", st[0].ID)
	}
}

// L4: a gateway with several addresses answers an authenticated client
// from the address its IKE SA uses, whatever arrives at another address:
// an IKE_SA_INIT from the client's own source or a copy of its request
// sent elsewhere neither moves it nor changes where the gateway answers
// from.
func TestResponderKeepsClientsGatewayAddress(t *testing.T) {
	rig := newFuzzRig(t)
	other := netip.MustParseAddr("198.51.100.1") // another address of the gateway
	client := netip.AddrPortFrom(rig.clientAddr, 4500)
	rig.halfOpen(t)
	if err := rig.s.authExchange(context.Background(), rig.init, true); err != nil {
		t.Fatal(err)
	}
	if c := rig.r.clients[0]; c.Local != fuzzGatewayAddr.Addr() || c.Remote != client {
		t.Fatalf("after IKE_AUTH the client talks to %v from %v, want %v from %v", c.Local, c.Remote, fuzzGatewayAddr.Addr(), client)
	}
	rig.r.handle(inbound{data: initRequest(t, 99, "aes256gcm16-prfsha256-x25519", 32, nil), local: other, from: client, natT: true})
	rig.r.handle(inbound{data: slices.Clone(rig.lastRequest(t)), local: other, from: fuzzAttacker, natT: true})
	rig.r.handle(inbound{data: slices.Clone(rig.lastRequest(t)), local: other, from: client, natT: true})
	if c := rig.r.clients[0]; c.Local != fuzzGatewayAddr.Addr() || c.Remote != client {
		t.Fatalf("after datagrams at another address the client talks to %v from %v, want %v from %v", c.Local, c.Remote, fuzzGatewayAddr.Addr(), client)
	}
	rig.sent = nil
	c := rig.r.clients[0]
	if err := rig.r.request(c, wire.INFORMATIONAL, nil, func([]wire.Payload) {}); err != nil {
		t.Fatal(err)
	}
	if len(rig.sent) != 1 || rig.sent[0].local != fuzzGatewayAddr.Addr() || rig.sent[0].to != client {
		t.Fatalf("the gateway's request left as %+v, want one from %v to %v", rig.sent, fuzzGatewayAddr.Addr(), client)
	}
}

// forgingPath is a client's transport on which an attacker answers each
// IKE_SA_INIT request first, with forged unprotected responses, before
// the real gateway's answer (when forward is true) arrives.
type forgingPath struct {
	clientSide
	s       *Session
	forward bool
	forged  atomic.Int32
}

func (p *forgingPath) Send(msg []byte, to netip.AddrPort, natT bool) error {
	if m, err := wire.Parse(msg); err == nil && m.Exchange == wire.IKE_SA_INIT && !m.IsResponse() {
		for _, ps := range [][]wire.Payload{
			{&wire.Notify{NotifyType: wire.NO_PROPOSAL_CHOSEN}},
			{&wire.Notify{NotifyType: wire.INVALID_KE_PAYLOAD, Data: []byte{0, 99}}}, // a group never offered
			{&wire.Nonce{Data: make([]byte, 32)}},                                    // no SA, no KE
		} {
			forged, err := (&wire.Message{SPIi: m.SPIi, SPIr: 7, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagResponse, Payloads: ps}).Marshal()
			if err != nil {
				return err
			}
			p.s.Deliver(forged, to, natT)
			p.forged.Add(1)
		}
	}
	if !p.forward {
		return nil
	}
	return p.clientSide.Send(msg, to, natT)
}

// L10: forged unprotected answers to IKE_SA_INIT do not abort the
// client: it waits for the gateway's; with none, the last forged error is
// what it reports once its retransmissions are spent.
func TestSessionIgnoresForgedInitErrors(t *testing.T) {
	w, _ := startResponder(t, ResponderConfig{PSK: []byte("k")})
	for _, forward := range []bool{true, false} {
		a := netip.MustParseAddr("192.0.2.95")
		path := &forgingPath{clientSide: clientSide{w, a}, forward: forward}
		ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
		s := w.attach(t, a, SessionConfig{Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), PSK: []byte("k"),
			IKE: ikeP, ESP: espP, RequestIPv4: true,
			Retransmit: RetransmitPolicy{Timeout: 200 * time.Millisecond, Backoff: 1, Tries: 2}}, path, &childLog{})
		path.s = s
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.connect(ctx, true)
		cancel()
		if path.forged.Load() == 0 {
			t.Fatal("nothing was forged")
		}
		switch {
		case forward && err != nil:
			t.Fatalf("with forged errors ahead of the gateway's answer: %v", err)
		case !forward && err == nil:
			t.Fatal("connected with only forged answers")
		case !forward && errors.Is(err, ErrTimeout):
			t.Fatalf("only forged answers: %v, want the last forged answer's error", err)
		}
		if forward {
			s.shutdown()
		}
	}
}

// L10: the initiator refuses a gateway nonce shorter than half its PRF's
// key.
func TestSessionNonceLength(t *testing.T) {
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha512-x25519", "aes256gcm16")
	s, err := NewSession(SessionConfig{Remote: netip.MustParseAddrPort("192.0.2.1:500"), LocalID: mustID(t, "c.example"),
		PSK: []byte("k"), IKE: ikeP, ESP: espP}, clientSide{}, &childLog{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n  int
		ok bool
	}{{16, false}, {31, false}, {32, true}} {
		kex, err := NewKeyExchange(wire.DH_CURVE25519)
		if err != nil {
			t.Fatal(err)
		}
		peer, err := NewKeyExchange(wire.DH_CURVE25519)
		if err != nil {
			t.Fatal(err)
		}
		resp := &wire.Message{SPIi: 1, SPIr: 2, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagResponse, Payloads: []wire.Payload{
			&wire.SA{Proposals: offerIKE(ikeP)[:1]}, &wire.KE{Group: wire.DH_CURVE25519, Data: peer.Public()}, &wire.Nonce{Data: make([]byte, tc.n)}}}
		resp.Payloads[0].(*wire.SA).Proposals[0].Number = 1
		_, err = s.completeInit(resp, nil, nil, kex, make([]byte, 32))
		if (err == nil) != tc.ok {
			t.Errorf("gateway nonce of %d bytes with prfsha512: %v", tc.n, err)
		}
	}
}

// L10: a rekey's nonce is checked against the PRF too.
func TestRekeyNonceLength(t *testing.T) {
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha512-x25519", "aes256gcm16")
	sa := &ikeSA{suite: Suite{PRF: wire.PRF_HMAC_SHA2_512}}
	ts := selectorsFromPrefixes([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	short := &wire.Nonce{Data: make([]byte, 16)}
	_, _, fail := answerChildRekey(sa, espP, []wire.Payload{&wire.SA{Proposals: offerESP(espP, 0x1234, true)}, short,
		&wire.TS{Selectors: ts}, &wire.TS{Responder: true, Selectors: ts}}, &ChildSA{}, false, time.Now(), randomESPSPI)
	if fail == nil || fail.NotifyType != wire.INVALID_SYNTAX {
		t.Fatalf("Child SA rekey with a 16-byte nonce under prfsha512: %+v", fail)
	}
	offer := offerIKE(ikeP)
	for i := range offer {
		offer[i].SPI = []byte{1, 2, 3, 4, 5, 6, 7, 8}
	}
	kex, err := NewKeyExchange(wire.DH_CURVE25519)
	if err != nil {
		t.Fatal(err)
	}
	_, _, fail = answerIKERekey(sa, ikeP, []wire.Payload{&wire.SA{Proposals: offer}, short, &wire.KE{Group: wire.DH_CURVE25519, Data: kex.Public()}}, time.Now())
	if fail == nil || fail.NotifyType != wire.INVALID_SYNTAX {
		t.Fatalf("IKE SA rekey with a 16-byte nonce under prfsha512: %+v", fail)
	}
}
