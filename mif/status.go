package mif

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"golang.org/x/sys/unix"
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
	// Reinjected counts the datagrams sent again on the other paths after
	// theirs failed or went away; the copies that had arrived after all
	// are the gateway's "replayed" drops.
	Reinjected uint64 `json:"reinjected,omitempty"`
	// KillSwitch is there when the kill switch is on.
	KillSwitch *KillSwitchStatus `json:"kill_switch,omitempty"`
}

// KillSwitchStatus counts what the kill switch kept from leaving outside
// the tunnel.
type KillSwitchStatus struct {
	DroppedPackets uint64 `json:"dropped_packets"`
	DroppedBytes   uint64 `json:"dropped_bytes"`
	Error          string `json:"error,omitempty"` // reading the counter failed
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
	Reordered  uint64 `json:"reordered,omitempty"` // of late: their gap had been inferred lost (their path reordered)
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
	// What the scheduler picks by: the one-way delay it expects, the
	// rate it spreads packets at (the delivery rate with its gain, boost
	// and loss penalty) and the queue it believes the path holds now.
	OneWayDelay time.Duration `json:"one_way_delay"`
	PickerRate  float64       `json:"picker_rate"` // bytes per second
	Queued      int64         `json:"queued"`      // bytes
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

// Control is what an instance's control socket serves.
type Control struct {
	// Status returns the instance's status, sent as JSON.
	Status func() any
	// Summary returns the status without its lists that grow with the
	// clients (a gateway's): what `mifsec status --summary` reads from a
	// gateway with 100,000 clients in a moment. nil: Status.
	Summary func() any
	// Stop asks the instance to stop as SIGTERM does; nil refuses stop
	// requests.
	Stop func()
	// Drain takes a gateway out of service (`mifsec gateway drain`,
	// SIGUSR1) and returns how many clients it asks to leave; nil refuses
	// drain requests.
	Drain func() (int, error)
}

// The control protocol: a client sends one request line and reads one
// JSON reply. A client that sends nothing within requestTimeout, or
// closes its side at once, gets the status (so `nc -U` shows it).
const (
	requestStatus  = "status"
	requestSummary = "summary"
	requestStop    = "stop"
	requestDrain   = "drain"
	requestTimeout = 500 * time.Millisecond
)

// stopReply answers a stop request, and refuses a request.
type stopReply struct {
	Stopping bool   `json:"stopping"`
	Error    string `json:"error,omitempty"`
}

// drainReply answers a drain request.
type drainReply struct {
	Draining bool   `json:"draining"`
	Clients  int    `json:"clients"` // asked to leave
	Error    string `json:"error,omitempty"`
}

// ServeControl answers requests on the control socket at path until ctx
// ends or closeControl is called, and removes the socket then. The socket
// is readable by root only. A process that exits must call closeControl
// itself: removal on ctx alone runs on a goroutine that may not get to
// run before the process ends, and the socket file stays behind.
func ServeControl(ctx context.Context, path string, ctl Control) (closeControl func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	// The sockets of every network namespace share /run: an instance in
	// another namespace on a TUN device of the same name must keep its
	// socket. Only a socket no one answers on is stale.
	if conn, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		conn.Close()
		return nil, fmt.Errorf("another mifsec instance answers on %s (the same TUN name in another network namespace?): choose another --tun", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale control socket: %w", err)
	}
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	var once sync.Once
	closeControl = func() {
		once.Do(func() {
			ln.Close()
			os.Remove(path)
		})
	}
	go func() {
		<-ctx.Done()
		closeControl()
	}()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go ctl.answer(conn)
		}
	}()
	return closeControl, nil
}

// answer reads one request from conn and replies to it.
func (ctl Control) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(requestTimeout))
	line, _ := bufio.NewReader(io.LimitReader(conn, 64)).ReadString('\n')
	conn.SetDeadline(time.Now().Add(statusTimeout))
	enc := json.NewEncoder(conn)
	switch req := strings.TrimSpace(line); req {
	case "", requestStatus:
		conn.SetDeadline(time.Now().Add(statusReadTimeout))
		enc.Encode(ctl.Status())
	case requestSummary:
		summary := ctl.Summary
		if summary == nil {
			summary = ctl.Status
		}
		enc.Encode(summary())
	case requestStop:
		if ctl.Stop == nil {
			enc.Encode(stopReply{Error: "this instance cannot be stopped through its control socket"})
			return
		}
		enc.Encode(stopReply{Stopping: true})
		ctl.Stop()
	case requestDrain:
		if ctl.Drain == nil {
			enc.Encode(drainReply{Error: "this instance is no gateway: it cannot be drained"})
			return
		}
		n, err := ctl.Drain()
		if err != nil {
			enc.Encode(drainReply{Error: err.Error()})
			return
		}
		enc.Encode(drainReply{Draining: true, Clients: n})
	default:
		enc.Encode(stopReply{Error: fmt.Sprintf("unknown request %q", req)})
	}
}

