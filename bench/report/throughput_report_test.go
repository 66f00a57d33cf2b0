package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func sampleResults() []PeerResult {
	return []PeerResult{
		{Name: "mifsec", Version: "mifsec version dev", UpMbps: ptr(1200.0), DownMbps: ptr(900.0), UpRetransmits: ptr(3), DownRetransmits: ptr(0)},
		{Name: "wireguard-go", Version: "wireguard-go v0.0.20250522", UpMbps: ptr(1500.0), DownMbps: ptr(1800.0), UpRetransmits: ptr(12), DownRetransmits: ptr(7)},
		{Name: "strongswan", Skipped: "/usr/lib/ipsec/charon not found: apt-get install strongswan-charon"},
		{Name: "veth", Version: "kernel 6.1.0", UpMbps: ptr(8600.0), DownMbps: ptr(0.0), UpRetransmits: ptr(0), DownRetransmits: ptr(0)},
	}
}

func TestMifsecRatios(t *testing.T) {
	ratios := mifsecRatios(sampleResults())
	if len(ratios) != 3 {
		t.Fatalf("got %d ratios, want 3 (one per other peer): %+v", len(ratios), ratios)
	}
	check := func(name string, got *float64, want *float64) {
		t.Helper()
		switch {
		case want == nil && got != nil:
			t.Errorf("%s = %v, want none", name, *got)
		case want != nil && got == nil:
			t.Errorf("%s = none, want %v", name, *want)
		case want != nil && *got != *want:
			t.Errorf("%s = %v, want %v", name, *got, *want)
		}
	}
	check("wireguard-go up", ratios[0].Up, ptr(0.8))
	check("wireguard-go down", ratios[0].Down, ptr(0.5))
	check("strongswan up (skipped)", ratios[1].Up, nil)
	check("veth up", ratios[2].Up, ptr(0.14))
	check("veth down (zero rate)", ratios[2].Down, nil)

	withoutMifsec := sampleResults()[1:]
	if got := mifsecRatios(withoutMifsec); got != nil {
		t.Errorf("ratios without mifsec = %+v, want none", got)
	}
}

func TestWriteTable(t *testing.T) {
	report := &ThroughputReport{
		Scenario:        "scenario",
		DurationSeconds: 10,
		Machine:         MachineInfo{NumCPU: 2, Kernel: "6.1.0", LoadAverage: 0.25},
		Peers:           sampleResults(),
	}
	report.MifsecRatios = mifsecRatios(report.Peers)
	var b strings.Builder
	if err := report.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := `peer          up Mbit/s  down Mbit/s  retr up  retr down  mifsec/peer up  mifsec/peer down  note
mifsec           1200.0        900.0        3          0               -                 -  mifsec version dev
wireguard-go     1500.0       1800.0       12          7            0.80              0.50  wireguard-go v0.0.20250522
strongswan            -            -        -          -               -                 -  skipped: /usr/lib/ipsec/charon not found: apt-get install strongswan-charon
veth             8600.0          0.0        0          0            0.14                 -  kernel 6.1.0
scenario; 10s per direction; 2 CPUs, kernel 6.1.0, load average 0.25 at start
`
	if got := b.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteTableKeepsNotesOnOneLine(t *testing.T) {
	long := "no ping reply\nprocess output " + strings.Repeat("x", 300)
	report := &ThroughputReport{Peers: []PeerResult{{Name: "mifsec", Errors: []string{long}}}}
	var b strings.Builder
	if err := report.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table has %d lines, want header, one row, footer:\n%s", len(lines), b.String())
	}
	if !strings.Contains(lines[1], "error: no ping reply process output xxx") || !strings.HasSuffix(lines[1], "...") {
		t.Errorf("row = %q, want the error on one line, cut with ...", lines[1])
	}
}

func TestWriteJSON(t *testing.T) {
	report := &ThroughputReport{
		Scenario:        "scenario",
		StartedAt:       time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		DurationSeconds: 10,
		Machine:         ReadMachine(),
		Peers:           sampleResults(),
	}
	report.MifsecRatios = mifsecRatios(report.Peers)
	path := filepath.Join(t.TempDir(), "sub", "throughput.json")
	if err := report.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Machine struct {
			NumCPU int    `json:"nproc"`
			Kernel string `json:"kernel"`
		} `json:"machine"`
		Peers []struct {
			Name          string   `json:"name"`
			UpMbps        *float64 `json:"up_mbps"`
			UpRetransmits *int     `json:"up_retransmits"`
			Skipped       string   `json:"skipped"`
		} `json:"peers"`
		MifsecRatios []Ratio `json:"mifsec_ratios"`
	}
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatalf("report is not valid JSON: %v", err)
	}
	if decoded.Machine.NumCPU < 1 || decoded.Machine.Kernel == "" {
		t.Errorf("machine info missing: %+v", decoded.Machine)
	}
	if len(decoded.Peers) != 4 || decoded.Peers[1].UpMbps == nil || *decoded.Peers[1].UpMbps != 1500 ||
		*decoded.Peers[1].UpRetransmits != 12 {
		t.Errorf("peers decoded as %+v", decoded.Peers)
	}
	if decoded.Peers[2].UpMbps != nil || decoded.Peers[2].Skipped == "" {
		t.Errorf("skipped peer decoded as %+v, want null rate and a reason", decoded.Peers[2])
	}
	if len(decoded.MifsecRatios) != 3 || *decoded.MifsecRatios[0].Up != 0.8 {
		t.Errorf("ratios decoded as %+v", decoded.MifsecRatios)
	}
}

// TestCBCRatios checks the same-suite ratio of the AES-CBC rows: mifsec on
// aes256-sha256 against strongSwan on aes256-sha256 only, and its line in
// the table.
func TestCBCRatios(t *testing.T) {
	report := &ThroughputReport{Scenario: "scenario", DurationSeconds: 10, Peers: []PeerResult{
		{Name: "mifsec", UpMbps: ptr(1000.0), DownMbps: ptr(1000.0)},
		{Name: "strongswan", UpMbps: ptr(400.0), DownMbps: ptr(400.0)},
		{Name: "mifsec-aes256-sha256", UpMbps: ptr(600.0), DownMbps: ptr(500.0)},
		{Name: "strongswan-aes256-sha256", UpMbps: ptr(300.0), DownMbps: ptr(250.0)},
	}}
	report.SetRatios()
	if len(report.MifsecCBCRatios) != 1 || report.MifsecCBCRatios[0].Peer != "strongswan-aes256-sha256" ||
		*report.MifsecCBCRatios[0].Up != 2 || *report.MifsecCBCRatios[0].Down != 2 {
		t.Fatalf("CBC ratios %+v", report.MifsecCBCRatios)
	}
	var b strings.Builder
	if err := report.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "mifsec-aes256-sha256/peer, same suite (up/down): strongswan-aes256-sha256 2.00/2.00\n") {
		t.Fatalf("table has no same-suite line:\n%s", b.String())
	}
}
