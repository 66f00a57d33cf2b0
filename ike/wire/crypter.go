package wire

// Crypter protects the inner payloads of an Encrypted (SK, RFC 7296 §3.14)
// or Encrypted Fragment (SKF, RFC 7383 §2.5) payload with the negotiated
// IKE SA keys of one direction.
//
// The body of an SK payload is IV | encrypted(inner payloads | padding |
// pad length) | ICV. prefix is the message from the first byte of the IKE
// header to the last byte of the SK (or SKF) payload's header, with the
// final Length fields already written: for an AEAD (RFC 5282) it is the
// associated data; for an encrypt-then-MAC suite the integrity checksum
// covers prefix and body up to the ICV.
type Crypter interface {
	// BodyLen returns the length of the body that Seal writes for inner
	// payloads of n bytes.
	BodyLen(n int) int
	// Seal encrypts inner into body, which has exactly BodyLen(len(inner))
	// bytes. It chooses a fresh IV for every call.
	Seal(body, prefix, inner []byte) error
	// Open authenticates prefix and body and returns the inner payloads
	// without padding and pad length. It may decrypt in place in body.
	Open(prefix, body []byte) ([]byte, error)
}
