package ike

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMSCHAPv2Vectors checks the algorithms against RFC 2759 §9.2 and the
// MPPE keys against RFC 3079 §3.5.3 (the same user, password and
// challenges).
func TestMSCHAPv2Vectors(t *testing.T) {
	const (
		user     = "User"
		password = "clientPass"
	)
	authChallenge := unhex(t, "5B5D7C7D7B3F2F3E3C2C602132262628")
	peerChallenge := unhex(t, "21402324255E262A28295F2B3A337C7E")
	hash := ntPasswordHash(password)
	hh := hashNTPasswordHash(hash)
	ch := challengeHash(peerChallenge, authChallenge, user)
	nt := generateNTResponse(authChallenge, peerChallenge, user, hash)
	mk := mppeMasterKey(hash, nt)
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"NtPasswordHash", hash[:], unhex(t, "44EBBA8D5312B8D611474411F56989AE")},
		{"PasswordHashHash", hh[:], unhex(t, "41C00C584BD2D91C4017A2A12FA59F3F")},
		{"ChallengeHash", ch[:], unhex(t, "D02E4386BCE91226")},
		{"NT-Response", nt[:], unhex(t, "82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")},
		{"AuthenticatorResponse", []byte(authenticatorResponse(hash, nt, peerChallenge, authChallenge, user)), []byte("S=407A5589115FD0D6209F510FE9C04566932CDA56")},
		{"AuthenticatorResponse with a domain", []byte(authenticatorResponse(hash, nt, peerChallenge, authChallenge, `CORP\User`)), []byte("S=407A5589115FD0D6209F510FE9C04566932CDA56")},
		{"MasterKey", mk[:], unhex(t, "FDECE3717A8C838CB388E527AE3CDD31")},
		{"server SendStartKey128", mppeStartKey(mk, mppeMagic3), unhex(t, "8B7CDC149B993A1BA118CB153F56DCCB")},
		{"MSK", mschapMSK(hash, nt), append(append(mppeStartKey(mk, mppeMagic2), unhex(t, "8B7CDC149B993A1BA118CB153F56DCCB")...), make([]byte, 32)...)},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s = %X, want %X", tc.name, tc.got, tc.want)
		}
	}
}

func TestEAPCodec(t *testing.T) {
	for _, tc := range []struct {
		name   string
		packet string
		want   eapMessage
		err    string
	}{
		{name: "identity request", packet: "01050005 01", want: eapMessage{Code: 1, ID: 5, Type: 1, Data: []byte{}}},
		{name: "identity response", packet: "0205000a 01 6361726f6c", want: eapMessage{Code: 2, ID: 5, Type: 1, Data: []byte("carol")}},
		{name: "success", packet: "03070004", want: eapMessage{Code: 3, ID: 7}},
		{name: "failure", packet: "04070004", want: eapMessage{Code: 4, ID: 7}},
		{name: "short", packet: "0105", err: "shorter than its header"},
		{name: "length too long", packet: "01050009 01", err: "says it has 9 bytes"},
		{name: "request without type", packet: "01050004", err: "without a type"},
		{name: "success with data", packet: "03070005 00", err: "with data"},
		{name: "unknown code", packet: "09070004", err: "unknown EAP code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := unhex(t, tc.packet)
			m, err := parseEAP(b)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseEAP = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Code != tc.want.Code || m.ID != tc.want.ID || m.Type != tc.want.Type || !bytes.Equal(m.Data, tc.want.Data) {
				t.Fatalf("parseEAP = %+v, want %+v", m, tc.want)
			}
			if again := m.marshal(); !bytes.Equal(again, b) {
				t.Fatalf("marshal = %x, want %x", again, b)
			}
		})
	}
}

