package wire

import (
	"bytes"
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
		{"ours", MIFSupportedData(), MIFVersion, true},
		{"newer version, reserved set", []byte{2, 0xff}, 2, true},
		{"empty", nil, 0, false},
		{"short", []byte{1}, 0, false},
		{"long", []byte{1, 0, 0}, 0, false},
		{"version 0", []byte{0, 0}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseMIFSupported(tc.data)
			if (err == nil) != tc.ok || v != tc.version {
				t.Fatalf("ParseMIFSupported(%x) = %d, %v; want %d, ok=%v", tc.data, v, err, tc.version, tc.ok)
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
			got, err := ParsePathAdd(b)
			if err != nil || got != tc.p {
				t.Fatalf("ParsePathAdd = %+v, %v; want %+v", got, err, tc.p)
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
			if _, err := ParsePathAdd(tc.data); !errors.Is(err, ErrMIFFormat) {
				t.Fatalf("ParsePathAdd(%x): %v, want ErrMIFFormat", tc.data, err)
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
		{"id 9", PathRemoveData(9), 9, true},
		{"wire", []byte{0x01, 0x02}, 0x0102, true},
		{"max", []byte{0xff, 0xff}, 0xffff, true},
		{"path 0", []byte{0, 0}, 0, false},
		{"short", []byte{1}, 0, false},
		{"long", []byte{0, 1, 0}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ParsePathRemove(tc.data)
			if (err == nil) != tc.ok || id != tc.id {
				t.Fatalf("ParsePathRemove(%x) = %d, %v; want %d ok=%v", tc.data, id, err, tc.id, tc.ok)
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

// The MIF notifications survive a whole message's encoding: they are
// ordinary status notifications to the IKE codec.
func TestMIFNotifiesInMessage(t *testing.T) {
	m := &Message{SPIi: 1, SPIr: 2, Exchange: INFORMATIONAL, MessageID: 4, Payloads: []Payload{
		&Notify{NotifyType: MIF_PATH_ADD, Data: PathAdd{ID: 3, Kind: PathKindWLAN, Priority: 1}.Marshal()},
		&Notify{NotifyType: COOKIE2, Data: bytes.Repeat([]byte{7}, 16)},
		&Notify{NotifyType: MIF_PATH_REMOVE, Data: PathRemoveData(2)},
	}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	add, err := ParsePathAdd(FindNotify(got.Payloads, MIF_PATH_ADD).Data)
	if err != nil || add.ID != 3 || add.Kind != PathKindWLAN {
		t.Fatalf("MIF_PATH_ADD after a round trip: %+v %v", add, err)
	}
	if id, err := ParsePathRemove(FindNotify(got.Payloads, MIF_PATH_REMOVE).Data); err != nil || id != 2 {
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
		p, err := ParsePathAdd(b)
		if err != nil {
			return
		}
		if p.ID == 0 || len(b) < mifPathAddLen || len(b) > mifPathAddLen+maxInterfaceName || !bytes.Equal(p.Marshal(), b) {
			t.Fatalf("accepted %x as %+v", b, p)
		}
		again, err := ParsePathAdd(p.Marshal())
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
		p, err := ParsePathAdd(b)
		if err != nil || p.Interface != tc.sent {
			t.Errorf("%q: parsed %+v, %v", tc.name, p, err)
		}
	}
	for _, bad := range [][]byte{append(PathAdd{ID: 2}.Marshal(), 0), append(PathAdd{ID: 2}.Marshal(), " eth0"...),
		append(PathAdd{ID: 2}.Marshal(), "sixteen-bytes-00"...)} {
		if p, err := ParsePathAdd(bad); err == nil {
			t.Errorf("%x accepted as %+v", bad, p)
		}
	}
	iface, rules, err := ParseClasses(MarshalClasses("eth0", "tcp/22:offload@wlan0>eth0, icmp:single"))
	if err != nil || iface != "eth0" || rules != "tcp/22:offload@wlan0>eth0, icmp:single" {
		t.Fatalf("MIF_CLASSES round trip: %q %q %v", iface, rules, err)
	}
	for _, bad := range [][]byte{nil, {5, 'a'}, {0}, append([]byte{0}, make([]byte, maxClassesLen+1)...), append([]byte{0}, "tcp:single\n"...)} {
		if _, _, err := ParseClasses(bad); err == nil {
			t.Errorf("MIF_CLASSES %q accepted", bad)
		}
	}
}

func FuzzParseClasses(f *testing.F) {
	f.Add(MarshalClasses("wlan0", "udp/5060:redundant@wwan*"))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		iface, rules, err := ParseClasses(b)
		if err != nil {
			return
		}
		if len(rules) == 0 || len(rules) > maxClassesLen || (iface != "" && !validInterfaceName(iface)) || !bytes.Equal(MarshalClasses(iface, rules), b) {
			t.Fatalf("accepted %x as %q %q", b, iface, rules)
		}
	})
}

func FuzzParsePathRemove(f *testing.F) {
	f.Add(PathRemoveData(1))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParsePathRemove(b)
		if err != nil {
			return
		}
		if id == 0 || !bytes.Equal(PathRemoveData(id), b) {
			t.Fatalf("accepted %x as %d", b, id)
		}
	})
}

func FuzzParseMIFSupported(f *testing.F) {
	f.Add(MIFSupportedData())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseMIFSupported(b)
		if err == nil && (v == 0 || len(b) != mifSupportedLen) {
			t.Fatalf("accepted %x as version %d", b, v)
		}
	})
}
