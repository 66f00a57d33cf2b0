package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/template"

	"github.com/mifsec/mifsec/ike/wire"
)

// The three formats of `mifsec gateway profile`: Apple's configuration
// profile (a property list with a com.apple.vpn.managed payload of VPNType
// IKEv2 and a com.apple.security.root payload with the CA), a PowerShell
// script for Windows (Import-Certificate, Add-VpnConnection,
// Set-VpnConnectionIPsecConfiguration) and strongSwan's JSON profile for
// its Android app.

// remoteIDText is the gateway identity as the clients' settings write it:
// the DNS name or the address.
func (p *clientProfile) remoteIDText() string {
	if p.RemoteID.Type == wire.IDFQDN {
		return string(p.RemoteID.Data)
	}
	return p.RemoteID.String()
}

// plistDict is a property list dictionary, its keys in the order written.
type plistDict []plistEntry

type plistEntry struct {
	key   string
	value any // string, int, []byte, plistDict or []any
}

// writePlist writes root as an XML property list.
func writePlist(w io.Writer, root plistDict) error {
	const doctype = `<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n"
	if _, err := io.WriteString(w, xml.Header+doctype); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "\t")
	plist := xml.StartElement{Name: xml.Name{Local: "plist"}, Attr: []xml.Attr{{Name: xml.Name{Local: "version"}, Value: "1.0"}}}
	if err := enc.EncodeToken(plist); err != nil {
		return err
	}
	if err := encodePlistValue(enc, root); err != nil {
		return err
	}
	if err := enc.EncodeToken(plist.End()); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func encodePlistValue(enc *xml.Encoder, v any) error {
	element := func(name, text string) error {
		return enc.EncodeElement(text, xml.StartElement{Name: xml.Name{Local: name}})
	}
	switch v := v.(type) {
	case string:
		return element("string", v)
	case int:
		return element("integer", strconv.Itoa(v))
	case []byte:
		return element("data", base64.StdEncoding.EncodeToString(v))
	case []any:
		start := xml.StartElement{Name: xml.Name{Local: "array"}}
		if err := enc.EncodeToken(start); err != nil {
			return err
		}
		for _, item := range v {
			if err := encodePlistValue(enc, item); err != nil {
				return err
			}
		}
		return enc.EncodeToken(start.End())
	case plistDict:
		start := xml.StartElement{Name: xml.Name{Local: "dict"}}
		if err := enc.EncodeToken(start); err != nil {
			return err
		}
		for _, e := range v {
			if err := element("key", e.key); err != nil {
				return err
			}
			if err := encodePlistValue(enc, e.value); err != nil {
				return fmt.Errorf("%s: %w", e.key, err)
			}
		}
		return enc.EncodeToken(start.End())
	}
	return fmt.Errorf("no property list type for %T", v)
}

// appleCertificateType is the IKEv2 dictionary's CertificateType of the
// gateway's key.
func appleCertificateType(key any) (string, error) {
	switch key := key.(type) {
	case *rsa.PublicKey:
		return "RSA", nil
	case *ecdsa.PublicKey:
		switch key.Curve {
		case elliptic.P256():
			return "ECDSA256", nil
		case elliptic.P384():
			return "ECDSA384", nil
		case elliptic.P521():
			return "ECDSA521", nil
		}
	}
	return "", fmt.Errorf("Apple clients check RSA and ECDSA gateway certificates, not %T keys", key)
}

// appleSAParameters is an IKESecurityAssociationParameters or
// ChildSecurityAssociationParameters dictionary. With AES-GCM in IKE the
// integrity algorithm names the PRF; a Child SA without PFS leaves the
// group out.
func appleSAParameters(s clientSuite, protocol wire.ProtocolID) plistDict {
	d := plistDict{{"EncryptionAlgorithm", s.Cipher.name}}
	if protocol == wire.ProtoIKE || !s.AEAD() {
		d = append(d, plistEntry{"IntegrityAlgorithm", s.Hash.name})
	}
	if s.Group.id != wire.DH_NONE {
		d = append(d, plistEntry{"DiffieHellmanGroup", int(s.Group.id)})
	}
	return d
}

// writeAppleProfile writes a configuration profile (.mobileconfig) for iOS
// and macOS: the IKEv2 VPN payload and the CA as a root certificate payload.
// AuthenticationMethod Certificate with ExtendedAuthEnabled is EAP for the
// client and a certificate for the gateway; ServerCertificateIssuerCommonName
// makes the client send a certificate request, without which a gateway
// need not send its certificate.
func writeAppleProfile(w io.Writer, p *clientProfile) error {
	certType, err := appleCertificateType(p.Gateway.PublicKey)
	if err != nil {
		return err
	}
	issuer := p.Gateway.Issuer.CommonName
	if issuer == "" {
		return errors.New("Apple clients ask for the gateway certificate by its issuer's common name, and the --cert issuer has none")
	}
	identifier := "mifsec." + p.Server + "." + p.User
	pfs := 0
	if p.ESP.Group.id != wire.DH_NONE {
		pfs = 1
	}
	vpn := plistDict{
		{"IKEv2", plistDict{
			{"RemoteAddress", p.Server},
			{"RemoteIdentifier", p.remoteIDText()},
			{"LocalIdentifier", p.User},
			{"AuthenticationMethod", "Certificate"},
			{"CertificateType", certType},
			{"ServerCertificateIssuerCommonName", issuer},
			{"ExtendedAuthEnabled", 1},
			{"AuthName", p.User},
			{"IKESecurityAssociationParameters", appleSAParameters(p.IKE, wire.ProtoIKE)},
			{"ChildSecurityAssociationParameters", appleSAParameters(p.ESP, wire.ProtoESP)},
			{"EnablePFS", pfs},
			{"DeadPeerDetectionRate", "Medium"},
		}},
		{"PayloadDescription", "IKEv2 VPN to " + p.Server + " as " + p.User},
		{"PayloadDisplayName", p.Name},
		{"PayloadIdentifier", identifier + ".vpn"},
		{"PayloadType", "com.apple.vpn.managed"},
		{"PayloadUUID", profileUUID("apple", p.Server, p.User, "vpn")},
		{"PayloadVersion", 1},
		{"UserDefinedName", p.Name},
		{"VPNType", "IKEv2"},
	}
	root := plistDict{
		{"PayloadCertificateFileName", "mifsec-ca.cer"},
		{"PayloadContent", p.CA.Raw},
		{"PayloadDescription", "The CA that vouches for the VPN gateway " + p.Server},
		{"PayloadDisplayName", p.CA.Subject.CommonName},
		{"PayloadIdentifier", identifier + ".ca"},
		{"PayloadType", "com.apple.security.root"},
		{"PayloadUUID", profileUUID("apple", p.Server, p.User, "ca")},
		{"PayloadVersion", 1},
	}
	return writePlist(w, plistDict{
		{"PayloadContent", []any{vpn, root}},
		{"PayloadDescription", "VPN " + p.Name + " for " + p.User},
		{"PayloadDisplayName", p.Name},
		{"PayloadIdentifier", identifier},
		{"PayloadType", "Configuration"},
		{"PayloadUUID", profileUUID("apple", p.Server, p.User)},
		{"PayloadVersion", 1},
	})
}

// psQuote quotes s as a PowerShell single-quoted string.
func psQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

var windowsScript = template.Must(template.New("windows").Funcs(template.FuncMap{"q": psQuote}).Parse(
	`# VPN {{.Name}} ({{.Server}}) for {{.User}}, written by mifsec gateway profile.
# Run in PowerShell as administrator on Windows 10 or 11: it trusts the CA of
# the gateway's certificate on this computer and adds the connection for all
# of its users. Connect from the network settings with user name {{.User}}
# and the password you were given.
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
$Name = {{q .Name}}
$CAFile = Join-Path $env:TEMP 'mifsec-ca-{{.CASerial}}.cer'
Set-Content -Path $CAFile -Encoding ascii -Value @'
{{.CAPEM}}'@
Import-Certificate -FilePath $CAFile -CertStoreLocation Cert:\LocalMachine\Root | Out-Null
Remove-Item -Path $CAFile
if (Get-VpnConnection -Name $Name -AllUserConnection -ErrorAction SilentlyContinue) {
    Remove-VpnConnection -Name $Name -AllUserConnection -Force
}
Add-VpnConnection -Name $Name -ServerAddress {{q .Server}} -TunnelType Ikev2 -AuthenticationMethod Eap -EncryptionLevel Required -AllUserConnection -Force
# IKE {{.IKEProposal}}, ESP {{.ESPProposal}}
Set-VpnConnectionIPsecConfiguration -ConnectionName $Name -AllUserConnection -Force ` + "`" + `
    -EncryptionMethod {{.EncryptionMethod}} -IntegrityCheckMethod {{.IntegrityCheckMethod}} -DHGroup {{.DHGroup}} ` + "`" + `
    -CipherTransformConstants {{.CipherTransform}} -AuthenticationTransformConstants {{.AuthenticationTransform}} -PfsGroup {{.PFSGroup}}
Write-Host ('VPN ' + $Name + ' added: connect as ' + {{q .User}} + '.')
`))

// writeWindowsProfile writes a PowerShell script that imports the CA into
// the computer's root store (Windows checks the gateway certificate
// against it, and that it names the server dialed), adds an IKEv2
// connection with EAP (EAP-MSCHAPv2, Windows' default for it) and sets
// its IPsec configuration to the chosen suites.
func writeWindowsProfile(w io.Writer, p *clientProfile) error {
	authTransform := p.ESP.Hash.name
	if p.ESP.AEAD() {
		authTransform = p.ESP.Cipher.name // Windows names AES-GCM for both
	}
	return windowsScript.Execute(w, struct {
		Name, Server, User                     string
		CAPEM, CASerial                        string
		IKEProposal, ESPProposal               string
		EncryptionMethod, IntegrityCheckMethod string
		DHGroup, CipherTransform               string
		AuthenticationTransform, PFSGroup      string
	}{
		Name: p.Name, Server: p.Server, User: p.User,
		CAPEM:                   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Raw})),
		CASerial:                p.CA.SerialNumber.Text(16),
		IKEProposal:             p.IKE.Proposal(wire.ProtoIKE),
		ESPProposal:             p.ESP.Proposal(wire.ProtoESP),
		EncryptionMethod:        p.IKE.Cipher.name,
		IntegrityCheckMethod:    p.IKE.Hash.name,
		DHGroup:                 p.IKE.Group.name,
		CipherTransform:         p.ESP.Cipher.name,
		AuthenticationTransform: authTransform,
		PFSGroup:                p.ESP.Group.name,
	})
}

// sswanProfile is strongSwan's VPN profile for its Android app (.sswan):
// type ikev2-eap authenticates the user with EAP and the gateway with a
// certificate, remote.cert is the CA the app installs for it.
type sswanProfile struct {
	UUID   string `json:"uuid"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Remote struct {
		Addr string `json:"addr"`
		ID   string `json:"id"`
		Cert string `json:"cert"`
	} `json:"remote"`
	Local struct {
		EAPID string `json:"eap_id"`
	} `json:"local"`
	IKEProposal string `json:"ike-proposal"`
	ESPProposal string `json:"esp-proposal"`
}

// writeAndroidProfile writes the strongSwan app's profile as JSON.
func writeAndroidProfile(w io.Writer, p *clientProfile) error {
	s := sswanProfile{
		UUID:        strings.ToLower(profileUUID("android", p.Server, p.User)),
		Name:        p.Name,
		Type:        "ikev2-eap",
		IKEProposal: p.IKE.Proposal(wire.ProtoIKE),
		ESPProposal: p.ESP.Proposal(wire.ProtoESP),
	}
	s.Remote.Addr, s.Remote.ID = p.Server, p.RemoteID.String()
	s.Remote.Cert = base64.StdEncoding.EncodeToString(p.CA.Raw)
	s.Local.EAPID = p.User
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}
