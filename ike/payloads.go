package ike

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"reflect"
)

// Sizes of fixed wire structures (RFC 7296 §3, RFC 7383 §2.5).
const (
	ikeHeaderLen       = 28 // IKE header
	genericHeaderLen   = 4  // generic payload header
	fragmentFieldLen   = 4  // Fragment Number and Total Fragments of SKF
	proposalHeaderLen  = 8
	transformHeaderLen = 8
	attributeHeaderLen = 4
	tsIPv4Len          = 16 // TS_IPV4_ADDR_RANGE substructure
	tsIPv6Len          = 40 // TS_IPV6_ADDR_RANGE substructure
	nonceMinLen        = 16
	nonceMaxLen        = 256
	eapHeaderLen       = 4
	ikeSPILen          = 8
	childSPILen        = 4
	attributeFormatTV  = 0x8000 // AF bit of a transform attribute
	cpAttributeTypeMax = 0x7fff // the top bit of a CP attribute type is reserved
	proposalMore       = 2      // "last" octet of a proposal followed by another
	transformMore      = 3      // "last" octet of a transform followed by another
)

// Payload is one payload of an IKE message. The concrete types are the
// pointer types of this file: *SA, *KE, *ID, *Cert, *CertReq, *Auth,
// *Nonce, *Notify, *Delete, *VendorID, *TS, *CP, *EAP, *Encrypted,
// *EncryptedFragment and *Unknown.
type Payload interface {
	// Type is the payload type written in the preceding next-payload field.
	Type() PayloadType
	// appendBody appends the payload's body, without the generic payload
	// header, after validating the fields.
	appendBody(b []byte) ([]byte, error)
}

// SA is a Security Association payload (RFC 7296 §3.3).
type SA struct{ Proposals []Proposal }

// Proposal is one proposal of an SA payload.
type Proposal struct {
	Number     uint8
	Protocol   ProtocolID
	SPI        []byte // empty in IKE_SA_INIT, 8 bytes for IKE rekeying, 4 for AH/ESP
	Transforms []Transform
}

// Transform is one transform of a proposal.
type Transform struct {
	Type      TransformType
	ID        uint16
	KeyLength uint16 // bits; 0 means the transform has no Key Length attribute
}

// KE is a Key Exchange payload (RFC 7296 §3.4).
type KE struct {
	Group uint16
	Data  []byte
}

// ID is an Identification payload (RFC 7296 §3.5): IDi, or IDr when
// Responder is set.
type ID struct {
	Responder bool
	IDType    IDType
	Data      []byte
}

// Cert is a Certificate payload (RFC 7296 §3.6).
type Cert struct {
	Encoding uint8
	Data     []byte
}

// CertReq is a Certificate Request payload (RFC 7296 §3.7).
type CertReq struct {
	Encoding uint8
	Data     []byte
}

// Auth is an Authentication payload (RFC 7296 §3.8).
type Auth struct {
	Method AuthMethod
	Data   []byte
}

// Nonce is a Nonce payload (RFC 7296 §3.9); its data has 16 to 256 bytes.
type Nonce struct{ Data []byte }

// Notify is a Notify payload (RFC 7296 §3.10). Protocol is only
// meaningful with a non-empty SPI: it is written and read as zero otherwise.
type Notify struct {
	Protocol   ProtocolID
	SPI        []byte
	NotifyType NotifyType
	Data       []byte
}

// Delete is a Delete payload (RFC 7296 §3.11). Deleting the IKE SA carries
// no SPIs; every AH or ESP SPI has 4 bytes.
type Delete struct {
	Protocol ProtocolID
	SPIs     [][]byte
}

// VendorID is a Vendor ID payload (RFC 7296 §3.12).
type VendorID struct{ Data []byte }

// TS is a Traffic Selector payload (RFC 7296 §3.13): TSi, or TSr when
// Responder is set.
type TS struct {
	Responder bool
	Selectors []TrafficSelector
}

// TrafficSelector is one address range and port range. Its type on the
// wire follows the address family: TS_IPV4_ADDR_RANGE for IPv4 addresses,
// TS_IPV6_ADDR_RANGE for IPv6 ones.
type TrafficSelector struct {
	IPProtocol         uint8 // 0 for any
	StartPort, EndPort uint16
	Start, End         netip.Addr
}

