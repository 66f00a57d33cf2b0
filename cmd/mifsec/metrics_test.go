package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/urfave/cli/v2"
)

// metricFamilies are scraped metrics by name.
type metricFamilies map[string]*dto.MetricFamily

// value returns the sum of the series name{labels} (pairs of label name
// and value; other labels may have any value) and whether there is one.
func (f metricFamilies) value(name string, labels ...string) (sum float64, found bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		found = true
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum, found
}

// gather collects c through a pedantic registry, which also checks that
// every metric is one c describes and that no series comes twice.
func gather(c prometheus.Collector) (metricFamilies, error) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	list, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := metricFamilies{}
	for _, f := range list {
		out[f.GetName()] = f
	}
	return out, nil
}

type wantSeries struct {
	name   string
	labels []string
	value  float64
}

func TestMetricsFromStatus(t *testing.T) {
	client := mif.Status{TxPackets: 10, TxBytes: 1000, RxPackets: 20, RxBytes: 2000, Device: "wlan0",
		Drops: map[string]uint64{"replayed": 3},
		Paths: []mif.PathStatus{
			{ID: 1, Device: "wlan0", TxPackets: 7, TxBytes: 770, RxPackets: 8, RxBytes: 880,
				Multipath: &mif.ScheduledPath{ID: 1, State: "active", SRTT: 25 * time.Millisecond, Loss: 0.5, Rate: 1e6}},
			{ID: 2, Device: "wwan0", TxPackets: 1, TxBytes: 100},
		}}
	client.Session = ike.Status{State: "established", IKESPIi: "0102030405060708", IKERekeys: 2, ChildRekeys: 5, Reconnects: 1,
		Failures: map[string]uint64{ike.FailTimeout: 4}, Child: &ike.ChildStatus{InSPI: "c0000001", OutSPI: "c0000002", Algorithm: "aes256gcm16"}}
	reconnecting := client
	reconnecting.Session.State = "reconnecting"
	gateway := mif.GatewayStatus{TxPackets: 30, TxBytes: 3000, RxPackets: 40, RxBytes: 4000, InboundSAs: 3,
		IKEFailures: map[string]uint64{ike.FailAuthentication: 6},
		Pools:       []ike.PoolStatus{{Prefix: "10.3.0.0/24", Leased: 2}},
		Clients: []mif.GatewayClientStatus{
			{ClientStatus: ike.ClientStatus{ID: "alice@example", Addresses: []string{"10.3.0.2/32", "fd03::2/128"}, IKERekeys: 1, ChildRekeys: 9}, RxPackets: 11, TxPackets: 12, RxBytes: 1100, TxBytes: 1200,
				Multipath: []mif.ScheduledPath{{ID: 3, Remote: "198.51.100.1:4500", State: "probing", SRTT: time.Second, TxPackets: 4, RxBytes: 400}}},
			// One identity may hold several IKE SAs, each with its own
			// inner address.
			{ClientStatus: ike.ClientStatus{ID: "bob@example", Addresses: []string{"10.3.0.3/32"}, ChildRekeys: 1}},
			{ClientStatus: ike.ClientStatus{ID: "bob@example", Addresses: []string{"10.3.0.4/32"}, ChildRekeys: 2}},
		}}
	// Clients without inner addresses (none the gateway makes) that share
	// an identity: the first one speaks for both, rather than a series
	// given twice failing the scrape.
	twins := mif.GatewayStatus{Clients: []mif.GatewayClientStatus{
		{ClientStatus: ike.ClientStatus{ID: "carol@example"}, RxPackets: 1},
		{ClientStatus: ike.ClientStatus{ID: "carol@example"}, RxPackets: 2},
	}}
	// What a gateway's summary and status give for st; a collector that
	// may not read the full status fails the test if it does.
	fromGateway := func(st mif.GatewayStatus, perClient int) gatewayCollector {
		st.ClientCount = len(st.Clients)
		summary := st
		summary.Clients = nil
		return gatewayCollector{perClient: perClient,
			summary: func(context.Context) mif.GatewayStatus { return summary },
			status: func(context.Context) mif.GatewayStatus {
				if len(st.Clients) > perClient {
					t.Errorf("the full status of %d clients read with the per-client limit at %d", len(st.Clients), perClient)
				}
				return st
			}}
	}
	totals := []wantSeries{
		{"mifsec_tunnel_packets_total", []string{"direction", "rx"}, 40},
		{"mifsec_ike_failures_total", []string{"reason", "authentication"}, 6},
		{"mifsec_ike_sas", nil, 3},
		{"mifsec_child_sas", nil, 3},
		{"mifsec_pool_leased_addresses", []string{"pool", "10.3.0.0/24"}, 2},
	}
	perClient := []string{"mifsec_client_packets_total", "mifsec_client_bytes_total", "mifsec_child_rekeys_total", "mifsec_path_state"}
	for _, tc := range []struct {
		name      string
		collector prometheus.Collector
		want      []wantSeries
		absent    []string
	}{
		{name: "client", collector: statusCollector{func() mif.Status { return client }}, want: []wantSeries{
			{"mifsec_tunnel_packets_total", []string{"direction", "tx"}, 10},
			{"mifsec_tunnel_bytes_total", []string{"direction", "rx"}, 2000},
			{"mifsec_drops_total", []string{"reason", "replayed"}, 3},
			{"mifsec_ike_failures_total", []string{"reason", "timeout"}, 4},
			{"mifsec_ike_failures_total", []string{"reason", "authentication"}, 0},
			{"mifsec_session_established", nil, 1},
			{"mifsec_ike_sas", nil, 1},
			{"mifsec_child_sas", nil, 1},
			{"mifsec_child_sa_info", []string{"in_spi", "c0000001", "out_spi", "c0000002", "algorithm", "aes256gcm16"}, 1},
			{"mifsec_ike_rekeys_total", nil, 2},
			{"mifsec_child_rekeys_total", nil, 5},
			{"mifsec_reconnects_total", nil, 1},
			{"mifsec_path_packets_total", []string{"path", "1", "device", "wlan0", "direction", "rx"}, 8},
			{"mifsec_path_bytes_total", []string{"path", "2", "device", "wwan0", "direction", "tx"}, 100},
			{"mifsec_path_state", []string{"path", "1", "device", "wlan0", "state", "active"}, 1},
			{"mifsec_path_state", []string{"path", "2", "device", "wwan0", "state", "standby"}, 1},
			{"mifsec_path_rtt_seconds", []string{"path", "1"}, 0.025},
			{"mifsec_path_loss_ratio", []string{"path", "1"}, 0.5},
			{"mifsec_path_delivery_rate_bytes", []string{"path", "1"}, 1e6},
		}},
		{name: "client reconnecting", collector: statusCollector{func() mif.Status { return reconnecting }}, want: []wantSeries{
			{"mifsec_session_established", nil, 0},
			{"mifsec_ike_sas", nil, 0},
			{"mifsec_child_sas", nil, 0},
			{"mifsec_reconnects_total", nil, 1},
		}, absent: []string{"mifsec_child_sa_info"}},
		{name: "gateway", collector: fromGateway(gateway, defaultMetricsClients), want: append(slices.Clone(totals),
			wantSeries{"mifsec_client_packets_total", []string{"client", "alice@example", "direction", "rx"}, 11},
			wantSeries{"mifsec_client_bytes_total", []string{"client", "alice@example", "direction", "tx"}, 1200},
			wantSeries{"mifsec_ike_rekeys_total", []string{"client", "alice@example"}, 1},
			wantSeries{"mifsec_child_rekeys_total", []string{"client", "alice@example"}, 9},
			wantSeries{"mifsec_child_rekeys_total", []string{"client", "bob@example", "address", "10.3.0.3"}, 1},
			wantSeries{"mifsec_child_rekeys_total", []string{"client", "bob@example", "address", "10.3.0.4"}, 2},
			wantSeries{"mifsec_client_packets_total", []string{"client", "alice@example", "address", "10.3.0.2", "direction", "tx"}, 12},
			wantSeries{"mifsec_path_packets_total", []string{"client", "alice@example", "path", "3", "remote", "198.51.100.1:4500", "direction", "tx"}, 4},
			wantSeries{"mifsec_path_bytes_total", []string{"client", "alice@example", "path", "3", "direction", "rx"}, 400},
			wantSeries{"mifsec_path_state", []string{"client", "alice@example", "path", "3", "state", "probing"}, 1},
			wantSeries{"mifsec_path_rtt_seconds", []string{"client", "alice@example", "path", "3"}, 1},
		), absent: []string{"mifsec_drops_total", "mifsec_session_established"}},
		// Beyond --metrics-clients, the totals only, from the summary.
		{name: "gateway over the per-client limit", collector: fromGateway(gateway, 2), want: totals, absent: perClient},
		{name: "gateway without per-client series", collector: fromGateway(gateway, 0), want: totals, absent: perClient},
		{name: "gateway, clients alike", collector: fromGateway(twins, defaultMetricsClients), want: []wantSeries{
			{"mifsec_ike_sas", nil, 2},
			{"mifsec_client_packets_total", []string{"client", "carol@example", "direction", "rx"}, 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := gather(tc.collector)
			if err != nil {
				t.Fatalf("gathering: %v", err)
			}
			for _, w := range tc.want {
				v, ok := got.value(w.name, w.labels...)
				if !ok || v != w.value {
					t.Errorf("%s%v = %v (present: %v), want %v", w.name, w.labels, v, ok, w.value)
				}
			}
			for _, name := range tc.absent {
				if got[name] != nil {
					t.Errorf("%s reported: %v", name, got[name])
				}
			}
		})
	}
}

// TestMetricsGatewayBusy: a gateway whose status does not come in time
// fails the scrape rather than reporting its counters as 0.
func TestMetricsGatewayBusy(t *testing.T) {
	wait := func(ctx context.Context) mif.GatewayStatus {
		<-ctx.Done()
		return mif.GatewayStatus{}
	}
	stuck := gatewayCollector{summary: wait, status: wait, perClient: defaultMetricsClients}
	if _, err := gather(stuck); err == nil || !strings.Contains(err.Error(), errNoGatewayStatus.Error()) {
		t.Fatalf("gathering from a gateway that does not answer: %v, want %q", err, errNoGatewayStatus)
	}
}

func TestListenMetricsRefusesBadAddresses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1", "want HOST:PORT"},
		{"127.0.0.1:", "no port"},
		{"127.0.0.1:99999", "invalid port"},
		{"192.0.2.99:9810", "cannot assign requested address"},
		{busy.Addr().String(), "address already in use"},
	} {
		set := flag.NewFlagSet("connect", flag.ContinueOnError)
		set.String("metrics-listen", tc.addr, "")
		m, err := listenMetrics(cli.NewContext(newApp(), set, nil))
		if err == nil {
			m.Close()
			t.Errorf("--metrics-listen %s accepted", tc.addr)
			continue
		}
		if !strings.Contains(err.Error(), "--metrics-listen") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--metrics-listen %s: %v, want an error naming the flag and %q", tc.addr, err, tc.want)
		}
	}
}

