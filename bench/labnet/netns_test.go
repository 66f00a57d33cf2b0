package labnet

import (
	"slices"
	"testing"
)

func TestStaleNamespaces(t *testing.T) {
	const list = `mifsec-bench-100-veth-c (id: 3)
mifsec-bench-100-veth-s (id: 2)
mifsec-bench-200-wireguard-go-c
mifsec-bench-garbage
other-ns (id: 0)
gw
mifsec-bench-0-x
`
	alive := func(pid int) bool { return pid == 200 }
	got := staleNamespaces(list, alive)
	want := []string{"mifsec-bench-100-veth-c", "mifsec-bench-100-veth-s", "mifsec-bench-garbage", "mifsec-bench-0-x"}
	if !slices.Equal(got, want) {
		t.Errorf("staleNamespaces = %q, want %q", got, want)
	}
	if got := staleNamespaces("", alive); len(got) != 0 {
		t.Errorf("staleNamespaces of empty list = %q, want none", got)
	}
}

func TestNamespaceOwner(t *testing.T) {
	tests := []struct {
		name   string
		pid    int
		parsed bool
	}{
		{"mifsec-bench-4242-veth-c", 4242, true},
		{"mifsec-bench-17-strongswan-s", 17, true},
		{"mifsec-bench-x-veth-c", 0, false},
		{"mifsec-bench--1-veth", 0, false},
		{"unrelated-4242-veth", 0, false},
	}
	for _, tt := range tests {
		pid, ok := namespaceOwner(tt.name)
		if pid != tt.pid || ok != tt.parsed {
			t.Errorf("namespaceOwner(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.parsed)
		}
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	b := &tailBuffer{limit: 8}
	b.Write([]byte("0123456789"))
	b.Write([]byte("ab"))
	if got := b.String(); got != "456789ab" {
		t.Errorf("tailBuffer = %q, want %q", got, "456789ab")
	}
}

func TestSocketOwner(t *testing.T) {
	prefixes := []string{"mbk", "mlb"}
	for name, want := range map[string]int{"mlb1234c.sock": 1234, "mbk7s.sock": 7, "mlb0c.sock": 0, "mlbc.sock": 0,
		"mifsec0.sock": 0, "mlb1234c": 0, "wgb12c.sock": 0, "mlb99s.4026532245.sysctl": 99, "mlb12x.sock": 0} {
		got, ok := socketOwner(name, prefixes)
		if got != want || ok != (want > 0) {
			t.Errorf("socketOwner(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}
