package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The MIF extension's IKE notifications: private-use status types (RFC 7296
// §3.10.1 reserves 40960–65535) that two mifsec peers exchange on top of
// MOBIKE so that one IKE SA carries traffic over several paths at once.
// They are sent only to a peer that announced MIF_SUPPORTED itself; a peer
// without the extension ignores unknown status notifications (RFC 7296
// §3.10.1), so announcing it to a standard gateway is harmless.
//
// The numbers sit well above the private types other implementations use
// near the start of the range (strongSwan's mediation extension, 40960+).
// docs/mif.md documents the wire format with byte diagrams.
const (
	// MIF_SUPPORTED (IKE_AUTH, both directions): Version(1) Reserved(1).
	MIF_SUPPORTED NotifyType = 53248
	// MIF_PATH_ADD (INFORMATIONAL request sent from the new path, with
	// NAT detection and COOKIE2): PathID(2) Kind(1) Priority(1), then
	// optionally the name of the sender's interface the path leaves
	// from (1-15 bytes of printable ASCII, the rest of the data).
	MIF_PATH_ADD NotifyType = 53249
	// MIF_PATH_REMOVE (INFORMATIONAL request): PathID(2).
	MIF_PATH_REMOVE NotifyType = 53250
	// MIF_PROBE_SPI (beside the SA payload of an exchange that creates a
	// Child SA, IKE_AUTH or CREATE_CHILD_SA, request and response): SPI(4),
	// the SPI its sender receives the new Child SA's probes on. Both sides
	// sending it gives the Child SA a probe SA (ProbeSA).
	MIF_PROBE_SPI NotifyType = 53251
	// MIF_CLASSES (IKE_AUTH request, beside MIF_SUPPORTED): the sender's
	// traffic classes, so that the other direction follows them.
	// InterfaceLen(1) Interface(InterfaceLen) Rules(rest): the interface
	// the IKE SA's own path (path 0) leaves from (0-15 bytes of printable
	// ASCII), and the rules in the syntax of `--class` (printable ASCII,
	// 1-1024 bytes).
	MIF_CLASSES NotifyType = 53252
)

// MIFVersion is the version of the extension this package speaks.
const MIFVersion = 1

// Notification data lengths of the MIF extension, exact.
const (
	mifSupportedLen  = 2
	mifPathAddLen    = 4
	mifPathRemoveLen = 2
	mifProbeSPILen   = 4
)

// PathKind is the wire value of the kind of interface a path leaves from,
// as MIF_PATH_ADD carries it. It is not a second interface-kind type: the
// project's one is scheduler.Kind (which this package may not import), and
// mif maps between the two. The values equal scheduler.Kind's for the kinds
// the extension names.
type PathKind uint8

// Interface kinds carried in MIF_PATH_ADD. Unknown values are kept as they
// are: a newer peer may know more kinds.
const (
	PathKindUnknown  PathKind = 0
	PathKindEthernet PathKind = 1
	PathKindWLAN     PathKind = 2
	PathKindCellular PathKind = 3
)

