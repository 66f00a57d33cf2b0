package linkemu

import (
	"encoding/binary"
	"errors"

	"github.com/mifsec/mifsec/internal/inetsum"
)

// virtio-net header (struct virtio_net_hdr, little-endian fields as the
// kernel uses for packet sockets), prepended to every frame read from or
// written to a socket with PACKET_VNET_HDR.
const (
	vnetHdrLen = 10

	vnetFlagNeedsCsum = 1

	gsoNone   = 0
	gsoTCPv4  = 1
	gsoUDP    = 3 // UFO, obsolete: the kernel no longer produces it
	gsoTCPv6  = 4
	gsoUDPL4  = 5
	gsoECNBit = 0x80
)

type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func decodeVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.LittleEndian.Uint16(b[2:]),
		gsoSize:    binary.LittleEndian.Uint16(b[4:]),
		csumStart:  binary.LittleEndian.Uint16(b[6:]),
		csumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

func (h vnetHdr) encode(b []byte) {
	b[0] = h.flags
	b[1] = h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffset)
}

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8

	protoTCP = 6
	protoUDP = 17
)

var (
	errShortFrame  = errors.New("frame too short")
	errNotIP       = errors.New("super-frame is not IPv4 or IPv6")
	errBadIPHeader = errors.New("malformed IP header")
	errBadL4Header = errors.New("malformed TCP or UDP header")
	errGSOType     = errors.New("unsupported GSO type")
	errGSOSize     = errors.New("GSO segment size is zero")
)

// l3Offset is the offset of the L3 header behind the Ethernet header and up
// to two VLAN tags, with the EtherType.
func l3Offset(frame []byte) (off int, etherType uint16, ok bool) {
	off = 12
	for range 3 {
		if len(frame) < off+2 {
			return 0, 0, false
		}
		etherType = binary.BigEndian.Uint16(frame[off:])
		off += 2
		if etherType != etherTypeVLAN && etherType != etherTypeQinQ {
			return off, etherType, true
		}
		off += 2
	}
	return 0, 0, false
}

// wireSize is the size of the frame as counted for Rate and the statistics:
// the L3 packet without the Ethernet header.
func wireSize(frame []byte) int {
	off, _, ok := l3Offset(frame)
	if !ok || off > len(frame) {
		return len(frame)
	}
	return len(frame) - off
}

// superFrame is a TCP or UDP segmentation-offload frame being cut into the
// packets the kernel's GSO would have sent. It keeps references into the
// frame; it does not allocate.
type superFrame struct {
	frame   []byte
	l3, l4  int  // offsets of the IP and TCP/UDP headers
	v6      bool // IPv6 rather than IPv4
	udp     bool // UDP (GSO_UDP_L4) rather than TCP
	hdrLen  int  // all headers up to the payload
	mss     int  // payload bytes per segment
	payload int  // payload bytes in the super-frame
	segs    int
	ipID    uint16
	seq     uint32
}

