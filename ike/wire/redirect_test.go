package wire

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestRedirectDataCodec(t *testing.T) {
	ni := bytes.Repeat([]byte{0xab}, 32)
	for _, tc := range []struct {
		name  string
		g     RedirectGateway
		nonce []byte
		want  []byte // the encoding's first bytes
	}{
		{"v4 with nonce", RedirectGateway{Addr: netip.MustParseAddr("192.0.2.9")}, ni, []byte{1, 4, 192, 0, 2, 9, 0xab}},
		{"v4-mapped", RedirectGateway{Addr: netip.MustParseAddr("::ffff:192.0.2.9")}, nil, []byte{1, 4, 192, 0, 2, 9}},
		{"v6", RedirectGateway{Addr: netip.MustParseAddr("2001:db8::9")}, nil, []byte{2, 16, 0x20, 0x01, 0x0d, 0xb8}},
		{"fqdn", RedirectGateway{Name: "gw2.example.net"}, ni[:16], append([]byte{3, 15}, "gw2.example.net"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := AppendRedirectData(nil, tc.g, tc.nonce)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, tc.want) {
				t.Fatalf("encoded %x, want it to start with %x", b, tc.want)
			}
			g, nonce, err := ParseRedirectData(b)
			want := tc.g
			want.Addr = want.Addr.Unmap()
			if err != nil || g != want || !bytes.Equal(nonce, tc.nonce) {
				t.Fatalf("round trip: %+v %x %v", g, nonce, err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"short v4", []byte{1, 3, 1, 2, 3}},
		{"v4 length beyond data", []byte{1, 4, 1, 2}},
		{"v6 of 4 bytes", []byte{2, 4, 1, 2, 3, 4}},
		{"v4-mapped v6", append([]byte{2, 16}, netip.MustParseAddr("::ffff:1.2.3.4").AsSlice()...)},
		{"unknown type", []byte{4, 1, 'a'}},
		{"empty fqdn", []byte{3, 0}},
		{"fqdn with a space", []byte{3, 3, 'a', ' ', 'b'}},
		{"nonce too long", append([]byte{1, 4, 1, 2, 3, 4}, make([]byte, 257)...)},
	} {
		t.Run("bad "+tc.name, func(t *testing.T) {
			if g, n, err := ParseRedirectData(tc.data); err == nil {
				t.Fatalf("accepted as %+v %x", g, n)
			}
		})
	}
	for _, g := range []RedirectGateway{{}, {Name: strings.Repeat("a", 256)}, {Addr: netip.MustParseAddr("1.2.3.4"), Name: "x"}} {
		if _, err := AppendRedirectData(nil, g, nil); err == nil {
			t.Errorf("encoded %+v", g)
		}
	}
	if _, err := AppendRedirectData(nil, RedirectGateway{Addr: netip.MustParseAddr("1.2.3.4")}, make([]byte, 257)); err == nil {
		t.Error("encoded a 257-byte nonce")
	}
}

func FuzzParseRedirectData(f *testing.F) {
	for _, g := range []RedirectGateway{{Addr: netip.MustParseAddr("192.0.2.1")}, {Addr: netip.MustParseAddr("2001:db8::1")}, {Name: "gw.example"}} {
		b, err := AppendRedirectData(nil, g, bytes.Repeat([]byte{7}, 32))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-32])
	}
	f.Add([]byte{})
	f.Add([]byte{3, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, nonce, err := ParseRedirectData(b)
		if err != nil {
			return
		}
		out, err := AppendRedirectData(nil, g, nonce)
		if err != nil {
			t.Fatalf("%x parsed as %+v %x, which does not encode: %v", b, g, nonce, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("%x parsed as %+v %x, which encodes as %x", b, g, nonce, out)
		}
	})
}
