package tun

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// MemoryConfig configures an in-memory device. The zero value is a device
// named "mem0" with defaultMTU, batches of conn.IdealBatchSize, packets
// supplied by Inject and written packets only counted.
type MemoryConfig struct {
	// Name returned by Name; empty means "mem0".
	Name string
	// MTU returned by MTU; 0 means defaultMTU.
	MTU int
	// BatchSize returned by BatchSize; 0 means conn.IdealBatchSize.
	BatchSize int

	// Template switches Read to source mode: every Read fills every buffer
	// it is given with a copy of Template, without allocating, and Inject is
	// refused. The slice is copied by NewMemory.
	Template []byte
	// SourceLimit is the total number of packets source mode produces; after
	// that Read blocks until Close. 0 means no limit.
	SourceLimit uint64

	// InjectQueue is how many injected packets wait for Read before Inject
	// blocks; 0 means 1024.
	InjectQueue int

	// OnWrite, if set, is called by Write for each packet with
	// bufs[i][offset:], on the writer's goroutine. It must not keep the
	// slice after it returns.
	OnWrite func(pkt []byte)
	// RecordWrites, if positive, makes Write send a copy of each packet to
	// the Writes channel, which holds that many packets; Write blocks while
	// the channel is full.
	RecordWrites int
}

// MemoryStats counts the traffic of an in-memory device.
type MemoryStats struct {
	ReadPackets, ReadBytes       uint64
	WrittenPackets, WrittenBytes uint64
}

// Memory is an in-memory golang.zx2c4.com/wireguard/tun.Device for tests
// and benchmarks of the data plane.
//
// Packets reach Read either from Inject (copied, returned in batches of up to
// len(bufs)) or, in source mode, from a template copied into every buffer.
// Written packets are counted and, if configured, passed to a callback or
// recorded as copies. Read and Write honour offset like a real queue: the
// packet is at bufs[i][offset:]. Source-mode Read and Write without
// RecordWrites make no allocation. All methods are safe for concurrent use.
type Memory struct {
	name        string
	mtu         int
	batchSize   int
	template    []byte
	sourceLimit uint64
	onWrite     func([]byte)

	injected chan []byte
	writes   chan []byte
	events   chan wgtun.Event

	closeOnce sync.Once
	closed    chan struct{}

	readPackets, readBytes       atomic.Uint64
	writtenPackets, writtenBytes atomic.Uint64
}

var _ wgtun.Device = (*Memory)(nil)

// NewMemory returns an in-memory device. Its Events channel holds one
// EventUp.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	m := &Memory{
		name:        cfg.Name,
		mtu:         cfg.MTU,
		batchSize:   cfg.BatchSize,
		sourceLimit: cfg.SourceLimit,
		onWrite:     cfg.OnWrite,
		events:      make(chan wgtun.Event, 1),
		closed:      make(chan struct{}),
	}
	if m.name == "" {
		m.name = "mem0"
	}
	if m.mtu == 0 {
		m.mtu = defaultMTU
	}
	if m.batchSize == 0 {
		m.batchSize = conn.IdealBatchSize
	}
	injectQueue := cfg.InjectQueue
	if injectQueue == 0 {
		injectQueue = 1024
	}
	switch {
	case m.mtu < 0 || m.batchSize < 0 || injectQueue < 0 || cfg.RecordWrites < 0:
		return nil, fmt.Errorf("memory tun %s: negative MTU, BatchSize, InjectQueue or RecordWrites", m.name)
	case cfg.Template != nil && len(cfg.Template) == 0:
		return nil, fmt.Errorf("memory tun %s: empty template packet", m.name)
	case len(cfg.Template) > maxMTU:
		return nil, fmt.Errorf("memory tun %s: template of %d bytes exceeds %d", m.name, len(cfg.Template), maxMTU)
	}
	if cfg.Template != nil {
		m.template = append([]byte(nil), cfg.Template...)
	}
	m.injected = make(chan []byte, injectQueue)
	if cfg.RecordWrites > 0 {
		m.writes = make(chan []byte, cfg.RecordWrites)
	}
	m.events <- wgtun.EventUp
	return m, nil
}

// Inject queues a copy of pkt for Read. It blocks while the queue is full
// and fails with os.ErrClosed once the device is closed, and in source mode.
func (m *Memory) Inject(pkt []byte) error {
	if m.template != nil {
		return fmt.Errorf("memory tun %s: inject in source mode", m.name)
	}
	if m.isClosed() {
		return fmt.Errorf("memory tun %s: %w", m.name, os.ErrClosed)
	}
	select {
	case m.injected <- append([]byte(nil), pkt...):
		return nil
	case <-m.closed:
		return fmt.Errorf("memory tun %s: %w", m.name, os.ErrClosed)
	}
}

// Writes delivers copies of written packets when MemoryConfig.RecordWrites
// is positive, and is nil otherwise. It is never closed.
func (m *Memory) Writes() <-chan []byte { return m.writes }

// Stats returns the packets and bytes read and written so far.
func (m *Memory) Stats() MemoryStats {
	return MemoryStats{
		ReadPackets:    m.readPackets.Load(),
		ReadBytes:      m.readBytes.Load(),
		WrittenPackets: m.writtenPackets.Load(),
		WrittenBytes:   m.writtenBytes.Load(),
	}
}

