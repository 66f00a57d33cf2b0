package ike

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/mifsec/mifsec/ike/wire"
)

// Identity is the content of an IDi or IDr payload (RFC 7296 §3.5): the
// identification type and its data. For ID_DER_ASN1_DN the data is the DER
// encoding of an X.501 Name (a SEQUENCE of RDNs).
type Identity struct {
	Type wire.IDType
	Data []byte
}

// idPayloadReservedLen is the length of the RESERVED field that follows
// the ID Type in an ID payload body.
const idPayloadReservedLen = 3

// ParseIdentity turns the textual form of an identity into an Identity,
// following strongSwan's conventions:
//
//   - an IPv4 or IPv6 literal gives ID_IPV4_ADDR or ID_IPV6_ADDR;
//   - "@host" forces ID_FQDN "host"; "@#0a0b" is an ID_KEY_ID in hex;
//   - "user@host" gives ID_RFC822_ADDR;
//   - a string with '=' such as "C=CH, O=strongSwan, CN=moon" gives an
//     ID_DER_ASN1_DN, encoded with its RDNs in the order written;
//   - anything else is an ID_FQDN.
//
// An explicit type prefix overrides the guess: "fqdn:", "dns:", "email:",
// "rfc822:", "userfqdn:", "asn1dn:", "keyid:" (text, or "#hex"), "ipv4:" and
// "ipv6:".
func ParseIdentity(s string) (Identity, error) {
	if s == "" {
		return Identity{}, errors.New("ike: empty identity")
	}
	if id, ok, err := parsePrefixedIdentity(s); ok {
		return id, err
	}
	if strings.HasPrefix(s, "@") {
		rest := s[1:]
		switch {
		case strings.HasPrefix(rest, "#"):
			return parseKeyIDHex(rest[1:])
		case rest == "":
			return Identity{}, errors.New(`ike: identity "@" has no name after '@'`)
		default:
			return Identity{Type: wire.IDFQDN, Data: []byte(rest)}, nil
		}
	}
	if addr, err := netip.ParseAddr(s); err == nil {
		return identityFromAddr(addr)
	}
	if strings.Contains(s, "=") {
		der, err := encodeDN(s)
		if err == nil {
			return Identity{Type: wire.IDDN, Data: der}, nil
		}
		if looksLikeDN(s) {
			return Identity{}, fmt.Errorf("ike: identity %q: %w", s, err)
		}
	}
	if i := strings.IndexByte(s, '@'); i > 0 {
		return Identity{Type: wire.IDRFC822, Data: []byte(s)}, nil
	}
	return Identity{Type: wire.IDFQDN, Data: []byte(s)}, nil
}

// looksLikeDN reports whether s starts with an attribute type followed by
// '=', as in "CN=carol@example.org".
func looksLikeDN(s string) bool {
	eq := strings.IndexByte(s, '=')
	if eq <= 0 {
		return false
	}
	key := strings.TrimSpace(s[:eq])
	_, ok := dnAttributeOID(key)
	return ok
}

func parsePrefixedIdentity(s string) (Identity, bool, error) {
	colon := strings.IndexByte(s, ':')
	if colon <= 0 {
		return Identity{}, false, nil
	}
	prefix, rest := strings.ToLower(s[:colon]), s[colon+1:]
	switch prefix {
	case "fqdn", "dns":
		if rest == "" {
			return Identity{}, true, fmt.Errorf("ike: identity %q: empty name", s)
		}
		return Identity{Type: wire.IDFQDN, Data: []byte(rest)}, true, nil
	case "email", "rfc822", "userfqdn":
		if rest == "" {
			return Identity{}, true, fmt.Errorf("ike: identity %q: empty address", s)
		}
		return Identity{Type: wire.IDRFC822, Data: []byte(rest)}, true, nil
	case "asn1dn":
		der, err := encodeDN(rest)
		if err != nil {
			return Identity{}, true, fmt.Errorf("ike: identity %q: %w", s, err)
		}
		return Identity{Type: wire.IDDN, Data: der}, true, nil
	case "keyid":
		if strings.HasPrefix(rest, "#") {
			id, err := parseKeyIDHex(rest[1:])
			return id, true, err
		}
		if rest == "" {
			return Identity{}, true, fmt.Errorf("ike: identity %q: empty key ID", s)
		}
		return Identity{Type: wire.IDKeyID, Data: []byte(rest)}, true, nil
	case "ipv4", "ipv6":
		addr, err := netip.ParseAddr(rest)
		if err != nil {
			return Identity{}, true, fmt.Errorf("ike: identity %q: %w", s, err)
		}
		if prefix == "ipv4" && !addr.Is4() || prefix == "ipv6" && addr.Is4() {
			return Identity{}, true, fmt.Errorf("ike: identity %q: address family does not match the prefix", s)
		}
		id, err := identityFromAddr(addr)
		return id, true, err
	}
	return Identity{}, false, nil
}