func TestMSCHAPv2Codec(t *testing.T) {
	challenge := mschapPacket{OpCode: mschapChallenge, ID: 9, Value: bytes.Repeat([]byte{0xaa}, 16), Name: []byte("gw")}
	b := challenge.marshal(false)
	if len(b) != 4+1+16+2 || int(b[2])<<8|int(b[3]) != len(b) {
		t.Fatalf("challenge %x: MS-Length does not cover OpCode to the end", b)
	}
	got, err := parseMSCHAPv2(b)
	if err != nil || got.OpCode != mschapChallenge || got.ID != 9 || !bytes.Equal(got.Value, challenge.Value) || string(got.Name) != "gw" {
		t.Fatalf("parseMSCHAPv2 = %+v, %v", got, err)
	}
	success := mschapPacket{OpCode: mschapSuccess, ID: 9, Name: []byte("S=00 M=hi")}
	if got, err := parseMSCHAPv2(success.marshal(false)); err != nil || string(got.Name) != "S=00 M=hi" {
		t.Fatalf("success request: %+v, %v", got, err)
	}
	if got, err := parseMSCHAPv2(success.marshal(true)); err != nil || got.OpCode != mschapSuccess || len(got.Name) != 0 {
		t.Fatalf("success response: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "0109", "01090009 10aa", "01090006 05"} {
		if _, err := parseMSCHAPv2(unhex(t, bad)); err == nil {
			t.Errorf("parseMSCHAPv2(%s) accepted", bad)
		}
	}
}

// eapConverse runs a client and a server until one ends and returns the
// server's result and both MSKs.
func eapConverse(t *testing.T, users *EAPUsers, cred *EAPCredentials) (eapResult, error, []byte, []byte) {
	t.Helper()
	server, req := newEAPServer(users, "gw.test")
	client := &eapClient{cred: cred}
	for i := 0; i < 10; i++ {
		resp, err := client.step(req)
		if err != nil {
			return eapFailed, err, nil, nil
		}
		if resp == nil {
			return eapSucceeded, nil, server.msk, client.msk
		}
		out, res, err := server.step(resp)
		if res == eapFailed {
			if _, cerr := client.step(out); !errors.Is(cerr, ErrEAPRefused) || !errors.Is(cerr, ErrAuthFailed) {
				t.Fatalf("client took the EAP-Failure as %v", cerr)
			}
			return res, err, nil, nil
		}
		req = out
	}
	t.Fatal("conversation did not end")
	return 0, nil, nil, nil
}

func TestEAPConversation(t *testing.T) {
	users, err := NewEAPUsers(map[string]string{"carol": "s3cret pass", "dave": "другой"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, identity, password string
		err                      string
	}{
		{name: "right password", identity: "carol", password: "s3cret pass"},
		{name: "non-ASCII password", identity: "dave", password: "другой"},
		{name: "Windows domain", identity: `CORP\carol`, password: "s3cret pass"},
		{name: "wrong password", identity: "carol", password: "guess", err: "wrong password for EAP user carol"},
		{name: "unknown user", identity: "mallory", password: "x", err: "unknown EAP user mallory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, err := NewEAPCredentials(tc.identity, tc.password)
			if err != nil {
				t.Fatal(err)
			}
			res, err, serverMSK, clientMSK := eapConverse(t, users, cred)
			if tc.err != "" {
				if res != eapFailed || err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("result %d, %v; want failure %q", res, err, tc.err)
				}
				if strings.Contains(err.Error(), tc.password) {
					t.Fatalf("the error %q shows the password", err)
				}
				return
			}
			if err != nil || res != eapSucceeded {
				t.Fatalf("result %d, %v", res, err)
			}
			if len(serverMSK) != 64 || !bytes.Equal(serverMSK, clientMSK) {
				t.Fatalf("MSKs differ: server %x client %x", serverMSK, clientMSK)
			}
		})
	}
}

// TestEAPClientChecksGateway: a gateway that does not know the password
// cannot produce the authenticator response.
func TestEAPClientChecksGateway(t *testing.T) {
	cred, _ := NewEAPCredentials("carol", "right")
	client := &eapClient{cred: cred}
	challenge := mschapPacket{OpCode: mschapChallenge, ID: 1, Value: make([]byte, 16), Name: []byte("gw")}
	if _, err := client.step(eapMessage{Code: eapCodeRequest, ID: 1, Type: eapTypeMSCHAPv2, Data: challenge.marshal(false)}.marshal()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.step(eapMessage{Code: eapCodeSuccess, ID: 2}.marshal()); err == nil {
		t.Fatal("EAP-Success without the authenticator response accepted")
	}
	forged := mschapPacket{OpCode: mschapSuccess, ID: 1, Name: []byte("S=" + strings.Repeat("0", 40) + " M=ok")}
	_, err := client.step(eapMessage{Code: eapCodeRequest, ID: 2, Type: eapTypeMSCHAPv2, Data: forged.marshal(false)}.marshal())
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("forged authenticator response: %v, want ErrAuthFailed", err)
	}
}

