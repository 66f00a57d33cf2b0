package dataplane

import (
	"encoding/binary"
	"fmt"

	"github.com/mifsec/mifsec/internal/inetsum"
)

// Transport mode (RFC 4303 §3.1.1) between two hosts that name one stable
// address each in their traffic selectors (docs/end-to-end.md).
//
// The sender strips the IP header of the packet the host's stack wrote to
// the TUN and seals what follows it, announcing the upper protocol (TCP,
// UDP, ICMP...) as the next header: 20 or 40 bytes less per packet than
// tunnel mode. The receiver rebuilds the header from the SA's selectors:
// source the peer's stable address, destination its own. The outer
// addresses (whichever interfaces the packet travelled) play no part, so
// the checksums the sender's stack computed over the stable addresses hold
// as they are, with no NAT-OA adjustment (RFC 3948 §3.1.2 is moot when
// the pseudo-header's addresses are the selectors').
//
// What a rebuilt header could not reproduce travels whole, as in tunnel
// mode, with next header 4 or 41: an IPv4 fragment (its offset lives in
// the header RFC 4301 §7 would drop) and an IPv4 header with options. The
// receiver checks such a packet's addresses against the selectors like
// any tunnel-mode packet, so nothing outside them gets in either way. The
// rebuilt header has TTL (hop limit) 64, DSCP and ECN zero and DF set.

// transportPayload returns how many bytes of pkt, an IP packet from the
// TUN, a transport-mode SA strips, and the next header that announces what
// is left. ok is false when the packet must travel whole (an IPv4
// fragment or an IPv4 header with options).
func transportPayload(pkt []byte) (headerLen int, nextHeader byte, ok bool) {
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[0]&0x0f != 5 {
			return 0, 0, false
		}
		if frag := binary.BigEndian.Uint16(pkt[6:]); frag&0x3fff != 0 {
			return 0, 0, false // more fragments, or an offset
		}
		return 20, pkt[9], true
	case 6:
		if len(pkt) < 40 {
			return 0, 0, false
		}
		// Extension headers (a fragment header too) stay in the payload:
		// the rebuilt header announces the first of them.
		return 40, pkt[6], true
	}
	return 0, 0, false
}

// transportHeader is the IP header an inbound transport-mode SA puts in
// front of each payload: a template with the addresses in place and, for
// IPv4, the checksum over the template with a zero total length.
type transportHeader struct {
	b   [40]byte
	len int    // 20 or 40
	sum uint16 // IPv4 only
}

// newTransportHeader checks that the selectors of an inbound SA name one
// address each, of one family, and builds the header for packets from
// remote to local.
func newTransportHeader(remote, local Selectors) (*transportHeader, error) {
	if len(remote) != 1 || len(local) != 1 || !remote[0].IsSingleIP() || !local[0].IsSingleIP() {
		return nil, fmt.Errorf("transport mode needs one address on each side, not %v and %v", remote, local)
	}
	src, dst := remote[0].Addr(), local[0].Addr()
	h := &transportHeader{}
	switch {
	case src.Is4() && dst.Is4():
		h.len = 20
		h.b[0] = 0x45
		h.b[6] = 0x40 // DF
		h.b[8] = 64
		copy(h.b[12:16], src.AsSlice())
		copy(h.b[16:20], dst.AsSlice())
		h.sum = inetsum.Checksum(h.b[:20])
	case src.Is6() && dst.Is6() && !src.Is4In6() && !dst.Is4In6():
		h.len = 40
		h.b[0] = 0x60
		h.b[7] = 64
		copy(h.b[8:24], src.AsSlice())
		copy(h.b[24:40], dst.AsSlice())
	default:
		return nil, fmt.Errorf("transport mode needs addresses of one family, not %v and %v", src, dst)
	}
	return h, nil
}

// write puts the header for a payloadLen-byte payload of next header nh
// at b[:h.len].
func (h *transportHeader) write(b []byte, payloadLen int, nh byte) {
	copy(b[:h.len], h.b[:h.len])
	if h.len == 20 {
		total := uint16(20 + payloadLen)
		binary.BigEndian.PutUint16(b[2:], total)
		b[9] = nh
		// The template's sum covers a zero length and protocol.
		sum := updateChecksum(h.sum, 0, total)
		sum = updateChecksum(sum, uint16(64)<<8, uint16(64)<<8|uint16(nh))
		binary.BigEndian.PutUint16(b[10:], sum)
		return
	}
	binary.BigEndian.PutUint16(b[4:], uint16(payloadLen))
	b[6] = nh
}
