package linkemu

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustTrace(t testing.TB, lines ...int) *Trace {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintln(&b, l)
	}
	tr, err := ParseTrace("test", strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("ParseTrace: %v", err)
	}
	return tr
}

// longTrace is a trace as long as the longest built-in one (140 s,
// 195 000 opportunities, about 16.7 Mbit/s), with a varying rate.
func longTrace(t testing.TB) *Trace {
	t.Helper()
	var b strings.Builder
	for ms := 1; ms <= 140000; ms++ {
		n := 1
		if ms%3 == 0 {
			n = 2 - (ms/1000)%2 // alternate seconds of 1 and 1.33 per ms
		}
		for range n {
			b.WriteString(strconv.Itoa(ms))
			b.WriteByte('\n')
		}
	}
	tr, err := ParseTrace("long", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestParseTrace(t *testing.T) {
	tr, err := ParseTrace("x.up", strings.NewReader("0\n 3 \r\n3\n7\t\n10\r\n\n\n"))
	if err != nil {
		t.Fatalf("ParseTrace: %v", err)
	}
	if tr.Name() != "x.up" || tr.Opportunities() != 5 || tr.Period() != 10*time.Millisecond {
		t.Errorf("name %q, %d opportunities, period %v; want x.up, 5, 10ms", tr.Name(), tr.Opportunities(), tr.Period())
	}
	// 5 × 1500 bytes every 10 ms.
	if got, want := tr.MeanRate(), 5*1500*8/0.01; got != want {
		t.Errorf("mean rate %v, want %v", got, want)
	}
	// No final newline.
	if tr, err := ParseTrace("y", strings.NewReader("1\n2")); err != nil || tr.Opportunities() != 2 {
		t.Errorf("trace without a final newline: %v, %v", tr, err)
	}
}

func TestParseTraceErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "empty: no delivery opportunities"},
		{"only blank lines", "\n\n  \n", "empty"},
		{"word", "1\n2\nabc\n", `line 3: "abc" is not a whole number`},
		{"negative", "1\n-5\n", `line 2: "-5" is not`},
		{"fraction", "1.5\n", `line 1: "1.5" is not`},
		{"two numbers", "1 2\n", `line 1: "1 2" is not`},
		{"too large", "99999999999\n", "line 1"},
		{"decreasing", "1\n5\n9\n4\n", "line 4: 4 ms is before the previous line's 9 ms"},
		{"blank inside", "1\n\n2\n", "line 2: empty line"},
		{"zero length", "0\n0\n", "line 2: the last time is 0 ms"},
		{"long line", "1\n" + strings.Repeat("7", 200) + "\n", "line 2: longer than"},
		{"very long line", strings.Repeat("1", 100000), "line 1: longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := ParseTrace("f.up", strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("accepted (%d opportunities); want an error with %q", tr.Opportunities(), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "trace f.up") {
				t.Errorf("error %q; want the trace's name and %q", err, tc.want)
			}
		})
	}
	if _, err := ReadTrace("/nonexistent/x.down"); err == nil || !strings.Contains(err.Error(), "/nonexistent/x.down") {
		t.Errorf("missing file: error %v", err)
	}
	if err := (Shape{Trace: &Trace{}}).Validate(); err == nil {
		t.Errorf("a zero Trace validated")
	}
	if err := (Shape{Rate: 1e6, Trace: mustTrace(t, 1)}).Validate(); err == nil || !strings.Contains(err.Error(), "give one") {
		t.Errorf("rate and trace: error %v", err)
	}
}

// FuzzParseTrace: any input is refused with an error or gives a schedule
// whose index and time functions agree.
func FuzzParseTrace(f *testing.F) {
	for _, s := range []string{"0\n1\n", "5\n5\n5\n20\n", "1\r\n2\r\n", "", "\n\n", "x", "0\n", "3\n2\n", "4294967295\n", "  7  \n"} {
		f.Add([]byte(s), int64(12345678))
	}
	f.Fuzz(func(t *testing.T, data []byte, rel int64) {
		tr, err := ParseTrace("fuzz", bytes.NewReader(data))
		if err != nil {
			if tr != nil {
				t.Fatalf("a trace with an error")
			}
			return
		}
		if tr.Opportunities() == 0 || tr.Period() <= 0 {
			t.Fatalf("accepted an empty trace: %d, %v", tr.Opportunities(), tr.Period())
		}
		for i := 1; i < len(tr.ms); i++ {
			if tr.ms[i] < tr.ms[i-1] {
				t.Fatalf("line %d decreases", i+1)
			}
		}
		rel %= 1 << 50 // keep k·period far from overflow
		k := tr.firstAt(rel)
		if at := tr.at(k); at < rel {
			t.Fatalf("firstAt(%d) = %d at %d, before it", rel, k, at)
		}
		if rel <= 0 && k != 0 {
			t.Fatalf("firstAt(%d) = %d before the start, want 0", rel, k)
		}
		if k > 0 && tr.at(k-1) >= rel {
			t.Fatalf("firstAt(%d) = %d, but %d is at %d already", rel, k, k-1, tr.at(k-1))
		}
	})
}

