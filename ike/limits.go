package ike

import (
	"crypto/sha256"
	"net/netip"
	"slices"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// Defaults of the limits in ResponderConfig.
const (
	defaultMaxHalfOpenPerSource = 128
	defaultSourceDHBudget       = 100 * time.Millisecond // per second and source
	defaultDHBudget             = 500 * time.Millisecond // per second, all sources
	// dhBurst is how many seconds of budget a quiet bucket holds.
	dhBurst = 2
	// staleHalfOpen is how long a half-open IKE SA may wait for its
	// IKE_AUTH before a new request from its source may replace it.
	staleHalfOpen            = 2 * time.Second
	defaultMaxSAsPerIdentity = 4
	// cookieCalmDown is how long after the half-open IKE SAs were last
	// found at the threshold requests that arrive must still bring a
	// cookie. A client that got a COOKIE retries with it, while copies
	// of its first request may still wait in the queue, for seconds when
	// logins are slow: answered without a cookie, one would make a
	// second IKE SA, whose answer the client could take while its
	// IKE_AUTH signs the request with the cookie. So the demand follows
	// a request's arrival, not when the loop gets to it.
	cookieCalmDown = 10 * time.Second
	// maxAuthSources is how many recent source addresses of a client's
	// authenticated messages are remembered.
	maxAuthSources = 4
	// maxResends bounds how often one cached response is sent again.
	maxResends = 8
	// maxSourceBudgets bounds the token bucket table; beyond it new
	// sources wait for the tick to forget idle ones.
	maxSourceBudgets = 1 << 16
	// maxSelectors is the most traffic selectors a TS payload from a
	// client may carry; more are answered with TS_UNACCEPTABLE.
	maxSelectors = 16
	// maxChildPrefixes bounds the prefixes a Child SA's narrowed
	// selectors may come to on either side (or twice the gateway's local
	// selectors, when more): a client's odd ranges cannot make the data
	// plane check thousands of prefixes.
	maxChildPrefixes = 64
)

// sourceOf is the unit the per-source limits count in: the IPv4 address,
// or the IPv6 /64 (one host's or one site's subnet).
func sourceOf(a netip.AddrPort) netip.Prefix {
	addr := a.Addr().Unmap().WithZone("")
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.Prefix(64)
	return p
}

// initKey finds a half-open IKE SA by its initiator's SPI and source, for
// retransmitted IKE_SA_INIT requests.
type initKey struct {
	spiI uint64
	from netip.AddrPort
}

// dhCost is the nominal time the gateway spends on the Diffie-Hellman
// computations of one exchange in group (key generation and shared
// secret), measured on a 2-core x86 server; unknown groups count as the
// dearest.
func dhCost(group uint16) time.Duration {
	switch group {
	case wire.DH_CURVE25519:
		return 150 * time.Microsecond
	case wire.DH_ECP_256:
		return 200 * time.Microsecond
	case wire.DH_ECP_384:
		return time.Millisecond
	}
	return 8 * time.Millisecond // MODP-2048 and anything else
}

// dhBudget is a token bucket of Diffie-Hellman time.
type dhBudget struct {
	left time.Duration // what may be spent now
	at   time.Time
}

// refill adds what rate per second allows since the last refill, up to
// dhBurst seconds' worth.
func (b *dhBudget) refill(now time.Time, rate time.Duration) {
	if d := now.Sub(b.at); d > 0 {
		// In floating point: a new bucket's interval runs from the zero
		// time, and times a large budget it overflows a Duration.
		b.left = time.Duration(min(float64(dhBurst*rate), float64(b.left)+float64(rate)*d.Seconds()))
		b.at = now
	} else if b.at.IsZero() {
		b.left, b.at = dhBurst*rate, now
	}
}

// takeDH reports whether src may make the gateway spend cost on
// Diffie-Hellman now, within its own and the global budget, and spends
// it from both when it may.
func (r *Responder) takeDH(src netip.Prefix, cost time.Duration, now time.Time) bool {
	b := r.budgets[src]
	if b == nil {
		if len(r.budgets) >= maxSourceBudgets {
			return false
		}
		b = &dhBudget{}
		r.budgets[src] = b
	}
	b.refill(now, r.cfg.SourceDHBudget)
	r.dhAll.refill(now, r.cfg.DHBudget)
	if b.left < cost || r.dhAll.left < cost {
		return false
	}
	b.left -= cost
	r.dhAll.left -= cost
	return true
}

// forgetIdleBudgets drops the buckets that are full again: those sources
// are back where a new one starts.
func (r *Responder) forgetIdleBudgets(now time.Time) {
	for src, b := range r.budgets {
		b.refill(now, r.cfg.SourceDHBudget)
		if b.left >= dhBurst*r.cfg.SourceDHBudget {
			delete(r.budgets, src)
		}
	}
}

// demandsCookie reports whether an IKE_SA_INIT request from src that
// arrived at arrived (zero: handed to handle directly, now) must bring a
// cookie: the half-open IKE SAs are at the threshold or src at its share,
// or were when a request was last handled within cookieCalmDown before it
// arrived.
func (r *Responder) demandsCookie(src netip.Prefix, atSourceLimit bool, arrived, now time.Time) bool {
	if len(r.halfOpen) >= r.cfg.CookieThreshold {
		r.cookiesUntil = now.Add(cookieCalmDown)
	}
	if _, known := r.sourceCookies[src]; atSourceLimit && (known || len(r.sourceCookies) < maxSourceBudgets) {
		r.sourceCookies[src] = now.Add(cookieCalmDown)
	}
	if arrived.IsZero() {
		arrived = now
	}
	return atSourceLimit || arrived.Before(r.cookiesUntil) || arrived.Before(r.sourceCookies[src])
}

// addHalfOpen files a new half-open IKE SA.
func (r *Responder) addHalfOpen(sa *rSA) {
	k := saKey{sa.spiI, sa.spiR}
	r.sas[k], r.halfOpen[k] = sa, sa
	r.initIndex[initKey{sa.spiI, sa.from}] = sa
	src := sourceOf(sa.from)
	r.perSource[src] = append(r.perSource[src], sa)
}

// leaveHalfOpen removes sa from the half-open bookkeeping (it
// authenticated, failed or expired); the IKE SA table is left alone.
func (r *Responder) leaveHalfOpen(sa *rSA) {
	k := saKey{sa.spiI, sa.spiR}
	if r.halfOpen[k] != sa {
		return
	}
	delete(r.halfOpen, k)
	if ik := (initKey{sa.spiI, sa.from}); r.initIndex[ik] == sa {
		delete(r.initIndex, ik)
	}
	src := sourceOf(sa.from)
	list := slices.DeleteFunc(r.perSource[src], func(o *rSA) bool { return o == sa })
	if len(list) == 0 {
		delete(r.perSource, src)
	} else {
		r.perSource[src] = list
	}
}

// firstDatagram reports whether m is a whole message or its first
// fragment: the datagram a retransmission is recognised by.
func firstDatagram(m *wire.Message) bool {
	if len(m.Payloads) == 0 {
		return false
	}
	f, ok := m.Payloads[len(m.Payloads)-1].(*wire.EncryptedFragment)
	return !ok || f.Number == 1
}

// isRetransmission reports whether the datagram in, a request with the
// message ID of the last one answered on sa, is a copy of that request
// sent from where it came from, or from another address the client sent
// authenticated messages from lately (a MOBIKE client sends a request
// whose answer was lost on a dead path again on its previous one), so
// that the cached response may go out again. A copy of the request as
// fragments is answered on its first fragment only (RFC 7383 §2.6.1).
func (sa *rSA) isRetransmission(m *wire.Message, in inbound) bool {
	from := in.from == sa.reqFrom || sa.client != nil && slices.Contains(sa.client.authFrom, in.from)
	if sa.lastResp == nil || !from || sa.resends >= maxResends || !firstDatagram(m) {
		return false
	}
	return sha256.Sum256(in.data) == sa.reqSum
}

// tooManySelectors reports whether a TS payload of req carries more
// selectors than a client may ask for.
func tooManySelectors(req []wire.Payload) bool {
	for _, ts := range wire.FindAll[*wire.TS](req) {
		if len(ts.Selectors) > maxSelectors {
			return true
		}
	}
	return false
}

// noteAuthSource records that an authenticated message of c came from
// from: the most recent first, at most maxAuthSources.
func (c *rClient) noteAuthSource(from netip.AddrPort) {
	if len(c.authFrom) > 0 && c.authFrom[0] == from {
		return
	}
	c.authFrom = slices.DeleteFunc(c.authFrom, func(a netip.AddrPort) bool { return a == from })
	c.authFrom = slices.Insert(c.authFrom, 0, from)
	if len(c.authFrom) > maxAuthSources {
		c.authFrom = c.authFrom[:maxAuthSources]
	}
}
