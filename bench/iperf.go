package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

const iperfPort = 5201

// IperfResult is what one iperf3 TCP test measured.
type IperfResult struct {
	// ReceivedBitsPerSecond is end.sum_received.bits_per_second: the
	// goodput at the receiving side.
	ReceivedBitsPerSecond float64
	// SentBitsPerSecond is end.sum_sent.bits_per_second.
	SentBitsPerSecond float64
	// Retransmits counts the sender's TCP retransmissions (reported by the
	// server in reverse mode).
	Retransmits int
	// Seconds is how long the receiver measured.
	Seconds float64
	// Bytes is the payload the receiver got.
	Bytes int64
	// Reverse is true when the server sent (iperf3 -R).
	Reverse bool
}

// Mbps is the received rate in Mbit/s.
func (r IperfResult) Mbps() float64 { return r.ReceivedBitsPerSecond / 1e6 }

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         int64   `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   *int    `json:"retransmits"`
}

type iperfOutput struct {
	Start struct {
		TestStart struct {
			Protocol string `json:"protocol"`
			Reverse  int    `json:"reverse"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIperfJSON reads the output of `iperf3 --json` for a TCP test.
func ParseIperfJSON(data []byte) (IperfResult, error) {
	var out iperfOutput
	if err := json.Unmarshal(data, &out); err != nil {
		return IperfResult{}, fmt.Errorf("parse iperf3 JSON output: %w", err)
	}
	if out.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3: %s", out.Error)
	}
	if p := out.Start.TestStart.Protocol; p != "TCP" {
		return IperfResult{}, fmt.Errorf("iperf3 output is for protocol %q, want TCP", p)
	}
	if out.End.SumReceived == nil || out.End.SumSent == nil {
		return IperfResult{}, errors.New("iperf3 output has no end.sum_received or end.sum_sent")
	}
	result := IperfResult{
		ReceivedBitsPerSecond: out.End.SumReceived.BitsPerSecond,
		SentBitsPerSecond:     out.End.SumSent.BitsPerSecond,
		Seconds:               out.End.SumReceived.Seconds,
		Bytes:                 out.End.SumReceived.Bytes,
		Reverse:               out.Start.TestStart.Reverse != 0,
	}
	if r := out.End.SumSent.Retransmits; r != nil {
		result.Retransmits = *r
	}
	return result, nil
}

// iperfTest describes one iperf3 run between the two namespaces.
type iperfTest struct {
	server   netip.Addr
	bind     netip.Addr // client source address; invalid for the kernel's choice
	duration time.Duration
	reverse  bool
}

// runIperf runs one TCP flow from the client namespace to an iperf3 server
// started in the server namespace for this test only (-1), and stops the
// server by PID whatever happens.
func (t *Topology) runIperf(ctx context.Context, test iperfTest) (IperfResult, error) {
	server, err := t.Start(t.Server, "iperf3 server", nil,
		"iperf3", "--server", "--one-off", "--port", strconv.Itoa(iperfPort))
	if err != nil {
		return IperfResult{}, err
	}
	defer server.Stop(stopGrace)
	if err := t.waitListening(ctx, server, iperfPort); err != nil {
		return IperfResult{}, err
	}

	args := []string{"iperf3", "--client", test.server.String(), "--port", strconv.Itoa(iperfPort),
		"--time", strconv.Itoa(int(test.duration.Round(time.Second) / time.Second)),
		"--json", "--connect-timeout", "3000"}
	if test.bind.IsValid() {
		args = append(args, "--bind", test.bind.String())
	}
	if test.reverse {
		args = append(args, "--reverse")
	}
	// The client ends by itself after the test; the deadline only catches a
	// stalled tunnel.
	runCtx, cancel := context.WithTimeout(ctx, test.duration+30*time.Second)
	defer cancel()
	out, runErr := t.Run(runCtx, t.Client, args...)
	result, parseErr := ParseIperfJSON([]byte(jsonPart(out)))
	switch {
	case ctx.Err() != nil:
		return IperfResult{}, ctx.Err()
	case parseErr != nil && runErr != nil:
		return IperfResult{}, fmt.Errorf("%w (%v)", parseErr, firstLine(runErr.Error()))
	case parseErr != nil:
		return IperfResult{}, parseErr
	}
	return result, nil
}

// interfaceCounters are an interface's byte counters.
type interfaceCounters struct {
	TxBytes, RxBytes uint64
}

// readCounters reads the byte counters of an interface in namespace ns.
func (t *Topology) readCounters(ctx context.Context, ns, iface string) (interfaceCounters, error) {
	out, err := t.Run(ctx, ns, "ip", "-json", "-stats", "link", "show", "dev", iface)
	if err != nil {
		return interfaceCounters{}, fmt.Errorf("read the counters of %s: %w", iface, err)
	}
	return parseLinkCounters([]byte(jsonPart(out)))
}

// parseLinkCounters reads the byte counters from `ip -json -stats link show
// dev IFACE`.
func parseLinkCounters(data []byte) (interfaceCounters, error) {
	var links []struct {
		Name  string `json:"ifname"`
		Stats *struct {
			Rx struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
			Tx struct {
				Bytes uint64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(data, &links); err != nil {
		return interfaceCounters{}, fmt.Errorf("parse ip link JSON: %w", err)
	}
	if len(links) != 1 || links[0].Stats == nil {
		return interfaceCounters{}, errors.New("ip link JSON has no single interface with stats64")
	}
	return interfaceCounters{TxBytes: links[0].Stats.Tx.Bytes, RxBytes: links[0].Stats.Rx.Bytes}, nil
}

// flowCrossed reports whether an interface that counted delta bytes in the
// flow's direction carried a flow of payload bytes: headers only add, so
// at least 90% (counters and iperf3's interval differ at the edges).
func flowCrossed(payload int64, delta uint64) bool {
	return float64(delta) >= 0.9*float64(payload)
}

// waitListening polls until the server namespace listens on the TCP port.
func (t *Topology) waitListening(ctx context.Context, server *Process, port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := t.Run(ctx, t.Server, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		if server.Exited() {
			return fmt.Errorf("%s ended before listening:\n%s", server.Name(), server.Describe())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on port %d after 10s:\n%s", server.Name(), port, server.Describe())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// jsonPart cuts anything before the first '{' or '[' (ip netns exec may
// print warnings to the combined output).
func jsonPart(out string) string {
	if i := strings.IndexAny(out, "{["); i > 0 {
		return out[i:]
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// checkTrafficTools reports the tools every scenario needs.
func checkTrafficTools() error {
	for _, tool := range []struct{ binary, pkg string }{
		{"iperf3", "iperf3"},
		{"ping", "iputils-ping"},
		{"ss", "iproute2"},
		{"ip", "iproute2"},
	} {
		if _, err := exec.LookPath(tool.binary); err != nil {
			return fmt.Errorf("%s not found: apt-get install %s", tool.binary, tool.pkg)
		}
	}
	return nil
}
