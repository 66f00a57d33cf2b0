package ike

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

func TestParseProposals(t *testing.T) {
	gcm := func(bits uint16) EncryptionTransform { return EncryptionTransform{wire.ENCR_AES_GCM_16, bits} }
	cbc := func(bits uint16) EncryptionTransform { return EncryptionTransform{wire.ENCR_AES_CBC, bits} }
	chacha := EncryptionTransform{wire.ENCR_CHACHA20_POLY1305, 0}
	ike := func(p ProposalSpec) ProposalSpec { p.Protocol = wire.ProtoIKE; return p }
	esp := func(p ProposalSpec) ProposalSpec { p.Protocol = wire.ProtoESP; return p }
	tests := []struct {
		name   string
		proto  wire.ProtocolID
		in     string
		want   []ProposalSpec
		String string // formatProposals of the result
	}{
		{"AEAD with PRF", wire.ProtoIKE, "aes256gcm16-prfsha256-x25519",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, PRF: []uint16{wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_CURVE25519}})},
			"aes256gcm16-prfsha256-x25519"},
		{"chacha", wire.ProtoIKE, "chacha20poly1305-prfsha256-ecp256",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{chacha}, PRF: []uint16{wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_ECP_256}})},
			"chacha20poly1305-prfsha256-ecp256"},
		{"gcm128 sha384 ecp384", wire.ProtoIKE, "aes128gcm16-prfsha384-ecp384",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(128)}, PRF: []uint16{wire.PRF_HMAC_SHA2_384}, DHGroups: []uint16{wire.DH_ECP_384}})},
			"aes128gcm16-prfsha384-ecp384"},
		{"classic, PRF from integrity", wire.ProtoIKE, "aes256-sha256-modp2048",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{cbc(256)}, Integrity: []uint16{wire.AUTH_HMAC_SHA2_256_128}, PRF: []uint16{wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_MODP_2048}})},
			"aes256-sha256-prfsha256-modp2048"},
		{"AEAD, PRF from dropped integrity", wire.ProtoIKE, "aes256gcm16-sha384-curve25519",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, PRF: []uint16{wire.PRF_HMAC_SHA2_384}, DHGroups: []uint16{wire.DH_CURVE25519}})},
			"aes256gcm16-prfsha384-x25519"},
		{"explicit PRF wins over integrity", wire.ProtoIKE, "aes128-sha1-prfsha512-ecp256",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{cbc(128)}, Integrity: []uint16{wire.AUTH_HMAC_SHA1_96}, PRF: []uint16{wire.PRF_HMAC_SHA2_512}, DHGroups: []uint16{wire.DH_ECP_256}})},
			"aes128-sha1-prfsha512-ecp256"},
		{"several of a kind, kinds mixed", wire.ProtoIKE, "aes256gcm16-prfsha384-ecp384-aes128gcm16-prfsha256-x25519",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(256), gcm(128)}, PRF: []uint16{wire.PRF_HMAC_SHA2_384, wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_ECP_384, wire.DH_CURVE25519}})},
			"aes256gcm16-aes128gcm16-prfsha384-prfsha256-ecp384-x25519"},
		{"list, spaces, case, aliases", wire.ProtoIKE, " AES256GCM16-prfsha256-x25519 , aes-sha2_256-sha-modp2048,aes192gcm128-prfsha1-ecp256",
			[]ProposalSpec{
				ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, PRF: []uint16{wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_CURVE25519}}),
				ike(ProposalSpec{Encryption: []EncryptionTransform{cbc(128)}, Integrity: []uint16{wire.AUTH_HMAC_SHA2_256_128, wire.AUTH_HMAC_SHA1_96}, PRF: []uint16{wire.PRF_HMAC_SHA2_256, wire.PRF_HMAC_SHA1}, DHGroups: []uint16{wire.DH_MODP_2048}}),
				ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(192)}, PRF: []uint16{wire.PRF_HMAC_SHA1}, DHGroups: []uint16{wire.DH_ECP_256}}),
			},
			"aes256gcm16-prfsha256-x25519,aes128-sha256-sha1-prfsha256-prfsha1-modp2048,aes192gcm16-prfsha1-ecp256"},
		{"duplicates collapse", wire.ProtoIKE, "aes256gcm16-aes256gcm16-prfsha256-x25519-curve25519",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, PRF: []uint16{wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_CURVE25519}})},
			"aes256gcm16-prfsha256-x25519"},
		{"IKE drops modpnone", wire.ProtoIKE, "aes256gcm16-prfsha256-modpnone-x25519",
			[]ProposalSpec{ike(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, PRF: []uint16{wire.PRF_HMAC_SHA2_256}, DHGroups: []uint16{wire.DH_CURVE25519}})},
			"aes256gcm16-prfsha256-x25519"},

		{"ESP gcm", wire.ProtoESP, "aes256gcm16",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, ESN: []uint16{wire.ESN_NO}})},
			"aes256gcm16"},
		{"ESP chacha", wire.ProtoESP, "chacha20poly1305",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{chacha}, ESN: []uint16{wire.ESN_NO}})},
			"chacha20poly1305"},
		{"ESP PFS group", wire.ProtoESP, "aes128gcm16-x25519",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(128)}, DHGroups: []uint16{wire.DH_CURVE25519}, ESN: []uint16{wire.ESN_NO}})},
			"aes128gcm16-x25519"},
		{"ESP optional PFS", wire.ProtoESP, "aes128gcm16-x25519-modpnone",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(128)}, DHGroups: []uint16{wire.DH_CURVE25519, wire.DH_NONE}, ESN: []uint16{wire.ESN_NO}})},
			"aes128gcm16-x25519-modpnone"},
		{"ESP esn", wire.ProtoESP, "aes256gcm16-esn",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, ESN: []uint16{wire.ESN_YES}})},
			"aes256gcm16-esn"},
		{"ESP noesn", wire.ProtoESP, "aes256gcm16-noesn",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, ESN: []uint16{wire.ESN_NO}})},
			"aes256gcm16"},
		{"ESP both ESN", wire.ProtoESP, "aes256gcm16-esn-noesn",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, ESN: []uint16{wire.ESN_YES, wire.ESN_NO}})},
			"aes256gcm16-esn-noesn"},
		{"ESP classic", wire.ProtoESP, "aes128-sha256-sha512",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{cbc(128)}, Integrity: []uint16{wire.AUTH_HMAC_SHA2_256_128, wire.AUTH_HMAC_SHA2_512_256}, ESN: []uint16{wire.ESN_NO}})},
			"aes128-sha256-sha512"},
		{"ESP drops integrity with AEAD and PRFs", wire.ProtoESP, "aes256gcm16-sha256-prfsha256",
			[]ProposalSpec{esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, ESN: []uint16{wire.ESN_NO}})},
			"aes256gcm16"},
		{"ESP list", wire.ProtoESP, "aes256gcm16,chacha20poly1305",
			[]ProposalSpec{
				esp(ProposalSpec{Encryption: []EncryptionTransform{gcm(256)}, ESN: []uint16{wire.ESN_NO}}),
				esp(ProposalSpec{Encryption: []EncryptionTransform{chacha}, ESN: []uint16{wire.ESN_NO}}),
			},
			"aes256gcm16,chacha20poly1305"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := ParseIKEProposals
			if tt.proto == wire.ProtoESP {
				parse = ParseESPProposals
			}
			got, err := parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			s := formatProposals(got)
			if s != tt.String {
				t.Errorf("String = %q, want %q", s, tt.String)
			}
			again, err := parse(s)
			if err != nil {
				t.Fatalf("parsing String %q: %v", s, err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Errorf("String does not parse back: %+v", again)
			}
		})
	}
}