func parseKeyIDHex(h string) (Identity, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(h, ":", ""))
	if err != nil || len(b) == 0 {
		return Identity{}, fmt.Errorf("ike: key ID %q is not a non-empty hex string", h)
	}
	return Identity{Type: wire.IDKeyID, Data: b}, nil
}

func identityFromAddr(addr netip.Addr) (Identity, error) {
	if addr.Zone() != "" {
		return Identity{}, fmt.Errorf("ike: identity %s: an address with a zone cannot be an identity", addr)
	}
	if addr.Is4() {
		a := addr.As4()
		return Identity{Type: wire.IDIPv4, Data: a[:]}, nil
	}
	a := addr.As16()
	return Identity{Type: wire.IDIPv6, Data: a[:]}, nil
}

// IdentityFromAddr returns the ID_IPV4_ADDR or ID_IPV6_ADDR identity of
// addr.
func IdentityFromAddr(addr netip.Addr) (Identity, error) {
	if !addr.IsValid() {
		return Identity{}, errors.New("ike: invalid address as identity")
	}
	return identityFromAddr(addr)
}

// String returns the textual form of id; ParseIdentity(id.String())
// gives back an equal identity.
func (id Identity) String() string {
	switch id.Type {
	case wire.IDIPv4, wire.IDIPv6:
		addr, ok := netip.AddrFromSlice(id.Data)
		if !ok || id.Type == wire.IDIPv4 && len(id.Data) != 4 || id.Type == wire.IDIPv6 && len(id.Data) != 16 {
			return fmt.Sprintf("%s:#%x", describeIDType(id.Type), id.Data)
		}
		return addr.String()
	case wire.IDFQDN:
		name := string(id.Data)
		if fqdnNeedsPrefix(name) {
			return "fqdn:" + name
		}
		return name
	case wire.IDRFC822:
		addr := string(id.Data)
		if emailNeedsPrefix(addr) {
			return "email:" + addr
		}
		return addr
	case wire.IDDN:
		s, err := formatDN(id.Data)
		if err != nil {
			return fmt.Sprintf("asn1dn:#%x", id.Data)
		}
		if !strings.Contains(s, "=") {
			return "asn1dn:" + s
		}
		return s
	case wire.IDKeyID:
		return "@#" + hex.EncodeToString(id.Data)
	}
	return fmt.Sprintf("%s:#%x", describeIDType(id.Type), id.Data)
}

// fqdnNeedsPrefix reports whether the bare name would be parsed back as
// something other than an FQDN.
func fqdnNeedsPrefix(name string) bool {
	if name == "" || strings.ContainsAny(name, "@=") || strings.HasPrefix(name, "#") {
		return true
	}
	return addrLike(name) || hasIdentityPrefix(name)
}

// emailNeedsPrefix reports whether the bare address would be parsed back
// as something other than an email address.
func emailNeedsPrefix(addr string) bool {
	if strings.IndexByte(addr, '@') <= 0 || addrLike(addr) || hasIdentityPrefix(addr) {
		return true
	}
	if !strings.Contains(addr, "=") {
		return false
	}
	_, err := encodeDN(addr)
	return err == nil || looksLikeDN(addr)
}