// parse prepares f to cut frame, which came with header h whose gsoType is
// not gsoNone.
func (f *superFrame) parse(h vnetHdr, frame []byte) error {
	*f = superFrame{frame: frame}
	switch h.gsoType &^ gsoECNBit {
	case gsoTCPv4, gsoTCPv6:
	case gsoUDPL4:
		f.udp = true
	default:
		return errGSOType
	}
	if h.gsoSize == 0 {
		return errGSOSize
	}
	f.mss = int(h.gsoSize)
	l3, etherType, ok := l3Offset(frame)
	if !ok {
		return errShortFrame
	}
	f.l3 = l3
	var proto uint8
	switch etherType {
	case etherTypeIPv4:
		if len(frame) < l3+20 || frame[l3]>>4 != 4 {
			return errBadIPHeader
		}
		ihl := int(frame[l3]&0x0f) * 4
		if ihl < 20 || len(frame) < l3+ihl {
			return errBadIPHeader
		}
		f.l4 = l3 + ihl
		proto = frame[l3+9]
		f.ipID = binary.BigEndian.Uint16(frame[l3+4:])
	case etherTypeIPv6:
		if len(frame) < l3+40 || frame[l3]>>4 != 6 {
			return errBadIPHeader
		}
		f.v6 = true
		proto = frame[l3+6]
		f.l4 = l3 + 40
		if proto != protoTCP && proto != protoUDP {
			// Extension headers: the checksum start the kernel gave
			// is where the transport header begins.
			cs := int(h.csumStart)
			if h.flags&vnetFlagNeedsCsum == 0 || cs <= f.l4 || cs > len(frame) {
				return errBadIPHeader
			}
			f.l4 = cs
			proto = protoTCP
			if f.udp {
				proto = protoUDP
			}
		}
	default:
		return errNotIP
	}
	if (proto == protoUDP) != f.udp || (proto != protoUDP && proto != protoTCP) {
		return errGSOType
	}
	if f.udp {
		if len(frame) < f.l4+8 {
			return errBadL4Header
		}
		f.hdrLen = f.l4 + 8
	} else {
		if len(frame) < f.l4+20 {
			return errBadL4Header
		}
		doff := int(frame[f.l4+12]>>4) * 4
		if doff < 20 || len(frame) < f.l4+doff {
			return errBadL4Header
		}
		f.hdrLen = f.l4 + doff
		f.seq = binary.BigEndian.Uint32(frame[f.l4+4:])
	}
	f.payload = len(frame) - f.hdrLen
	f.segs = (f.payload + f.mss - 1) / f.mss
	if f.segs == 0 {
		f.segs = 1
	}
	return nil
}

// segment returns the payload bounds of segment i.
func (f *superFrame) segment(i int) (start, n int) {
	start = f.hdrLen + i*f.mss
	n = min(f.mss, f.hdrLen+f.payload-start)
	return start, n
}

// segLen is the length of segment i as a frame (without virtio-net header).
func (f *superFrame) segLen(i int) int {
	_, n := f.segment(i)
	return f.hdrLen + n
}

// wire is the wire size of segment i (see wireSize).
func (f *superFrame) wire(i int) int { return f.segLen(i) - f.l3 }

// write writes segment i with its virtio-net header into dst, which must
// hold vnetHdrLen+segLen(i) bytes, and returns the bytes written. The
// segment carries a partial checksum (pseudo-header sum, NEEDS_CSUM), like
// a segment of the kernel's GSO before the device completes it.
func (f *superFrame) write(i int, dst []byte) int {
	start, n := f.segment(i)
	total := f.hdrLen + n
	out := dst[vnetHdrLen : vnetHdrLen+total]
	copy(out, f.frame[:f.hdrLen])
	copy(out[f.hdrLen:], f.frame[start:start+n])
	csumOffset := uint16(16)
	if f.udp {
		csumOffset = 6
	}
	vnetHdr{flags: vnetFlagNeedsCsum, csumStart: uint16(f.l4), csumOffset: csumOffset}.encode(dst)

	l4Len := total - f.l4
	var sum uint64
	if f.v6 {
		ip := out[f.l3:]
		binary.BigEndian.PutUint16(ip[4:], uint16(total-f.l3-40))
		sum = inetsum.Add(0, ip[8:40])
	} else {
		ip := out[f.l3:f.l4]
		binary.BigEndian.PutUint16(ip[2:], uint16(total-f.l3))
		binary.BigEndian.PutUint16(ip[4:], f.ipID+uint16(i))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], inetsum.Checksum(ip))
		sum = inetsum.Add(0, ip[12:20])
	}
	l4 := out[f.l4:]
	if f.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4Len))
		sum += protoUDP
	} else {
		binary.BigEndian.PutUint32(l4[4:], f.seq+uint32(i*f.mss))
		const fin, psh, cwr = 0x01, 0x08, 0x80
		if i > 0 {
			l4[13] &^= cwr
		}
		if i < f.segs-1 {
			l4[13] &^= fin | psh
		}
		sum += protoTCP
	}
	sum += uint64(l4Len)
	binary.BigEndian.PutUint16(l4[csumOffset:], inetsum.Fold(sum))
	return vnetHdrLen + total
}
