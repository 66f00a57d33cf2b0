package mif

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSplitDefault(t *testing.T) {
	tests := map[string][]string{
		"0.0.0.0/0":   {"0.0.0.0/1", "128.0.0.0/1"},
		"::/0":        {"::/1", "8000::/1"},
		"10.1.0.0/24": {"10.1.0.0/24"},
	}
	for in, want := range tests {
		var w []netip.Prefix
		for _, s := range want {
			w = append(w, netip.MustParsePrefix(s))
		}
		if got := splitDefault(netip.MustParsePrefix(in)); !slices.Equal(got, w) {
			t.Errorf("splitDefault(%s) = %v, want %v", in, got, w)
		}
	}
}

func TestStatusSocketRoundTrip(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "s.sock")
	if err := ServeStatus(ctx, path, func() any { return map[string]int{"tx_packets": 42} }); err != nil {
		t.Fatal(err)
	}
	raw, err := ReadStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `{"tx_packets":42}` {
		t.Fatalf("status %s", raw)
	}
	if _, err := ReadStatus(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("reading a missing socket succeeded")
	}
	// A second instance on the same path must not take the live socket.
	if err := ServeStatus(ctx, path, func() any { return "other" }); err == nil || !strings.Contains(err.Error(), "another mifsec instance") {
		t.Fatalf("second ServeStatus on a live socket: %v", err)
	}
	if raw, err := ReadStatus(path); err != nil || string(raw) != `{"tx_packets":42}` {
		t.Fatalf("the first instance lost its socket: %s %v", raw, err)
	}
}