// CP is a Configuration payload (RFC 7296 §3.15).
type CP struct {
	CfgType    uint8
	Attributes []CPAttribute
}

// CPAttribute is one configuration attribute.
type CPAttribute struct {
	Type  uint16 // 15 bits
	Value []byte
}

// EAP is an Extensible Authentication payload (RFC 7296 §3.16) holding one
// EAP message.
type EAP struct{ Data []byte }

// Encrypted is an Encrypted and Authenticated (SK) payload (RFC 7296
// §3.14). NextPayload is the type of the first inner payload; Body is
// IV | ciphertext | ICV, which only a Crypter interprets.
type Encrypted struct {
	NextPayload PayloadType
	Body        []byte
}

// EncryptedFragment is an Encrypted Fragment (SKF) payload (RFC 7383
// §2.5). NextPayload is the type of the first inner payload in fragment 1
// and zero in the others; Body is IV | ciphertext | ICV.
type EncryptedFragment struct {
	Number, Total uint16
	NextPayload   PayloadType
	Body          []byte
}

// Unknown is a payload of a type this package does not implement. Parse
// keeps non-critical ones so that they can be ignored.
type Unknown struct {
	PayloadType PayloadType
	Critical    bool
	Data        []byte
}

func (*SA) Type() PayloadType        { return PayloadSA }
func (*KE) Type() PayloadType        { return PayloadKE }
func (*Cert) Type() PayloadType      { return PayloadCERT }
func (*CertReq) Type() PayloadType   { return PayloadCERTREQ }
func (*Auth) Type() PayloadType      { return PayloadAUTH }
func (*Nonce) Type() PayloadType     { return PayloadNonce }
func (*Notify) Type() PayloadType    { return PayloadNotify }
func (*Delete) Type() PayloadType    { return PayloadDelete }
func (*VendorID) Type() PayloadType  { return PayloadVendorID }
func (*CP) Type() PayloadType        { return PayloadCP }
func (*EAP) Type() PayloadType       { return PayloadEAP }
func (*Encrypted) Type() PayloadType { return PayloadSK }

func (*EncryptedFragment) Type() PayloadType { return PayloadSKF }

func (u *Unknown) Type() PayloadType { return u.PayloadType }

func (p *ID) Type() PayloadType {
	if p.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}

