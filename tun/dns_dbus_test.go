package tun

import (
	"bufio"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
)

// fakeResolved stands for systemd-resolved's Manager object on a private
// bus; its methods have resolved's signatures, so a call with other
// argument types fails as it would against the real service.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeResolved) record(s string) *dbus.Error {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
	return nil
}

// SetLinkDNS is "ia(iay)".
func (f *fakeResolved) SetLinkDNS(ifindex int32, addrs []struct {
	Family  int32
	Address []byte
}) *dbus.Error {
	var parts []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Address)
		parts = append(parts, fmt.Sprintf("%d:%s", a.Family, ip))
	}
	return f.record(fmt.Sprintf("SetLinkDNS %d %s", ifindex, strings.Join(parts, ",")))
}

// SetLinkDomains is "ia(sb)".
func (f *fakeResolved) SetLinkDomains(ifindex int32, domains []struct {
	Domain      string
	RoutingOnly bool
}) *dbus.Error {
	var parts []string
	for _, d := range domains {
		if d.RoutingOnly {
			parts = append(parts, "~"+d.Domain)
		} else {
			parts = append(parts, d.Domain)
		}
	}
	return f.record(fmt.Sprintf("SetLinkDomains %d %s", ifindex, strings.Join(parts, ",")))
}

// SetLinkDefaultRoute is "ib".
func (f *fakeResolved) SetLinkDefaultRoute(ifindex int32, enable bool) *dbus.Error {
	return f.record(fmt.Sprintf("SetLinkDefaultRoute %d %v", ifindex, enable))
}

// RevertLink is "i".
func (f *fakeResolved) RevertLink(ifindex int32) *dbus.Error {
	return f.record(fmt.Sprintf("RevertLink %d", ifindex))
}

// privateBus starts a dbus-daemon of its own and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("needs dbus-daemon (Debian package dbus-daemon) for a private bus")
	}
	addr := "unix:path=" + filepath.Join(t.TempDir(), "bus")
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address", "--address="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestResolvedDNSOverDBus sends the real D-Bus calls to a stand-in for
// systemd-resolved on a private bus.
func TestResolvedDNSOverDBus(t *testing.T) {
	addr := privateBus(t)
	service, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer service.Close()
	fake := &fakeResolved{}
	if err := service.Export(fake, resolvedPath, resolvedManager); err != nil {
		t.Fatal(err)
	}
	bus := func() (ResolvedBus, error) { return connectResolvedBus(addr) }
	opts := DNSOptions{Mode: DNSAuto, Link: "lo", StateDir: t.TempDir(), Bus: bus}
	t.Setenv("PATH", t.TempDir()) // no resolvconf
	if d, err := NewDNS(opts); err != nil || d.Mode() != DNSFile {
		t.Fatalf("auto before resolved owns its name: %v, %v (want file)", d, err)
	}
	if reply, err := service.RequestName(resolvedName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v, %v", reply, err)
	}
	d, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if d.Mode() != DNSResolved {
		t.Fatalf("auto with resolved on the bus chose %s", d.Mode())
	}
	split := DNSSettings{Servers: []netip.Addr{netip.MustParseAddr("10.100.0.53"), netip.MustParseAddr("fd00::53")}, Domains: []string{"corp.test"}}
	if err := d.Apply(split); err != nil {
		t.Fatal(err)
	}
	full := split
	full.DefaultRoute = true
	if err := d.Apply(full); err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SetLinkDNS 1 2:10.100.0.53,10:fd00::53", "SetLinkDomains 1 ~corp.test", "SetLinkDefaultRoute 1 false",
		"SetLinkDNS 1 2:10.100.0.53,10:fd00::53", "SetLinkDomains 1 ~corp.test,~.", "SetLinkDefaultRoute 1 true",
		"RevertLink 1",
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if !reflect.DeepEqual(fake.calls, want) {
		t.Errorf("resolved received\n%s\nwant\n%s", strings.Join(fake.calls, "\n"), strings.Join(want, "\n"))
	}
}
