package linkemu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/mifsec/mifsec/internal/inetsum"
)

func TestChecksumKnownHeader(t *testing.T) {
	// IPv4 header with its checksum 0xb861 (the common textbook example).
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := inetsum.Checksum(h); got != 0xb861 {
		t.Fatalf("checksum %#04x, want 0xb861", got)
	}
}

// frameSpec builds test super-frames.
type frameSpec struct {
	v6, udp bool
	vlan    bool
	payload int
	flags   byte // TCP flags
}

func (s frameSpec) build() (vnetHdr, []byte) {
	var f []byte
	f = append(f, 0x02, 0, 0, 0, 0, 0xb, 0x02, 0, 0, 0, 0, 0xa)
	if s.vlan {
		f = append(f, 0x81, 0x00, 0x00, 0x05)
	}
	proto := byte(protoTCP)
	if s.udp {
		proto = protoUDP
	}
	l4Len := 32 + s.payload
	if s.udp {
		l4Len = 8 + s.payload
	}
	if s.v6 {
		f = append(f, 0x86, 0xdd)
		f = append(f, 0x60, 0, 0, 0, byte(l4Len>>8), byte(l4Len), proto, 64)
		f = append(f, bytes.Repeat([]byte{0xfd, 1}, 8)...)
		f = append(f, bytes.Repeat([]byte{0xfd, 2}, 8)...)
	} else {
		f = append(f, 0x08, 0x00)
		tot := 20 + l4Len
		f = append(f, 0x45, 0, byte(tot>>8), byte(tot), 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2)
	}
	l4 := len(f)
	if s.udp {
		f = append(f, 0x11, 0x11, 0x22, 0x22, byte(l4Len>>8), byte(l4Len), 0, 0)
	} else {
		f = append(f, 0x11, 0x11, 0x22, 0x22, 0xff, 0xff, 0xff, 0x00, 0, 0, 0, 1, 0x80, s.flags, 0xff, 0xff, 0, 0, 0, 0)
		f = append(f, 1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8) // NOP NOP timestamps
	}
	for i := range s.payload {
		f = append(f, byte(i*7+i>>8))
	}
	h := vnetHdr{flags: vnetFlagNeedsCsum, gsoSize: 1448, csumStart: uint16(l4), csumOffset: 16}
	switch {
	case s.udp:
		h.gsoType, h.csumOffset, h.gsoSize = gsoUDPL4, 6, 1400
	case s.v6:
		h.gsoType = gsoTCPv6
	default:
		h.gsoType = gsoTCPv4
	}
	return h, f
}

// completeChecksum does what a device does with a NEEDS_CSUM packet and
// then checks the result against an independently built pseudo-header.
func completeChecksum(t *testing.T, seg []byte, h vnetHdr, v6 bool, l3 int) {
	t.Helper()
	l4 := seg[h.csumStart:]
	field := l4[h.csumOffset:]
	binary.BigEndian.PutUint16(field, inetsum.Checksum(l4))
	var pseudo []byte
	if v6 {
		pseudo = append(pseudo, seg[l3+8:l3+40]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(l4)))
		pseudo = append(pseudo, 0, 0, 0, seg[l3+6])
	} else {
		pseudo = append(pseudo, seg[l3+12:l3+20]...)
		pseudo = append(pseudo, 0, seg[l3+9])
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(l4)))
	}
	if got := inetsum.Fold(inetsum.Add(inetsum.Add(0, pseudo), l4)); got != 0xffff {
		t.Errorf("transport checksum does not verify: sum %#04x", got)
	}
}

