package mif

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestIKESenderKeepsOrderAndDrains: datagrams queued for the sender leave
// in the order given, those still queued when it is told to stop leave
// before it ends (a stopping gateway's goodbyes), and once it ended a
// send is refused rather than left waiting.
func TestIKESenderKeepsOrderAndDrains(t *testing.T) {
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	from, to := listen(), listen()
	dst := to.LocalAddr().(*net.UDPAddr).AddrPort()
	s := newIKESender(slog.New(slog.NewTextHandler(io.Discard, nil)))
	const n = 200
	msg := func(i int) []byte { return fmt.Appendf(nil, "message %03d", i) }
	// Half queued before the sender runs, half while it stops.
	for i := range n / 2 {
		if !s.send(ikeDatagram{msg: msg(i), to: dst, ike500: from}) {
			t.Fatal("a send before the sender ran was refused")
		}
	}
	stop := make(chan struct{})
	go s.run(stop)
	for i := n / 2; i < n; i++ {
		if !s.send(ikeDatagram{msg: msg(i), to: dst, ike500: from}) {
			t.Fatal("a send while the sender runs was refused")
		}
	}
	close(stop)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the sender did not end")
	}
	if s.send(ikeDatagram{msg: msg(n), to: dst, ike500: from}) {
		t.Fatal("a send after the sender ended was taken")
	}
	buf := make([]byte, 64)
	to.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		k, src, err := to.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:k], msg(i)) || src != from.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("datagram %d: %q from %v, want %q", i, buf[:k], src, msg(i))
		}
	}
	to.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if k, _, err := to.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("a datagram more: %q", buf[:k])
	}
}
