package ike

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"
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
	if got := configDomains(reply); !reflect.DeepEqual(got, []string{"corp.test", "lab.corp.test"}) {
		t.Errorf("configDomains = %v", got)
	}
	request := []Payload{&CP{CfgType: CFG_REQUEST, Attributes: []CPAttribute{{Type: INTERNAL_DNS_DOMAIN, Value: []byte("x.test")}}}}
	if got := configDomains(request); got != nil {
		t.Errorf("domains read from a request: %v", got)
	}
}

// The domains travel in a CP payload that survives encoding.
func TestDNSDomainAttributesRoundTrip(t *testing.T) {
	cp := &CP{CfgType: CFG_REPLY, Attributes: dnsDomainAttributes([]string{"corp.test", "example.net"})}
	b, err := cp.appendBody(nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseCP(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := configDomains([]Payload{back}); !reflect.DeepEqual(got, []string{"corp.test", "example.net"}) {
		t.Errorf("round trip: %v", got)
	}
}

// FuzzConfigDomains feeds CP payload bodies from the network to the
// domain reader: no panic, and every domain it returns parses again to
// itself.
func FuzzConfigDomains(f *testing.F) {
	seed, _ := (&CP{CfgType: CFG_REPLY, Attributes: dnsDomainAttributes([]string{"corp.test"})}).appendBody(nil)
	f.Add(seed)
	f.Add([]byte{CFG_REPLY, 0, 0, 0, 0, 25, 0, 1, '.'})
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := parseCP(b)
		if err != nil {
			return
		}
		for _, d := range configDomains([]Payload{cp}) {
			if again, ok := ParseDNSDomain(d); !ok || again != d {
				t.Fatalf("domain %q does not parse to itself (%q, %v)", d, again, ok)
			}
		}
	})
}

// domainLog is a client handler that also takes the split DNS domains.
type domainLog struct {
	childLog
	domains []string
	calls   int
}

func (l *domainLog) ConfiguredDNSDomains(domains []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.domains = domains
	l.calls++
}

// A client asks for INTERNAL_DNS_DOMAIN and gets the responder's domains
// in IKE_AUTH; a request without the attribute gets none.
func TestSplitDNSDomainsEndToEnd(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	w, _ := startResponder(t, ResponderConfig{PSK: psk, DNSDomains: []string{"corp.test", "lab.corp.test"}})
	a := netip.MustParseAddr("192.0.2.10")
	ike, esp := mustProposals(t, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519")
	cfg := SessionConfig{PSK: psk, Remote: w.gw, LocalID: mustID(t, "client@mifsec.test"), RemoteID: mustID(t, "gw.mifsec.test"),
		IKE: ike, ESP: esp, RequestIPv4: true, Retransmit: RetransmitPolicy{Timeout: 100 * time.Millisecond, Tries: 5}}
	h := &domainLog{}
	s, err := NewSession(cfg, clientSide{w, a}, h)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.sessions[a] = s
	w.mu.Unlock()
	connect(t, s, true)
	h.mu.Lock()
	if h.calls != 1 || !reflect.DeepEqual(h.domains, []string{"corp.test", "lab.corp.test"}) {
		t.Errorf("client got domains %v (%d calls)", h.domains, h.calls)
	}
	h.mu.Unlock()

	// The responder's reply to a request that does not ask.
	var attrs []CPAttribute
	w.r.do(context.Background(), func() {
		c := &rClient{RemoteClient: RemoteClient{ID: mustID(t, "other@mifsec.test")}}
		attrs, err = w.r.lease(c, &CP{CfgType: CFG_REQUEST, Attributes: []CPAttribute{{Type: INTERNAL_IP4_ADDRESS}, {Type: INTERNAL_IP4_DNS}}})
		w.r.releaseLeases(c)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range attrs {
		if at.Type == INTERNAL_DNS_DOMAIN {
			t.Errorf("domains sent to a client that did not ask: %q", at.Value)
		}
	}
	if len(attrs) != 2 {
		t.Errorf("reply attributes %+v, want an address and a DNS server", attrs)
	}
}