func addrLike(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func hasIdentityPrefix(s string) bool {
	colon := strings.IndexByte(s, ':')
	if colon <= 0 {
		return false
	}
	switch strings.ToLower(s[:colon]) {
	case "fqdn", "dns", "email", "rfc822", "userfqdn", "asn1dn", "keyid", "ipv4", "ipv6":
		return true
	}
	return false
}

// Equal reports whether id and other name the same identity. Types must
// match; FQDNs compare without regard to case, as DNS names do; DNs
// compare by their DER encoding or, failing that, by the RFC 5280 §7.1
// comparison of their attribute values; all other data must be
// byte-for-byte equal.
func (id Identity) Equal(other Identity) bool {
	if id.Type != other.Type {
		return false
	}
	switch id.Type {
	case wire.IDFQDN:
		return strings.EqualFold(strings.TrimSuffix(string(id.Data), "."), strings.TrimSuffix(string(other.Data), "."))
	case wire.IDRFC822:
		return emailEqual(string(id.Data), string(other.Data))
	case wire.IDDN:
		return dnEqual(id.Data, other.Data)
	}
	return bytes.Equal(id.Data, other.Data)
}

// PayloadBody returns the body of an ID payload carrying id: ID Type,
// three RESERVED zero bytes and the identification data (RFC 7296 §3.5).
// This is the input of the prf that yields MACedIDForI and MACedIDForR.
func (id Identity) PayloadBody() []byte {
	body := make([]byte, 1+idPayloadReservedLen+len(id.Data))
	body[0] = byte(id.Type)
	copy(body[1+idPayloadReservedLen:], id.Data)
	return body
}

// parseIdentityPayloadBody decodes the body of an IDi or IDr payload
// (the bytes after the generic payload header). It checks that the data
// fits the type; RESERVED bytes are ignored as RFC 7296 requires.
func parseIdentityPayloadBody(body []byte) (Identity, error) {
	if len(body) < 1+idPayloadReservedLen {
		return Identity{}, fmt.Errorf("ike: ID payload body of %d bytes is shorter than its %d-byte header", len(body), 1+idPayloadReservedLen)
	}
	id := Identity{Type: wire.IDType(body[0]), Data: bytes.Clone(body[1+idPayloadReservedLen:])}
	if err := id.validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

func (id Identity) validate() error {
	switch id.Type {
	case wire.IDIPv4:
		if len(id.Data) != 4 {
			return fmt.Errorf("ike: ID_IPV4_ADDR with %d bytes of data, want 4", len(id.Data))
		}
	case wire.IDIPv6:
		if len(id.Data) != 16 {
			return fmt.Errorf("ike: ID_IPV6_ADDR with %d bytes of data, want 16", len(id.Data))
		}
	case wire.IDFQDN, wire.IDRFC822, wire.IDKeyID:
		if len(id.Data) == 0 {
			return fmt.Errorf("ike: %s identity with empty data", describeIDType(id.Type))
		}
	case wire.IDDN:
		if _, err := parseDN(id.Data); err != nil {
			return fmt.Errorf("ike: ID_DER_ASN1_DN: %w", err)
		}
	default:
		if len(id.Data) == 0 {
			return fmt.Errorf("ike: %s identity with empty data", describeIDType(id.Type))
		}
	}
	return nil
}

// MatchesCertificate reports whether certificate c names id: an FQDN must
// be one of its DNS subjectAltNames, an email address one of its
// rfc822Name subjectAltNames, an IP address one of its iPAddress
// subjectAltNames, a DN must equal its subject, and a key ID its subject
// key identifier (RFC 4945 §3.1, RFC 5280 §7).
func (id Identity) MatchesCertificate(c *x509.Certificate) bool {
	if c == nil {
		return false
	}
	switch id.Type {
	case wire.IDFQDN:
		want := strings.TrimSuffix(string(id.Data), ".")
		for _, name := range c.DNSNames {
			if want != "" && strings.EqualFold(strings.TrimSuffix(name, "."), want) {
				return true
			}
		}
	case wire.IDRFC822:
		for _, addr := range c.EmailAddresses {
			if emailEqual(string(id.Data), addr) {
				return true
			}
		}
	case wire.IDIPv4, wire.IDIPv6:
		want, ok := netip.AddrFromSlice(id.Data)
		if !ok || id.Type == wire.IDIPv4 && len(id.Data) != 4 || id.Type == wire.IDIPv6 && len(id.Data) != 16 {
			return false
		}
		for _, ip := range c.IPAddresses {
			got, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			if id.Type == wire.IDIPv4 {
				got = got.Unmap()
			}
			if got == want {
				return true
			}
		}
	case wire.IDDN:
		return len(id.Data) > 0 && dnEqual(id.Data, c.RawSubject)
	case wire.IDKeyID:
		return len(id.Data) > 0 && len(c.SubjectKeyId) > 0 && bytes.Equal(id.Data, c.SubjectKeyId)
	}
	return false
}

// emailEqual compares two email addresses: the local part exactly, the
// domain without regard to case (RFC 5280 §7.5).
func emailEqual(a, b string) bool {
	ia, ib := strings.LastIndexByte(a, '@'), strings.LastIndexByte(b, '@')
	if ia < 0 || ib < 0 {
		return a == b
	}
	return a[:ia] == b[:ib] && strings.EqualFold(a[ia+1:], b[ib+1:])
}

func describeIDType(t wire.IDType) string {
	switch t {
	case wire.IDIPv4:
		return "ID_IPV4_ADDR"
	case wire.IDFQDN:
		return "ID_FQDN"
	case wire.IDRFC822:
		return "ID_RFC822_ADDR"
	case wire.IDIPv6:
		return "ID_IPV6_ADDR"
	case wire.IDDN:
		return "ID_DER_ASN1_DN"
	case wire.IDKeyID:
		return "ID_KEY_ID"
	}
	return fmt.Sprintf("idtype%d", uint8(t))
}

// Distinguished names.

// dnAttribute is one AttributeTypeAndValue of an RDN, keeping the value's
// original encoding.
type dnAttribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// dnAttributeSET is a RelativeDistinguishedName. The suffix SET makes
// encoding/asn1 encode it as a SET OF.
type dnAttributeSET []dnAttribute

type dnSequence []dnAttributeSET

type dnAttributeName struct {
	names     []string // first is the preferred name
	oid       asn1.ObjectIdentifier
	stringTag int // 0: PrintableString when possible, else UTF8String
}

var dnAttributeNames = []dnAttributeName{
	{names: []string{"C"}, oid: asn1.ObjectIdentifier{2, 5, 4, 6}, stringTag: asn1.TagPrintableString},
	{names: []string{"ST", "S"}, oid: asn1.ObjectIdentifier{2, 5, 4, 8}},
	{names: []string{"L"}, oid: asn1.ObjectIdentifier{2, 5, 4, 7}},
	{names: []string{"O"}, oid: asn1.ObjectIdentifier{2, 5, 4, 10}},
	{names: []string{"OU"}, oid: asn1.ObjectIdentifier{2, 5, 4, 11}},
	{names: []string{"CN"}, oid: asn1.ObjectIdentifier{2, 5, 4, 3}},
	{names: []string{"SN", "surname"}, oid: asn1.ObjectIdentifier{2, 5, 4, 4}},
	{names: []string{"serialNumber"}, oid: asn1.ObjectIdentifier{2, 5, 4, 5}, stringTag: asn1.TagPrintableString},
	{names: []string{"street"}, oid: asn1.ObjectIdentifier{2, 5, 4, 9}},
	{names: []string{"T", "title"}, oid: asn1.ObjectIdentifier{2, 5, 4, 12}},
	{names: []string{"D", "description"}, oid: asn1.ObjectIdentifier{2, 5, 4, 13}},
	{names: []string{"postalCode"}, oid: asn1.ObjectIdentifier{2, 5, 4, 17}},
	{names: []string{"N", "name"}, oid: asn1.ObjectIdentifier{2, 5, 4, 41}},
	{names: []string{"G", "GN", "givenName"}, oid: asn1.ObjectIdentifier{2, 5, 4, 42}},
	{names: []string{"I", "initials"}, oid: asn1.ObjectIdentifier{2, 5, 4, 43}},
	{names: []string{"dnQualifier"}, oid: asn1.ObjectIdentifier{2, 5, 4, 46}, stringTag: asn1.TagPrintableString},
	{names: []string{"pseudonym"}, oid: asn1.ObjectIdentifier{2, 5, 4, 65}},
	{names: []string{"E", "Email", "emailAddress"}, oid: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, stringTag: asn1.TagIA5String},
	{names: []string{"DC"}, oid: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, stringTag: asn1.TagIA5String},
	{names: []string{"UID"}, oid: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}},
}

func dnAttributeOID(key string) (dnAttributeName, bool) {
	for _, a := range dnAttributeNames {
		for _, n := range a.names {
			if strings.EqualFold(n, key) {
				return a, true
			}
		}
	}
	if oid, ok := parseDottedOID(key); ok {
		return dnAttributeName{names: []string{key}, oid: oid}, true
	}
	return dnAttributeName{}, false
}

func dnAttributeKey(oid asn1.ObjectIdentifier) string {
	for _, a := range dnAttributeNames {
		if a.oid.Equal(oid) {
			return a.names[0]
		}
	}
	return oid.String()
}

func parseDottedOID(s string) (asn1.ObjectIdentifier, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, false
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 9 {
			return nil, false
		}
		n := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return nil, false
			}
			n = n*10 + int(c-'0')
		}
		oid[i] = n
	}
	if oid[0] > 2 || oid[0] < 2 && oid[1] > 39 {
		return nil, false
	}
	return oid, true
}

