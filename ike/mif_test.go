package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseMIFSupported(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    []byte
		version uint8
		ok      bool
	}{
		{"ours", mIFSupportedData(), MIFVersion, true},
		{"newer version, reserved set", []byte{2, 0xff}, 2, true},
		{"empty", nil, 0, false},
		{"short", []byte{1}, 0, false},
		{"long", []byte{1, 0, 0}, 0, false},
		{"version 0", []byte{0, 0}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := parseMIFSupported(tc.data)
			if (err == nil) != tc.ok || v != tc.version {
				t.Fatalf("parseMIFSupported(%x) = %d, %v; want %d, ok=%v", tc.data, v, err, tc.version, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrMIFFormat) {
				t.Fatalf("error %v does not wrap ErrMIFFormat", err)
			}
		})
	}
}

func TestPathAddCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    PathAdd
		wire []byte
	}{
		{"wlan", PathAdd{ID: 1, Kind: PathKindWLAN, Priority: 0}, []byte{0, 1, 2, 0}},
		{"cellular", PathAdd{ID: 0xbeef, Kind: PathKindCellular, Priority: 200}, []byte{0xbe, 0xef, 3, 200}},
		{"unknown kind kept", PathAdd{ID: 7, Kind: 99, Priority: 1}, []byte{0, 7, 99, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.p.Marshal()
			if !bytes.Equal(b, tc.wire) {
				t.Fatalf("Marshal = %x, want %x", b, tc.wire)
			}
			got, err := parsePathAdd(b)
			if err != nil || got != tc.p {
				t.Fatalf("parsePathAdd = %+v, %v; want %+v", got, err, tc.p)
			}
		})
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"3 bytes", []byte{0, 1, 2}},
		{"5 bytes", []byte{0, 1, 2, 0, 0}},
		{"old 8-byte layout", []byte{0, 0, 0, 1, 2, 0, 0, 0}},
		{"path 0", []byte{0, 0, 2, 0}},
	} {
		t.Run("bad "+tc.name, func(t *testing.T) {
			if _, err := parsePathAdd(tc.data); !errors.Is(err, ErrMIFFormat) {
				t.Fatalf("parsePathAdd(%x): %v, want ErrMIFFormat", tc.data, err)
			}
		})
	}
}

func TestPathRemoveCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		id   uint16
		ok   bool
	}{
		{"id 9", pathRemoveData(9), 9, true},
		{"wire", []byte{0x01, 0x02}, 0x0102, true},
		{"max", []byte{0xff, 0xff}, 0xffff, true},
		{"path 0", []byte{0, 0}, 0, false},
		{"short", []byte{1}, 0, false},
		{"long", []byte{0, 1, 0}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := parsePathRemove(tc.data)
			if (err == nil) != tc.ok || id != tc.id {
				t.Fatalf("parsePathRemove(%x) = %d, %v; want %d ok=%v", tc.data, id, err, tc.id, tc.ok)
			}
		})
	}
}

func TestPathKindString(t *testing.T) {
	for k, want := range map[PathKind]string{PathKindUnknown: "unknown", PathKindEthernet: "ethernet", PathKindWLAN: "wlan",
		PathKindCellular: "cellular", 42: "kind-42"} {
		if got := k.String(); got != want {
			t.Errorf("%d: %q, want %q", uint8(k), got, want)
		}
	}
}

func TestPeerMIF(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   []Payload
		want bool
	}{
		{"absent", []Payload{&Notify{NotifyType: MOBIKE_SUPPORTED}}, false},
		{"ours", []Payload{&Notify{NotifyType: MIF_SUPPORTED, Data: mIFSupportedData()}}, true},
		{"malformed", []Payload{&Notify{NotifyType: MIF_SUPPORTED}}, false},
		{"newer", []Payload{&Notify{NotifyType: MIF_SUPPORTED, Data: []byte{3, 0}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := peerMIF(tc.ps); got != tc.want {
				t.Fatalf("peerMIF = %v, want %v", got, tc.want)
			}
		})
	}
}

// The MIF notifications survive a whole message's encoding: they are
// ordinary status notifications to the IKE codec.
func TestMIFNotifiesInMessage(t *testing.T) {
	m := &Message{SPIi: 1, SPIr: 2, Exchange: INFORMATIONAL, MessageID: 4, Payloads: []Payload{
		&Notify{NotifyType: MIF_PATH_ADD, Data: PathAdd{ID: 3, Kind: PathKindWLAN, Priority: 1}.Marshal()},
		&Notify{NotifyType: COOKIE2, Data: bytes.Repeat([]byte{7}, 16)},
		&Notify{NotifyType: MIF_PATH_REMOVE, Data: pathRemoveData(2)},
	}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	add, err := parsePathAdd(FindNotify(got.Payloads, MIF_PATH_ADD).Data)
	if err != nil || add.ID != 3 || add.Kind != PathKindWLAN {
		t.Fatalf("MIF_PATH_ADD after a round trip: %+v %v", add, err)
	}
	if id, err := parsePathRemove(FindNotify(got.Payloads, MIF_PATH_REMOVE).Data); err != nil || id != 2 {
		t.Fatalf("MIF_PATH_REMOVE after a round trip: %d %v", id, err)
	}
	if MIF_PATH_ADD.IsError() || MIF_SUPPORTED < 40960 || MIF_PATH_REMOVE < 40960 {
		t.Fatal("MIF notifications must be private-use status types")
	}
}

func FuzzParsePathAdd(f *testing.F) {
	f.Add(PathAdd{ID: 1, Kind: PathKindWLAN}.Marshal())
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePathAdd(b)
		if err != nil {
			return
		}
		if p.ID == 0 || len(b) < mifPathAddLen || len(b) > mifPathAddLen+maxInterfaceName || !bytes.Equal(p.Marshal(), b) {
			t.Fatalf("accepted %x as %+v", b, p)
		}
		again, err := parsePathAdd(p.Marshal())
		if err != nil || again != p {
			t.Fatalf("round trip of %+v: %+v %v", p, again, err)
		}
	})
}

