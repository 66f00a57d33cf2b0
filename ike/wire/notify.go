package wire

import (
	"encoding/binary"
	"fmt"
)

// Notify is a Notify payload (RFC 7296 §3.10). Protocol is only
// meaningful with a non-empty SPI: it is written and read as zero otherwise.
type Notify struct {
	Protocol   ProtocolID
	SPI        []byte
	NotifyType NotifyType
	Data       []byte
}

func (*Notify) Type() PayloadType { return PayloadNotify }

func parseNotify(b []byte) (*Notify, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	spiLen := int(b[1])
	if 4+spiLen > len(b) {
		return nil, fmt.Errorf("SPI of %d bytes exceeds the payload", spiLen)
	}
	p := &Notify{
		NotifyType: NotifyType(binary.BigEndian.Uint16(b[2:])),
		SPI:        cloneBytes(b[4 : 4+spiLen]),
		Data:       cloneBytes(b[4+spiLen:]),
	}
	if spiLen != 0 {
		p.Protocol = ProtocolID(b[0])
	}
	return p, p.check()
}

// check accepts an empty SPI with any protocol (the protocol is then
// ignored), a 4-byte AH or ESP SPI and, for the IKE SA, the 8 or 16 bytes
// that some implementations send.
func (p *Notify) check() error {
	switch {
	case len(p.SPI) == 0:
	case (p.Protocol == ProtoAH || p.Protocol == ProtoESP) && len(p.SPI) == childSPILen:
	case p.Protocol == ProtoIKE && (len(p.SPI) == ikeSPILen || len(p.SPI) == 2*ikeSPILen):
	default:
		return fmt.Errorf("notify %d: SPI of %d bytes for protocol %d", p.NotifyType, len(p.SPI), p.Protocol)
	}
	return nil
}

func (p *Notify) appendBody(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	protocol := p.Protocol
	if len(p.SPI) == 0 {
		protocol = 0
	}
	b = append(b, uint8(protocol), uint8(len(p.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(p.NotifyType))
	b = append(b, p.SPI...)
	return append(b, p.Data...), nil
}
