package ike

import (
	"context"
	"maps"
	"testing"
	"time"
)

// TestFailuresCounted: a refused IKE SA is counted by reason on both
// sides (by the gateway once per request it refused: the client sends
// IKE_SA_INIT again after an error); a client that guessed the wrong
// Diffie-Hellman group and then connects is no failure.
func TestFailuresCounted(t *testing.T) {
	psk := []byte("the gateway's key")
	for _, tc := range []struct {
		name           string
		clientPSK      []byte
		clientIKE      string
		wantConnectErr bool
		want           map[string]uint64
	}{
		{name: "wrong key", clientPSK: []byte("another key"), wantConnectErr: true,
			want: map[string]uint64{FailAuthentication: 1}},
		{name: "no common proposal", clientIKE: "aes128gcm16-prfsha384-modp2048", wantConnectErr: true,
			want: map[string]uint64{FailNoProposal: 1}},
		{name: "another group first", clientIKE: "aes256gcm16-prfsha256-ecp256-x25519", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := startResponder(t, ResponderConfig{PSK: psk})
			cfg := SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test")}
			if tc.clientPSK != nil {
				cfg.PSK = tc.clientPSK
			}
			if tc.clientIKE != "" {
				cfg.IKE, cfg.ESP = mustProposals(t, tc.clientIKE, "aes256gcm16-x25519")
			}
			s, _ := w.newClient(t, "192.0.2.40", cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Connect(ctx); (err != nil) != tc.wantConnectErr {
				t.Fatalf("Connect: %v, want an error: %v", err, tc.wantConnectErr)
			}
			if got := s.Status().Failures; !maps.Equal(got, tc.want) {
				t.Errorf("client's failures %v, want %v", got, tc.want)
			}
			got := w.r.Failures(ctx)
			if !maps.EqualFunc(got, tc.want, func(n, _ uint64) bool { return n >= 1 }) {
				t.Errorf("gateway's failures %v, want the reasons of %v", got, tc.want)
			}
		})
	}
}
