package ike

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/vendors/microsoft"
)

// EAP through RADIUS (RFC 3579): the gateway asks the client's EAP
// identity itself, then relays each EAP packet in an Access-Request (with
// Message-Authenticator, RFC 2869 §5.14, and the server's State) until
// Access-Accept, whose MS-MPPE-Recv-Key and MS-MPPE-Send-Key (RFC 2548)
// make the MSK, or Access-Reject. Accounting (RFC 2866) records a Start
// when a client so authenticated is admitted and a Stop when it goes.
// The RADIUS exchanges run beside the Responder's loop, never in it.

// RADIUSConfig names the RADIUS server EAP logins are checked by.
type RADIUSConfig struct {
	// Server is the authentication server, host:port (1812).
	Server string
	// Accounting is the accounting server, host:port (1813); "" sends no
	// accounting.
	Accounting string
	Secret     []byte
	// NASIdentifier names the gateway to the server (its --local-id).
	NASIdentifier string
	// Timeout bounds one request with its retransmissions (one a
	// second); 0 means 3 s.
	Timeout time.Duration
}

// radiusAnswer is what one Access-Request got.
type radiusAnswer struct {
	code  radius.Code
	eap   []byte // EAP-Message
	state []byte
	msk   []byte // Access-Accept: MS-MPPE-Recv-Key | MS-MPPE-Send-Key
	reply string // Reply-Message, for the log
}

type radiusClient struct {
	cfg    RADIUSConfig
	client *radius.Client
}

