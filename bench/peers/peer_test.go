package peers

import (
	"strings"
	"testing"
)

// TestCBCPeers checks that the -aes256-sha256 peers run that suite, and
// that mifsec-ike-aes256-sha256 is a peer one may name.
func TestCBCPeers(t *testing.T) {
	m, err := NewPeer("mifsec-aes256-sha256", PeerOptions{})
	if err != nil || m.Name() != "mifsec-aes256-sha256" || m.(*mifsecPeer).algorithm() != "aes256-sha256" {
		t.Fatalf("mifsec peer %+v, %v", m, err)
	}
	s, err := NewPeer("strongswan-aes256-sha256", PeerOptions{})
	if err != nil || s.Name() != "strongswan-aes256-sha256" || s.(*strongswanPeer).esp != "aes256-sha256" {
		t.Fatalf("strongSwan peer %+v, %v", s, err)
	}
	i, err := NewPeer("mifsec-ike-aes256-sha256", PeerOptions{})
	if err != nil || i.Name() != "mifsec-ike-aes256-sha256" {
		t.Fatalf("mifsec-ike peer %+v, %v", i, err)
	}
	if ikeProposal, espProposal := i.(*mifsecIKEPeer).proposals(); ikeProposal != "aes256-sha256-modp2048" || espProposal != "aes256-sha256" {
		t.Errorf("mifsec-ike-aes256-sha256 runs IKE %s, ESP %s", ikeProposal, espProposal)
	}
	if _, err := NewPeer("mifsec-ike-aes128-sha1", PeerOptions{}); err == nil || !strings.Contains(err.Error(), "mifsec-ike-aes256-sha256") {
		t.Errorf("an unknown peer: %v", err)
	}
	var conf strings.Builder
	side := strongswanSide{IKEProposals: "aes256-sha256-modp2048", ESPProposals: "aes256-sha256"}
	if err := swanctlConf.Execute(&conf, side); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(conf.String(), "proposals = aes256-sha256-modp2048\n") || !strings.Contains(conf.String(), "esp_proposals = aes256-sha256\n") {
		t.Fatalf("swanctl.conf:\n%s", conf.String())
	}
}

func TestDropsSummary(t *testing.T) {
	for _, tc := range []struct {
		drops map[string]uint64
		want  string
	}{
		{nil, "none"},
		{map[string]uint64{}, "none"},
		{map[string]uint64{"too-old": 12, "replayed": 3}, "3 replayed, 12 too-old"},
	} {
		if got := dropsSummary(tc.drops); got != tc.want {
			t.Errorf("dropsSummary(%v) = %q, want %q", tc.drops, got, tc.want)
		}
	}
}
