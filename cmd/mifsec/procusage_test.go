package main

import (
	"os"
	"testing"
	"time"
)

// TestReadProcessUsage reads this process: it holds memory, and the CPU
// time it reports grows when it computes.
func TestReadProcessUsage(t *testing.T) {
	before, err := readProcessUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.RSSkB <= 0 || before.PsskB <= 0 {
		t.Fatalf("usage %+v: no resident memory", before)
	}
	x := uint64(1)
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
		x = x*6364136223846793005 + 1442695040888963407
	}
	after, err := readProcessUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU <= before.CPU {
		t.Fatalf("CPU %v after 100 ms of computing, %v before (x %d)", after.CPU, before.CPU, x)
	}
	if _, err := readProcessUsage(-1); err == nil {
		t.Fatal("reading pid -1 succeeded")
	}
}
