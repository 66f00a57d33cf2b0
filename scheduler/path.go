package scheduler

import (
	"fmt"
	"strings"
	"time"
)

// Kind is what sort of network an interface attaches to, and so the kind
// of a path that leaves by it. It is the project's one interface-kind type:
// the interface monitor classifies interfaces into it, the scheduler ranks
// paths by it (DefaultTier), and the MIF extension carries it on the wire
// (ike/wire.PathKind, mapped in mif).
type Kind uint8

// Interface kinds.
const (
	KindOther    Kind = iota // unknown hardware, or a virtual device carrying traffic (bridge, bond)
	KindEthernet             // wired, or a veth/container uplink not named otherwise
	KindWLAN
	KindCellular
	KindLoopback
	KindVirtual // tunnels and other overlays (tun, wireguard, ipip, vxlan, ...)
)

var kindNames = [...]string{
	KindOther:    "other",
	KindEthernet: "ethernet",
	KindWLAN:     "wlan",
	KindCellular: "cellular",
	KindLoopback: "loopback",
	KindVirtual:  "virtual",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// MarshalText makes kinds readable in JSON status.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// ParseKind parses a kind name as String prints it, case-insensitively, and
// the aliases "eth"/"wired", "wifi"/"wireless" and "lte"/"5g"/"wwan"/"mobile";
// the empty string is KindOther.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "eth", "wired":
		return KindEthernet, nil
	case "wifi", "wireless":
		return KindWLAN, nil
	case "lte", "5g", "wwan", "mobile":
		return KindCellular, nil
	case "":
		return KindOther, nil
	}
	for k, name := range kindNames {
		if strings.EqualFold(strings.TrimSpace(s), name) {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("scheduler: unknown interface kind %q (want ethernet, wlan, cellular, loopback, virtual or other)", s)
}

// DefaultTier returns the priority tier of an interface kind when the user
// configured none: ethernet 0, WLAN 1, cellular 2, any other kind 3 (lower
// tiers are preferred by the offload and single policies).
func DefaultTier(k Kind) int {
	switch k {
	case KindEthernet:
		return 0
	case KindWLAN:
		return 1
	case KindCellular:
		return 2
	}
	return 3
}

// State is a path's life-cycle state, set by the conductor (Probing on
// AddPath, Removed) and by the failure detector (Active, Failed).
type State uint8

// Path states.
const (
	// StateProbing: added, not yet verified by RecoverReplies probe replies;
	// carries no data.
	StateProbing State = iota
	// StateActive: verified and not down (it may be suspect or failing).
	StateActive
	// StateFailed: the failure detector declared it down; probed until it
	// recovers.
	StateFailed
	// StateRemoved: gone.
	StateRemoved
)

var stateNames = [...]string{"probing", "active", "failed", "removed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// PathConfig describes a path when it is added.
type PathConfig struct {
	ID   PathID // below MaxPaths
	Kind Kind
	// Tier is the priority tier, lower preferred. Use DefaultTier(Kind)
	// unless the user configured one.
	Tier int
}

// Counters are cumulative packet and byte counts on one path.
type Counters struct {
	Packets, Bytes uint64
}

// ProbeReply is what a probe reply carries back (docs/mif.md): the probe's
// sequence number, how long the replier held the request, and the
// replier's cumulative counters of what it received on this path when the
// request arrived. Rx must count the same packets as the Counters passed to
// ProbeSent (the data packets, and the probes if those count them too).
type ProbeReply struct {
	Seq  uint32
	Hold time.Duration
	Rx   Counters
	// PeerArrived is when the probe reached the replier, on the
	// replier's clock (ns, any offset); 0 when the replier does not tell
	// it. Its difference to the probe's sending grows by the queue the
	// probe met on its way out, which tells that queue from one on the
	// way back.
	PeerArrived int64
}

// PathInfo is a snapshot of one path's state and estimates.
type PathInfo struct {
	PathConfig
	State         State
	Health        Health
	Misses        int
	SRTT, RTTVar  time.Duration
	MinRTT        time.Duration
	OneWayDelay   time.Duration
	Rate          float64 // delivery rate, bytes per second (0: unknown)
	Gain          float64 // factor the picker applies to Rate now
	PickerRate    float64 // the rate the picker spreads packets at: Rate with gain, probe boost and loss penalty
	Loss          float64 // 0..1
	Queued        int64   // bytes in the sender-side virtual queue
	ProbeInterval time.Duration
	Transitions   int // health changes so far
	RTTSamples    int
	RateSamples   bool
}
