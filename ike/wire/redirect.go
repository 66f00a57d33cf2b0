package wire

import (
	"bytes"
	"fmt"
	"net/netip"
)

// The data of RFC 5685's REDIRECT and REDIRECTED_FROM notifications:
//
//	GW Ident Type(1) GW Ident Len(1) New Responder GW Identity(Len) [Nonce Data]
//
// GW Ident Type is 1 (an IPv4 address, 4 bytes), 2 (an IPv6 address, 16
// bytes) or 3 (an FQDN). REDIRECT in an IKE_SA_INIT response carries the
// initiator's nonce Ni after the identity (§4.1, §8); REDIRECT in an
// INFORMATIONAL or IKE_AUTH and REDIRECTED_FROM carry none.
const (
	GatewayIPv4 uint8 = 1
	GatewayIPv6 uint8 = 2
	GatewayFQDN uint8 = 3
)

// maxNonceData bounds the Nonce Data of a REDIRECT (RFC 7296 §3.9: a
// nonce has 16 to 256 bytes).
const maxNonceData = 256

// RedirectGateway is the gateway a REDIRECT names, or the original one a
// REDIRECTED_FROM names: an address, or else a name (FQDN).
type RedirectGateway struct {
	Addr netip.Addr
	Name string
}

func (g RedirectGateway) String() string {
	if g.Addr.IsValid() {
		return g.Addr.String()
	}
	return g.Name
}

// AppendRedirectData appends the data of a REDIRECT or REDIRECTED_FROM
// naming g, then nonce (nil: none) to b.
func AppendRedirectData(b []byte, g RedirectGateway, nonce []byte) ([]byte, error) {
	switch a := g.Addr.Unmap(); {
	case g.Addr.IsValid() && g.Name != "":
		return nil, fmt.Errorf("redirect gateway with both an address (%s) and a name (%q)", g.Addr, g.Name)
	case a.Is4():
		b = append(append(b, GatewayIPv4, 4), a.AsSlice()...)
	case a.Is6():
		b = append(append(b, GatewayIPv6, 16), a.AsSlice()...)
	default:
		if err := checkGatewayName(g.Name); err != nil {
			return nil, err
		}
		b = append(append(b, GatewayFQDN, byte(len(g.Name))), g.Name...)
	}
	if len(nonce) > maxNonceData {
		return nil, fmt.Errorf("redirect nonce of %d bytes, at most %d", len(nonce), maxNonceData)
	}
	return append(b, nonce...), nil
}

// checkGatewayName accepts a name of 1 to 255 printable ASCII bytes
// without spaces.
func checkGatewayName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("redirect gateway name of %d bytes, want 1-255", len(name))
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] > '~' {
			return fmt.Errorf("redirect gateway name with byte %#x at %d", name[i], i)
		}
	}
	return nil
}

// ParseRedirectData parses the data of a REDIRECT or REDIRECTED_FROM
// notification: the gateway it names and the Nonce Data that follows
// (nil when there is none; a copy otherwise).
func ParseRedirectData(b []byte) (g RedirectGateway, nonce []byte, err error) {
	if len(b) < 2 {
		return g, nil, fmt.Errorf("redirect data of %d bytes, want at least 2", len(b))
	}
	typ, n := b[0], int(b[1])
	if len(b) < 2+n {
		return g, nil, fmt.Errorf("redirect gateway identity of %d bytes in %d bytes of data", n, len(b)-2)
	}
	id := b[2 : 2+n]
	switch typ {
	case GatewayIPv4:
		if n != 4 {
			return g, nil, fmt.Errorf("redirect to an IPv4 address of %d bytes", n)
		}
		g.Addr = netip.AddrFrom4([4]byte(id))
	case GatewayIPv6:
		if n != 16 {
			return g, nil, fmt.Errorf("redirect to an IPv6 address of %d bytes", n)
		}
		g.Addr = netip.AddrFrom16([16]byte(id))
		if g.Addr.Is4In6() {
			return RedirectGateway{}, nil, fmt.Errorf("redirect to an IPv4-mapped IPv6 address %s", g.Addr)
		}
	case GatewayFQDN:
		if err := checkGatewayName(string(id)); err != nil {
			return g, nil, err
		}
		g.Name = string(id)
	default:
		return g, nil, fmt.Errorf("redirect gateway identity of unknown type %d", typ)
	}
	rest := b[2+n:]
	if len(rest) > maxNonceData {
		return RedirectGateway{}, nil, fmt.Errorf("redirect nonce of %d bytes, at most %d", len(rest), maxNonceData)
	}
	if len(rest) > 0 {
		nonce = bytes.Clone(rest)
	}
	return g, nonce, nil
}
