package ike

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

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
	var attrs []wire.CPAttribute
	w.r.do(context.Background(), func() {
		asks := parseAddressWants(&wire.CP{CfgType: wire.CFG_REQUEST, Attributes: []wire.CPAttribute{{Type: wire.INTERNAL_IP4_ADDRESS}, {Type: wire.INTERNAL_IP4_DNS}}})
		attrs = w.r.cpReply([]netip.Prefix{netip.MustParsePrefix("10.3.0.2/32")}, asks)
	})
	for _, at := range attrs {
		if at.Type == wire.INTERNAL_DNS_DOMAIN {
			t.Errorf("domains sent to a client that did not ask: %q", at.Value)
		}
	}
	if len(attrs) != 2 {
		t.Errorf("reply attributes %+v, want an address and a DNS server", attrs)
	}
}