// encodeDN encodes a textual DN such as "C=CH, O=strongSwan, CN=moon" to
// DER, keeping the RDNs in the order written. '+' joins attributes of a
// multi-valued RDN; '\' escapes the next character; a value may be
// double-quoted; "#hex" gives a value's DER encoding directly.
func encodeDN(s string) ([]byte, error) {
	rdns, err := splitDN(s)
	if err != nil {
		return nil, err
	}
	var seq dnSequence
	for _, rdn := range rdns {
		var set dnAttributeSET
		for _, ava := range rdn {
			attr, ok := dnAttributeOID(ava.key)
			if !ok {
				return nil, fmt.Errorf("unknown DN attribute type %q", ava.key)
			}
			value, err := encodeDNValue(attr, ava)
			if err != nil {
				return nil, fmt.Errorf("DN attribute %s: %w", ava.key, err)
			}
			set = append(set, dnAttribute{Type: attr.oid, Value: value})
		}
		seq = append(seq, set)
	}
	if len(seq) == 0 {
		return nil, errors.New("DN has no attributes")
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		return nil, fmt.Errorf("encode DN: %w", err)
	}
	return der, nil
}

func encodeDNValue(attr dnAttributeName, ava dnAVA) (asn1.RawValue, error) {
	if ava.hexDER != nil {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(ava.hexDER, &v)
		if err != nil || len(rest) != 0 {
			return asn1.RawValue{}, errors.New("#hex value is not one DER element")
		}
		return v, nil
	}
	value := ava.value
	if !utf8.ValidString(value) {
		return asn1.RawValue{}, errors.New("value is not valid UTF-8")
	}
	tag := attr.stringTag
	switch tag {
	case asn1.TagPrintableString:
		if !isPrintableString(value) {
			if attr.oid.Equal(asn1.ObjectIdentifier{2, 5, 4, 6}) {
				return asn1.RawValue{}, fmt.Errorf("country %q is not a PrintableString", value)
			}
			tag = asn1.TagUTF8String
		}
	case asn1.TagIA5String:
		for i := 0; i < len(value); i++ {
			if value[i] >= utf8.RuneSelf {
				tag = asn1.TagUTF8String
				break
			}
		}
	default:
		tag = asn1.TagPrintableString
		if !isPrintableString(value) {
			tag = asn1.TagUTF8String
		}
	}
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: []byte(value)}, nil
}

