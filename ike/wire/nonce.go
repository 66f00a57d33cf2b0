package wire

import (
	"fmt"
)

// Nonce is a Nonce payload (RFC 7296 §3.9); its data has 16 to 256 bytes.
type Nonce struct{ Data []byte }

func (*Nonce) Type() PayloadType { return PayloadNonce }

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

func parseNonce(b []byte) (*Nonce, error) {
	p := &Nonce{Data: cloneBytes(b)}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}
