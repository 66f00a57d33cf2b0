package main

// Prometheus metrics (--metrics-listen) of connect, gateway and static.
// They live in the command, not in mif: only the binary serves HTTP and
// depends on client_golang, and the collectors read nothing but the
// status snapshots mif already makes for `mifsec status`, once per
// scrape, so that the data plane counts nothing more per packet.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/mif"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

func metricsFlag() cli.Flag {
	return altsrc.NewStringFlag(&cli.StringFlag{Name: "metrics-listen",
		Usage: "serve Prometheus metrics at http://`ADDR`/metrics (HOST:PORT, e.g. 127.0.0.1:9810; no authentication: keep it on a trusted address)"})
}

// metricsServer serves /metrics on the --metrics-listen address.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenMetrics opens the --metrics-listen socket, nil when the flag is
// not given. It runs before anything is set up and before privileges are
// dropped, so that a bad or busy address stops the command at once and
// a port below 1024 can be had.
func listenMetrics(c *cli.Context) (*metricsServer, error) {
	addr := c.String("metrics-listen")
	if addr == "" {
		return nil, nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--metrics-listen %q: %w (want HOST:PORT, e.g. 127.0.0.1:9810)", addr, err)
	} else if port == "" {
		return nil, fmt.Errorf("--metrics-listen %q: no port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	return &metricsServer{ln: ln}, nil
}

// Serve answers scrapes with what collector reports, in the background.
func (m *metricsServer) Serve(collector prometheus.Collector) {
	if m == nil {
		return
	}
	reg := prometheus.NewPedanticRegistry()
	// The runtime's and the process's own series (go_memstats_*,
	// go_gc_*, process_resident_memory_bytes, ...), what an operator reads
	// a Go service's memory and collector by: a gateway's RSS per client
	// is its live heap times the collector's headroom.
	reg.MustRegister(collector, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn)}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	slog.Info("serving metrics", "addr", "http://"+m.ln.Addr().String()+"/metrics")
	go func() {
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Warn("metrics server stopped", "err", err)
		}
	}()
}

// Close stops serving and closes the socket.
func (m *metricsServer) Close() {
	if m == nil {
		return
	}
	if m.srv != nil {
		m.srv.Close()
		return
	}
	m.ln.Close()
}

