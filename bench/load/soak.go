package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/report"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/mif"
)

// The soak: a `mifsec gateway` process under an hour (or any duration) of
// what wears a gateway down — many clients rekeying their Child SAs and
// IKE SAs all the time, the link under them flapping, clients leaving and
// coming back — while every client pings through its tunnel once a
// second. It samples the gateway's memory (VmRSS from /proc), goroutines
// and SAs, and at the end checks that everything the clients set up is
// gone again. A gateway that leaks shows a rising line; one that loses
// traffic on a rekey shows echo losses outside the flaps.

// SoakConfig describes a soak run. Zero fields take the defaults in
// brackets.
type SoakConfig struct {
	Binary       string        // the mifsec binary that runs the gateway [this executable]
	Clients      int           // clients connected at any time [100]
	Duration     time.Duration // [1h]
	ChildRekey   time.Duration // each client rekeys its Child SA this often [10s]
	IKERekey     time.Duration // and its IKE SA [1m]
	FlapEvery    time.Duration // the clients' link goes down this often [30s]
	FlapFor      time.Duration // for this long [1s]
	ChurnEvery   time.Duration // this often ChurnClients of the clients leave and come back [20s]
	ChurnClients int           // [5, at most Clients/2; -1: none]
	EchoEvery    time.Duration // each client's echo interval [1s]
	SampleEvery  time.Duration // the gateway's memory and state [5s]
	// FlapGrace is how long after a flap ends echo losses still count as
	// the flap's [2s]: the echoes in flight when the link came back.
	FlapGrace time.Duration
	Log       io.Writer // progress lines
}

