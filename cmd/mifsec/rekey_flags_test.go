package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
)

// TestRekeyDefaults: with no flags both ends rekey (Child SA 1 h, IKE SA
// 4 h), offer ESN first and 32-bit sequence numbers next; 0 opts out.
func TestRekeyDefaults(t *testing.T) {
	offersESN := func(t *testing.T, specs []ike.ProposalSpec) {
		t.Helper()
		for _, s := range specs {
			if !slices.Equal(s.ESN, []uint16{wire.ESN_YES, wire.ESN_NO}) {
				t.Errorf("ESP proposal %s offers ESN %v, want esn then noesn", s, s.ESN)
			}
		}
	}
	t.Run("connect", func(t *testing.T) {
		cfg, err := parseConnectArgs(t)
		if err != nil {
			t.Fatal(err)
		}
		if s := cfg.Session; s.ChildRekey != time.Hour || s.IKERekey != 4*time.Hour {
			t.Errorf("connect rekeys Child SA after %v and IKE SA after %v, want 1h and 4h", s.ChildRekey, s.IKERekey)
		}
		offersESN(t, cfg.Session.ESP)
		cfg, err = parseConnectArgs(t, "--child-rekey", "0", "--ike-rekey", "0")
		if err != nil || cfg.Session.ChildRekey != 0 || cfg.Session.IKERekey != 0 {
			t.Errorf("opting out: %v, %v, %v", cfg.Session.ChildRekey, cfg.Session.IKERekey, err)
		}
	})
	t.Run("gateway", func(t *testing.T) {
		cfg, err := parseGatewayArgs(t)
		if err != nil {
			t.Fatal(err)
		}
		if r := cfg.Responder; r.ChildRekey != time.Hour || r.IKERekey != 4*time.Hour {
			t.Errorf("gateway rekeys Child SAs after %v and IKE SAs after %v, want 1h and 4h", r.ChildRekey, r.IKERekey)
		}
		offersESN(t, cfg.Responder.ESP)
		cfg, err = parseGatewayArgs(t, "--ike-rekey", "30m", "--child-rekey", "0")
		if err != nil || cfg.Responder.IKERekey != 30*time.Minute || cfg.Responder.ChildRekey != 0 {
			t.Errorf("--ike-rekey 30m --child-rekey 0: %v, %v, %v", cfg.Responder.IKERekey, cfg.Responder.ChildRekey, err)
		}
	})
	for _, args := range [][]string{{"--ike-rekey", "-1s"}, {"--child-rekey", "-1m"}} {
		if _, err := parseGatewayArgs(t, args...); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("gateway %v: %v, want a refusal", args, err)
		}
		if _, err := parseConnectArgs(t, args...); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("connect %v: %v, want a refusal", args, err)
		}
	}
}
