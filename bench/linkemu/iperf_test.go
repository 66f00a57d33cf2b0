package linkemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
)

// iperfReceived runs one iperf3 TCP test from A to B for secs seconds and
// returns the receiver's bits per second (end.sum_received).
func (tp *topo) iperfReceived(t testing.TB, secs int, extra ...string) float64 {
	t.Helper()
	testenv.RequireCommand(t, "iperf3")
	const port = "5301"
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
	defer cancel()
	server := exec.CommandContext(ctx, "ip", "netns", "exec", tp.nsB, "iperf3", "-s", "-1", "-p", port, "-B", tp.addrB.String())
	var serverOut testenv.SyncBuffer
	server.Stdout, server.Stderr = &serverOut, &serverOut
	if err := server.Start(); err != nil {
		t.Fatalf("starting iperf3 server: %v", err)
	}
	defer func() {
		_ = server.Process.Kill()
		_ = server.Wait()
	}()
	args := []string{"ip", "netns", "exec", tp.nsA, "iperf3", "-c", tp.addrB.String(), "-p", port, "-t", fmt.Sprint(secs), "-J"}
	args = append(args, extra...)
	var out []byte
	var err error
	for try := 0; try < 50; try++ {
		out, err = exec.CommandContext(ctx, args[0], args[1:]...).Output()
		if !strings.Contains(string(out), "Connection refused") {
			break
		}
		time.Sleep(100 * time.Millisecond) // server not listening yet
	}
	if err != nil {
		t.Fatalf("iperf3 client: %v\n%s\nserver: %s", err, out, serverOut.String())
	}
	bps, err := parseIperfReceived(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return bps
}

// parseIperfReceived reads end.sum_received.bits_per_second of `iperf3 -J`.
func parseIperfReceived(data []byte) (float64, error) {
	var out struct {
		End struct {
			SumReceived *struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, fmt.Errorf("parsing iperf3 JSON: %w", err)
	}
	if out.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", out.Error)
	}
	if out.End.SumReceived == nil {
		return 0, fmt.Errorf("iperf3 output has no end.sum_received")
	}
	return out.End.SumReceived.BitsPerSecond, nil
}
