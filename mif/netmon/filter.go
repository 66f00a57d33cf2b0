package netmon

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/mifsec/mifsec/scheduler"
)

// Filter decides which interfaces a monitor reports and with which
// priority.
type Filter struct {
	// Include lists name globs (path.Match syntax: *, ?, [a-z]); empty
	// means every interface.
	Include []string
	// Exclude lists name globs never reported, even when included.
	Exclude []string
	// Ignore names interfaces left out always, such as the tunnel's own
	// TUN device (whose routes would otherwise look like a way to the
	// gateway). Loopback interfaces are always left out too.
	Ignore []string
	// Priorities set an interface's priority (lower is better) by its
	// name, a name glob, or a kind name (ethernet, wlan, cellular, other,
	// virtual). An exact name wins over a glob, a glob over a kind, a kind
	// over scheduler.DefaultTier.
	Priorities map[string]int
}

// Validate reports a malformed glob or priority key.
func (f *Filter) Validate() error {
	for _, list := range [][]string{f.Include, f.Exclude} {
		for _, g := range list {
			if g == "" {
				return fmt.Errorf("empty interface pattern")
			}
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("interface pattern %q: %w", g, err)
			}
		}
	}
	for k := range f.Priorities {
		if k == "" {
			return fmt.Errorf("interface priority with an empty name")
		}
		if _, err := path.Match(k, ""); err != nil {
			return fmt.Errorf("interface priority %q: %w", k, err)
		}
	}
	return nil
}

// Admits reports whether an interface named name of kind k is reported.
func (f *Filter) Admits(name string, k scheduler.Kind) bool {
	if k == scheduler.KindLoopback {
		return false
	}
	for _, n := range f.Ignore {
		if n == name {
			return false
		}
	}
	if matchAny(f.Exclude, name) {
		return false
	}
	return len(f.Include) == 0 || matchAny(f.Include, name)
}

// Priority returns the priority of an interface named name of kind k.
func (f *Filter) Priority(name string, k scheduler.Kind) int {
	if p, ok := f.Priorities[name]; ok {
		return p
	}
	best, found := 0, false
	for g, p := range f.Priorities {
		if _, err := scheduler.ParseKind(g); err == nil {
			continue
		}
		if ok, _ := path.Match(g, name); ok && (!found || p < best) {
			best, found = p, true
		}
	}
	if found {
		return best
	}
	for g, p := range f.Priorities {
		if kk, err := scheduler.ParseKind(g); err == nil && kk == k {
			return p
		}
	}
	return scheduler.DefaultTier(k)
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// ParseGlobs splits a comma-separated list of name globs (the
// --interfaces and --exclude-interfaces syntax), checking each.
func ParseGlobs(s string) ([]string, error) {
	var out []string
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("interface pattern %q: %w", g, err)
		}
		out = append(out, g)
	}
	return out, nil
}

// ParsePriority parses NAME=N, where NAME is an interface name, a glob or
// a kind and N a priority from 0 (best) to 255.
func ParsePriority(s string) (string, int, error) {
	name, num, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return "", 0, fmt.Errorf("interface priority %q: want NAME=N", s)
	}
	if _, err := path.Match(name, ""); err != nil {
		return "", 0, fmt.Errorf("interface priority %q: %w", s, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 || n > 255 {
		return "", 0, fmt.Errorf("interface priority %q: N must be a number from 0 to 255", s)
	}
	return name, n, nil
}
