package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/testpki"
)

// The values Apple documents for the VPN payload's IKEv2 dictionary
// (com.apple.vpn.managed, VPNType IKEv2) and Microsoft for
// Set-VpnConnectionIPsecConfiguration.
var (
	appleIKEv2Keys = []string{"RemoteAddress", "LocalIdentifier", "RemoteIdentifier", "AuthenticationMethod",
		"CertificateType", "PayloadCertificateUUID", "Password", "SharedSecret", "ExtendedAuthEnabled", "AuthName",
		"AuthPassword", "OnDemandEnabled", "OnDemandRules", "DeadPeerDetectionRate", "ServerCertificateIssuerCommonName",
		"ServerCertificateCommonName", "TLSMinimumVersion", "TLSMaximumVersion", "UseConfigurationAttributeInternalIPSubnet",
		"DisableMOBIKE", "DisableRedirect", "DisconnectOnIdle", "DisconnectOnIdleTimer", "NATKeepAliveOffloadEnable",
		"NATKeepAliveInterval", "EnablePFS", "EnableCertificateRevocationCheck", "EnableFallback", "MTU",
		"IncludeAllNetworks", "EnforceRoutes", "ExcludeLocalNetworks", "EnforceStrictAlgorithmSelection",
		"IKESecurityAssociationParameters", "ChildSecurityAssociationParameters"}
	appleSAKeys              = []string{"EncryptionAlgorithm", "IntegrityAlgorithm", "DiffieHellmanGroup", "LifeTimeInMinutes"}
	appleEncryptionAlgorithm = []string{"DES", "3DES", "AES-128", "AES-256", "AES-128-GCM", "AES-256-GCM", "ChaCha20Poly1305"}
	appleIntegrityAlgorithm  = []string{"SHA1-96", "SHA1-160", "SHA2-256", "SHA2-384", "SHA2-512"}
	appleDiffieHellmanGroup  = []uint16{1, 2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 31, 32}

	windowsIPsecValues = map[string][]string{
		"EncryptionMethod":                 {"DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES256"},
		"IntegrityCheckMethod":             {"MD5", "SHA1", "SHA256", "SHA384"},
		"DHGroup":                          {"None", "Group1", "Group2", "Group14", "ECP256", "ECP384", "Group24"},
		"CipherTransformConstants":         {"DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES192", "GCMAES256", "None"},
		"AuthenticationTransformConstants": {"MD596", "SHA196", "SHA256128", "GCMAES128", "GCMAES192", "GCMAES256", "None"},
		"PfsGroup":                         {"None", "PFS1", "PFS2", "PFS2048", "ECP256", "ECP384", "PFSMM", "PFS24"},
	}
)

// Every algorithm the platform tables may put in a profile is spelled as
// the platform documents it.
func TestClientPlatformNames(t *testing.T) {
	apple := clientPlatforms["apple"]
	for _, algs := range []clientAlgorithms{apple.ike, apple.esp} {
		for _, c := range algs.ciphers {
			if !slices.Contains(appleEncryptionAlgorithm, c.name) {
				t.Errorf("apple: EncryptionAlgorithm %q is not Apple's", c.name)
			}
		}
		for _, h := range algs.hashes {
			if !slices.Contains(appleIntegrityAlgorithm, h.name) {
				t.Errorf("apple: IntegrityAlgorithm %q is not Apple's", h.name)
			}
		}
		for _, g := range algs.groups {
			if g.id != wire.DH_NONE && !slices.Contains(appleDiffieHellmanGroup, g.id) {
				t.Errorf("apple: DiffieHellmanGroup %d is not Apple's", g.id)
			}
		}
	}
	windows := clientPlatforms["windows"]
	check := func(param string, names ...string) {
		for _, n := range names {
			if !slices.Contains(windowsIPsecValues[param], n) {
				t.Errorf("windows: -%s %s is not a value Windows takes", param, n)
			}
		}
	}
	for _, c := range windows.ike.ciphers {
		check("EncryptionMethod", c.name)
	}
	for _, h := range windows.ike.hashes {
		check("IntegrityCheckMethod", h.name)
	}
	for _, g := range windows.ike.groups {
		check("DHGroup", g.name)
	}
	for _, c := range windows.esp.ciphers {
		check("CipherTransformConstants", c.name)
		if c.aead {
			check("AuthenticationTransformConstants", c.name)
		}
	}
	for _, h := range windows.esp.hashes {
		check("AuthenticationTransformConstants", h.name)
	}
	for _, g := range windows.esp.groups {
		check("PfsGroup", g.name)
	}
}

