package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

const testOffset = 16

func newBatch(n, size int) (bufs [][]byte, sizes []int) {
	bufs = make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func mustMemory(t testing.TB, cfg MemoryConfig) *Memory {
	t.Helper()
	m, err := NewMemory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func templatePacket(t testing.TB, size int) []byte {
	t.Helper()
	pkt, err := UDPPacket(netip.MustParseAddrPort("192.0.2.1:4000"), netip.MustParseAddrPort("198.51.100.7:5000"), make([]byte, size-ipv4HeaderLen-udpHeaderLen))
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

func TestNewMemoryDefaultsAndErrors(t *testing.T) {
	m := mustMemory(t, MemoryConfig{})
	name, _ := m.Name()
	mtu, _ := m.MTU()
	if name != "mem0" || mtu != defaultMTU || m.BatchSize() != conn.IdealBatchSize || m.File() != nil || m.Writes() != nil {
		t.Errorf("defaults: name %q, MTU %d, batch %d, file %v, writes %v", name, mtu, m.BatchSize(), m.File(), m.Writes())
	}
	if ev := <-m.Events(); ev != wgtun.EventUp {
		t.Errorf("first event %d, want EventUp", ev)
	}

	tests := []struct {
		desc    string
		cfg     MemoryConfig
		wantErr string
	}{
		{"negative batch", MemoryConfig{BatchSize: -1}, "negative"},
		{"negative record", MemoryConfig{RecordWrites: -1}, "negative"},
		{"empty template", MemoryConfig{Template: []byte{}}, "empty template"},
		{"huge template", MemoryConfig{Template: make([]byte, maxMTU+1)}, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if _, err := NewMemory(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewMemory(%s) error = %v, want one containing %q", tt.desc, err, tt.wantErr)
			}
		})
	}
}

func TestMemoryInjectedPacketsReadInBatches(t *testing.T) {
	m := mustMemory(t, MemoryConfig{})
	packets := [][]byte{[]byte("first"), []byte("second packet"), []byte("third")}
	for _, p := range packets {
		if err := m.Inject(p); err != nil {
			t.Fatal(err)
		}
	}
	packets[0][0] = 'X' // Inject copied

	bufs, sizes := newBatch(2, 64)
	for i := range bufs {
		copy(bufs[i], bytes.Repeat([]byte{0xaa}, testOffset))
	}
	n, err := m.Read(bufs, sizes, testOffset)
	if err != nil || n != 2 {
		t.Fatalf("Read = %d, %v; want 2 packets", n, err)
	}
	for i, want := range []string{"first", "second packet"} {
		if got := string(bufs[i][testOffset : testOffset+sizes[i]]); got != want {
			t.Errorf("packet %d = %q, want %q", i, got, want)
		}
		if !bytes.Equal(bufs[i][:testOffset], bytes.Repeat([]byte{0xaa}, testOffset)) {
			t.Errorf("packet %d: bytes before offset changed", i)
		}
	}
	n, err = m.Read(bufs, sizes, testOffset)
	if err != nil || n != 1 || string(bufs[0][testOffset:testOffset+sizes[0]]) != "third" {
		t.Fatalf("second Read = %d, %v, %q; want the third packet", n, err, bufs[0][testOffset:testOffset+sizes[0]])
	}
	if s := m.Stats(); s.ReadPackets != 3 || s.ReadBytes != 23 {
		t.Errorf("stats %+v, want 3 packets, 23 bytes read", s)
	}
}

func TestMemoryReadRejects(t *testing.T) {
	tests := []struct {
		desc    string
		bufs    int
		size    int
		sizes   int
		offset  int
		wantN   int
		wantErr string
	}{
		{"too few sizes", 2, 64, 1, 0, 0, "1 sizes for 2 buffers"},
		{"negative offset", 1, 64, 1, -1, 0, "offset -1"},
		{"packet larger than buffer", 1, 8, 1, 4, 0, "does not fit"},
		{"offset beyond buffer", 1, 8, 1, 9, 0, "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			m := mustMemory(t, MemoryConfig{})
			if err := m.Inject([]byte("0123456789")); err != nil {
				t.Fatal(err)
			}
			bufs, _ := newBatch(tt.bufs, tt.size)
			n, err := m.Read(bufs, make([]int, tt.sizes), tt.offset)
			if n != tt.wantN || err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Read = %d, %v; want %d and an error containing %q", n, err, tt.wantN, tt.wantErr)
			}
		})
	}
}