// scrapeMetrics fetches http://addr/metrics from inside network namespace
// ns. The connection is made on the test's own goroutine, locked in ns:
// an http.Client would dial on another goroutine, in another namespace.
func scrapeMetrics(t *testing.T, ns, addr string) metricFamilies {
	t.Helper()
	var conn net.Conn
	var err error
	testenv.InNamedNetns(t, ns, func() { conn, err = net.DialTimeout("tcp", addr, 2*time.Second) })
	if err != nil {
		t.Fatalf("metrics at %s in %s: %v", addr, ns, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("metrics at %s in %s: %v", addr, ns, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics at %s in %s: %s", addr, ns, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics at %s in %s: %v", addr, ns, err)
	}
	return families
}

// must returns the series' value, failing t when there is none.
func (f metricFamilies) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := f.value(name, labels...)
	if !ok {
		t.Fatalf("no %s%v in the metrics", name, labels)
	}
	return v
}

// TestMifsecMetrics runs `mifsec gateway` and `mifsec connect` over two
// paths with --metrics-listen: their metrics carry the paths, SAs and IKE
// failures, and move with the traffic a ping sends. A second gateway on
// the same metrics address is refused before it creates its device.
func TestMifsecMetrics(t *testing.T) {
	const metricsAddr = "127.0.0.1:9810" // in each namespace
	top := newMultipathTopology(t, "offload", "--metrics-listen", metricsAddr)
	c, g := top.connect, top.gateway

	busy := startMifsec(t, top.gw, "gateway", "--tun", "metgw1", "--listen", "10.74.1.1", "--local-id", "gw.example",
		"--psk-file", writePSK(t, t.TempDir(), "a second gateway's secret"), "--pool", "10.4.0.0/24", "--local-ts", "10.1.0.0/24",
		"--metrics-listen", metricsAddr)
	waitExit(t, busy, 10*time.Second, "the second gateway")
	if out := busy.log.String(); busy.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(out, "--metrics-listen") || !strings.Contains(out, "address already in use") {
		t.Fatalf("a second gateway on metrics address %s: exit %d, want a refusal naming the address in use:\n%s", metricsAddr, busy.cmd.ProcessState.ExitCode(), out)
	}
	if out, err := exec.Command("ip", "-n", top.gw, "link", "show", "metgw1").CombinedOutput(); err == nil {
		t.Fatalf("the refused gateway created its TUN device:\n%s", out)
	}

	st := top.waitPaths(t, map[string]string{"wlan0": "active", "wwan0": "active"}, 2, 10*time.Second)
	clBefore, gwBefore := scrapeMetrics(t, top.client, metricsAddr), scrapeMetrics(t, top.gw, metricsAddr)
	const pings = 5
	if err := ping(top.client, "10.1.0.1", pings); err != nil {
		t.Fatalf("%v\nclient:\n%s\ngateway:\n%s", err, c.log.String(), g.log.String())
	}
	clAfter, gwAfter := scrapeMetrics(t, top.client, metricsAddr), scrapeMetrics(t, top.gw, metricsAddr)

	// Offload: the WLAN path carries the pings, 84 bytes each.
	for _, m := range []struct {
		what          string
		before, after metricFamilies
		name          string
		labels        []string
		least         float64
	}{
		{"client", clBefore, clAfter, "mifsec_tunnel_packets_total", []string{"direction", "tx"}, pings},
		{"client", clBefore, clAfter, "mifsec_tunnel_packets_total", []string{"direction", "rx"}, pings},
		{"client", clBefore, clAfter, "mifsec_tunnel_bytes_total", []string{"direction", "tx"}, pings * 84},
		{"client", clBefore, clAfter, "mifsec_path_packets_total", []string{"device", "wlan0", "direction", "tx"}, pings},
		{"client", clBefore, clAfter, "mifsec_path_packets_total", []string{"device", "wlan0", "direction", "rx"}, pings},
		{"client", clBefore, clAfter, "mifsec_path_bytes_total", []string{"device", "wlan0", "direction", "tx"}, pings * 84},
		{"gateway", gwBefore, gwAfter, "mifsec_tunnel_packets_total", []string{"direction", "rx"}, pings},
		{"gateway", gwBefore, gwAfter, "mifsec_tunnel_bytes_total", []string{"direction", "tx"}, pings * 84},
		{"gateway", gwBefore, gwAfter, "mifsec_client_packets_total", []string{"client", "client.example", "direction", "rx"}, pings},
		{"gateway", gwBefore, gwAfter, "mifsec_client_bytes_total", []string{"client", "client.example", "direction", "tx"}, pings * 84},
		{"gateway", gwBefore, gwAfter, "mifsec_path_packets_total", []string{"client", "client.example", "direction", "tx"}, pings},
		{"gateway", gwBefore, gwAfter, "mifsec_path_bytes_total", []string{"client", "client.example", "direction", "rx"}, pings * 84},
	} {
		if d := m.after.must(t, m.name, m.labels...) - m.before.must(t, m.name, m.labels...); d < m.least {
			t.Errorf("%s's %s%v grew by %v over %d pings, want at least %v", m.what, m.name, m.labels, d, pings, m.least)
		}
	}
	for _, m := range []struct {
		what   string
		got    metricFamilies
		name   string
		labels []string
		want   float64
	}{
		{"client", clAfter, "mifsec_session_established", nil, 1},
		{"client", clAfter, "mifsec_ike_sas", nil, 1},
		{"client", clAfter, "mifsec_child_sas", nil, 1},
		{"client", clAfter, "mifsec_child_sa_info", []string{"in_spi", st.Session.Child.InSPI, "out_spi", st.Session.Child.OutSPI}, 1},
		{"client", clAfter, "mifsec_ike_rekeys_total", nil, 0},
		{"client", clAfter, "mifsec_child_rekeys_total", nil, 0},
		{"client", clAfter, "mifsec_ike_failures_total", []string{"reason", ike.FailAuthentication}, 0},
		{"client", clAfter, "mifsec_path_state", []string{"device", "wlan0", "state", "active"}, 1},
		{"client", clAfter, "mifsec_path_state", []string{"device", "wwan0", "state", "active"}, 1},
		{"client", clAfter, "mifsec_path_loss_ratio", []string{"device", "wlan0"}, 0},
		{"gateway", gwAfter, "mifsec_ike_sas", nil, 1},
		{"gateway", gwAfter, "mifsec_child_sas", nil, 1},
		{"gateway", gwAfter, "mifsec_ike_rekeys_total", []string{"client", "client.example"}, 0},
		{"gateway", gwAfter, "mifsec_child_rekeys_total", []string{"client", "client.example"}, 0},
		{"gateway", gwAfter, "mifsec_pool_leased_addresses", []string{"pool", "10.3.0.0/24"}, 1},
		{"gateway", gwAfter, "mifsec_path_state", []string{"client", "client.example", "state", "active"}, 2},
	} {
		if v := m.got.must(t, m.name, m.labels...); v != m.want {
			t.Errorf("%s's %s%v = %v, want %v", m.what, m.name, m.labels, v, m.want)
		}
	}
	// The runtime's and the process's series beside mifsec's own.
	for _, name := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_next_gc_bytes", "process_resident_memory_bytes"} {
		for what, got := range map[string]metricFamilies{"client": clAfter, "gateway": gwAfter} {
			if v := got.must(t, name); v <= 0 {
				t.Errorf("%s's %s = %v, want the process's own, above 0", what, name, v)
			}
		}
	}
	for _, m := range []struct {
		what   string
		got    metricFamilies
		labels []string
	}{
		{"client", clAfter, []string{"device", "wlan0"}},
		{"client", clAfter, []string{"device", "wwan0"}},
		{"gateway", gwAfter, []string{"client", "client.example", "path", "0"}},
	} {
		if rtt := m.got.must(t, "mifsec_path_rtt_seconds", m.labels...); rtt <= 0 || rtt > 1 {
			t.Errorf("%s's round-trip time on %v: %vs, want a measured one under 1s", m.what, m.labels, rtt)
		}
	}

	// A client with the wrong key, once the first has gone: the gateway
	// counts its refusal.
	c.stop(t)
	wrong := startConnect(t, top.client, "metbad0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), "not the key the gateway knows"), "--ipv6=false")
	waitExit(t, wrong.mifsecProcess, 20*time.Second, "the client with the wrong key")
	if n := scrapeMetrics(t, top.gw, metricsAddr).must(t, "mifsec_ike_failures_total", "reason", ike.FailAuthentication); n < 1 {
		t.Fatalf("gateway's mifsec_ike_failures_total{reason=authentication} = %v after a client with a wrong key:\n%s\nclient:\n%s", n, g.log.String(), wrong.log.String())
	}
}

