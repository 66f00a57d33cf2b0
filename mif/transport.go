package mif

import (
	"errors"
	"net"
	"net/netip"

	"github.com/mifsec/mifsec/dataplane/udp"
)

// ikeTransport carries IKE messages: on UDP port 500, and behind the
// non-ESP marker on the NAT-T socket (4500) that the data plane shares. It
// implements ike.Transport for both the client and the gateway.
type ikeTransport struct {
	ike500 *net.UDPConn // nil when IKE starts on port 4500
	natT   *udp.Conn
}

// Send implements ike.Transport.
func (t *ikeTransport) Send(msg []byte, to netip.AddrPort, natT bool) error {
	if natT {
		b := make([]byte, 4+len(msg)) // non-ESP marker
		copy(b[4:], msg)
		return t.natT.WriteTo(b, to)
	}
	if t.ike500 == nil {
		return errors.New("no socket on port 500")
	}
	_, err := t.ike500.WriteToUDPAddrPort(msg, to)
	return err
}

// readPort500 hands every datagram received on port 500 to deliver until
// the socket is closed. (IKE on 4500 reaches the session through the data
// plane's Control callback.)
func (t *ikeTransport) readPort500(deliver func(msg []byte, from netip.AddrPort, natT bool)) {
	buf := make([]byte, 65535)
	for {
		n, from, err := t.ike500.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		deliver(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), false)
	}
}
