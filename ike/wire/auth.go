package wire

import (
	"fmt"
)

// Auth is an Authentication payload (RFC 7296 §3.8).
type Auth struct {
	Method AuthMethod
	Data   []byte
}

func (*Auth) Type() PayloadType { return PayloadAUTH }

func (p *Auth) appendBody(b []byte) ([]byte, error) {
	return append(append(b, uint8(p.Method), 0, 0, 0), p.Data...), nil
}

func parseAuth(b []byte) (*Auth, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	return &Auth{Method: AuthMethod(b[0]), Data: cloneBytes(b[4:])}, nil
}
