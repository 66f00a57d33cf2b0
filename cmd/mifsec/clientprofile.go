package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/urfave/cli/v2"
)

// `mifsec gateway profile` writes what a user imports into the IKEv2 client
// built into their system: an Apple configuration profile, a PowerShell
// script for Windows, or a strongSwan profile for Android. Every format
// describes the same connection: EAP-MSCHAPv2 with the user's name (the
// client asks for the password), the gateway authenticated by its
// certificate, which the CA the profile carries vouches for, and the
// strongest suites of the gateway's proposals that the platform supports.

// clientFormats are the values of --format.
var clientFormats = []string{"apple", "windows", "android"}

func gatewayProfileCommand() *cli.Command {
	return &cli.Command{
		Name:  "profile",
		Usage: "write a VPN profile for the IKEv2 client built into Apple, Windows or Android (strongSwan) systems",
		Description: `Writes, to standard output or --out, what a user imports to connect to this gateway with
EAP-MSCHAPv2: an Apple .mobileconfig (iOS, macOS), a Windows PowerShell script (run as
administrator) or a strongSwan .sswan file (Android). The client logs in as --user and asks for
the password; it dials --server, which the gateway certificate (--cert) must name, and trusts the
CA that issued that certificate (from --ca, or the last certificate of --cert when it is
self-signed). The suites are the strongest of the gateway's --ike and --esp proposals (its
defaults unless given) that the platform supports. Needs no root and no running gateway.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Usage: "`FORMAT` of the profile: " + strings.Join(clientFormats, ", "), Required: true},
			&cli.StringFlag{Name: "user", Usage: "the user's EAP identity, `NAME` (as in the gateway's EAP users)", Required: true},
			&cli.StringFlag{Name: "server", Usage: "the DNS `NAME` or address clients dial; the gateway certificate must name it", Required: true},
			&cli.StringFlag{Name: "local-id", Usage: "the gateway's --local-id, `IDENTITY` (default: --server)"},
			&cli.StringFlag{Name: "cert", Usage: "the gateway's certificate chain, PEM `FILE` (end entity first), as given to the gateway", Required: true},
			&cli.StringFlag{Name: "ca", Usage: "CA certificates, PEM `FILE`: the one the --cert chain leads to goes into the profile"},
			&cli.StringFlag{Name: "ike", Value: defaultGatewayIKEProposals, Usage: "the gateway's IKE `PROPOSALS`"},
			&cli.StringFlag{Name: "esp", Value: defaultGatewayESPProposals, Usage: "the gateway's ESP `PROPOSALS`"},
			&cli.StringFlag{Name: "name", Usage: "connection `NAME` the user sees (default: the --server name)"},
			&cli.StringFlag{Name: "out", Usage: "write the profile to `FILE` instead of standard output"},
		},
		Action: runGatewayProfile,
	}
}

func runGatewayProfile(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("gateway profile takes no arguments, got %q", c.Args().Slice())
	}
	format := c.String("format")
	if !slices.Contains(clientFormats, format) {
		return fmt.Errorf("--format: %q is not %s", format, strings.Join(clientFormats, ", "))
	}
	p, err := newClientProfile(c)
	if err != nil {
		return err
	}
	if p.IKE, p.ESP, err = clientSuites(clientPlatforms[format], c.String("ike"), c.String("esp")); err != nil {
		return fmt.Errorf("%s clients: %w", format, err)
	}
	write := map[string]func(io.Writer, *clientProfile) error{
		"apple": writeAppleProfile, "windows": writeWindowsProfile, "android": writeAndroidProfile,
	}[format]
	var out bytes.Buffer
	if err := write(&out, p); err != nil {
		return fmt.Errorf("write the %s profile: %w", format, err)
	}
	if path := c.String("out"); path != "" {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		return nil
	}
	_, err = c.App.Writer.Write(out.Bytes())
	return err
}

// clientProfile is the connection a profile describes.
type clientProfile struct {
	Name   string // what the user sees
	Server string // the name or address the client dials
	// RemoteID is the gateway's identity as the client expects it: a DNS
	// name or an address.
	RemoteID ike.Identity
	User     string // EAP identity
	// Gateway is the gateway's end-entity certificate, CA the root the
	// client is to trust for it.
	Gateway, CA *x509.Certificate
	IKE, ESP    clientSuite
}

// newClientProfile reads the flags that describe the connection and checks
// that the gateway certificate is one the clients will accept: issued by
// the CA, meant for a server, naming the server and the gateway identity.
func newClientProfile(c *cli.Context) (*clientProfile, error) {
	p := &clientProfile{Server: c.String("server"), User: c.String("user"), Name: c.String("name")}
	if err := checkProfileText("--user", p.User); err != nil {
		return nil, err
	}
	serverID, err := parseServerName(p.Server)
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	p.RemoteID = serverID
	if s := c.String("local-id"); s != "" {
		if p.RemoteID, err = ike.ParseIdentity(s); err != nil {
			return nil, fmt.Errorf("--local-id: %w", err)
		}
		if t := p.RemoteID.Type; t != wire.IDFQDN && t != wire.IDIPv4 && t != wire.IDIPv6 {
			return nil, fmt.Errorf("--local-id: %s is not a DNS name or an address, which is all the built-in clients can expect", p.RemoteID)
		}
	}
	if p.Name == "" {
		p.Name = p.Server
	}
	if err := checkProfileText("--name", p.Name); err != nil {
		return nil, err
	}
	chain, err := ike.LoadCertificates(c.String("cert"))
	if err != nil {
		return nil, fmt.Errorf("--cert: %w", err)
	}
	p.Gateway = chain[0]
	var cas *ike.TrustStore
	switch root := chain[len(chain)-1]; {
	case c.String("ca") != "":
		if cas, err = ike.LoadTrustStore(c.String("ca")); err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
	case len(chain) > 1 && root.CheckSignatureFrom(root) == nil:
		if cas, err = ike.NewTrustStore(root); err != nil {
			return nil, fmt.Errorf("--cert: %w", err)
		}
	default:
		return nil, errors.New("--ca: needed, with the CA that issued the --cert chain (the chain does not end in a self-signed CA)")
	}
	var intermediates [][]byte
	for _, cert := range chain[1:] {
		intermediates = append(intermediates, cert.Raw)
	}
	for _, id := range []ike.Identity{serverID, p.RemoteID} {
		peer, err := cas.VerifyGateway(p.Gateway.Raw, intermediates, id, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("--cert: clients would refuse the gateway: %w", err)
		}
		p.CA = peer.Chain[len(peer.Chain)-1]
	}
	return p, nil
}

// parseServerName parses what clients dial: an address or a DNS name.
func parseServerName(s string) (ike.Identity, error) {
	if addr, err := netip.ParseAddr(s); err == nil {
		return ike.IdentityFromAddr(addr)
	}
	if s == "" || len(s) > 253 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != "" {
		return ike.Identity{}, fmt.Errorf("%q is neither an address nor a DNS name", s)
	}
	return ike.Identity{Type: wire.IDFQDN, Data: []byte(s)}, nil
}

// checkProfileText refuses text with control characters: a profile
// carries it into XML, JSON and PowerShell strings, where a line break
// has no business.
func checkProfileText(flag, s string) error {
	if s == "" {
		return fmt.Errorf("%s: empty", flag)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%s: %q holds a control character", flag, s)
	}
	return nil
}

// clientSuite is one suite of an IKE or ESP proposal as a profile sets it.
type clientSuite struct {
	Cipher clientCipher
	// Hash gives the integrity algorithm (none with an AEAD) and, for IKE,
	// the PRF: the built-in clients tie the two together.
	Hash  clientHash
	Group clientGroup // ESP: the PFS group, wire.DH_NONE for none
}

// Proposal is the suite in strongSwan's syntax.
func (s clientSuite) Proposal(protocol wire.ProtocolID) string {
	spec := ike.ProposalSpec{Protocol: protocol, Encryption: []ike.EncryptionTransform{s.Cipher.EncryptionTransform}}
	if s.Hash.integrity != 0 {
		spec.Integrity = []uint16{s.Hash.integrity}
	}
	if protocol == wire.ProtoIKE {
		spec.PRF = []uint16{s.Hash.prf}
	} else {
		spec.ESN = []uint16{wire.ESN_NO}
	}
	if s.Group.id != wire.DH_NONE {
		spec.DHGroups = []uint16{s.Group.id}
	}
	return spec.String()
}

// AEAD reports whether the suite's cipher also protects integrity.
func (s clientSuite) AEAD() bool { return s.Hash.integrity == 0 }

// clientCipher, clientHash and clientGroup are algorithms a platform
// supports, with its name for them where its profile names them (Apple
// numbers the groups; strongSwan's syntax comes from package ike).
type clientCipher struct {
	ike.EncryptionTransform
	aead bool
	name string
}

type clientHash struct {
	integrity, prf uint16 // AUTH_*, PRF_* (IKE only)
	name           string
}

type clientGroup struct {
	id   uint16 // DH_*; DH_NONE for no PFS in ESP
	name string
}

// clientAlgorithms are what a platform supports for IKE or ESP, each list
// strongest first.
type clientAlgorithms struct {
	ciphers []clientCipher
	hashes  []clientHash
	groups  []clientGroup
}

// clientPlatform is what a built-in client can be configured with.
type clientPlatform struct{ ike, esp clientAlgorithms }

var (
	aes256GCM  = ike.EncryptionTransform{ID: wire.ENCR_AES_GCM_16, KeyLength: 256}
	aes192GCM  = ike.EncryptionTransform{ID: wire.ENCR_AES_GCM_16, KeyLength: 192}
	aes128GCM  = ike.EncryptionTransform{ID: wire.ENCR_AES_GCM_16, KeyLength: 128}
	chacha20   = ike.EncryptionTransform{ID: wire.ENCR_CHACHA20_POLY1305}
	aes256CBC  = ike.EncryptionTransform{ID: wire.ENCR_AES_CBC, KeyLength: 256}
	aes192CBC  = ike.EncryptionTransform{ID: wire.ENCR_AES_CBC, KeyLength: 192}
	aes128CBC  = ike.EncryptionTransform{ID: wire.ENCR_AES_CBC, KeyLength: 128}
	noPFSGroup = clientGroup{id: wire.DH_NONE, name: "None"}
)

// clientPlatforms maps --format to what its clients support. Ciphers rank
// by key length, an AEAD before AES-CBC of the same length; groups by
// strength (ECP-384 first).
//
// Apple (the VPN payload's IKEv2 dictionary): no SHA-1 or MODP-1024, which
// iOS and macOS 26 refuse. Windows (Set-VpnConnectionIPsecConfiguration):
// AES-GCM only for ESP, as Windows 11 offers it for IKE but Windows 10 is
// not known to; integrity up to SHA-384. strongSwan on Android: everything
// mifsec implements.
var clientPlatforms = map[string]clientPlatform{
	"apple": {
		ike: clientAlgorithms{
			ciphers: []clientCipher{{aes256GCM, true, "AES-256-GCM"}, {chacha20, true, "ChaCha20Poly1305"},
				{aes256CBC, false, "AES-256"}, {aes128GCM, true, "AES-128-GCM"}, {aes128CBC, false, "AES-128"}},
			hashes: []clientHash{{wire.AUTH_HMAC_SHA2_512_256, wire.PRF_HMAC_SHA2_512, "SHA2-512"},
				{wire.AUTH_HMAC_SHA2_384_192, wire.PRF_HMAC_SHA2_384, "SHA2-384"}, {wire.AUTH_HMAC_SHA2_256_128, wire.PRF_HMAC_SHA2_256, "SHA2-256"}},
			groups: []clientGroup{{wire.DH_ECP_384, ""}, {wire.DH_CURVE25519, ""}, {wire.DH_ECP_256, ""}, {wire.DH_MODP_2048, ""}},
		},
		esp: clientAlgorithms{
			ciphers: []clientCipher{{aes256GCM, true, "AES-256-GCM"}, {chacha20, true, "ChaCha20Poly1305"},
				{aes256CBC, false, "AES-256"}, {aes128GCM, true, "AES-128-GCM"}, {aes128CBC, false, "AES-128"}},
			hashes: []clientHash{{wire.AUTH_HMAC_SHA2_512_256, 0, "SHA2-512"}, {wire.AUTH_HMAC_SHA2_384_192, 0, "SHA2-384"},
				{wire.AUTH_HMAC_SHA2_256_128, 0, "SHA2-256"}},
			groups: []clientGroup{{wire.DH_ECP_384, ""}, {wire.DH_CURVE25519, ""}, {wire.DH_ECP_256, ""}, {wire.DH_MODP_2048, ""}, noPFSGroup},
		},
	},
	"windows": {
		ike: clientAlgorithms{
			ciphers: []clientCipher{{aes256CBC, false, "AES256"}, {aes192CBC, false, "AES192"}, {aes128CBC, false, "AES128"}},
			hashes: []clientHash{{wire.AUTH_HMAC_SHA2_384_192, wire.PRF_HMAC_SHA2_384, "SHA384"},
				{wire.AUTH_HMAC_SHA2_256_128, wire.PRF_HMAC_SHA2_256, "SHA256"}, {wire.AUTH_HMAC_SHA1_96, wire.PRF_HMAC_SHA1, "SHA1"}},
			groups: []clientGroup{{wire.DH_ECP_384, "ECP384"}, {wire.DH_ECP_256, "ECP256"}, {wire.DH_MODP_2048, "Group14"}, {wire.DH_MODP_1024, "Group2"}},
		},
		esp: clientAlgorithms{
			ciphers: []clientCipher{{aes256GCM, true, "GCMAES256"}, {aes256CBC, false, "AES256"}, {aes192GCM, true, "GCMAES192"},
				{aes192CBC, false, "AES192"}, {aes128GCM, true, "GCMAES128"}, {aes128CBC, false, "AES128"}},
			hashes: []clientHash{{wire.AUTH_HMAC_SHA2_256_128, 0, "SHA256128"}, {wire.AUTH_HMAC_SHA1_96, 0, "SHA196"}},
			groups: []clientGroup{{wire.DH_ECP_384, "ECP384"}, {wire.DH_ECP_256, "ECP256"}, {wire.DH_MODP_2048, "PFS2048"},
				{wire.DH_MODP_1024, "PFS2"}, noPFSGroup},
		},
	},
	"android": {
		ike: clientAlgorithms{
			ciphers: []clientCipher{{aes256GCM, true, ""}, {chacha20, true, ""}, {aes256CBC, false, ""}, {aes192GCM, true, ""},
				{aes192CBC, false, ""}, {aes128GCM, true, ""}, {aes128CBC, false, ""}},
			hashes: []clientHash{{wire.AUTH_HMAC_SHA2_512_256, wire.PRF_HMAC_SHA2_512, ""}, {wire.AUTH_HMAC_SHA2_384_192, wire.PRF_HMAC_SHA2_384, ""},
				{wire.AUTH_HMAC_SHA2_256_128, wire.PRF_HMAC_SHA2_256, ""}, {wire.AUTH_HMAC_SHA1_96, wire.PRF_HMAC_SHA1, ""}},
			groups: []clientGroup{{wire.DH_ECP_384, ""}, {wire.DH_CURVE25519, ""}, {wire.DH_ECP_256, ""}, {wire.DH_MODP_2048, ""}, {wire.DH_MODP_1024, ""}},
		},
		esp: clientAlgorithms{
			ciphers: []clientCipher{{aes256GCM, true, ""}, {chacha20, true, ""}, {aes256CBC, false, ""}, {aes192GCM, true, ""},
				{aes192CBC, false, ""}, {aes128GCM, true, ""}, {aes128CBC, false, ""}},
			hashes: []clientHash{{wire.AUTH_HMAC_SHA2_512_256, 0, ""}, {wire.AUTH_HMAC_SHA2_384_192, 0, ""},
				{wire.AUTH_HMAC_SHA2_256_128, 0, ""}, {wire.AUTH_HMAC_SHA1_96, 0, ""}},
			groups: []clientGroup{{wire.DH_ECP_384, ""}, {wire.DH_CURVE25519, ""}, {wire.DH_ECP_256, ""}, {wire.DH_MODP_2048, ""},
				{wire.DH_MODP_1024, ""}, {wire.DH_NONE, ""}},
		},
	},
}

// clientSuites picks the IKE and ESP suites for platform from the
// gateway's proposals, parsed as the gateway parses them.
func clientSuites(platform clientPlatform, ikeProposals, espProposals string) (ikeSuite, espSuite clientSuite, err error) {
	ikeSpecs, err := ike.ParseIKEProposals(ikeProposals)
	if err != nil {
		return ikeSuite, espSuite, fmt.Errorf("--ike: %w", err)
	}
	espSpecs, err := ike.ParseESPProposals(espProposals)
	if err != nil {
		return ikeSuite, espSuite, fmt.Errorf("--esp: %w", err)
	}
	var ok bool
	if ikeSuite, ok = strongestSuite(ikeSpecs, platform.ike); !ok {
		return ikeSuite, espSuite, fmt.Errorf("none of the IKE proposals %q has a suite they support", ikeProposals)
	}
	if espSuite, ok = strongestSuite(espSpecs, platform.esp); !ok {
		return ikeSuite, espSuite, fmt.Errorf("none of the ESP proposals %q has a suite they support", espProposals)
	}
	return ikeSuite, espSuite, nil
}

// strongestSuite returns the strongest suite that one of specs accepts
// and algs supports: the strongest cipher first, then the strongest hash,
// then the strongest group. A client offers one suite; the gateway takes
// it when a single one of its proposals holds all its algorithms. In an
// ESP proposal without groups (no PFS) only wire.DH_NONE matches.
func strongestSuite(specs []ike.ProposalSpec, algs clientAlgorithms) (clientSuite, bool) {
	var best clientSuite
	bestRank := []int(nil)
	for _, spec := range specs {
		groups := spec.DHGroups
		if spec.Protocol == wire.ProtoESP && len(groups) == 0 {
			groups = []uint16{wire.DH_NONE}
		}
		ci := slices.IndexFunc(algs.ciphers, func(c clientCipher) bool { return slices.Contains(spec.Encryption, c.EncryptionTransform) })
		if ci < 0 {
			continue
		}
		cipher := algs.ciphers[ci]
		hi := slices.IndexFunc(algs.hashes, func(h clientHash) bool {
			if !cipher.aead && !slices.Contains(spec.Integrity, h.integrity) {
				return false
			}
			return spec.Protocol != wire.ProtoIKE || slices.Contains(spec.PRF, h.prf)
		})
		if hi < 0 {
			continue
		}
		hash := algs.hashes[hi]
		switch {
		case cipher.aead && spec.Protocol == wire.ProtoESP:
			hash, hi = clientHash{}, 0 // nothing to rank
		case cipher.aead:
			hash.integrity = 0 // the hash names the PRF alone
		}
		gi := slices.IndexFunc(algs.groups, func(g clientGroup) bool { return slices.Contains(groups, g.id) })
		if gi < 0 {
			continue
		}
		if rank := []int{ci, hi, gi}; bestRank == nil || slices.Compare(rank, bestRank) < 0 {
			best, bestRank = clientSuite{Cipher: cipher, Hash: hash, Group: algs.groups[gi]}, rank
		}
	}
	return best, bestRank != nil
}

// profileUUID is a name-based UUID (RFC 9562 version 5 layout, SHA-1) of
// the profile's parts: the same gateway and user give the same UUID, so
// that importing a newer profile replaces the older one.
func profileUUID(parts ...string) string {
	h := sha1.Sum([]byte("mifsec client profile\x00" + strings.Join(parts, "\x00")))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
