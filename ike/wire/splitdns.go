package wire

import (
	"net/netip"
	"slices"
	"strings"
)

// INTERNAL_DNS_DOMAIN is the configuration attribute of RFC 8598 (split
// DNS): in a request, empty, asking for the domains; in a reply, one
// domain per attribute whose names the assigned DNS servers resolve.
const INTERNAL_DNS_DOMAIN uint16 = 25

// maxDNSDomains bounds the domains taken from one reply.
const maxDNSDomains = 32

// ConfigDomains reads the INTERNAL_DNS_DOMAIN domains of a CFG_REPLY,
// lower case and without a trailing dot; malformed ones, the root and
// repeats are left out.
func ConfigDomains(ps []Payload) []string {
	cp := Find[*CP](ps)
	if cp == nil || cp.CfgType != CFG_REPLY {
		return nil
	}
	var out []string
	for _, a := range cp.Attributes {
		if a.Type != INTERNAL_DNS_DOMAIN || len(out) == maxDNSDomains {
			continue
		}
		d, ok := ParseDNSDomain(string(a.Value))
		if ok && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// ParseDNSDomain checks a domain in presentation format (RFC 8598 §4: an
// A-label FQDN, not the root) and returns it lower case without a trailing
// dot.
func ParseDNSDomain(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return "", false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	// Not an address literal: "10.1.2.3" is a well-formed name but never
	// a domain to route queries by.
	if _, err := netip.ParseAddr(s); err == nil {
		return "", false
	}
	return strings.ToLower(s), true
}

// DNSDomainAttributes are the reply's INTERNAL_DNS_DOMAIN attributes.
func DNSDomainAttributes(domains []string) []CPAttribute {
	attrs := make([]CPAttribute, 0, len(domains))
	for _, d := range domains {
		attrs = append(attrs, CPAttribute{Type: INTERNAL_DNS_DOMAIN, Value: []byte(d)})
	}
	return attrs
}
