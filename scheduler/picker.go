package scheduler

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

// ClockPicker adapts a Scheduler to the Picker interface: each Pick reads
// the clock (monotonic nanoseconds, the same clock the conductor passes to
// the Scheduler) and asks for Policy's path. Under PolicyRedundant it
// returns one path only; a sender that duplicates calls
// Scheduler.Decide and sends on every path of the set. When the scheduler
// has no path it returns Fallback.
type ClockPicker struct {
	S        *Scheduler
	Policy   Policy
	Now      func() int64
	Fallback PathID
}

// Pick returns the path for a packet of size bytes.
func (c *ClockPicker) Pick(size int) PathID {
	if id, ok := c.S.Pick(c.Policy, size, c.Now()); ok {
		return id
	}
	return c.Fallback
}
