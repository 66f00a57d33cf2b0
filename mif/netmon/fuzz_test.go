package netmon

import (
	"strings"
	"testing"

	"github.com/mifsec/mifsec/scheduler"
)

// Flag values are user input: malformed ones get an error, never a panic,
// and accepted ones satisfy the documented ranges.
func FuzzParseFlags(f *testing.F) {
	for _, s := range []string{"wlan0=1", "wl*=0", "cellular=255", "=", "[=1", "a=-1", "wlan*,eth0", " , ", "wl[an"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if name, n, err := ParsePriority(s); err == nil {
			if name == "" || n < 0 || n > 255 || strings.TrimSpace(name) != name {
				t.Fatalf("ParsePriority(%q) = %q, %d", s, name, n)
			}
			f := Filter{Priorities: map[string]int{name: n}}
			if err := f.Validate(); err != nil {
				t.Fatalf("accepted priority %q does not validate: %v", s, err)
			}
			f.Priority(name, scheduler.KindOther)
		}
		if globs, err := ParseGlobs(s); err == nil {
			f := Filter{Include: globs, Exclude: globs}
			if err := f.Validate(); err != nil {
				t.Fatalf("accepted globs %q do not validate: %v", globs, err)
			}
			f.Admits(s, scheduler.KindEthernet)
		}
	})
}
