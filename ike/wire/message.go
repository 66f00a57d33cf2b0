package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Message is one IKEv2 message (RFC 7296 §3.1).
type Message struct {
	SPIi, SPIr uint64
	// NextPayload is the type of the first payload as Parse read it.
	// Marshal ignores it and writes the type of Payloads[0].
	NextPayload PayloadType
	Exchange    ExchangeType
	Flags       uint8 // FlagInitiator | FlagResponse ...
	MessageID   uint32
	// Payloads are in message order. In a parsed protected message the
	// last one is *Encrypted or *EncryptedFragment; for MarshalEncrypted
	// and MarshalFragments they are the inner payloads.
	Payloads []Payload
	// Raw is a copy of the bytes Parse read; nil for built messages.
	Raw []byte
}

// ErrInvalidMajorVersion reports a message whose major version is not 2.
// A responder answers a higher major version with INVALID_MAJOR_VERSION
// (RFC 7296 §2.5).
var ErrInvalidMajorVersion = errors.New("ike: major version is not 2")

// ParseError is a malformed message, with the notification a responder
// would answer it with. INVALID_SYNTAX is only sent in answer to a request
// whose integrity checksum was valid (RFC 7296 §3.10.1).
type ParseError struct {
	// Notify is INVALID_SYNTAX, UNSUPPORTED_CRITICAL_PAYLOAD or
	// INVALID_MAJOR_VERSION.
	Notify NotifyType
	// Payload is the type of the payload at fault; PayloadNone for the
	// header or the message as a whole.
	Payload PayloadType
	Msg     string
	Err     error // underlying cause, if any
}

func (e *ParseError) Error() string {
	return "ike: malformed message: " + e.Msg
}

func (e *ParseError) Unwrap() error { return e.Err }

// NotifyData is the data of the notification answering e: the payload type
// for UNSUPPORTED_CRITICAL_PAYLOAD (RFC 7296 §3.2), nothing otherwise.
func (e *ParseError) NotifyData() []byte {
	if e.Notify == UNSUPPORTED_CRITICAL_PAYLOAD {
		return []byte{uint8(e.Payload)}
	}
	return nil
}

func syntaxError(t PayloadType, format string, args ...any) *ParseError {
	return &ParseError{Notify: INVALID_SYNTAX, Payload: t, Msg: fmt.Sprintf(format, args...)}
}

// Parse decodes one IKEv2 message strictly: the length in the header must
// be the datagram's, the major version 2, every payload well formed and
// inside the message with nothing after the last one, SK or SKF only as the
// last payload. A payload of unknown type is kept as *Unknown unless its
// critical bit is set, which fails with UNSUPPORTED_CRITICAL_PAYLOAD.
// Errors are *ParseError. Once the 28-byte header could be read, the
// message is returned with its header fields even on error, so that a
// responder can address its notification.
func Parse(b []byte) (*Message, error) {
	if len(b) < ikeHeaderLen {
		return nil, syntaxError(PayloadNone, "%d bytes, shorter than the IKE header", len(b))
	}
	m := &Message{
		SPIi:        binary.BigEndian.Uint64(b),
		SPIr:        binary.BigEndian.Uint64(b[8:]),
		NextPayload: PayloadType(b[16]),
		Exchange:    ExchangeType(b[18]),
		Flags:       b[19],
		MessageID:   binary.BigEndian.Uint32(b[20:]),
	}
	if major := b[17] >> 4; major != Version>>4 {
		return m, &ParseError{
			Notify: INVALID_MAJOR_VERSION,
			Msg:    fmt.Sprintf("major version %d", major),
			Err:    ErrInvalidMajorVersion,
		}
	}
	if n := binary.BigEndian.Uint32(b[24:]); uint64(n) != uint64(len(b)) {
		return m, syntaxError(PayloadNone, "header length %d, datagram has %d bytes", n, len(b))
	}
	ps, err := parseChain(m.NextPayload, b[ikeHeaderLen:], true)
	if err != nil {
		return m, err
	}
	m.Payloads = ps
	m.Raw = bytes.Clone(b)
	return m, nil
}

// IsResponse reports whether the Response flag is set.
func (m *Message) IsResponse() bool { return m.Flags&FlagResponse != 0 }

// IsInitiator reports whether the Initiator flag is set: the message comes
// from the original initiator of the IKE SA.
func (m *Message) IsInitiator() bool { return m.Flags&FlagInitiator != 0 }

// putHeader writes the IKE header into b[:28] with next as the first
// payload type and length as the total message length.
func (m *Message) putHeader(b []byte, next PayloadType, length int) error {
	if uint64(length) > math.MaxUint32 {
		return fmt.Errorf("ike: message of %d bytes", length)
	}
	binary.BigEndian.PutUint64(b, m.SPIi)
	binary.BigEndian.PutUint64(b[8:], m.SPIr)
	b[16], b[17], b[18], b[19] = uint8(next), Version, uint8(m.Exchange), m.Flags
	binary.BigEndian.PutUint32(b[20:], m.MessageID)
	binary.BigEndian.PutUint32(b[24:], uint32(length))
	return nil
}

