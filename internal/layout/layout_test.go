package layout

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/mifsec/mifsec/"

// mayImport is, for each room (a top-level folder, internal/* counting as
// "internal"), the other rooms its packages may import. A room's own
// subpackages are always allowed. Imports only go down: tun and scheduler
// are leaves, dataplane sits on scheduler, ike on nothing, mif on all four,
// and only bench and the binary sit above mif.
var mayImport = map[string][]string{
	"tun":       {"internal"},
	"scheduler": {},
	"dataplane": {"scheduler", "internal"},
	"ike":       {},
	"mif":       {"ike", "dataplane", "scheduler", "tun"},
	"bench":     {"ike", "dataplane", "scheduler", "tun", "mif", "internal"},
	"internal":  {"ike", "dataplane", "scheduler", "tun"},
	"cmd":       {"ike", "dataplane", "scheduler", "tun", "mif", "bench", "internal"},
}

// testOnly are the helpers that must never be part of the binary. (The
// charon launcher, internal/strongswan/charon, is not one of them: the
// benchmark's strongSwan peer uses it too.)
var testOnly = []string{"internal/testenv", "internal/testpki", "internal/strongswan", "internal/etcdtest"}

// testOnlyModules are outside packages only tests may link: the binary
// talks to etcd as a client (mif/cluster); etcd's server runs embedded in
// tests only (internal/etcdtest).
var testOnlyModules = []string{"go.etcd.io/etcd/server/"}

type listed struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func goList(t *testing.T, args ...string) []listed {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, errb.String())
	}
	var pkgs []listed
	dec := json.NewDecoder(&out)
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %v listed nothing", args)
	}
	return pkgs
}

func room(path string) string {
	r, _, _ := strings.Cut(strings.TrimPrefix(path, module), "/")
	return r
}

// TestImportsGoDown checks every project import of every package (tests
// aside) against mayImport: no upward import, nothing imports the binary,
// and no product room imports bench.
func TestImportsGoDown(t *testing.T) {
	for _, p := range goList(t, "./...") {
		from := room(p.ImportPath)
		allowed, ok := mayImport[from]
		if !ok {
			t.Errorf("%s: the room %q is not in the layout", p.ImportPath, from)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := room(imp)
			if to != from && !slices.Contains(allowed, to) {
				t.Errorf("%s imports %s: %s may import only %v", p.ImportPath, imp, from, allowed)
			}
		}
	}
}

// TestBinaryHoldsNoTestHelper checks that the test PKI, the namespace
// helpers, the strongSwan launcher for tests and the embedded etcd are not
// linked into the binary.
func TestBinaryHoldsNoTestHelper(t *testing.T) {
	bin := goList(t, "-deps", "./cmd/mifsec")
	var deps []string
	for _, p := range bin {
		deps = append(deps, p.ImportPath)
	}
	if !slices.Contains(deps, module+"mif") {
		t.Fatalf("the binary's dependencies lack mif: %v", deps)
	}
	for _, d := range deps {
		for _, h := range testOnly {
			if d == module+h {
				t.Errorf("the binary links %s, a test helper", d)
			}
		}
		for _, m := range testOnlyModules {
			if strings.HasPrefix(d, m) {
				t.Errorf("the binary links %s, for tests only", d)
			}
		}
	}
}