// The suites each platform gets from the gateway's proposals are the
// strongest it supports, and the gateway accepts them: the one proposal
// the client sends selects the same suite, PFS group included (a Child SA
// rekey).
func TestClientProfileSuites(t *testing.T) {
	for _, tc := range []struct {
		name, platform, ike, esp string
		wantIKE, wantESP         string // strongSwan's syntax; "" for none
	}{
		{"apple defaults", "apple", defaultGatewayIKEProposals, defaultGatewayESPProposals, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519"},
		{"windows defaults", "windows", defaultGatewayIKEProposals, defaultGatewayESPProposals, "aes256-sha384-prfsha384-ecp384", "aes256gcm16"},
		{"android defaults", "android", defaultGatewayIKEProposals, defaultGatewayESPProposals, "aes256gcm16-prfsha256-x25519", "aes256gcm16-x25519"},
		{"apple, CBC only", "apple", "aes256-aes128-sha256-sha1-modp2048-modp1024", "aes128-aes256-sha1-sha256",
			"aes256-sha256-prfsha256-modp2048", "aes256-sha256"},
		{"windows, CBC with PFS", "windows", "aes128-sha256-ecp256", "aes128-sha1-ecp256-modp2048",
			"aes128-sha256-prfsha256-ecp256", "aes128-sha1-ecp256"},
		{"android, PFS optional", "android", "aes128gcm16-prfsha384-ecp256", "chacha20poly1305-x25519-modpnone",
			"aes128gcm16-prfsha384-ecp256", "chacha20poly1305-x25519"},
		{"apple refuses MODP-1024", "apple", "aes256-sha256-modp1024", "aes256-sha256", "", ""},
		{"windows has no ChaCha20", "windows", "aes256-sha256-modp2048", "chacha20poly1305", "aes256-sha256-prfsha256-modp2048", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ikeSuite, espSuite, err := clientSuites(clientPlatforms[tc.platform], tc.ike, tc.esp)
			if tc.wantIKE == "" || tc.wantESP == "" {
				if err == nil {
					t.Fatalf("IKE %s, ESP %s: want an error, got %s and %s", tc.ike, tc.esp,
						ikeSuite.Proposal(wire.ProtoIKE), espSuite.Proposal(wire.ProtoESP))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ikeSuite.Proposal(wire.ProtoIKE); got != tc.wantIKE {
				t.Errorf("IKE %s, want %s", got, tc.wantIKE)
			}
			if got := espSuite.Proposal(wire.ProtoESP); got != tc.wantESP {
				t.Errorf("ESP %s, want %s", got, tc.wantESP)
			}
			gatewayAccepts(t, ike.ParseIKEProposals, tc.ike, ikeSuite.Proposal(wire.ProtoIKE))
			gatewayAccepts(t, ike.ParseESPProposals, tc.esp, espSuite.Proposal(wire.ProtoESP))
		})
	}
}

// gatewayAccepts checks that the gateway's proposals select the client's
// single proposal as it is, its group included.
func gatewayAccepts(t *testing.T, parse func(string) ([]ike.ProposalSpec, error), gateway, client string) {
	t.Helper()
	mine, err := parse(gateway)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := parse(client)
	if err != nil {
		t.Fatalf("the profile's proposal %q: %v", client, err)
	}
	var spi []byte
	if offer[0].Protocol == wire.ProtoESP {
		spi = []byte{1, 2, 3, 4}
	}
	offered, err := ike.BuildProposals(offer, spi)
	if err != nil {
		t.Fatal(err)
	}
	sel, ok := ike.SelectProposal(offered, mine)
	if !ok {
		t.Fatalf("the gateway's %q does not accept the profile's %q", gateway, client)
	}
	want := ike.Suite{Protocol: offer[0].Protocol, Encryption: offer[0].Encryption[0].ID, KeyLength: offer[0].Encryption[0].KeyLength}
	if len(offer[0].Integrity) > 0 {
		want.Integrity = offer[0].Integrity[0]
	}
	if len(offer[0].PRF) > 0 {
		want.PRF = offer[0].PRF[0]
	}
	if len(offer[0].DHGroups) > 0 {
		want.DHGroup = offer[0].DHGroups[0]
	}
	if got := sel.Suite; got.Encryption != want.Encryption || got.KeyLength != want.KeyLength ||
		got.Integrity != want.Integrity || got.PRF != want.PRF || got.DHGroup != want.DHGroup {
		t.Errorf("the gateway chose %+v for the profile's %q", got, client)
	}
}

// cpGatewayPKI makes a PKI whose gateway certificate names
// vpn.example.net.
func cpGatewayPKI(t *testing.T, key testpki.KeyType) *testpki.PKI {
	t.Helper()
	pki, err := testpki.Generate(t.TempDir(), testpki.Options{KeyType: key, GatewayName: "vpn.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

// runGatewayProfileCommand runs `mifsec gateway profile` with args and
// returns what it wrote.
func runGatewayProfileCommand(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "profile")
	if err := newApp().Run(append([]string{"mifsec", "gateway", "profile", "--out", out}, args...)); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// parsePlist parses an XML property list with Python's plistlib, data as
// {"data": base64}.
func parsePlist(t *testing.T, plist []byte) map[string]any {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed: nothing here parses property lists as Apple's tools do")
	}
	const script = `import base64, json, plistlib, sys
def plain(v):
    if isinstance(v, bytes):
        return {"data": base64.b64encode(v).decode()}
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v
json.dump(plain(plistlib.loads(sys.stdin.buffer.read(), fmt=plistlib.FMT_XML)), sys.stdout)`
	cmd := exec.Command(python, "-c", script)
	cmd.Stdin = bytes.NewReader(plist)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plistlib does not parse the profile: %v\n%s", err, plist)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The .mobileconfig parses as a property list with the payloads and the
// IKEv2 keys Apple documents: EAP for the user, the gateway's certificate
// checked against the CA the profile installs, the strongest suites.
func TestClientProfileApple(t *testing.T) {
	for _, tc := range []struct {
		key      testpki.KeyType
		certType string
	}{{testpki.KeyRSA3072, "RSA"}, {testpki.KeyECDSAP256, "ECDSA256"}, {testpki.KeyECDSAP384, "ECDSA384"}} {
		t.Run(tc.key.String(), func(t *testing.T) {
			pki := cpGatewayPKI(t, tc.key)
			out, err := runGatewayProfileCommand(t, "--format", "apple", "--user", "alice", "--server", "vpn.example.net",
				"--cert", pki.Gateway.CertFile, "--ca", pki.CA.CertFile, "--name", "Example & Co")
			if err != nil {
				t.Fatal(err)
			}
			top := parsePlist(t, out)
			if top["PayloadType"] != "Configuration" || top["PayloadVersion"] != 1.0 || top["PayloadDisplayName"] != "Example & Co" {
				t.Errorf("top level: %v", top)
			}
			payloads, _ := top["PayloadContent"].([]any)
			if len(payloads) != 2 {
				t.Fatalf("want a VPN and a root certificate payload, got %v", top["PayloadContent"])
			}
			vpn, root := payloads[0].(map[string]any), payloads[1].(map[string]any)
			uuid := regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-5[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)
			for _, d := range []map[string]any{top, vpn, root} {
				if s, _ := d["PayloadUUID"].(string); !uuid.MatchString(s) {
					t.Errorf("PayloadUUID %q", s)
				}
			}
			if vpn["PayloadType"] != "com.apple.vpn.managed" || vpn["VPNType"] != "IKEv2" || vpn["UserDefinedName"] != "Example & Co" {
				t.Errorf("VPN payload: %v", vpn)
			}
			ikev2, _ := vpn["IKEv2"].(map[string]any)
			for k := range ikev2 {
				if !slices.Contains(appleIKEv2Keys, k) {
					t.Errorf("IKEv2 key %s is not Apple's", k)
				}
			}
			want := map[string]any{
				"RemoteAddress": "vpn.example.net", "RemoteIdentifier": "vpn.example.net", "LocalIdentifier": "alice",
				"AuthenticationMethod": "Certificate", "ExtendedAuthEnabled": 1.0, "AuthName": "alice",
				"CertificateType": tc.certType, "ServerCertificateIssuerCommonName": "mifsec test CA", "EnablePFS": 1.0,
			}
			for k, v := range want {
				if ikev2[k] != v {
					t.Errorf("IKEv2 %s = %v, want %v", k, ikev2[k], v)
				}
			}
			for _, k := range []string{"AuthPassword", "PayloadCertificateUUID", "SharedSecret"} {
				if _, ok := ikev2[k]; ok {
					t.Errorf("IKEv2 has %s: EAP-MSCHAPv2 asks for the password and sends no client certificate", k)
				}
			}
			for name, want := range map[string]map[string]any{
				"IKESecurityAssociationParameters":   {"EncryptionAlgorithm": "AES-256-GCM", "IntegrityAlgorithm": "SHA2-256", "DiffieHellmanGroup": 31.0},
				"ChildSecurityAssociationParameters": {"EncryptionAlgorithm": "AES-256-GCM", "DiffieHellmanGroup": 31.0},
			} {
				sa, _ := ikev2[name].(map[string]any)
				if len(sa) != len(want) {
					t.Errorf("%s = %v, want %v", name, sa, want)
				}
				for k, v := range sa {
					if !slices.Contains(appleSAKeys, k) || want[k] != v {
						t.Errorf("%s: %s = %v, want %v", name, k, v, want[k])
					}
				}
			}
			if root["PayloadType"] != "com.apple.security.root" {
				t.Errorf("root payload: %v", root)
			}
			data, _ := root["PayloadContent"].(map[string]any)
			der, err := base64.StdEncoding.DecodeString(data["data"].(string))
			if err != nil || !bytes.Equal(der, pki.CA.Certificate.Raw) {
				t.Errorf("the root payload holds %d bytes, not the CA (%v)", len(der), err)
			}
		})
	}
}

// The PowerShell script carries what Windows needs: the CA into the
// computer's root store, an IKEv2 connection with EAP to the server, and
// the strongest suites in values Set-VpnConnectionIPsecConfiguration takes.
func TestClientProfileWindows(t *testing.T) {
	pki := cpGatewayPKI(t, testpki.KeyRSA3072)
	out, err := runGatewayProfileCommand(t, "--format", "windows", "--user", `EXAMPLE\o'brien`, "--server", "vpn.example.net",
		"--cert", pki.Gateway.CertFile, "--ca", pki.CA.CertFile, "--name", "Bob's VPN")
	if err != nil {
		t.Fatal(err)
	}
	script := string(out)
	for _, want := range []string{
		"#Requires -RunAsAdministrator",
		"$Name = 'Bob''s VPN'",
		`Import-Certificate -FilePath $CAFile -CertStoreLocation Cert:\LocalMachine\Root`,
		"Add-VpnConnection -Name $Name -ServerAddress 'vpn.example.net' -TunnelType Ikev2 -AuthenticationMethod Eap ",
		`'EXAMPLE\o''brien'`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("the script lacks %q:\n%s", want, script)
		}
	}
	i := strings.Index(script, "Set-VpnConnectionIPsecConfiguration")
	if i < 0 {
		t.Fatalf("no Set-VpnConnectionIPsecConfiguration:\n%s", script)
	}
	command := strings.Join(strings.Fields(strings.ReplaceAll(script[i:strings.Index(script[i:], "\nWrite-Host")+i], "`\n", " ")), " ")
	want := map[string]string{"EncryptionMethod": "AES256", "IntegrityCheckMethod": "SHA384", "DHGroup": "ECP384",
		"CipherTransformConstants": "GCMAES256", "AuthenticationTransformConstants": "GCMAES256", "PfsGroup": "None"}
	for param, value := range want {
		if !strings.Contains(command, " -"+param+" "+value+" ") && !strings.HasSuffix(command, " -"+param+" "+value) {
			t.Errorf("want -%s %s in %q", param, value, command)
		}
		if !slices.Contains(windowsIPsecValues[param], value) {
			t.Errorf("-%s %s is not a value Windows takes", param, value)
		}
	}
	block, _ := pem.Decode([]byte(script[strings.Index(script, "-----BEGIN CERTIFICATE-----"):]))
	if block == nil {
		t.Fatal("the script holds no PEM certificate")
	}
	if ca, err := x509.ParseCertificate(block.Bytes); err != nil || !ca.Equal(pki.CA.Certificate) {
		t.Errorf("the script's certificate is not the CA (%v)", err)
	}
}

// The .sswan file is the JSON strongSwan's Android app imports: an
// ikev2-eap profile with the user's EAP identity, the gateway's address
// and identity, the CA, and proposals in strongSwan's syntax. The same
// gateway and user give the same UUID, so that a new profile replaces the
// old one.
func TestClientProfileAndroid(t *testing.T) {
	pki := cpGatewayPKI(t, testpki.KeyECDSAP256)
	args := []string{"--format", "android", "--server", "vpn.example.net", "--local-id", "@vpn.example.net",
		"--cert", pki.Gateway.CertFile, "--ca", pki.CA.CertFile}
	parse := func(user string) map[string]any {
		out, err := runGatewayProfileCommand(t, append(args, "--user", user)...)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		return v
	}
	p := parse("carol@example.net")
	remote, _ := p["remote"].(map[string]any)
	local, _ := p["local"].(map[string]any)
	for _, c := range []struct {
		key       string
		got, want any
	}{
		{"type", p["type"], "ikev2-eap"},
		{"name", p["name"], "vpn.example.net"},
		{"remote.addr", remote["addr"], "vpn.example.net"},
		{"remote.id", remote["id"], "vpn.example.net"},
		{"local.eap_id", local["eap_id"], "carol@example.net"},
		{"ike-proposal", p["ike-proposal"], "aes256gcm16-prfsha256-x25519"},
		{"esp-proposal", p["esp-proposal"], "aes256gcm16-x25519"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.key, c.got, c.want)
		}
	}
	der, err := base64.StdEncoding.DecodeString(remote["cert"].(string))
	if err != nil || !bytes.Equal(der, pki.CA.Certificate.Raw) {
		t.Errorf("remote.cert is not the CA (%v)", err)
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if !uuid.MatchString(p["uuid"].(string)) {
		t.Errorf("uuid %q", p["uuid"])
	}
	if again := parse("carol@example.net"); again["uuid"] != p["uuid"] {
		t.Errorf("the same profile got another UUID: %v, %v", again["uuid"], p["uuid"])
	}
	if other := parse("dave@example.net"); other["uuid"] == p["uuid"] {
		t.Errorf("another user's profile has the same UUID %v", p["uuid"])
	}
}

// A profile the clients would refuse is not written.
func TestClientProfileRefuses(t *testing.T) {
	pki := cpGatewayPKI(t, testpki.KeyECDSAP256)
	ed := cpGatewayPKI(t, testpki.KeyEd25519)
	base := func(format, server, cert, ca string) []string {
		args := []string{"--format", format, "--user", "alice", "--server", server, "--cert", cert}
		if ca != "" {
			args = append(args, "--ca", ca)
		}
		return args
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"server not in the certificate", base("apple", "other.example.net", pki.Gateway.CertFile, pki.CA.CertFile), `ID_FQDN "other.example.net" is not in certificate`},
		{"a client certificate", base("windows", "vpn.example.net", pki.Client.CertFile, pki.CA.CertFile), "clients would refuse the gateway"},
		{"another CA", base("android", "vpn.example.net", pki.Gateway.CertFile, ed.CA.CertFile), "does not chain to a trusted CA"},
		{"no CA", base("android", "vpn.example.net", pki.Gateway.CertFile, ""), "--ca: needed"},
		{"Ed25519 for Apple", base("apple", "vpn.example.net", ed.Gateway.CertFile, ed.CA.CertFile), "not ed25519.PublicKey keys"},
		{"unknown format", base("symbian", "vpn.example.net", pki.Gateway.CertFile, pki.CA.CertFile), `--format: "symbian" is not apple, windows, android`},
		{"a DN as gateway identity", append(base("android", "vpn.example.net", pki.Gateway.CertFile, pki.CA.CertFile), "--local-id", "CN=vpn"), "not a DNS name or an address"},
		{"a line break in the user", append(base("android", "vpn.example.net", pki.Gateway.CertFile, pki.CA.CertFile), "--user", "a\nb"), "control character"},
		{"no suite Apple supports", append(base("apple", "vpn.example.net", pki.Gateway.CertFile, pki.CA.CertFile), "--ike", "aes128-sha1-modp1024"), "apple clients: none of the IKE proposals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runGatewayProfileCommand(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
