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

// Single is the policy of one active path (MOBIKE semantics): every packet
// takes the same path.
type Single PathID

// Pick returns the single path.
func (s Single) Pick(int) PathID { return PathID(s) }
