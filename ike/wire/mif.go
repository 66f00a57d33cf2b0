package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	MIFProbeSPILen   = 4
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

// ErrMIFFormat reports a malformed MIF notification.
var ErrMIFFormat = errors.New("malformed MIF notification")

// MIFSupportedData returns the data of our MIF_SUPPORTED notification.
func MIFSupportedData() []byte { return []byte{MIFVersion, 0} }

// ParseMIFSupported returns the version a MIF_SUPPORTED notification
// announces. The reserved byte is ignored.
func ParseMIFSupported(b []byte) (uint8, error) {
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

// ParsePathAdd parses MIF_PATH_ADD data: 4 bytes, path ID not 0 (0 names
// the path the IKE SA runs on), then an optional interface name.
func ParsePathAdd(b []byte) (PathAdd, error) {
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

// MarshalClasses returns MIF_CLASSES data for the interface of path 0
// (left out when validInterfaceName refuses it) and the rules.
func MarshalClasses(iface, rules string) []byte {
	if !validInterfaceName(iface) {
		iface = ""
	}
	b := append([]byte{byte(len(iface))}, iface...)
	return append(b, rules...)
}

// ParseClasses parses MIF_CLASSES data. The rules are only checked to be
// text of a bounded length here; their syntax is the conductor's.
func ParseClasses(b []byte) (iface, rules string, err error) {
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

// PathRemoveData returns MIF_PATH_REMOVE data for path id.
func PathRemoveData(id uint16) []byte { return binary.BigEndian.AppendUint16(nil, id) }

// ParsePathRemove parses MIF_PATH_REMOVE data: exactly 2 bytes, not 0.
func ParsePathRemove(b []byte) (uint16, error) {
	if len(b) != mifPathRemoveLen {
		return 0, fmt.Errorf("%w: MIF_PATH_REMOVE of %d bytes, want %d", ErrMIFFormat, len(b), mifPathRemoveLen)
	}
	id := binary.BigEndian.Uint16(b)
	if id == 0 {
		return 0, fmt.Errorf("%w: MIF_PATH_REMOVE for path 0, the IKE SA's own path", ErrMIFFormat)
	}
	return id, nil
}