func TestParseProposalErrors(t *testing.T) {
	tests := []struct {
		name     string
		proto    wire.ProtocolID
		in       string
		contains []string
	}{
		{"unknown token", wire.ProtoIKE, "aes512-sha256-modp2048", []string{`"aes512"`, "supported:", "aes256gcm16", "x25519", "prfsha256"}},
		{"unknown ESP token", wire.ProtoESP, "aes256gcm16-blowfish", []string{`"blowfish"`, "supported:", "esn"}},
		{"gcm8 not supported", wire.ProtoESP, "aes128gcm8", []string{`"aes128gcm8"`}},
		{"no PRF with AEAD", wire.ProtoIKE, "aes256gcm16-x25519", []string{"no PRF"}},
		{"no DH", wire.ProtoIKE, "aes256gcm16-prfsha256", []string{"no Diffie-Hellman group"}},
		{"only modpnone", wire.ProtoIKE, "aes256gcm16-prfsha256-modpnone", []string{"no Diffie-Hellman group"}},
		{"classic without integrity", wire.ProtoIKE, "aes256-prfsha256-modp2048", []string{"integrity"}},
		{"ESP classic without integrity", wire.ProtoESP, "aes256", []string{"integrity"}},
		{"AEAD and classic mixed", wire.ProtoIKE, "aes256gcm16-aes256-sha256-prfsha256-modp2048", []string{"AEAD and classic"}},
		{"no encryption", wire.ProtoIKE, "sha256-prfsha256-modp2048", []string{"no encryption"}},
		{"ESN in IKE", wire.ProtoIKE, "aes256gcm16-prfsha256-x25519-esn", []string{"ESP proposals only"}},
		{"empty", wire.ProtoIKE, "", []string{"empty IKE proposal"}},
		{"empty item", wire.ProtoESP, "aes256gcm16,,chacha20poly1305", []string{"empty ESP proposal"}},
		{"empty token", wire.ProtoIKE, "aes256gcm16--prfsha256-x25519", []string{"empty algorithm keyword"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := ParseIKEProposals
			if tt.proto == wire.ProtoESP {
				parse = ParseESPProposals
			}
			got, err := parse(tt.in)
			if err == nil {
				t.Fatalf("parsed as %v", got)
			}
			for _, c := range tt.contains {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error %q does not mention %q", err, c)
				}
			}
		})
	}
	if _, err := ParseESPProposals(strings.Repeat("aes256gcm16,", 255) + "aes256gcm16"); err == nil {
		t.Error("256 proposals accepted")
	}
}

