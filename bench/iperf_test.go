package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseIperfJSON(t *testing.T) {
	tests := []struct {
		file        string
		wantReverse bool
		wantRetrans int
		wantMbps    float64
	}{
		{file: "iperf3-tcp-up.json", wantReverse: false, wantRetrans: 6796, wantMbps: 12637.432047917074},
		{file: "iperf3-tcp-reverse.json", wantReverse: true, wantRetrans: 6491, wantMbps: 12617.853329126728},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseIperfJSON(data)
			if err != nil {
				t.Fatalf("ParseIperfJSON: %v", err)
			}
			if got.Reverse != tt.wantReverse {
				t.Errorf("Reverse = %v, want %v", got.Reverse, tt.wantReverse)
			}
			if got.Retransmits != tt.wantRetrans {
				t.Errorf("Retransmits = %d, want %d", got.Retransmits, tt.wantRetrans)
			}
			if diff := got.Mbps() - tt.wantMbps; diff > 1e-6 || diff < -1e-6 {
				t.Errorf("Mbps = %v, want %v (sum_received)", got.Mbps(), tt.wantMbps)
			}
			if got.SentBitsPerSecond <= 0 || got.Seconds < 1.9 || got.Seconds > 2.1 {
				t.Errorf("sent %v bit/s over %v s, want > 0 over about 2 s", got.SentBitsPerSecond, got.Seconds)
			}
		})
	}
}

func TestParseIperfJSONErrors(t *testing.T) {
	connectError, err := os.ReadFile(filepath.Join("testdata", "iperf3-connect-error.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, input, wantErr string
	}{
		{"iperf3 error field", string(connectError), "iperf3: unable to connect to server: Connection timed out"},
		{"not JSON", "iperf3: error - unable to connect", "parse iperf3 JSON output"},
		{"UDP test", `{"start":{"test_start":{"protocol":"UDP"}},"end":{"sum":{}}}`, `protocol "UDP", want TCP`},
		{"no end sums", `{"start":{"test_start":{"protocol":"TCP"}},"end":{}}`, "no end.sum_received"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIperfJSON([]byte(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseIperfJSON error = %v, want one containing %q", err, tt.wantErr)
			}
		})
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
