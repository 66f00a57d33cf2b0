package ike

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// lateFirstRequest is a client transport that, when its session retries
// IKE_SA_INIT with the gateway's cookie, stops the gateway asking for
// cookies and delivers a copy of the first request (without the cookie)
// instead of the retry: the copy a busy gateway had queued and handles
// late.
type lateFirstRequest struct {
	clientSide
	first []byte
	raced bool
}

func (c *lateFirstRequest) Send(msg []byte, to netip.AddrPort, natT bool) error {
	if m, err := wire.Parse(msg); err == nil && m.Exchange == wire.IKE_SA_INIT && !m.IsResponse() {
		if wire.FindNotify(m.Payloads, wire.COOKIE) == nil {
			if c.first == nil {
				c.first = slices.Clone(msg)
			}
		} else if !c.raced {
			c.raced = true
			c.w.r.do(context.Background(), func() { c.w.r.cookiesUntil = time.Time{} })
			msg = c.first
		}
	}
	return c.clientSide.Send(msg, to, natT)
}

// TestAuthOverCookieRetry: a client asked for a cookie retries with it and
// signs the retry; the gateway, no longer asking for cookies, made the IKE
// SA from a late copy of the first request. The client must get in, as it
// does when the retry itself makes the SA (before: AUTHENTICATION_FAILED,
// "the gateway rejected our credentials", to 30-400 of 100,000 clients of
// an overloaded gateway).
func TestAuthOverCookieRetry(t *testing.T) {
	psk := []byte("the key both ends have")
	w, _ := startResponder(t, ResponderConfig{PSK: psk})
	w.r.do(context.Background(), func() { w.r.cookiesUntil = time.Now().Add(time.Hour) })
	a := netip.MustParseAddr("192.0.2.50")
	tr := &lateFirstRequest{clientSide: clientSide{w, a}}
	ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
	s := w.attach(t, a, SessionConfig{Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), RemoteID: mustID(t, "gw.mifsec.test"),
		PSK: psk, IKE: ikeP, ESP: espP, RequestIPv4: true,
		Retransmit: RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 5}}, tr, &childLog{})
	connect(t, s, true)
	if !tr.raced {
		t.Fatal("the gateway never asked for a cookie: the race was not staged")
	}
	if st := clients(t, w); len(st) != 1 {
		t.Errorf("%d clients, want 1", len(st))
	}
}
