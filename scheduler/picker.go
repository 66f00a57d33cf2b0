package scheduler

import (
	"path"
	"sync/atomic"
)

// PathID identifies one path of a session: a (local interface, local
// address, remote address) triple with its own socket.
type PathID uint16

// Picker chooses the path of each outbound packet. The data plane calls it
// from every worker at once, so an implementation is either immutable or
// synchronises its own state without blocking.
type Picker interface {
	// Pick returns the path for a packet of size bytes (sealed, as it
	// goes on the wire).
	Pick(size int) PathID
}

// SetPicker is a Picker that may send one packet on several paths at once
// (PolicyRedundant). The data plane asks PickSet when the picker has one.
type SetPicker interface {
	Picker
	// PickSet returns the paths for a packet of size bytes; the empty
	// set sends it nowhere.
	PickSet(size int) PathSet
}

// PacketPicker chooses by the packet itself (traffic classes: a policy per
// destination, port or DSCP). The data plane asks it with the inner packet
// before sealing it and the size it will have sealed; an empty set sends
// the packet nowhere.
type PacketPicker interface {
	PickPacket(inner []byte, sealedSize int) PathSet
}

// Single is the policy of one active path (MOBIKE semantics): every packet
// takes the same path.
type Single PathID

// Pick returns the single path.
func (s Single) Pick(int) PathID { return PathID(s) }

// FallbackPicker asks a Scheduler for each packet's path under one
// policy, at the instant Now reads; when the scheduler has no usable path
// (every path is still being verified, or all failed) the packet takes the
// fallback path (for a peer, the one its IKE SA uses) rather than being
// dropped. The fallback is an atomic: the conductor moves it while
// workers pick. Its methods allocate nothing (they run once per packet).
type FallbackPicker struct {
	s        *Scheduler
	policy   Policy
	fallback atomic.Uint32
}

// NewFallbackPicker returns a picker of s's paths under policy whose
// fallback is path fallback.
func NewFallbackPicker(s *Scheduler, policy Policy, fallback PathID) *FallbackPicker {
	f := &FallbackPicker{s: s, policy: policy}
	f.fallback.Store(uint32(fallback))
	return f
}

// SetFallback makes path id take the packets the scheduler has no usable
// path for.
func (f *FallbackPicker) SetFallback(id PathID) { f.fallback.Store(uint32(id)) }

// Fallback returns the fallback path.
func (f *FallbackPicker) Fallback() PathID { return PathID(f.fallback.Load()) }

// Pick returns the path for a packet of size bytes.
func (f *FallbackPicker) Pick(size int) PathID {
	if id, ok := f.s.Pick(f.policy, size, Now()); ok {
		return id
	}
	return f.Fallback()
}

// PickSet returns every usable path under the redundant policy (each
// packet goes on all of them; the receiver's replay window drops the
// copies), the one path Pick chooses under the others.
func (f *FallbackPicker) PickSet(size int) PathSet {
	if f.policy == PolicyRedundant {
		if set := f.s.Decide(f.policy, size, Now()); !set.Empty() {
			return set
		}
	}
	return SetOf(f.Pick(size))
}

// ClassPicker gives each packet the policy of its traffic class: the data
// plane hands it the inner packet before sealing (PacketPicker). A class
// bound to interfaces (Rule.Interfaces) picks among the paths of the
// first of them that has a usable one (SetPathInterfaces says which paths
// are on which interface), and among all paths when none has.
type ClassPicker struct {
	*FallbackPicker
	classes *Classifier
	// within holds, per rule, the paths on each of its interfaces in
	// order (nil for a rule not bound); replaced whole when paths change.
	within atomic.Pointer[[][]PathSet]
}

// NewClassPicker returns a picker that classifies each packet with
// classes and picks under its class's policy, falling back as f does.
func NewClassPicker(f *FallbackPicker, classes *Classifier) *ClassPicker {
	return &ClassPicker{FallbackPicker: f, classes: classes}
}

// SetPathInterfaces tells the picker each path's interface names, for
// classes bound to interfaces: local, this side's, and peer, the far end's
// (for the rules the peer announced, Rule.Peer). Called whenever paths
// come and go.
func (c *ClassPicker) SetPathInterfaces(local, peer map[PathID]string) {
	rules := c.classes.rules
	within := make([][]PathSet, len(rules))
	for i, r := range rules {
		if len(r.Interfaces) == 0 {
			continue
		}
		within[i] = make([]PathSet, len(r.Interfaces))
		names := local
		if r.Peer {
			names = peer
		}
		for k, glob := range r.Interfaces {
			for id, name := range names {
				if ok, _ := path.Match(glob, name); ok && name != "" {
					within[i][k] = within[i][k].With(id)
				}
			}
		}
	}
	c.within.Store(&within)
}

// PickPacket returns the paths for one inner packet: every usable path
// when its class is redundant, else the one its class's policy picks;
// for a class bound to interfaces, among the paths of the first of them
// that has a usable one.
func (c *ClassPicker) PickPacket(inner []byte, sealedSize int) PathSet {
	pol, rule := c.classes.ClassifyRule(inner)
	now := Now()
	if w := c.within.Load(); rule >= 0 && w != nil && (*w)[rule] != nil {
		for _, set := range (*w)[rule] {
			if got := c.s.DecideWithin(pol, sealedSize, now, set); !got.Empty() {
				return got
			}
		}
	}
	if pol == PolicyRedundant {
		if set := c.s.Decide(pol, sealedSize, now); !set.Empty() {
			return set
		}
	} else if id, ok := c.s.Pick(pol, sealedSize, now); ok {
		return SetOf(id)
	}
	return SetOf(c.Fallback())
}
