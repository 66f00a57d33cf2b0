package ike

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testenv"
)

func allZero(bs ...[]byte) bool {
	for _, b := range bs {
		if len(b) == 0 || !bytes.Equal(b, make([]byte, len(b))) {
			return false
		}
	}
	return true
}

func ikeKeyMaterial(sa *ikeSA) [][]byte {
	k := sa.keys
	var out [][]byte
	// AEAD suites have no integrity keys, and an established IKE SA no
	// SK_pi and SK_pr (forgetAuthKeys).
	for _, b := range [][]byte{k.SKd(), k.SKei(), k.SKer(), k.SKpi(), k.SKpr(), k.SKai(), k.SKar()} {
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// TestSessionWipesKeysOfSAsThatGo: the client's keys of a Child SA are
// zeroed once a rekey replaced and removed it, the keys of an IKE SA once
// a rekey replaced and deleted it, and everything at teardown; the SAs in
// use keep theirs and keep working. On b74fb06 nothing was ever wiped.
func TestSessionWipesKeysOfSAsThatGo(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	w, _ := startResponder(t, ResponderConfig{PSK: psk})
	s, ch := w.newClient(t, "192.0.2.40", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test")})
	connect(t, s, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	firstChild, firstIKE := ch.last(), s.sa
	firstIn, firstOut := firstChild.InKey, firstChild.OutKey // Wipe zeroes these and drops them
	if allZero(firstIn) || allZero(ikeKeyMaterial(firstIKE)...) {
		t.Fatal("keys zero before anything was removed")
	}
	if err := s.rekeyChild(ctx); err != nil {
		t.Fatal(err)
	}
	if !allZero(firstIn, firstOut) || firstChild.InKey != nil || firstChild.OutKey != nil {
		t.Error("the replaced Child SA's keys were not wiped and dropped")
	}
	secondChild := ch.last()
	if secondChild == firstChild || allZero(secondChild.InKey) || allZero(secondChild.OutKey) {
		t.Fatal("the new Child SA's keys are zero")
	}
	if err := s.rekeyIKE(ctx); err != nil {
		t.Fatal(err)
	}
	for i, k := range ikeKeyMaterial(firstIKE) {
		if !allZero(k) {
			t.Errorf("key %d of the rekeyed IKE SA was not wiped", i)
		}
	}
	// The new IKE SA still works: a liveness check and a Child SA rekey,
	// whose keys come from the new SK_d.
	if _, err := s.exchange(ctx, s.sa, wire.INFORMATIONAL, nil, s.cfg.Retransmit); err != nil {
		t.Fatal(err)
	}
	if err := s.rekeyChild(ctx); err != nil {
		t.Fatal(err)
	}
	last, current := ch.last(), s.sa
	lastIn, lastOut := last.InKey, last.OutKey
	s.teardown()
	if !allZero(lastIn, lastOut) || last.InKey != nil || !allZero(ikeKeyMaterial(current)...) {
		t.Error("teardown left keys behind")
	}
}

// TestResponderWipesKeysOfSAsThatGo: the gateway zeroes an IKE SA's keys
// once the client rekeyed and deleted it, and once the client left.
func TestResponderWipesKeysOfSAsThatGo(t *testing.T) {
	psk := []byte("a pre-shared key of some length")
	w, _ := startResponder(t, ResponderConfig{PSK: psk})
	s, _ := w.newClient(t, "192.0.2.41", SessionConfig{PSK: psk, RemoteID: mustID(t, "gw.mifsec.test")})
	connect(t, s, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gatewaySA := func() *rSA {
		var sa *rSA
		w.r.do(ctx, func() {
			for _, c := range w.r.clients {
				sa = c.sa
			}
		})
		return sa
	}
	first := gatewaySA()
	if first == nil || allZero(ikeKeyMaterial(first.ikeSA)...) {
		t.Fatal("no gateway IKE SA with keys")
	}
	if err := s.rekeyIKE(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 5*time.Second, "the gateway to wipe the replaced IKE SA's keys", func() bool {
		var zero bool
		w.r.do(ctx, func() { zero = allZero(ikeKeyMaterial(first.ikeSA)...) })
		return zero
	})
	second := gatewaySA()
	if second == first || allZero(ikeKeyMaterial(second.ikeSA)...) {
		t.Fatal("the gateway's new IKE SA has no keys")
	}
	s.shutdown() // the Delete, then the local teardown
	testenv.WaitUntil(t, 5*time.Second, "the gateway to wipe the deleted IKE SA's keys", func() bool {
		var zero bool
		w.r.do(ctx, func() { zero = allZero(ikeKeyMaterial(second.ikeSA)...) })
		return zero
	})
}
