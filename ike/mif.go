package ike

import (
	"encoding/binary"
	"net/netip"

	"github.com/mifsec/mifsec/ike/wire"
)

// PathInfo is one path of a client as a gateway knows it.
type PathInfo struct {
	ID       uint16 // the path id ESP probes carry too
	Kind     wire.PathKind
	Priority uint8          // lower is preferred
	Remote   netip.AddrPort // the client's address and port on this path, as observed
	// Interface is the client's interface the path leaves from, as it
	// announced it ("" when it did not).
	Interface string
	// Local is the gateway's address the path reaches (as
	// Responder.Deliver reported it).
	Local netip.Addr
}

// peerMIF reports whether ps carry a MIF_SUPPORTED of a version we speak.
func peerMIF(ps []wire.Payload) bool {
	n := wire.FindNotify(ps, wire.MIF_SUPPORTED)
	if n == nil {
		return false
	}
	v, err := wire.ParseMIFSupported(n.Data)
	return err == nil && v >= wire.MIFVersion
}

// ProbeSA is a Child SA's probe SA: a pair of ESP SAs, one per direction,
// that carry only the path probes of the MIF extension (next header 59),
// so that probes take no sequence number of the data. A probe sent on a
// slow path would otherwise leave a gap in the data's sequence that a
// receiver restoring order across paths waits for, holding back every
// packet of the fast paths sent after it.
//
// It shares the Child SA's algorithm and ESN setting and lives and dies
// with it: a rekey makes a new one with the new Child SA, a DELETE of the
// Child SA ends it. Its keys are the next bytes of the Child SA's KEYMAT
// (RFC 7296 §2.17), after the Child SA's own, in the same order: the
// initiator-to-responder encryption and integrity keys, then the
// responder-to-initiator ones. docs/mif.md has the layout.
type ProbeSA struct {
	InSPI, OutSPI uint32
	InKey, OutKey []byte // as ChildSA's InKey and OutKey
}

// offerProbeSPI returns a fresh SPI (from drawSPI) to receive probes on
// and its MIF_PROBE_SPI, when offer says the peer may take it (MIF is on);
// 0 and no payload otherwise.
func offerProbeSPI(offer bool, drawSPI func() uint32) (uint32, []wire.Payload) {
	if !offer {
		return 0, nil
	}
	spi := drawSPI()
	return spi, []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PROBE_SPI, Data: binary.BigEndian.AppendUint32(nil, spi)}}
}

// peerProbeSPI returns the SPI a MIF_PROBE_SPI of ps names. A missing or
// malformed one (not 4 bytes, or a reserved SPI below 256: RFC 4303
// §2.1) is no offer: the Child SA then probes in its own sequence space,
// as with a peer without the notification.
func peerProbeSPI(ps []wire.Payload) (uint32, bool) {
	n := wire.FindNotify(ps, wire.MIF_PROBE_SPI)
	if n == nil || len(n.Data) != wire.MIFProbeSPILen {
		return 0, false
	}
	spi := binary.BigEndian.Uint32(n.Data)
	return spi, spi >= 256
}

// withProbeSA gives c its probe SA when km holds its keys, which childKeys
// derives only when both sides offered one: ours to receive on and the
// peer's, theirs. initiator says whether we initiated the exchange.
func (c *ChildSA) withProbeSA(ours, theirs uint32, km childKeyMaterial, initiator bool) {
	if km.probeIToR == nil {
		return
	}
	p := &ProbeSA{InSPI: ours, OutSPI: theirs, InKey: km.probeRToI, OutKey: km.probeIToR}
	if !initiator {
		p.InKey, p.OutKey = km.probeIToR, km.probeRToI
	}
	c.Probe = p
}
