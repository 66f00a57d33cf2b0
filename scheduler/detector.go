package scheduler

import (
	"fmt"
	"time"
)

// Health is what the failure detector concludes about a path.
type Health uint8

const (
	// Healthy: the last probe was answered in time.
	Healthy Health = iota
	// Suspect: at least one probe went unanswered; the path is probed
	// faster but still carries traffic.
	Suspect
	// Failing: SuspectMisses probes in a row went unanswered (or the path
	// was silent for half the failure timeout): policies stop sending on
	// it when they have somewhere else to send.
	Failing
	// Down: FailMisses probes in a row went unanswered, or none was
	// answered within the failure timeout. The path comes back only after
	// RecoverReplies good replies in a row.
	Down
)

func (h Health) String() string {
	switch h {
	case Healthy:
		return "healthy"
	case Suspect:
		return "suspect"
	case Failing:
		return "failing"
	case Down:
		return "down"
	}
	return fmt.Sprintf("health(%d)", uint8(h))
}

// DetectorConfig sets the failure detector and the probe schedule it
// expects. Zero fields take the defaults of defaultDetectorConfig.
type DetectorConfig struct {
	// A probe is missed when unanswered after
	// max(MissFactor·SRTT + 4·RTTVAR, MissFloor).
	MissFactor float64
	MissFloor  time.Duration
	// SuspectMisses consecutive misses make a path Failing; FailMisses make
	// it Down.
	SuspectMisses, FailMisses int
	// A path is also Down when none of its probes was answered for
	// max(FailFactor·SRTT, FailFloor) (Failing after half of that).
	FailFactor float64
	FailFloor  time.Duration
	// RecoverReplies consecutive good replies bring a Down path back (and
	// make a new path usable).
	RecoverReplies int

	// Probe intervals the conductor is asked to keep: ActiveInterval while
	// the path carries data, IdleInterval while it does not, FastInterval
	// while it is suspect or being verified, DownInterval while it is down.
	ActiveInterval, IdleInterval, FastInterval, DownInterval time.Duration
	// QuietInterval replaces IdleInterval and DownInterval once no path
	// of the session carried data for QuietAfter (a laptop's idle VPN, a
	// gateway's idle clients): probes then keep the paths known and their
	// NAT bindings open at a few packets a second per interface instead
	// of tens. The conductor probes every path at once when data flows
	// again (dataplane.PathGroup.SetWake). QuietInterval is raised to
	// IdleInterval if below it.
	QuietInterval, QuietAfter time.Duration
}

// defaultDetectorConfig returns the defaults. On a 15 ms WLAN path probed
// every 30 ms while traffic flows, a silent cut is seen as a miss at most
// 30 + 40 ms after it, the path is Failing (traffic moves) after one more
// fast probe's timeout, about 120 ms after the cut, and Down after the
// third miss, about 130 ms; the silence timeout (200 ms) is the backstop.
// A Down path returns after 3 good replies 50 ms apart.
func defaultDetectorConfig() DetectorConfig {
	return DetectorConfig{
		MissFactor:     2,
		MissFloor:      40 * time.Millisecond,
		SuspectMisses:  2,
		FailMisses:     3,
		FailFactor:     8,
		FailFloor:      200 * time.Millisecond,
		RecoverReplies: 3,
		ActiveInterval: 30 * time.Millisecond,
		IdleInterval:   100 * time.Millisecond,
		FastInterval:   10 * time.Millisecond,
		DownInterval:   50 * time.Millisecond,
		QuietInterval:  time.Second,
		QuietAfter:     10 * time.Second,
	}
}

func (c *DetectorConfig) fill() {
	d := defaultDetectorConfig()
	if c.MissFactor <= 0 {
		c.MissFactor = d.MissFactor
	}
	if c.MissFloor <= 0 {
		c.MissFloor = d.MissFloor
	}
	if c.SuspectMisses <= 0 {
		c.SuspectMisses = d.SuspectMisses
	}
	if c.FailMisses <= 0 {
		c.FailMisses = d.FailMisses
	}
	c.SuspectMisses = min(c.SuspectMisses, c.FailMisses)
	if c.FailFactor <= 0 {
		c.FailFactor = d.FailFactor
	}
	if c.FailFloor <= 0 {
		c.FailFloor = d.FailFloor
	}
	if c.RecoverReplies <= 0 {
		c.RecoverReplies = d.RecoverReplies
	}
	for _, p := range []struct {
		v *time.Duration
		d time.Duration
	}{
		{&c.ActiveInterval, d.ActiveInterval}, {&c.IdleInterval, d.IdleInterval},
		{&c.FastInterval, d.FastInterval}, {&c.DownInterval, d.DownInterval},
		{&c.QuietInterval, d.QuietInterval}, {&c.QuietAfter, d.QuietAfter},
	} {
		if *p.v <= 0 {
			*p.v = p.d
		}
	}
	// Quiet is never faster than idle.
	c.QuietInterval = max(c.QuietInterval, c.IdleInterval)
}

