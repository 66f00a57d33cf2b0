package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// originalResolvConf has what a rewrite must not lose: comments, options,
// odd spacing and no final newline.
const originalResolvConf = "# from DHCP\nnameserver 192.168.1.1\nnameserver  192.168.1.2\nsearch lan home\noptions edns0 trust-ad\n; end"

var corpSettings = DNSSettings{Servers: []netip.Addr{netip.MustParseAddr("10.100.0.53")}, Domains: []string{"corp.test"}}

// fileSetup is a resolv.conf and a state directory in a temporary
// directory.
func fileSetup(t *testing.T) DNSOptions {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(originalResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return DNSOptions{Mode: DNSFile, Link: "mifsec0", ResolvConf: path, StateDir: filepath.Join(dir, "state")}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func nameservers(content string) []string {
	var out []string
	for _, line := range strings.Split(content, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}

func TestParseDNSMode(t *testing.T) {
	for _, s := range []string{"auto", "resolved", "resolvconf", "file", "off"} {
		if m, err := ParseDNSMode(s); err != nil || string(m) != s {
			t.Errorf("ParseDNSMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "Auto", "systemd"} {
		if _, err := ParseDNSMode(s); err == nil {
			t.Errorf("ParseDNSMode(%q) accepted", s)
		}
	}
}

func TestFileDNSSplitAndRestore(t *testing.T) {
	opts := fileSetup(t)
	d, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	got := readString(t, opts.ResolvConf)
	// A split tunnel: the tunnel's server first, the original ones after.
	if ns := nameservers(got); !reflect.DeepEqual(ns, []string{"10.100.0.53", "192.168.1.1", "192.168.1.2"}) {
		t.Errorf("nameservers %v in\n%s", ns, got)
	}
	if !strings.Contains(got, "\nsearch corp.test lan home\n") || !strings.Contains(got, "\noptions edns0 trust-ad\n") {
		t.Errorf("search or options lost:\n%s", got)
	}
	if _, err := os.Stat(recordPath(opts.StateDir, "mifsec0")); err != nil {
		t.Errorf("no record while applied: %v", err)
	}
	// A second Apply (a reconnect) must not take the rewritten file for
	// the original.
	full := corpSettings
	full.DefaultRoute = true
	if err := d.Apply(full); err != nil {
		t.Fatal(err)
	}
	if ns := nameservers(readString(t, opts.ResolvConf)); !reflect.DeepEqual(ns, []string{"10.100.0.53"}) {
		t.Errorf("full tunnel: nameservers %v, want only the tunnel's", ns)
	}
	if err := d.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, opts.ResolvConf); got != originalResolvConf {
		t.Errorf("restored file differs:\n%q\nwant\n%q", got, originalResolvConf)
	}
	if fi, _ := os.Stat(opts.ResolvConf); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v after restore", fi.Mode())
	}
	if _, err := os.Stat(recordPath(opts.StateDir, "mifsec0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left after restore: %v", err)
	}
	if err := d.Restore(); err != nil {
		t.Errorf("second Restore: %v", err)
	}
}

func TestFileDNSSymlink(t *testing.T) {
	opts := fileSetup(t)
	target := opts.ResolvConf + ".target"
	os.Rename(opts.ResolvConf, target)
	if err := os.Symlink(target, opts.ResolvConf); err != nil {
		t.Fatal(err)
	}
	d, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(opts.ResolvConf); fi.Mode()&os.ModeSymlink != 0 {
		t.Error("still a symbolic link: the write went to its target")
	}
	if got := readString(t, target); got != originalResolvConf {
		t.Errorf("the link's target changed:\n%s", got)
	}
	if ns := nameservers(readString(t, opts.ResolvConf)); len(ns) == 0 || ns[0] != "10.100.0.53" {
		t.Errorf("nameservers %v", ns)
	}
	if err := d.Restore(); err != nil {
		t.Fatal(err)
	}
	if link, err := os.Readlink(opts.ResolvConf); err != nil || link != target {
		t.Errorf("after restore: link %q, %v; want %q", link, err, target)
	}
}

// asDeadProcess makes the records written until the returned function runs
// look like those of a process that is gone.
func asDeadProcess(t *testing.T) func() {
	t.Helper()
	saved := currentProcess
	currentProcess = func() (int, uint64) { return 1 << 30, 1 } // no such pid
	restore := func() { currentProcess = saved }
	t.Cleanup(restore)
	return restore
}

func TestFileDNSRecoversAfterCrash(t *testing.T) {
	opts := fileSetup(t)
	back := asDeadProcess(t)
	d, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	back() // the process "died" without Restore
	if readString(t, opts.ResolvConf) == originalResolvConf {
		t.Fatal("not rewritten")
	}
	opts.Mode = DNSOff // the next start restores whatever mode it uses
	if _, err := NewDNS(opts); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, opts.ResolvConf); got != originalResolvConf {
		t.Errorf("not restored after the crash:\n%q", got)
	}
	if _, err := os.Stat(recordPath(opts.StateDir, "mifsec0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left: %v", err)
	}
}

func TestFileDNSLeavesAFileSomeoneElseWrote(t *testing.T) {
	opts := fileSetup(t)
	back := asDeadProcess(t)
	d, _ := NewDNS(opts)
	if err := d.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	back()
	const dhcp = "nameserver 172.16.0.1\n" // a DHCP client renewed meanwhile
	os.WriteFile(opts.ResolvConf, []byte(dhcp), 0o644)
	if _, err := NewDNS(opts); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, opts.ResolvConf); got != dhcp {
		t.Errorf("a newer file was replaced: %q", got)
	}
	if _, err := os.Stat(recordPath(opts.StateDir, "mifsec0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left: %v", err)
	}
}

func TestFileDNSRefusesASecondWriter(t *testing.T) {
	opts := fileSetup(t)
	first, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	defer first.Restore()
	opts.Link = "mifsec1"
	_, err = NewDNS(opts)
	if err == nil || !strings.Contains(err.Error(), "manages") {
		t.Errorf("a second instance on the same file: %v", err)
	}
}

func TestResolvconfDNS(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	prog := filepath.Join(dir, "resolvconf")
	script := "#!/bin/sh\necho \"ARGS $*\" >> " + log + "\ncase \"$1\" in -a) cat >> " + log + ";; esac\n"
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := DNSOptions{Mode: DNSResolvconf, Link: "mifsec0", Resolvconf: prog, StateDir: filepath.Join(dir, "state")}
	d, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(); err != nil {
		t.Fatal(err)
	}
	want := "ARGS -a mifsec0.inet\nnameserver 10.100.0.53\nsearch corp.test\nARGS -d mifsec0.inet -f\n"
	if got := readString(t, log); got != want {
		t.Errorf("resolvconf saw\n%s\nwant\n%s", got, want)
	}
	// A crash: the next start removes the record.
	os.Remove(log)
	back := asDeadProcess(t)
	d, _ = NewDNS(opts)
	d.Apply(corpSettings)
	back()
	os.Remove(log)
	opts.Mode = DNSOff
	if _, err := NewDNS(opts); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, log); got != "ARGS -d mifsec0.inet -f\n" {
		t.Errorf("after a crash, resolvconf saw %q", got)
	}
}