func FuzzEAP(f *testing.F) {
	users, _ := NewEAPUsers(map[string]string{"carol": "pw"})
	f.Add(unhex(f, "0205000a 01 6361726f6c"))
	f.Add(unhex(f, "03070004"))
	value := make([]byte, mschapResponseValueSize)
	f.Add(eapMessage{Code: eapCodeResponse, ID: 1, Type: eapTypeMSCHAPv2,
		Data: mschapPacket{OpCode: mschapResponse, ID: 1, Value: value, Name: []byte("carol")}.marshal(false)}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parseEAP(b); err == nil {
			if again := m.marshal(); !bytes.Equal(again, b) {
				t.Fatalf("marshal(parseEAP(%x)) = %x", b, again)
			}
			if m.Type == eapTypeMSCHAPv2 {
				parseMSCHAPv2(m.Data)
			}
		}
		// Neither side may panic on anything, in any state.
		server, _ := newEAPServer(users, "gw")
		server.id = 1
		b = bytes.Clone(b)
		if len(b) > 1 {
			b[1] = 1
		}
		server.step(b)
		server.state = eapAwaitResponse
		server.step(b)
		server.state = eapAwaitSuccessAck
		server.step(b)
		cred, _ := NewEAPCredentials("carol", "pw")
		client := &eapClient{cred: cred}
		client.step(b)
	})
}

func TestEAPLockout(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 0, 3: 0, 4: time.Second, 5: 2 * time.Second, 8: 16 * time.Second, 12: 256 * time.Second, 13: maxEAPLockout, 100: maxEAPLockout} {
		if got := eapLockout(n); got != want {
			t.Errorf("lockout after %d failures = %v, want %v", n, got, want)
		}
	}
	var l eapLimits
	now := time.Unix(1e9, 0)
	attacker, other := netip.MustParseAddrPort("192.0.2.66:4500"), netip.MustParseAddrPort("198.51.100.7:4500")
	for i := 0; i < eapFreeFailures; i++ {
		if why := l.lockedOut("carol", attacker, now); why != "" {
			t.Fatalf("locked out after %d failures: %s", i, why)
		}
		l.failed("carol", attacker, now)
	}
	if got := l.failed("carol", attacker, now); got != time.Second {
		t.Fatalf("lockout after %d failures %v, want 1s", eapFreeFailures+1, got)
	}
	for _, tc := range []struct {
		name   string
		from   netip.AddrPort
		at     time.Duration
		locked string
	}{
		{"carol", attacker, 0, "EAP user carol locked out for 1s after 4 failed logins"},
		{"carol", other, 0, "EAP user carol locked out"},
		{"dave", attacker, 0, "source 192.0.2.66/32 locked out"},
		{"dave", other, 0, ""},
		{"carol", attacker, time.Second, ""},
	} {
		why := l.lockedOut(tc.name, tc.from, now.Add(tc.at))
		if (tc.locked == "") != (why == "") || !strings.Contains(why, tc.locked) {
			t.Errorf("%s from %s at +%v: %q, want %q", tc.name, tc.from, tc.at, why, tc.locked)
		}
	}
	l.succeeded("carol", attacker)
	if why := l.lockedOut("carol", attacker, now); why != "" {
		t.Fatalf("still locked out after a successful login: %s", why)
	}
	l.failed("dave", other, now)
	l.forget(now.Add(eapFailureMemory))
	if len(l.byName)+len(l.bySource) != 0 {
		t.Fatalf("counts left after %v: %v %v", eapFailureMemory, l.byName, l.bySource)
	}
}
