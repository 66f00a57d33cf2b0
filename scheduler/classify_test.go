package scheduler

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// ipv4 builds an IPv4 header (no options) with a 4-byte transport start.
func ipv4(dst string, proto byte, dscp byte, sport, dport uint16, fragOff uint16) []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	b[1] = dscp << 2
	binary.BigEndian.PutUint16(b[2:], 28)
	binary.BigEndian.PutUint16(b[6:], fragOff)
	b[8] = 64
	b[9] = proto
	copy(b[12:16], netip.MustParseAddr("192.0.2.1").AsSlice())
	copy(b[16:20], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

// ipv6 builds an IPv6 header followed by extension headers ext (each
// given as next-header, bytes) and a 4-byte transport start.
func ipv6(dst string, proto byte, dscp byte, sport, dport uint16, ext ...[]byte) []byte {
	b := make([]byte, 40)
	b[0] = 0x60 | (dscp<<2)>>4
	b[1] = (dscp << 2) << 4
	b[7] = 64
	copy(b[8:24], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(b[24:40], netip.MustParseAddr(dst).AsSlice())
	first := proto
	if len(ext) > 0 {
		first = ext[0][0]
	}
	b[6] = first
	for i, e := range ext {
		h := append([]byte(nil), e[1:]...)
		if i+1 < len(ext) {
			h[0] = ext[i+1][0]
		} else {
			h[0] = proto
		}
		b = append(b, h...)
	}
	var p [4]byte
	binary.BigEndian.PutUint16(p[0:], sport)
	binary.BigEndian.PutUint16(p[2:], dport)
	return append(b, p[:]...)
}

func TestParseHeader(t *testing.T) {
	hbh := append([]byte{0}, make([]byte, 8)...)   // hop-by-hop, 8 bytes
	dst := append([]byte{60}, 0, 1)                // destination options, 16 bytes
	dst = append(dst, make([]byte, 14)...)         //
	frag := append([]byte{44}, make([]byte, 8)...) // fragment header
	ah := append([]byte{51}, 0, 1)                 // AH: (1+2)*4 = 12 bytes
	ah = append(ah, make([]byte, 10)...)           //
	tests := []struct {
		name string
		pkt  []byte
		ok   bool
		want packetHeader
	}{
		{"ipv4 udp", ipv4("10.1.2.3", 17, 46, 5060, 5061, 0), true,
			packetHeader{Dst: netip.MustParseAddr("10.1.2.3"), Proto: 17, SrcPort: 5060, DstPort: 5061, HasPorts: true, DSCP: 46}},
		{"ipv4 first fragment has no port", ipv4("10.1.2.3", 6, 0, 1, 2, 0x2000), true,
			packetHeader{Dst: netip.MustParseAddr("10.1.2.3"), Proto: 6}},
		{"ipv4 later fragment", ipv4("10.1.2.3", 6, 0, 1, 2, 0x0010), true,
			packetHeader{Dst: netip.MustParseAddr("10.1.2.3"), Proto: 6}},
		{"ipv4 icmp", ipv4("10.1.2.3", 1, 0, 1, 2, 0), true, packetHeader{Dst: netip.MustParseAddr("10.1.2.3"), Proto: 1}},
		{"ipv4 truncated transport", ipv4("10.1.2.3", 17, 0, 1, 2, 0)[:22], true, packetHeader{Dst: netip.MustParseAddr("10.1.2.3"), Proto: 17}},
		{"ipv4 short", ipv4("10.1.2.3", 17, 0, 1, 2, 0)[:19], false, packetHeader{Proto: -1}},
		{"ipv4 bad ihl", append([]byte{0x44}, make([]byte, 27)...), false, packetHeader{Proto: -1}},
		{"ipv6 tcp", ipv6("2001:db8::7", 6, 34, 443, 50000), true,
			packetHeader{Dst: netip.MustParseAddr("2001:db8::7"), Proto: 6, SrcPort: 443, DstPort: 50000, HasPorts: true, DSCP: 34}},
		{"ipv6 ext headers skipped", ipv6("2001:db8::7", 17, 0, 53, 5353, hbh, dst, ah), true,
			packetHeader{Dst: netip.MustParseAddr("2001:db8::7"), Proto: 17, SrcPort: 53, DstPort: 5353, HasPorts: true}},
		{"ipv6 fragment has no port", ipv6("2001:db8::7", 17, 0, 53, 5353, frag), true,
			packetHeader{Dst: netip.MustParseAddr("2001:db8::7"), Proto: 17}},
		{"ipv6 truncated ext", ipv6("2001:db8::7", 17, 0, 53, 5353, hbh)[:41], true,
			packetHeader{Dst: netip.MustParseAddr("2001:db8::7"), Proto: -1}},
		{"empty", nil, false, packetHeader{Proto: -1}},
		{"version 5", []byte{0x50, 0, 0, 0}, false, packetHeader{Proto: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ok && tc.pkt[0]>>4 == 4 {
				tc.want.Src = netip.MustParseAddr("192.0.2.1")
			} else if tc.ok {
				tc.want.Src = netip.MustParseAddr("2001:db8::1")
			}
			h, ok := parseHeader(tc.pkt)
			if ok != tc.ok || h != tc.want {
				t.Errorf("got %+v %v, want %+v %v", h, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		spec    string
		err     string // substring; "" = ok
		rules   int
		def     Policy
		printed string
	}{
		{"", "", 0, PolicyAggregate, "default:aggregate"},
		{"dscp=46:redundant", "", 1, PolicyAggregate, "dscp=46:redundant, default:aggregate"},
		{"dscp=ef:redundant, udp/5060-5061:redundant; 10.0.0.0/8:offload default:single", "", 3, PolicySingle,
			"dscp=46:redundant, proto=17+port=5060-5061:redundant, 10.0.0.0/8:offload, default:single"},
		{"2001:db8::/32+tcp/443:single", "", 1, PolicyAggregate, "2001:db8::/32+proto=6+port=443-443:single, default:aggregate"},
		{"192.0.2.7:offload", "", 1, PolicyAggregate, "192.0.2.7/32:offload, default:aggregate"},
		{"10.1.2.3/8:offload", "", 1, PolicyAggregate, "10.0.0.0/8:offload, default:aggregate"},
		{"proto=gre:single port=8000-8100:redundant any:offload", "", 3, PolicyAggregate,
			"proto=47:single, port=8000-8100:redundant, any:offload, default:aggregate"},
		{"dscp=64:redundant", "dscp", 0, 0, ""},
		{"dscp=ef", "want MATCH:POLICY", 0, 0, ""},
		{"udp/5061-5060:single", "end below start", 0, 0, ""},
		{"udp/70000:single", "port", 0, 0, ""},
		{"icmp/1:single", "has no ports", 0, 0, ""},
		{"10.0.0.0/33:single", "prefix", 0, 0, ""},
		{"tcp:roundrobin", "unknown policy", 0, 0, ""},
		{"tcp+udp:single", "two different protocol", 0, 0, ""},
		{"default:single default:offload", "second default", 0, 0, ""},
		{"carrier:single", "protocol", 0, 0, ""},
		{"tcp++udp:single", "empty term", 0, 0, ""},
		{"fe80::1%eth0:single", "", 0, 0, ""}, // checked below: zone
		{"udp/5060-5061:redundant@wwan*, tcp/22:offload@wlan0>eth0", "", 2, PolicyAggregate,
			"proto=17+port=5060-5061:redundant@wwan*, proto=6+port=22-22:offload@wlan0>eth0, default:aggregate"},
		{"fd00::/8:single@eth[01]", "", 1, PolicyAggregate, "fd00::/8:single@eth[01], default:aggregate"},
		{"default:aggregate@eth0", "cannot be bound", 0, 0, ""},
		{"tcp:offload@", "interface", 0, 0, ""},
		{"tcp:offload@wlan0>>eth0", "interface", 0, 0, ""},
		{"tcp:offload@eth[", "interface", 0, 0, ""},
		{"tcp:roundrobin@eth0", "unknown policy", 0, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			c, err := ParseRules(tc.spec, PolicyAggregate)
			if tc.spec == "fe80::1%eth0:single" {
				if err == nil {
					t.Fatalf("zone accepted")
				}
				return
			}
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrRuleSyntax) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Rules()) != tc.rules || c.Default() != tc.def || c.String() != tc.printed {
				t.Fatalf("%d rules, default %v, printed %q; want %d, %v, %q", len(c.Rules()), c.Default(), c.String(), tc.rules, tc.def, tc.printed)
			}
			// What String prints parses back to the same classifier.
			c2, err := ParseRules(c.String(), PolicyAggregate)
			if err != nil || c2.String() != c.String() {
				t.Fatalf("round trip: %v %q", err, c2)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	c, err := ParseRules("dscp=ef:redundant, udp/5060-5061:redundant, 10.0.0.0/8+tcp:offload, 2001:db8:1::/48:single, default:aggregate", PolicyAggregate)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pkt  []byte
		want Policy
	}{
		{"voice by dscp", ipv4("198.51.100.1", 17, 46, 40000, 40002, 0), PolicyRedundant},
		{"sip to the server", ipv4("198.51.100.1", 17, 0, 40000, 5060, 0), PolicyRedundant},
		{"sip from the server", ipv4("198.51.100.1", 17, 0, 5061, 40000, 0), PolicyRedundant},
		{"sip fragment has no port", ipv4("198.51.100.1", 17, 0, 40000, 5060, 0x2000), PolicyAggregate},
		{"tcp to 10/8", ipv4("10.9.8.7", 6, 0, 1, 80, 0), PolicyOffload},
		{"udp to 10/8", ipv4("10.9.8.7", 17, 0, 1, 53, 0), PolicyAggregate},
		{"v6 prefix", ipv6("2001:db8:1::5", 6, 0, 1, 2), PolicySingle},
		{"v6 other", ipv6("2001:db8:2::5", 6, 0, 1, 2), PolicyAggregate},
		{"v6 sip", ipv6("2001:db8:2::5", 17, 0, 1, 5060), PolicyRedundant},
		{"garbage", []byte{1, 2, 3}, PolicyAggregate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.Classify(tc.pkt); got != tc.want {
				t.Errorf("%v, want %v", got, tc.want)
			}
		})
	}
	pkt := ipv6("2001:db8:2::5", 17, 0, 1, 5060)
	if a := testing.AllocsPerRun(1000, func() { c.Classify(pkt) }); a != 0 {
		t.Errorf("Classify: %v allocations", a)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(ipv4("10.1.2.3", 17, 46, 5060, 5061, 0))
	f.Add(ipv4("10.1.2.3", 6, 0, 1, 2, 0x2000))
	f.Add(ipv6("2001:db8::7", 17, 0, 53, 5353, append([]byte{0}, make([]byte, 8)...)))
	f.Add(ipv6("2001:db8::7", 6, 10, 1, 2, append([]byte{44}, make([]byte, 8)...)))
	f.Add([]byte{0x60})
	c, err := ParseRules("dscp=ef:redundant udp/5060:redundant 10.0.0.0/8:offload ::/0+tcp:single", PolicyAggregate)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseHeader(b)
		if !ok {
			if c.Classify(b) != PolicyAggregate {
				t.Fatalf("unparsable packet did not take the default")
			}
			return
		}
		if !h.Dst.IsValid() || h.DSCP < 0 || h.DSCP > 63 || h.Proto > 255 {
			t.Fatalf("implausible header %+v", h)
		}
		if h.HasPorts && h.Proto != 6 && h.Proto != 17 && h.Proto != 33 && h.Proto != 132 && h.Proto != 136 {
			t.Fatalf("ports for protocol %d", h.Proto)
		}
		if p := c.Classify(b); p >= numPolicies {
			t.Fatalf("policy %v", p)
		}
	})
}

func FuzzParseRules(f *testing.F) {
	for _, s := range []string{"dscp=ef:redundant", "udp/5060-5061:redundant, 10.0.0.0/8:offload", "2001:db8::/32+tcp/443:single default:offload", "any:single", "port=1-2:aggregate"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseRules(s, PolicyAggregate)
		if err != nil {
			if !errors.Is(err, ErrRuleSyntax) {
				t.Fatalf("error %v does not wrap ErrRuleSyntax", err)
			}
			return
		}
		c2, err := ParseRules(c.String(), PolicyAggregate)
		if err != nil || c2.String() != c.String() {
			t.Fatalf("round trip of %q: %q, %v", s, c.String(), err)
		}
	})
}