// fakeBus records the calls to systemd-resolved's Manager.
type fakeBus struct {
	running bool
	calls   *[]string
}

func (b fakeBus) Running() bool { return b.running }
func (b fakeBus) Close() error  { return nil }
func (b fakeBus) CallManager(method string, args ...any) error {
	var s strings.Builder
	s.WriteString(method)
	for _, a := range args {
		s.WriteString(" ")
		switch v := a.(type) {
		case []resolvedAddress:
			for _, x := range v {
				addr, _ := netip.AddrFromSlice(x.Address)
				fmt.Fprintf(&s, "(%02d %s)", x.Family, addr)
			}
		case []resolvedDomain:
			for _, x := range v {
				if x.RoutingOnly {
					s.WriteString("~")
				}
				s.WriteString(x.Domain + " ")
			}
		case int32:
			s.WriteString("IDX")
		default:
			fmt.Fprint(&s, v)
		}
	}
	*b.calls = append(*b.calls, strings.TrimSpace(s.String()))
	return nil
}

func TestResolvedDNS(t *testing.T) {
	var calls []string
	bus := fakeBus{running: true, calls: &calls}
	opts := DNSOptions{Mode: DNSResolved, Link: "lo", StateDir: t.TempDir(), Bus: func() (ResolvedBus, error) { return bus, nil }}
	d, err := NewDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(corpSettings); err != nil {
		t.Fatal(err)
	}
	full := corpSettings
	full.DefaultRoute = true
	if err := d.Apply(full); err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"SetLinkDNS IDX (02 10.100.0.53)", "SetLinkDomains IDX ~corp.test", "SetLinkDefaultRoute IDX false",
		"SetLinkDNS IDX (02 10.100.0.53)", "SetLinkDomains IDX ~corp.test ~.", "SetLinkDefaultRoute IDX true",
		"RevertLink IDX",
	}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	args, _ := resolvedArgs(DNSSettings{Servers: []netip.Addr{netip.MustParseAddr("fd00::53"), netip.MustParseAddr("::ffff:10.0.0.1")}})
	if args[0].Family != 10 || len(args[0].Address) != 16 || args[1].Family != 2 || len(args[1].Address) != 4 {
		t.Errorf("address families: %+v", args)
	}
}

func TestDNSModeChoice(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no resolvconf
	stopped := func() (ResolvedBus, error) { return fakeBus{running: false, calls: new([]string)}, nil }
	running := func() (ResolvedBus, error) { return fakeBus{running: true, calls: new([]string)}, nil }
	opts := fileSetup(t)
	opts.Mode, opts.Bus = DNSAuto, running
	if d, err := NewDNS(opts); err != nil || d.Mode() != DNSResolved {
		t.Errorf("auto with resolved running: %v, %v", d, err)
	}
	opts.Bus = stopped
	if d, err := NewDNS(opts); err != nil || d.Mode() != DNSFile {
		t.Errorf("auto without resolved or resolvconf: %v, %v", d, err)
	}
	opts.Mode = DNSResolved
	if _, err := NewDNS(opts); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("resolved when it does not run: %v", err)
	}
	opts.Mode = DNSResolvconf
	if _, err := NewDNS(opts); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("resolvconf when it is missing: %v", err)
	}
}

func TestResolvConfFor(t *testing.T) {
	orig := parseResolvConf([]byte("nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\ndomain x\n"))
	s := DNSSettings{Servers: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}}
	got := resolvConfFor("t0", s, orig)
	// At most three nameservers (MAXNS): the tunnel's come first.
	if ns := nameservers(string(got)); !reflect.DeepEqual(ns, []string{"10.0.0.1", "10.0.0.2", "1.1.1.1"}) {
		t.Errorf("nameservers %v", ns)
	}
	if !bytes.Contains(got, []byte("\nsearch x\n")) {
		t.Errorf("search lost:\n%s", got)
	}
}