// statusTimeout bounds connecting to an instance and its answer to a
// stop or drain request.
const statusTimeout = 2 * time.Second

// statusReadTimeout bounds reading an instance's status. A gateway's
// status lists every client: with 60,000 of them it is some 30 MB of JSON,
// which the gateway takes more than statusTimeout to build and encode
// (docs/gateway-scale.md). An instance that hangs is still an error, later.
const statusReadTimeout = 20 * time.Second

// dialControl connects to the control socket at path.
func dialControl(path string) (*net.UnixConn, error) {
	conn, err := net.DialTimeout("unix", path, statusTimeout)
	if err != nil {
		return nil, fmt.Errorf("no running mifsec at %s: %w", path, err)
	}
	conn.SetDeadline(time.Now().Add(statusTimeout))
	return conn.(*net.UnixConn), nil
}

// send sends the request req on conn to the control socket at path.
func send(conn net.Conn, path, req string) error {
	if _, err := io.WriteString(conn, req+"\n"); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	return nil
}

// ReadStatus reads the status of the instance whose control socket is at
// path; an instance that does not answer within statusReadTimeout is an
// error.
func ReadStatus(path string) (json.RawMessage, error) { return readStatus(path, requestStatus) }

// ReadSummary reads the status of the instance whose control socket is at
// path without the lists that grow with its clients (Control.Summary).
func ReadSummary(path string) (json.RawMessage, error) { return readStatus(path, requestSummary) }

// readStatus sends req (status or summary) and reads the reply.
func readStatus(path, req string) (json.RawMessage, error) {
	conn, err := dialControl(path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := send(conn, path, req); err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(statusReadTimeout))
	var raw json.RawMessage
	if err := json.NewDecoder(conn).Decode(&raw); err != nil {
		return nil, fmt.Errorf("reading status from %s: %w", path, err)
	}
	return raw, nil
}

// Drain asks the gateway whose control socket is at path to drain (as
// SIGUSR1 does) and returns how many clients it asks to leave.
func Drain(path string) (int, error) {
	conn, err := dialControl(path)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := send(conn, path, requestDrain); err != nil {
		return 0, err
	}
	var reply drainReply
	if err := json.NewDecoder(conn).Decode(&reply); err != nil {
		return 0, fmt.Errorf("draining the gateway at %s: %w", path, err)
	}
	if reply.Error != "" {
		return 0, fmt.Errorf("draining the gateway at %s: %s", path, reply.Error)
	}
	return reply.Clients, nil
}

// Stop asks the instance whose control socket is at path to stop, as
// SIGTERM would, and waits up to within for its process to exit, which
// it does once it has deleted its IKE SA and removed its device.
func Stop(path string, within time.Duration) error {
	conn, err := dialControl(path)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The peer's process, opened before it is asked to stop: its exit is
	// what the wait below sees.
	pid, pidfd, err := openPeer(conn)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	defer unix.Close(pidfd)
	if err := send(conn, path, requestStop); err != nil {
		return err
	}
	var reply stopReply
	if err := json.NewDecoder(conn).Decode(&reply); err != nil {
		return fmt.Errorf("stopping the instance at %s: %w", path, err)
	}
	if reply.Error != "" {
		return fmt.Errorf("stopping the instance at %s: %s", path, reply.Error)
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(within)
	for {
		n, err := unix.Poll(fds, int(max(0, time.Until(deadline).Milliseconds())))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("waiting for process %d: %w", pid, err)
		case n == 0:
			return fmt.Errorf("process %d (control socket %s) still runs %v after the stop request", pid, path, within)
		}
		return nil
	}
}

// openPeer returns the process at the other end of conn and a pidfd of it
// (SO_PEERCRED, pidfd_open).
func openPeer(conn *net.UnixConn) (pid, pidfd int, err error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, -1, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, -1, err
	}
	if credErr != nil {
		return 0, -1, fmt.Errorf("peer credentials: %w", credErr)
	}
	if cred.Pid == 0 {
		return 0, -1, errors.New("the instance runs in another PID namespace")
	}
	pidfd, err = unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		return 0, -1, fmt.Errorf("opening process %d: %w", cred.Pid, err)
	}
	return int(cred.Pid), pidfd, nil
}
