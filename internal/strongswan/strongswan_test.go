package strongswan

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/internal/testenv"
)

func swanctlConf(local, remote, localInner, remoteInner string) string {
	return fmt.Sprintf(`connections {
	t {
		version = 2
		local_addrs = %[1]s
		remote_addrs = %[2]s
		proposals = aes256gcm16-prfsha256-x25519
		encap = yes
		local {
			auth = psk
			id = %[1]s
		}
		remote {
			auth = psk
			id = %[2]s
		}
		children {
			c {
				local_ts = %[3]s/32
				remote_ts = %[4]s/32
				esp_proposals = aes256gcm16
			}
		}
	}
}
secrets {
	ike-t {
		id-a = %[1]s
		id-b = %[2]s
		secret = "test secret"
	}
}
`, local, remote, localInner, remoteInner)
}

// TestTwoCharons checks the harness itself: two charons in two namespaces
// establish an SA and carry a ping.
func TestTwoCharons(t *testing.T) {
	Require(t)
	testenv.RequireCommand(t, "ping")
	nsA, nsB := testenv.NewNamedNetns(t, "sw-a"), testenv.NewNamedNetns(t, "sw-b")
	testenv.Veth(t, nsA, nsB, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, nsA, "ip", "addr", "add", "10.1.0.1/32", "dev", "lo")
	testenv.Exec(t, nsB, "ip", "addr", "add", "10.2.0.1/32", "dev", "lo")
	a := Start(t, Config{Netns: nsA, Swanctl: swanctlConf("192.0.2.1", "192.0.2.2", "10.1.0.1", "10.2.0.1")})
	b := Start(t, Config{Netns: nsB, Swanctl: swanctlConf("192.0.2.2", "192.0.2.1", "10.2.0.1", "10.1.0.1")})
	a.MustSwanctl("--initiate", "--child", "c", "--timeout", "10")
	if sas := b.MustSwanctl("--list-sas"); !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, "INSTALLED") {
		t.Fatalf("responder has no established SA:\n%s", sas)
	}
	out, err := exec.Command("ip", "netns", "exec", nsA, "ping", "-c", "2", "-W", "2", "-I", "10.1.0.1", "10.2.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("ping through strongSwan: %v\n%s\ncharon a:\n%s", err, out, a.Log())
	}
	a.Stop()
	if !a.Exited() {
		t.Fatal("charon still running after Stop")
	}
}