func (c *SoakConfig) defaults() error {
	if c.Binary == "" {
		b, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the mifsec binary: %w", err)
		}
		c.Binary = b
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Clients == 0 {
		c.Clients = 100
	}
	def(&c.Duration, time.Hour)
	def(&c.ChildRekey, 10*time.Second)
	def(&c.IKERekey, time.Minute)
	def(&c.FlapEvery, 30*time.Second)
	def(&c.FlapFor, time.Second)
	def(&c.ChurnEvery, 20*time.Second)
	def(&c.EchoEvery, time.Second)
	def(&c.SampleEvery, 5*time.Second)
	def(&c.FlapGrace, 2*time.Second)
	switch {
	case c.ChurnClients == 0:
		c.ChurnClients = min(5, c.Clients/2)
	case c.ChurnClients < 0:
		c.ChurnClients = 0
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	switch {
	case c.Clients < 2:
		return errors.New("soak: at least 2 clients")
	case c.ChurnClients > c.Clients/2:
		return fmt.Errorf("soak: %d churning clients of %d (at most half)", c.ChurnClients, c.Clients)
	case c.FlapFor >= c.FlapEvery:
		return errors.New("soak: the link must be up longer than it is down")
	case c.Duration < 2*c.SampleEvery:
		return errors.New("soak: the run must cover at least two samples")
	}
	for name, d := range map[string]time.Duration{"duration": c.Duration, "child rekey": c.ChildRekey, "IKE rekey": c.IKERekey,
		"flap interval": c.FlapEvery, "flap": c.FlapFor, "churn interval": c.ChurnEvery, "echo interval": c.EchoEvery,
		"sample interval": c.SampleEvery, "flap grace": c.FlapGrace} {
		if d < 0 {
			return fmt.Errorf("soak: negative %s", name)
		}
	}
	return nil
}

// SoakSample is the gateway's state at one moment.
type SoakSample struct {
	T          float64 `json:"t_s"`
	RSSKiB     int64   `json:"rss_kib"`
	Goroutines int     `json:"goroutines"`
	Clients    int     `json:"clients"`
	InboundSAs int     `json:"inbound_sas"`
	Leased     int     `json:"leased"`
}

// SoakWindow is a time span of the run, in seconds from its start.
type SoakWindow struct {
	From float64 `json:"from_s"`
	To   float64 `json:"to_s"`
}

// SoakReport is what a soak measured.
type SoakReport struct {
	Config struct {
		Clients, ChurnClients                                          int
		Duration, ChildRekey, IKERekey, FlapEvery, FlapFor, ChurnEvery string
	} `json:"config"`
	Samples []SoakSample `json:"samples"`
	Flaps   []SoakWindow `json:"flaps"`
	// Echoes sent and lost; lost outside a flap (and FlapGrace after it)
	// is what a rekey, churn or leak cost.
	EchoesSent        int `json:"echoes_sent"`
	EchoesLost        int `json:"echoes_lost"`
	EchoesLostInFlaps int `json:"echoes_lost_in_flaps"`
	EchoesLostOutside int `json:"echoes_lost_outside_flaps"`
	// LostOutsideBySecond counts the echoes lost outside flaps by the
	// second of the run they were sent in: a burst of every client at
	// once (the gateway stalled) looks different from a trickle.
	LostOutsideBySecond map[int]int `json:"lost_outside_by_second,omitempty"`
	Churns              int         `json:"churns"`
	ChurnFailures       int         `json:"churn_failures"`
	ChildRekeys         int         `json:"child_rekeys"`
	IKERekeys           int         `json:"ike_rekeys"`
	RSSSlopeKiBPerHour  float64     `json:"rss_slope_kib_per_hour"` // over the second half of the run
	GoroutinesMin       int         `json:"goroutines_min"`         // over the second half
	GoroutinesMax       int         `json:"goroutines_max"`
	// After every client left: what the gateway still holds (all 0 when
	// nothing leaked).
	LeftClients    int `json:"left_clients"`
	LeftInboundSAs int `json:"left_inbound_sas"`
	LeftLeases     int `json:"left_leases"`
}

// Leaked reports whether the gateway kept anything of a client that left.
func (r *SoakReport) Leaked() bool {
	return r.LeftClients != 0 || r.LeftInboundSAs != 0 || r.LeftLeases != 0
}

// RunSoak runs a soak in a new lab and returns its report.
func RunSoak(ctx context.Context, cfg SoakConfig) (*SoakReport, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	lab, err := labnet.NewLab(ctx, cfg.Log)
	if err != nil {
		return nil, err
	}
	defer lab.Close()
	topo, err := lab.NewTopology(ctx, "soak")
	if err != nil {
		return nil, err
	}
	target := netip.MustParseAddr("10.1.0.1")
	if _, err := topo.Run(ctx, topo.Server, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo"); err != nil {
		return nil, err
	}
	psk, err := labnet.RandomHex(32)
	if err != nil {
		return nil, err
	}
	pskFile := filepath.Join(topo.Dir, "psk")
	if err := os.WriteFile(pskFile, []byte(psk+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write the PSK: %w", err)
	}
	tun := fmt.Sprintf("mbk%dg", lab.Owner())
	gw, err := topo.Start(topo.Server, "mifsec gateway", nil, cfg.Binary, "--log-level", "warn", "gateway",
		"--listen", topo.ServerUnderlay.String(), "--local-id", "gw.soak.bench", "--psk-file", pskFile,
		"--pool", "10.3.0.0/16", "--local-ts", "10.1.0.0/24", "--tun", tun)
	if err != nil {
		return nil, err
	}
	defer func() {
		gw.Stop(5 * time.Second)
		os.Remove(mif.ControlSocket(tun))
	}()
	if err := labnet.WaitForSocket(ctx, mif.ControlSocket(tun), gw); err != nil {
		return nil, err
	}
	status := func() (mif.GatewayStatus, error) {
		var st mif.GatewayStatus
		raw, err := mif.ReadStatus(mif.ControlSocket(tun))
		if err != nil {
			return st, err
		}
		return st, json.Unmarshal(raw, &st)
	}

	fleetCfg := func(prefix string, n int) ClientsConfig {
		return ClientsConfig{Gateway: netip.AddrPortFrom(topo.ServerUnderlay, 500), Count: n, Target: target,
			ID: FleetIDs(prefix), PSK: []byte(psk), RemoteID: ike.Identity{Type: wire.IDFQDN, Data: []byte("gw.soak.bench")},
			ChildRekey: cfg.ChildRekey, IKERekey: cfg.IKERekey, Timeout: 20 * time.Second}
	}
	startFleet := func(prefix string, n int) (*Fleet, error) {
		var f *Fleet
		err := labnet.InNamespace(topo.Client, func() error {
			var err error
			f, err = StartClients(ctx, fleetCfg(prefix, n))
			return err
		})
		if err != nil {
			return nil, err
		}
		if rep := f.Report(); rep.TrafficOK != n {
			f.Close()
			return nil, fmt.Errorf("%s clients: %v", prefix, rep)
		}
		return f, nil
	}
	stable, err := startFleet("soak", cfg.Clients-cfg.ChurnClients)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Log, "soak: %d clients up; running %v\n", cfg.Clients-cfg.ChurnClients, cfg.Duration)

	rep := &SoakReport{}
	rep.Config.Clients, rep.Config.ChurnClients = cfg.Clients, cfg.ChurnClients
	rep.Config.Duration, rep.Config.ChildRekey, rep.Config.IKERekey = cfg.Duration.String(), cfg.ChildRekey.String(), cfg.IKERekey.String()
	rep.Config.FlapEvery, rep.Config.FlapFor, rep.Config.ChurnEvery = cfg.FlapEvery.String(), cfg.FlapFor.String(), cfg.ChurnEvery.String()
	start := time.Now()
	since := func(t time.Time) float64 { return t.Sub(start).Seconds() }

	var mu sync.Mutex // guards the echo record and the flaps
	// linkMu is held by a flap (write) for the link's down time plus
	// FlapGrace, and by a churn round (read) while its clients connect and
	// pass their first echo: a round that met a flap would measure the
	// flap, not the gateway.
	var linkMu sync.RWMutex
	type echo struct {
		at float64
		ok bool
	}
	var echoes []echo
	record := func(_ int, sent time.Time, ok bool) {
		mu.Lock()
		echoes = append(echoes, echo{since(sent), ok})
		mu.Unlock()
	}
	runCtx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { stable.EchoLoop(runCtx, cfg.EchoEvery, record) })

	// Churn: a small fleet leaves (deleting its IKE SAs) and the same
	// identities come back, over and over.
	var churnErr error
	wg.Go(func() {
		if cfg.ChurnClients == 0 {
			return
		}
		var f *Fleet
		echoStop := context.CancelFunc(func() {})
		var echoDone sync.WaitGroup
		leave := func() {
			echoStop()
			echoDone.Wait()
			if f != nil {
				f.Close()
				f = nil
			}
		}
		defer leave()
		t := time.NewTicker(cfg.ChurnEvery)
		defer t.Stop()
		for {
			leave()
			linkMu.RLock()
			nf, err := startFleet("churn", cfg.ChurnClients)
			linkMu.RUnlock()
			mu.Lock()
			rep.Churns++
			if err != nil {
				rep.ChurnFailures++
				if churnErr == nil {
					churnErr = err
				}
			}
			mu.Unlock()
			if err == nil {
				f = nf
				echoCtx, cancel := context.WithCancel(runCtx)
				echoStop = cancel
				echoDone.Go(func() { nf.EchoLoop(echoCtx, cfg.EchoEvery, record) })
			}
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
		}
	})

	// Flaps: the clients' side of the link goes down and up again.
	wg.Go(func() {
		t := time.NewTicker(cfg.FlapEvery)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
			linkMu.Lock()
			from := time.Now()
			if _, err := topo.Run(ctx, topo.Client, "ip", "link", "set", "veth0", "down"); err != nil {
				linkMu.Unlock()
				fmt.Fprintf(cfg.Log, "soak: link down: %v\n", err)
				continue
			}
			select {
			case <-runCtx.Done():
			case <-time.After(cfg.FlapFor):
			}
			if _, err := topo.Run(ctx, topo.Client, "ip", "link", "set", "veth0", "up"); err != nil {
				fmt.Fprintf(cfg.Log, "soak: link up: %v\n", err)
			}
			mu.Lock()
			rep.Flaps = append(rep.Flaps, SoakWindow{From: since(from), To: since(time.Now())})
			mu.Unlock()
			select {
			case <-runCtx.Done():
			case <-time.After(cfg.FlapGrace):
			}
			linkMu.Unlock()
		}
	})

	// Samples of the gateway's state.
	sample := func() {
		st, err := status()
		if err != nil {
			fmt.Fprintf(cfg.Log, "soak: gateway status: %v\n", err)
			return
		}
		s := SoakSample{T: since(time.Now()), RSSKiB: processRSS(gw.PID()), Goroutines: st.Goroutines,
			Clients: len(st.Clients), InboundSAs: st.InboundSAs}
		for _, p := range st.Pools {
			s.Leased += p.Leased
		}
		mu.Lock()
		rep.Samples = append(rep.Samples, s)
		mu.Unlock()
	}
	sample()
	t := time.NewTicker(cfg.SampleEvery)
	lastProgress := time.Now()
	for running := true; running; {
		select {
		case <-runCtx.Done():
			running = false
		case <-t.C:
			sample()
			if time.Since(lastProgress) >= time.Minute {
				lastProgress = time.Now()
				mu.Lock()
				last := rep.Samples[len(rep.Samples)-1]
				fmt.Fprintf(cfg.Log, "soak: %s of %s: gateway RSS %.1f MB, %d goroutines, %d clients, %d SAs\n",
					time.Since(start).Round(time.Second), cfg.Duration, float64(last.RSSKiB)/1024, last.Goroutines, last.Clients, last.InboundSAs)
				mu.Unlock()
			}
		}
	}
	t.Stop()
	wg.Wait()
	if ctx.Err() != nil {
		stable.Close()
		return nil, ctx.Err()
	}
	if st, err := status(); err == nil {
		for _, c := range st.Clients {
			rep.ChildRekeys += c.ChildRekeys
			rep.IKERekeys += c.IKERekeys
		}
	}
	stable.Close()

	// Everything the clients set up must be gone once they left.
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := status()
		if err != nil {
			return nil, fmt.Errorf("gateway status after the run: %w", err)
		}
		rep.LeftClients, rep.LeftInboundSAs, rep.LeftLeases = len(st.Clients), st.InboundSAs, 0
		for _, p := range st.Pools {
			rep.LeftLeases += p.Leased
		}
		if !rep.Leaked() || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Echoes: lost inside a flap (plus grace) or outside.
	inFlap := func(at float64) bool {
		for _, f := range rep.Flaps {
			if at >= f.From-cfg.EchoEvery.Seconds() && at <= f.To+cfg.FlapGrace.Seconds() {
				return true
			}
		}
		return false
	}
	slices.SortFunc(echoes, func(a, b echo) int { return cmpFloat(a.at, b.at) })

	for _, e := range echoes {
		// An echo sent in the last interval before the end may have
		// been cut short by it.
		if e.at > cfg.Duration.Seconds()-cfg.EchoEvery.Seconds() {
			continue
		}
		rep.EchoesSent++
		if e.ok {
			continue
		}
		rep.EchoesLost++
		if inFlap(e.at) {
			rep.EchoesLostInFlaps++
		} else {
			rep.EchoesLostOutside++
			if rep.LostOutsideBySecond == nil {
				rep.LostOutsideBySecond = map[int]int{}
			}
			rep.LostOutsideBySecond[int(e.at)]++
		}
	}
	rep.summarizeSamples()
	if churnErr != nil {
		fmt.Fprintf(cfg.Log, "soak: a churn round failed: %v\n", churnErr)
	}
	return rep, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// summarizeSamples fits the RSS of the run's second half (after the
