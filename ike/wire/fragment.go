package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
)

// Default limits of a Reassembler.
const (
	DefaultMaxFragments = 64       // fragments of one message
	DefaultMaxBytes     = 64 << 10 // decrypted bytes held over all messages
	DefaultMaxMessages  = 4        // messages being reassembled at once
)

// ErrFragmentLimit reports a fragmented message beyond a Reassembler's limits.
var ErrFragmentLimit = errors.New("ike: fragment reassembly limit exceeded")

// MarshalFragments encodes a protected message whose m.Payloads are the
// inner payloads, for datagrams of at most maxDatagram bytes (the UDP
// payload, after any non-ESP marker). If the SK message fits it is the only
// datagram; otherwise the inner payload bytes are split into Encrypted
// Fragment messages numbered 1 to Total (RFC 7383 §2.5), each with its own
// header and the same message ID, sealed separately with c. Only fragment 1
// names the first inner payload.
func (m *Message) MarshalFragments(c Crypter, maxDatagram int) ([][]byte, error) {
	first, inner, err := MarshalPayloads(m.Payloads)
	if err != nil {
		return nil, err
	}
	bodyLen := c.BodyLen(len(inner))
	if ikeHeaderLen+genericHeaderLen+bodyLen <= maxDatagram && genericHeaderLen+bodyLen <= math.MaxUint16 {
		b, err := m.sealPart(c, first, nil, inner)
		if err != nil {
			return nil, err
		}
		return [][]byte{b}, nil
	}
	const fragmentPrefixLen = ikeHeaderLen + genericHeaderLen + fragmentFieldLen
	room := min(maxDatagram-fragmentPrefixLen, math.MaxUint16-genericHeaderLen-fragmentFieldLen)
	chunk := largestChunk(c, room)
	if chunk < 1 {
		return nil, fmt.Errorf("ike: datagrams of %d bytes cannot carry an encrypted fragment", maxDatagram)
	}
	total := (len(inner) + chunk - 1) / chunk
	if total > math.MaxUint16 {
		return nil, fmt.Errorf("ike: %d inner bytes need %d fragments", len(inner), total)
	}
	out := make([][]byte, 0, total)
	for i := range total {
		// Even split: parts differ by at most one byte and none exceeds chunk.
		part := inner[i*len(inner)/total : (i+1)*len(inner)/total]
		next := PayloadNone
		if i == 0 {
			next = first
		}
		b, err := m.sealPart(c, next, &EncryptedFragment{Number: uint16(i + 1), Total: uint16(total)}, part)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// largestChunk returns the most inner bytes whose sealed body fits in room,
// or 0 if not even one does. It assumes BodyLen never decreases.
func largestChunk(c Crypter, room int) int {
	if room < 1 || c.BodyLen(1) > room {
		return 0
	}
	lo, hi := 1, room
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if c.BodyLen(mid) <= room {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// Reassembler collects the Encrypted Fragment messages of one peer (RFC
// 7383 §2.6) for one IKE SA. Each fragment is authenticated as it arrives;
// fragments may come in any order and more than once. Memory is bounded:
// a message with more than MaxFragments fragments is refused, and when
// MaxMessages or MaxBytes would be exceeded the oldest other messages in
// reassembly are dropped first, then the message itself with an error.
// The zero value uses the default limits. A Reassembler is not safe for
// concurrent use.
type Reassembler struct {
	MaxFragments int // per message; 0 means DefaultMaxFragments
	MaxBytes     int // decrypted bytes held; 0 means DefaultMaxBytes
	MaxMessages  int // messages in progress; 0 means DefaultMaxMessages

	pending map[reassemblyKey]*reassembly
	held    int    // decrypted bytes held over all pending messages
	started uint64 // reassemblies started, to find the oldest
}

// reassemblyKey tells apart the peer's requests from its responses, whose
// message IDs count independently.
type reassemblyKey struct {
	messageID uint32
	response  bool
}

type reassembly struct {
	exchange ExchangeType
	total    uint16
	started  uint64
	first    PayloadType // NextPayload of fragment 1
	parts    [][]byte
	have     []bool
	received int
	size     int
}

func limitOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// Add authenticates and stores one parsed message whose last payload is
// *EncryptedFragment. When it completes its message, Add returns the inner
// payloads, parsed with the NextPayload of fragment 1, and done. Duplicates
// and fragments with a smaller Total than those held are ignored; a larger
// Total restarts the message's reassembly (RFC 7383 §2.6). A fragment that
// fails authentication returns c's error and leaves the state unchanged.
func (r *Reassembler) Add(m *Message, c Crypter) (inner []Payload, done bool, err error) {
	if len(m.Payloads) == 0 {
		return nil, false, errors.New("ike: reassembly: message has no payload")
	}
	frag, ok := m.Payloads[len(m.Payloads)-1].(*EncryptedFragment)
	if !ok {
		return nil, false, errors.New("ike: reassembly: last payload is not SKF")
	}
	if err := frag.check(); err != nil {
		return nil, false, fmt.Errorf("ike: reassembly: %w", err)
	}
	if maxFragments := limitOr(r.MaxFragments, DefaultMaxFragments); int(frag.Total) > maxFragments {
		return nil, false, fmt.Errorf("%w: %d fragments, at most %d", ErrFragmentLimit, frag.Total, maxFragments)
	}
	prefix, body, err := m.protectedParts(frag.Body)
	if err != nil {
		return nil, false, err
	}
	part, err := c.Open(prefix, body)
	if err != nil {
		return nil, false, fmt.Errorf("ike: opening SKF payload %d of %d: %w", frag.Number, frag.Total, err)
	}

	key := reassemblyKey{messageID: m.MessageID, response: m.IsResponse()}
	st := r.pending[key]
	if st != nil {
		switch {
		case frag.Total < st.total:
			return nil, false, nil
		case frag.Total > st.total:
			r.Discard(key.messageID, key.response)
			st = nil
		case m.Exchange != st.exchange:
			return nil, false, fmt.Errorf("ike: reassembly: fragment of exchange %d, message %d is exchange %d", m.Exchange, m.MessageID, st.exchange)
		}
	}
	if st == nil {
		for len(r.pending) >= limitOr(r.MaxMessages, DefaultMaxMessages) {
			r.evictOldest(key)
		}
		r.started++
		st = &reassembly{
			exchange: m.Exchange,
			total:    frag.Total,
			started:  r.started,
			parts:    make([][]byte, frag.Total),
			have:     make([]bool, frag.Total),
		}
		if r.pending == nil {
			r.pending = make(map[reassemblyKey]*reassembly)
		}
		r.pending[key] = st
	}
	i := int(frag.Number) - 1
	if st.have[i] {
		return nil, false, nil
	}
	maxBytes := limitOr(r.MaxBytes, DefaultMaxBytes)
	for r.held+len(part) > maxBytes {
		if r.evictOldest(key) {
			continue
		}
		r.Discard(key.messageID, key.response)
		return nil, false, fmt.Errorf("%w: message %d exceeds %d bytes", ErrFragmentLimit, m.MessageID, maxBytes)
	}
	part = bytes.Clone(part)
	st.parts[i], st.have[i] = part, true
	st.received++
	st.size += len(part)
	r.held += len(part)
	if frag.Number == 1 {
		st.first = frag.NextPayload
	}
	if st.received < int(st.total) {
		return nil, false, nil
	}

	whole := make([]byte, 0, st.size)
	for _, p := range st.parts {
		whole = append(whole, p...)
	}
	first := st.first
	r.Discard(key.messageID, key.response)
	ps, err := ParsePayloads(first, whole)
	if err != nil {
		return nil, false, err
	}
	return ps, true, nil
}

// evictOldest drops the oldest message in reassembly other than keep and
// reports whether there was one.
func (r *Reassembler) evictOldest(keep reassemblyKey) bool {
	var oldest *reassembly
	var oldestKey reassemblyKey
	for k, st := range r.pending {
		if k != keep && (oldest == nil || st.started < oldest.started) {
			oldest, oldestKey = st, k
		}
	}
	if oldest == nil {
		return false
	}
	r.Discard(oldestKey.messageID, oldestKey.response)
	return true
}

// Discard drops the fragments held for a message, for example when its
// exchange is abandoned.
func (r *Reassembler) Discard(messageID uint32, response bool) {
	key := reassemblyKey{messageID: messageID, response: response}
	if st, ok := r.pending[key]; ok {
		r.held -= st.size
		delete(r.pending, key)
	}
}

// Pending returns the number of messages being reassembled.
func (r *Reassembler) Pending() int { return len(r.pending) }
