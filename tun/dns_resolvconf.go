package tun

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// resolvconfDNS hands the settings to resolvconf as the record
// "LINK.inet" (resolvconf -a) and takes it back (resolvconf -d). Where the
// record lands among the host's others is resolvconf's choice (Debian's
// /etc/resolvconf/interface-order); it has no split DNS, so the domains
// become search domains.
type resolvconfDNS struct {
	opts DNSOptions
	prog string
	log  *slog.Logger

	mu      sync.Mutex
	applied bool
}

func resolvconfPath(opts DNSOptions) (string, error) {
	if opts.Resolvconf != "" {
		return opts.Resolvconf, nil
	}
	p, err := exec.LookPath("resolvconf")
	if err != nil {
		return "", fmt.Errorf("resolvconf is not installed")
	}
	return p, nil
}

func newResolvconfDNS(opts DNSOptions) (*resolvconfDNS, error) {
	prog, err := resolvconfPath(opts)
	if err != nil {
		return nil, fmt.Errorf("DNS mode resolvconf: %w", err)
	}
	return &resolvconfDNS{opts: opts, prog: prog, log: opts.Logger}, nil
}

func (d *resolvconfDNS) Mode() DNSMode  { return DNSResolvconf }
func (d *resolvconfDNS) record() string { return d.opts.Link + ".inet" }

func (d *resolvconfDNS) Apply(s DNSSettings) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	pid, start := currentProcess()
	r := &dnsRecord{Mode: DNSResolvconf, Link: d.opts.Link, PID: pid, Start: start, Record: d.record()}
	if err := writeRecord(d.opts.StateDir, r); err != nil {
		return err
	}
	var b strings.Builder
	for _, a := range s.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	if len(s.Domains) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(s.Domains, " "))
	}
	if err := runResolvconf(d.prog, strings.NewReader(b.String()), "-a", d.record()); err != nil {
		return err
	}
	d.applied = true
	d.log.Info("DNS settings applied", "mode", DNSResolvconf, "record", d.record(), "servers", s.Servers, "domains", s.Domains)
	return nil
}

func (d *resolvconfDNS) Restore() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.applied {
		return nil
	}
	if err := runResolvconf(d.prog, nil, "-d", d.record(), "-f"); err != nil {
		return err
	}
	d.applied = false
	if err := os.Remove(recordPath(d.opts.StateDir, d.opts.Link)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("DNS: removing the record: %w", err)
	}
	return nil
}

func runResolvconf(prog string, stdin io.Reader, args ...string) error {
	cmd := exec.Command(prog, args...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("DNS: %s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
