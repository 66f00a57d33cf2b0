package dataplane

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/internal/inetsum"
	"github.com/mifsec/mifsec/tun"
)

// tcpPacket builds an IP packet (the family of src) carrying a TCP segment
// with the flags and options and 10 bytes of payload.
func tcpPacket(src, dst netip.Addr, flags byte, opts []byte) []byte {
	pkt, err := tun.TCPPacket(netip.AddrPortFrom(src, 40000), netip.AddrPortFrom(dst, 443), flags, opts, make([]byte, 10))
	if err != nil {
		panic(err)
	}
	return pkt
}

// tcpChecksumOK verifies the TCP checksum of an IPv4 packet without
// options or an IPv6 packet without extension headers.
func tcpChecksumOK(pkt []byte) bool {
	var src, dst, tcp []byte
	if pkt[0]>>4 == 4 {
		src, dst, tcp = pkt[12:16], pkt[16:20], pkt[20:]
	} else {
		src, dst, tcp = pkt[8:24], pkt[24:40], pkt[40:]
	}
	sum := inetsum.Add(inetsum.Add(0, src), dst) + 6 + uint64(len(tcp))
	return inetsum.Fold(inetsum.Add(sum, tcp)) == 0xffff
}

func mssOption(mss uint16) []byte { return []byte{2, 4, byte(mss >> 8), byte(mss)} }

func TestClampMSS(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("10.3.0.2")
	v6a, v6b := netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8:3::2")
	// A SYN as Linux sends it: MSS, SACK permitted, timestamps, NOP, window scale.
	linuxOpts := func(mss uint16) []byte {
		return append(mssOption(mss), 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7)
	}
	const syn, synAck, ack = 0x02, 0x12, 0x10
	mss4, mss6 := mssFor(1400)
	for _, tc := range []struct {
		name    string
		pkt     []byte
		wantMSS uint16 // 0: unchanged
	}{
		{"IPv4 SYN 1460", tcpPacket(v4a, v4b, syn, linuxOpts(1460)), 1360},
		{"IPv4 SYN-ACK 1460", tcpPacket(v4a, v4b, synAck, linuxOpts(1460)), 1360},
		{"IPv6 SYN 1440", tcpPacket(v6a, v6b, syn, linuxOpts(1440)), 1340},
		{"MSS after NOPs", tcpPacket(v4a, v4b, syn, append([]byte{1, 1, 1, 1}, mssOption(9000)...)), 1360},
		{"MSS small enough", tcpPacket(v4a, v4b, syn, linuxOpts(1200)), 0},
		{"MSS exactly the limit", tcpPacket(v4a, v4b, syn, linuxOpts(1360)), 0},
		{"not a SYN", tcpPacket(v4a, v4b, ack, linuxOpts(1460)), 0},
		{"no options", tcpPacket(v4a, v4b, syn, nil), 0},
		{"end of options before MSS", tcpPacket(v4a, v4b, syn, append([]byte{0, 0, 0, 0}, mssOption(1460)...)), 0},
		{"option length 0", tcpPacket(v4a, v4b, syn, []byte{5, 0, 0, 0, 2, 4, 5, 180}), 0},
		{"option longer than the header", tcpPacket(v4a, v4b, syn, []byte{5, 40, 0, 0}), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]byte(nil), tc.pkt...)
			changed := clampMSS(tc.pkt, mss4, mss6)
			if changed != (tc.wantMSS != 0) {
				t.Fatalf("clampMSS changed the packet: %v, want %v", changed, tc.wantMSS != 0)
			}
			if !changed {
				if string(before) != string(tc.pkt) {
					t.Fatal("packet modified although clampMSS says it was not")
				}
				return
			}
			off := 20
			if tc.pkt[0]>>4 == 6 {
				off = 40
			}
			opts := tc.pkt[off+20:]
			for opts[0] == 1 {
				opts = opts[1:]
			}
			if got := binary.BigEndian.Uint16(opts[2:]); got != tc.wantMSS {
				t.Errorf("MSS %d, want %d", got, tc.wantMSS)
			}
			if !tcpChecksumOK(tc.pkt) {
				t.Error("TCP checksum wrong after clamping")
			}
		})
	}
	t.Run("fragment", func(t *testing.T) {
		pkt := tcpPacket(v4a, v4b, syn, linuxOpts(1460))
		binary.BigEndian.PutUint16(pkt[6:], 0x2000) // more fragments
		if clampMSS(pkt, mss4, mss6) {
			t.Error("clamped the first fragment of a packet")
		}
	})
	t.Run("unknown MTU", func(t *testing.T) {
		if clampMSS(tcpPacket(v4a, v4b, syn, linuxOpts(1460)), 0, 0) {
			t.Error("clamped with no limit")
		}
	})
	t.Run("allocates nothing", func(t *testing.T) {
		pkt := tcpPacket(v4a, v4b, syn, linuxOpts(1460))
		if n := testing.AllocsPerRun(100, func() {
			binary.BigEndian.PutUint16(pkt[22:], 1460)
			clampMSS(pkt, mss4, mss6)
		}); n != 0 {
			t.Errorf("%v allocations per clamp", n)
		}
	})
}

func TestUpdateChecksumMatchesRecomputing(t *testing.T) {

	for _, mss := range []uint16{0, 1, 536, 1220, 1360, 1460, 0x7fff, 0xfffe, 0xffff} {
		for _, limit := range []uint16{1, 536, 1240, 1360, 0xfffe} {
			p := tcpPacket(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), 0x02, mssOption(mss))
			clampMSS(p, limit, limit)
			if !tcpChecksumOK(p) {
				t.Errorf("MSS %d clamped to %d: checksum wrong", mss, limit)
			}
		}
	}
}

// FuzzClampMSS: any bytes, never a panic; a packet with a correct TCP
// checksum keeps it, and the MSS never rises.
func FuzzClampMSS(f *testing.F) {
	f.Add(tcpPacket(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 0x02, mssOption(1460)), uint16(1360))
	f.Add(tcpPacket(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 0x12, append([]byte{1, 1}, mssOption(65535)...)), uint16(1220))
	f.Add([]byte{0x45, 0, 0, 20}, uint16(1))
	f.Fuzz(func(t *testing.T, pkt []byte, limit uint16) {
		valid := len(pkt) >= 40 && (pkt[0]>>4 == 4 && pkt[0]&0x0f == 5 || pkt[0]>>4 == 6 && len(pkt) >= 60) && tcpChecksumOK(pkt)
		if clampMSS(pkt, limit, limit) && valid && !tcpChecksumOK(pkt) {
			t.Fatal("a correct checksum became wrong")
		}
	})
}
