package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Delete is a Delete payload (RFC 7296 §3.11). Deleting the IKE SA carries
// no SPIs; every AH or ESP SPI has 4 bytes.
type Delete struct {
	Protocol ProtocolID
	SPIs     [][]byte
}

func (*Delete) Type() PayloadType { return PayloadDelete }

func parseDelete(b []byte) (*Delete, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%d bytes, needs 4", len(b))
	}
	p := &Delete{Protocol: ProtocolID(b[0])}
	spiLen := int(b[1])
	count := int(binary.BigEndian.Uint16(b[2:]))
	if want := spiLenForDelete(p.Protocol); want < 0 || spiLen != want {
		return nil, fmt.Errorf("SPI size %d for protocol %d", spiLen, p.Protocol)
	}
	b = b[4:]
	if spiLen == 0 {
		if count != 0 || len(b) != 0 {
			return nil, fmt.Errorf("IKE SA deletion with %d SPIs and %d bytes", count, len(b))
		}
		return p, nil
	}
	if len(b) != count*spiLen {
		return nil, fmt.Errorf("%d SPIs of %d bytes in %d bytes", count, spiLen, len(b))
	}
	for range count {
		p.SPIs = append(p.SPIs, cloneBytes(b[:spiLen]))
		b = b[spiLen:]
	}
	return p, nil
}

// spiLenForDelete is the SPI size of a Delete payload for protocol, or -1
// for a protocol that cannot be deleted.
func spiLenForDelete(protocol ProtocolID) int {
	switch protocol {
	case ProtoIKE:
		return 0
	case ProtoAH, ProtoESP:
		return childSPILen
	}
	return -1
}

func (p *Delete) appendBody(b []byte) ([]byte, error) {
	spiLen := spiLenForDelete(p.Protocol)
	switch {
	case spiLen < 0:
		return nil, fmt.Errorf("protocol %d cannot be deleted", p.Protocol)
	case spiLen == 0 && len(p.SPIs) != 0:
		return nil, fmt.Errorf("IKE SA deletion carries no SPIs, got %d", len(p.SPIs))
	case len(p.SPIs) > math.MaxUint16:
		return nil, fmt.Errorf("%d SPIs", len(p.SPIs))
	}
	b = append(b, uint8(p.Protocol), uint8(spiLen))
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.SPIs)))
	for i, spi := range p.SPIs {
		if len(spi) != spiLen {
			return nil, fmt.Errorf("SPI %d has %d bytes, want %d", i+1, len(spi), spiLen)
		}
		b = append(b, spi...)
	}
	return b, nil
}
