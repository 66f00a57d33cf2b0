package ike_test

import (
	"testing"

	. "github.com/mifsec/mifsec/ike" //nolint:revive // the tests were written inside package ike
	"github.com/mifsec/mifsec/internal/testpki"
)

func TestResponderEAP(t *testing.T) {
	p := testPKI(t, testpki.Options{KeyType: testpki.KeyRSA3072, GatewayName: "gw.test"})
	RunResponderEAP(t, trustStoreOf(t, p), CertifiedPeer{ID: p.Gateway.Identity, Key: p.Gateway.Key, Cert: p.Gateway.Certificate})
}

func TestResponderRADIUSSilent(t *testing.T) {
	p := testPKI(t, testpki.Options{KeyType: testpki.KeyECDSAP256, GatewayName: "gw.test"})
	RunResponderRADIUSSilent(t, trustStoreOf(t, p), CertifiedPeer{ID: p.Gateway.Identity, Key: p.Gateway.Key, Cert: p.Gateway.Certificate})
}

func TestResponderEAPSharedPoolBusy(t *testing.T) {
	p := testPKI(t, testpki.Options{KeyType: testpki.KeyECDSAP256, GatewayName: "gw.test"})
	RunResponderEAPSharedPoolBusy(t, trustStoreOf(t, p), CertifiedPeer{ID: p.Gateway.Identity, Key: p.Gateway.Key, Cert: p.Gateway.Certificate})
}