// isPrintableString reports whether s fits the ASN.1 PrintableString
// character set.
func isPrintableString(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte(" '()+,-./:=?", b) >= 0:
		default:
			return false
		}
	}
	return true
}

type dnAVA struct {
	key    string
	value  string
	hexDER []byte
}

// splitDN splits a textual DN into RDNs of attribute/value pairs.
func splitDN(s string) ([][]dnAVA, error) {
	var (
		rdns    [][]dnAVA
		current []dnAVA
		i       int
	)
	for {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return nil, fmt.Errorf("DN component %q has no '='", s[i:])
		}
		key := strings.TrimSpace(s[i : i+eq])
		if key == "" {
			return nil, errors.New("DN component with an empty attribute type")
		}
		i += eq + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		ava := dnAVA{key: key}
		var (
			value    strings.Builder
			quoted   bool
			trailing int // unescaped trailing spaces to drop
		)
		if i < len(s) && s[i] == '#' {
			j := i + 1
			for j < len(s) && s[j] != ',' && s[j] != '+' && s[j] != ';' {
				j++
			}
			raw, err := hex.DecodeString(strings.TrimSpace(s[i+1 : j]))
			if err != nil || len(raw) == 0 {
				return nil, fmt.Errorf("DN attribute %s: bad #hex value", key)
			}
			ava.hexDER = raw
			i = j
		} else {
			if i < len(s) && s[i] == '"' {
				quoted = true
				i++
			}
		value:
			for i < len(s) {
				c := s[i]
				switch {
				case c == '\\':
					if i+1 >= len(s) {
						return nil, fmt.Errorf("DN attribute %s: dangling '\\'", key)
					}
					if isHexDigit(s[i+1]) && i+2 < len(s) && isHexDigit(s[i+2]) {
						b, _ := hex.DecodeString(s[i+1 : i+3])
						value.WriteByte(b[0])
						i += 3
					} else {
						value.WriteByte(s[i+1])
						i += 2
					}
					trailing = 0
					continue
				case quoted && c == '"':
					i++
					quoted = false
					for i < len(s) && s[i] == ' ' {
						i++
					}
					break value
				case quoted:
				case c == ',' || c == '+' || c == ';':
					break value
				case c == ' ':
					trailing++
				default:
					trailing = 0
				}
				value.WriteByte(c)
				i++
			}
			if quoted {
				return nil, fmt.Errorf("DN attribute %s: unterminated quote", key)
			}
			v := value.String()
			ava.value = v[:len(v)-trailing]
			if ava.value == "" {
				return nil, fmt.Errorf("DN attribute %s has an empty value", key)
			}
		}
		current = append(current, ava)
		if i >= len(s) {
			rdns = append(rdns, current)
			return rdns, nil
		}
		switch s[i] {
		case '+':
		case ',', ';':
			rdns = append(rdns, current)
			current = nil
		default:
			return nil, fmt.Errorf("DN attribute %s: unexpected %q after the value", key, s[i])
		}
		i++
	}
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// parseDN decodes the DER encoding of a Name.
func parseDN(der []byte) (dnSequence, error) {
	var seq dnSequence
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, fmt.Errorf("malformed DN: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("malformed DN: trailing data")
	}
	for _, rdn := range seq {
		if len(rdn) == 0 {
			return nil, errors.New("malformed DN: empty RDN")
		}
	}
	return seq, nil
}