// Every metric, by name. Counters come from the status's counters, which
// only grow while the process runs; a gateway's per-client ones go with
// the client.
var (
	descTunnelPackets = prometheus.NewDesc("mifsec_tunnel_packets_total", "Inner packets sent (tx) into and received (rx) from the tunnel.", []string{"direction"}, nil)
	descTunnelBytes   = prometheus.NewDesc("mifsec_tunnel_bytes_total", "Inner bytes sent (tx) into and received (rx) from the tunnel.", []string{"direction"}, nil)
	descDrops         = prometheus.NewDesc("mifsec_drops_total", "Packets the data plane dropped, by reason.", []string{"reason"}, nil)
	descIKEFailures   = prometheus.NewDesc("mifsec_ike_failures_total", "IKE SAs that could not be set up or were lost (gateway: requests refused or dropped, clients that stopped answering), by reason.", []string{"reason"}, nil)
	descIKESAs        = prometheus.NewDesc("mifsec_ike_sas", "Established IKE SAs.", nil, nil)
	descChildSAs      = prometheus.NewDesc("mifsec_child_sas", "Child SAs installed in the data plane (each an inbound and an outbound SA; a gateway counts rekeyed ones until they are deleted).", nil, nil)

	// connect and static
	descEstablished = prometheus.NewDesc("mifsec_session_established", "1 while the tunnel is up (IKE SA and Child SA established), else 0.", nil, nil)
	descChildSA     = prometheus.NewDesc("mifsec_child_sa_info", "The current Child SA: its SPIs (hex) and algorithm; always 1.", []string{"in_spi", "out_spi", "algorithm"}, nil)
	descIKERekeys   = prometheus.NewDesc("mifsec_ike_rekeys_total", "IKE SA rekeys.", nil, nil)
	descChildRekeys = prometheus.NewDesc("mifsec_child_rekeys_total", "Child SA rekeys.", nil, nil)
	descReconnects  = prometheus.NewDesc("mifsec_reconnects_total", "Times the client set up a new IKE SA after losing the gateway.", nil, nil)
	descReinjected  = prometheus.NewDesc("mifsec_reinjected_packets_total", "ESP datagrams sent again on the other paths after their path failed or went away (multipath scheduling only).", nil, nil)
	// Paths are named by ID and device on a client, by client (identity
	// and inner address), ID and remote address on a gateway.
	clientPaths = newPathDescs([]string{"path", "device"},
		"ESP datagrams the path's socket sent (tx) and datagrams it received (rx).",
		"Bytes of the datagrams the path's socket sent (tx) and received (rx), without IP and UDP headers.")
	gatewayPaths = newPathDescs([]string{"client", "address", "path", "remote"},
		"Packets the gateway sent (tx) on a client's MIF path and received (rx) on it in the current Child SA.",
		"Bytes the gateway sent (tx) on a client's MIF path and received (rx) on it in the current Child SA.")

	// gateway: the same names with client labels where they are per
	// client: its identity, and its (first) inner address, which tells
	// apart the IKE SAs one identity may hold at once
	clientLabels      = []string{"client", "address"}
	descClientPackets = prometheus.NewDesc("mifsec_client_packets_total", "Inner packets received from (rx) and sent to (tx) a client, over all its Child SAs.", append(clientLabels, "direction"), nil)
	descClientBytes   = prometheus.NewDesc("mifsec_client_bytes_total", "Inner bytes received from (rx) and sent to (tx) a client, over all its Child SAs.", append(clientLabels, "direction"), nil)
	descGWIKERekeys   = prometheus.NewDesc("mifsec_ike_rekeys_total", "A client's IKE SA rekeys.", clientLabels, nil)
	descGWChildRekeys = prometheus.NewDesc("mifsec_child_rekeys_total", "A client's Child SA rekeys.", clientLabels, nil)
	descGWReinjected  = prometheus.NewDesc("mifsec_reinjected_packets_total", "ESP datagrams to a client sent again on its other paths after their path failed or went away.", clientLabels, nil)
	descPoolLeased    = prometheus.NewDesc("mifsec_pool_leased_addresses", "Inner addresses leased from the pool.", []string{"pool"}, nil)
	tunnelDescs       = []*prometheus.Desc{descTunnelPackets, descTunnelBytes, descDrops, descIKEFailures, descIKESAs, descChildSAs}
	clientOnlyDescs   = append([]*prometheus.Desc{descEstablished, descChildSA, descIKERekeys, descChildRekeys, descReconnects, descReinjected}, clientPaths.all()...)
	gatewayOnlyDescs  = append([]*prometheus.Desc{descClientPackets, descClientBytes, descGWIKERekeys, descGWChildRekeys, descGWReinjected, descPoolLeased}, gatewayPaths.all()...)
)

// pathDescs are the per-path metrics.
type pathDescs struct {
	packets, bytes, state, rtt, loss, rate *prometheus.Desc
}

// newPathDescs describes the per-path metrics of paths named by labels.
func newPathDescs(labels []string, packetsHelp, bytesHelp string) pathDescs {
	and := func(l string) []string { return append(slices.Clone(labels), l) }
	return pathDescs{
		packets: prometheus.NewDesc("mifsec_path_packets_total", packetsHelp, and("direction"), nil),
		bytes:   prometheus.NewDesc("mifsec_path_bytes_total", bytesHelp, and("direction"), nil),
		state:   prometheus.NewDesc("mifsec_path_state", "1 for the path's state: probing, active or failed under multipath scheduling; active (carries the traffic) or standby without.", and("state"), nil),
		rtt:     prometheus.NewDesc("mifsec_path_rtt_seconds", "Smoothed round-trip time of the path's probes (multipath scheduling only).", labels, nil),
		loss:    prometheus.NewDesc("mifsec_path_loss_ratio", "Share of the path's probes lost, 0 to 1 (multipath scheduling only).", labels, nil),
		rate:    prometheus.NewDesc("mifsec_path_delivery_rate_bytes", "Estimated delivery rate of the path in bytes per second, 0 while unknown (multipath scheduling only).", labels, nil),
	}
}

