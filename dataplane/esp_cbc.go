package dataplane

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync/atomic"
)

// ESP with AES-CBC (RFC 3602) and an HMAC (RFC 2404, RFC 4868),
// encrypt-then-MAC: the ICV covers the ESP header, the IV and the
// ciphertext, and with ESN the high half of the sequence number after them
// (RFC 4303 §3.3.2.1), which is never sent.
//
// IVs. RFC 3602 §3 asks for an IV the attacker cannot predict. Each SA
// draws a 128-bit IV key from crypto/rand when it is made, and the IV of
// the packet with sequence number s is AES-128 under that key of the
// block 0^64 | s — the "encrypt a counter with a separate key" method RFC
// 3602 §3 (referring to Bellovin) allows. Sequence numbers are unique per
// SA and never wrap, so IVs never repeat, and without the IV key they look
// random. This costs one AES block per packet, never blocks, needs no
// shared generator state between cores and allocates nothing.
//
// Per-packet state. The CBC modes and the HMAC are not safe for concurrent
// use, so each SA keeps a small lock-free free list of them: a core takes
// one for one packet (an atomic swap) and puts it back (a compare-and-swap).
// A core that finds the list empty makes a new state; one that finds it full
// lets its state go. In the steady state nothing is allocated, and unlike a
// sync.Pool the list is not emptied by the garbage collector. The HMAC is
// keyed once when the state is made; Reset returns it to its keyed start
// without allocating.

// cbcState is the AES-CBC and HMAC part of an SA.
type cbcState struct {
	ivBlock cipher.Block // AES-128 under the SA's IV key
	newWork func() *cbcWork
	free    [cbcFreeSlots]atomic.Pointer[cbcWork]
}

// cbcFreeSlots bounds the per-packet states an SA keeps: more than the
// cores that seal or open one SA at once on the machines mifsec targets.
const cbcFreeSlots = 8

// cbcWork is one core's state for one packet.
type cbcWork struct {
	enc, dec cipher.BlockMode
	setEnc   ivSetter
	setDec   ivSetter
	mac      hash.Hash
	sum      [64]byte // the untruncated HMAC
}

// get takes a free per-packet state, or makes one.
func (c *cbcState) get() *cbcWork {
	for i := range c.free {
		if c.free[i].Load() != nil {
			if w := c.free[i].Swap(nil); w != nil {
				return w
			}
		}
	}
	return c.newWork()
}

// put returns a per-packet state to the free list.
func (c *cbcState) put(w *cbcWork) {
	for i := range c.free {
		if c.free[i].CompareAndSwap(nil, w) {
			return
		}
	}
}

// ivSetter is implemented by the CBC modes of crypto/cipher: it lets one
// mode serve many packets without allocating a new one per IV.
type ivSetter interface{ SetIV([]byte) }

func newCBCState(info algorithmInfo, key []byte) (*cbcState, error) {
	encKey, macKey := key[:info.cipher], append([]byte(nil), key[info.cipher:]...)
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, err
	}
	var ivKey [16]byte
	rand.Read(ivKey[:])
	ivBlock, err := aes.NewCipher(ivKey[:])
	if err != nil {
		return nil, err
	}
	newWork := func() (*cbcWork, error) {
		zero := make([]byte, aes.BlockSize)
		w := &cbcWork{
			enc: cipher.NewCBCEncrypter(block, zero),
			dec: cipher.NewCBCDecrypter(block, zero),
			mac: hmac.New(info.newHash, macKey),
		}
		var ok1, ok2 bool
		w.setEnc, ok1 = w.enc.(ivSetter)
		w.setDec, ok2 = w.dec.(ivSetter)
		if !ok1 || !ok2 {
			return nil, errors.New("AES-CBC mode cannot change its IV")
		}
		return w, nil
	}
	first, err := newWork()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", info.name, err)
	}
	c := &cbcState{ivBlock: ivBlock}
	c.newWork = func() *cbcWork {
		w, _ := newWork() // cannot fail: the first one did not
		return w
	}
	c.put(first)
	return c, nil
}

