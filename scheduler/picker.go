package scheduler

import "sync/atomic"

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

// PolicyPicker is the per-packet picker of one peer's paths: it asks the
// Scheduler for each packet's path under one policy, reading Now. When the
// scheduler has no usable path (every path still being verified, or all
// failed) the packet takes the fallback path, the one the peer's IKE SA
// uses, rather than being dropped. The fallback is an atomic: the
// conductor moves it while the data plane's workers pick. Pick and
// PickSet allocate nothing; they run once per packet.
type PolicyPicker struct {
	s        *Scheduler
	policy   Policy
	clock    func() int64 // nil: Now
	fallback atomic.Uint32
}

// NewPolicyPicker returns a picker of s's paths under policy, whose
// fallback is path fallback.
func NewPolicyPicker(s *Scheduler, policy Policy, fallback PathID) *PolicyPicker {
	p := &PolicyPicker{s: s, policy: policy}
	p.fallback.Store(uint32(fallback))
	return p
}

// now reads the picker's clock: Now, unless a test gave another.
func (p *PolicyPicker) now() int64 {
	if p.clock != nil {
		return p.clock()
	}
	return Now()
}

// Pick returns the path for a packet of size bytes.
func (p *PolicyPicker) Pick(size int) PathID {
	if id, ok := p.s.Pick(p.policy, size, p.now()); ok {
		return id
	}
	return p.Fallback()
}

// PickSet returns every usable path under the redundant policy (each
// packet goes on all of them; the receiver's replay window drops the
// copies), the one path Pick chooses under the others.
func (p *PolicyPicker) PickSet(size int) PathSet {
	if p.policy == PolicyRedundant {
		if set := p.s.Decide(p.policy, size, p.now()); !set.Empty() {
			return set
		}
	}
	return SetOf(p.Pick(size))
}

// Fallback returns the path that takes the packets no usable path takes.
func (p *PolicyPicker) Fallback() PathID { return PathID(p.fallback.Load()) }

// SetFallback makes path id take the packets the scheduler has no usable
// path for.
func (p *PolicyPicker) SetFallback(id PathID) { p.fallback.Store(uint32(id)) }

// ClassPicker gives each packet the policy of its traffic class (a
// PacketPicker: the data plane hands it the inner packet before sealing);
// a class without a policy of its own, and a packet no path takes, fall
// back as the PolicyPicker does.
type ClassPicker struct {
	*PolicyPicker
	classes *Classifier
}

// NewClassPicker returns a picker that classifies each packet with
// classes and picks among p's paths under its class's policy.
func NewClassPicker(p *PolicyPicker, classes *Classifier) *ClassPicker {
	return &ClassPicker{PolicyPicker: p, classes: classes}
}

// PickPacket returns the paths for one inner packet: every usable path
// when its class is redundant, else the one its class's policy picks. It
// allocates nothing.
func (c *ClassPicker) PickPacket(inner []byte, sealedSize int) PathSet {
	pol := c.classes.Classify(inner)
	now := c.now()
	if pol == PolicyRedundant {
		if set := c.s.Decide(pol, sealedSize, now); !set.Empty() {
			return set
		}
	} else if id, ok := c.s.Pick(pol, sealedSize, now); ok {
		return SetOf(id)
	}
	return SetOf(c.Fallback())
}
