package ike

import (
	"container/heap"
	"time"
)

// The responder's per-client timers: a heap of clients ordered by when
// each next needs the loop's attention (the first of its retransmission,
// its new Child SA's switch, an old Child SA's grace, a rekey, a liveness
// check). The once-a-second tick pops only the clients that are due,
// runs their checks and puts them back at their next time. It walked
// every client each second: in a CPU profile of a 100,000-client run the
// tick took 12.9 s against the 61 s of answering messages, 7.8 s of it
// reading each client's ESP counters for liveness.
//
// Whatever moves a client's next time earlier wakes it (rescheduleClient):
// a request it was sent (requestOn), a message of its own (handle), its
// admission (addClient). Everything else only moves times later, which a
// visit finds. No client waits longer than clientVisitMax between visits,
// so a time moved earlier by a path this list misses is late by at most
// that.

// clientVisitMax is the longest a client goes without a visit of the
// tick, and a Session's timer without firing (Session.nextTick).
const clientVisitMax = 30 * time.Second

// switchDelay is how long after its creation a rekeyed Child SA takes the
// outbound traffic when the other end has not deleted the old one (it has
// installed the new one by then): at the gateway and at the client.
const switchDelay = 2 * time.Second

// clientTimers is a min-heap of clients by rClient.due; rClient.timer is
// each one's index plus one (0: not in the heap, the zero value).
type clientTimers []*rClient

func (h clientTimers) Len() int           { return len(h) }
func (h clientTimers) Less(i, j int) bool { return h[i].due < h[j].due }
func (h clientTimers) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].timer, h[j].timer = int32(i+1), int32(j+1)
}
func (h *clientTimers) Push(x any) {
	c := x.(*rClient)
	*h = append(*h, c)
	c.timer = int32(len(*h))
}
func (h *clientTimers) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.timer = 0
	return c
}

// rescheduleClient sets c's next visit from its state at now.
func (r *Responder) rescheduleClient(c *rClient, now time.Time) {
	if c.dropped {
		return
	}
	c.due = instantOf(r.nextVisit(c, now))
	if c.timer == 0 {
		heap.Push(&r.timers, c)
	} else {
		heap.Fix(&r.timers, int(c.timer-1))
	}
}

// unscheduleClient takes c out of the timers.
func (r *Responder) unscheduleClient(c *rClient) {
	if c.timer != 0 {
		heap.Remove(&r.timers, int(c.timer-1))
	}
}

// nextVisit is when the tick next has something to do for c: the checks
// of tick, in time.
func (r *Responder) nextVisit(c *rClient, now time.Time) time.Time {
	due := now.Add(clientVisitMax)
	at := func(t time.Time) {
		if t.Before(due) {
			due = t
		}
	}
	if k := c.child; k != nil && !k.switched {
		at(k.Created.Add(switchDelay))
	}
	if p := c.pending; p != nil {
		// Every other check waits for the answer or the last try.
		at(p.next)
		return due
	}
	if c.sa == nil {
		return due
	}
	if len(c.mob.checks) > 0 || c.mob.announce {
		at(now)
	}
	for _, old := range c.oldKids {
		if !old.retired.IsZero() {
			at(old.retired.Add(oldChildGrace))
		}
	}
	if k := c.child; k != nil && k.switched && len(c.oldKids) == 0 {
		if t, ok := k.nextRekeyCheck(r.cfg.ChildRekey, r.h); ok {
			at(t)
		}
	}
	if t, ok := c.sa.nextRekeyCheck(r.cfg.IKERekey); ok {
		at(t)
	}
	if r.cfg.DPD > 0 {
		last := c.sa.lastHeard
		if c.lastESP.time().After(last) {
			last = c.lastESP.time()
		}
		at(last.Add(r.cfg.DPD))
		if _, ok := r.h.(ResponderActivity); ok {
			// The ESP counters, read again half an interval on: a
			// client whose packets stopped just after a read is
			// checked half an interval late at most.
			at(c.espRead.time().Add(r.cfg.DPD / 2))
		}
	}
	return due
}

// visitDueClients runs the checks of every client whose time has come
// and puts each back at its next.
func (r *Responder) visitDueClients(now time.Time) {
	at := instantOf(now)
	for len(r.timers) > 0 && r.timers[0].due <= at {
		c := r.timers[0]
		r.visitClient(c, now)
		if c.dropped {
			continue // dropClient took it out
		}
		r.rescheduleClient(c, now)
		if c.due <= at {
			// A check that could not start (no key share ready, say)
			// is tried again at the next tick, not in a loop now.
			c.due = instantOf(now.Add(time.Second))
			heap.Fix(&r.timers, int(c.timer-1))
		}
	}
}