func (p *TS) Type() PayloadType {
	if p.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

// isKnownPayload reports whether t is a payload type this package parses.
func isKnownPayload(t PayloadType) bool {
	return (t >= PayloadSA && t <= PayloadEAP) || t == PayloadSKF
}

var payloadNames = map[PayloadType]string{
	PayloadSA: "SA", PayloadKE: "KE", PayloadIDi: "IDi", PayloadIDr: "IDr",
	PayloadCERT: "CERT", PayloadCERTREQ: "CERTREQ", PayloadAUTH: "AUTH",
	PayloadNonce: "Nonce", PayloadNotify: "Notify", PayloadDelete: "Delete",
	PayloadVendorID: "Vendor ID", PayloadTSi: "TSi", PayloadTSr: "TSr",
	PayloadSK: "SK", PayloadCP: "CP", PayloadEAP: "EAP", PayloadSKF: "SKF",
}

// payloadName names t for error messages.
func payloadName(t PayloadType) string {
	if name, ok := payloadNames[t]; ok {
		return name
	}
	return fmt.Sprintf("payload type %d", uint8(t))
}

// marshalPayloads encodes a chain of payloads, the inner payloads of an SK
// or SKF payload, and returns the type of the first one (PayloadNone for an
// empty chain) to put in the next-payload field that precedes them.
func marshalPayloads(ps []Payload) (first PayloadType, b []byte, err error) {
	b, err = appendPayloads(nil, ps, false)
	if err != nil {
		return PayloadNone, nil, err
	}
	return firstType(ps), b, nil
}

// parsePayloads decodes a chain of payloads whose first one has type first,
// such as the inner payloads of an SK payload. It applies the rules of
// Parse and rejects nested SK and SKF payloads.
func parsePayloads(first PayloadType, b []byte) ([]Payload, error) {
	return parseChain(first, b, false)
}

func firstType(ps []Payload) PayloadType {
	if len(ps) == 0 {
		return PayloadNone
	}
	return ps[0].Type()
}

// appendPayloads appends the chain ps to b with next-payload fields and
// lengths filled in. Only when encryptedAllowed may the last payload be SK
// or SKF, whose next-payload field names its first inner payload.
func appendPayloads(b []byte, ps []Payload, encryptedAllowed bool) ([]byte, error) {
	for i, p := range ps {
		if p == nil || reflect.ValueOf(p).IsNil() {
			return nil, fmt.Errorf("ike: payload %d is nil", i+1)
		}
	}
	for i, p := range ps {
		last := i == len(ps)-1
		next := PayloadNone
		if !last {
			next = ps[i+1].Type()
		}
		var flags uint8
		switch p := p.(type) {
		case *Encrypted:
			if !encryptedAllowed || !last {
				return nil, fmt.Errorf("ike: SK payload must be the last payload of a message")
			}
			next = p.NextPayload
		case *EncryptedFragment:
			if !encryptedAllowed || !last {
				return nil, fmt.Errorf("ike: SKF payload must be the last payload of a message")
			}
			next = p.NextPayload
		case *Unknown:
			if p.Critical {
				flags = payloadCriticalBit
			}
		}
		start := len(b)
		b = append(b, uint8(next), flags, 0, 0)
		var err error
		b, err = p.appendBody(b)
		if err != nil {
			return nil, fmt.Errorf("ike: %s payload: %w", payloadName(p.Type()), err)
		}
		n := len(b) - start
		if n > math.MaxUint16 {
			return nil, fmt.Errorf("ike: %s payload of %d bytes exceeds 65535", payloadName(p.Type()), n)
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	}
	return b, nil
}

// parseChain decodes payloads starting with type next until the chain ends.
// The bytes must be used up exactly.
func parseChain(next PayloadType, b []byte, encryptedAllowed bool) ([]Payload, error) {
	var ps []Payload
	for next != PayloadNone {
		if len(b) < genericHeaderLen {
			return nil, syntaxError(next, "%s payload: %d bytes left, generic payload header needs 4", payloadName(next), len(b))
		}
		following := PayloadType(b[0])
		critical := b[1]&payloadCriticalBit != 0
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < genericHeaderLen {
			return nil, syntaxError(next, "%s payload: length %d, below the generic header's 4", payloadName(next), n)
		}
		if n > len(b) {
			return nil, syntaxError(next, "%s payload: length %d exceeds the %d bytes left", payloadName(next), n, len(b))
		}
		body := b[genericHeaderLen:n]
		if next == PayloadSK || next == PayloadSKF {
			if !encryptedAllowed {
				return nil, syntaxError(next, "%s payload inside an encrypted payload", payloadName(next))
			}
			if n != len(b) {
				return nil, syntaxError(next, "%s payload is followed by %d bytes: it must be last", payloadName(next), len(b)-n)
			}
			p, err := parseEncrypted(next, following, body)
			if err != nil {
				return nil, err
			}
			return append(ps, p), nil
		}
		p, err := parsePayload(next, critical, body)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		b = b[n:]
		next = following
	}
	if len(b) != 0 {
		return nil, syntaxError(PayloadNone, "%d bytes after the last payload", len(b))
	}
	return ps, nil
}

func parseEncrypted(t, first PayloadType, body []byte) (Payload, error) {
	if t == PayloadSK {
		return &Encrypted{NextPayload: first, Body: cloneBytes(body)}, nil
	}
	if len(body) < fragmentFieldLen {
		return nil, syntaxError(t, "SKF payload: %d bytes, fragment fields need 4", len(body))
	}
	p := &EncryptedFragment{
		Number:      binary.BigEndian.Uint16(body),
		Total:       binary.BigEndian.Uint16(body[2:]),
		NextPayload: first,
		Body:        cloneBytes(body[fragmentFieldLen:]),
	}
	if err := p.check(); err != nil {
		return nil, syntaxError(t, "SKF payload: %v", err)
	}
	return p, nil
}

// parsePayload decodes the body of one payload that is not SK or SKF.
func parsePayload(t PayloadType, critical bool, body []byte) (Payload, error) {
	var p Payload
	var err error
	switch t {
	case PayloadSA:
		p, err = parseSA(body)
	case PayloadKE:
		p, err = parseKE(body)
	case PayloadIDi, PayloadIDr:
		p, err = parseID(t == PayloadIDr, body)
	case PayloadCERT:
		if len(body) < 1 {
			return nil, syntaxError(t, "CERT payload without encoding")
		}
		p = &Cert{Encoding: body[0], Data: cloneBytes(body[1:])}
	case PayloadCERTREQ:
		if len(body) < 1 {
			return nil, syntaxError(t, "CERTREQ payload without encoding")
		}
		p = &CertReq{Encoding: body[0], Data: cloneBytes(body[1:])}
	case PayloadAUTH:
		if len(body) < 4 {
			return nil, syntaxError(t, "AUTH payload of %d bytes, needs 4", len(body))
		}
		p = &Auth{Method: AuthMethod(body[0]), Data: cloneBytes(body[4:])}
	case PayloadNonce:
		nonce := &Nonce{Data: cloneBytes(body)}
		p, err = nonce, nonce.check()
	case PayloadNotify:
		p, err = parseNotify(body)
	case PayloadDelete:
		p, err = parseDelete(body)
	case PayloadVendorID:
		p = &VendorID{Data: cloneBytes(body)}
	case PayloadTSi, PayloadTSr:
		p, err = parseTS(t == PayloadTSr, body)
	case PayloadCP:
		p, err = parseCP(body)
	case PayloadEAP:
		eap := &EAP{Data: cloneBytes(body)}
		p, err = eap, eap.check()
	default:
		if critical {
			return nil, &ParseError{
				Notify:  UNSUPPORTED_CRITICAL_PAYLOAD,
				Payload: t,
				Msg:     fmt.Sprintf("unsupported critical %s", payloadName(t)),
			}
		}
		return &Unknown{PayloadType: t, Data: cloneBytes(body)}, nil
	}
	if err != nil {
		return nil, syntaxError(t, "%s payload: %v", payloadName(t), err)
	}
	return p, nil
}

// cloneBytes copies b, returning nil for an empty slice so that parsed and
// built payloads compare equal.
func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// SA

func parseSA(b []byte) (*SA, error) {
	sa := &SA{}
	for len(b) > 0 {
		i := len(sa.Proposals) + 1
		if len(b) < proposalHeaderLen {
			return nil, fmt.Errorf("proposal %d: %d bytes, header needs 8", i, len(b))
		}
		more := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		spiLen := int(b[6])
		numTransforms := int(b[7])
		if n < proposalHeaderLen+spiLen {
			return nil, fmt.Errorf("proposal %d: length %d, below header and SPI's %d", i, n, proposalHeaderLen+spiLen)
		}
		if n > len(b) {
			return nil, fmt.Errorf("proposal %d: length %d exceeds the %d bytes left", i, n, len(b))
		}
		p := Proposal{
			Number:   b[4],
			Protocol: ProtocolID(b[5]),
			SPI:      cloneBytes(b[proposalHeaderLen : proposalHeaderLen+spiLen]),
		}
		transforms, err := parseTransforms(b[proposalHeaderLen+spiLen:n], numTransforms)
		if err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i, err)
		}
		p.Transforms = transforms
		b = b[n:]
		switch {
		case more == 0 && len(b) != 0:
			return nil, fmt.Errorf("proposal %d: marked last but %d bytes follow", i, len(b))
		case more == proposalMore && len(b) == 0:
			return nil, fmt.Errorf("proposal %d: announces another proposal but none follows", i)
		case more != 0 && more != proposalMore:
			return nil, fmt.Errorf("proposal %d: last-substructure octet %d, want 0 or 2", i, more)
		}
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i, err)
		}
		sa.Proposals = append(sa.Proposals, p)
	}
	if err := sa.check(); err != nil {
		return nil, err
	}
	return sa, nil
}

