package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestHeapProfileFlag: --heapprofile names the file SIGUSR2 writes, and
// what writeHeapProfile writes is a gzip-compressed profile (pprof's
// format), replacing what the file held.
func TestHeapProfileFlag(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate; heapProfile.Store(nil) }(runtime.MemProfileRate)
	path := filepath.Join(t.TempDir(), "gateway.heap")
	if err := newApp().Run([]string{"mifsec", "--heapprofile", path, "version"}); err != nil {
		t.Fatalf("mifsec --heapprofile %s version: %v", path, err)
	}
	if got := heapProfile.Load(); got == nil || *got != path {
		t.Fatalf("--heapprofile set %v, want %s", got, path)
	}
	if err := os.WriteFile(path, []byte("an older profile"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeHeapProfile(path); err != nil {
		t.Fatalf("writing the heap profile: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) || len(b) < 100 {
		t.Fatalf("heap profile of %d bytes starting %q; want a gzip stream", len(b), b[:min(len(b), 16)])
	}
	if err := writeHeapProfile(filepath.Join(t.TempDir(), "no", "such", "dir")); err == nil {
		t.Fatal("writing to a missing directory succeeded")
	}
}