func TestTraceSchedule(t *testing.T) {
	// Period 10 ms: opportunities at 0, 4, 4, 10 | 10, 14, 14, 20 | ...
	tr := mustTrace(t, 0, 4, 4, 10)
	for _, tc := range []struct {
		rel  time.Duration
		want int64
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{4 * time.Millisecond, 1},
		{4*time.Millisecond + 1, 3},
		{10 * time.Millisecond, 3}, // line 10 of the first period, shared with line 0 of the second
		{10*time.Millisecond + 1, 5},
		{20 * time.Millisecond, 7},
		{-time.Nanosecond, 0}, // nothing before the start
		{-time.Hour, 0},
	} {
		if got := tr.firstAt(int64(tc.rel)); got != tc.want {
			t.Errorf("first opportunity at or after %v: %d, want %d", tc.rel, got, tc.want)
		}
	}
	wantAt := map[int64]time.Duration{0: 0, 1: 4 * time.Millisecond, 3: 10 * time.Millisecond, 4: 10 * time.Millisecond, 5: 14 * time.Millisecond, 9: 24 * time.Millisecond}
	for k, want := range wantAt {
		if got := tr.at(k); got != int64(want) {
			t.Errorf("opportunity %d at %v, want %v", k, time.Duration(got), want)
		}
	}
	if got := tr.Capacity(0, 20*time.Millisecond); got != 7*1500 {
		t.Errorf("capacity in [0, 20ms) = %d bytes, want 7 opportunities", got)
	}
	if got := tr.Capacity(time.Second, time.Second+10*time.Millisecond); got != 4*1500 {
		t.Errorf("capacity over one period = %d, want 4 opportunities", got)
	}
}

// mahimahiDepartures is an independent model of mahimahi's link: it walks
// the delivery opportunities of the repeated trace in time order and, at
// each, sends up to 1500 bytes of the packets that have arrived by then, in
// order, a packet going on in the next opportunity when it does not fit;
// bytes nobody uses are lost. It returns each packet's departure (-1: not
// sent within the repeats).
func mahimahiDepartures(lines []int, repeats int, arrivals []int64, sizes []int) []int64 {
	period := lines[len(lines)-1]
	dep := make([]int64, len(arrivals))
	for i := range dep {
		dep[i] = -1
	}
	next, cur, curLeft := 0, -1, 0
	for rep := range repeats {
		for _, l := range lines {
			when := int64(rep*period+l) * int64(time.Millisecond)
			room := 1500
			for room > 0 {
				if curLeft == 0 {
					if next == len(arrivals) || arrivals[next] > when {
						break
					}
					cur, curLeft = next, sizes[next]
					next++
				}
				n := min(room, curLeft)
				room -= n
				curLeft -= n
				if curLeft == 0 {
					dep[cur] = when
				}
			}
		}
	}
	return dep
}

// syntheticTrace is a trace with what real ones have: several
// opportunities in one millisecond, a gap of over 100 ms without any, a
// line at 0, steady stretches.
func syntheticTrace() []int {
	var lines []int
	for ms := 0; ms < 60; ms++ { // 3 per ms: 36 Mbit/s
		lines = append(lines, ms, ms, ms)
	}
	for ms := 60; ms < 120; ms += 4 { // 3 Mbit/s
		lines = append(lines, ms)
	}
	// Nothing from 120 to 250 ms.
	for ms := 250; ms <= 330; ms += 2 {
		lines = append(lines, ms)
	}
	return lines // period 330 ms
}