func TestSegment(t *testing.T) {
	const fin, psh, ack, cwr = 0x01, 0x08, 0x10, 0x80
	for _, s := range []frameSpec{
		{payload: 4000, flags: ack | psh | fin | cwr},
		{payload: 1448 * 3, flags: ack},
		{payload: 1, flags: ack | fin},
		{v6: true, payload: 5000, flags: ack | psh},
		{vlan: true, payload: 3000, flags: ack},
		{udp: true, payload: 2900},
		{udp: true, v6: true, payload: 1400},
	} {
		t.Run(fmt.Sprintf("%+v", s), func(t *testing.T) {
			h, frame := s.build()
			var sf superFrame
			if err := sf.parse(h, frame); err != nil {
				t.Fatalf("parse: %v", err)
			}
			mss := int(h.gsoSize)
			wantSegs := (s.payload + mss - 1) / mss
			if sf.segs != wantSegs {
				t.Fatalf("%d segments, want %d", sf.segs, wantSegs)
			}
			var payload []byte
			buf := make([]byte, 70000)
			for i := range sf.segs {
				n := sf.write(i, buf)
				if n != vnetHdrLen+sf.segLen(i) {
					t.Fatalf("segment %d: wrote %d bytes, want %d", i, n, vnetHdrLen+sf.segLen(i))
				}
				sh := decodeVnetHdr(buf)
				seg := buf[vnetHdrLen:n]
				if sh.gsoType != gsoNone || sh.flags != vnetFlagNeedsCsum || int(sh.csumStart) != sf.l4 {
					t.Errorf("segment %d: virtio-net header %+v", i, sh)
				}
				if got, want := sf.wire(i), len(seg)-sf.l3; got != want || got != wireSize(seg) {
					t.Errorf("segment %d: wire size %d, want %d (wireSize %d)", i, got, want, wireSize(seg))
				}
				chunk := seg[sf.hdrLen:]
				if len(chunk) > mss || (i < sf.segs-1 && len(chunk) != mss) {
					t.Errorf("segment %d: %d payload bytes with mss %d", i, len(chunk), mss)
				}
				payload = append(payload, chunk...)
				ip := seg[sf.l3:]
				if s.v6 {
					if got := int(binary.BigEndian.Uint16(ip[4:])); got != len(seg)-sf.l3-40 {
						t.Errorf("segment %d: IPv6 payload length %d", i, got)
					}
				} else {
					if got := int(binary.BigEndian.Uint16(ip[2:])); got != len(seg)-sf.l3 {
						t.Errorf("segment %d: IPv4 total length %d", i, got)
					}
					if got := binary.BigEndian.Uint16(ip[4:]); got != 0x1234+uint16(i) {
						t.Errorf("segment %d: IP ID %#x", i, got)
					}
					if got := inetsum.Fold(inetsum.Add(0, ip[:20])); got != 0xffff {
						t.Errorf("segment %d: IPv4 header checksum does not verify", i)
					}
				}
				l4 := seg[sf.l4:]
				if s.udp {
					if got := int(binary.BigEndian.Uint16(l4[4:])); got != len(l4) {
						t.Errorf("segment %d: UDP length %d, want %d", i, got, len(l4))
					}
				} else {
					if got, want := binary.BigEndian.Uint32(l4[4:]), 0xffffff00+uint32(i*mss); got != want {
						t.Errorf("segment %d: seq %#x, want %#x", i, got, want)
					}
					f := l4[13]
					last := i == sf.segs-1
					if want := s.flags&cwr != 0 && i == 0; (f&cwr != 0) != want {
						t.Errorf("segment %d: CWR %v, want %v", i, f&cwr != 0, want)
					}
					if want := s.flags&(fin|psh) != 0 && last; (f&(fin|psh) != 0) != want {
						t.Errorf("segment %d: FIN/PSH %#x, want them only on the last", i, f)
					}
					if f&ack == 0 {
						t.Errorf("segment %d: ACK lost", i)
					}
				}
				completeChecksum(t, seg, sh, s.v6, sf.l3)
			}
			if !bytes.Equal(payload, frame[sf.hdrLen:]) {
				t.Errorf("segments do not add up to the super-frame's payload")
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	h, frame := frameSpec{payload: 3000, flags: 0x10}.build()
	for _, tc := range []struct {
		name  string
		h     vnetHdr
		frame []byte
	}{
		{"short", h, frame[:10]},
		{"no TCP header", h, frame[:14+20+10]},
		{"zero gso size", vnetHdr{gsoType: gsoTCPv4, flags: vnetFlagNeedsCsum}, frame},
		{"UFO", vnetHdr{gsoType: gsoUDP, gsoSize: 1000}, frame},
		{"UDP type on TCP", vnetHdr{gsoType: gsoUDPL4, gsoSize: 1000}, frame},
		{"not IP", h, append([]byte{}, append(frame[:12:12], 0x08, 0x06)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sf superFrame
			if err := sf.parse(tc.h, tc.frame); err == nil {
				t.Errorf("parse accepted it: %+v", sf)
			}
		})
	}
}

func TestWireSize(t *testing.T) {
	_, plain := frameSpec{payload: 100}.build()
	_, tagged := frameSpec{payload: 100, vlan: true}.build()
	if got := wireSize(plain); got != 20+32+100 {
		t.Errorf("plain frame: wire size %d", got)
	}
	if got := wireSize(tagged); got != 20+32+100 {
		t.Errorf("VLAN-tagged frame: wire size %d", got)
	}
	if got := wireSize([]byte{1, 2, 3}); got != 3 {
		t.Errorf("runt: wire size %d", got)
	}
}

// FuzzSuperFrame feeds arbitrary virtio-net headers and frames to the
// segmentation code: it must reject or cut them without panicking, and the
// segments must carry exactly the payload.
func FuzzSuperFrame(f *testing.F) {
	for _, s := range []frameSpec{{payload: 3000, flags: 0x19}, {v6: true, payload: 2000}, {udp: true, payload: 2800}, {vlan: true, payload: 10}} {
		h, frame := s.build()
		var b [vnetHdrLen]byte
		h.encode(b[:])
		f.Add(append(b[:], frame...))
	}
	buf := make([]byte, vnetHdrLen+1<<17)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < vnetHdrLen {
			return
		}
		h := decodeVnetHdr(data)
		frame := data[vnetHdrLen:]
		_ = wireSize(frame)
		var sf superFrame
		if err := sf.parse(h, frame); err != nil {
			return
		}
		total := 0
		for i := range sf.segs {
			n := sf.write(i, buf)
			if n != vnetHdrLen+sf.segLen(i) || n > len(buf) {
				t.Fatalf("segment %d: wrote %d bytes, segLen %d", i, n, sf.segLen(i))
			}
			total += n - vnetHdrLen - sf.hdrLen
		}
		if total != sf.payload {
			t.Fatalf("segments carry %d payload bytes, super-frame %d", total, sf.payload)
		}
	})
}
