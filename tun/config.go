package tun

import (
	"fmt"
	"runtime"
)

const (
	// VirtioNetHdrLen is the length of the virtio-net header that precedes
	// every packet on a queue opened with offloads on. A queue's Read and
	// Write need offset >= VirtioNetHdrLen: Write puts the header into
	// bufs[i][offset-VirtioNetHdrLen:offset], and Read leaves the bytes before
	// offset untouched.
	VirtioNetHdrLen = 10

	// minMTU is the smallest MTU accepted: the minimum datagram every IPv4
	// host must accept (RFC 791).
	minMTU = 576
	// minIPv6MTU is the smallest MTU of a link that carries IPv6 (RFC 8200).
	minIPv6MTU = 1280
	// maxMTU is the largest MTU accepted: the largest IPv4 datagram.
	maxMTU = 65535
	// defaultMTU is used when Config.MTU is 0: a 1500-byte path minus the
	// overhead of UDP-encapsulated ESP over IPv6 (40 IPv6 + 8 UDP + 8 ESP
	// header + 8 IV + up to 5 padding and trailer + 16 ICV), rounded down.
	defaultMTU = 1400

	// maxQueues is the most queues one TUN interface can have: the kernel
	// refuses the 257th attach with E2BIG (MAX_TAP_QUEUES in
	// drivers/net/tun.c).
	maxQueues = 256

	// maxNameLen is IFNAMSIZ minus the terminating NUL.
	maxNameLen = 15

	// maxTxQueueLen bounds Config.TxQueueLen: each queue's ring holds that
	// many packets, each up to an MTU.
	maxTxQueueLen = 1 << 16
)

// Config describes the TUN interface that Create makes.
type Config struct {
	// Name of the interface. Empty lets the kernel pick a free tunN name.
	// At most 15 characters from a-z, A-Z, 0-9, '-', '_' and '.'.
	Name string
	// MTU of the interface, minMTU..MaxMTU; 0 means defaultMTU. An IPv6
	// address can be added only when the MTU is at least minIPv6MTU.
	MTU int
	// Queues is the number of queues opened on the interface, 1..MaxQueues;
	// 0 means runtime.NumCPU() (capped at maxQueues).
	Queues int
	// TxQueueLen is the interface's transmit queue length, 1..65536; 0
	// keeps the kernel's (500). The kernel sizes each queue's ring, where
	// packets routed into the interface wait for this process to read
	// them, by it, and drops what does not fit: a gateway whose many
	// clients send at once needs more than 500.
	TxQueueLen int
}

// Validate refuses a configuration that Create would refuse, so that a
// command can refuse it before it creates anything else.
func (cfg Config) Validate() error {
	_, err := cfg.withDefaults()
	return err
}

// withDefaults returns cfg with zero fields replaced by their defaults, or an
// error describing the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name != "" {
		if err := ValidateName(cfg.Name); err != nil {
			return cfg, err
		}
	}
	if cfg.MTU == 0 {
		cfg.MTU = defaultMTU
	}
	if err := validateMTU(cfg.MTU); err != nil {
		return cfg, err
	}
	if cfg.Queues == 0 {
		cfg.Queues = min(runtime.NumCPU(), maxQueues)
	}
	if cfg.Queues < 1 || cfg.Queues > maxQueues {
		return cfg, fmt.Errorf("queue count %d out of range 1..%d", cfg.Queues, maxQueues)
	}
	if cfg.TxQueueLen < 0 || cfg.TxQueueLen > maxTxQueueLen {
		return cfg, fmt.Errorf("transmit queue length %d out of range 1..%d", cfg.TxQueueLen, maxTxQueueLen)
	}
	return cfg, nil
}

// ValidateName reports whether name can be used as the name of a new
// interface: 1 to 15 characters from a-z, A-Z, 0-9, '-', '_' and '.', and
// not "." or "..". The kernel accepts a few more characters; this stricter
// set keeps names safe to pass to shell tools and file paths.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid interface name: empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("invalid interface name %q: %d bytes, at most %d allowed", name, len(name), maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return fmt.Errorf("invalid interface name %q: character %q at %d not allowed (use a-z, A-Z, 0-9, '-', '_', '.')", name, c, i)
		}
	}
	return nil
}

func validateMTU(mtu int) error {
	if mtu < minMTU || mtu > maxMTU {
		return fmt.Errorf("MTU %d out of range %d..%d", mtu, minMTU, maxMTU)
	}
	return nil
}
