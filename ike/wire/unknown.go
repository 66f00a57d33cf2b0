package wire

import (
	"fmt"
)

// Unknown is a payload of a type this package does not implement. Parse
// keeps non-critical ones so that they can be ignored.
type Unknown struct {
	PayloadType PayloadType
	Critical    bool
	Data        []byte
}

func (u *Unknown) Type() PayloadType { return u.PayloadType }

func (p *Unknown) appendBody(b []byte) ([]byte, error) {
	if p.PayloadType == PayloadNone || isKnownPayload(p.PayloadType) {
		return nil, fmt.Errorf("unknown payload with type %d, which is known or none", p.PayloadType)
	}
	return append(b, p.Data...), nil
}
