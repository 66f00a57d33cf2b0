package ike

import (
	"crypto/md5"
	"strings"
	"testing"

	"layeh.com/radius"
	"layeh.com/radius/rfc2869"
)

// TestRADIUSMessageAuthenticator: an answer whose Message-Authenticator
// was made with the request's authenticator and the shared secret passes;
// one tampered with, made with another secret or without the attribute
// does not.
func TestRADIUSMessageAuthenticator(t *testing.T) {
	secret := []byte("shared")
	var reqAuth [16]byte
	copy(reqAuth[:], "request authenti")
	answer := func(secret []byte, eap []byte, withMA bool) *radius.Packet {
		p := &radius.Packet{Code: radius.CodeAccessChallenge, Identifier: 7, Authenticator: reqAuth, Secret: secret}
		rfc2869.EAPMessage_Set(p, eap)
		if withMA {
			rfc2869.MessageAuthenticator_Set(p, make([]byte, md5.Size))
			wire, err := p.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			rfc2869.MessageAuthenticator_Set(p, hmacMD5(secret, wire))
		}
		p.Authenticator = [16]byte{1, 2, 3} // the response authenticator differs on the wire
		return p
	}
	eap := []byte{1, 2, 0, 5, 1}
	tampered := answer(secret, eap, true)
	rfc2869.EAPMessage_Del(tampered)
	rfc2869.EAPMessage_Set(tampered, []byte{1, 2, 0, 5, 26})
	for _, tc := range []struct {
		name string
		p    *radius.Packet
		err  string
	}{
		{"good", answer(secret, eap, true), ""},
		{"long EAP message in several attributes", answer(secret, make([]byte, 600), true), ""},
		{"another secret", answer([]byte("other"), eap, true), "wrong Message-Authenticator"},
		{"tampered", tampered, "wrong Message-Authenticator"},
		{"none", answer(secret, eap, false), "without Message-Authenticator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkMessageAuthenticator(tc.p, reqAuth, secret)
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("checkMessageAuthenticator = %v, want %q", err, tc.err)
			}
		})
	}
}