func parseTransforms(b []byte, count int) ([]Transform, error) {
	var ts []Transform
	for i := 1; i <= count; i++ {
		if len(b) < transformHeaderLen {
			return nil, fmt.Errorf("transform %d of %d: %d bytes, header needs 8", i, count, len(b))
		}
		more := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < transformHeaderLen {
			return nil, fmt.Errorf("transform %d: length %d, below the header's 8", i, n)
		}
		if n > len(b) {
			return nil, fmt.Errorf("transform %d: length %d exceeds the %d bytes left", i, n, len(b))
		}
		wantMore := uint8(transformMore)
		if i == count {
			wantMore = 0
		}
		if more != wantMore {
			return nil, fmt.Errorf("transform %d of %d: last-substructure octet %d, want %d", i, count, more, wantMore)
		}
		t := Transform{Type: TransformType(b[4]), ID: binary.BigEndian.Uint16(b[6:])}
		keyLength, err := parseTransformAttributes(b[transformHeaderLen:n])
		if err != nil {
			return nil, fmt.Errorf("transform %d: %w", i, err)
		}
		t.KeyLength = keyLength
		ts = append(ts, t)
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after %d transforms", len(b), count)
	}
	return ts, nil
}

// parseTransformAttributes accepts at most one Key Length attribute, which
// is the only transform attribute IKEv2 defines (RFC 7296 §3.3.5).
func parseTransformAttributes(b []byte) (keyLength uint16, err error) {
	for len(b) > 0 {
		if len(b) < attributeHeaderLen {
			return 0, fmt.Errorf("attribute of %d bytes, needs 4", len(b))
		}
		typ := binary.BigEndian.Uint16(b)
		if typ&attributeFormatTV == 0 {
			return 0, fmt.Errorf("TLV attribute type %d: only the TV Key Length attribute is defined", typ)
		}
		typ &^= attributeFormatTV
		if typ != AttributeKeyLength {
			return 0, fmt.Errorf("unknown attribute type %d", typ)
		}
		if keyLength != 0 {
			return 0, fmt.Errorf("repeated Key Length attribute")
		}
		keyLength = binary.BigEndian.Uint16(b[2:])
		if keyLength == 0 {
			return 0, fmt.Errorf("Key Length attribute of 0 bits")
		}
		b = b[attributeHeaderLen:]
	}
	return keyLength, nil
}

