package linkemu

import (
	"net/netip"
	"testing"

	"github.com/mifsec/mifsec/internal/testenv"
)

// topo is namespaces A, M and B joined by veth A<->M and M<->B, with
// addrA and addrB on the A and B ends in one subnet and the emulator in M
// between the two M ends.
type topo struct {
	nsA, nsM, nsB string
	ifA, ifB      string // the M ends
	endA, endB    string // the A and B ends
	addrA, addrB  netip.Addr
	link          *Link
}

func newTopo(t testing.TB, cfg Config, opts ...Option) *topo {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	tp := &topo{
		nsA:   testenv.NewNamedNetns(t, "emuA"),
		nsM:   testenv.NewNamedNetns(t, "emuM"),
		nsB:   testenv.NewNamedNetns(t, "emuB"),
		addrA: netip.MustParseAddr("10.99.0.1"),
		addrB: netip.MustParseAddr("10.99.0.2"),
	}
	tp.endA, tp.ifA = testenv.Veth(t, tp.nsA, tp.nsM, netip.PrefixFrom(tp.addrA, 24), netip.Prefix{})
	tp.ifB, tp.endB = testenv.Veth(t, tp.nsM, tp.nsB, netip.Prefix{}, netip.PrefixFrom(tp.addrB, 24))
	for _, ifc := range []string{tp.ifA, tp.ifB} {
		// The middle namespace only carries frames: no addresses, no
		// router solicitations of its own.
		testenv.Exec(t, tp.nsM, "sysctl", "-q", "-w", "net.ipv6.conf."+ifc+".disable_ipv6=1")
	}
	l, err := Start(tp.nsM, tp.ifA, tp.ifB, cfg, opts...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	tp.link = l
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tp
}
