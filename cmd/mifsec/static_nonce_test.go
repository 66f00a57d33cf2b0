package main

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/internal/testenv"
)

// TestSequenceStateSurvivesRestartsAndTornWrites: the stored mark comes
// back after a reopen, a second opener of the same key is refused while
// the first holds it, a slot torn by a crash falls back to the other slot's
// mark, another key has its own state and a state with no valid slot is
// refused.
func TestSequenceStateSurvivesRestartsAndTornWrites(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, dataplane.AES256GCM16.KeyLen())
	key[0] = 1
	st, err := openSequenceState(dir, dataplane.AES256GCM16, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.mark != 0 {
		t.Fatalf("a new key starts at mark %d", st.mark)
	}
	if _, err := openSequenceState(dir, dataplane.AES256GCM16, key); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second opener of the same key: %v, want 'in use'", err)
	}
	for _, m := range []uint64{seqBlock, 2 * seqBlock, 3 * seqBlock} {
		if err := st.store(m); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	st, err = openSequenceState(dir, dataplane.AES256GCM16, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.mark != 3*seqBlock {
		t.Fatalf("mark after reopening %d, want %d", st.mark, 3*seqBlock)
	}
	// A crash while writing 4 blocks tears the slot being written; the
	// other slot still holds 3 blocks.
	torn := st.next
	if err := st.store(4 * seqBlock); err != nil {
		t.Fatal(err)
	}
	st.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*.seq"))
	if len(files) != 1 {
		t.Fatalf("state files %v", files)
	}
	f, err := os.OpenFile(files[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xff}, int64(torn*seqSlotLen+seqRecLen-10))
	f.Close()
	st, err = openSequenceState(dir, dataplane.AES256GCM16, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.mark != 3*seqBlock {
		t.Fatalf("mark after a torn write %d, want the other slot's %d", st.mark, 3*seqBlock)
	}
	st.Close()

	other := append([]byte(nil), key...)
	other[0] = 2
	st2, err := openSequenceState(dir, dataplane.AES256GCM16, other)
	if err != nil {
		t.Fatal(err)
	}
	if st2.mark != 0 {
		t.Fatalf("another key inherits mark %d", st2.mark)
	}
	st2.Close()

	if err := os.WriteFile(files[0], make([]byte, 2*seqSlotLen), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openSequenceState(dir, dataplane.AES256GCM16, key); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a state with no valid slot: %v", err)
	}
}

// TestStaticRestartNeverRepeatsNonce runs `mifsec static` three times with
// the same keys (from a file twice, from the environment once) and
// captures its ESP packets with a plain UDP socket where the peer would
// be: no (sequence number, IV) pair is sent twice, and every run starts
// above the numbers of the runs before. On b74fb06 every run began at
// sequence number 1, IV 1.
func TestStaticRestartNeverRepeatsNonce(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ping")
	nsA, nsB := testenv.NewNamedNetns(t, "sn-a"), testenv.NewNamedNetns(t, "sn-b")
	testenv.Veth(t, nsA, nsB, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	var peer *net.UDPConn
	testenv.InNamedNetns(t, nsB, func() {
		var err error
		if peer, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 4500}); err != nil {
			t.Fatal(err)
		}
	})
	defer peer.Close()
	dir := t.TempDir()
	keyOut, keyIn := randomKey(t, 36), randomKey(t, 36)
	outFile, inFile := writeKeyFile(t, dir, "out", keyOut), writeKeyFile(t, dir, "in", keyIn)
	args := []string{"static", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--spi-out", "0x1001", "--spi-in", "0x2002",
		"--state-dir", filepath.Join(dir, "state"), "--tun", "msn0", "--address", "10.97.0.1/24"}

	type nonce struct{ seq, iv uint64 }
	sent := map[nonce]int{}
	var lastOfRun uint64
	for run := range 3 {
		var p *mifsecProcess
		if run == 1 {
			p = startMifsecEnv(t, nsA, []string{"MIFSEC_KEY_OUT=" + keyOut, "MIFSEC_KEY_IN=" + keyIn}, args...)
		} else {
			p = startMifsec(t, nsA, append(args, "--key-out-file", outFile, "--key-in-file", inFile)...)
		}
		if !testenv.Eventually(10*time.Second, func() bool { return strings.Contains(p.log.String(), "tunnel up") }) {
			t.Fatalf("run %d: no tunnel:\n%s", run, p.log.String())
		}
		// Traffic into the tunnel: the pings get no answer (no peer), but
		// each is sealed and sent to the socket above.
		exec.Command("ip", "netns", "exec", nsA, "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.97.0.2").Run()
		var seqs []uint64
		buf := make([]byte, 2048)
		for len(seqs) < 3 {
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := peer.Read(buf)
			if err != nil {
				t.Fatalf("run %d: %d ESP packets captured: %v\n%s", run, len(seqs), err, p.log.String())
			}
			if n < dataplane.HeaderLen || binary.BigEndian.Uint32(buf) != 0x1001 {
				continue // not an ESP packet of the SA
			}
			nc := nonce{uint64(binary.BigEndian.Uint32(buf[4:])), binary.BigEndian.Uint64(buf[8:16])}
			if prev, dup := sent[nc]; dup {
				t.Fatalf("run %d sent sequence number %d with IV %#x, as run %d did: a repeated AES-GCM nonce", run, nc.seq, nc.iv, prev)
			}
			sent[nc] = run
			seqs = append(seqs, nc.seq)
		}
		if seqs[0] <= lastOfRun {
			t.Fatalf("run %d started at sequence number %d, not above the earlier runs' %d", run, seqs[0], lastOfRun)
		}
		t.Logf("run %d: sequence numbers %v", run, seqs)
		lastOfRun = seqs[len(seqs)-1]
		if log := p.stop(t); !strings.Contains(log, "tunnel down") {
			t.Fatalf("run %d did not stop cleanly:\n%s", run, log)
		}
		if strings.Contains(strings.Join(p.cmd.Args, " "), keyOut) {
			t.Fatal("the key is on the command line")
		}
	}
}

// TestStaticRefusesExposedKeys: keys on the command line, key files open
// to other users, a missing key and the same key for both directions are
// refused before anything is created, each with a message that says what
// to do instead.
func TestStaticRefusesExposedKeys(t *testing.T) {
	dir := t.TempDir()
	key, other := randomKey(t, 36), randomKey(t, 36)
	good, otherFile := writeKeyFile(t, dir, "good", key), writeKeyFile(t, dir, "other", other)
	open := writeKeyFile(t, dir, "open", key)
	os.Chmod(open, 0o644)
	base := []string{"mifsec", "static", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--spi-out", "0x1001", "--spi-in", "0x2002",
		"--address", "10.97.0.1/24", "--state-dir", filepath.Join(dir, "state"), "--tun", "msn-refuse"}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"key on the command line", []string{"--key-out", key, "--key-in-file", otherFile}, nil, "--key-out: keys are not taken on the command line (visible to every local user)"},
		{"inbound key on the command line", []string{"--key-out-file", good, "--key-in", other}, nil, "--key-in-file, or set MIFSEC_KEY_IN"},
		{"key file open to others", []string{"--key-out-file", open, "--key-in-file", otherFile}, nil, "has mode 0644"},
		{"no outbound key", []string{"--key-in-file", otherFile}, nil, "no outbound key: give --key-out-file FILE or set MIFSEC_KEY_OUT"},
		{"file and environment", []string{"--key-out-file", good, "--key-in-file", otherFile}, []string{"MIFSEC_KEY_OUT=" + key}, "both --key-out-file and MIFSEC_KEY_OUT"},
		{"same key both ways", []string{"--key-out-file", good}, []string{"MIFSEC_KEY_IN=" + key}, "the outbound and inbound keys are the same"},
		{"bad hex in the environment", []string{"--key-in-file", otherFile}, []string{"MIFSEC_KEY_OUT=zz"}, "MIFSEC_KEY_OUT: not a hex string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, e := range tc.env {
				name, value, _ := strings.Cut(e, "=")
				t.Setenv(name, value)
			}
			err := newApp().Run(append(base, tc.args...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), other) {
				t.Fatalf("the error shows a key: %v", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Error("a refused configuration created the state directory")
	}
}

// TestSequenceKeptAhead: while an SA sends, the stored mark moves a block
// ahead whenever half of the current block is used, so sending never
// stops at the limit, and the mark on disk always covers every number
// handed out; a restart starts above all of them.
func TestSequenceKeptAhead(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, dataplane.AES128GCM16.KeyLen())
	key[3] = 7
	synctest.Test(t, func(t *testing.T) {
		st, err := openSequenceState(dir, dataplane.AES128GCM16, key)
		if err != nil {
			t.Fatal(err)
		}
		sa, err := dataplane.NewSA(dataplane.SAConfig{SPI: 0x1001, Algorithm: dataplane.AES128GCM16, Key: key, StartAfter: st.mark})
		if err != nil {
			t.Fatal(err)
		}
		if err := startSequence(st, sa); err != nil {
			t.Fatal(err)
		}
		if sa.SequenceLimit() != seqBlock || st.mark != seqBlock {
			t.Fatalf("first limit %d, stored %d, want %d", sa.SequenceLimit(), st.mark, seqBlock)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { keepSequenceAhead(ctx, st, sa, slog.New(slog.DiscardHandler)); close(done) }()
		for range 5 {
			// Use just over half of the stored block, in batches as the
			// engine's workers reserve them.
			for sa.LastSequence()+seqBlock/2 <= sa.SequenceLimit() {
				if _, err := sa.ReserveSequence(4096); err != nil {
					t.Fatalf("reserving at %d (limit %d): %v", sa.LastSequence(), sa.SequenceLimit(), err)
				}
			}
			before := sa.SequenceLimit()
			time.Sleep(seqPoll)
			synctest.Wait()
			if sa.SequenceLimit() <= before {
				t.Fatalf("limit still %d with %d used", before, sa.LastSequence())
			}
			if st.mark < sa.SequenceLimit() {
				t.Fatalf("limit %d above the stored mark %d", sa.SequenceLimit(), st.mark)
			}
		}
		cancel()
		<-done
		used := sa.LastSequence()
		st.Close()
		again, err := openSequenceState(dir, dataplane.AES128GCM16, key)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if again.mark < used {
			t.Fatalf("stored mark %d below the %d numbers used", again.mark, used)
		}
	})
}
