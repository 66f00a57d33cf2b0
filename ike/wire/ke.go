package wire

import (
	"encoding/binary"
	"fmt"
)

// KE is a Key Exchange payload (RFC 7296 §3.4).
type KE struct {
	Group uint16
	Data  []byte
}

func (*KE) Type() PayloadType { return PayloadKE }

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