// formatDN renders a DER-encoded Name in strongSwan's style, RDNs in
// encoded order: "C=CH, O=strongSwan, CN=moon".
func formatDN(der []byte) (string, error) {
	seq, err := parseDN(der)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i, rdn := range seq {
		if i > 0 {
			b.WriteString(", ")
		}
		for j, attr := range rdn {
			if j > 0 {
				b.WriteString(" + ")
			}
			b.WriteString(dnAttributeKey(attr.Type))
			b.WriteByte('=')
			if s, ok := dnValueString(attr.Value); ok && s != "" {
				b.WriteString(escapeDNValue(s))
			} else {
				b.WriteString("#" + hex.EncodeToString(attr.Value.FullBytes))
			}
		}
	}
	return b.String(), nil
}

// dnValueString decodes the ASN.1 string types found in names.
func dnValueString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return "", false
	}
	switch v.Tag {
	case asn1.TagPrintableString, asn1.TagIA5String, asn1.TagNumericString, 26 /* VisibleString */ :
		for _, c := range v.Bytes {
			if c >= utf8.RuneSelf {
				return "", false
			}
		}
		return string(v.Bytes), true
	case asn1.TagUTF8String:
		if !utf8.Valid(v.Bytes) {
			return "", false
		}
		return string(v.Bytes), true
	case asn1.TagT61String:
		runes := make([]rune, len(v.Bytes))
		for i, c := range v.Bytes {
			runes[i] = rune(c)
		}
		return string(runes), true
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
		}
		return string(utf16.Decode(u)), true
	}
	return "", false
}

func escapeDNValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case strings.IndexByte(`,+;"\<>=`, c) >= 0,
			c == '#' && i == 0,
			c == ' ' && (i == 0 || i == len(s)-1):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// dnEqual compares two DER-encoded names: equal encodings match; otherwise
// the names match when they have the same RDNs with the same attribute
// types in the same order and their string values are equal after
// RFC 5280 §7.1-style preparation (case folding, space normalisation).
func dnEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return len(a) > 0
	}
	sa, err := parseDN(a)
	if err != nil {
		return false
	}
	sb, err := parseDN(b)
	if err != nil || len(sa) != len(sb) {
		return false
	}
	for i := range sa {
		if len(sa[i]) != len(sb[i]) {
			return false
		}
		for j := range sa[i] {
			x, y := sa[i][j], sb[i][j]
			if !x.Type.Equal(y.Type) {
				return false
			}
			xs, okx := dnValueString(x.Value)
			ys, oky := dnValueString(y.Value)
			if okx && oky {
				if !strings.EqualFold(normalizeDNString(xs), normalizeDNString(ys)) {
					return false
				}
				continue
			}
			if !bytes.Equal(x.Value.FullBytes, y.Value.FullBytes) {
				return false
			}
		}
	}
	return true
}

