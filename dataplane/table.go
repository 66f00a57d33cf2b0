package dataplane

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
)

// table is a hash table that its writers change in place while the packet
// workers read it without a lock and without allocating: the engine's
// inbound SAs by SPI and its host routes by address, one entry per client
// of a gateway.
//
// The buckets are chains of immutable nodes, each bucket's head an atomic
// pointer. A writer adds an entry by publishing a new head in front of the
// old chain, and removes or replaces one by publishing a copy of the part
// of its chain in front of it (chains hold about one node); a reader that
// loaded the old head walks a chain that stays whole. When the entries
// outnumber the buckets twice, the writer builds a table of twice the
// buckets and publishes it with one store: a reader on the old one still
// finds every entry that was there when it loaded it. Setting up N entries
// thus costs O(N) in all, where copying a whole map per entry (the engine's
// tables until December 2026) cost O(N²) and O(N) garbage per entry.
//
// Writers must be serialised by the caller; readers need nothing.
type table[K comparable, V any] struct {
	b    atomic.Pointer[buckets[K, V]]
	hash func(K) uint64
	n    atomic.Int64 // entries; written by the writer only
}

type buckets[K comparable, V any] struct {
	shift uint // 64 - log2(len(heads)): a hash's top bits pick the bucket
	heads []atomic.Pointer[node[K, V]]
}

// node is never changed once published.
type node[K comparable, V any] struct {
	key  K
	val  V
	next *node[K, V]
}

const (
	tableMinBits = 3 // 8 buckets in an empty table
	tableLoad    = 2 // entries per bucket before the table doubles
)

func newTable[K comparable, V any](hash func(K) uint64) *table[K, V] {
	t := &table[K, V]{hash: hash}
	t.b.Store(newBuckets[K, V](tableMinBits))
	return t
}

func newBuckets[K comparable, V any](bits uint) *buckets[K, V] {
	return &buckets[K, V]{shift: 64 - bits, heads: make([]atomic.Pointer[node[K, V]], 1<<bits)}
}

func (b *buckets[K, V]) head(h uint64) *atomic.Pointer[node[K, V]] {
	return &b.heads[h>>b.shift]
}

// get returns k's value and whether k is in the table. It takes no lock
// and makes no allocation.
func (t *table[K, V]) get(k K) (V, bool) {
	b := t.b.Load()
	for n := b.head(t.hash(k)).Load(); n != nil; n = n.next {
		if n.key == k {
			return n.val, true
		}
	}
	var zero V
	return zero, false
}

// len returns the number of entries.
func (t *table[K, V]) len() int { return int(t.n.Load()) }

// set adds k or replaces its value. Writers only.
func (t *table[K, V]) set(k K, v V) {
	b := t.b.Load()
	head := b.head(t.hash(k))
	first := head.Load()
	if chain, ok := without(first, k); ok {
		head.Store(&node[K, V]{key: k, val: v, next: chain})
		return
	}
	head.Store(&node[K, V]{key: k, val: v, next: first})
	if t.n.Add(1) > tableLoad*int64(len(b.heads)) {
		t.grow(b)
	}
}

// delete removes k and reports whether it was there. Writers only.
func (t *table[K, V]) delete(k K) bool {
	head := t.b.Load().head(t.hash(k))
	chain, ok := without(head.Load(), k)
	if ok {
		head.Store(chain)
		t.n.Add(-1)
	}
	return ok
}

// without returns the chain from first without k, sharing the nodes behind
// it, and whether k was in it.
func without[K comparable, V any](first *node[K, V], k K) (*node[K, V], bool) {
	if first == nil {
		return nil, false
	}
	if first.key == k {
		return first.next, true
	}
	rest, ok := without(first.next, k)
	if !ok {
		return first, false
	}
	return &node[K, V]{key: first.key, val: first.val, next: rest}, true
}

// grow publishes a table of twice the buckets of b with every entry of b.
func (t *table[K, V]) grow(b *buckets[K, V]) {
	nb := newBuckets[K, V](64 - b.shift + 1)
	for i := range b.heads {
		for n := b.heads[i].Load(); n != nil; n = n.next {
			h := nb.head(t.hash(n.key))
			h.Store(&node[K, V]{key: n.key, val: n.val, next: h.Load()})
		}
	}
	t.b.Store(nb)
}

// all calls yield with every entry until it returns false. Entries set or
// deleted meanwhile may or may not be seen.
func (t *table[K, V]) all(yield func(K, V) bool) {
	b := t.b.Load()
	for i := range b.heads {
		for n := b.heads[i].Load(); n != nil; n = n.next {
			if !yield(n.key, n.val) {
				return
			}
		}
	}
}

// Fibonacci hashing: the multiplication spreads the key over the top bits,
// which pick the bucket.
const golden = 0x9E3779B97F4A7C15

func hashSPI(spi uint32) uint64 { return uint64(spi) * golden }

func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	return (binary.BigEndian.Uint64(b[:8])*golden ^ binary.BigEndian.Uint64(b[8:])) * golden
}
