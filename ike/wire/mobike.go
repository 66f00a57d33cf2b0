package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// additionalAddressNotify returns the ADDITIONAL_IP4_ADDRESS or
// ADDITIONAL_IP6_ADDRESS notification for a.
func additionalAddressNotify(a netip.Addr) *Notify {
	a = a.Unmap()
	if a.Is4() {
		return &Notify{NotifyType: ADDITIONAL_IP4_ADDRESS, Data: a.AsSlice()}
	}
	return &Notify{NotifyType: ADDITIONAL_IP6_ADDRESS, Data: a.AsSlice()}
}

// parseAdditionalAddress parses the data of an ADDITIONAL_IP4_ADDRESS (4
// bytes) or ADDITIONAL_IP6_ADDRESS (16 bytes) notification.
func parseAdditionalAddress(t NotifyType, b []byte) (netip.Addr, error) {
	switch {
	case t == ADDITIONAL_IP4_ADDRESS && len(b) == 4:
		return netip.AddrFrom4([4]byte(b)), nil
	case t == ADDITIONAL_IP6_ADDRESS && len(b) == 16:
		return netip.AddrFrom16([16]byte(b)), nil
	case t == ADDITIONAL_IP4_ADDRESS || t == ADDITIONAL_IP6_ADDRESS:
		return netip.Addr{}, fmt.Errorf("notify %d with %d bytes of address", t, len(b))
	}
	return netip.Addr{}, fmt.Errorf("notify %d is no additional address", t)
}

// AdditionalAddresses returns the peer's address list from ps: its
// ADDITIONAL_* addresses and whether it said NO_ADDITIONAL_ADDRESSES.
// Malformed entries are skipped. found says whether ps said anything.
func AdditionalAddresses(ps []Payload) (addrs []netip.Addr, none, found bool) {
	for _, n := range FindAll[*Notify](ps) {
		switch n.NotifyType {
		case NO_ADDITIONAL_ADDRESSES:
			none, found = true, true
		case ADDITIONAL_IP4_ADDRESS, ADDITIONAL_IP6_ADDRESS:
			if a, err := parseAdditionalAddress(n.NotifyType, n.Data); err == nil {
				addrs, found = append(addrs, a), true
			}
		}
	}
	return addrs, none, found
}

// AddressNotifies announces this side's other addresses.
func AddressNotifies(addrs []netip.Addr) []Payload {
	if len(addrs) == 0 {
		return []Payload{&Notify{NotifyType: NO_ADDITIONAL_ADDRESSES}}
	}
	var out []Payload
	for _, a := range addrs {
		out = append(out, additionalAddressNotify(a))
	}
	return out
}

// NoNATsData returns NO_NATS_ALLOWED data (RFC 4555 §4.2.4): the source
// and destination addresses, then the source and destination ports, of
// the packet that carries it. Both addresses are written in one family:
// IPv4 when both are IPv4 (or IPv4-mapped), IPv6 otherwise.
func NoNATsData(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	var b []byte
	if s.Is4() && d.Is4() {
		b = append(s.AsSlice(), d.AsSlice()...)
	} else {
		s16, d16 := s.As16(), d.As16()
		b = append(s16[:], d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// ParseNoNATs parses NO_NATS_ALLOWED data: 12 bytes for IPv4, 36 for IPv6.
func ParseNoNATs(b []byte) (src, dst netip.AddrPort, err error) {
	var s, d netip.Addr
	switch len(b) {
	case 12:
		s, d = netip.AddrFrom4([4]byte(b[0:4])), netip.AddrFrom4([4]byte(b[4:8]))
	case 36:
		s, d = netip.AddrFrom16([16]byte(b[0:16])), netip.AddrFrom16([16]byte(b[16:32]))
	default:
		return src, dst, fmt.Errorf("NO_NATS_ALLOWED of %d bytes, want 12 or 36", len(b))
	}
	n := len(b)
	return netip.AddrPortFrom(s, binary.BigEndian.Uint16(b[n-4:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(b[n-2:])), nil
}
