package ike

import (
	"fmt"
	"net/netip"

	"github.com/mifsec/mifsec/ike/wire"
)

// Transport mode (RFC 7296 §1.3.1): the initiator asks for it with
// USE_TRANSPORT_MODE in the request that creates a Child SA, the responder
// agrees by sending it back, and a response without it means tunnel mode.
// A rekey asks again for the mode of the SA it replaces. This
// implementation agrees only where the data plane can rebuild the IP
// header from the selectors: one address on each side, of one family
// (docs/end-to-end.md).

// transportRequest is the notification that asks for transport mode, or
// nothing.
func transportRequest(want bool) []wire.Payload {
	if !want {
		return nil
	}
	return []wire.Payload{&wire.Notify{NotifyType: wire.USE_TRANSPORT_MODE}}
}

// CheckTransportSelectors says why a Child SA with these selectors cannot
// run in transport mode here, nil when it can: one address on each side,
// of one family.
func CheckTransportSelectors(local, remote []netip.Prefix) error {
	if len(local) != 1 || len(remote) != 1 || !local[0].IsSingleIP() || !remote[0].IsSingleIP() {
		return fmt.Errorf("transport mode needs one address on each side, not %v and %v", local, remote)
	}
	l, r := local[0].Addr(), remote[0].Addr()
	if l.Is4() != r.Is4() || l.Is4In6() || r.Is4In6() {
		return fmt.Errorf("transport mode needs addresses of one family, not two families (%v and %v)", l, r)
	}
	return nil
}

// transportSelectors reports whether a Child SA with these selectors can
// run in transport mode.
func transportSelectors(local, remote []netip.Prefix) bool {
	return CheckTransportSelectors(local, remote) == nil
}

// answerTransport is a responder's decision on a request that creates a
// Child SA with the selectors local and remote: transport mode when the
// peer asked, allow says yes, and the selectors permit it. The notification
// to put in the response comes with a yes.
func answerTransport(req []wire.Payload, allow bool, local, remote []netip.Prefix) (bool, []wire.Payload) {
	ok := allow && wire.FindNotify(req, wire.USE_TRANSPORT_MODE) != nil && transportSelectors(local, remote)
	return ok, transportRequest(ok)
}

// agreedTransport is the initiator's reading of a response to a request
// that asked for transport mode (asked) or not.
func agreedTransport(asked bool, reply []wire.Payload, c *ChildSA) bool {
	return asked && wire.FindNotify(reply, wire.USE_TRANSPORT_MODE) != nil && transportSelectors(c.LocalTS, c.RemoteTS)
}

// mode names the Child SA's mode for status output.
func (c *ChildSA) mode() string {
	if c.Transport {
		return "transport"
	}
	return "tunnel"
}
