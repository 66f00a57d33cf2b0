package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSanitize(t *testing.T) {
	tests := []struct {
		in, want string
		maxLen   int
	}{
		{"TestVeth", "TestVeth", 32},
		{"TestX/sub case", "TestX_sub_case", 32},
		{"abcdef", "abc", 3},
		{"", "", 32},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := sanitize(tt.in, tt.maxLen); got != tt.want {
				t.Errorf("sanitize(%q, %d) = %q, want %q", tt.in, tt.maxLen, got, tt.want)
			}
		})
	}
}

// recordingTB records skip messages instead of stopping the test.
type recordingTB struct {
	testing.TB
	skips []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skips = append(r.skips, fmt.Sprintf(format, args...))
}

func TestRequireCommand(t *testing.T) {
	tests := []struct {
		command  string
		wantSkip string
	}{
		{"sh", ""},
		{"mifsec-no-such-command", `needs command "mifsec-no-such-command"`},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			RequireCommand(rec, tt.command)
			switch {
			case tt.wantSkip == "" && len(rec.skips) > 0:
				t.Errorf("skipped: %q", rec.skips)
			case tt.wantSkip != "" && (len(rec.skips) != 1 || !strings.Contains(rec.skips[0], tt.wantSkip)):
				t.Errorf("skips = %q, want one containing %q", rec.skips, tt.wantSkip)
			}
		})
	}
}

func TestWithNetns(t *testing.T) {
	RequireRoot(t)
	original, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer original.Close()

	var inside netns.NsHandle
	WithNetns(t, func() {
		inside, err = netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		if inside.Equal(original) {
			t.Error("fn runs in the original network namespace")
		}
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		if len(links) != 1 || links[0].Attrs().Name != "lo" || links[0].Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("links in the new namespace = %v, want only lo, up", links)
		}

		goroutineNs := make(chan bool)
		go func() {
			ns, err := netns.Get()
			if err != nil {
				goroutineNs <- false
				return
			}
			defer ns.Close()
			goroutineNs <- ns.Equal(original)
		}()
		if !<-goroutineNs {
			t.Error("a goroutine started inside fn is not in the original namespace")
		}
	})
	defer inside.Close()

	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(original) {
		t.Error("the thread did not return to the original network namespace")
	}
}

func TestNewNamedNetnsAndExec(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "ip")
	var name string
	t.Run("create", func(t *testing.T) {
		name = NewNamedNetns(t, t.Name())
		if !strings.HasPrefix(name, NetnsPrefix+"TestNewNamedNetnsAndExec_create-") {
			t.Errorf("name %q lacks the expected prefix", name)
		}
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			t.Errorf("namespace file: %v", err)
		}
		out := Exec(t, name, "ip", "-o", "link", "show")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], " lo: ") || !strings.Contains(lines[0], "UP") {
			t.Errorf("links in %s:\n%s\nwant only lo, up", name, out)
		}
		var inside bool
		InNamedNetns(t, name, func() {
			_, err := netlink.LinkByName("lo")
			inside = err == nil
			links, _ := netlink.LinkList()
			inside = inside && len(links) == 1
		})
		if !inside {
			t.Error("InNamedNetns did not run fn in the named namespace")
		}
	})
	if name == "" {
		t.Fatal("no namespace was created")
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still exists after the test: %v", name, err)
	}
}

func TestVethCarriesUDP(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "ip")
	tests := []struct {
		name         string
		addrA, addrB netip.Prefix
	}{
		{"ipv4", netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24")},
		{"ipv6", netip.MustParsePrefix("2001:db8::1/64"), netip.MustParsePrefix("2001:db8::2/64")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nsA, nsB := NewNamedNetns(t, "vethA"), NewNamedNetns(t, "vethB")
			ifA, ifB := Veth(t, nsA, nsB, tt.addrA, tt.addrB)
			if out := Exec(t, nsA, "ip", "-o", "address", "show", "dev", ifA); !strings.Contains(out, tt.addrA.String()) {
				t.Errorf("%s in %s lacks %s:\n%s", ifA, nsA, tt.addrA, out)
			}

			var receiver *net.UDPConn
			InNamedNetns(t, nsB, func() {
				var err error
				receiver, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tt.addrB.Addr(), 0)))
				if err != nil {
					t.Fatal(err)
				}
			})
			defer receiver.Close()
			var sender *net.UDPConn
			InNamedNetns(t, nsA, func() {
				var err error
				sender, err = net.DialUDP("udp", nil, receiver.LocalAddr().(*net.UDPAddr))
				if err != nil {
					t.Fatal(err)
				}
			})
			defer sender.Close()

			if _, err := sender.Write([]byte("over veth")); err != nil {
				t.Fatal(err)
			}
			_ = receiver.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, from, err := receiver.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("receiving over %s-%s: %v", ifA, ifB, err)
			}
			if string(buf[:n]) != "over veth" || from.Addr() != tt.addrA.Addr() {
				t.Errorf("received %q from %s, want %q from %s", buf[:n], from, "over veth", tt.addrA.Addr())
			}
		})
	}
}
