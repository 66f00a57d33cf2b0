package wire

import (
	"encoding/binary"
	"fmt"
)

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

func (*Encrypted) Type() PayloadType { return PayloadSK }

func (*EncryptedFragment) Type() PayloadType { return PayloadSKF }

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
