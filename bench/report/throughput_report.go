package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
)

// PeerResult is one row of the report. Rates are nil when not measured.
type PeerResult struct {
	Name             string   `json:"name"`
	Version          string   `json:"version,omitempty"`
	Path             string   `json:"path,omitempty"`
	UpMbps           *float64 `json:"up_mbps"`
	DownMbps         *float64 `json:"down_mbps"`
	UpRetransmits    *int     `json:"up_retransmits"`
	DownRetransmits  *int     `json:"down_retransmits"`
	UpSeconds        float64  `json:"up_seconds,omitempty"`
	DownSeconds      float64  `json:"down_seconds,omitempty"`
	WallClockSeconds float64  `json:"wall_clock_seconds"`
	Skipped          string   `json:"skipped,omitempty"`
	Errors           []string `json:"errors,omitempty"`
}

// Ratio is mifsec's rate divided by a peer's, per direction; nil when one
// of the two was not measured.
type Ratio struct {
	Peer string   `json:"peer"`
	Up   *float64 `json:"up"`
	Down *float64 `json:"down"`
}

// MachineInfo identifies where a report was measured.
type MachineInfo struct {
	NumCPU    int    `json:"nproc"`
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
	GoVersion string `json:"go_version"`
	// LoadAverage is /proc/loadavg's 1-minute figure when the run started:
	// other work on the machine lowers every figure of the run.
	LoadAverage float64 `json:"load_average_1m"`
}

// ThroughputReport is the result of one run.
type ThroughputReport struct {
	Scenario        string       `json:"scenario"`
	StartedAt       time.Time    `json:"started_at"`
	DurationSeconds float64      `json:"duration_seconds"`
	Machine         MachineInfo  `json:"machine"`
	Peers           []PeerResult `json:"peers"`
	// MifsecRatios has one entry per other peer when mifsec is in the run.
	MifsecRatios []Ratio `json:"mifsec_ratios,omitempty"`
	// MifsecIKERatios is the same for mifsec-ike (IKEv2-keyed) when it is
	// in the run: its entry for mifsec compares it with static keys.
	MifsecIKERatios []Ratio `json:"mifsec_ike_ratios,omitempty"`
	// MifsecCBCRatios compare mifsec-aes256-sha256 with the other peers on
	// the same AES-CBC suite (strongswan-aes256-sha256).
	MifsecCBCRatios []Ratio `json:"mifsec_aes256_sha256_ratios,omitempty"`
}

// SetRatios fills the report's ratios from its peers.
func (r *ThroughputReport) SetRatios() {
	r.MifsecRatios, r.MifsecIKERatios = mifsecRatios(r.Peers), ratiosOf("mifsec-ike", r.Peers)
	r.MifsecCBCRatios = nil
	for _, ratio := range ratiosOf("mifsec-"+peers.CBCSuite, r.Peers) {
		if strings.HasSuffix(ratio.Peer, "-"+peers.CBCSuite) {
			r.MifsecCBCRatios = append(r.MifsecCBCRatios, ratio)
		}
	}
}

// mifsecRatios divides mifsec's rates by every other measured peer's.
func mifsecRatios(results []PeerResult) []Ratio { return ratiosOf("mifsec", results) }

// ratiosOf divides the named peer's rates by every other peer's.
func ratiosOf(name string, results []PeerResult) []Ratio {
	i := slices.IndexFunc(results, func(r PeerResult) bool { return r.Name == name })
	if i < 0 {
		return nil
	}
	mifsec := results[i]
	var ratios []Ratio
	for _, r := range results {
		if r.Name == name {
			continue
		}
		ratios = append(ratios, Ratio{Peer: r.Name, Up: ratio(mifsec.UpMbps, r.UpMbps), Down: ratio(mifsec.DownMbps, r.DownMbps)})
	}
	return ratios
}

func ratio(numerator, denominator *float64) *float64 {
	if numerator == nil || denominator == nil || *denominator <= 0 {
		return nil
	}
	r := RoundTo(*numerator / *denominator, 3)
	return &r
}