func (d pathDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.packets, d.bytes, d.state, d.rtt, d.loss, d.rate}
}

// pathCounts is what one path carried.
type pathCounts struct{ txPackets, txBytes, rxPackets, rxBytes uint64 }

// collect reports one path: its counters, its state and, under multipath
// scheduling (sched not nil), its estimates.
func (d pathDescs) collect(ch chan<- prometheus.Metric, n pathCounts, state string, sched *mif.ScheduledPath, labels ...string) {
	directions(ch, d.packets, n.txPackets, n.rxPackets, labels...)
	directions(ch, d.bytes, n.txBytes, n.rxBytes, labels...)
	ch <- prometheus.MustNewConstMetric(d.state, prometheus.GaugeValue, 1, append(slices.Clone(labels), state)...)
	if sched != nil {
		ch <- prometheus.MustNewConstMetric(d.rtt, prometheus.GaugeValue, sched.SRTT.Seconds(), labels...)
		ch <- prometheus.MustNewConstMetric(d.loss, prometheus.GaugeValue, sched.Loss, labels...)
		ch <- prometheus.MustNewConstMetric(d.rate, prometheus.GaugeValue, sched.Rate, labels...)
	}
}

// gatewayScrapeTimeout bounds the wait for the gateway's status, as the
// control socket's does.
const gatewayScrapeTimeout = 2 * time.Second

var errNoGatewayStatus = errors.New("the gateway did not report its status in time")

// statusCollector reports the status of a connect client or a static
// tunnel.
type statusCollector struct{ status func() mif.Status }