func newRADIUSClient(cfg RADIUSConfig) (*radiusClient, error) {
	if cfg.Server == "" || len(cfg.Secret) == 0 {
		return nil, errors.New("RADIUS needs a server and a shared secret")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	// MaxPacketErrors 0: a forged or garbled answer is dropped and the
	// wait goes on.
	return &radiusClient{cfg: cfg, client: &radius.Client{Retry: time.Second}}, nil
}

// authenticate relays one EAP packet of user's login from the client at
// calling, with the server's State of the previous answer.
func (c *radiusClient) authenticate(user string, eap, state []byte, calling netip.AddrPort) (radiusAnswer, error) {
	req := radius.New(radius.CodeAccessRequest, c.cfg.Secret)
	rfc2865.UserName_SetString(req, user)
	c.describeNAS(req, calling)
	rfc2865.ServiceType_Set(req, rfc2865.ServiceType_Value_FramedUser)
	rfc2869.EAPMessage_Set(req, eap)
	if state != nil {
		rfc2865.State_Set(req, state)
	}
	// Message-Authenticator: HMAC-MD5 of the request with the attribute
	// zero (RFC 3579 §3.2).
	rfc2869.MessageAuthenticator_Set(req, make([]byte, md5.Size))
	wire, err := req.MarshalBinary()
	if err != nil {
		return radiusAnswer{}, err
	}
	rfc2869.MessageAuthenticator_Set(req, hmacMD5(c.cfg.Secret, wire))

	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	resp, err := c.client.Exchange(ctx, req, c.cfg.Server)
	if err != nil {
		return radiusAnswer{}, fmt.Errorf("RADIUS server %s did not answer: %w", c.cfg.Server, err)
	}
	if err := checkMessageAuthenticator(resp, req.Authenticator, c.cfg.Secret); err != nil {
		return radiusAnswer{}, fmt.Errorf("RADIUS server %s: %w", c.cfg.Server, err)
	}
	a := radiusAnswer{code: resp.Code, eap: rfc2869.EAPMessage_Get(resp), reply: rfc2865.ReplyMessage_GetString(resp)}
	switch resp.Code {
	case radius.CodeAccessChallenge:
		a.state = rfc2865.State_Get(resp)
	case radius.CodeAccessAccept:
		recv, err1 := microsoft.MSMPPERecvKey_Lookup(resp, req)
		send, err2 := microsoft.MSMPPESendKey_Lookup(resp, req)
		if err1 != nil || err2 != nil || len(recv) == 0 || len(send) == 0 {
			return radiusAnswer{}, fmt.Errorf("RADIUS server %s accepted the login but sent no MS-MPPE keys (the MSK)", c.cfg.Server)
		}
		// Padded to the 64 bytes EAP-MSCHAPv2 derives (zeros), so that
		// both ends key AUTH with the same bytes.
		a.msk = make([]byte, max(64, len(recv)+len(send)))
		copy(a.msk[copy(a.msk, recv):], send)
		clear(recv)
		clear(send)
	case radius.CodeAccessReject:
	default:
		return radiusAnswer{}, fmt.Errorf("RADIUS server %s answered with code %v", c.cfg.Server, resp.Code)
	}
	return a, nil
}

// describeNAS adds who asks and for whom: NAS-Identifier, NAS-Port-Type
// Virtual, Calling-Station-Id (the client's address).
func (c *radiusClient) describeNAS(p *radius.Packet, calling netip.AddrPort) {
	if c.cfg.NASIdentifier != "" {
		rfc2865.NASIdentifier_SetString(p, c.cfg.NASIdentifier)
	}
	rfc2865.NASPortType_Set(p, rfc2865.NASPortType_Value_Virtual)
	rfc2865.CallingStationID_SetString(p, calling.Addr().Unmap().String())
}

func hmacMD5(key, data []byte) []byte {
	m := hmac.New(md5.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// checkMessageAuthenticator verifies a response's Message-Authenticator
// (RFC 3579 §3.2: over the response with the request's authenticator and
// the attribute zero). An Access-Challenge, -Accept or -Reject that
// carries EAP must have one.
func checkMessageAuthenticator(resp *radius.Packet, requestAuthenticator [16]byte, secret []byte) error {
	got, err := rfc2869.MessageAuthenticator_Lookup(resp)
	if err != nil {
		return errors.New("answer without Message-Authenticator")
	}
	check := &radius.Packet{Code: resp.Code, Identifier: resp.Identifier, Authenticator: requestAuthenticator,
		Secret: secret, Attributes: append(radius.Attributes(nil), resp.Attributes...)}
	rfc2869.MessageAuthenticator_Set(check, make([]byte, md5.Size))
	wire, err := check.MarshalBinary()
	if err != nil {
		return err
	}
	if !hmac.Equal(got, hmacMD5(secret, wire)) {
		return errors.New("answer with a wrong Message-Authenticator (is the shared secret the same?)")
	}
	return nil
}

// radiusSession is what accounting says of one client.
type radiusSession struct {
	id, user string
	calling  netip.AddrPort
	address  netip.Addr // leased IPv4 address, if any
	start    time.Time
}

// account sends an Accounting-Request, Start or Stop (with the session's
// time), and waits for the answer; an error says what went wrong.
func (c *radiusClient) account(s radiusSession, stop bool, now time.Time) error {
	if c.cfg.Accounting == "" {
		return nil
	}
	req := radius.New(radius.CodeAccountingRequest, c.cfg.Secret)
	status := rfc2866.AcctStatusType_Value_Start
	if stop {
		status = rfc2866.AcctStatusType_Value_Stop
		rfc2866.AcctSessionTime_Set(req, rfc2866.AcctSessionTime(now.Sub(s.start)/time.Second))
		rfc2866.AcctTerminateCause_Set(req, rfc2866.AcctTerminateCause_Value_NASRequest)
	}
	rfc2866.AcctStatusType_Set(req, status)
	rfc2866.AcctSessionID_SetString(req, s.id)
	rfc2865.UserName_SetString(req, s.user)
	c.describeNAS(req, s.calling)
	if s.address.Is4() {
		rfc2865.FramedIPAddress_Set(req, net.IP(s.address.AsSlice()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	resp, err := c.client.Exchange(ctx, req, c.cfg.Accounting)
	if err != nil {
		return fmt.Errorf("RADIUS accounting server %s did not answer: %w", c.cfg.Accounting, err)
	}
	if resp.Code != radius.CodeAccountingResponse {
		return fmt.Errorf("RADIUS accounting server %s answered with code %v", c.cfg.Accounting, resp.Code)
	}
	return nil
}
