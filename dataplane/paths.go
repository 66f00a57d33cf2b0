package dataplane

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/mifsec/mifsec/dataplane/udp"
	"github.com/mifsec/mifsec/scheduler"
)

// pathTable is an immutable snapshot of the engine's paths, indexed by
// PathID (nil where no path has that ID). The outbound workers compare the
// pointer they hold with the published one once per batch and rebuild
// their per-path Senders only when it changed, so adding or removing a
// path costs the hot path one atomic load.
type pathTable struct {
	byID []*Path
}

func (t *pathTable) get(id scheduler.PathID) *Path {
	if int(id) < len(t.byID) {
		return t.byID[id]
	}
	return nil
}

// with returns a copy of t with p added.
func (t *pathTable) with(p *Path) *pathTable {
	n := max(len(t.byID), int(p.ID)+1)
	byID := make([]*Path, n)
	copy(byID, t.byID)
	byID[p.ID] = p
	return &pathTable{byID: byID}
}

// without returns a copy of t without path id.
func (t *pathTable) without(id scheduler.PathID) *pathTable {
	byID := slices.Clone(t.byID)
	byID[id] = nil
	for len(byID) > 0 && byID[len(byID)-1] == nil {
		byID = byID[:len(byID)-1]
	}
	return &pathTable{byID: byID}
}

func checkPath(p *Path) error {
	if p == nil || p.Conn == nil {
		return errors.New("path without a socket")
	}
	if p.Remote == nil {
		return fmt.Errorf("path %d has no remote endpoint", p.ID)
	}
	return nil
}

// A PathGroup is the set of ways one route may send on, and the picker
// that chooses among them per packet: the paths to one peer. A client's
// default route has one member per local interface; a gateway gives each
// client a group whose members are that client's observed addresses on
// the gateway's socket(s).
//
// The members and the picker are published together with one atomic
// store, so a worker never sees a picker index beyond the members it
// goes with. Pickers answer with sets of member indexes
// (scheduler.PathSet), so a group has at most scheduler.MaxPaths members.
type PathGroup struct {
	state atomic.Pointer[groupState]
	keep  atomic.Bool // KeepSent
	// asleep is set by ArmWake and cleared by the first batch sent
	// through the group after it, which then calls wake (SetWake).
	asleep atomic.Bool
	wake   atomic.Pointer[func()]
}

// SetWake makes f the function the engine calls when it sends through
// the group while the group is armed (ArmWake): the first batch after an
// idle spell. f runs on an outbound worker once that batch is flushed
// (it is in the members' counters, and on the wire), once per ArmWake,
// with no lock held (but when one batch wakes more than eight groups); it
// must not block (a non-blocking channel send). The
// conductor of a multipath peer probes its paths at a slow pace while no
// data flows, and every path at once when some does.
func (g *PathGroup) SetWake(f func()) {
	if f == nil {
		g.wake.Store(nil)
		return
	}
	g.wake.Store(&f)
}

// ArmWake makes the next batch sent through the group call the function
// SetWake gave.
func (g *PathGroup) ArmWake() { g.asleep.Store(true) }

// Armed reports whether ArmWake was called and no batch was sent since.
func (g *PathGroup) Armed() bool { return g.asleep.Load() }

// claimWake disarms g and reports whether it was armed: the caller then
// calls wakeNow once. One atomic load while g is not armed.
func (g *PathGroup) claimWake() bool {
	return g.asleep.Load() && g.asleep.CompareAndSwap(true, false)
}

// wakeNow calls the wake function, if any.
func (g *PathGroup) wakeNow() {
	if f := g.wake.Load(); f != nil {
		(*f)()
	}
}

// GroupMember is one way a group sends: the engine path whose socket sends
// it, and the remote endpoint (nil: the path's own Remote).
type GroupMember struct {
	Path   scheduler.PathID
	Remote *udp.Endpoint
}

type groupState struct {
	picker  scheduler.Picker
	multi   scheduler.SetPicker    // picker, when it may choose several members
	packet  scheduler.PacketPicker // picker, when it chooses by the packet
	members []GroupMember
	tx      []memberCounters // by member index
}

// memberCounters count what the engine sent through one group member.
type memberCounters struct {
	packets, bytes atomic.Uint64
	_              [48]byte // a cache line each: workers send on different members
}

// NewPathGroup returns a group sending on members, chosen by picker (whose
// PathIDs index members; nil picks the first member).
func NewPathGroup(picker scheduler.Picker, members ...GroupMember) *PathGroup {
	g := &PathGroup{}
	g.Set(picker, members...)
	return g
}

// Set replaces the members and the picker together.
func (g *PathGroup) Set(picker scheduler.Picker, members ...GroupMember) {
	if picker == nil {
		picker = scheduler.Single(0)
	}
	st := &groupState{picker: picker, members: slices.Clone(members), tx: make([]memberCounters, len(members))}
	st.multi, _ = picker.(scheduler.SetPicker)
	st.packet, _ = picker.(scheduler.PacketPicker)
	// Counters follow their member across Set calls, so that a sender's
	// cumulative counts match the receiver's.
	if old := g.state.Load(); old != nil {
		for i, m := range st.members {
			for j, o := range old.members {
				if o == m {
					st.tx[i].packets.Store(old.tx[j].packets.Load())
					st.tx[i].bytes.Store(old.tx[j].bytes.Load())
					break
				}
			}
		}
	}
	g.state.Store(st)
}

// MemberTx returns what was sent through members equal to m: packets and
// sealed bytes, probes included.
func (g *PathGroup) MemberTx(m GroupMember) (packets, bytes uint64) {
	st := g.state.Load()
	for i, o := range st.members {
		if o == m {
			return st.tx[i].packets.Load(), st.tx[i].bytes.Load()
		}
	}
	return 0, 0
}

// countTx adds one sent datagram of size bytes to member m.
func (g *PathGroup) countTx(m GroupMember, size int) {
	st := g.state.Load()
	for i, o := range st.members {
		if o == m {
			st.tx[i].packets.Add(1)
			st.tx[i].bytes.Add(uint64(size))
			return
		}
	}
}

// remoteOf returns where member m sends: its own Remote, or else its
// path's (p, which must be m's path).
func remoteOf(m GroupMember, p *Path) *udp.Endpoint {
	if m.Remote != nil {
		return m.Remote
	}
	return p.Remote
}

// Members returns a copy of the group's members.
func (g *PathGroup) Members() []GroupMember {
	return slices.Clone(g.state.Load().members)
}

// countSet counts a packet of size bytes as sent through each member of
// set, dropping members that do not exist from it.
func (st *groupState) countSet(set scheduler.PathSet, size int) scheduler.PathSet {
	for c := set; !c.Empty(); {
		i := int(c.Next())
		if i >= len(st.members) {
			set = set.Without(scheduler.PathID(i))
			continue
		}
		st.tx[i].packets.Add(1)
		st.tx[i].bytes.Add(uint64(size))
	}
	return set
}

// choose returns the members (indexes) a sealed packet of size bytes goes
// to, counted as sent through each: every member a SetPicker chooses, or
// the one the picker chooses (an index beyond the members means the
// first). It makes no allocation.
func (st *groupState) choose(size int) scheduler.PathSet {
	if len(st.members) == 0 {
		return 0
	}
	if st.multi != nil {
		return st.countSet(st.multi.PickSet(size), size)
	}
	i := int(st.picker.Pick(size))
	if i >= len(st.members) {
		i = 0
	}
	return st.countSet(scheduler.SetOf(scheduler.PathID(i)), size)
}