// Marshal encodes an unprotected message such as IKE_SA_INIT, computing
// the next-payload chain and all lengths. A parsed protected message
// marshals again with its SK or SKF body as it was read.
func (m *Message) Marshal() ([]byte, error) {
	b := make([]byte, ikeHeaderLen, 512)
	b, err := appendPayloads(b, m.Payloads, true)
	if err != nil {
		return nil, err
	}
	if err := m.putHeader(b, firstType(m.Payloads), len(b)); err != nil {
		return nil, err
	}
	return b, nil
}

// MarshalEncrypted encodes a protected message whose m.Payloads are the
// inner payloads of its SK payload: it writes the IKE header and the SK
// payload header with their final lengths and lets c seal the inner
// payloads into the SK body.
func (m *Message) MarshalEncrypted(c Crypter) ([]byte, error) {
	first, inner, err := MarshalPayloads(m.Payloads)
	if err != nil {
		return nil, err
	}
	return m.sealPart(c, first, nil, inner)
}

// sealPart builds one message carrying inner in an SK payload or, when
// fragment is not nil, in an SKF payload numbered as fragment.
func (m *Message) sealPart(c Crypter, first PayloadType, fragment *EncryptedFragment, inner []byte) ([]byte, error) {
	bodyLen := c.BodyLen(len(inner))
	t, prefixLen := PayloadSK, ikeHeaderLen+genericHeaderLen
	if fragment != nil {
		t, prefixLen = PayloadSKF, prefixLen+fragmentFieldLen
	}
	payloadLen := prefixLen - ikeHeaderLen + bodyLen
	if bodyLen < 0 || payloadLen > math.MaxUint16 {
		return nil, fmt.Errorf("ike: %s payload of %d bytes for %d inner bytes", payloadName(t), payloadLen, len(inner))
	}
	b := make([]byte, prefixLen+bodyLen)
	if err := m.putHeader(b, t, len(b)); err != nil {
		return nil, err
	}
	b[ikeHeaderLen] = uint8(first)
	binary.BigEndian.PutUint16(b[ikeHeaderLen+2:], uint16(payloadLen))
	if fragment != nil {
		binary.BigEndian.PutUint16(b[ikeHeaderLen+genericHeaderLen:], fragment.Number)
		binary.BigEndian.PutUint16(b[ikeHeaderLen+genericHeaderLen+2:], fragment.Total)
	}
	if err := c.Seal(b[prefixLen:], b[:prefixLen:prefixLen], inner); err != nil {
		return nil, fmt.Errorf("ike: sealing %s payload: %w", payloadName(t), err)
	}
	return b, nil
}

// protectedParts returns the authenticated prefix of a parsed message and
// a copy of the body of its last payload, which must be body.
func (m *Message) protectedParts(body []byte) (prefix, bodyCopy []byte, err error) {
	if len(m.Raw) < ikeHeaderLen+genericHeaderLen+len(body) {
		return nil, nil, errors.New("ike: message was not parsed")
	}
	end := len(m.Raw) - len(body)
	if !bytes.Equal(m.Raw[end:], body) {
		return nil, nil, errors.New("ike: encrypted body differs from the parsed message")
	}
	return m.Raw[:end:end], bytes.Clone(body), nil
}

// Decrypt authenticates and decrypts a parsed message whose last payload
// is *Encrypted, and returns its payloads with the SK payload replaced by
// the inner payloads. m is not modified. Errors from c are wrapped; an
// error in the inner payloads is a *ParseError.
func (m *Message) Decrypt(c Crypter) ([]Payload, error) {
	if len(m.Payloads) == 0 {
		return nil, errors.New("ike: decrypt: message has no payload")
	}
	var enc *Encrypted
	switch p := m.Payloads[len(m.Payloads)-1].(type) {
	case *Encrypted:
		enc = p
	case *EncryptedFragment:
		return nil, errors.New("ike: decrypt: message is a fragment; use a Reassembler")
	default:
		return nil, fmt.Errorf("ike: decrypt: last payload is %s, not SK", payloadName(p.Type()))
	}
	prefix, body, err := m.protectedParts(enc.Body)
	if err != nil {
		return nil, err
	}
	inner, err := c.Open(prefix, body)
	if err != nil {
		return nil, fmt.Errorf("ike: opening SK payload: %w", err)
	}
	ps, err := ParsePayloads(enc.NextPayload, inner)
	if err != nil {
		return nil, err
	}
	outer := m.Payloads[:len(m.Payloads)-1]
	return append(append([]Payload(nil), outer...), ps...), nil
}
