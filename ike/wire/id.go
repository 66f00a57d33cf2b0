package wire

import (
	"fmt"
)

// ID is an Identification payload (RFC 7296 §3.5): IDi, or IDr when
// Responder is set.
type ID struct {
	Responder bool
	IDType    IDType
	Data      []byte
}

func (p *ID) Type() PayloadType {
	if p.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}

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