// WriteTable prints the report as an aligned table: Mbit/s and
// retransmits per direction, mifsec/peer per direction, and the version or
// why the peer has no figures.
func (r *ThroughputReport) WriteTable(w io.Writer) error {
	ratios := map[string]Ratio{}
	for _, ratio := range r.MifsecRatios {
		ratios[ratio.Peer] = ratio
	}
	rows := [][]string{{"peer", "up Mbit/s", "down Mbit/s", "retr up", "retr down", "mifsec/peer up", "mifsec/peer down", "note"}}
	for _, p := range r.Peers {
		note := p.Version
		switch {
		case p.Skipped != "":
			note = "skipped: " + p.Skipped
		case len(p.Errors) > 0:
			note = "error: " + p.Errors[0]
		}
		ratio := ratios[p.Name]
		rows = append(rows, []string{p.Name,
			FormatFloat(p.UpMbps, 1), FormatFloat(p.DownMbps, 1),
			formatInt(p.UpRetransmits), formatInt(p.DownRetransmits),
			FormatFloat(ratio.Up, 2), FormatFloat(ratio.Down, 2), oneLine(note, noteLimit)})
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		last := len(row) - 1
		for i, cell := range row {
			switch i {
			case 0:
				fmt.Fprintf(&b, "%-*s", widths[i], cell)
			case last:
				fmt.Fprintf(&b, "  %s", cell)
			default:
				fmt.Fprintf(&b, "  %*s", widths[i], cell)
			}
		}
		b.WriteString("\n")
	}
	if len(r.MifsecIKERatios) > 0 {
		b.WriteString("mifsec-ike/peer (up/down):")
		for i, ratio := range r.MifsecIKERatios {
			sep := map[bool]string{false: ",", true: ""}[i == 0]
			fmt.Fprintf(&b, "%s %s %s/%s", sep, ratio.Peer, FormatFloat(ratio.Up, 2), FormatFloat(ratio.Down, 2))
		}
		b.WriteString("\n")
	}
	if len(r.MifsecCBCRatios) > 0 {
		b.WriteString("mifsec-" + peers.CBCSuite + "/peer, same suite (up/down):")
		for i, ratio := range r.MifsecCBCRatios {
			sep := map[bool]string{false: ",", true: ""}[i == 0]
			fmt.Fprintf(&b, "%s %s %s/%s", sep, ratio.Peer, FormatFloat(ratio.Up, 2), FormatFloat(ratio.Down, 2))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%s; %.0fs per direction; %d CPUs, kernel %s, load average %.2f at start\n",
		r.Scenario, r.DurationSeconds, r.Machine.NumCPU, r.Machine.Kernel, r.Machine.LoadAverage)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report to path, creating its directory.
func (r *ThroughputReport) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// noteLimit bounds the note column; the JSON report has the whole text.
const noteLimit = 200

// oneLine collapses whitespace and newlines and cuts s to at most limit
// bytes.
func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		s = s[:limit-3] + "..."
	}
	return s
}

// FormatFloat is v with this many decimals, "-" when not measured.
func FormatFloat(v *float64, decimals int) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', decimals, 64)
}

func formatInt(v *int) string {
	if v == nil {
		return "-"
	}
	return strconv.Itoa(*v)
}

// RoundTo rounds v (not negative) to this many decimals.
func RoundTo(v float64, decimals int) float64 {
	scale := 1.0
	for range decimals {
		scale *= 10
	}
	return float64(int64(v*scale+0.5)) / scale
}

// ReadMachine describes this machine and its load now.
func ReadMachine() MachineInfo {
	info := MachineInfo{NumCPU: runtime.NumCPU(), Kernel: labnet.KernelRelease(), GoVersion: runtime.Version()}
	info.Hostname, _ = os.Hostname()
	if loadavg, err := labnet.ReadFile("/proc/loadavg"); err == nil {
		if fields := strings.Fields(loadavg); len(fields) > 0 {
			info.LoadAverage, _ = strconv.ParseFloat(fields[0], 64)
		}
	}
	if cpuinfo, err := labnet.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(cpuinfo) {
			if key, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(key) == "model name" {
				info.CPU = strings.TrimSpace(value)
				break
			}
		}
	}
	return info
}
