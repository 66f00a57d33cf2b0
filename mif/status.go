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
}

// PathStatus describes one path.
type PathStatus struct {
	ID     int    `json:"id"`
	Device string `json:"device"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
	GSO    bool   `json:"udp_gso"`
	GRO    bool   `json:"udp_gro"`
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

// ReadStatus reads the status of the instance whose control socket is at
// path.
func ReadStatus(path string) (json.RawMessage, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("no running mifsec at %s: %w", path, err)
	}
	defer conn.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(conn).Decode(&raw); err != nil {
		return nil, fmt.Errorf("reading status from %s: %w", path, err)
	}
	return raw, nil
}
