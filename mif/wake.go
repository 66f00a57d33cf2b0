package mif

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/mif/netmon"
)

// After the machine sleeps, or when the route to the gateway changes, the
// client asks the gateway at once whether it still knows the session
// (ike.Session.CheckAlive) instead of waiting for DPD: a gateway that
// restarted or expired the IKE SA meanwhile, or a NAT that forgot the
// mapping, would otherwise black-hole the tunnel for the DPD interval and
// its retransmissions. A failed check reconnects at once.

// sleepDetector notices that the machine slept: CLOCK_MONOTONIC stops
// while the machine is suspended, CLOCK_BOOTTIME does not, so between two
// readings the second runs ahead of the first by the time asleep.
type sleepDetector struct {
	read               func() (boot, mono time.Duration)
	lastBoot, lastMono time.Duration
}

// minSleep is the least difference between the two clocks taken for a
// sleep: a loaded machine never delays one reading against the other by
// that much.
const minSleep = 2 * time.Second

// readClocks reads CLOCK_BOOTTIME and CLOCK_MONOTONIC.
func readClocks() (boot, mono time.Duration) {
	var b, m unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &b)
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &m)
	return time.Duration(b.Nano()), time.Duration(m.Nano())
}

func newSleepDetector(read func() (boot, mono time.Duration)) *sleepDetector {
	d := &sleepDetector{read: read}
	d.lastBoot, d.lastMono = read()
	return d
}

// slept returns how long the machine slept since the last call (0 when it
// did not).
func (d *sleepDetector) slept() time.Duration {
	boot, mono := d.read()
	asleep := (boot - d.lastBoot) - (mono - d.lastMono)
	d.lastBoot, d.lastMono = boot, mono
	if asleep < minSleep {
		return 0
	}
	return asleep
}

// watchSleep checks the gateway whenever the machine wakes, until ctx
// ends.
func (c *Client) watchSleep(ctx context.Context) {
	d := newSleepDetector(readClocks)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if asleep := d.slept(); asleep > 0 {
				c.checkGateway(ctx, "the machine woke after "+asleep.Round(time.Second).String())
			}
		}
	}
}

// routeChanged reports whether the default route of the active path's
// interface differs between two snapshots (the interface being in both):
// another router, maybe another NAT, on the way to the gateway.
func routeChanged(before, after netmon.Snapshot, active string) bool {
	a, ok1 := before.Lookup(active)
	b, ok2 := after.Lookup(active)
	if !ok1 || !ok2 {
		return false
	}
	return !a.Default4.Equal(b.Default4) || !a.Default6.Equal(b.Default6)
}

// checkGateway runs one liveness check in the background, unless one is
// running: the session reconnects at once when it fails.
func (c *Client) checkGateway(ctx context.Context, why string) {
	if !c.checking.CompareAndSwap(false, true) {
		return
	}
	c.log.Info(why+": checking that the gateway still knows the session", "gateway", c.cfg.Session.Remote)
	c.background.Go(func() {
		defer c.checking.Store(false)
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		switch err := c.session.CheckAlive(ctx); {
		case err == nil:
			c.log.Info("the gateway answered: the session holds")
		case errors.Is(err, ike.ErrNotEstablished), ctx.Err() != nil:
		default:
			c.log.Warn("the gateway did not answer: reconnecting", "err", err)
		}
	})
}