func (p *SA) check() error {
	if len(p.Proposals) == 0 {
		return fmt.Errorf("no proposal")
	}
	return nil
}

func (p *Proposal) check() error {
	switch p.Protocol {
	case ProtoIKE:
		if len(p.SPI) != 0 && len(p.SPI) != ikeSPILen {
			return fmt.Errorf("IKE SPI of %d bytes, want 0 or 8", len(p.SPI))
		}
	case ProtoAH, ProtoESP:
		if len(p.SPI) != childSPILen {
			return fmt.Errorf("protocol %d SPI of %d bytes, want 4", p.Protocol, len(p.SPI))
		}
	case 0:
		return fmt.Errorf("protocol ID 0 is reserved")
	default:
		if len(p.SPI) > math.MaxUint8 {
			return fmt.Errorf("SPI of %d bytes", len(p.SPI))
		}
	}
	if len(p.Transforms) > math.MaxUint8 {
		return fmt.Errorf("%d transforms, at most 255", len(p.Transforms))
	}
	return nil
}

func (p *SA) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	for i := range p.Proposals {
		prop := &p.Proposals[i]
		if err := prop.check(); err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i+1, err)
		}
		more := uint8(proposalMore)
		if i == len(p.Proposals)-1 {
			more = 0
		}
		start := len(b)
		b = append(b, more, 0, 0, 0, prop.Number, uint8(prop.Protocol), uint8(len(prop.SPI)), uint8(len(prop.Transforms)))
		b = append(b, prop.SPI...)
		for j, t := range prop.Transforms {
			more := uint8(transformMore)
			if j == len(prop.Transforms)-1 {
				more = 0
			}
			n := transformHeaderLen
			if t.KeyLength != 0 {
				n += attributeHeaderLen
			}
			b = append(b, more, 0, 0, uint8(n), uint8(t.Type), 0)
			b = binary.BigEndian.AppendUint16(b, t.ID)
			if t.KeyLength != 0 {
				b = binary.BigEndian.AppendUint16(b, attributeFormatTV|AttributeKeyLength)
				b = binary.BigEndian.AppendUint16(b, t.KeyLength)
			}
		}
		n := len(b) - start
		if n > math.MaxUint16 {
			return nil, fmt.Errorf("proposal %d of %d bytes exceeds 65535", i+1, n)
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	}
	return b, nil
}

// KE

func parseKE(b []byte) (*KE, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	return &KE{Group: binary.BigEndian.Uint16(b), Data: cloneBytes(b[4:])}, nil
}

func (p *KE) appendBody(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, p.Group)
	b = append(b, 0, 0)
	return append(b, p.Data...), nil
}

// ID

