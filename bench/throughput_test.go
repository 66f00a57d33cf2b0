package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/peers"
)

func TestThroughputPeersValidates(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ThroughputConfig
		wantErr string
	}{
		{"unknown peer", ThroughputConfig{Duration: time.Second, Peers: []string{"veth", "openvpn"}}, `unknown peer "openvpn"`},
		{"duplicate", ThroughputConfig{Duration: time.Second, Peers: []string{"veth", "veth"}}, "listed twice"},
		{"too short", ThroughputConfig{Duration: 500 * time.Millisecond, Peers: []string{"veth"}}, "too short"},
		{"none", ThroughputConfig{Duration: time.Second}, "no peers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := throughputPeers(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	list, err := throughputPeers(ThroughputConfig{Duration: time.Second, Peers: peers.PeerNames})
	if err != nil {
		t.Fatalf("default peers: %v", err)
	}
	for i, p := range list {
		if p.Name() != peers.PeerNames[i] {
			t.Errorf("peer %d is %q, want %q", i, p.Name(), peers.PeerNames[i])
		}
	}
}
