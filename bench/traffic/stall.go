package traffic

// Stall is the longest time a transfer made no progress in a window.
type Stall struct {
	// Seconds is the longest stretch within the window without new
	// acknowledged bytes, counted from the window's start at the earliest.
	Seconds float64
	// StartS and EndS place it on the Base clock; when Recovered is false
	// it lasted to the window's end (or the transfer's).
	StartS, EndS float64
	Recovered    bool
	// Retransmits is what the senders retransmitted from the window's start
	// until a second after the stall ended (or the window's end).
	Retransmits int
}

// Stall finds the longest time without new acknowledged bytes between from
// and to (seconds on the Base clock), for an event at from whose effect
// lasts until to. It returns false when the transfer has no samples in the
// window.
func (r *Result) Stall(from, to float64) (Stall, bool) {
	ps := r.Progress
	if len(ps) == 0 || ps[len(ps)-1].T <= from || ps[0].T >= to {
		return Stall{}, false
	}
	to = min(to, ps[len(ps)-1].T)
	// The acknowledged bytes and retransmissions at the window's start.
	var startAcked uint64
	var startRetrans uint32
	k := 0
	for ; k < len(ps) && ps[k].T <= from; k++ {
		startAcked, startRetrans = ps[k].Acked, ps[k].Retransmits
	}
	if k == 0 {
		// The transfer started inside the window: count from its start.
		from = ps[0].T
		startAcked, startRetrans = ps[0].Acked, ps[0].Retransmits
		k = 1
	}
	st := Stall{StartS: from, EndS: from, Recovered: true}
	lastAdvance, acked := from, startAcked
	for ; k < len(ps) && ps[k].T <= to; k++ {
		if ps[k].Acked <= acked {
			continue
		}
		acked = ps[k].Acked
		if gap := ps[k].T - lastAdvance; gap > st.Seconds {
			st.Seconds, st.StartS, st.EndS = gap, lastAdvance, ps[k].T
		}
		lastAdvance = ps[k].T
	}
	if gap := to - lastAdvance; gap > st.Seconds {
		st.Seconds, st.StartS, st.EndS, st.Recovered = gap, lastAdvance, to, false
	}
	// Retransmissions until a second after the stall (within the window).
	until := min(st.EndS+1, to)
	retrans := startRetrans
	for _, p := range ps {
		if p.T > until {
			break
		}
		retrans = p.Retransmits
	}
	st.Retransmits = int(retrans - min(retrans, startRetrans))
	st.Seconds, st.StartS, st.EndS = round(st.Seconds, 3), round(st.StartS, 3), round(st.EndS, 3)
	return st, true
}

// LowGoodput returns the longest run of goodput intervals that end after
// from and by to (seconds on the Base clock) in which the goodput stayed
// below fraction of the transfer's mean: a flow that only trickles (a
// packet now and then, which ends a stall) is as good as stopped for its
// user. It returns 0 when no interval qualifies.
func (r *Result) LowGoodput(from, to, fraction float64) (seconds, startS float64) {
	if r.Mbps <= 0 {
		return 0, 0
	}
	limit := fraction * r.Mbps
	var run, runStart float64
	prevEnd := -1.0
	for _, in := range r.Intervals {
		if in.T <= from+1e-9 || in.T > to+1e-9 {
			continue
		}
		width := defaultInterval.Seconds()
		if prevEnd >= 0 {
			width = in.T - prevEnd
		}
		prevEnd = in.T
		if in.Mbps >= limit {
			run = 0
			continue
		}
		if run == 0 {
			runStart = max(in.T-width, from)
		}
		run = in.T - runStart
		if run > seconds {
			seconds, startS = run, runStart
		}
	}
	return round(seconds, 3), round(startS, 3)
}