func parseID(responder bool, b []byte) (*ID, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	p := &ID{Responder: responder, IDType: IDType(b[0]), Data: cloneBytes(b[4:])}
	return p, p.check()
}

func (p *ID) check() error {
	want := 0
	switch p.IDType {
	case IDIPv4:
		want = 4
	case IDIPv6:
		want = 16
	default:
		return nil
	}
	if len(p.Data) != want {
		return fmt.Errorf("ID type %d with %d bytes of address, want %d", p.IDType, len(p.Data), want)
	}
	return nil
}

func (p *ID) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	b = append(b, uint8(p.IDType), 0, 0, 0)
	return append(b, p.Data...), nil
}

// CERT, CERTREQ, AUTH, Nonce, Vendor ID, EAP, Unknown

func (p *Cert) appendBody(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func (p *CertReq) appendBody(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func (p *Auth) appendBody(b []byte) ([]byte, error) {
	return append(append(b, uint8(p.Method), 0, 0, 0), p.Data...), nil
}

func (p *Nonce) check() error {
	if len(p.Data) < nonceMinLen || len(p.Data) > nonceMaxLen {
		return fmt.Errorf("nonce of %d bytes outside 16..256", len(p.Data))
	}
	return nil
}

func (p *Nonce) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	return append(b, p.Data...), nil
}

func (p *VendorID) appendBody(b []byte) ([]byte, error) {
	return append(b, p.Data...), nil
}

// check requires one whole EAP message (RFC 3748 §4): code, identifier and
// a length equal to the payload's data.
func (p *EAP) check() error {
	if len(p.Data) < eapHeaderLen {
		return fmt.Errorf("EAP message of %d bytes, needs 4", len(p.Data))
	}
	if n := int(binary.BigEndian.Uint16(p.Data[2:])); n != len(p.Data) {
		return fmt.Errorf("EAP length field %d, message has %d bytes", n, len(p.Data))
	}
	return nil
}

func (p *EAP) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	return append(b, p.Data...), nil
}

func (p *Unknown) appendBody(b []byte) ([]byte, error) {
	if p.PayloadType == PayloadNone || isKnownPayload(p.PayloadType) {
		return nil, fmt.Errorf("unknown payload with type %d, which is known or none", p.PayloadType)
	}
	return append(b, p.Data...), nil
}

// Notify

func parseNotify(b []byte) (*Notify, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	spiLen := int(b[1])
	if 4+spiLen > len(b) {
		return nil, fmt.Errorf("SPI of %d bytes exceeds the payload", spiLen)
	}
	p := &Notify{
		NotifyType: NotifyType(binary.BigEndian.Uint16(b[2:])),
		SPI:        cloneBytes(b[4 : 4+spiLen]),
		Data:       cloneBytes(b[4+spiLen:]),
	}
	if spiLen != 0 {
		p.Protocol = ProtocolID(b[0])
	}
	return p, p.check()
}

// check accepts an empty SPI with any protocol (the protocol is then
// ignored), a 4-byte AH or ESP SPI and, for the IKE SA, the 8 or 16 bytes
// that some implementations send.
func (p *Notify) check() error {
	switch {
	case len(p.SPI) == 0:
	case (p.Protocol == ProtoAH || p.Protocol == ProtoESP) && len(p.SPI) == childSPILen:
	case p.Protocol == ProtoIKE && (len(p.SPI) == ikeSPILen || len(p.SPI) == 2*ikeSPILen):
	default:
		return fmt.Errorf("notify %d: SPI of %d bytes for protocol %d", p.NotifyType, len(p.SPI), p.Protocol)
	}
	return nil
}

