package scheduler

import (
	"math/bits"
	"strconv"
	"strings"
)

// MaxPaths is the number of paths one Scheduler tracks; PathIDs run from 0
// to MaxPaths-1 so that a set of paths is one machine word.
const MaxPaths = 64

// PathSet is a set of PathIDs below MaxPaths, as a bitset: a per-packet
// decision that names several paths (the redundant policy) is returned by
// value and never allocates.
type PathSet uint64

// SetOf returns the set holding ids (ids of MaxPaths and above are ignored).
func SetOf(ids ...PathID) PathSet {
	var s PathSet
	for _, id := range ids {
		s = s.With(id)
	}
	return s
}

// Has reports whether id is in s.
func (s PathSet) Has(id PathID) bool { return id < MaxPaths && s&(1<<id) != 0 }

// With returns s with id added.
func (s PathSet) With(id PathID) PathSet {
	if id >= MaxPaths {
		return s
	}
	return s | 1<<id
}

// Without returns s with id removed.
func (s PathSet) Without(id PathID) PathSet {
	if id >= MaxPaths {
		return s
	}
	return s &^ (1 << id)
}

// Len returns the number of paths in s.
func (s PathSet) Len() int { return bits.OnesCount64(uint64(s)) }

// Empty reports whether s holds no path.
func (s PathSet) Empty() bool { return s == 0 }

// First returns the lowest PathID in s; ok is false when s is empty.
func (s PathSet) First() (id PathID, ok bool) {
	if s == 0 {
		return 0, false
	}
	return PathID(bits.TrailingZeros64(uint64(s))), true
}

// Next removes and returns the lowest PathID of *s, for iterating without
// allocating:
//
//	for set := d; !set.Empty(); {
//		id := set.Next()
//		...
//	}
func (s *PathSet) Next() PathID {
	id := PathID(bits.TrailingZeros64(uint64(*s)))
	*s &= *s - 1
	return id
}

// String lists the ids, like "{0,3}".
func (s PathSet) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for set, first := s, true; !set.Empty(); first = false {
		if !first {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(set.Next())))
	}
	b.WriteByte('}')
	return b.String()
}