func TestMemoryWritesAreCountedRecordedAndPassedOn(t *testing.T) {
	var seen []string
	m := mustMemory(t, MemoryConfig{
		RecordWrites: 4,
		OnWrite:      func(pkt []byte) { seen = append(seen, string(pkt)) },
	})
	bufs := [][]byte{[]byte("hdr-pkt-one"), []byte("hdr-pkt-two!")}
	n, err := m.Write(bufs, 4)
	if err != nil || n != 2 {
		t.Fatalf("Write = %d, %v; want 2", n, err)
	}
	bufs[0][4] = 'X' // records are copies
	for _, want := range []string{"pkt-one", "pkt-two!"} {
		select {
		case got := <-m.Writes():
			if string(got) != want {
				t.Errorf("recorded %q, want %q", got, want)
			}
		default:
			t.Fatalf("no record for %q", want)
		}
	}
	if fmt.Sprint(seen) != "[pkt-one pkt-two!]" {
		t.Errorf("OnWrite saw %q", seen)
	}
	if s := m.Stats(); s.WrittenPackets != 2 || s.WrittenBytes != 15 {
		t.Errorf("stats %+v, want 2 packets, 15 bytes written", s)
	}
	if n, err := m.Write([][]byte{[]byte("ab")}, 3); n != 0 || err == nil {
		t.Errorf("Write beyond buffer = %d, %v; want an error", n, err)
	}
}

func TestMemorySourceFillsEveryBuffer(t *testing.T) {
	tmpl := templatePacket(t, 1400)
	m := mustMemory(t, MemoryConfig{Template: tmpl, SourceLimit: 5})
	if err := m.Inject(tmpl); err == nil {
		t.Error("Inject in source mode succeeded")
	}
	bufs, sizes := newBatch(4, testOffset+1500)
	n, err := m.Read(bufs, sizes, testOffset)
	if err != nil || n != 4 {
		t.Fatalf("Read = %d, %v; want 4", n, err)
	}
	for i := range n {
		if !bytes.Equal(bufs[i][testOffset:testOffset+sizes[i]], tmpl) {
			t.Errorf("buffer %d does not hold the template", i)
		}
	}
	n, err = m.Read(bufs, sizes, testOffset)
	if err != nil || n != 1 {
		t.Fatalf("Read at the limit = %d, %v; want the 1 remaining packet", n, err)
	}
	if s := m.Stats(); s.ReadPackets != 5 || s.ReadBytes != 5*1400 {
		t.Errorf("stats %+v, want 5 packets, 7000 bytes read", s)
	}

	small, smallSizes := newBatch(1, 100)
	src := mustMemory(t, MemoryConfig{Template: tmpl})
	if n, err := src.Read(small, smallSizes, 0); n != 0 || err == nil {
		t.Errorf("Read into a small buffer = %d, %v; want an error", n, err)
	}
	if s := src.Stats(); s.ReadPackets != 0 {
		t.Errorf("undelivered packets counted: %+v", s)
	}
}