// Read fills bufs[i][offset:] with the next packets and their lengths in
// sizes[i]. It blocks until at least one packet is available and returns an
// error matching os.ErrClosed after Close, unblocking a pending Read. A
// packet that does not fit its buffer is dropped and reported as an error,
// after the packets before it.
func (m *Memory) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if m.isClosed() {
		return 0, os.ErrClosed
	}
	if len(sizes) < len(bufs) || offset < 0 {
		return 0, fmt.Errorf("memory tun %s: read with %d sizes for %d buffers at offset %d", m.name, len(sizes), len(bufs), offset)
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if m.template != nil {
		return m.readTemplate(bufs, sizes, offset)
	}
	return m.readInjected(bufs, sizes, offset)
}

func (m *Memory) readTemplate(bufs [][]byte, sizes []int, offset int) (int, error) {
	want := uint64(len(bufs))
	if m.sourceLimit > 0 {
		for {
			done := m.readPackets.Load()
			if done >= m.sourceLimit {
				<-m.closed
				return 0, os.ErrClosed
			}
			want = min(want, m.sourceLimit-done)
			if m.readPackets.CompareAndSwap(done, done+want) {
				break
			}
		}
	} else {
		m.readPackets.Add(want)
	}
	n := int(want)
	for i := range n {
		if len(bufs[i]) < offset || copy(bufs[i][offset:], m.template) < len(m.template) {
			// The packets reserved but not delivered are not counted.
			m.readPackets.Add(^uint64(n - i - 1))
			m.readBytes.Add(uint64(i * len(m.template)))
			return i, m.errTooSmall(len(m.template), len(bufs[i]), offset)
		}
		sizes[i] = len(m.template)
	}
	m.readBytes.Add(uint64(n * len(m.template)))
	return n, nil
}

func (m *Memory) readInjected(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkt []byte
	select {
	case pkt = <-m.injected:
	case <-m.closed:
		return 0, os.ErrClosed
	}
	n, bytes := 0, 0
	for {
		if len(bufs[n]) < offset || copy(bufs[n][offset:], pkt) < len(pkt) {
			m.count(&m.readPackets, &m.readBytes, n, bytes)
			return n, m.errTooSmall(len(pkt), len(bufs[n]), offset)
		}
		sizes[n] = len(pkt)
		bytes += len(pkt)
		n++
		if n == len(bufs) {
			break
		}
		select {
		case pkt = <-m.injected:
			continue
		default:
		}
		break
	}
	m.count(&m.readPackets, &m.readBytes, n, bytes)
	return n, nil
}

// Write counts each packet bufs[i][offset:], passes it to OnWrite and
// records a copy if so configured. It returns len(bufs), or an error matching
// os.ErrClosed after Close.
func (m *Memory) Write(bufs [][]byte, offset int) (int, error) {
	if m.isClosed() {
		return 0, os.ErrClosed
	}
	if offset < 0 {
		return 0, fmt.Errorf("memory tun %s: write at offset %d", m.name, offset)
	}
	bytes := 0
	for i, buf := range bufs {
		if offset > len(buf) {
			m.count(&m.writtenPackets, &m.writtenBytes, i, bytes)
			return i, fmt.Errorf("memory tun %s: write at offset %d of a %d-byte buffer", m.name, offset, len(buf))
		}
		pkt := buf[offset:]
		bytes += len(pkt)
		if m.onWrite != nil {
			m.onWrite(pkt)
		}
		if m.writes != nil {
			select {
			case m.writes <- append([]byte(nil), pkt...):
			case <-m.closed:
				m.count(&m.writtenPackets, &m.writtenBytes, i, bytes-len(pkt))
				return i, os.ErrClosed
			}
		}
	}
	m.count(&m.writtenPackets, &m.writtenBytes, len(bufs), bytes)
	return len(bufs), nil
}

func (m *Memory) count(packets, bytes *atomic.Uint64, n, b int) {
	if n > 0 {
		packets.Add(uint64(n))
		bytes.Add(uint64(b))
	}
}

func (m *Memory) errTooSmall(pktLen, bufLen, offset int) error {
	return fmt.Errorf("memory tun %s: %d-byte packet does not fit a %d-byte buffer at offset %d", m.name, pktLen, bufLen, offset)
}

func (m *Memory) isClosed() bool {
	select {
	case <-m.closed:
		return true
	default:
		return false
	}
}

// File returns nil: an in-memory device has no file.
func (m *Memory) File() *os.File { return nil }

// MTU returns the configured MTU.
func (m *Memory) MTU() (int, error) { return m.mtu, nil }

// Name returns the configured name.
func (m *Memory) Name() (string, error) { return m.name, nil }

// Events returns a channel holding one EventUp, closed by Close.
func (m *Memory) Events() <-chan wgtun.Event { return m.events }

// BatchSize returns the configured batch size.
func (m *Memory) BatchSize() int { return m.batchSize }

// Close unblocks pending Read, Write and Inject calls, makes later ones fail
// with os.ErrClosed and closes the Events channel. Calling it again returns
// nil.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		close(m.closed)
		close(m.events)
	})
	return nil
}
