package bench

import (
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

// pathColors are the uplinks' line colours, in order (colour-blind safe).
var pathColors = []color.RGBA{
	{R: 0, G: 114, B: 178, A: 255},   // blue
	{R: 230, G: 159, B: 0, A: 255},   // orange
	{R: 0, G: 158, B: 115, A: 255},   // green
	{R: 204, G: 121, B: 167, A: 255}, // purple
}

// WritePlot draws one peer's throughput per uplink over time, with the
// total and the scenario's events marked, as a PlotWidth×PlotHeight PNG.
func (r *ScenarioReport) WritePlot(w io.Writer, run PeerRun) error {
	dir := "up"
	if len(r.Directions) > 0 {
		dir = r.Directions[0]
	}
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
	ymax := 1.0
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
			ymax = max(ymax, total[k].Y)
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", u.Name, err)
		}
		line.Color = pathColors[i%len(pathColors)]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (%s)", u.Name, u.Kind), line)
	}
	if len(r.Uplinks) > 1 && len(total) > 0 {
		line, err := plotter.NewLine(total)
		if err != nil {
			return fmt.Errorf("plot the total: %w", err)
		}
		line.Color = color.RGBA{A: 255}
		line.Width = vg.Points(1)
		line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(line)
		p.Legend.Add("total", line)
	}
	p.Y.Max = ymax * 1.25
	// Events: a vertical line each, labelled at the top.
	var labels plotter.XYLabels
	for i, e := range r.Events {
		line, err := plotter.NewLine(plotter.XYs{{X: e.AtS, Y: 0}, {X: e.AtS, Y: p.Y.Max}})
		if err != nil {
			return fmt.Errorf("plot event: %w", err)
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
			return fmt.Errorf("plot event labels: %w", err)
		}
		for i := range l.TextStyle {
			l.TextStyle[i].Color = color.RGBA{R: 200, G: 30, B: 30, A: 255}
		}
		p.Add(l)
	}
	return writePNG(w, p)
}

// writePNG draws p as a PlotWidth×PlotHeight PNG on a white background.
func writePNG(w io.Writer, p *plot.Plot) error {
	canvas := vgimg.NewWith(
		vgimg.UseWH(vg.Length(PlotWidth)*vg.Inch/plotDPI, vg.Length(PlotHeight)*vg.Inch/plotDPI),
		vgimg.UseDPI(plotDPI), vgimg.UseBackgroundColor(color.White))
	p.Draw(draw.New(canvas))
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(w); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
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