// cbcPadded is the length of an n-byte payload with its trailer, padded to
// the AES block size.
func cbcPadded(n int) int { return (n + 2 + cbcBlock - 1) &^ (cbcBlock - 1) }

// sealCBCWithSequence pads the n-byte payload at b[Headroom:], writes the
// IV for seq and seals.
func (sa *SA) sealCBCWithSequence(b []byte, n int, nextHeader byte, seq uint64) ([]byte, error) {
	padded := cbcPadded(n)
	end := Headroom + padded
	if n < 0 || len(b) < end+sa.icvLen {
		return nil, ErrBufferTooSmall
	}
	pad := padded - n - 2
	for i := range pad {
		b[Headroom+n+i] = byte(i + 1)
	}
	b[end-2] = byte(pad)
	b[end-1] = nextHeader
	iv := b[Headroom-cbcBlock : Headroom]
	binary.BigEndian.PutUint64(iv, 0)
	binary.BigEndian.PutUint64(iv[8:], seq)
	sa.cbc.ivBlock.Encrypt(iv, iv)
	return sa.sealCBC(b, end, seq), nil
}

// sealCBC writes the ESP header in front of the IV already at
// b[Headroom-16:Headroom], encrypts b[Headroom:end] (payload and trailer,
// a whole number of blocks) in place and appends the ICV. Known-answer
// tests call it with the IVs of published vectors.
func (sa *SA) sealCBC(b []byte, end int, seq uint64) []byte {
	const h = Headroom - cbcHeaderLen
	binary.BigEndian.PutUint32(b[h:], sa.spi)
	binary.BigEndian.PutUint32(b[h+4:], uint32(seq))
	w := sa.cbc.get()
	w.setEnc.SetIV(b[h+8 : Headroom])
	w.enc.CryptBlocks(b[Headroom:end], b[Headroom:end])
	w.mac.Reset()
	w.mac.Write(b[h:end])
	if sa.esn {
		// The high half follows the packet in the ICV's place.
		binary.BigEndian.PutUint32(b[end:], uint32(seq>>32))
		w.mac.Write(b[end : end+4])
	}
	sum := w.mac.Sum(w.sum[:0])
	copy(b[end:end+sa.icvLen], sum)
	sa.cbc.put(w)
	return b[h : end+sa.icvLen]
}

// decryptCBC verifies pkt's ICV in constant time and only then decrypts
// its payload to dst[Headroom:], and checks the trailer. With ESN the high
// half of seq is written to dst[0:4] to be authenticated. pkt either does
// not overlap dst or sits at dst[Headroom-cbcHeaderLen:], as Open lays it
// out, and is then decrypted in place.
func (sa *SA) decryptCBC(dst, pkt []byte, seq uint64) ([]byte, byte, *dropError) {
	icvAt := len(pkt) - sa.icvLen
	w := sa.cbc.get()
	w.mac.Reset()
	w.mac.Write(pkt[:icvAt])
	if sa.esn {
		hi := dst[:4]
		binary.BigEndian.PutUint32(hi, uint32(seq>>32))
		w.mac.Write(hi)
	}
	sum := w.mac.Sum(w.sum[:0])
	if !hmac.Equal(sum[:sa.icvLen], pkt[icvAt:]) {
		sa.cbc.put(w)
		return nil, 0, dropErrors[DropBadICV]
	}
	ct := pkt[cbcHeaderLen:icvAt]
	if len(ct)%cbcBlock != 0 {
		// Authentic but not whole blocks: a broken peer.
		sa.cbc.put(w)
		return nil, 0, dropErrors[DropBadPadding]
	}
	out := dst[Headroom : Headroom+len(ct)]
	w.setDec.SetIV(pkt[8:cbcHeaderLen])
	if &out[0] == &ct[0] {
		w.dec.CryptBlocks(ct, ct)
	} else {
		w.dec.CryptBlocks(out, ct)
	}
	sa.cbc.put(w)
	return checkTrailer(out)
}