// TestMIFInterfaceNames: MIF_PATH_ADD and MIF_CLASSES carry interface
// names of 1-15 printable characters and rules of bounded text; anything
// else is refused when parsed and left out when marshalled.
func TestMIFInterfaceNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		sent string // what Marshal keeps
	}{{"wlan0", "wlan0"}, {"", ""}, {"a-very-long-name0", ""}, {"eth 0", ""}, {"wwan\x00", ""}} {
		b := PathAdd{ID: 2, Interface: tc.name}.Marshal()
		p, err := parsePathAdd(b)
		if err != nil || p.Interface != tc.sent {
			t.Errorf("%q: parsed %+v, %v", tc.name, p, err)
		}
	}
	for _, bad := range [][]byte{append(PathAdd{ID: 2}.Marshal(), 0), append(PathAdd{ID: 2}.Marshal(), " eth0"...),
		append(PathAdd{ID: 2}.Marshal(), "sixteen-bytes-00"...)} {
		if p, err := parsePathAdd(bad); err == nil {
			t.Errorf("%x accepted as %+v", bad, p)
		}
	}
	iface, rules, err := parseClasses(marshalClasses("eth0", "tcp/22:offload@wlan0>eth0, icmp:single"))
	if err != nil || iface != "eth0" || rules != "tcp/22:offload@wlan0>eth0, icmp:single" {
		t.Fatalf("MIF_CLASSES round trip: %q %q %v", iface, rules, err)
	}
	for _, bad := range [][]byte{nil, {5, 'a'}, {0}, append([]byte{0}, make([]byte, maxClassesLen+1)...), append([]byte{0}, "tcp:single\n"...)} {
		if _, _, err := parseClasses(bad); err == nil {
			t.Errorf("MIF_CLASSES %q accepted", bad)
		}
	}
}

func FuzzParseClasses(f *testing.F) {
	f.Add(marshalClasses("wlan0", "udp/5060:redundant@wwan*"))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		iface, rules, err := parseClasses(b)
		if err != nil {
			return
		}
		if len(rules) == 0 || len(rules) > maxClassesLen || (iface != "" && !validInterfaceName(iface)) || !bytes.Equal(marshalClasses(iface, rules), b) {
			t.Fatalf("accepted %x as %q %q", b, iface, rules)
		}
	})
}

func FuzzParsePathRemove(f *testing.F) {
	f.Add(pathRemoveData(1))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := parsePathRemove(b)
		if err != nil {
			return
		}
		if id == 0 || !bytes.Equal(pathRemoveData(id), b) {
			t.Fatalf("accepted %x as %d", b, id)
		}
	})
}

func FuzzParseMIFSupported(f *testing.F) {
	f.Add(mIFSupportedData())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseMIFSupported(b)
		if err == nil && (v == 0 || len(b) != mifSupportedLen) {
			t.Fatalf("accepted %x as version %d", b, v)
		}
	})
}

// TestPeerProbeSPI: a MIF_PROBE_SPI offers a probe SA only with exactly
// four bytes naming an SPI outside the reserved 0-255.
func TestPeerProbeSPI(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		spi  uint32
		ok   bool
	}{
		{"an SPI", []byte{0xc0, 0x01, 0x02, 0x03}, 0xc0010203, true},
		{"the lowest unreserved SPI", []byte{0, 0, 1, 0}, 256, true},
		{"a reserved SPI", []byte{0, 0, 0, 255}, 0, false},
		{"SPI 0", []byte{0, 0, 0, 0}, 0, false},
		{"three bytes", []byte{1, 2, 3}, 0, false},
		{"five bytes", []byte{1, 2, 3, 4, 5}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spi, ok := peerProbeSPI([]Payload{&Notify{NotifyType: MIF_PROBE_SPI, Data: tc.data}})
			if ok != tc.ok || ok && spi != tc.spi {
				t.Fatalf("peerProbeSPI(%x) = %#x, %v; want %#x, %v", tc.data, spi, ok, tc.spi, tc.ok)
			}
		})
	}
	if _, ok := peerProbeSPI(nil); ok {
		t.Fatal("an offer without the notification")
	}
	spi, ps := offerProbeSPI(true)
	if got, ok := peerProbeSPI(ps); !ok || got != spi {
		t.Fatalf("our own offer of %#x reads as %#x, %v", spi, got, ok)
	}
	if spi, ps := offerProbeSPI(false); spi != 0 || ps != nil {
		t.Fatalf("no offer gave SPI %#x and %v", spi, ps)
	}
}

func FuzzPeerProbeSPI(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		spi, ok := peerProbeSPI([]Payload{&Notify{NotifyType: MIF_PROBE_SPI, Data: b}})
		if ok && (len(b) != mifProbeSPILen || spi < 256 || !bytes.Equal(binary.BigEndian.AppendUint32(nil, spi), b)) {
			t.Fatalf("accepted %x as %#x", b, spi)
		}
	})
}