func (k PathKind) String() string {
	switch k {
	case PathKindUnknown:
		return "unknown"
	case PathKindEthernet:
		return "ethernet"
	case PathKindWLAN:
		return "wlan"
	case PathKindCellular:
		return "cellular"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// PathInfo is one path of a client as a gateway knows it.
type PathInfo struct {
	ID       uint16 // the path id ESP probes carry too
	Kind     PathKind
	Priority uint8          // lower is preferred
	Remote   netip.AddrPort // the client's address and port on this path, as observed
	// Interface is the client's interface the path leaves from, as it
	// announced it ("" when it did not).
	Interface string
	// Local is the gateway's address the path reaches (as
	// Responder.Deliver reported it).
	Local netip.Addr
}

// ErrMIFFormat reports a malformed MIF notification.
var ErrMIFFormat = errors.New("malformed MIF notification")

// mIFSupportedData returns the data of our MIF_SUPPORTED notification.
func mIFSupportedData() []byte { return []byte{MIFVersion, 0} }

// parseMIFSupported returns the version a MIF_SUPPORTED notification
// announces. The reserved byte is ignored.
func parseMIFSupported(b []byte) (uint8, error) {
	if len(b) != mifSupportedLen {
		return 0, fmt.Errorf("%w: MIF_SUPPORTED of %d bytes, want %d", ErrMIFFormat, len(b), mifSupportedLen)
	}
	if b[0] == 0 {
		return 0, fmt.Errorf("%w: MIF_SUPPORTED version 0", ErrMIFFormat)
	}
	return b[0], nil
}

// PathAdd is the content of a MIF_PATH_ADD notification.
type PathAdd struct {
	ID       uint16
	Kind     PathKind
	Priority uint8
	// Interface names the sender's interface the path leaves from, for
	// traffic classes bound to interfaces; "" sends none.
	Interface string
}

// Marshal returns the notification data. An interface name that
// validInterfaceName refuses is left out.
func (p PathAdd) Marshal() []byte {
	b := make([]byte, mifPathAddLen, mifPathAddLen+len(p.Interface))
	binary.BigEndian.PutUint16(b, p.ID)
	b[2], b[3] = uint8(p.Kind), p.Priority
	if validInterfaceName(p.Interface) {
		b = append(b, p.Interface...)
	}
	return b
}

// parsePathAdd parses MIF_PATH_ADD data: 4 bytes, path ID not 0 (0 names
// the path the IKE SA runs on), then an optional interface name.
func parsePathAdd(b []byte) (PathAdd, error) {
	if len(b) < mifPathAddLen {
		return PathAdd{}, fmt.Errorf("%w: MIF_PATH_ADD of %d bytes, want at least %d", ErrMIFFormat, len(b), mifPathAddLen)
	}
	p := PathAdd{ID: binary.BigEndian.Uint16(b), Kind: PathKind(b[2]), Priority: b[3], Interface: string(b[mifPathAddLen:])}
	if p.ID == 0 {
		return PathAdd{}, fmt.Errorf("%w: MIF_PATH_ADD for path 0, the IKE SA's own path", ErrMIFFormat)
	}
	if p.Interface != "" && !validInterfaceName(p.Interface) {
		return PathAdd{}, fmt.Errorf("%w: MIF_PATH_ADD with an interface name of %d bytes that is not 1-%d printable characters", ErrMIFFormat, len(p.Interface), maxInterfaceName)
	}
	return p, nil
}

// maxInterfaceName is the longest interface name the MIF notifications
// carry: Linux's (IFNAMSIZ less the NUL).
const maxInterfaceName = 15

// maxClassesLen bounds the rules of a MIF_CLASSES notification.
const maxClassesLen = 1024

// validInterfaceName reports whether s may go in a MIF notification as an
// interface name: 1-15 bytes of printable ASCII, no space.
func validInterfaceName(s string) bool {
	return len(s) > 0 && len(s) <= maxInterfaceName && printableASCII(s, false)
}

// printableASCII reports whether s holds printable ASCII only (spaces
// too when spaces says so).
func printableASCII(s string, spaces bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > '~' || c < '!' && !(spaces && c == ' ') {
			return false
		}
	}
	return true
}

// marshalClasses returns MIF_CLASSES data for the interface of path 0
// (left out when validInterfaceName refuses it) and the rules.
func marshalClasses(iface, rules string) []byte {
	if !validInterfaceName(iface) {
		iface = ""
	}
	b := append([]byte{byte(len(iface))}, iface...)
	return append(b, rules...)
}

// parseClasses parses MIF_CLASSES data. The rules are only checked to be
// text of a bounded length here; their syntax is the conductor's.
func parseClasses(b []byte) (iface, rules string, err error) {
	if len(b) < 1 || int(b[0]) > len(b)-1 {
		return "", "", fmt.Errorf("%w: MIF_CLASSES of %d bytes", ErrMIFFormat, len(b))
	}
	iface, rules = string(b[1:1+b[0]]), string(b[1+b[0]:])
	switch {
	case iface != "" && !validInterfaceName(iface):
		return "", "", fmt.Errorf("%w: MIF_CLASSES with an interface name that is not 1-%d printable characters", ErrMIFFormat, maxInterfaceName)
	case len(rules) == 0 || len(rules) > maxClassesLen || !printableASCII(rules, true):
		return "", "", fmt.Errorf("%w: MIF_CLASSES rules of %d bytes, want 1-%d printable characters", ErrMIFFormat, len(rules), maxClassesLen)
	}
	return iface, rules, nil
}

// pathRemoveData returns MIF_PATH_REMOVE data for path id.
func pathRemoveData(id uint16) []byte { return binary.BigEndian.AppendUint16(nil, id) }

// parsePathRemove parses MIF_PATH_REMOVE data: exactly 2 bytes, not 0.
func parsePathRemove(b []byte) (uint16, error) {
	if len(b) != mifPathRemoveLen {
		return 0, fmt.Errorf("%w: MIF_PATH_REMOVE of %d bytes, want %d", ErrMIFFormat, len(b), mifPathRemoveLen)
	}
	id := binary.BigEndian.Uint16(b)
	if id == 0 {
		return 0, fmt.Errorf("%w: MIF_PATH_REMOVE for path 0, the IKE SA's own path", ErrMIFFormat)
	}
	return id, nil
}

// peerMIF reports whether ps carry a MIF_SUPPORTED of a version we speak.
func peerMIF(ps []Payload) bool {
	n := FindNotify(ps, MIF_SUPPORTED)
	if n == nil {
		return false
	}
	v, err := parseMIFSupported(n.Data)
	return err == nil && v >= MIFVersion
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

// offerProbeSPI returns a fresh SPI to receive probes on and its
// MIF_PROBE_SPI, when offer says the peer may take it (MIF is on); 0 and
// no payload otherwise.
func offerProbeSPI(offer bool) (uint32, []Payload) {
	if !offer {
		return 0, nil
	}
	spi := randomESPSPI()
	return spi, []Payload{&Notify{NotifyType: MIF_PROBE_SPI, Data: binary.BigEndian.AppendUint32(nil, spi)}}
}

// peerProbeSPI returns the SPI a MIF_PROBE_SPI of ps names. A missing or
// malformed one (not 4 bytes, or a reserved SPI below 256: RFC 4303
// §2.1) is no offer: the Child SA then probes in its own sequence space,
// as with a peer without the notification.
func peerProbeSPI(ps []Payload) (uint32, bool) {
	n := FindNotify(ps, MIF_PROBE_SPI)
	if n == nil || len(n.Data) != mifProbeSPILen {
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
