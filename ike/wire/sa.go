package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// SA is a Security Association payload (RFC 7296 §3.3).
type SA struct{ Proposals []Proposal }

// Proposal is one proposal of an SA payload.
type Proposal struct {
	Number     uint8
	Protocol   ProtocolID
	SPI        []byte // empty in IKE_SA_INIT, 8 bytes for IKE rekeying, 4 for AH/ESP
	Transforms []Transform
}

// Transform is one transform of a proposal.
type Transform struct {
	Type      TransformType
	ID        uint16
	KeyLength uint16 // bits; 0 means the transform has no Key Length attribute
}

func (*SA) Type() PayloadType { return PayloadSA }

func parseSA(b []byte) (*SA, error) {
	sa := &SA{}
	for len(b) > 0 {
		i := len(sa.Proposals) + 1
		if len(b) < proposalHeaderLen {
			return nil, fmt.Errorf("proposal %d: %d bytes, header needs 8", i, len(b))
		}
		more := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		spiLen := int(b[6])
		numTransforms := int(b[7])
		if n < proposalHeaderLen+spiLen {
			return nil, fmt.Errorf("proposal %d: length %d, below header and SPI's %d", i, n, proposalHeaderLen+spiLen)
		}
		if n > len(b) {
			return nil, fmt.Errorf("proposal %d: length %d exceeds the %d bytes left", i, n, len(b))
		}
		p := Proposal{
			Number:   b[4],
			Protocol: ProtocolID(b[5]),
			SPI:      cloneBytes(b[proposalHeaderLen : proposalHeaderLen+spiLen]),
		}
		transforms, err := parseTransforms(b[proposalHeaderLen+spiLen:n], numTransforms)
		if err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i, err)
		}
		p.Transforms = transforms
		b = b[n:]
		switch {
		case more == 0 && len(b) != 0:
			return nil, fmt.Errorf("proposal %d: marked last but %d bytes follow", i, len(b))
		case more == proposalMore && len(b) == 0:
			return nil, fmt.Errorf("proposal %d: announces another proposal but none follows", i)
		case more != 0 && more != proposalMore:
			return nil, fmt.Errorf("proposal %d: last-substructure octet %d, want 0 or 2", i, more)
		}
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i, err)
		}
		sa.Proposals = append(sa.Proposals, p)
	}
	if err := sa.check(); err != nil {
		return nil, err
	}
	return sa, nil
}

func parseTransforms(b []byte, count int) ([]Transform, error) {
	var ts []Transform
	for i := 1; i <= count; i++ {
		if len(b) < transformHeaderLen {
			return nil, fmt.Errorf("transform %d of %d: %d bytes, header needs 8", i, count, len(b))
		}
		more := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < transformHeaderLen {
			return nil, fmt.Errorf("transform %d: length %d, below the header's 8", i, n)
		}
		if n > len(b) {
			return nil, fmt.Errorf("transform %d: length %d exceeds the %d bytes left", i, n, len(b))
		}
		wantMore := uint8(transformMore)
		if i == count {
			wantMore = 0
		}
		if more != wantMore {
			return nil, fmt.Errorf("transform %d of %d: last-substructure octet %d, want %d", i, count, more, wantMore)
		}
		t := Transform{Type: TransformType(b[4]), ID: binary.BigEndian.Uint16(b[6:])}
		keyLength, err := parseTransformAttributes(b[transformHeaderLen:n])
		if err != nil {
			return nil, fmt.Errorf("transform %d: %w", i, err)
		}
		t.KeyLength = keyLength
		ts = append(ts, t)
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after %d transforms", len(b), count)
	}
	return ts, nil
}

// parseTransformAttributes accepts at most one Key Length attribute, which
// is the only transform attribute IKEv2 defines (RFC 7296 §3.3.5).
func parseTransformAttributes(b []byte) (keyLength uint16, err error) {
	for len(b) > 0 {
		if len(b) < attributeHeaderLen {
			return 0, fmt.Errorf("attribute of %d bytes, needs 4", len(b))
		}
		typ := binary.BigEndian.Uint16(b)
		if typ&attributeFormatTV == 0 {
			return 0, fmt.Errorf("TLV attribute type %d: only the TV Key Length attribute is defined", typ)
		}
		typ &^= attributeFormatTV
		if typ != AttributeKeyLength {
			return 0, fmt.Errorf("unknown attribute type %d", typ)
		}
		if keyLength != 0 {
			return 0, fmt.Errorf("repeated Key Length attribute")
		}
		keyLength = binary.BigEndian.Uint16(b[2:])
		if keyLength == 0 {
			return 0, fmt.Errorf("Key Length attribute of 0 bits")
		}
		b = b[attributeHeaderLen:]
	}
	return keyLength, nil
}

func (p *SA) check() error {
	if len(p.Proposals) == 0 {
		return fmt.Errorf("no proposal")
	}
	return nil
}

func (p *Proposal) check() error {
	switch p.Protocol {
	case ProtoIKE:
		if len(p.SPI) != 0 && len(p.SPI) != ikeSPILen {
			return fmt.Errorf("IKE SPI of %d bytes, want 0 or 8", len(p.SPI))
		}
	case ProtoAH, ProtoESP:
		if len(p.SPI) != childSPILen {
			return fmt.Errorf("protocol %d SPI of %d bytes, want 4", p.Protocol, len(p.SPI))
		}
	case 0:
		return fmt.Errorf("protocol ID 0 is reserved")
	default:
		if len(p.SPI) > math.MaxUint8 {
			return fmt.Errorf("SPI of %d bytes", len(p.SPI))
		}
	}
	if len(p.Transforms) > math.MaxUint8 {
		return fmt.Errorf("%d transforms, at most 255", len(p.Transforms))
	}
	return nil
}

func (p *SA) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	for i := range p.Proposals {
		prop := &p.Proposals[i]
		if err := prop.check(); err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i+1, err)
		}
		more := uint8(proposalMore)
		if i == len(p.Proposals)-1 {
			more = 0
		}
		start := len(b)
		b = append(b, more, 0, 0, 0, prop.Number, uint8(prop.Protocol), uint8(len(prop.SPI)), uint8(len(prop.Transforms)))
		b = append(b, prop.SPI...)
		for j, t := range prop.Transforms {
			more := uint8(transformMore)
			if j == len(prop.Transforms)-1 {
				more = 0
			}
			n := transformHeaderLen
			if t.KeyLength != 0 {
				n += attributeHeaderLen
			}
			b = append(b, more, 0, 0, uint8(n), uint8(t.Type), 0)
			b = binary.BigEndian.AppendUint16(b, t.ID)
			if t.KeyLength != 0 {
				b = binary.BigEndian.AppendUint16(b, attributeFormatTV|AttributeKeyLength)
				b = binary.BigEndian.AppendUint16(b, t.KeyLength)
			}
		}
		n := len(b) - start
		if n > math.MaxUint16 {
			return nil, fmt.Errorf("proposal %d of %d bytes exceeds 65535", i+1, n)
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	}
	return b, nil
}
