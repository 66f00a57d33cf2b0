package report

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot size in pixels at plotDPI.
const (
	PlotWidth  = 1000
	PlotHeight = 450
	plotDPI    = 100
)

// PathColors are the uplinks' line colours, in order (colour-blind safe).
var PathColors = []color.RGBA{
	{R: 0, G: 114, B: 178, A: 255},   // blue
	{R: 230, G: 159, B: 0, A: 255},   // orange
	{R: 0, G: 158, B: 115, A: 255},   // green
	{R: 204, G: 121, B: 167, A: 255}, // purple
}

// WritePlot draws one peer's throughput per uplink over time, with the
// total and the scenario's events marked, as a PlotWidth×PlotHeight PNG.
func (r *ScenarioReport) WritePlot(w io.Writer, run PeerRun) error {
	p, err := r.runPlot(run, 0)
	if err != nil {
		return err
	}
	canvas := NewCanvas(PlotHeight)
	p.Draw(draw.New(canvas))
	return WritePNG(w, canvas)
}

// comparisonPanelHeight is the height of one peer's panel in the
// comparison plot, comparisonHeader of the title above them, in pixels.
const (
	comparisonPanelHeight = 230
	comparisonHeader      = 40
)

// WriteComparisonPlot draws every measured peer of the run as one panel
// of a PlotWidth-wide PNG, one above the other with the same axes, so that
// the peers can be compared at a glance. It returns false when no peer has
// samples.
func (r *ScenarioReport) WriteComparisonPlot(w io.Writer) (bool, error) {
	var runs []PeerRun
	ymax := 1.0
	for _, run := range r.Runs {
		if len(run.Samples) == 0 {
			continue
		}
		runs = append(runs, run)
		ymax = max(ymax, r.peakTotal(run))
	}
	if len(runs) == 0 {
		return false, nil
	}
	plots := make([][]*plot.Plot, len(runs))
	for i, run := range runs {
		p, err := r.runPlot(run, ymax)
		if err != nil {
			return false, err
		}
		p.Title.Text = run.Peer
		if i < len(runs)-1 {
			p.X.Label.Text = ""
		}
		plots[i] = []*plot.Plot{p}
	}
	canvas := NewCanvas(comparisonPanelHeight*len(runs) + comparisonHeader)
	dc := draw.New(canvas)
	// A title over the panels, in the header's band.
	title := fmt.Sprintf("scenario %s: throughput per path (%s), every peer of the run", r.Scenario, r.mainDirection())
	style := plot.New().Title.TextStyle
	style.XAlign, style.YAlign = draw.XCenter, draw.YTop
	header := vg.Length(comparisonHeader) * vg.Inch / plotDPI
	dc.FillText(style, vg.Point{X: dc.Center().X, Y: dc.Max.Y - vg.Points(6)}, title)
	body := dc
	body.Max.Y -= header
	tiles := draw.Tiles{Rows: len(runs), Cols: 1, PadY: vg.Points(6), PadTop: vg.Points(2), PadBottom: vg.Points(2)}
	for i, c := range plot.Align(plots, tiles, body) {
		plots[i][0].Draw(c[0])
	}
	return true, WritePNG(w, canvas)
}

func (r *ScenarioReport) mainDirection() string {
	if len(r.Directions) > 0 {
		return r.Directions[0]
	}
	return "up"
}

// peakTotal is the highest total rate of a run's samples in the main
// direction.
func (r *ScenarioReport) peakTotal(run PeerRun) float64 {
	dir := r.mainDirection()
	peak := 0.0
	for _, s := range run.Samples {
		sum := 0.0
		for _, u := range s.Uplinks {
			sum += pick(dir, u.UpMbps, u.DownMbps)
		}
		peak = max(peak, sum)
	}
	return peak
}

// runPlot builds one peer's plot; ymax > 0 fixes the y axis's top (before
// the room left for the event labels).
func (r *ScenarioReport) runPlot(run PeerRun, ymax float64) (*plot.Plot, error) {
	dir := r.mainDirection()
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s — scenario %s: throughput per path (%s)", run.Peer, r.Scenario, dir)
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "Mbit/s"
	p.X.Min, p.X.Max = 0, r.DurationSeconds
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = false

	total := make(plotter.XYs, len(run.Samples))
	peak := 1.0
	for i, u := range r.Uplinks {
		pts := make(plotter.XYs, len(run.Samples))
		for k, s := range run.Samples {
			v := 0.0
			if i < len(s.Uplinks) {
				v = pick(dir, s.Uplinks[i].UpMbps, s.Uplinks[i].DownMbps)
			}
			pts[k].X, pts[k].Y = s.T, v
			total[k].X = s.T
			total[k].Y += v
			peak = max(peak, total[k].Y)
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", u.Name, err)
		}
		line.Color = PathColors[i%len(PathColors)]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (%s)", u.Name, u.Kind), line)
	}
	if len(r.Uplinks) > 1 && len(total) > 0 {
		line, err := plotter.NewLine(total)
		if err != nil {
			return nil, fmt.Errorf("plot the total: %w", err)
		}
		line.Color = color.RGBA{A: 255}
		line.Width = vg.Points(1)
		line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(line)
		p.Legend.Add("total", line)
	}
	if ymax > 0 {
		peak = ymax
	}
	p.Y.Max = peak * 1.25
	// Events: a vertical line each, labelled at the top.
	var labels plotter.XYLabels
	for i, e := range r.Events {
		line, err := plotter.NewLine(plotter.XYs{{X: e.AtS, Y: 0}, {X: e.AtS, Y: p.Y.Max}})
		if err != nil {
			return nil, fmt.Errorf("plot event: %w", err)
		}
		line.Color = color.RGBA{R: 200, G: 30, B: 30, A: 255}
		line.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(line)
		// Labels alternate in height so that close events stay readable.
		y := p.Y.Max * (0.97 - 0.06*float64(i%2))
		labels.XYs = append(labels.XYs, plotter.XY{X: e.AtS, Y: y})
		labels.Labels = append(labels.Labels, " "+e.What)
	}
	if len(labels.XYs) > 0 {
		l, err := plotter.NewLabels(labels)
		if err != nil {
			return nil, fmt.Errorf("plot event labels: %w", err)
		}
		for i := range l.TextStyle {
			l.TextStyle[i].Color = color.RGBA{R: 200, G: 30, B: 30, A: 255}
		}
		p.Add(l)
	}
	return p, nil
}

// NewCanvas is a white PlotWidth×height-pixel canvas at plotDPI.
func NewCanvas(height int) *vgimg.Canvas {
	return vgimg.NewWith(
		vgimg.UseWH(vg.Length(PlotWidth)*vg.Inch/plotDPI, vg.Length(height)*vg.Inch/plotDPI),
		vgimg.UseDPI(plotDPI), vgimg.UseBackgroundColor(color.White))
}

// WritePNG encodes the canvas as PNG to w.
func WritePNG(w io.Writer, canvas *vgimg.Canvas) error {
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(w); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
}

// WriteComparisonPlotFile writes WriteComparisonPlot's PNG to path,
// creating its directory; false when no peer has samples (nothing is
// written).
func (r *ScenarioReport) WriteComparisonPlotFile(path string) (bool, error) {
	var buf bytes.Buffer
	ok, err := r.WriteComparisonPlot(&buf)
	if err != nil || !ok {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("write the plot: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return false, fmt.Errorf("write the plot: %w", err)
	}
	return true, nil
}

// WritePlotFile writes WritePlot's PNG to path, creating its directory.
func (r *ScenarioReport) WritePlotFile(path string, run PeerRun) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	if err := r.WritePlot(f, run); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
}
