package tun

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DNSMode says how the tunnel's DNS settings reach the host's resolver.
type DNSMode string

// The DNS modes of NewDNS.
const (
	// DNSAuto picks DNSResolved when systemd-resolved runs, else
	// DNSResolvconf when a resolvconf program is installed, else DNSFile.
	DNSAuto DNSMode = "auto"
	// DNSResolved sets the TUN link's DNS servers and routing domains
	// through systemd-resolved's D-Bus API (real split DNS).
	DNSResolved DNSMode = "resolved"
	// DNSResolvconf hands a record for the link to resolvconf.
	DNSResolvconf DNSMode = "resolvconf"
	// DNSFile rewrites /etc/resolv.conf, keeping the original to put back.
	DNSFile DNSMode = "file"
	// DNSOff leaves the host's resolver alone.
	DNSOff DNSMode = "off"
)

// ParseDNSMode reads auto, resolved, resolvconf, file or off.
func ParseDNSMode(s string) (DNSMode, error) {
	switch m := DNSMode(s); m {
	case DNSAuto, DNSResolved, DNSResolvconf, DNSFile, DNSOff:
		return m, nil
	}
	return "", fmt.Errorf("DNS mode %q: want auto, resolved, resolvconf, file or off", s)
}

// DNSSettings is what the gateway handed out for the tunnel's link.
type DNSSettings struct {
	// Servers are the DNS servers (INTERNAL_IP4_DNS, INTERNAL_IP6_DNS).
	Servers []netip.Addr
	// Domains are the names under which queries go to Servers (RFC 8598
	// INTERNAL_DNS_DOMAIN), lower case, without a trailing dot.
	Domains []string
	// DefaultRoute sends every query to Servers: a full tunnel, or a
	// gateway that named no domain.
	DefaultRoute bool
}

// Equal reports whether s and o say the same.
func (s DNSSettings) Equal(o DNSSettings) bool {
	return slices.Equal(s.Servers, o.Servers) && slices.Equal(s.Domains, o.Domains) && s.DefaultRoute == o.DefaultRoute
}

// Default paths of DNSOptions.
const (
	defaultResolvConf = "/etc/resolv.conf"
	// DefaultStateDir keeps what must be undone after a crash. It is on
	// disk, not under /run, because a rewritten /etc/resolv.conf outlives
	// a reboot.
	DefaultStateDir = "/var/lib/mifsec"
)

// DNSOptions configures NewDNS.
type DNSOptions struct {
	Mode DNSMode // "" is DNSOff
	Link string  // the TUN interface's name
	// ResolvConf is the file DNSFile rewrites; "" is defaultResolvConf.
	ResolvConf string
	// StateDir holds the records of changes to undo after a crash; "" is
	// DefaultStateDir.
	StateDir string
	// Resolvconf is the resolvconf program; "" looks it up in PATH.
	Resolvconf string
	// Bus connects to the D-Bus system bus where systemd-resolved runs;
	// nil is the system bus.
	Bus    func() (ResolvedBus, error)
	Logger *slog.Logger
}

// DNS gives the host's resolver the tunnel's DNS settings and takes them
// back.
type DNS interface {
	// Apply sets (or replaces) the link's DNS settings.
	Apply(DNSSettings) error
	// Restore undoes Apply; it does nothing when nothing was applied.
	Restore() error
	// Mode is the mode in use (never DNSAuto).
	Mode() DNSMode
}

// NewDNS first undoes what a mifsec process that died without cleaning up
// left behind (its records in StateDir), then returns the DNS of opts.Mode.
// DNSAuto picks the best mode the host offers; an explicit mode the host
// lacks is an error.
func NewDNS(opts DNSOptions) (DNS, error) {
	if opts.ResolvConf == "" {
		opts.ResolvConf = defaultResolvConf
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Mode == "" {
		opts.Mode = DNSOff
	}
	if err := recoverDNS(opts); err != nil {
		return nil, err
	}
	mode := opts.Mode
	if mode == DNSAuto {
		mode = detectDNSMode(opts)
		opts.Logger.Debug("DNS mode chosen", "mode", mode)
	}
	switch mode {
	case DNSOff:
		return offDNS{}, nil
	case DNSResolved:
		return newResolvedDNS(opts)
	case DNSResolvconf:
		return newResolvconfDNS(opts)
	case DNSFile:
		return newFileDNS(opts)
	}
	return nil, fmt.Errorf("DNS mode %q: want auto, resolved, resolvconf, file or off", opts.Mode)
}

// detectDNSMode picks resolved, resolvconf or file.
func detectDNSMode(opts DNSOptions) DNSMode {
	if resolvedRunning(opts) {
		return DNSResolved
	}
	if _, err := resolvconfPath(opts); err == nil {
		return DNSResolvconf
	}
	return DNSFile
}

type offDNS struct{}

func (offDNS) Apply(DNSSettings) error { return nil }
func (offDNS) Restore() error          { return nil }
func (offDNS) Mode() DNSMode           { return DNSOff }

// dnsRecord is what a mifsec process changed, kept in StateDir while the
// change is in place, so that the next start can undo it after a crash.
type dnsRecord struct {
	Mode  DNSMode `json:"mode"`
	Link  string  `json:"link"`
	PID   int     `json:"pid"`
	Start uint64  `json:"start"` // the process's start time (/proc/PID/stat), against PID reuse

	// DNSFile
	Path     string `json:"path,omitempty"`
	Original []byte `json:"original,omitempty"` // the file's bytes, unless it was a symbolic link
	Perm     uint32 `json:"perm,omitempty"`
	Symlink  string `json:"symlink,omitempty"` // the link's target when the file was a symbolic link
	Written  []byte `json:"written,omitempty"` // SHA-256 of what mifsec wrote

	// DNSResolvconf
	Record string `json:"record,omitempty"`
}

func recordPath(dir, link string) string { return filepath.Join(dir, "dns-"+link+".json") }

// writeRecord stores r durably (a temporary file renamed into place).
func writeRecord(dir string, r *dnsRecord) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("DNS state directory: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := recordPath(dir, r.Link)
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("DNS state record: %w", err)
	}
	return nil
}

