package tun

import (
	"runtime"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"mifsec0", ""},
		{"tun-a_b.c", ""},
		{"abcdefghijklmno", ""},
		{"", "empty"},
		{"abcdefghijklmnop", "16 bytes, at most 15"},
		{".", "invalid interface name"},
		{"..", "invalid interface name"},
		{"tun/0", "'/'"},
		{"tun 0", "' '"},
		{"tun:0", "':'"},
		{"tun%d", "'%'"},
		{"tün", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ValidateName(%q) = %v, want nil", tt.name, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("ValidateName(%q) = %v, want an error containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}

func TestConfigWithDefaults(t *testing.T) {
	tests := []struct {
		desc    string
		cfg     Config
		want    Config
		wantErr string
	}{
		{"zero", Config{}, Config{MTU: defaultMTU, Queues: min(runtime.NumCPU(), maxQueues)}, ""},
		{"explicit", Config{Name: "mifsec0", MTU: 1280, Queues: 3}, Config{Name: "mifsec0", MTU: 1280, Queues: 3}, ""},
		{"smallest MTU", Config{MTU: minMTU, Queues: 1}, Config{MTU: minMTU, Queues: 1}, ""},
		{"largest MTU and queues", Config{MTU: maxMTU, Queues: maxQueues}, Config{MTU: maxMTU, Queues: maxQueues}, ""},
		{"MTU too small", Config{MTU: minMTU - 1}, Config{}, "MTU 575 out of range 576..65535"},
		{"MTU too large", Config{MTU: maxMTU + 1}, Config{}, "MTU 65536 out of range"},
		{"negative MTU", Config{MTU: -1}, Config{}, "MTU -1 out of range"},
		{"too many queues", Config{Queues: maxQueues + 1}, Config{}, "queue count 257 out of range 1..256"},
		{"negative queues", Config{Queues: -2}, Config{}, "queue count -2 out of range"},
		{"transmit queue", Config{Queues: 1, TxQueueLen: 4096}, Config{MTU: defaultMTU, Queues: 1, TxQueueLen: 4096}, ""},
		{"negative transmit queue", Config{TxQueueLen: -1}, Config{}, "transmit queue length -1 out of range"},
		{"transmit queue too long", Config{TxQueueLen: maxTxQueueLen + 1}, Config{}, "transmit queue length 65537 out of range"},
		{"bad name", Config{Name: "a/b"}, Config{}, "invalid interface name"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := tt.cfg.withDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("withDefaults() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("withDefaults() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("withDefaults() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCreateRejectsBadConfig needs no privileges: Create validates before it
// touches the kernel.
func TestCreateRejectsBadConfig(t *testing.T) {
	tests := []struct {
		desc    string
		cfg     Config
		wantErr string
	}{
		{"long name", Config{Name: "a-very-long-interface-name"}, "creating tun a-very-long-interface-name: invalid interface name"},
		{"small MTU", Config{Name: "mifsec0", MTU: 100}, "creating tun mifsec0: MTU 100 out of range"},
		{"many queues", Config{Name: "mifsec0", Queues: 1000}, "creating tun mifsec0: queue count 1000 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			iface, err := Create(tt.cfg)
			if iface != nil {
				iface.Close()
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("Create(%+v) error = %v, want one starting %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}
