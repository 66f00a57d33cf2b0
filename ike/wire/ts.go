package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
)

// TS is a Traffic Selector payload (RFC 7296 §3.13): TSi, or TSr when
// Responder is set.
type TS struct {
	Responder bool
	Selectors []TrafficSelector
}

// TrafficSelector is one address range and port range. Its type on the
// wire follows the address family: TS_IPV4_ADDR_RANGE for IPv4 addresses,
// TS_IPV6_ADDR_RANGE for IPv6 ones.
type TrafficSelector struct {
	IPProtocol         uint8 // 0 for any
	StartPort, EndPort uint16
	Start, End         netip.Addr
}

func (p *TS) Type() PayloadType {
	if p.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

func parseTS(responder bool, b []byte) (*TS, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	p := &TS{Responder: responder}
	count := int(b[0])
	b = b[4:]
	for i := 1; i <= count; i++ {
		if len(b) < 4 {
			return nil, fmt.Errorf("selector %d of %d: %d bytes, header needs 4", i, count, len(b))
		}
		tsType := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		var want, addrLen int
		switch tsType {
		case TSIPv4AddrRange:
			want, addrLen = tsIPv4Len, 4
		case TSIPv6AddrRange:
			want, addrLen = tsIPv6Len, 16
		default:
			return nil, fmt.Errorf("selector %d: unsupported type %d", i, tsType)
		}
		if n != want {
			return nil, fmt.Errorf("selector %d: type %d with length %d, want %d", i, tsType, n, want)
		}
		if n > len(b) {
			return nil, fmt.Errorf("selector %d: length %d exceeds the %d bytes left", i, n, len(b))
		}
		ts := TrafficSelector{
			IPProtocol: b[1],
			StartPort:  binary.BigEndian.Uint16(b[4:]),
			EndPort:    binary.BigEndian.Uint16(b[6:]),
		}
		ts.Start, _ = netip.AddrFromSlice(b[8 : 8+addrLen])
		ts.End, _ = netip.AddrFromSlice(b[8+addrLen : 8+2*addrLen])
		if err := ts.check(); err != nil {
			return nil, fmt.Errorf("selector %d: %w", i, err)
		}
		p.Selectors = append(p.Selectors, ts)
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after %d selectors", len(b), count)
	}
	return p, nil
}

// check requires a valid address range of one family and a port range
// that is ordered or OPAQUE (start 65535, end 0; RFC 7296 §3.13.1).
func (ts *TrafficSelector) check() error {
	if !ts.Start.IsValid() || !ts.End.IsValid() {
		return fmt.Errorf("missing address")
	}
	if ts.Start.Is4() != ts.End.Is4() {
		return fmt.Errorf("addresses %v and %v of different families", ts.Start, ts.End)
	}
	if ts.Start.Zone() != "" || ts.End.Zone() != "" {
		return fmt.Errorf("address with a zone")
	}
	if ts.Start.Compare(ts.End) > 0 {
		return fmt.Errorf("start address %v after end address %v", ts.Start, ts.End)
	}
	opaque := ts.StartPort == math.MaxUint16 && ts.EndPort == 0
	if ts.StartPort > ts.EndPort && !opaque {
		return fmt.Errorf("start port %d after end port %d", ts.StartPort, ts.EndPort)
	}
	return nil
}

func (p *TS) appendBody(b []byte) ([]byte, error) {
	if len(p.Selectors) > math.MaxUint8 {
		return nil, fmt.Errorf("%d selectors, at most 255", len(p.Selectors))
	}
	b = append(b, uint8(len(p.Selectors)), 0, 0, 0)
	for i := range p.Selectors {
		ts := &p.Selectors[i]
		if err := ts.check(); err != nil {
			return nil, fmt.Errorf("selector %d: %w", i+1, err)
		}
		tsType, n := TSIPv6AddrRange, tsIPv6Len
		if ts.Start.Is4() {
			tsType, n = TSIPv4AddrRange, tsIPv4Len
		}
		b = append(b, tsType, ts.IPProtocol)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = binary.BigEndian.AppendUint16(b, ts.StartPort)
		b = binary.BigEndian.AppendUint16(b, ts.EndPort)
		b = append(b, ts.Start.AsSlice()...)
		b = append(b, ts.End.AsSlice()...)
	}
	return b, nil
}