// allocator and the clients' state settled) with a line and takes the
// goroutines' range there.
func (r *SoakReport) summarizeSamples() {
	if len(r.Samples) == 0 {
		return
	}
	half := r.Samples[len(r.Samples)/2:]
	var n, sx, sy, sxx, sxy float64
	r.GoroutinesMin, r.GoroutinesMax = math.MaxInt, 0
	for _, s := range half {
		x, y := s.T/3600, float64(s.RSSKiB)
		n++
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		r.GoroutinesMin, r.GoroutinesMax = min(r.GoroutinesMin, s.Goroutines), max(r.GoroutinesMax, s.Goroutines)
	}
	if d := n*sxx - sx*sx; n >= 2 && d != 0 {
		r.RSSSlopeKiBPerHour = math.Round((n*sxy-sx*sy)/d*10) / 10
	}
}

// processRSS returns the resident set of process pid in KiB (VmRSS), or 0.
func processRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

// Summary is the report in a few lines.
func (r *SoakReport) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %d clients (%d of them leaving and returning every %s), Child SA rekeys every %s, IKE SA rekeys every %s, link down %s every %s, for %s\n",
		r.Config.Clients, r.Config.ChurnClients, r.Config.ChurnEvery, r.Config.ChildRekey, r.Config.IKERekey, r.Config.FlapFor, r.Config.FlapEvery, r.Config.Duration)
	if n := len(r.Samples); n > 0 {
		first, last := r.Samples[0], r.Samples[n-1]
		mid := r.Samples[n/2]
		fmt.Fprintf(&b, "  gateway RSS: %.1f MB at the start, %.1f MB at half time, %.1f MB at the end; second half's slope %+.0f KiB/h\n",
			float64(first.RSSKiB)/1024, float64(mid.RSSKiB)/1024, float64(last.RSSKiB)/1024, r.RSSSlopeKiBPerHour)
		fmt.Fprintf(&b, "  gateway goroutines: %d at the start, %d–%d in the second half, %d at the end\n",
			first.Goroutines, r.GoroutinesMin, r.GoroutinesMax, last.Goroutines)
	}
	fmt.Fprintf(&b, "  echoes: %d sent, %d lost: %d during the %d link flaps, %d outside them\n",
		r.EchoesSent, r.EchoesLost, r.EchoesLostInFlaps, len(r.Flaps), r.EchoesLostOutside)
	if len(r.LostOutsideBySecond) > 0 {
		secs := make([]int, 0, len(r.LostOutsideBySecond))
		for sec := range r.LostOutsideBySecond {
			secs = append(secs, sec)
		}
		slices.SortFunc(secs, func(a, b int) int { return r.LostOutsideBySecond[b] - r.LostOutsideBySecond[a] })
		var top []string
		for _, sec := range secs[:min(len(secs), 8)] {
			top = append(top, fmt.Sprintf("%d s: %d", sec, r.LostOutsideBySecond[sec]))
		}
		fmt.Fprintf(&b, "  losses outside flaps in %d different seconds; the most: %s\n", len(secs), strings.Join(top, ", "))
	}
	fmt.Fprintf(&b, "  rekeys counted at the end by the gateway (clients then up): %d Child SA, %d IKE SA; churn rounds %d (%d failed)\n",
		r.ChildRekeys, r.IKERekeys, r.Churns, r.ChurnFailures)
	leak := "nothing leaked"
	if r.Leaked() {
		leak = "LEAKED"
	}
	fmt.Fprintf(&b, "  after every client left: %d clients, %d inbound SAs, %d leases at the gateway (%s)\n",
		r.LeftClients, r.LeftInboundSAs, r.LeftLeases, leak)
	return b.String()
}

