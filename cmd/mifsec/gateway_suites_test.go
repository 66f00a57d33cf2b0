package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/strongswan"
)

// nativeClientOffers are the proposals the IKEv2 clients built into
// operating systems send by default, as strongSwan proposal strings
// (3DES, which mifsec does not implement, stands where Windows puts it).
var nativeClientOffers = []struct {
	name     string
	ike, esp string
	// wantIKE and wantESP are what the gateway's defaults choose.
	wantIKE, wantESP string
	weak             []string
}{
	{
		name:    "windows-aes256-sha1-modp1024",
		ike:     "aes256-sha1-modp1024",
		esp:     "aes256-sha1,aes128-sha1",
		wantIKE: "aes256-sha1-prfsha1-modp1024", wantESP: "aes256-sha1",
		weak: []string{"ike:modp1024", "ike:prfsha1", "ike:sha1", "esp:sha1"},
	},
	{
		name:    "windows-default-list",
		ike:     "3des-sha1-modp1024,aes256-sha1-modp1024,3des-sha256-modp1024,aes256-sha256-modp1024,3des-sha384-modp1024,aes256-sha384-modp1024",
		esp:     "aes256-sha1,aes128-sha1,3des-sha1",
		wantIKE: "aes256-sha256-prfsha256-modp1024", wantESP: "aes256-sha1",
		weak: []string{"ike:modp1024", "esp:sha1"},
	},
	{
		name:    "macos-modp2048",
		ike:     "aes256-sha256-modp2048",
		esp:     "aes256-sha256",
		wantIKE: "aes256-sha256-prfsha256-modp2048", wantESP: "aes256-sha256",
	},
	{
		name:    "macos-ecp256",
		ike:     "aes256-sha256-ecp256",
		esp:     "aes256-sha256",
		wantIKE: "aes256-sha256-prfsha256-ecp256", wantESP: "aes256-sha256",
	},
	{
		name:    "strongswan-android-defaults",
		ike:     "default",
		esp:     "default",
		wantIKE: "aes256gcm16-prfsha256-x25519", wantESP: "aes256gcm16",
	},
}

// offerFromStrongSwan renders a strongSwan proposal string as the SA
// payload proposals a client sends, with a stand-in transform for 3DES
// (ENCR_3DES, 3), which mifsec cannot parse from the string.
func offerFromStrongSwan(t *testing.T, proto wire.ProtocolID, list string) []wire.Proposal {
	t.Helper()
	var out []wire.Proposal
	spi := []byte{1, 2, 3, 4}
	if proto == wire.ProtoIKE {
		spi = nil
	}
	for i, item := range strings.Split(list, ",") {
		des := strings.HasPrefix(item, "3des-")
		if des {
			item = "aes256-" + strings.TrimPrefix(item, "3des-")
		}
		var specs []ike.ProposalSpec
		var err error
		if proto == wire.ProtoIKE {
			specs, err = ike.ParseIKEProposals(item)
		} else {
			specs, err = ike.ParseESPProposals(item)
		}
		if err != nil {
			t.Fatal(err)
		}
		p := specs[0].Proposal(uint8(i+1), spi)
		if des {
			p.Transforms[0] = wire.Transform{Type: wire.TransformENCR, ID: 3}
		}
		out = append(out, p)
	}
	return out
}

// TestGatewayDefaultsChooseForNativeClients runs the gateway's default
// proposal lists against the offers of built-in clients: each gets a
// suite, AES-GCM when offered, and the weak ones are named.
func TestGatewayDefaultsChooseForNativeClients(t *testing.T) {
	ikeSpecs, err := ike.ParseIKEProposals(defaultGatewayIKEProposals)
	if err != nil {
		t.Fatal(err)
	}
	espSpecs, err := ike.ParseESPProposals(defaultGatewayESPProposals)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := espAlgorithms(espSpecs); err != nil {
		t.Fatalf("default ESP list names an algorithm the data plane lacks: %v", err)
	}
	for _, c := range nativeClientOffers {
		if c.ike == "default" {
			continue // strongSwan's own defaults: only the interop test knows them
		}
		t.Run(c.name, func(t *testing.T) {
			ikeSel, ok := ike.SelectProposal(offerFromStrongSwan(t, wire.ProtoIKE, c.ike), ikeSpecs)
			if !ok || ikeSel.Suite.String() != c.wantIKE {
				t.Fatalf("IKE: chose %v (%v), want %s", ikeSel.Suite, ok, c.wantIKE)
			}
			espSel, ok := ike.SelectProposalWith(offerFromStrongSwan(t, wire.ProtoESP, c.esp), espSpecs, ike.SelectOptions{IgnoreDH: true})
			if !ok || espSel.Suite.DataPlaneName() != c.wantESP {
				t.Fatalf("ESP: chose %v (%v), want %s", espSel.Suite, ok, c.wantESP)
			}
			if weak := ike.WeakAlgorithms(ikeSel.Suite, espSel.Suite.DataPlaneName()); !slices.Equal(weak, c.weak) {
				t.Fatalf("weak %v, want %v", weak, c.weak)
			}
		})
	}
}

