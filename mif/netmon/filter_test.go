package netmon

import (
	"testing"

	"github.com/mifsec/mifsec/scheduler"
)

func TestFilterAdmits(t *testing.T) {
	tests := []struct {
		name   string
		f      Filter
		iface  string
		kind   scheduler.Kind
		admits bool
	}{
		{"everything by default", Filter{}, "eth0", scheduler.KindEthernet, true},
		{"loopback never", Filter{Include: []string{"*"}}, "lo", scheduler.KindLoopback, false},
		{"ignored TUN", Filter{Ignore: []string{"mifsec0"}}, "mifsec0", scheduler.KindVirtual, false},
		{"include glob matches", Filter{Include: []string{"wl*", "eth0"}}, "wlan0", scheduler.KindWLAN, true},
		{"include glob misses", Filter{Include: []string{"wl*", "eth0"}}, "wwan0", scheduler.KindCellular, false},
		{"exclude wins over include", Filter{Include: []string{"*"}, Exclude: []string{"ww*"}}, "wwan0", scheduler.KindCellular, false},
		{"exclude leaves others", Filter{Exclude: []string{"ww*"}}, "wlan0", scheduler.KindWLAN, true},
		{"character class", Filter{Include: []string{"eth[0-1]"}}, "eth2", scheduler.KindEthernet, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.f.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tt.f.Admits(tt.iface, tt.kind); got != tt.admits {
				t.Errorf("Admits(%s) = %v, want %v", tt.iface, got, tt.admits)
			}
		})
	}
}

func TestFilterPriority(t *testing.T) {
	f := Filter{Priorities: map[string]int{"wwan0": 0, "wl*": 5, "wlan9": 7, "cellular": 9, "ethernet": 4}}
	tests := []struct {
		iface string
		kind  scheduler.Kind
		want  int
	}{
		{"wwan0", scheduler.KindCellular, 0}, // exact name over kind
		{"wwan1", scheduler.KindCellular, 9}, // kind
		{"wlan9", scheduler.KindWLAN, 7},     // exact name over glob
		{"wlan0", scheduler.KindWLAN, 5},     // glob
		{"eth0", scheduler.KindEthernet, 4},  // kind
		{"br0", scheduler.KindOther, 3},      // default
		{"tun7", scheduler.KindVirtual, 3},   // default
	}
	for _, tt := range tests {
		t.Run(tt.iface, func(t *testing.T) {
			if got := f.Priority(tt.iface, tt.kind); got != tt.want {
				t.Errorf("Priority(%s, %v) = %d, want %d", tt.iface, tt.kind, got, tt.want)
			}
		})
	}
	var none Filter
	for k, want := range map[scheduler.Kind]int{scheduler.KindEthernet: 0, scheduler.KindWLAN: 1, scheduler.KindCellular: 2, scheduler.KindOther: 3} {
		if got := none.Priority("x", k); got != want {
			t.Errorf("default priority of %v = %d, want %d", k, got, want)
		}
	}
}

func TestFilterValidate(t *testing.T) {
	for _, f := range []Filter{
		{Include: []string{"wl[an"}},
		{Exclude: []string{""}},
		{Priorities: map[string]int{"[": 1}},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted a bad filter", f)
		}
	}
}

func TestParseGlobs(t *testing.T) {
	got, err := ParseGlobs(" wlan*, eth0 ,,")
	if err != nil || len(got) != 2 || got[0] != "wlan*" || got[1] != "eth0" {
		t.Errorf("ParseGlobs = %q, %v", got, err)
	}
	if _, err := ParseGlobs("wl[an"); err == nil {
		t.Error("ParseGlobs accepted a malformed glob")
	}
}

func TestParsePriority(t *testing.T) {
	tests := []struct {
		in   string
		name string
		n    int
		ok   bool
	}{
		{"wlan0=0", "wlan0", 0, true},
		{" cellular = 7 ", "cellular", 7, true},
		{"wl*=3", "wl*", 3, true},
		{"wlan0", "", 0, false},
		{"=1", "", 0, false},
		{"wlan0=-1", "", 0, false},
		{"wlan0=256", "", 0, false},
		{"wlan0=x", "", 0, false},
		{"[=1", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			name, n, err := ParsePriority(tt.in)
			if (err == nil) != tt.ok || name != tt.name || n != tt.n {
				t.Errorf("ParsePriority(%q) = %q, %d, %v", tt.in, name, n, err)
			}
		})
	}
}
