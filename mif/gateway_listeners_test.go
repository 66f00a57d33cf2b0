package mif

import (
	"context"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIKE500ReceiveBuffer: the port 500 socket, where every client's
// IKE_SA_INIT arrives, gets a receive buffer of ike500Buffer, not the
// system's default of some 200 KB, which dropped tens of thousands of
// requests in bursts of new clients.
func TestIKE500ReceiveBuffer(t *testing.T) {
	pc, err := (&net.ListenConfig{Control: ike500Options}).ListenPacket(context.Background(), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size, reuse int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); serr == nil {
			reuse, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR)
		}
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if reuse != 1 {
		t.Error("SO_REUSEADDR is off")
	}
	// The kernel reports twice what was set (its bookkeeping overhead).
	if size < ike500Buffer {
		if os.Geteuid() != 0 {
			t.Skipf("not root: the receive buffer is capped at net.core.rmem_max (%d bytes here) without CAP_NET_ADMIN", size)
		}
		t.Fatalf("receive buffer %d bytes, want at least %d", size, ike500Buffer)
	}
}