// TestStaticMetrics: both ends of `mifsec static` serve metrics; a ping
// moves the tunnel's and the path's counters, and a wrong inbound key
// the bad-icv drops at the receiving end.
func TestStaticMetrics(t *testing.T) {
	const metricsAddr = "127.0.0.1:9810" // in each namespace
	for _, tc := range []struct {
		name       string
		corruptKey bool
	}{{"keys match", false}, {"wrong key at b", true}} {
		t.Run(tc.name, func(t *testing.T) {
			top := newStaticTopology(t, "aes256gcm16", 36, tc.corruptKey, "--metrics-listen", metricsAddr)
			aBefore, bBefore := scrapeMetrics(t, top.nsA, metricsAddr), scrapeMetrics(t, top.nsB, metricsAddr)
			const pings = 3
			err := ping(top.nsA, "10.98.0.2", pings)
			if (err != nil) != tc.corruptKey {
				t.Fatalf("ping: %v", err)
			}
			aAfter, bAfter := scrapeMetrics(t, top.nsA, metricsAddr), scrapeMetrics(t, top.nsB, metricsAddr)
			grew := func(what string, before, after metricFamilies, least float64, name string, labels ...string) {
				t.Helper()
				if d := after.must(t, name, labels...) - before.must(t, name, labels...); d < least {
					t.Errorf("%s's %s%v grew by %v over %d pings, want at least %v", what, name, labels, d, pings, least)
				}
			}
			grew("a", aBefore, aAfter, pings, "mifsec_tunnel_packets_total", "direction", "tx")
			grew("a", aBefore, aAfter, pings, "mifsec_path_packets_total", "path", "0", "direction", "tx")
			grew("b", bBefore, bAfter, pings*84, "mifsec_path_bytes_total", "path", "0", "direction", "rx")
			if tc.corruptKey {
				if n, _ := bAfter.value("mifsec_drops_total", "reason", "bad-icv"); n < pings {
					t.Errorf("b dropped %v packets for bad-icv, want at least %d", n, pings)
				}
			} else {
				grew("b", bBefore, bAfter, pings, "mifsec_tunnel_packets_total", "direction", "rx")
				grew("a", aBefore, aAfter, pings*84, "mifsec_tunnel_bytes_total", "direction", "rx")
			}
			for name, want := range map[string]float64{"mifsec_session_established": 1, "mifsec_ike_sas": 0, "mifsec_child_sas": 1} {
				if v := aAfter.must(t, name); v != want {
					t.Errorf("a's %s = %v, want %v", name, v, want)
				}
			}
			if v := aAfter.must(t, "mifsec_child_sa_info", "in_spi", "00002002", "out_spi", "00001001", "algorithm", "aes256gcm16"); v != 1 {
				t.Errorf("a's mifsec_child_sa_info = %v", v)
			}
		})
	}
}

// waitExit waits until p has exited.
func waitExit(t *testing.T, p *mifsecProcess, within time.Duration, what string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s still runs after %v:\n%s", what, within, p.log.String())
	}
}
