package wire

import (
	"encoding/binary"
	"fmt"
)

// EAP is an Extensible Authentication payload (RFC 7296 §3.16) holding one
// EAP message.
type EAP struct{ Data []byte }

func (*EAP) Type() PayloadType { return PayloadEAP }

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

func parseEAP(b []byte) (*EAP, error) {
	p := &EAP{Data: cloneBytes(b)}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}
