package wire

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

func TestAdditionalAddressCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr netip.Addr
		typ  NotifyType
	}{
		{"v4", netip.MustParseAddr("192.0.2.7"), ADDITIONAL_IP4_ADDRESS},
		{"v4-mapped", netip.MustParseAddr("::ffff:192.0.2.7"), ADDITIONAL_IP4_ADDRESS},
		{"v6", netip.MustParseAddr("2001:db8::7"), ADDITIONAL_IP6_ADDRESS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := additionalAddressNotify(tc.addr)
			if n.NotifyType != tc.typ {
				t.Fatalf("type %d, want %d", n.NotifyType, tc.typ)
			}
			a, err := parseAdditionalAddress(n.NotifyType, n.Data)
			if err != nil || a != tc.addr.Unmap() {
				t.Fatalf("round trip %v %v", a, err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		typ  NotifyType
		data []byte
	}{
		{"v4 with 16 bytes", ADDITIONAL_IP4_ADDRESS, make([]byte, 16)},
		{"v6 with 4 bytes", ADDITIONAL_IP6_ADDRESS, make([]byte, 4)},
		{"empty", ADDITIONAL_IP4_ADDRESS, nil},
		{"other type", COOKIE2, make([]byte, 4)},
	} {
		t.Run("bad "+tc.name, func(t *testing.T) {
			if _, err := parseAdditionalAddress(tc.typ, tc.data); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	addrs, none, found := AdditionalAddresses([]Payload{additionalAddressNotify(netip.MustParseAddr("192.0.2.10")),
		&Notify{NotifyType: ADDITIONAL_IP6_ADDRESS, Data: []byte{1}}, &Notify{NotifyType: NO_ADDITIONAL_ADDRESSES}})
	if !slices.Equal(addrs, []netip.Addr{netip.MustParseAddr("192.0.2.10")}) || !none || !found {
		t.Fatalf("AdditionalAddresses: %v %v %v", addrs, none, found)
	}
}

func TestNoNATsCodec(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		n        int
	}{
		{"v4", netip.MustParseAddrPort("192.0.2.10:4500"), netip.MustParseAddrPort("192.0.2.1:4500"), 12},
		{"v6", netip.MustParseAddrPort("[2001:db8::10]:4500"), netip.MustParseAddrPort("[2001:db8::1]:4501"), 36},
		{"v4-mapped", netip.MustParseAddrPort("[::ffff:192.0.2.10]:4500"), netip.MustParseAddrPort("192.0.2.1:4500"), 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NoNATsData(tc.src, tc.dst)
			if len(b) != tc.n {
				t.Fatalf("%d bytes, want %d", len(b), tc.n)
			}
			src, dst, err := ParseNoNATs(b)
			unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
			if err != nil || src != unmap(tc.src) || dst != unmap(tc.dst) {
				t.Fatalf("round trip %v %v %v", src, dst, err)
			}
		})
	}
	// Layout: addresses first, then ports.
	if b := NoNATsData(netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("6.7.8.9:10")); !bytes.Equal(b, []byte{1, 2, 3, 4, 6, 7, 8, 9, 0, 5, 0, 10}) {
		t.Fatalf("layout %x", b)
	}
	for _, n := range []int{0, 11, 13, 35, 37} {
		if _, _, err := ParseNoNATs(make([]byte, n)); err == nil {
			t.Errorf("%d bytes accepted", n)
		}
	}
}

func FuzzParseNoNATs(f *testing.F) {
	f.Add(NoNATsData(netip.MustParseAddrPort("192.0.2.1:4500"), netip.MustParseAddrPort("192.0.2.2:4500")))
	f.Add(make([]byte, 36))
	f.Add(append(append(make([]byte, 10), 0xff, 0xff), bytes.Repeat([]byte{0x30}, 24)...)) // v4-mapped beside IPv6
	f.Fuzz(func(t *testing.T, b []byte) {
		src, dst, err := ParseNoNATs(b)
		if err != nil {
			return
		}
		s2, d2, err := ParseNoNATs(NoNATsData(src, dst))
		unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
		if err != nil || unmap(s2) != unmap(src) || unmap(d2) != unmap(dst) {
			t.Fatalf("%x parsed as %v %v, which round-trips as %v %v (%v)", b, src, dst, s2, d2, err)
		}
	})
}

func FuzzParseAdditionalAddress(f *testing.F) {
	f.Add(uint16(ADDITIONAL_IP4_ADDRESS), []byte{192, 0, 2, 1})
	f.Add(uint16(ADDITIONAL_IP6_ADDRESS), make([]byte, 16))
	f.Fuzz(func(t *testing.T, typ uint16, b []byte) {
		a, err := parseAdditionalAddress(NotifyType(typ), b)
		if err != nil {
			return
		}
		n := additionalAddressNotify(a)
		if n.NotifyType != NotifyType(typ) && !a.Is4In6() {
			t.Fatalf("%d %x parsed as %v, which encodes as type %d", typ, b, a, n.NotifyType)
		}
	})
}
