package ike

import (
	"context"
	"encoding/binary"
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

// secretChangeBetweenCookies is a client transport that stages the race
// of a gateway changing its cookie secret while its queue is long: the
// client's first retry with a cookie is held back, the secret changes,
// and a copy of the first request goes instead, which the gateway answers
// with the new secret's cookie; the client's retry with that one is
// replaced by the held retry, which the gateway still accepts (the
// previous secret) and makes the IKE SA from. The client takes its answer
// and signs its latest retry.
type secretChangeBetweenCookies struct {
	clientSide
	first, held []byte
}

func (c *secretChangeBetweenCookies) Send(msg []byte, to netip.AddrPort, natT bool) error {
	if m, err := wire.Parse(msg); err == nil && m.Exchange == wire.IKE_SA_INIT && !m.IsResponse() {
		switch {
		case wire.FindNotify(m.Payloads, wire.COOKIE) == nil:
			if c.first == nil {
				c.first = slices.Clone(msg)
			}
		case c.held == nil:
			c.held = slices.Clone(msg)
			c.w.r.do(context.Background(), func() {
				c.w.r.oldSecret = c.w.r.secret
				c.w.r.secret[0]++
			})
			msg = c.first
		default:
			msg = c.held
		}
	}
	return c.clientSide.Send(msg, to, natT)
}

// cookieRace is a client transport that stages a race; staged reports
// whether it did.
type cookieRace interface {
	Transport
	staged() bool
}

func (c *lateFirstRequest) staged() bool           { return c.raced }
func (c *secretChangeBetweenCookies) staged() bool { return c.held != nil }

// TestAuthOverCookieRetry: a client asked for a cookie signs its last
// retry; an overloaded gateway, whose queue holds older copies, made the
// IKE SA from another request the client sent. The client must get in, as
// it does when its last retry makes the SA (before: AUTHENTICATION_FAILED,
// "the gateway rejected our credentials", to 30-413 of 100,000 clients of
// an overloaded gateway):
//   - late first request: the IKE SA made from a copy of the first
//     request, handled once the gateway no longer asked for cookies;
//   - secret change: the client signed its retry with the new secret's
//     cookie, the IKE SA was made from its retry with the previous one's.
func TestAuthOverCookieRetry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stage func(clientSide) cookieRace
	}{
		{"late first request", func(c clientSide) cookieRace {
			return &lateFirstRequest{clientSide: c}
		}},
		{"secret change", func(c clientSide) cookieRace {
			return &secretChangeBetweenCookies{clientSide: c}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			psk := []byte("the key both ends have")
			w, _ := startResponder(t, ResponderConfig{PSK: psk})
			w.r.do(context.Background(), func() { w.r.cookiesUntil = time.Now().Add(time.Hour) })
			a := netip.MustParseAddr("192.0.2.50")
			tr := tc.stage(clientSide{w, a})
			ikeP, espP := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
			s := w.attach(t, a, SessionConfig{Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), RemoteID: mustID(t, "gw.mifsec.test"),
				PSK: psk, IKE: ikeP, ESP: espP, RequestIPv4: true,
				Retransmit: RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 5}}, tr, &childLog{})
			connect(t, s, true)
			if !tr.staged() {
				t.Fatal("the gateway never asked for a cookie: the race was not staged")
			}
			if st := clients(t, w); len(st) != 1 {
				t.Errorf("%d clients, want 1", len(st))
			}
		})
	}
}

// TestWithoutCookie: a request with the cookie leading its payloads loses
// it and is otherwise byte for byte the same; one without is unchanged.
func TestWithoutCookie(t *testing.T) {
	req := &wire.Message{SPIi: 7, Exchange: wire.IKE_SA_INIT, Flags: wire.FlagInitiator, Payloads: []wire.Payload{
		&wire.Nonce{Data: make([]byte, 32)},
		&wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: make([]byte, 20)},
	}}
	plain, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ck := cookie(make([]byte, 32), 1, make([]byte, 32), netip.MustParseAddr("192.0.2.1"), 7)
	req.Payloads = append([]wire.Payload{&wire.Notify{NotifyType: wire.COOKIE, Data: ck}}, req.Payloads...)
	withCK, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got := withCookie(plain, ck); string(got) != string(withCK) {
		t.Fatal("withCookie differs from the marshalled request with the cookie")
	}
	for _, tc := range []struct {
		name    string
		in, out []byte
	}{{"with cookie", withCK, plain}, {"without", plain, plain}} {
		got, ok := withoutCookie(tc.in)
		if !ok || string(got) != string(tc.out) {
			t.Errorf("%s: withoutCookie = %x, %v; want %x", tc.name, got, ok, tc.out)
		}
	}
	if _, ok := withoutCookie(withCK[:ikeHeaderLen+4]); ok {
		t.Error("a cookie cut short was taken")
	}
}

// FuzzWithoutCookie: any bytes, no panic; a request given a cookie gets
// back its own bytes.
func FuzzWithoutCookie(f *testing.F) {
	f.Add(withCookie(make([]byte, ikeHeaderLen), []byte{1, 2, 3}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, ok := withoutCookie(b); !ok || len(b) < ikeHeaderLen {
			return
		}
		if wire.PayloadType(b[16]) == wire.PayloadNotify || int(binary.BigEndian.Uint32(b[24:28])) != len(b) {
			return // not a request withCookie takes: a notify first, or the header's length not its own
		}
		back, ok := withoutCookie(withCookie(b, []byte{9, 9}))
		if !ok || string(back) != string(b) {
			t.Fatalf("withoutCookie(withCookie(%x)) = %x, %v", b, back, ok)
		}
	})
}
