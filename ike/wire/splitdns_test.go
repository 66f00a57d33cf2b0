package wire

import (
	"reflect"
	"testing"
)

func TestParseDNSDomain(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"corp.test", "corp.test", true},
		{"Corp.Example.", "corp.example", true},
		{"_sip.example", "_sip.example", true},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", true},
		{"", "", false},
		{".", "", false},
		{"a..b", "", false},
		{"-a.b", "", false},
		{"a b", "", false},
		{"10.1.2.3", "", false},
		{"exa\x00mple", "", false},
	} {
		got, ok := ParseDNSDomain(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseDNSDomain(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestConfigDomains(t *testing.T) {
	reply := []Payload{&CP{CfgType: CFG_REPLY, Attributes: []CPAttribute{
		{Type: INTERNAL_IP4_DNS, Value: []byte{10, 0, 0, 53}},
		{Type: INTERNAL_DNS_DOMAIN, Value: []byte("corp.test")},
		{Type: INTERNAL_DNS_DOMAIN, Value: []byte("CORP.test.")}, // a repeat
		{Type: INTERNAL_DNS_DOMAIN, Value: []byte("bad domain")},
		{Type: INTERNAL_DNS_DOMAIN},
		{Type: INTERNAL_DNS_DOMAIN, Value: []byte("lab.corp.test")},
	}}}
	if got := ConfigDomains(reply); !reflect.DeepEqual(got, []string{"corp.test", "lab.corp.test"}) {
		t.Errorf("ConfigDomains = %v", got)
	}
	request := []Payload{&CP{CfgType: CFG_REQUEST, Attributes: []CPAttribute{{Type: INTERNAL_DNS_DOMAIN, Value: []byte("x.test")}}}}
	if got := ConfigDomains(request); got != nil {
		t.Errorf("domains read from a request: %v", got)
	}
}

// The domains travel in a CP payload that survives encoding.
func TestDNSDomainAttributesRoundTrip(t *testing.T) {
	cp := &CP{CfgType: CFG_REPLY, Attributes: DNSDomainAttributes([]string{"corp.test", "example.net"})}
	b, err := cp.appendBody(nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseCP(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := ConfigDomains([]Payload{back}); !reflect.DeepEqual(got, []string{"corp.test", "example.net"}) {
		t.Errorf("round trip: %v", got)
	}
}

// FuzzConfigDomains feeds CP payload bodies from the network to the
// domain reader: no panic, and every domain it returns parses again to
// itself.
func FuzzConfigDomains(f *testing.F) {
	seed, _ := (&CP{CfgType: CFG_REPLY, Attributes: DNSDomainAttributes([]string{"corp.test"})}).appendBody(nil)
	f.Add(seed)
	f.Add([]byte{CFG_REPLY, 0, 0, 0, 0, 25, 0, 1, '.'})
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := parseCP(b)
		if err != nil {
			return
		}
		for _, d := range ConfigDomains([]Payload{cp}) {
			if again, ok := ParseDNSDomain(d); !ok || again != d {
				t.Fatalf("domain %q does not parse to itself (%q, %v)", d, again, ok)
			}
		}
	})
}