func normalizeDNString(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Canonical returns the one form of id under which the gateway files a
// client: per-client pre-shared keys, sticky address leases, the
// per-identity limit and INITIAL_CONTACT replacement all look identities
// up by it, so that spellings of one name ("ALICE.example",
// "alice.example.") cannot pass for different clients, nor for the same
// client with a different key. FQDNs and email addresses are case-folded
// (ASCII: names on the wire are A-labels) without trailing dots; a DN has
// its string values space-normalised and lower-cased, each RDN's
// attributes in a fixed order; an IPv4-mapped ID_IPV6_ADDR becomes the
// ID_IPV4_ADDR it maps. Key IDs and unknown types stay byte for byte.
// The result is only compared, never sent: authentication always uses the
// identity as the peer sent it.
func (id Identity) Canonical() Identity {
	switch id.Type {
	case wire.IDFQDN, wire.IDRFC822:
		s := strings.TrimRight(asciiLower(string(id.Data)), ".")
		if s == "" {
			s = string(id.Data)
		}
		return Identity{Type: id.Type, Data: []byte(s)}
	case wire.IDIPv6:
		if a, ok := netip.AddrFromSlice(id.Data); ok && len(id.Data) == 16 && a.Is4In6() {
			v4 := a.Unmap().As4()
			return Identity{Type: wire.IDIPv4, Data: v4[:]}
		}
	case wire.IDDN:
		if der, err := canonicalDN(id.Data); err == nil {
			return Identity{Type: wire.IDDN, Data: der}
		}
	}
	return Identity{Type: id.Type, Data: bytes.Clone(id.Data)}
}

// Key is the text of id's canonical form (see Canonical): the key of the
// gateway's tables by identity.
func (id Identity) Key() string { return id.Canonical().String() }

// asciiLower lower-cases the ASCII letters of s and leaves every other
// byte as it is.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// canonicalDN re-encodes a DN with its string values prepared as dnEqual
// compares them (spaces normalised, lower-cased) as UTF8String, and the
// attributes of each RDN sorted by their encoding.
func canonicalDN(der []byte) ([]byte, error) {
	seq, err := parseDN(der)
	if err != nil {
		return nil, err
	}
	out := make(dnSequence, len(seq))
	for i, rdn := range seq {
		set := make(dnAttributeSET, len(rdn))
		for j, attr := range rdn {
			set[j] = dnAttribute{Type: attr.Type, Value: asn1.RawValue{FullBytes: attr.Value.FullBytes}}
			if s, ok := dnValueString(attr.Value); ok {
				v, err := asn1.MarshalWithParams(strings.ToLower(normalizeDNString(s)), "utf8")
				if err != nil {
					return nil, err
				}
				set[j].Value = asn1.RawValue{FullBytes: v}
			}
		}
		enc := make([][]byte, len(set))
		for j := range set {
			if enc[j], err = asn1.Marshal(set[j]); err != nil {
				return nil, err
			}
		}
		idx := make([]int, len(set))
		for j := range idx {
			idx[j] = j
		}
		slices.SortFunc(idx, func(a, b int) int { return bytes.Compare(enc[a], enc[b]) })
		sorted := make(dnAttributeSET, len(set))
		for j, k := range idx {
			sorted[j] = set[k]
		}
		out[i] = sorted
	}
	return asn1.Marshal(out)
}

// Printable returns s with every character a terminal could act on
// (control characters, escape sequences, invalid UTF-8, unprintable or
// invisible code points) replaced by a Go escape such as \x1b or \u202e.
// Everything that shows a name a peer chose (logs, `mifsec status`)
// passes it through this.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// Display is id's text for people to read: String with unprintable
// characters escaped (Printable).
func (id Identity) Display() string { return Printable(id.String()) }

// LogValue makes log records show id as Display does, so that a client's
// chosen identity cannot carry terminal escape sequences into a log.
func (id Identity) LogValue() slog.Value { return slog.StringValue(id.Display()) }