// WritePlot draws the gateway's RSS and goroutines over the run, the link
// flaps marked, as a PNG.
func (r *SoakReport) WritePlot(w io.Writer) error {
	p := plot.New()
	p.Title.Text = "mifsec gateway under soak: memory and goroutines"
	p.X.Label.Text = "time (min)"
	p.Y.Label.Text = "RSS (MB) / goroutines ÷ 10"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	rss := make(plotter.XYs, len(r.Samples))
	gor := make(plotter.XYs, len(r.Samples))
	sas := make(plotter.XYs, len(r.Samples))
	ymax := 1.0
	for i, s := range r.Samples {
		rss[i] = plotter.XY{X: s.T / 60, Y: float64(s.RSSKiB) / 1024}
		gor[i] = plotter.XY{X: s.T / 60, Y: float64(s.Goroutines) / 10}
		sas[i] = plotter.XY{X: s.T / 60, Y: float64(s.InboundSAs) / 10}
		ymax = max(ymax, rss[i].Y, gor[i].Y, sas[i].Y)
	}
	for i, series := range []struct {
		name string
		pts  plotter.XYs
	}{{"gateway RSS (MB)", rss}, {"goroutines ÷ 10", gor}, {"inbound SAs ÷ 10", sas}} {
		line, err := plotter.NewLine(series.pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", series.name, err)
		}
		line.Color = report.PathColors[i%len(report.PathColors)]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(series.name, line)
	}
	p.Y.Min, p.Y.Max = 0, ymax*1.3
	for _, f := range r.Flaps {
		line, err := plotter.NewLine(plotter.XYs{{X: f.From / 60, Y: 0}, {X: f.From / 60, Y: p.Y.Max * 0.04}})
		if err != nil {
			return err
		}
		line.Color = color.RGBA{R: 200, G: 30, B: 30, A: 255}
		p.Add(line)
	}
	canvas := report.NewCanvas(report.PlotHeight)
	p.Draw(draw.New(canvas))
	return report.WritePNG(w, canvas)
}

// WriteFiles writes summary.txt, report.json and soak.png into dir.
func (r *SoakReport) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), raw, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(r.Summary()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "soak.png"))
	if err != nil {
		return err
	}
	if err := r.WritePlot(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
