package mif

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitDefault(t *testing.T) {
	tests := map[string][]string{
		"0.0.0.0/0":   {"0.0.0.0/1", "128.0.0.0/1"},
		"::/0":        {"::/1", "8000::/1"},
		"10.1.0.0/24": {"10.1.0.0/24"},
	}
	for in, want := range tests {
		var w []netip.Prefix
		for _, s := range want {
			w = append(w, netip.MustParsePrefix(s))
		}
		if got := splitDefault(netip.MustParsePrefix(in)); !slices.Equal(got, w) {
			t.Errorf("splitDefault(%s) = %v, want %v", in, got, w)
		}
	}
}

// TestStatusSlowToBuild: a status that takes longer than the other
// requests' timeout to build (a gateway with tens of thousands of
// clients) is still read.
func TestStatusSlowToBuild(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "s.sock")
	closeControl, err := ServeControl(ctx, path, Control{Status: func() any {
		time.Sleep(statusTimeout + 500*time.Millisecond)
		return map[string]int{"clients": 60000}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer closeControl()
	raw, err := ReadStatus(path)
	if err != nil || string(raw) != `{"clients":60000}` {
		t.Fatalf("status %s, %v", raw, err)
	}
}

func TestStatusSocketRoundTrip(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "s.sock")
	closeControl, err := ServeControl(ctx, path, Control{Status: func() any { return map[string]int{"tx_packets": 42} }})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ReadStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `{"tx_packets":42}` {
		t.Fatalf("status %s", raw)
	}
	if _, err := ReadStatus(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("reading a missing socket succeeded")
	}
	// A second instance on the same path must not take the live socket.
	if _, err := ServeControl(ctx, path, Control{Status: func() any { return "other" }}); err == nil || !strings.Contains(err.Error(), "another mifsec instance") {
		t.Fatalf("second ServeControl on a live socket: %v", err)
	}
	if raw, err := ReadStatus(path); err != nil || string(raw) != `{"tx_packets":42}` {
		t.Fatalf("the first instance lost its socket: %s %v", raw, err)
	}
	// close removes the socket before it returns (a process that exits
	// right after must leave nothing in /run), and may be called again.
	closeControl()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after close: %v", err)
	}
	closeControl()
}

// TestControlSocketRequests: the control socket answers a status request,
// a connection that sends nothing, a stop request (calling Stop), and
// refuses stop without a Stop and unknown requests.
func TestControlSocketRequests(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{}, 1)
	path := filepath.Join(t.TempDir(), "s.sock")
	if _, err := ServeControl(ctx, path, Control{
		Status:  func() any { return map[string]int{"tx_packets": 7} },
		Summary: func() any { return map[string]int{"client_count": 7} },
		Stop:    func() { stopped <- struct{}{} },
	}); err != nil {
		t.Fatal(err)
	}
	noStop := filepath.Join(t.TempDir(), "nostop.sock")
	if _, err := ServeControl(ctx, noStop, Control{Status: func() any { return "x" }}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, send, want string
	}{
		{"status", path, "status\n", `{"tx_packets":7}`},
		{"summary", path, "summary\n", `{"client_count":7}`},
		{"summary of an instance without one", noStop, "summary\n", `"x"`},
		{"nothing sent", path, "", `{"tx_packets":7}`},
		{"unknown", path, "restart\n", `{"stopping":false,"error":"unknown request \"restart\""}`},
		{"stop refused", noStop, "stop\n", `{"stopping":false,"error":"this instance cannot be stopped through its control socket"}`},
		{"stop", path, "stop\n", `{"stopping":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("unix", tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			reply, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(reply)); got != tc.want {
				t.Fatalf("reply %s, want %s", got, tc.want)
			}
		})
	}
	select {
	case <-stopped:
	default:
		t.Fatal("a stop request did not call Stop")
	}
	if err := Stop(noStop, time.Second); err == nil || !strings.Contains(err.Error(), "cannot be stopped") {
		t.Fatalf("Stop of an instance without Stop: %v", err)
	}
}

// TestControlSocketDrain: a drain request calls Drain and returns how many
// clients it asked to move; an instance without Drain (no gateway)
// refuses, and Drain's error comes back.
func TestControlSocketDrain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	gw, client, failing := filepath.Join(dir, "gw.sock"), filepath.Join(dir, "cl.sock"), filepath.Join(dir, "f.sock")
	for path, ctl := range map[string]Control{
		gw:      {Status: func() any { return "gw" }, Drain: func() (int, error) { return 3, nil }},
		client:  {Status: func() any { return "client" }},
		failing: {Status: func() any { return "gw" }, Drain: func() (int, error) { return 0, errors.New("the loop is gone") }},
	} {
		if _, err := ServeControl(ctx, path, ctl); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := Drain(gw); err != nil || n != 3 {
		t.Fatalf("Drain: %d, %v; want 3 clients", n, err)
	}
	if _, err := Drain(client); err == nil || !strings.Contains(err.Error(), "no gateway") {
		t.Fatalf("draining a client: %v, want it refused", err)
	}
	if _, err := Drain(failing); err == nil || !strings.Contains(err.Error(), "the loop is gone") {
		t.Fatalf("a failing drain: %v", err)
	}
	if _, err := Drain(filepath.Join(dir, "none.sock")); err == nil {
		t.Fatal("draining a missing socket succeeded")
	}
}
