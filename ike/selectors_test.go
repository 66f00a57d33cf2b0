package ike

import (
	"net/netip"
	"slices"
	"testing"
)

func TestSelectorPrefixRoundTrip(t *testing.T) {
	for _, s := range []string{"0.0.0.0/0", "10.1.0.0/24", "10.3.0.7/32", "::/0", "fd00:1::/64", "2001:db8::1/128"} {
		p := netip.MustParsePrefix(s)
		got := PrefixesFromSelectors(SelectorsFromPrefixes([]netip.Prefix{p}))
		if len(got) != 1 || got[0] != p {
			t.Errorf("%s came back as %v", p, got)
		}
	}
}

func TestRangeToPrefixes(t *testing.T) {
	tests := []struct {
		start, end string
		want       []string
	}{
		{"10.0.0.1", "10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"10.0.0.0", "10.0.1.255", []string{"10.0.0.0/23"}},
		{"255.255.255.254", "255.255.255.255", []string{"255.255.255.254/31"}},
		{"10.0.0.5", "10.0.0.4", nil},
		{"10.0.0.1", "::1", nil},
	}
	for _, tc := range tests {
		var want []netip.Prefix
		for _, w := range tc.want {
			want = append(want, netip.MustParsePrefix(w))
		}
		got := rangeToPrefixes(netip.MustParseAddr(tc.start), netip.MustParseAddr(tc.end))
		if !slices.Equal(got, want) {
			t.Errorf("%s-%s: got %v, want %v", tc.start, tc.end, got, want)
		}
	}
}
