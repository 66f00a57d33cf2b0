package ike

// DNSDomainsHandler is a Handler that also takes the INTERNAL_DNS_DOMAIN
// domains of the configuration reply; the session calls it just before
// Configured.
type DNSDomainsHandler interface {
	ConfiguredDNSDomains(domains []string)
}
