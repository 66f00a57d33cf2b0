package mif

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/tun"
)

// recordingDNS is a tun.DNS that keeps what it was given.
type recordingDNS struct{ applied []tun.DNSSettings }

func (r *recordingDNS) Apply(s tun.DNSSettings) error { r.applied = append(r.applied, s); return nil }
func (r *recordingDNS) Restore() error                { return nil }
func (r *recordingDNS) Mode() tun.DNSMode             { return tun.DNSFile }

func TestClientAppliesDNS(t *testing.T) {
	server := []netip.Addr{netip.MustParseAddr("10.100.0.53")}
	split := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	full := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	for _, tc := range []struct {
		name         string
		servers      []netip.Addr
		domains      []string
		remoteTS     []netip.Prefix
		want         int // Apply calls
		defaultRoute bool
	}{
		{"split with a domain", server, []string{"corp.test"}, split, 1, false},
		{"full tunnel with a domain", server, []string{"corp.test"}, full, 1, true},
		{"split without domains: every query", server, nil, split, 1, true},
		{"no servers: nothing", nil, []string{"corp.test"}, split, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingDNS{}
			c := &Client{log: slog.New(slog.NewTextHandler(io.Discard, nil)), dns: rec}
			c.ConfiguredDNSDomains(tc.domains)
			c.dnsServers = tc.servers
			c.applyDNSLocked(tc.remoteTS)
			c.applyDNSLocked(tc.remoteTS) // a rekey's InstallChild: the same settings, no second Apply
			if len(rec.applied) != tc.want {
				t.Fatalf("%d Apply calls, want %d", len(rec.applied), tc.want)
			}
			if tc.want > 0 {
				s := rec.applied[0]
				if s.DefaultRoute != tc.defaultRoute || len(s.Servers) != 1 || len(s.Domains) != len(tc.domains) {
					t.Errorf("applied %+v", s)
				}
			}
		})
	}
	// A reconnect whose reply changes the domains applies again.
	rec := &recordingDNS{}
	c := &Client{log: slog.New(slog.NewTextHandler(io.Discard, nil)), dns: rec, dnsServers: server}
	c.ConfiguredDNSDomains([]string{"a.test"})
	c.applyDNSLocked(split)
	c.ConfiguredDNSDomains([]string{"b.test"})
	c.applyDNSLocked(split)
	if len(rec.applied) != 2 || rec.applied[1].Domains[0] != "b.test" {
		t.Errorf("after new domains: %+v", rec.applied)
	}
}