// TestTraceLikeMahimahi: packets through a trace-driven shape leave when
// mahimahi's link would send them, so every 100 ms carries what mahimahi
// would carry. The traffic mixes small and large packets (some larger than
// an opportunity), bursts that fill the queue and idle stretches where
// opportunities go unused.
func TestTraceLikeMahimahi(t *testing.T) {
	lines := syntheticTrace()
	var text strings.Builder
	for _, l := range lines {
		text.WriteString(strconv.Itoa(l) + "\n")
	}
	tr, err := ParseTrace("synthetic", strings.NewReader(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	const repeats = 6
	rng := rand.New(rand.NewPCG(7, 8))
	var arrivals []int64
	var sizes []int
	now := int64(0)
	end := int64(repeats-1) * int64(tr.Period())
	for now < end {
		if (now/int64(150*time.Millisecond))%3 == 2 {
			now += int64(150 * time.Millisecond) // idle
			continue
		}
		now += rng.Int64N(int64(300 * time.Microsecond))
		if rng.IntN(8) == 0 {
			// On a whole millisecond, where opportunities are: a
			// packet arriving at an opportunity's time may use it.
			now = (now + ms - 1) / ms * ms
		}
		size := 40 + rng.IntN(1461)
		if rng.IntN(20) == 0 {
			size = 3000 + rng.IntN(1000) // takes several opportunities
		}
		arrivals = append(arrivals, now)
		sizes = append(sizes, size)
	}
	want := mahimahiDepartures(lines, repeats, arrivals, sizes)

	s := Shape{Trace: tr, QueueBytes: 1 << 30}
	sh := newShaper(1, 2)
	const bin = int64(100 * time.Millisecond)
	gotBins, wantBins := map[int64]int{}, map[int64]int{}
	for i, at := range arrivals {
		d, v := sh.admit(&s, at, sizes[i])
		if v != deliver {
			t.Fatalf("packet %d dropped (%v)", i, v)
		}
		if want[i] < 0 {
			continue // after the model's last opportunity
		}
		if d != want[i] {
			t.Fatalf("packet %d (%d bytes, arrived %v) leaves at %v, mahimahi: %v",
				i, sizes[i], time.Duration(at), time.Duration(d), time.Duration(want[i]))
		}
		gotBins[d/bin] += sizes[i]
		wantBins[want[i]/bin] += sizes[i]
	}
	for b, w := range wantBins {
		if gotBins[b] != w {
			t.Errorf("100 ms from %v: %d bytes, mahimahi %d", time.Duration(b*bin), gotBins[b], w)
		}
	}
	t.Logf("%d packets over %d repetitions of a %v trace, %d bins of 100 ms: all as mahimahi", len(arrivals), repeats, tr.Period(), len(wantBins))
}

// TestTraceSaturatedCapacity: with the queue never empty, full-size
// packets leave at exactly the trace's opportunities: each 100 ms carries
// 1500 bytes per line of the trace in it (counted here from the lines,
// repetitions included).
func TestTraceSaturatedCapacity(t *testing.T) {
	lines := syntheticTrace()
	tr := mustTrace(t, lines...)
	period := lines[len(lines)-1]
	s := Shape{Trace: tr, QueueBytes: 1 << 30}
	sh := newShaper(1, 2)
	const bin = int64(100 * time.Millisecond)
	got := map[int64]int{}
	// 5000 packets at time 0 (line 0 is at 0: the first leaves at once).
	for range 5000 {
		d, v := sh.admit(&s, 0, 1500)
		if v != deliver {
			t.Fatalf("dropped")
		}
		got[d/bin] += 1500
	}
	want := map[int64]int{}
	sent := 0
	for rep := 0; sent < 5000; rep++ {
		for _, l := range lines {
			if sent == 5000 {
				break
			}
			want[int64(rep*period+l)*int64(time.Millisecond)/bin] += 1500
			sent++
		}
	}
	for b, w := range want {
		if got[b] != w {
			t.Errorf("100 ms from %v: %d bytes, the trace has %d", time.Duration(b*bin), got[b], w)
		}
	}
	// Capacity agrees with the lines: one whole period holds every line.
	if c := tr.Capacity(time.Second, time.Second+tr.Period()); c != int64(len(lines))*1500 {
		t.Errorf("capacity of one period %d, want %d", c, len(lines)*1500)
	}
}

// TestShaperTraceQueue: the tail-drop limit applies to what waits for the
// trace's opportunities; QueueTime counts at the trace's mean rate.
func TestShaperTraceQueue(t *testing.T) {
	tr := mustTrace(t, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) // 1500 bytes per ms: 12 Mbit/s
	for _, s := range []Shape{{Trace: tr, QueueBytes: 4500}, {Trace: tr, QueueTime: 3 * time.Millisecond}} {
		sh := newShaper(1, 2)
		var got []int64
		for range 5 {
			d, v := sh.admit(&s, 0, 1500)
			if v == dropQueue {
				d = -1
			}
			got = append(got, d)
		}
		// Three packets waiting for the opportunities at 1, 2 and 3 ms
		// fill the 4500 bytes.
		want := []int64{1 * ms, 2 * ms, 3 * ms, -1, -1}
		if !equal(got, want) {
			t.Errorf("%+v: departures %v, want %v (-1: tail drop)", s, got, want)
		}
		// At 2.5 ms two have left: room for two more.
		got = got[:0]
		for range 3 {
			d, v := sh.admit(&s, 2*ms+ms/2, 1500)
			if v == dropQueue {
				d = -1
			}
			got = append(got, d)
		}
		if want := []int64{4 * ms, 5 * ms, -1}; !equal(got, want) {
			t.Errorf("%+v: at 2.5 ms departures %v, want %v", s, got, want)
		}
	}
}

// TestShaperTraceRunTimeChanges: a shape can move from a rate to a trace
// and back at run time; packets never leave before those queued ahead of
// them, a down link empties the trace's queue, and plain rate changes
// work as before.
func TestShaperTraceRunTimeChanges(t *testing.T) {
	sh := newShaper(1, 2)
	fast, slow := Shape{Rate: 12e6}, Shape{Rate: 1.2e6}
	if d, _ := sh.admit(&fast, 0, 1500); d != ms {
		t.Fatalf("12 Mbit/s: %v, want 1 ms", d)
	}
	if d, _ := sh.admit(&slow, 0, 1500); d != 11*ms {
		t.Fatalf("then 1.2 Mbit/s: %v, want 11 ms (after the first)", d)
	}
	tr := mustTrace(t, 5, 10) // opportunities at 5, 10, 15, 20, ... ms
	trace := Shape{Trace: tr}
	// Queued behind the rate's backlog (11 ms): the next opportunity at
	// or after it is 15 ms.
	if d, _ := sh.admit(&trace, 0, 1500); d != 15*ms {
		t.Fatalf("trace after the rate's backlog: %v, want 15 ms", d)
	}
	if d, _ := sh.admit(&trace, 0, 1500); d != 20*ms {
		t.Fatalf("second on the trace: %v, want 20 ms", d)
	}
	// Back to a rate: after the trace's last departure.
	if d, _ := sh.admit(&fast, 0, 1500); d != 21*ms {
		t.Fatalf("rate after the trace: %v, want 21 ms", d)
	}
	// Down empties the queue; the trace then serves new packets at the
	// first opportunity after they arrive.
	if _, v := sh.admit(&Shape{Trace: tr, Down: true}, 30*ms, 1500); v != dropDown {
		t.Fatalf("down: %v", v)
	}
	if d, _ := sh.admit(&trace, 31*ms, 100); d != 35*ms {
		t.Fatalf("after down: %v, want 35 ms", d)
	}
	// The same trace restarted at 32 ms (RestartTraces) serves from its
	// new origin: lines at 37, 42 ms.
	restarted := Shape{Trace: tr, traceStart: 32 * ms}
	if d, _ := sh.admit(&restarted, 36*ms, 1500); d != 37*ms {
		t.Fatalf("restarted trace: %v, want 37 ms", d)
	}
}

// TestSetKeepsTracePosition: Set with the same trace keeps where it is,
// a different trace starts at the Set, RestartTraces moves both.
func TestSetKeepsTracePosition(t *testing.T) {
	tr, other := mustTrace(t, 1, 2), mustTrace(t, 3, 4)
	d := testDirection(t, Config{}, -1)
	l := d.link
	l.base = time.Now().Add(-time.Second)
	if err := l.Set(Config{AtoB: Shape{Trace: tr}, BtoA: Shape{Trace: tr}}); err != nil {
		t.Fatal(err)
	}
	first := l.cfg.Load().AtoB.traceStart
	if first < int64(time.Second) {
		t.Fatalf("trace set 1 s after the start begins at %v", time.Duration(first))
	}
	cfg := l.Config()
	cfg.AtoB.Delay = time.Millisecond
	cfg.BtoA.Trace = other
	time.Sleep(time.Millisecond)
	if err := l.Set(cfg); err != nil {
		t.Fatal(err)
	}
	c := l.cfg.Load()
	if c.AtoB.traceStart != first {
		t.Errorf("same trace moved from %v to %v", first, c.AtoB.traceStart)
	}
	if c.BtoA.traceStart <= first {
		t.Errorf("new trace kept the old start %v", c.BtoA.traceStart)
	}
	at := l.base.Add(5 * time.Second)
	l.RestartTraces(at)
	if c := l.cfg.Load(); c.AtoB.traceStart != int64(5*time.Second) || c.BtoA.traceStart != int64(5*time.Second) || c.AtoB.Delay != time.Millisecond {
		t.Errorf("after RestartTraces: %+v", c)
	}
}

// BenchmarkShaperTrace is the trace-driven decision alone, per packet, on
// the longest trace the built-in scenarios use.
func BenchmarkShaperTrace(b *testing.B) {
	tr, err := ReadTrace("../scenarios/traces/TMobile-LTE-short.down")
	if err != nil {
		b.Skipf("trace: %v", err)
	}
	s := Shape{Trace: tr, Delay: 20 * time.Millisecond}
	sh := newShaper(1, 2)
	b.ReportAllocs()
	var now int64
	for range b.N {
		now += 300_000 // 1500 bytes every 0.3 ms: 40 Mbit/s, above the mean
		sh.admit(&s, now, 1500)
	}
}
