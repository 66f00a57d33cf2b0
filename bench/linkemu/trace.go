package linkemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"
)

// TraceOpportunityBytes is what one delivery opportunity of a Trace
// carries: bytes of IP packets (IP header included), as in the recorded
// cellular traces, where each line stands for one 1500-byte packet the
// network could have delivered.
const TraceOpportunityBytes = 1500

// Limits of a trace file.
const (
	// MaxTraceOpportunities bounds the lines of one trace (64 MiB of
	// schedule).
	MaxTraceOpportunities = 1 << 24
	// maxTraceLine bounds one line, digits and spaces.
	maxTraceLine = 64
)

// Trace is a recorded link capacity in mahimahi's format: a schedule of
// delivery opportunities, each able to carry TraceOpportunityBytes, given
// as whole milliseconds since the trace began (several opportunities in the
// same millisecond repeat the line). The schedule repeats with a period of
// its last timestamp, so opportunity k of a schedule of n lines is at
// ms[k mod n] + (k div n) × period.
//
// A Trace is immutable once parsed and may be shared by any number of
// links and directions.
type Trace struct {
	name   string
	ms     []uint32 // the schedule, non-decreasing, last > 0
	period int64    // nanoseconds: the last timestamp
}

// ParseTrace reads a trace: one line per delivery opportunity, a whole
// number of milliseconds, never smaller than the line before; the last
// must be above zero. Spaces around a number and a final newline (LF or
// CRLF) are allowed; empty lines before the end are not. Errors name the
// line. name labels the trace in errors and reports.
func ParseTrace(name string, r io.Reader) (*Trace, error) {
	fail := func(line int, format string, args ...any) error {
		return fmt.Errorf("trace %s: line %d: %s", name, line, fmt.Sprintf(format, args...))
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var ms []uint32
	line := 0
	blank := 0 // the first empty line not yet followed by a number
	for {
		raw, err := br.ReadSlice('\n')
		if len(raw) == 0 && err == io.EOF {
			break
		}
		line++
		if err == bufio.ErrBufferFull || len(raw) > maxTraceLine+2 {
			return nil, fail(line, "longer than %d characters: not a number of milliseconds", maxTraceLine)
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("trace %s: line %d: %w", name, line, err)
		}
		text := bytes.TrimSpace(raw)
		if len(text) == 0 {
			if blank == 0 {
				blank = line
			}
			if err == io.EOF {
				break
			}
			continue
		}
		if blank != 0 {
			return nil, fail(blank, "empty line (every line is one delivery opportunity: a number of milliseconds)")
		}
		v, ok := parseMillis(text)
		if !ok {
			return nil, fail(line, "%q is not a whole number of milliseconds", truncate(text))
		}
		if n := len(ms); n > 0 && v < ms[n-1] {
			return nil, fail(line, "%d ms is before the previous line's %d ms (times must not decrease)", v, ms[n-1])
		}
		if len(ms) == MaxTraceOpportunities {
			return nil, fail(line, "more than %d delivery opportunities", MaxTraceOpportunities)
		}
		ms = append(ms, v)
		if err == io.EOF {
			break
		}
	}
	switch {
	case len(ms) == 0:
		return nil, fmt.Errorf("trace %s: empty: no delivery opportunities", name)
	case ms[len(ms)-1] == 0:
		return nil, fmt.Errorf("trace %s: line %d: the last time is 0 ms: a trace must last longer than that (it repeats with the last time as its period)", name, len(ms))
	}
	return &Trace{name: name, ms: slicesClip(ms), period: int64(ms[len(ms)-1]) * int64(time.Millisecond)}, nil
}

// ReadTrace reads the trace file at path (see ParseTrace); the trace is
// named after the file.
func ReadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer f.Close()
	t, err := ParseTrace(filepath.Base(path), f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// parseMillis reads a whole number of milliseconds (digits only) that
// fits in 32 bits.
func parseMillis(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > math.MaxUint32 {
		return 0, false
	}
	return uint32(v), true
}

func truncate(b []byte) string {
	if len(b) > 20 {
		return string(b[:20]) + "..."
	}
	return string(b)
}

func slicesClip(s []uint32) []uint32 { return s[:len(s):len(s)] }

// Name is the trace's label (the file's base name for ReadTrace).
func (t *Trace) Name() string { return t.name }

// Period is how long the trace lasts before it repeats: its last
// timestamp.
func (t *Trace) Period() time.Duration { return time.Duration(t.period) }

// Opportunities is the number of delivery opportunities in one period.
func (t *Trace) Opportunities() int { return len(t.ms) }

// MeanRate is the trace's capacity averaged over one period, in bit/s of
// IP packets.
func (t *Trace) MeanRate() float64 {
	return float64(len(t.ms)) * TraceOpportunityBytes * 8 / time.Duration(t.period).Seconds()
}

// Capacity is how many bytes the trace can deliver in [from, to), both
// measured from the trace's start (the trace repeats; it has nothing
// before its start).
func (t *Trace) Capacity(from, to time.Duration) int64 {
	if to <= from {
		return 0
	}
	return (t.firstAt(int64(to)) - t.firstAt(int64(from))) * TraceOpportunityBytes
}

// firstAt is the index of the first delivery opportunity at or after rel
// nanoseconds from the trace's start; opportunity k >= 0 is at at(k). The
// first is opportunity 0 (line 1) for any rel up to its time.
//
// Period j covers opportunities j·n … j·n+n-1 at j·P + ms[i]; since the
// last line is at P, the last opportunity of period j-1 and the first of
// period j may share an instant.
func (t *Trace) firstAt(rel int64) int64 {
	if rel <= 0 {
		return 0
	}
	n := int64(len(t.ms))
	q := rel / t.period
	r := rel - q*t.period // in [0, P)
	if r == 0 {
		// The opportunities at P of period q-1 are at rel too and come
		// first.
		return (q-1)*n + int64(t.searchMs(uint32(t.period/int64(time.Millisecond))))
	}
	// The first line at or after r: r > 0 nanoseconds is at or before
	// ceil(r) milliseconds, and the last line (P) is after r.
	ceilMs := (r + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	return q*n + int64(t.searchMs(uint32(ceilMs)))
}

// at is when opportunity k is, in nanoseconds from the trace's start.
func (t *Trace) at(k int64) int64 {
	n := int64(len(t.ms))
	j := k / n
	return j*t.period + int64(t.ms[k-j*n])*int64(time.Millisecond)
}

// searchMs is the first index whose time is at least v milliseconds
// (len(t.ms) if none).
func (t *Trace) searchMs(v uint32) int {
	lo, hi := 0, len(t.ms)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.ms[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// errNoOpportunities is Validate's error for a zero Trace.
var errNoOpportunities = errors.New("trace has no delivery opportunities (use ParseTrace or ReadTrace)")

// validate checks a Trace built by hand rather than by ParseTrace.
func (t *Trace) validate() error {
	if len(t.ms) == 0 || t.period <= 0 {
		return errNoOpportunities
	}
	return nil
}
