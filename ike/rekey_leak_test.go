package ike

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/mifsec/mifsec/internal/testenv"
)

// weakGateway is a gateway handler that holds the Child SAs it is given
// only weakly, so that a test can tell whether anything else keeps them.
type weakGateway struct {
	mu      sync.Mutex
	first   weak.Pointer[ChildSA]
	removed int
}

func (h *weakGateway) InstallChild(_ *RemoteClient, c *ChildSA, _ bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.first == (weak.Pointer[ChildSA]{}) {
		h.first = weak.Make(c)
	}
	return nil
}
func (h *weakGateway) SwitchOutbound(*RemoteClient, *ChildSA) {}
func (h *weakGateway) RemoveChild(*RemoteClient, *ChildSA) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removed++
}

// TestRekeysForgetReplacedSAs: an SA that a rekey replaced and that was
// deleted is garbage on both ends. Each new SA remembers which one it
// replaced (to settle collisions); remembered by pointer, every SA ever
// rekeyed stayed reachable from the current one, and a gateway under a
// Child SA rekey every 10 s per client grew by about 1 MB a minute per
// 100 clients.
func TestRekeysForgetReplacedSAs(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	gh := &weakGateway{}
	w := startResponderWith(t, ResponderConfig{PSK: psk}, gh)
	s, _ := w.newClient(t, "192.0.2.10", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test")})
	connect(t, s, true)
	firstIKE := weak.Make(s.sa)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const rekeys = 3
	for range rekeys {
		if err := s.rekeyChild(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.rekeyIKE(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The client deletes what it replaced; wait for the gateway to hear it.
	testenv.WaitUntil(t, 5*time.Second, "the gateway removes the replaced Child SAs", func() bool {
		gh.mu.Lock()
		defer gh.mu.Unlock()
		return gh.removed >= rekeys
	})
	runtime.GC()
	runtime.GC()
	gh.mu.Lock()
	first := gh.first.Value()
	gh.mu.Unlock()
	if first != nil {
		t.Errorf("the gateway's first Child SA (in SPI %#x) is still reachable after %d rekeys", first.InSPI, rekeys)
	}
	if sa := firstIKE.Value(); sa != nil {
		t.Errorf("the client's first IKE SA (%016x) is still reachable after %d rekeys", sa.spiI, rekeys)
	}
	runtime.KeepAlive(s)
}