// failureDetector is one path's failure detector with hysteresis. It is driven by
// three events — a probe sent, its reply, a missed probe (decided by the
// caller from MissTimeout) — and by Silence for the timeout rule. Not safe
// for concurrent use: the Scheduler calls it under its control-plane lock.
type failureDetector struct {
	cfg         DetectorConfig
	health      Health
	misses      int // consecutive
	goods       int // consecutive good replies while Down
	lastReply   int64
	everReply   bool
	downAt      int64 // when the path last went Down (0: never)
	Transitions int   // changes of Health, for flapping checks
}

// newFailureDetector returns a detector for a new path: Down until it has
// answered RecoverReplies probes (a path is verified before it carries
// traffic).
func newFailureDetector(cfg DetectorConfig) *failureDetector {
	cfg.fill()
	return &failureDetector{cfg: cfg, health: Down}
}

// Health returns the current conclusion.
func (d *failureDetector) Health() Health { return d.health }

// Misses returns the number of consecutive missed probes.
func (d *failureDetector) Misses() int { return d.misses }

func (d *failureDetector) set(h Health) {
	if h != d.health {
		d.health = h
		d.Transitions++
	}
}

// setDown makes the path Down at now.
func (d *failureDetector) setDown(now int64) {
	if d.health != Down {
		d.downAt = now
	}
	d.set(Down)
}

// MissTimeout returns how long a probe may stay unanswered on a path with
// the given round-trip estimate before it counts as missed.
func (d *failureDetector) MissTimeout(rtt *rttEstimator) time.Duration {
	if rtt.Samples == 0 {
		return max(d.cfg.MissFloor, 250*time.Millisecond)
	}
	return max(time.Duration(d.cfg.MissFactor*float64(rtt.SRTT))+4*rtt.RTTVar, d.cfg.MissFloor)
}

// FailTimeout returns the silence after which a path is Down.
func (d *failureDetector) FailTimeout(rtt *rttEstimator) time.Duration {
	return max(time.Duration(d.cfg.FailFactor*float64(rtt.SRTT)), d.cfg.FailFloor)
}

// Reply records at now a good reply to a probe sent at sent. A reply to
// a probe sent before the path went Down brings it back at once: the path
// delivered that probe while the misses were counted, so it was slower
// than the miss timeout, not silent (a path that failed loses what it was
// sent, and comes back only after RecoverReplies replies).
func (d *failureDetector) Reply(now, sent int64) {
	d.misses = 0
	d.lastReply, d.everReply = now, true
	if d.health == Down && d.downAt != 0 && sent < d.downAt {
		d.goods = 0
		d.set(Healthy)
		return
	}
	if d.health == Down {
		d.goods++
		if d.goods >= d.cfg.RecoverReplies {
			d.goods = 0
			d.set(Healthy)
		}
		return
	}
	d.set(Healthy)
}

// Miss records one probe that went unanswered, counted at now.
func (d *failureDetector) Miss(now int64) {
	d.misses++
	d.goods = 0
	if d.health == Down {
		return
	}
	switch {
	case d.misses >= d.cfg.FailMisses:
		d.setDown(now)
	case d.misses >= d.cfg.SuspectMisses:
		d.set(Failing)
	default:
		d.set(Suspect)
	}
}

// Silence applies the timeout rule: oldestUnanswered is when the oldest
// probe sent after the last reply left (0: none outstanding).
func (d *failureDetector) Silence(now, oldestUnanswered int64, rtt *rttEstimator) {
	if oldestUnanswered == 0 || d.health == Down {
		return
	}
	silent := time.Duration(now - oldestUnanswered)
	ft := d.FailTimeout(rtt)
	switch {
	case silent >= ft:
		d.goods = 0
		d.setDown(now)
	case silent >= ft/2 && d.health < Failing:
		d.set(Failing)
	}
}

// ProbeInterval returns the interval the path wants between probes now;
// carrying says whether the session carries data, quiet whether none of
// its paths did for QuietAfter.
func (d *failureDetector) ProbeInterval(rtt *rttEstimator, carrying, quiet bool) time.Duration {
	switch {
	case d.health == Down && !d.everReply && d.misses < d.cfg.FailMisses:
		// Being verified: fast, until it looks unreachable.
		return d.cfg.FastInterval
	case d.health == Down && quiet:
		return d.cfg.QuietInterval
	case d.health == Down:
		return d.cfg.DownInterval
	case d.health != Healthy:
		// Suspect or failing: probe about once per round trip, so that
		// the next misses (or the good reply) come quickly.
		return min(max(d.cfg.FastInterval, rtt.SRTT/2), d.cfg.ActiveInterval)
	case carrying:
		return d.cfg.ActiveInterval
	case quiet:
		return d.cfg.QuietInterval
	}
	return d.cfg.IdleInterval
}