func (p *Notify) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	protocol := p.Protocol
	if len(p.SPI) == 0 {
		protocol = 0
	}
	b = append(b, uint8(protocol), uint8(len(p.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(p.NotifyType))
	b = append(b, p.SPI...)
	return append(b, p.Data...), nil
}

// Delete

func parseDelete(b []byte) (*Delete, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	p := &Delete{Protocol: ProtocolID(b[0])}
	spiLen := int(b[1])
	count := int(binary.BigEndian.Uint16(b[2:]))
	if want := spiLenForDelete(p.Protocol); want < 0 || spiLen != want {
		return nil, fmt.Errorf("SPI size %d for protocol %d", spiLen, p.Protocol)
	}
	b = b[4:]
	if spiLen == 0 {
		if count != 0 || len(b) != 0 {
			return nil, fmt.Errorf("IKE SA deletion with %d SPIs and %d bytes", count, len(b))
		}
		return p, nil
	}
	if len(b) != count*spiLen {
		return nil, fmt.Errorf("%d SPIs of %d bytes in %d bytes", count, spiLen, len(b))
	}
	for range count {
		p.SPIs = append(p.SPIs, cloneBytes(b[:spiLen]))
		b = b[spiLen:]
	}
	return p, nil
}

// spiLenForDelete is the SPI size of a Delete payload for protocol, or -1
// for a protocol that cannot be deleted.
func spiLenForDelete(protocol ProtocolID) int {
	switch protocol {
	case ProtoIKE:
		return 0
	case ProtoAH, ProtoESP:
		return childSPILen
	}
	return -1
}

func (p *Delete) appendBody(b []byte) ([]byte, error) {
	spiLen := spiLenForDelete(p.Protocol)
	switch {
	case spiLen < 0:
		return nil, fmt.Errorf("protocol %d cannot be deleted", p.Protocol)
	case spiLen == 0 && len(p.SPIs) != 0:
		return nil, fmt.Errorf("IKE SA deletion carries no SPIs, got %d", len(p.SPIs))
	case len(p.SPIs) > math.MaxUint16:
		return nil, fmt.Errorf("%d SPIs", len(p.SPIs))
	}
	b = append(b, uint8(p.Protocol), uint8(spiLen))
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.SPIs)))
	for i, spi := range p.SPIs {
		if len(spi) != spiLen {
			return nil, fmt.Errorf("SPI %d has %d bytes, want %d", i+1, len(spi), spiLen)
		}
		b = append(b, spi...)
	}
	return b, nil
}

// TS

func parseTS(responder bool, b []byte) (*TS, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	p := &TS{Responder: responder}
	count := int(b[0])
	b = b[4:]
	for i := 1; i <= count; i++ {
		if len(b) < 4 {
			return nil, fmt.Errorf("selector %d of %d: %d bytes, header needs 4", i, count, len(b))
		}
		tsType := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		var want, addrLen int
		switch tsType {
		case TSIPv4AddrRange:
			want, addrLen = tsIPv4Len, 4
		case TSIPv6AddrRange:
			want, addrLen = tsIPv6Len, 16
		default:
			return nil, fmt.Errorf("selector %d: unsupported type %d", i, tsType)
		}
		if n != want {
			return nil, fmt.Errorf("selector %d: type %d with length %d, want %d", i, tsType, n, want)
		}
		if n > len(b) {
			return nil, fmt.Errorf("selector %d: length %d exceeds the %d bytes left", i, n, len(b))
		}
		ts := TrafficSelector{
			IPProtocol: b[1],
			StartPort:  binary.BigEndian.Uint16(b[4:]),
			EndPort:    binary.BigEndian.Uint16(b[6:]),
		}
		ts.Start, _ = netip.AddrFromSlice(b[8 : 8+addrLen])
		ts.End, _ = netip.AddrFromSlice(b[8+addrLen : 8+2*addrLen])
		if err := ts.check(); err != nil {
			return nil, fmt.Errorf("selector %d: %w", i, err)
		}
		p.Selectors = append(p.Selectors, ts)
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after %d selectors", len(b), count)
	}
	return p, nil
}

// check requires a valid address range of one family and a port range
// that is ordered or OPAQUE (start 65535, end 0; RFC 7296 §3.13.1).
func (ts *TrafficSelector) check() error {
	if !ts.Start.IsValid() || !ts.End.IsValid() {
		return fmt.Errorf("missing address")
	}
	if ts.Start.Is4() != ts.End.Is4() {
		return fmt.Errorf("addresses %v and %v of different families", ts.Start, ts.End)
	}
	if ts.Start.Zone() != "" || ts.End.Zone() != "" {
		return fmt.Errorf("address with a zone")
	}
	if ts.Start.Compare(ts.End) > 0 {
		return fmt.Errorf("start address %v after end address %v", ts.Start, ts.End)
	}
	opaque := ts.StartPort == math.MaxUint16 && ts.EndPort == 0
	if ts.StartPort > ts.EndPort && !opaque {
		return fmt.Errorf("start port %d after end port %d", ts.StartPort, ts.EndPort)
	}
	return nil
}

