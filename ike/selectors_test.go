package ike

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

func TestSelectorPrefixRoundTrip(t *testing.T) {
	for _, s := range []string{"0.0.0.0/0", "10.1.0.0/24", "10.3.0.7/32", "::/0", "fd00:1::/64", "2001:db8::1/128"} {
		p := netip.MustParsePrefix(s)
		got := prefixesFromSelectors(selectorsFromPrefixes([]netip.Prefix{p}))
		if len(got) != 1 || got[0] != p {
			t.Errorf("%s came back as %v", p, got)
		}
	}
}

func TestRangeToPrefixes(t *testing.T) {
	tests := []struct {
		start, end string
		want       []string
	}{
		{"10.0.0.1", "10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"10.0.0.0", "10.0.1.255", []string{"10.0.0.0/23"}},
		{"255.255.255.254", "255.255.255.255", []string{"255.255.255.254/31"}},
		{"10.0.0.5", "10.0.0.4", nil},
		{"10.0.0.1", "::1", nil},
	}
	for _, tc := range tests {
		var want []netip.Prefix
		for _, w := range tc.want {
			want = append(want, netip.MustParsePrefix(w))
		}
		got := rangeToPrefixes(netip.MustParseAddr(tc.start), netip.MustParseAddr(tc.end))
		if !slices.Equal(got, want) {
			t.Errorf("%s-%s: got %v, want %v", tc.start, tc.end, got, want)
		}
	}
}

// TestGrantedSelectors: the client keeps what it proposed at most, whatever
// the gateway answers (issue: a gateway that widens TSr would pull the
// client's whole traffic, or a foreign network, into its tunnel).
func TestGrantedSelectors(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		name                               string
		gotLocal, gotRemote, local, remote []netip.Prefix
		wantLocal, wantRemote              []netip.Prefix
		widened, fails                     bool
	}{
		{name: "narrowed", gotLocal: pp("10.3.0.2/32"), gotRemote: pp("10.1.0.0/24"), local: pp("0.0.0.0/0"), remote: pp("0.0.0.0/0", "::/0"),
			wantLocal: pp("10.3.0.2/32"), wantRemote: pp("10.1.0.0/24")},
		{name: "widened remote", gotLocal: pp("10.3.0.2/32"), gotRemote: pp("0.0.0.0/0"), local: pp("0.0.0.0/0"), remote: pp("10.1.0.0/24"),
			wantLocal: pp("10.3.0.2/32"), wantRemote: pp("10.1.0.0/24"), widened: true},
		{name: "widened local", gotLocal: pp("0.0.0.0/0"), gotRemote: pp("10.1.0.0/24"), local: pp("10.3.0.2/32"), remote: pp("10.1.0.0/24"),
			wantLocal: pp("10.3.0.2/32"), wantRemote: pp("10.1.0.0/24"), widened: true},
		{name: "disjoint", gotLocal: pp("10.3.0.2/32"), gotRemote: pp("192.168.0.0/16"), local: pp("0.0.0.0/0"), remote: pp("10.1.0.0/24"), fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, r, widened, err := grantedSelectors(tc.gotLocal, tc.gotRemote, tc.local, tc.remote)
			if tc.fails {
				if err == nil {
					t.Fatalf("accepted %v ⇄ %v", l, r)
				}
				return
			}
			if err != nil || !slices.Equal(l, tc.wantLocal) || !slices.Equal(r, tc.wantRemote) || widened != tc.widened {
				t.Fatalf("got %v ⇄ %v widened %v err %v, want %v ⇄ %v widened %v", l, r, widened, err, tc.wantLocal, tc.wantRemote, tc.widened)
			}
		})
	}
}

// TestConfigReplyBoundsIPv6Prefix: an assigned IPv6 address with a short
// prefix length would route a whole range into the TUN device; it is
// taken as the address alone.
func TestConfigReplyBoundsIPv6Prefix(t *testing.T) {
	addr := netip.MustParseAddr("fd03::2").As16()
	for _, tc := range []struct {
		bits byte
		want int
	}{{0, 128}, {8, 128}, {63, 128}, {64, 64}, {120, 120}, {128, 128}, {200, 128}} {
		v := append(addr[:], tc.bits)
		got, _ := configReply([]wire.Payload{&wire.CP{CfgType: wire.CFG_REPLY, Attributes: []wire.CPAttribute{{Type: wire.INTERNAL_IP6_ADDRESS, Value: v}}}})
		if len(got) != 1 || got[0].Bits() != tc.want {
			t.Errorf("prefix length %d: got %v, want /%d", tc.bits, got, tc.want)
		}
	}
}

// TestChildRekeyKeepsSelectors: whoever starts a Child SA rekey, the new SA
// has the old one's selectors and the answer says so; traffic selectors in
// the request that widen them are ignored.
func TestChildRekeyKeepsSelectors(t *testing.T) {
	ikeSpecs, espSpecs := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16")
	suite, err := acceptIKE(offerIKE(ikeSpecs)[0], ikeSpecs)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := deriveIKEKeys(suite, make([]byte, 32), make([]byte, 32), make([]byte, 32), 1, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	sa := &ikeSA{spiI: 1, spiR: 2, suite: suite, keys: keys}
	old := &ChildSA{LocalTS: []netip.Prefix{netip.MustParsePrefix("10.3.0.2/32")}, RemoteTS: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}
	any := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	req := []wire.Payload{&wire.SA{Proposals: offerESP(espSpecs, 0x1234, true)}, &wire.Nonce{Data: make([]byte, 32)},
		&wire.TS{Selectors: selectorsFromPrefixes(any)}, &wire.TS{Responder: true, Selectors: selectorsFromPrefixes(any)}}
	reply, child, fail := answerChildRekey(sa, espSpecs, req, old, false, time.Now(), randomESPSPI)
	if fail != nil {
		t.Fatalf("refused: %v", fail)
	}
	if !slices.Equal(child.LocalTS, old.LocalTS) || !slices.Equal(child.RemoteTS, old.RemoteTS) {
		t.Fatalf("rekeyed child has %v ⇄ %v, want the old %v ⇄ %v", child.LocalTS, child.RemoteTS, old.LocalTS, old.RemoteTS)
	}
	tsi, tsr := wire.FindTS(reply, false), wire.FindTS(reply, true)
	if got := prefixesFromSelectors(tsi.Selectors); !slices.Equal(got, old.RemoteTS) {
		t.Errorf("answer's TSi %v, want the peer's old side %v", got, old.RemoteTS)
	}
	if got := prefixesFromSelectors(tsr.Selectors); !slices.Equal(got, old.LocalTS) {
		t.Errorf("answer's TSr %v, want our old side %v", got, old.LocalTS)
	}
}
