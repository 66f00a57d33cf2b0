package dataplane

import "encoding/binary"

// TCP MSS clamping: a SYN that crosses the tunnel, in either direction,
// announces at most the segment size that fits the tunnel's MTU. The host
// that runs the tunnel sizes its own SYNs by the TUN MTU already; hosts
// behind either end (a gateway's LAN, a routed subnet) size theirs by their
// own 1500-byte links, and without the clamp the far end would send them
// segments the tunnel can only carry fragmented or not at all.
//
// It runs on every packet of the hot path, so it decides on the fixed
// headers first (TCP, no fragment, SYN set) and touches the options only of
// a SYN; the checksum is updated incrementally (RFC 1624), not recomputed.

// mssFor returns the largest MSS that fits an MTU for IPv4 and IPv6 (IP and
// TCP headers without options), 0 when the MTU is unknown.
func mssFor(mtu int) (v4, v6 uint16) {
	if mtu < 1280 || mtu > 65535 {
		return 0, 0
	}
	return uint16(mtu - 40), uint16(mtu - 60)
}

// clampMSS lowers the MSS option of a TCP SYN in the IP packet pkt to at
// most mss4 (IPv4) or mss6 (IPv6) and reports whether it changed the
// packet. Anything else (not TCP, a fragment, no SYN, an MSS already small
// enough, malformed options, a zero limit) is left alone.
func clampMSS(pkt []byte, mss4, mss6 uint16) bool {
	var tcp []byte
	var limit uint16
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		// TCP, not a fragment (offset and more-fragments zero).
		if pkt[9] != 6 || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 || ihl < 20 || len(pkt) < ihl {
			return false
		}
		tcp, limit = pkt[ihl:], mss4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		if pkt[6] != 6 { // TCP right after the fixed header
			return false
		}
		tcp, limit = pkt[40:], mss6
	default:
		return false
	}
	if limit == 0 || len(tcp) < 20 || tcp[13]&0x02 == 0 { // SYN
		return false
	}
	doff := int(tcp[12]>>4) * 4
	if doff <= 20 || doff > len(tcp) {
		return false
	}
	opts := tcp[20:doff]
	for len(opts) > 0 {
		switch kind := opts[0]; kind {
		case 0: // end of options
			return false
		case 1: // no-operation
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
			return false
		}
		if opts[0] == 2 && opts[1] == 4 {
			old := binary.BigEndian.Uint16(opts[2:])
			if old <= limit {
				return false
			}
			binary.BigEndian.PutUint16(opts[2:], limit)
			binary.BigEndian.PutUint16(tcp[16:], updateChecksum(binary.BigEndian.Uint16(tcp[16:]), old, limit))
			return true
		}
		opts = opts[opts[1]:]
	}
	return false
}

// updateChecksum returns the Internet checksum sum after one 16-bit word of
// the data it covers changed from old to new (RFC 1624, equation 3).
func updateChecksum(sum, old, new uint16) uint16 {
	s := uint32(^sum) + uint32(^old) + uint32(new)
	s = s>>16 + s&0xffff
	s += s >> 16
	return ^uint16(s)
}