func TestMemoryCloseUnblocks(t *testing.T) {
	tests := []struct {
		desc  string
		cfg   MemoryConfig
		block func(m *Memory) error
	}{
		{"read waiting for injection", MemoryConfig{}, func(m *Memory) error {
			bufs, sizes := newBatch(1, 64)
			_, err := m.Read(bufs, sizes, 0)
			return err
		}},
		{"read past the source limit", MemoryConfig{Template: []byte{0x45}, SourceLimit: 1}, func(m *Memory) error {
			bufs, sizes := newBatch(2, 64)
			if _, err := m.Read(bufs, sizes, 0); err != nil {
				return fmt.Errorf("first read: %w", err)
			}
			_, err := m.Read(bufs, sizes, 0)
			return err
		}},
		{"inject into a full queue", MemoryConfig{InjectQueue: 1}, func(m *Memory) error {
			if err := m.Inject([]byte{1}); err != nil {
				return fmt.Errorf("first inject: %w", err)
			}
			return m.Inject([]byte{2})
		}},
		{"write into full records", MemoryConfig{RecordWrites: 1}, func(m *Memory) error {
			_, err := m.Write([][]byte{{1}, {2}}, 0)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			m := mustMemory(t, tt.cfg)
			result := make(chan error, 1)
			go func() { result <- tt.block(m) }()
			select {
			case err := <-result:
				t.Fatalf("returned before Close: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-result:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("after Close: %v, want os.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("still blocked 5 s after Close")
			}
			bufs, sizes := newBatch(1, 64)
			if _, err := m.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read after Close: %v", err)
			}
			if _, err := m.Write(bufs, 0); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Write after Close: %v", err)
			}
			if _, ok := <-m.Events(); ok {
				if _, ok := <-m.Events(); ok {
					t.Error("Events not closed")
				}
			}
			if err := m.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestMemoryConcurrentSourceRespectsLimit(t *testing.T) {
	const limit, readers = 10_000, 4
	m := mustMemory(t, MemoryConfig{Template: []byte{0x45, 0, 0, 20}, SourceLimit: limit, BatchSize: 7})
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			bufs, sizes := newBatch(m.BatchSize(), 64)
			for {
				if _, err := m.Read(bufs, sizes, 0); err != nil {
					return
				}
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Stats().ReadPackets < limit && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	m.Close()
	wg.Wait()
	if s := m.Stats(); s.ReadPackets != limit || s.ReadBytes != 4*limit {
		t.Errorf("stats %+v, want exactly %d packets", s, limit)
	}
}

func TestMemoryHotPathsDoNotAllocate(t *testing.T) {
	tmpl := templatePacket(t, 1400)
	var written int
	tests := []struct {
		desc string
		cfg  MemoryConfig
		op   func(m *Memory, bufs [][]byte, sizes []int) error
	}{
		{"source read", MemoryConfig{Template: tmpl}, func(m *Memory, bufs [][]byte, sizes []int) error {
			_, err := m.Read(bufs, sizes, testOffset)
			return err
		}},
		{"sink write", MemoryConfig{}, func(m *Memory, bufs [][]byte, _ []int) error {
			_, err := m.Write(bufs, testOffset)
			return err
		}},
		{"write with callback", MemoryConfig{OnWrite: func(pkt []byte) { written += len(pkt) }}, func(m *Memory, bufs [][]byte, _ []int) error {
			_, err := m.Write(bufs, testOffset)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			m := mustMemory(t, tt.cfg)
			bufs, sizes := newBatch(m.BatchSize(), testOffset+1500)
			var opErr error
			allocs := testing.AllocsPerRun(100, func() {
				if err := tt.op(m, bufs, sizes); err != nil {
					opErr = err
				}
			})
			if opErr != nil {
				t.Fatal(opErr)
			}
			if allocs != 0 {
				t.Errorf("%.1f allocations per batch, want 0", allocs)
			}
		})
	}
}

func BenchmarkMemorySourceRead(b *testing.B) {
	tmpl := templatePacket(b, 1400)
	m := mustMemory(b, MemoryConfig{Template: tmpl})
	bufs, sizes := newBatch(m.BatchSize(), testOffset+1500)
	b.SetBytes(int64(len(tmpl) * len(bufs)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Read(bufs, sizes, testOffset); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemorySinkWrite(b *testing.B) {
	m := mustMemory(b, MemoryConfig{})
	bufs, _ := newBatch(m.BatchSize(), testOffset+1400)
	b.SetBytes(int64(1400 * len(bufs)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Write(bufs, testOffset); err != nil {
			b.Fatal(err)
		}
	}
}
