package mif

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
)

// Status is what `mifsec status` shows about a running instance.
type Status struct {
	Session   ike.Status        `json:"session"`
	Interface string            `json:"interface"`
	Device    string            `json:"device"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	Drops     map[string]uint64 `json:"drops,omitempty"`
	Paths     []PathStatus      `json:"paths"`
	// Policy is how outbound packets are spread over the paths: "single"
	// (one path, MOBIKE moves it) unless the gateway negotiated the MIF
	// extension and multipath scheduling is on.
	Policy string `json:"policy,omitempty"`
	// Order is what the resequencer of the inbound SA did, when it
	// restores the order across paths.
	Order *OrderStatus `json:"order,omitempty"`
}

// OrderStatus counts what a resequencer did with an inbound SA's packets
// (scheduler.ResequencerStats): released in order at once, held and
// released once their gap filled, gaps given up (on time, early, or for
// lack of room), packets that came after their gap was given up and so
// went out of order, and duplicates.
type OrderStatus struct {
	InOrder    uint64 `json:"in_order"`
	Held       uint64 `json:"held"`
	Released   uint64 `json:"released"`
	Timeouts   uint64 `json:"timeouts"`
	LostEarly  uint64 `json:"lost_early"`
	Overflow   uint64 `json:"overflow"`
	Late       uint64 `json:"late"`
	Duplicates uint64 `json:"duplicates"`
	HeldNow    int    `json:"held_now"`
}

// PathStatus describes one path.
type PathStatus struct {
	ID     int    `json:"id"`
	Device string `json:"device"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
	GSO    bool   `json:"udp_gso"`
	GRO    bool   `json:"udp_gro"`
	// What the path's socket carried: ESP datagrams sent (sealed bytes)
	// and datagrams of every kind received (dataplane.PathStats).
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	// Multipath is the path's scheduling state when the session spreads
	// its traffic over several paths (the MIF extension).
	Multipath *ScheduledPath `json:"multipath,omitempty"`
}

// countSocket copies the counters of the path's socket (nil: none).
func (ps *PathStatus) countSocket(s *dataplane.PathStats) {
	if s != nil {
		ps.TxPackets, ps.TxBytes = s.TxPackets.Load(), s.TxBytes.Load()
		ps.RxPackets, ps.RxBytes = s.RxPackets.Load(), s.RxBytes.Load()
	}
}

// ScheduledPath is one path as the multipath scheduler sees it.
type ScheduledPath struct {
	ID         int    `json:"id"`          // the scheduler's (and the probes') path ID
	EnginePath int    `json:"engine_path"` // the data plane path (socket) it sends on
	Remote     string `json:"remote,omitempty"`
	Kind       string `json:"kind"`
	Tier       int    `json:"tier"`
	// State is probing (not verified yet), active, failed.
	State string        `json:"state"`
	SRTT  time.Duration `json:"srtt"`
	Rate  float64       `json:"rate"` // delivery rate, bytes per second (0: unknown)
	Loss  float64       `json:"loss"` // 0..1
	// What was sent through the path (data and probes) and what the
	// current inbound SA received on it.
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
}

// ControlDir holds the control sockets of running instances.
const ControlDir = "/run/mifsec"

// ControlSocket is the control socket of the instance running on the TUN
// interface name.
func ControlSocket(name string) string { return filepath.Join(ControlDir, name+".sock") }

// ServeStatus answers every connection to the control socket at path with
// the current status as JSON, until ctx ends. The socket is readable by
// root only.
func ServeStatus(ctx context.Context, path string, status func() any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	// The sockets of every network namespace share /run: an instance in
	// another namespace on a TUN device of the same name must keep its
	// socket. Only a socket no one answers on is stale.
	if conn, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		conn.Close()
		return fmt.Errorf("another mifsec instance answers on %s (the same TUN name in another network namespace?): choose another --tun", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale control socket: %w", err)
	}
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		os.Remove(path)
	}()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			json.NewEncoder(conn).Encode(status())
			conn.Close()
		}
	}()
	return nil
}

// statusTimeout bounds reading an instance's status.
const statusTimeout = 2 * time.Second

// ReadStatus reads the status of the instance whose control socket is at
// path; an instance that does not answer within statusTimeout is an error.
func ReadStatus(path string) (json.RawMessage, error) {
	conn, err := net.DialTimeout("unix", path, statusTimeout)
	if err != nil {
		return nil, fmt.Errorf("no running mifsec at %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(statusTimeout))
	var raw json.RawMessage
	if err := json.NewDecoder(conn).Decode(&raw); err != nil {
		return nil, fmt.Errorf("reading status from %s: %w", path, err)
	}
	return raw, nil
}