// TestMifsecGatewayNativeClientSuites connects strongSwan clients
// configured with the proposals of the clients built into Windows, macOS
// and Android to `mifsec gateway` run without --ike and --esp: each gets
// the expected suites, is marked weak where it should be, and pings
// through the tunnel with no loss.
func TestMifsecGatewayNativeClientSuites(t *testing.T) {
	strongswan.Require(t)
	for _, c := range nativeClientOffers {
		t.Run(c.name, func(t *testing.T) {
			const psk = "native client suites"
			client, _, g := mifsecGatewayTopology(t, psk)
			charon := startStrongSwanClient(t, client, strongSwanClient{psk: psk, ike: c.ike, esp: c.esp}, g)
			if lost := pingLoss(t, client, "10.1.0.1", 20); lost != 0 {
				t.Fatalf("%d of 20 pings lost\ncharon:\n%s\nmifsec:\n%s", lost, charon.Log(), g.log.String())
			}
			cl := gatewayClients(t)
			if len(cl) != 1 {
				t.Fatalf("gateway status %+v", cl)
			}
			st := cl[0]
			t.Logf("IKE %s, ESP %s, weak %v", st.IKESuite, st.Algorithm, st.Weak)
			if st.IKESuite != c.wantIKE || st.Algorithm != c.wantESP || !slices.Equal(st.Weak, c.weak) {
				t.Fatalf("gateway chose IKE %s ESP %s weak %v, want %s %s %v", st.IKESuite, st.Algorithm, st.Weak, c.wantIKE, c.wantESP, c.weak)
			}
			if len(c.weak) > 0 && !strings.Contains(g.log.String(), "weak algorithms") {
				t.Fatalf("no warning about weak algorithms in the gateway log:\n%s", g.log.String())
			}
		})
	}
}

// TestMifsecGatewayCBCRekeys lets a strongSwan client configured like
// Windows (AES-CBC, SHA-1, MODP-1024, and PFS with MODP-1024 on Child SA
// rekeys) rekey its Child SA every 10 s and its IKE SA every 20 s while a
// ping runs at 10/s for 45 s against a gateway without --ike/--esp: no
// packet may be lost and the rekeyed SAs keep the suites.
func TestMifsecGatewayCBCRekeys(t *testing.T) {
	if testing.Short() {
		t.Skip("pings for 45 s while strongSwan rekeys")
	}
	strongswan.Require(t)
	const psk = "cbc rekeys under a ping"
	client, _, g := mifsecGatewayTopology(t, psk)
	charon := startStrongSwanClient(t, client, strongSwanClient{psk: psk, ike: "aes256-sha1-modp1024",
		esp: "aes256-sha1-modp1024", childRekey: "10s", ikeRekey: "20s"}, g)
	if lost := pingLoss(t, client, "10.1.0.1", 450); lost != 0 {
		t.Fatalf("%d of 450 pings lost during rekeying\ncharon:\n%s\nmifsec:\n%s", lost, charon.Log(), g.log.String())
	}
	cl := gatewayClients(t)
	if len(cl) != 1 {
		t.Fatalf("gateway status %+v", cl)
	}
	st := cl[0]
	t.Logf("%d Child SA and %d IKE SA rekeys; IKE %s, ESP %s", st.ChildRekeys, st.IKERekeys, st.IKESuite, st.Algorithm)
	if st.ChildRekeys < 3 || st.IKERekeys < 1 {
		t.Fatalf("%d Child SA and %d IKE SA rekeys in 45 s, want at least 3 and 1\ncharon:\n%s", st.ChildRekeys, st.IKERekeys, charon.Log())
	}
	if st.IKESuite != "aes256-sha1-prfsha1-modp1024" || st.Algorithm != "aes256-sha1" {
		t.Fatalf("after rekeys: IKE %s, ESP %s", st.IKESuite, st.Algorithm)
	}
}