func (statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(tunnelDescs, clientOnlyDescs...) {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	s := st.Session
	collectTraffic(ch, st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes, st.Drops, s.Failures)
	up, child := 0, 0
	if s.State == "established" {
		up = 1
		if s.Child != nil {
			child = 1
			ch <- prometheus.MustNewConstMetric(descChildSA, prometheus.GaugeValue, 1, s.Child.InSPI, s.Child.OutSPI, s.Child.Algorithm)
		}
	}
	ike := 0
	if up == 1 && s.IKESPIi != "" {
		ike = 1
	}
	gauge(ch, descEstablished, up)
	gauge(ch, descIKESAs, ike)
	gauge(ch, descChildSAs, child)
	counter(ch, descIKERekeys, uint64(s.IKERekeys))
	counter(ch, descChildRekeys, uint64(s.ChildRekeys))
	counter(ch, descReconnects, uint64(s.Reconnects))
	counter(ch, descReinjected, st.Reinjected)
	for _, p := range st.Paths {
		state := "standby"
		if len(st.Paths) == 1 || p.Device == st.Device {
			state = "active"
		}
		if p.Multipath != nil {
			state = p.Multipath.State
		}
		clientPaths.collect(ch, pathCounts{p.TxPackets, p.TxBytes, p.RxPackets, p.RxBytes}, state, p.Multipath, strconv.Itoa(p.ID), p.Device)
	}
}

// metricsClientsFlag bounds a gateway's per-client series.
func metricsClientsFlag() cli.Flag {
	return altsrc.NewIntFlag(&cli.IntFlag{Name: "metrics-clients", Value: defaultMetricsClients,
		Usage: "report per-client and per-path metrics while the gateway holds at most `N` clients; beyond, only its totals (0: never)"})
}

// defaultMetricsClients: a thousand clients are some 10,000 series per
// scrape. With 100,000 the full status alone took the gateway more than
// 20 s and some 300 MB to build, and a million series per scrape is more
// than a Prometheus server should take from one target.
const defaultMetricsClients = 1000

// gatewayCollector reports a gateway's status: its totals from the
// summary, and its clients' series from the full status while there are
// at most perClient of them.
type gatewayCollector struct {
	summary, status func(context.Context) mif.GatewayStatus
	perClient       int
}

func (gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(tunnelDescs, gatewayOnlyDescs...) {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), gatewayScrapeTimeout)
	defer cancel()
	st := c.summary(ctx)
	if st.ClientCount > 0 && st.ClientCount <= c.perClient && ctx.Err() == nil {
		st = c.status(ctx)
	}
	if ctx.Err() != nil {
		// The responder's loop did not answer: its part of the status
		// (clients, pools, failures) is missing, and reporting it as
		// zero would make counters go back.
		ch <- prometheus.NewInvalidMetric(descIKESAs, errNoGatewayStatus)
		return
	}
	collectTraffic(ch, st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes, st.Drops, st.IKEFailures)
	gauge(ch, descIKESAs, st.ClientCount)
	gauge(ch, descChildSAs, st.InboundSAs)
	for _, p := range st.Pools {
		ch <- prometheus.MustNewConstMetric(descPoolLeased, prometheus.GaugeValue, float64(p.Leased), p.Prefix)
	}
	seen := make(map[[2]string]bool, len(st.Clients))
	for _, cl := range st.Clients {
		id := [2]string{cl.ID, ""}
		if len(cl.Addresses) > 0 {
			id[1], _, _ = strings.Cut(cl.Addresses[0], "/")
		}
		if seen[id] {
			// Leases are exclusive: only a client without any could
			// look like another, and a series given twice would fail
			// the whole scrape.
			continue
		}
		seen[id] = true
		directions(ch, descClientPackets, cl.TxPackets, cl.RxPackets, id[:]...)
		directions(ch, descClientBytes, cl.TxBytes, cl.RxBytes, id[:]...)
		counter(ch, descGWIKERekeys, uint64(cl.IKERekeys), id[:]...)
		counter(ch, descGWChildRekeys, uint64(cl.ChildRekeys), id[:]...)
		counter(ch, descGWReinjected, cl.Reinjected, id[:]...)
		for _, m := range cl.Multipath {
			gatewayPaths.collect(ch, pathCounts{m.TxPackets, m.TxBytes, m.RxPackets, m.RxBytes}, m.State, &m, id[0], id[1], strconv.Itoa(m.ID), m.Remote)
		}
	}
}

// collectTraffic reports what every command counts: the tunnel's inner
// traffic, the data plane's drops and the IKE failures.
func collectTraffic(ch chan<- prometheus.Metric, txPackets, txBytes, rxPackets, rxBytes uint64, drops, failures map[string]uint64) {
	directions(ch, descTunnelPackets, txPackets, rxPackets)
	directions(ch, descTunnelBytes, txBytes, rxBytes)
	for reason, n := range drops {
		counter(ch, descDrops, n, reason)
	}
	// Every reason is reported, 0 until it happens, so that a rate or an
	// alert over it has a series from the start.
	for _, reason := range ike.FailureReasons {
		counter(ch, descIKEFailures, failures[reason], reason)
	}
}

// directions reports a tx and an rx counter, labelled after labels.
func directions(ch chan<- prometheus.Metric, d *prometheus.Desc, tx, rx uint64, labels ...string) {
	counter(ch, d, tx, append(slices.Clone(labels), "tx")...)
	counter(ch, d, rx, append(slices.Clone(labels), "rx")...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v int) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
}

// staticSPI formats an SPI as `mifsec status` shows it.
func staticSPI(spi uint32) string { return fmt.Sprintf("%08x", spi) }