func readRecord(path string) (*dnsRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r dnsRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("DNS state record %s: %w", path, err)
	}
	return &r, nil
}

// currentProcess returns this process's id and start time; tests replace
// it to stand for another process.
var currentProcess = func() (int, uint64) {
	pid := os.Getpid()
	start, _ := processStart(pid)
	return pid, start
}

// processStart reads field 22 (starttime) of /proc/PID/stat.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, errors.New("malformed /proc stat")
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive reports whether the process that wrote r still runs.
func (r *dnsRecord) alive() bool {
	if pid, start := currentProcess(); pid == r.PID && start == r.Start {
		return true
	}
	start, err := processStart(r.PID)
	return err == nil && start == r.Start
}

// recoverDNS undoes the changes recorded by mifsec processes that no longer
// run.
func recoverDNS(opts DNSOptions) error {
	paths, _ := filepath.Glob(filepath.Join(opts.StateDir, "dns-*.json"))
	for _, path := range paths {
		r, err := readRecord(path)
		if err != nil {
			opts.Logger.Warn("ignoring an unreadable DNS record", "file", path, "err", err)
			continue
		}
		if r.alive() {
			continue
		}
		opts.Logger.Info("undoing the DNS settings of a mifsec that stopped without cleaning up", "mode", r.Mode, "link", r.Link, "pid", r.PID)
		switch r.Mode {
		case DNSFile:
			if err := restoreFile(r, opts.Logger); err != nil {
				return fmt.Errorf("restoring %s after a crash (record %s): %w", r.Path, path, err)
			}
		case DNSResolvconf:
			prog, err := resolvconfPath(opts)
			if err != nil {
				// Uninstalled since: its records went with it.
				opts.Logger.Warn("cannot remove a resolvconf record left by a crash", "record", r.Record, "err", err)
				break
			}
			if err := runResolvconf(prog, nil, "-d", r.Record, "-f"); err != nil {
				return fmt.Errorf("removing resolvconf record %s after a crash: %w", r.Record, err)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing DNS record: %w", err)
		}
	}
	return nil
}

// writeFileAtomic writes b to a temporary file beside path and renames it
// into place.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".mifsec-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// resolverFile is the parts of a resolv.conf that the rewritten one keeps.
type resolverFile struct {
	servers []string
	search  []string
	options []string // whole "options ..." lines
}

func parseResolvConf(b []byte) resolverFile {
	var rf resolverFile
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				rf.servers = append(rf.servers, f[1])
			}
		case "search", "domain":
			rf.search = f[1:] // the last one wins (resolv.conf(5))
		case "options":
			rf.options = append(rf.options, strings.Join(f, " "))
		}
	}
	return rf
}

// maxNameservers is how many nameserver lines the resolver reads (MAXNS).
const maxNameservers = 3

// resolvConfFor renders the resolv.conf for s. A file cannot route by
// domain: with DefaultRoute the tunnel's servers are the only ones; for a
// split tunnel they come first and the original servers follow, so names
// the tunnel's servers do not know still resolve.
func resolvConfFor(link string, s DNSSettings, orig resolverFile) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mifsec for %s: the DNS settings of the VPN gateway.\n", link)
	b.WriteString("# mifsec puts the original back when it stops (or at its next start after a crash).\n")
	var servers []string
	for _, a := range s.Servers {
		servers = append(servers, a.String())
	}
	if !s.DefaultRoute {
		for _, o := range orig.servers {
			if !slices.Contains(servers, o) {
				servers = append(servers, o)
			}
		}
	}
	if len(servers) > maxNameservers {
		servers = servers[:maxNameservers]
	}
	for _, a := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	search := slices.Clone(s.Domains)
	for _, d := range orig.search {
		if !slices.Contains(search, d) {
			search = append(search, d)
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, o := range orig.options {
		b.WriteString(o + "\n")
	}
	return []byte(b.String())
}
