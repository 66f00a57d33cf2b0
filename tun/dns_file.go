package tun

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// fileDNS rewrites a resolv.conf. Before the first write it records the
// original (its bytes and mode, or the target of a symbolic link) in the
// state directory; Restore puts it back byte for byte, unless someone else
// replaced the file since, and removes the record.
type fileDNS struct {
	opts DNSOptions
	log  *slog.Logger

	mu     sync.Mutex
	record *dnsRecord   // while the file is rewritten
	orig   resolverFile // what the original file said
}

func newFileDNS(opts DNSOptions) (*fileDNS, error) {
	// Another running mifsec that rewrote the same file would get back
	// this one's version on its exit: refuse instead.
	paths, _ := filepath.Glob(filepath.Join(opts.StateDir, "dns-*.json"))
	for _, path := range paths {
		r, err := readRecord(path)
		if err != nil || r.Mode != DNSFile || r.Link == opts.Link || !r.alive() {
			continue
		}
		if sameFile(r.Path, opts.ResolvConf) {
			return nil, fmt.Errorf("DNS: the mifsec on %s (pid %d) manages %s already: use --dns off (or resolved) for this one",
				r.Link, r.PID, opts.ResolvConf)
		}
	}
	return &fileDNS{opts: opts, log: opts.Logger}, nil
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

func (d *fileDNS) Mode() DNSMode { return DNSFile }

// capture reads the original file into a new record.
func (d *fileDNS) capture() (*dnsRecord, error) {
	path := d.opts.ResolvConf
	pid, start := currentProcess()
	r := &dnsRecord{Mode: DNSFile, Link: d.opts.Link, PID: pid, Start: start, Path: path, Perm: 0o644}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("DNS: %s does not exist (use --dns off, or another mode)", path)
	case err != nil:
		return nil, fmt.Errorf("DNS: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		if r.Symlink, err = os.Readlink(path); err != nil {
			return nil, fmt.Errorf("DNS: %w", err)
		}
		b, _ := os.ReadFile(path) // through the link; a dangling one reads as empty
		d.orig = parseResolvConf(b)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("DNS: %s is not a regular file", path)
	default:
		if r.Original, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("DNS: %w", err)
		}
		if r.Original == nil {
			r.Original = []byte{}
		}
		r.Perm = uint32(fi.Mode().Perm())
		d.orig = parseResolvConf(r.Original)
	}
	return r, nil
}

func (d *fileDNS) Apply(s DNSSettings) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.record
	if r == nil {
		var err error
		if r, err = d.capture(); err != nil {
			return err
		}
	}
	content := resolvConfFor(d.opts.Link, s, d.orig)
	sum := sha256.Sum256(content)
	r.Written = sum[:]
	// The record is on disk before the file changes: a crash between the
	// two leaves a record whose hash the file does not match, which the
	// next start drops without touching the file.
	if err := writeRecord(d.opts.StateDir, r); err != nil {
		return err
	}
	d.record = r
	if err := replaceFile(r.Path, content, fs.FileMode(r.Perm)); err != nil {
		return fmt.Errorf("DNS: writing %s: %w", r.Path, err)
	}
	d.log.Info("DNS settings applied", "mode", DNSFile, "file", r.Path, "servers", s.Servers, "domains", s.Domains, "default_route", s.DefaultRoute)
	return nil
}

func (d *fileDNS) Restore() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.record == nil {
		return nil
	}
	if err := restoreFile(d.record, d.log); err != nil {
		return err
	}
	d.record = nil
	if err := os.Remove(recordPath(d.opts.StateDir, d.opts.Link)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("DNS: removing the record: %w", err)
	}
	return nil
}

// restoreFile puts r's original back when the file still holds what mifsec
// wrote; a file someone else rewrote since is left as it is.
func restoreFile(r *dnsRecord, log *slog.Logger) error {
	cur, err := os.ReadFile(r.Path)
	if fi, lerr := os.Lstat(r.Path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		err = errors.New("a symbolic link") // not the file mifsec wrote
	}
	sum := sha256.Sum256(cur)
	if err != nil || !bytes.Equal(sum[:], r.Written) {
		log.Warn("DNS: the resolver file changed since mifsec wrote it: leaving it as it is", "file", r.Path)
		return nil
	}
	if r.Symlink != "" {
		tmp := r.Path + ".mifsec-link"
		os.Remove(tmp)
		if err := os.Symlink(r.Symlink, tmp); err != nil {
			return fmt.Errorf("DNS: restoring the link %s -> %s: %w", r.Path, r.Symlink, err)
		}
		if err := os.Rename(tmp, r.Path); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("DNS: restoring the link %s -> %s: %w", r.Path, r.Symlink, err)
		}
	} else if err := replaceFile(r.Path, r.Original, fs.FileMode(r.Perm)); err != nil {
		return fmt.Errorf("DNS: restoring %s: %w", r.Path, err)
	}
	log.Info("DNS: original resolver file restored", "file", r.Path)
	return nil
}

// replaceFile makes path a regular file holding b: a temporary file renamed
// over it (which also replaces a symbolic link rather than its target), or,
// where path is a mount point (a container's or `ip netns exec`'s bind
// mount) and cannot be renamed over, the file rewritten in place.
func replaceFile(path string, b []byte, perm fs.FileMode) error {
	err := writeFileAtomic(path, b, perm)
	if err == nil || !(errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EROFS)) {
		return err
	}
	f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}
