package wire

import (
	"encoding/binary"
	"fmt"
	"math"
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

// Payload is one payload of an IKE message. The concrete types are *SA,
// *KE, *ID, *Cert, *CertReq, *Auth, *Nonce, *Notify, *Delete, *VendorID,
// *TS, *CP, *EAP, *Encrypted, *EncryptedFragment and *Unknown, each in
// its own file.
type Payload interface {
	// Type is the payload type written in the preceding next-payload field.
	Type() PayloadType
	// appendBody appends the payload's body, without the generic payload
	// header, after validating the fields.
	appendBody(b []byte) ([]byte, error)
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

// MarshalPayloads encodes a chain of payloads, the inner payloads of an SK
// or SKF payload, and returns the type of the first one (PayloadNone for an
// empty chain) to put in the next-payload field that precedes them.
func MarshalPayloads(ps []Payload) (first PayloadType, b []byte, err error) {
	b, err = appendPayloads(nil, ps, false)
	if err != nil {
		return PayloadNone, nil, err
	}
	return firstType(ps), b, nil
}

// ParsePayloads decodes a chain of payloads whose first one has type first,
// such as the inner payloads of an SK payload. It applies the rules of
// Parse and rejects nested SK and SKF payloads.
func ParsePayloads(first PayloadType, b []byte) ([]Payload, error) {
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
		p, err = parseCert(body)
	case PayloadCERTREQ:
		p, err = parseCertReq(body)
	case PayloadAUTH:
		p, err = parseAuth(body)
	case PayloadNonce:
		p, err = parseNonce(body)
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
		p, err = parseEAP(body)
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
