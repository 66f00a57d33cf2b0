package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// resolveGateway is parseEndpoint for a gateway that may also be given by
// name (HOST or HOST:PORT): a name is looked up through the system's
// resolver and returned as name, with the first address it has (IPv4
// first, as most gateways are reached that way).
func resolveGateway(ctx context.Context, s string, defaultPort uint16) (ap netip.AddrPort, name string, err error) {
	if ap, err := parseEndpoint(s, defaultPort); err == nil {
		return ap, "", nil
	}
	host, port := s, defaultPort
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return netip.AddrPort{}, "", fmt.Errorf("%q: bad port %q", s, p)
		}
		host, port = h, uint16(n)
	}
	host = strings.TrimSuffix(host, ".")
	if !validHostname(host) {
		return netip.AddrPort{}, "", fmt.Errorf("%q is neither an address nor a host name", s)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, "", fmt.Errorf("resolving %s: %w", host, err)
	}
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		switch {
		case a.Unmap().Is4() == b.Unmap().Is4():
			return 0
		case a.Unmap().Is4():
			return -1
		}
		return 1
	})
	if len(addrs) == 0 {
		return netip.AddrPort{}, "", fmt.Errorf("resolving %s: no address", host)
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), port), strings.ToLower(host), nil
}

// validHostname reports whether s is a DNS host name (RFC 1123 labels).
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
