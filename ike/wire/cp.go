package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

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

func (*CP) Type() PayloadType { return PayloadCP }

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