func mustParseIKE(t *testing.T, s string) []ProposalSpec {
	t.Helper()
	p, err := ParseIKEProposals(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParseESP(t *testing.T, s string) []ProposalSpec {
	t.Helper()
	p, err := ParseESPProposals(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProposalRendering(t *testing.T) {
	specs := mustParseIKE(t, "aes256gcm16-chacha20poly1305-prfsha384-x25519-ecp256,aes128-sha256-modp2048")
	got, err := BuildProposals(specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.Proposal{
		{Number: 1, Protocol: wire.ProtoIKE, Transforms: []wire.Transform{
			{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 256}, {Type: wire.TransformENCR, ID: wire.ENCR_CHACHA20_POLY1305, KeyLength: 0},
			{Type: wire.TransformPRF, ID: wire.PRF_HMAC_SHA2_384, KeyLength: 0},
			{Type: wire.TransformDH, ID: wire.DH_CURVE25519, KeyLength: 0}, {Type: wire.TransformDH, ID: wire.DH_ECP_256, KeyLength: 0},
		}},
		{Number: 2, Protocol: wire.ProtoIKE, Transforms: []wire.Transform{
			{Type: wire.TransformENCR, ID: wire.ENCR_AES_CBC, KeyLength: 128}, {Type: wire.TransformPRF, ID: wire.PRF_HMAC_SHA2_256, KeyLength: 0},
			{Type: wire.TransformINTEG, ID: wire.AUTH_HMAC_SHA2_256_128, KeyLength: 0}, {Type: wire.TransformDH, ID: wire.DH_MODP_2048, KeyLength: 0},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if g := firstDHGroup(specs); g != wire.DH_CURVE25519 {
		t.Errorf("firstDHGroup = %d", g)
	}
	espSpec := mustParseESP(t, "aes128gcm16-x25519-esn")[0]
	p := espSpec.WithoutDH().Proposal(1, []byte{1, 2, 3, 4})
	wantESP := wire.Proposal{Number: 1, Protocol: wire.ProtoESP, SPI: []byte{1, 2, 3, 4}, Transforms: []wire.Transform{
		{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 128}, {Type: wire.TransformESN, ID: wire.ESN_YES, KeyLength: 0},
	}}
	if !reflect.DeepEqual(p, wantESP) {
		t.Errorf("ESP without DH: %+v", p)
	}
	if len(espSpec.DHGroups) != 1 {
		t.Error("WithoutDH changed its receiver")
	}
}

func offerOf(t *testing.T, proto wire.ProtocolID, s string, spi []byte) []wire.Proposal {
	t.Helper()
	var specs []ProposalSpec
	if proto == wire.ProtoIKE {
		specs = mustParseIKE(t, s)
	} else {
		specs = mustParseESP(t, s)
	}
	p, err := BuildProposals(specs, spi)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSelectProposal(t *testing.T) {
	espSPI := []byte{0xc1, 0xc2, 0xc3, 0xc4}
	withTransform := func(ps []wire.Proposal, tr wire.Transform) []wire.Proposal {
		for i := range ps {
			ps[i].Transforms = append(ps[i].Transforms, tr)
		}
		return ps
	}
	tests := []struct {
		name    string
		offered []wire.Proposal
		mine    []ProposalSpec
		opts    SelectOptions
		want    string // Suite.String of the choice, "" for none
		number  uint8
	}{
		{"responder's proposal order wins",
			offerOf(t, wire.ProtoIKE, "aes128gcm16-prfsha256-ecp256,aes256gcm16-prfsha384-x25519", nil),
			mustParseIKE(t, "aes256gcm16-prfsha384-x25519,aes128gcm16-prfsha256-ecp256"), SelectOptions{},
			"aes256gcm16-prfsha384-x25519", 2},
		{"responder's algorithm order wins",
			offerOf(t, wire.ProtoIKE, "aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519", nil),
			mustParseIKE(t, "aes256gcm16-aes128gcm16-prfsha384-prfsha256-x25519-ecp256"), SelectOptions{},
			"aes256gcm16-prfsha384-x25519", 1},
		{"KE group preferred among shared groups",
			offerOf(t, wire.ProtoIKE, "aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519", nil),
			mustParseIKE(t, "aes256gcm16-aes128gcm16-prfsha384-prfsha256-x25519-ecp256"), SelectOptions{PreferDH: wire.DH_ECP_256},
			"aes256gcm16-prfsha384-ecp256", 1},
		{"KE group not acceptable is not chosen",
			offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-ecp256-x25519-modp2048", nil),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519-ecp256"), SelectOptions{PreferDH: wire.DH_MODP_2048},
			"aes256gcm16-prfsha256-x25519", 1},
		{"classic suite",
			offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519,aes256-sha384-sha256-modp2048", nil),
			mustParseIKE(t, "aes256-aes128-sha256-modp2048"), SelectOptions{},
			"aes256-sha256-prfsha256-modp2048", 2},
		{"key length must match",
			[]wire.Proposal{{Number: 1, Protocol: wire.ProtoIKE, Transforms: []wire.Transform{{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 128}, {Type: wire.TransformPRF, ID: wire.PRF_HMAC_SHA2_256, KeyLength: 0}, {Type: wire.TransformDH, ID: wire.DH_CURVE25519, KeyLength: 0}}}},
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},
		{"AES without key length attribute",
			[]wire.Proposal{{Number: 1, Protocol: wire.ProtoIKE, Transforms: []wire.Transform{{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 0}, {Type: wire.TransformPRF, ID: wire.PRF_HMAC_SHA2_256, KeyLength: 0}, {Type: wire.TransformDH, ID: wire.DH_CURVE25519, KeyLength: 0}}}},
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},
		{"nothing in common",
			offerOf(t, wire.ProtoIKE, "aes128gcm16-prfsha256-ecp256", nil),
			mustParseIKE(t, "aes256gcm16-prfsha256-ecp256,aes128gcm16-prfsha384-ecp256,aes128gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},
		{"unknown transform type makes an offer unacceptable",
			withTransform(offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519", nil), wire.Transform{Type: 6, ID: 1}),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},
		{"AEAD offer with integrity NONE",
			withTransform(offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519", nil), wire.Transform{Type: wire.TransformINTEG, ID: wire.AUTH_NONE}),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "aes256gcm16-prfsha256-x25519", 1},
		{"ESN in an IKE offer",
			withTransform(offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519", nil), wire.Transform{Type: wire.TransformESN, ID: wire.ESN_NO}),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},
		{"bad IKE SPI size",
			offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519", []byte{1, 2, 3, 4}),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},
		{"IKE rekey SPI",
			offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519", []byte{1, 2, 3, 4, 5, 6, 7, 8}),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "aes256gcm16-prfsha256-x25519", 1},
		{"protocol mismatch",
			offerOf(t, wire.ProtoESP, "aes256gcm16", espSPI),
			mustParseIKE(t, "aes256gcm16-prfsha256-x25519"), SelectOptions{}, "", 0},

		{"ESP AEAD",
			offerOf(t, wire.ProtoESP, "aes128gcm16,aes256gcm16,chacha20poly1305", espSPI),
			mustParseESP(t, "chacha20poly1305,aes256gcm16"), SelectOptions{}, "chacha20poly1305-noesn", 3},
		{"ESP offer with PFS, none configured",
			offerOf(t, wire.ProtoESP, "aes256gcm16-x25519", espSPI),
			mustParseESP(t, "aes256gcm16"), SelectOptions{}, "", 0},
		{"ESP offer with PFS in IKE_AUTH",
			offerOf(t, wire.ProtoESP, "aes256gcm16-x25519", espSPI),
			mustParseESP(t, "aes256gcm16"), SelectOptions{IgnoreDH: true}, "aes256gcm16-noesn", 1},
		{"ESP offer with optional PFS",
			offerOf(t, wire.ProtoESP, "aes256gcm16-x25519-modpnone", espSPI),
			mustParseESP(t, "aes256gcm16"), SelectOptions{}, "aes256gcm16-noesn", 1},
		{"ESP PFS required, offer without",
			offerOf(t, wire.ProtoESP, "aes256gcm16", espSPI),
			mustParseESP(t, "aes256gcm16-x25519"), SelectOptions{}, "", 0},
		{"ESP PFS required, IKE_AUTH",
			offerOf(t, wire.ProtoESP, "aes256gcm16", espSPI),
			mustParseESP(t, "aes256gcm16-x25519"), SelectOptions{IgnoreDH: true}, "aes256gcm16-noesn", 1},
		{"ESP PFS agreed",
			offerOf(t, wire.ProtoESP, "aes256gcm16-ecp256-x25519", espSPI),
			mustParseESP(t, "aes256gcm16-x25519-ecp256"), SelectOptions{}, "aes256gcm16-x25519-noesn", 1},
		{"ESP ESN preference",
			offerOf(t, wire.ProtoESP, "aes256gcm16-noesn-esn", espSPI),
			mustParseESP(t, "aes256gcm16-esn-noesn"), SelectOptions{}, "aes256gcm16-esn", 1},
		{"ESP ESN mismatch",
			offerOf(t, wire.ProtoESP, "aes256gcm16-esn", espSPI),
			mustParseESP(t, "aes256gcm16"), SelectOptions{}, "", 0},
		{"ESP offer without ESN transform",
			[]wire.Proposal{{Number: 1, Protocol: wire.ProtoESP, SPI: espSPI, Transforms: []wire.Transform{{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 256}}}},
			mustParseESP(t, "aes256gcm16"), SelectOptions{}, "", 0},
		{"ESP offer with a PRF",
			withTransform(offerOf(t, wire.ProtoESP, "aes256gcm16", espSPI), wire.Transform{Type: wire.TransformPRF, ID: wire.PRF_HMAC_SHA2_256}),
			mustParseESP(t, "aes256gcm16"), SelectOptions{}, "", 0},
		{"ESP without SPI",
			offerOf(t, wire.ProtoESP, "aes256gcm16", nil),
			mustParseESP(t, "aes256gcm16"), SelectOptions{}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, ok := SelectProposalWith(tt.offered, tt.mine, tt.opts)
			if tt.want == "" {
				if ok {
					t.Fatalf("chose %s", sel.Suite)
				}
				return
			}
			if !ok {
				t.Fatal("nothing chosen")
			}
			if got := sel.Suite.String(); got != tt.want {
				t.Errorf("chose %s, want %s", got, tt.want)
			}
			if sel.Proposal.Number != tt.number {
				t.Errorf("answer has number %d, want %d", sel.Proposal.Number, tt.number)
			}
			if sel.Proposal.SPI != nil {
				t.Errorf("answer has SPI %x", sel.Proposal.SPI)
			}
			var offer wire.Proposal
			for _, o := range tt.offered {
				if o.Number == tt.number {
					offer = o
				}
			}
			if string(sel.PeerSPI) != string(offer.SPI) {
				t.Errorf("PeerSPI %x, want %x", sel.PeerSPI, offer.SPI)
			}
			// The answer is one the initiator accepts, with the same suite.
			answer := sel.Proposal
			answer.SPI = offer.SPI
			if tt.opts.IgnoreDH {
				// The initiator offered what it sent: check against the
				// offer without DH, as IKE_AUTH carries it.
				for i := range tt.offered {
					tt.offered[i].Transforms = removeDH(tt.offered[i].Transforms)
				}
			}
			v, err := verifyChosenProposal([]wire.Proposal{answer}, tt.offered)
			if err != nil {
				t.Fatalf("initiator rejects the answer %+v: %v", answer, err)
			}
			if v.Suite != sel.Suite {
				t.Errorf("initiator sees %s, responder chose %s", v.Suite, sel.Suite)
			}
		})
	}
	if _, ok := SelectProposal(offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519", nil), mustParseIKE(t, "aes256gcm16-prfsha256-x25519")); !ok {
		t.Error("SelectProposal found nothing")
	}
}

func removeDH(ts []wire.Transform) []wire.Transform {
	var out []wire.Transform
	for _, t := range ts {
		if t.Type != wire.TransformDH {
			out = append(out, t)
		}
	}
	return out
}

func TestVerifyChosenProposal(t *testing.T) {
	ikeOffer := offerOf(t, wire.ProtoIKE, "aes256gcm16-prfsha256-x25519-ecp256,aes128-sha256-modp2048", nil)
	espSPI := []byte{1, 2, 3, 4}
	espOffer := offerOf(t, wire.ProtoESP, "aes256gcm16-x25519-esn-noesn,aes128gcm16-x25519-modpnone", espSPI)
	gcm256 := wire.Transform{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 256}
	prf256 := wire.Transform{Type: wire.TransformPRF, ID: wire.PRF_HMAC_SHA2_256}
	x25519 := wire.Transform{Type: wire.TransformDH, ID: wire.DH_CURVE25519}
	noesn := wire.Transform{Type: wire.TransformESN, ID: wire.ESN_NO}
	ike := func(n uint8, ts ...wire.Transform) wire.Proposal {
		return wire.Proposal{Number: n, Protocol: wire.ProtoIKE, Transforms: ts}
	}
	esp := func(n uint8, ts ...wire.Transform) wire.Proposal {
		return wire.Proposal{Number: n, Protocol: wire.ProtoESP, SPI: []byte{9, 9, 9, 9}, Transforms: ts}
	}
	tests := []struct {
		name    string
		chosen  []wire.Proposal
		offered []wire.Proposal
		want    string // suite, "" for an error
	}{
		{"IKE AEAD", []wire.Proposal{ike(1, gcm256, prf256, x25519)}, ikeOffer, "aes256gcm16-prfsha256-x25519"},
		{"IKE transforms in any order", []wire.Proposal{ike(1, x25519, gcm256, prf256)}, ikeOffer, "aes256gcm16-prfsha256-x25519"},
		{"IKE classic", []wire.Proposal{ike(2, wire.Transform{Type: wire.TransformENCR, ID: wire.ENCR_AES_CBC, KeyLength: 128}, prf256, wire.Transform{Type: wire.TransformINTEG, ID: wire.AUTH_HMAC_SHA2_256_128}, wire.Transform{Type: wire.TransformDH, ID: wire.DH_MODP_2048})}, ikeOffer, "aes128-sha256-prfsha256-modp2048"},
		{"two proposals", []wire.Proposal{ike(1, gcm256, prf256, x25519), ike(1, gcm256, prf256, x25519)}, ikeOffer, ""},
		{"no proposal", nil, ikeOffer, ""},
		{"number not offered", []wire.Proposal{ike(3, gcm256, prf256, x25519)}, ikeOffer, ""},
		{"transform from another proposal", []wire.Proposal{ike(1, gcm256, prf256, wire.Transform{Type: wire.TransformDH, ID: wire.DH_MODP_2048})}, ikeOffer, ""},
		{"different key length", []wire.Proposal{ike(1, wire.Transform{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 128}, prf256, x25519)}, ikeOffer, ""},
		{"two DH groups", []wire.Proposal{ike(1, gcm256, prf256, x25519, wire.Transform{Type: wire.TransformDH, ID: wire.DH_ECP_256})}, ikeOffer, ""},
		{"no DH", []wire.Proposal{ike(1, gcm256, prf256)}, ikeOffer, ""},
		{"no PRF", []wire.Proposal{ike(1, gcm256, x25519)}, ikeOffer, ""},
		{"no encryption", []wire.Proposal{ike(1, prf256, x25519)}, ikeOffer, ""},
		{"classic without integrity", []wire.Proposal{ike(2, wire.Transform{Type: wire.TransformENCR, ID: wire.ENCR_AES_CBC, KeyLength: 128}, prf256, wire.Transform{Type: wire.TransformDH, ID: wire.DH_MODP_2048})}, ikeOffer, ""},
		{"unknown transform type", []wire.Proposal{ike(1, gcm256, prf256, x25519, wire.Transform{Type: 9, ID: 1})}, ikeOffer, ""},
		{"protocol changed", []wire.Proposal{{Number: 1, Protocol: wire.ProtoESP, SPI: espSPI, Transforms: []wire.Transform{gcm256, prf256, x25519}}}, ikeOffer, ""},
		{"IKE SPI of 4 bytes", []wire.Proposal{{Number: 1, Protocol: wire.ProtoIKE, SPI: espSPI, Transforms: []wire.Transform{gcm256, prf256, x25519}}}, ikeOffer, ""},

		{"ESP with PFS", []wire.Proposal{esp(1, gcm256, x25519, noesn)}, espOffer, "aes256gcm16-x25519-noesn"},
		{"ESP PFS required but left out", []wire.Proposal{esp(1, gcm256, noesn)}, espOffer, ""},
		{"ESP PFS optional and left out", []wire.Proposal{esp(2, wire.Transform{Type: wire.TransformENCR, ID: wire.ENCR_AES_GCM_16, KeyLength: 128}, noesn)}, espOffer, "aes128gcm16-noesn"},
		{"ESP without ESN", []wire.Proposal{esp(1, gcm256, x25519)}, espOffer, ""},
		{"ESP with integrity next to AEAD", []wire.Proposal{esp(1, gcm256, x25519, noesn, wire.Transform{Type: wire.TransformINTEG, ID: wire.AUTH_HMAC_SHA2_256_128})}, espOffer, ""},
		{"ESP SPI of 8 bytes", []wire.Proposal{{Number: 1, Protocol: wire.ProtoESP, SPI: make([]byte, 8), Transforms: []wire.Transform{gcm256, x25519, noesn}}}, espOffer, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := verifyChosenProposal(tt.chosen, tt.offered)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("accepted as %s", sel.Suite)
				}
				if !errors.Is(err, ErrProposalMismatch) {
					t.Errorf("error %v is not ErrProposalMismatch", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Suite.String(); got != tt.want {
				t.Errorf("suite %s, want %s", got, tt.want)
			}
			if string(sel.PeerSPI) != string(tt.chosen[0].SPI) {
				t.Errorf("PeerSPI %x", sel.PeerSPI)
			}
		})
	}
}

func TestSuiteValidate(t *testing.T) {
	tests := []struct {
		suite Suite
		ok    bool
	}{
		{Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519}, true},
		{Suite{Protocol: wire.ProtoIKE, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, PRF: wire.PRF_HMAC_SHA2_256, DHGroup: wire.DH_CURVE25519, ESN: true}, false},
		{Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, PRF: wire.PRF_HMAC_SHA2_256}, false},
		{Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_AES_GCM_16, KeyLength: 256, DHGroup: 99}, false},
		{Suite{Protocol: wire.ProtoESP, Encryption: wire.ENCR_CHACHA20_POLY1305, KeyLength: 256}, false},
		{Suite{Protocol: wire.ProtoAH, Integrity: wire.AUTH_HMAC_SHA2_256_128}, false},
	}
	for _, tt := range tests {
		t.Run(tt.suite.String(), func(t *testing.T) {
			if err := tt.suite.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestDataPlaneNames(t *testing.T) {
	specs, err := ParseESPProposals("aes256gcm16-chacha20poly1305,aes256-aes128-sha256-sha1")
	if err != nil {
		t.Fatal(err)
	}
	got := append(specs[0].DataPlaneNames(), specs[1].DataPlaneNames()...)
	want := []string{"aes256gcm16", "chacha20poly1305", "aes256-sha256", "aes256-sha1", "aes128-sha256", "aes128-sha1"}
	if !slices.Equal(got, want) {
		t.Fatalf("DataPlaneNames = %v, want %v", got, want)
	}
}

func TestWeakAlgorithms(t *testing.T) {
	for _, tc := range []struct {
		ike, esp string
		want     []string
	}{
		{"aes256gcm16-prfsha256-x25519", "aes256gcm16", nil},
		{"aes256-sha256-modp2048", "aes256-sha256", nil},
		{"aes256-sha256-modp1024", "aes256-sha1", []string{"ike:modp1024", "esp:sha1"}},
		{"aes256-sha1-modp1024", "aes128-sha1", []string{"ike:modp1024", "ike:prfsha1", "ike:sha1", "esp:sha1"}},
		{"aes256gcm16-prfsha1-ecp256", "aes256-sha512", []string{"ike:prfsha1"}},
	} {
		specs, err := ParseIKEProposals(tc.ike)
		if err != nil {
			t.Fatal(err)
		}
		sel, ok := SelectProposal(offerIKE(specs), specs)
		if !ok {
			t.Fatalf("%s does not select itself", tc.ike)
		}
		if got := WeakAlgorithms(sel.Suite, tc.esp); !slices.Equal(got, tc.want) {
			t.Errorf("%s + %s: weak %v, want %v", tc.ike, tc.esp, got, tc.want)
		}
	}
}

// TestESPSelectionCBC checks that a negotiated AES-CBC/HMAC Child SA gets
// the data plane's name and, per direction, the encryption key followed
// by the integrity key (RFC 7296 §2.17).
func TestESPSelectionCBC(t *testing.T) {
	specs, err := ParseESPProposals("aes256-sha384")
	if err != nil {
		t.Fatal(err)
	}
	_, esp, ok := selectESP(offerESP(specs, 0x1234, false), specs, wire.DH_NONE)
	if !ok || esp.alg != "aes256-sha384" || esp.spi != 0x1234 {
		t.Fatalf("selectESP = %+v, %v", esp, ok)
	}
	ikeSpecs, _ := ParseIKEProposals("aes256-sha256-modp2048")
	ikeSel, _ := SelectProposal(offerIKE(ikeSpecs), ikeSpecs)
	k, err := deriveKeys(ikeSel.Suite, bytes.Repeat([]byte{1}, 256), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	sa := &ikeSA{keys: &ikeKeys{Keys: *k}}
	km, err := childKeys(sa, esp, nil, []byte("ni-ni-ni-ni-ni-ni"), []byte("nr-nr-nr-nr-nr-nr"), false)
	if err != nil {
		t.Fatal(err)
	}
	iToR, rToI := km.iToR, km.rToI
	if km.probeIToR != nil || km.probeRToI != nil {
		t.Fatal("probe SA keys without a probe SA")
	}
	ck, err := k.DeriveChildKeys(esp.s, nil, []byte("ni-ni-ni-ni-ni-ni"), []byte("nr-nr-nr-nr-nr-nr"))
	if err != nil {
		t.Fatal(err)
	}
	if len(iToR) != 32+48 || !bytes.Equal(iToR, append(bytes.Clone(ck.InitiatorEncryption), ck.InitiatorIntegrity...)) ||
		!bytes.Equal(rToI, append(bytes.Clone(ck.ResponderEncryption), ck.ResponderIntegrity...)) {
		t.Fatal("Child SA keys are not encryption key then integrity key per direction")
	}

	// With a probe SA: the Child SA's keys are the same bytes, and the
	// probe SA's are the next ones of KEYMAT, in the same order.
	withProbe, err := childKeys(sa, esp, nil, []byte("ni-ni-ni-ni-ni-ni"), []byte("nr-nr-nr-nr-nr-nr"), true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(withProbe.iToR, iToR) || !bytes.Equal(withProbe.rToI, rToI) {
		t.Fatal("a probe SA changed the Child SA's keys")
	}
	prf, err := NewPRF(k.Suite.PRF)
	if err != nil {
		t.Fatal(err)
	}
	n := len(iToR)
	keymat, err := prf.Plus(k.SKd(), []byte("ni-ni-ni-ni-ni-ninr-nr-nr-nr-nr-nr"), 4*n)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(withProbe.probeIToR, keymat[2*n:3*n]) || !bytes.Equal(withProbe.probeRToI, keymat[3*n:]) {
		t.Fatal("the probe SA's keys are not the KEYMAT bytes after the Child SA's")
	}
}
