package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDescribeMissingNamesEveryToolInOneMessage(t *testing.T) {
	missing := missingTools([]tool{
		{"mifsec-no-such-tool-a", "pkg-a"},
		{"sh", "dash"}, // present everywhere
		{"mifsec-no-such-tool-b", "pkg-b"},
		{"mifsec-no-such-tool-c", "pkg-a"},
		{"mifsec-no-such-tool-a", "pkg-a"},
	})
	if len(missing) != 3 {
		t.Fatalf("missingTools = %v, want the three missing ones once each", missing)
	}
	got := describeMissing(missing)
	want := "mifsec-no-such-tool-a, mifsec-no-such-tool-b, mifsec-no-such-tool-c not found: apt-get install pkg-a pkg-b"
	if got != want {
		t.Errorf("describeMissing = %q, want %q", got, want)
	}
}

func TestJSONPart(t *testing.T) {
	if got := jsonPart("warning: something\n{\"a\":1}"); got != `{"a":1}` {
		t.Errorf("jsonPart = %q", got)
	}
	if got := jsonPart(`{"a":1}`); got != `{"a":1}` {
		t.Errorf("jsonPart = %q", got)
	}
}

func TestParseLinkCounters(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "ip-link-stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseLinkCounters(data)
	if err != nil {
		t.Fatalf("parseLinkCounters: %v", err)
	}
	if got.TxBytes == 0 || got.RxBytes == 0 {
		t.Errorf("counters = %+v, want both > 0", got)
	}
	synthetic := `[{"ifname":"mifsec0","stats64":{"rx":{"bytes":7,"packets":1},"tx":{"bytes":9,"packets":1}}}]`
	if got, err := parseLinkCounters([]byte(synthetic)); err != nil || got != (interfaceCounters{TxBytes: 9, RxBytes: 7}) {
		t.Errorf("parseLinkCounters = %+v, %v; want tx 9 rx 7", got, err)
	}
	for _, bad := range []string{`[]`, `[{"ifname":"x"}]`, `not json`} {
		if _, err := parseLinkCounters([]byte(bad)); err == nil {
			t.Errorf("parseLinkCounters(%q) succeeded, want an error", bad)
		}
	}
}

func TestFlowCrossed(t *testing.T) {
	tests := []struct {
		payload int64
		delta   uint64
		want    bool
	}{
		{payload: 1000, delta: 1100, want: true},
		{payload: 1000, delta: 900, want: true},
		{payload: 1000, delta: 500, want: false},
		{payload: 1_000_000_000, delta: 12_000, want: false},
	}
	for _, tt := range tests {
		if got := flowCrossed(tt.payload, tt.delta); got != tt.want {
			t.Errorf("flowCrossed(%d, %d) = %v, want %v", tt.payload, tt.delta, got, tt.want)
		}
	}
}

func TestCheckPrerequisitesNamesAllMissingAtOnce(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // nothing is found
	sc := reportScenario(t)
	sc.Uplinks[1].NAT = true
	peers := []labPeer{&mifsecLabPeer{}, &wireguardLabPeer{}, &mptcpLabPeer{}}
	var log bytes.Buffer
	err := checkPrerequisites(sc, peers, true, &log)
	if err == nil {
		t.Fatal("no error with nothing in PATH")
	}
	want := "ip, nft, wg not found: apt-get install iproute2 nftables wireguard-tools"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	// With the lab's own tools present, a default peer that lacks its
	// tools is reported once and skipped, not an error.
	dir := t.TempDir()
	for _, name := range []string{"ip", "nft"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	log.Reset()
	if err := checkPrerequisites(sc, peers, false, &log); err != nil {
		t.Fatalf("default peers: %v", err)
	}
	if got := log.String(); !strings.Contains(got, "wg not found: apt-get install wireguard-tools; without them wireguard-go will be skipped") {
		t.Errorf("log %q", got)
	}
}