func (p *TS) appendBody(b []byte) ([]byte, error) {
	if len(p.Selectors) > math.MaxUint8 {
		return nil, fmt.Errorf("%d selectors, at most 255", len(p.Selectors))
	}
	b = append(b, uint8(len(p.Selectors)), 0, 0, 0)
	for i := range p.Selectors {
		ts := &p.Selectors[i]
		if err := ts.check(); err != nil {
			return nil, fmt.Errorf("selector %d: %w", i+1, err)
		}
		tsType, n := TSIPv6AddrRange, tsIPv6Len
		if ts.Start.Is4() {
			tsType, n = TSIPv4AddrRange, tsIPv4Len
		}
		b = append(b, tsType, ts.IPProtocol)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = binary.BigEndian.AppendUint16(b, ts.StartPort)
		b = binary.BigEndian.AppendUint16(b, ts.EndPort)
		b = append(b, ts.Start.AsSlice()...)
		b = append(b, ts.End.AsSlice()...)
	}
	return b, nil
}

// CP

// cpAttributeLengths lists the value sizes RFC 7296 §3.15.1 allows for the
// attributes of constants.go, besides 0 (a request without a value).
var cpAttributeLengths = map[uint16]int{
	INTERNAL_IP4_ADDRESS: 4,
	INTERNAL_IP4_NETMASK: 4,
	INTERNAL_IP4_DNS:     4,
	INTERNAL_IP6_ADDRESS: 17,
	INTERNAL_IP6_DNS:     16,
	INTERNAL_IP4_SUBNET:  8,
	INTERNAL_IP6_SUBNET:  17,
}

func (a *CPAttribute) check() error {
	if a.Type > cpAttributeTypeMax {
		return fmt.Errorf("attribute type %d exceeds 15 bits", a.Type)
	}
	if want, ok := cpAttributeLengths[a.Type]; ok && len(a.Value) != 0 && len(a.Value) != want {
		return fmt.Errorf("attribute type %d with %d bytes, want 0 or %d", a.Type, len(a.Value), want)
	}
	return nil
}

func parseCP(b []byte) (*CP, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	p := &CP{CfgType: b[0]}
	b = b[4:]
	for len(b) > 0 {
		i := len(p.Attributes) + 1
		if len(b) < attributeHeaderLen {
			return nil, fmt.Errorf("attribute %d: %d bytes, header needs 4", i, len(b))
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if attributeHeaderLen+n > len(b) {
			return nil, fmt.Errorf("attribute %d: value of %d bytes exceeds the %d left", i, n, len(b)-attributeHeaderLen)
		}
		a := CPAttribute{
			Type:  binary.BigEndian.Uint16(b) & cpAttributeTypeMax,
			Value: cloneBytes(b[attributeHeaderLen : attributeHeaderLen+n]),
		}
		if err := a.check(); err != nil {
			return nil, fmt.Errorf("attribute %d: %w", i, err)
		}
		p.Attributes = append(p.Attributes, a)
		b = b[attributeHeaderLen+n:]
	}
	return p, nil
}

func (p *CP) appendBody(b []byte) ([]byte, error) {
	b = append(b, p.CfgType, 0, 0, 0)
	for i := range p.Attributes {
		a := &p.Attributes[i]
		if err := a.check(); err != nil {
			return nil, fmt.Errorf("attribute %d: %w", i+1, err)
		}
		if len(a.Value) > math.MaxUint16 {
			return nil, fmt.Errorf("attribute %d: value of %d bytes", i+1, len(a.Value))
		}
		b = binary.BigEndian.AppendUint16(b, a.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.Value)))
		b = append(b, a.Value...)
	}
	return b, nil
}

// SK, SKF

func (p *Encrypted) appendBody(b []byte) ([]byte, error) {
	return append(b, p.Body...), nil
}

// check applies RFC 7383 §2.5: fragments are numbered from 1 to Total.
func (p *EncryptedFragment) check() error {
	if p.Number == 0 || p.Number > p.Total {
		return fmt.Errorf("fragment %d of %d", p.Number, p.Total)
	}
	return nil
}

func (p *EncryptedFragment) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	b = binary.BigEndian.AppendUint16(b, p.Number)
	b = binary.BigEndian.AppendUint16(b, p.Total)
	return append(b, p.Body...), nil
}
