package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"golang.org/x/sys/unix"
)

// A manually keyed SA keeps its key across runs, and its IV is its
// sequence number (dataplane/esp.go): a run that started again at 1 would
// send a second packet under the same AEAD nonce, which for AES-GCM and
// ChaCha20-Poly1305 gives away the authentication key and the XOR of the
// plaintexts. So every outbound static SA has a state file that records a
// high mark: no sequence number above it was ever sent under the key. A run
// starts above the stored mark and sends only up to a mark it has stored
// (written ahead one block at a time, fsync'd before use), so neither a
// restart nor a crash nor a power loss reuses a number.
//
// The file is named after a hash of the key (so the same key finds its
// state whatever the SPI or the tunnel, and a new key starts afresh) and is
// locked while a run uses it, so two processes can never send under one key
// at once. It holds two 512-byte slots written in turn; a write torn by a
// crash leaves the other slot, which holds the previous mark: every number
// used was at most that mark, since the limit is raised only after a write
// completes. The file stays open, so it is written after privileges drop.

const (
	// seqBlock is how far ahead of use the mark is stored. Each run
	// skips at most one block beyond what it sends: about 4096 runs of a
	// key fit in the 32-bit sequence space.
	seqBlock = 1 << 20
	// seqPoll is how often the stored mark is checked against use: half
	// a block per poll is 10 million packets a second.
	seqPoll    = 50 * time.Millisecond
	seqSlotLen = 512
	seqMagic   = "MIFSEQ1\n"
	seqRecLen  = len(seqMagic) + sha256.Size + 8 + 4
)

// defaultStateDir holds the sequence state of static SAs.
const defaultStateDir = "/var/lib/mifsec/static"

// sequenceState is the stored high mark of one outbound key.
type sequenceState struct {
	f    *os.File
	fp   [sha256.Size]byte // identifies the key without revealing it
	mark uint64            // stored: no number above it was sent
	next int               // the slot written next
}

// keyFingerprint names a key's state without revealing the key.
func keyFingerprint(alg dataplane.Algorithm, key []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte("mifsec static ESP sequence state\x00" + alg.String() + "\x00"))
	h.Write(key)
	var fp [sha256.Size]byte
	h.Sum(fp[:0])
	return fp
}

// openSequenceState opens (or creates) the state of key in dir and locks
// it.
func openSequenceState(dir string, alg dataplane.Algorithm, key []byte) (*sequenceState, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sequence state directory: %w", err)
	}
	st := &sequenceState{fp: keyFingerprint(alg, key)}
	path := filepath.Join(dir, hex.EncodeToString(st.fp[:16])+".seq")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sequence state: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("sequence state %s is in use: another mifsec static sends with this --key-out; two senders under one key would repeat nonces", path)
		}
		return nil, fmt.Errorf("locking sequence state %s: %w", path, err)
	}
	st.f = f
	if err := st.load(path); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return st, nil
}

// load reads both slots and takes the higher valid mark.
func (st *sequenceState) load(path string) error {
	buf := make([]byte, 2*seqSlotLen)
	n, err := st.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading sequence state %s: %w", path, err)
	}
	if n == 0 {
		return nil // a new key
	}
	valid := 0
	var marks [2]uint64
	for i := range 2 {
		rec := buf[i*seqSlotLen:][:seqRecLen]
		if i*seqSlotLen+seqRecLen > n || !bytes.HasPrefix(rec, []byte(seqMagic)) ||
			crc32.ChecksumIEEE(rec[:seqRecLen-4]) != binary.BigEndian.Uint32(rec[seqRecLen-4:]) {
			continue // never written, or torn by a crash
		}
		if !bytes.Equal(rec[len(seqMagic):len(seqMagic)+sha256.Size], st.fp[:]) {
			return fmt.Errorf("sequence state %s belongs to another key", path)
		}
		marks[i] = binary.BigEndian.Uint64(rec[len(seqMagic)+sha256.Size:])
		valid++
	}
	if valid == 0 {
		return fmt.Errorf("sequence state %s is damaged: the key cannot be used again safely; make new keys", path)
	}
	st.mark = max(marks[0], marks[1])
	if marks[0] > marks[1] {
		st.next = 1
	}
	return nil
}

// store records mark durably, in the slot not holding the current one.
func (st *sequenceState) store(mark uint64) error {
	rec := make([]byte, seqRecLen)
	copy(rec, seqMagic)
	copy(rec[len(seqMagic):], st.fp[:])
	binary.BigEndian.PutUint64(rec[len(seqMagic)+sha256.Size:], mark)
	binary.BigEndian.PutUint32(rec[seqRecLen-4:], crc32.ChecksumIEEE(rec[:seqRecLen-4]))
	if _, err := st.f.WriteAt(rec, int64(st.next*seqSlotLen)); err != nil {
		return fmt.Errorf("storing the sequence high mark: %w", err)
	}
	if err := unix.Fdatasync(int(st.f.Fd())); err != nil {
		return fmt.Errorf("storing the sequence high mark: %w", err)
	}
	st.mark, st.next = mark, 1-st.next
	return nil
}

// Close releases the state (and its lock).
func (st *sequenceState) Close() error { return st.f.Close() }

// syncDir makes a new file's directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// startSequence stores the first block above the state's mark and lets sa
// send up to it; sa must have been made with StartAfter = st.mark.
func startSequence(st *sequenceState, sa *dataplane.SA) error {
	if sa.LastSequence() != st.mark {
		return fmt.Errorf("SA starts after %d, the stored mark is %d", sa.LastSequence(), st.mark)
	}
	limit := st.mark + min(seqBlock, sa.MaxSequence()-st.mark)
	if err := st.store(limit); err != nil {
		return err
	}
	sa.SetSequenceLimit(limit)
	return nil
}

// keepSequenceAhead stores the next block whenever sa has used half of the
// stored one, until ctx ends. If a store fails the limit stays: sending
// stops there rather than risk a number the state does not cover.
func keepSequenceAhead(ctx context.Context, st *sequenceState, sa *dataplane.SA, log *slog.Logger) {
	t := time.NewTicker(seqPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		limit := sa.SequenceLimit()
		if limit >= sa.MaxSequence() || sa.LastSequence()+seqBlock/2 <= limit {
			continue
		}
		next := limit + min(seqBlock, sa.MaxSequence()-limit)
		if err := st.store(next); err != nil {
			log.Error("outbound traffic will stop at the stored sequence number", "limit", limit, "err", err)
			return
		}
		sa.SetSequenceLimit(next)
	}
}
