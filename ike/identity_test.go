package ike

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

func mustParseIdentity(t *testing.T, s string) Identity {
	t.Helper()
	id, err := ParseIdentity(s)
	if err != nil {
		t.Fatalf("ParseIdentity(%q): %v", s, err)
	}
	return id
}

func identityTestHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in       string
		wantType wire.IDType
		wantData []byte // nil: skip the data check
		wantStr  string
	}{
		{"192.0.2.1", wire.IDIPv4, []byte{192, 0, 2, 1}, "192.0.2.1"},
		{"2001:db8::1", wire.IDIPv6, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "2001:db8::1"},
		{"::ffff:192.0.2.1", wire.IDIPv6, nil, "::ffff:192.0.2.1"},
		{"moon.strongswan.org", wire.IDFQDN, []byte("moon.strongswan.org"), "moon.strongswan.org"},
		{"@moon.strongswan.org", wire.IDFQDN, []byte("moon.strongswan.org"), "moon.strongswan.org"},
		{"@192.0.2.1", wire.IDFQDN, []byte("192.0.2.1"), "fqdn:192.0.2.1"},
		{"fqdn:moon", wire.IDFQDN, []byte("moon"), "moon"},
		{"carol@strongswan.org", wire.IDRFC822, []byte("carol@strongswan.org"), "carol@strongswan.org"},
		{"email:carol@strongswan.org", wire.IDRFC822, []byte("carol@strongswan.org"), "carol@strongswan.org"},
		{"C=CH, O=strongSwan, CN=moon.strongswan.org", wire.IDDN, nil, "C=CH, O=strongSwan, CN=moon.strongswan.org"},
		{"C=CH,O=strongSwan,CN=carol@strongswan.org", wire.IDDN, nil, "C=CH, O=strongSwan, CN=carol@strongswan.org"},
		{"CN=moon", wire.IDDN, identityTestHex(t, "300f310d300b06035504031304"+hex.EncodeToString([]byte("moon"))), "CN=moon"},
		{`CN=Doe\, John + OU=Sales, O="A, B", DC=example`, wire.IDDN, nil, `OU=Sales + CN=Doe\, John, O=A\, B, DC=example`}, // DER sorts the SET
		{"asn1dn:CN=x", wire.IDDN, nil, "CN=x"},
		{"@#0a0b0c", wire.IDKeyID, []byte{0x0a, 0x0b, 0x0c}, "@#0a0b0c"},
		{"keyid:#0a0b0c", wire.IDKeyID, []byte{0x0a, 0x0b, 0x0c}, "@#0a0b0c"},
		{"keyid:abc", wire.IDKeyID, []byte("abc"), "@#616263"},
		{"ipv4:10.0.0.1", wire.IDIPv4, []byte{10, 0, 0, 1}, "10.0.0.1"},
		{"a=b", wire.IDFQDN, []byte("a=b"), "fqdn:a=b"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := ParseIdentity(tt.in)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			if id.Type != tt.wantType {
				t.Fatalf("type = %s, want %s", describeIDType(id.Type), describeIDType(tt.wantType))
			}
			if tt.wantData != nil && !bytes.Equal(id.Data, tt.wantData) {
				t.Fatalf("data = %x, want %x", id.Data, tt.wantData)
			}
			if got := id.String(); got != tt.wantStr {
				t.Fatalf("String() = %q, want %q", got, tt.wantStr)
			}
			back, err := ParseIdentity(id.String())
			if err != nil {
				t.Fatalf("ParseIdentity(String()): %v", err)
			}
			if back.Type != id.Type || !bytes.Equal(back.Data, id.Data) || !back.Equal(id) {
				t.Fatalf("round trip gave %s %x, want %s %x", describeIDType(back.Type), back.Data, describeIDType(id.Type), id.Data)
			}
		})
	}
}

func TestParseIdentityErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"@",
		"@#",
		"@#zz",
		"CN=",
		"CN=moon, O",
		`CN="moon`,
		`CN=moon\`,
		"C=Schweiz@",
		"ipv4:2001:db8::1",
		"ipv6:192.0.2.1",
		"fe80::1%eth0",
		"fqdn:",
		"email:",
	} {
		t.Run(in, func(t *testing.T) {
			if id, err := ParseIdentity(in); err == nil {
				t.Fatalf("ParseIdentity(%q) = %s %x, want an error", in, describeIDType(id.Type), id.Data)
			}
		})
	}
}

func selfSignedCert(t *testing.T, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(1)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDNMatchesX509Subject(t *testing.T) {
	c := selfSignedCert(t, &x509.Certificate{Subject: pkix.Name{
		Country:      []string{"CH"},
		Organization: []string{"strongSwan"},
		CommonName:   "moon.strongswan.org",
	}})
	id := mustParseIdentity(t, "C=CH, O=strongSwan, CN=moon.strongswan.org")
	if !bytes.Equal(id.Data, c.RawSubject) {
		t.Fatalf("DN DER %x differs from the x509 subject %x", id.Data, c.RawSubject)
	}
	if !id.MatchesCertificate(c) {
		t.Fatal("DN does not match the certificate's subject")
	}
	reordered := mustParseIdentity(t, "CN=moon.strongswan.org, O=strongSwan, C=CH")
	if reordered.MatchesCertificate(c) {
		t.Fatal("DN with RDNs in another order matches")
	}
}

func TestIdentityMatchesCertificate(t *testing.T) {
	c := selfSignedCert(t, &x509.Certificate{
		Subject:        pkix.Name{Country: []string{"CH"}, CommonName: "moon"},
		DNSNames:       []string{"moon.strongswan.org"},
		EmailAddresses: []string{"carol@strongswan.org"},
		IPAddresses:    []net.IP{net.ParseIP("192.0.2.1").To4(), net.ParseIP("2001:db8::1")},
		SubjectKeyId:   []byte{1, 2, 3, 4},
	})
	// The same DN as the subject, with UTF8String instead of PrintableString
	// for CN and different case and spacing.
	utf8DN, err := asn1.Marshal(dnSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 6}, Value: asn1.RawValue{Tag: asn1.TagPrintableString, Bytes: []byte("ch")}}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(" MOON ")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   Identity
		want bool
	}{
		{mustParseIdentity(t, "moon.strongswan.org"), true},
		{mustParseIdentity(t, "MOON.strongswan.org."), true},
		{mustParseIdentity(t, "sun.strongswan.org"), false},
		{mustParseIdentity(t, "strongswan.org"), false},
		{mustParseIdentity(t, "carol@strongswan.org"), true},
		{mustParseIdentity(t, "carol@STRONGSWAN.org"), true},
		{mustParseIdentity(t, "Carol@strongswan.org"), false},
		{mustParseIdentity(t, "dave@strongswan.org"), false},
		{mustParseIdentity(t, "192.0.2.1"), true},
		{mustParseIdentity(t, "192.0.2.2"), false},
		{mustParseIdentity(t, "::ffff:192.0.2.1"), false},
		{mustParseIdentity(t, "2001:db8::1"), true},
		{mustParseIdentity(t, "2001:db8::2"), false},
		{mustParseIdentity(t, "C=CH, CN=moon"), true},
		{mustParseIdentity(t, "C=CH, CN=sun"), false},
		{Identity{Type: wire.IDDN, Data: utf8DN}, true},
		{mustParseIdentity(t, "@#01020304"), true},
		{mustParseIdentity(t, "@#01020305"), false},
		{Identity{Type: wire.IDIPv4, Data: []byte{192, 0, 2}}, false},
		{Identity{Type: wire.IDDN, Data: []byte{0x30, 0x80}}, false},
		{Identity{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			if got := tt.id.MatchesCertificate(c); got != tt.want {
				t.Fatalf("MatchesCertificate = %v, want %v", got, tt.want)
			}
		})
	}
	if mustParseIdentity(t, "moon.strongswan.org").MatchesCertificate(nil) {
		t.Fatal("matches a nil certificate")
	}
}

func TestIdentityEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"moon.strongswan.org", "MOON.strongswan.org", true},
		{"moon.strongswan.org", "@moon.strongswan.org", true},
		{"moon.strongswan.org", "sun.strongswan.org", false},
		{"carol@strongswan.org", "carol@StrongSwan.org", true},
		{"carol@strongswan.org", "CAROL@strongswan.org", false},
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "fqdn:192.0.2.1", false},
		{"C=CH, CN=moon", "C=ch,CN=Moon", true},
		{"C=CH, CN=moon", "CN=moon, C=CH", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"~"+tt.b, func(t *testing.T) {
			if got := mustParseIdentity(t, tt.a).Equal(mustParseIdentity(t, tt.b)); got != tt.want {
				t.Fatalf("Equal = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIdentityPayloadBody(t *testing.T) {
	id := mustParseIdentity(t, "@moon.strongswan.org")
	body := id.PayloadBody()
	want := append([]byte{byte(wire.IDFQDN), 0, 0, 0}, "moon.strongswan.org"...)
	if !bytes.Equal(body, want) {
		t.Fatalf("PayloadBody = %x, want %x", body, want)
	}
	back, err := parseIdentityPayloadBody(body)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(id) {
		t.Fatalf("parsed %s, want %s", back, id)
	}
	body[0] = 0 // the returned data must not alias the input
	if back.Type != wire.IDFQDN {
		t.Fatal("parseIdentityPayloadBody aliases its input")
	}

	for name, bad := range map[string][]byte{
		"short":         {byte(wire.IDIPv4), 0, 0},
		"ipv4 3 bytes":  {byte(wire.IDIPv4), 0, 0, 0, 1, 2, 3},
		"ipv6 4 bytes":  {byte(wire.IDIPv6), 0, 0, 0, 1, 2, 3, 4},
		"empty fqdn":    {byte(wire.IDFQDN), 0, 0, 0},
		"bad dn":        {byte(wire.IDDN), 0, 0, 0, 0x30, 0x05, 0x31},
		"unknown empty": {200, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseIdentityPayloadBody(bad); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	// RESERVED bytes are ignored on receipt.
	got, err := parseIdentityPayloadBody([]byte{byte(wire.IDIPv4), 1, 2, 3, 10, 0, 0, 1})
	if err != nil || got.String() != "10.0.0.1" {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestFormatDNUnknownAttributes(t *testing.T) {
	der, err := asn1.Marshal(dnSequence{
		{{Type: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("x")}}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: asn1.RawValue{Tag: asn1.TagInteger, Bytes: []byte{5}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Type: wire.IDDN, Data: der}
	s := id.String()
	if s != "1.2.3.4=x, CN=#020105" {
		t.Fatalf("String() = %q", s)
	}
	// The UTF8String value comes back as a PrintableString: the names are
	// equal, their encodings are not.
	back := mustParseIdentity(t, s)
	if !back.Equal(id) {
		t.Fatalf("round trip %x, want a name equal to %x", back.Data, der)
	}
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1", "2001:db8::1", "@moon", "moon.strongswan.org", "carol@strongswan.org",
		"C=CH, O=strongSwan, CN=moon", `CN=a\, b + OU=x, O="q, r"`, "@#0a0b", "keyid:x", "CN=#020105",
		"fqdn:a=b", "email:@x", " CN = x ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		text := id.String()
		back, err := ParseIdentity(text)
		if err != nil {
			t.Fatalf("ParseIdentity(%q) = %s %x, but its String %q does not parse: %v", s, describeIDType(id.Type), id.Data, text, err)
		}
		if !back.Equal(id) {
			t.Fatalf("ParseIdentity(%q) = %s %x; String %q parses to %s %x", s, describeIDType(id.Type), id.Data, text, describeIDType(back.Type), back.Data)
		}
		body := id.PayloadBody()
		if parsed, err := parseIdentityPayloadBody(body); err != nil || !parsed.Equal(id) {
			t.Fatalf("payload body of %q does not round trip: %v", s, err)
		}
	})
}

func FuzzParseIdentityPayloadBody(f *testing.F) {
	f.Add([]byte{byte(wire.IDDN), 0, 0, 0, 0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x04, 'm', 'o', 'o', 'n'})
	f.Add([]byte{byte(wire.IDIPv4), 0, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, body []byte) {
		id, err := parseIdentityPayloadBody(body)
		if err != nil {
			return
		}
		_ = id.String()
		_ = id.MatchesCertificate(&x509.Certificate{RawSubject: body})
	})
}
