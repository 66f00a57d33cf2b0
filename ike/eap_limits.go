package ike

import (
	"fmt"
	"net/netip"
	"time"
)

// Failed EAP logins are counted per EAP user name and per source (an IPv4
// address or an IPv6 /64, as the other per-source limits). The first
// eapFreeFailures in a row cost nothing (a user who mistypes is served
// right after); each one after locks the name and the source out for an
// exponentially growing time: 1 s, 2 s, 4 s... up to maxEAPLockout. A
// password guessed while the name or the source is locked out is not
// checked; it is refused at once. The guesses are checked one at a time on
// the Responder's loop, so an attacker gains nothing by opening IKE SAs in
// parallel: after the free ones it can test about a dozen passwords an
// hour against a name, and other names and sources are not affected. A
// successful login clears its name's and its source's count; a count left
// alone for eapFailureMemory is forgotten.

const (
	eapFreeFailures  = 3
	maxEAPLockout    = 5 * time.Minute
	eapFailureMemory = time.Hour
	// maxEAPFailureRecords bounds each table; beyond it new names or
	// sources are not counted (the other table still is).
	maxEAPFailureRecords = 1 << 16
)

// eapFailures counts the failed logins of one name or source.
type eapFailures struct {
	count int
	last  time.Time // of the last failure
	until time.Time // locked out until
}

// eapLockout is the lockout after the n-th failure in a row.
func eapLockout(n int) time.Duration {
	switch n -= eapFreeFailures; {
	case n <= 0:
		return 0
	case n > 20:
		return maxEAPLockout
	default:
		return min(time.Second<<(n-1), maxEAPLockout)
	}
}

// eapLimits holds the counts by name and by source.
type eapLimits struct {
	byName   map[string]*eapFailures
	bySource map[netip.Prefix]*eapFailures
}

// lockedOut says why a guess for name from from may not be checked now
// ("" when it may).
func (l *eapLimits) lockedOut(name string, from netip.AddrPort, now time.Time) string {
	if f := l.byName[name]; f != nil && now.Before(f.until) {
		return fmt.Sprintf("EAP user %s locked out for %v after %d failed logins", Printable(name), f.until.Sub(now).Round(time.Second), f.count)
	}
	if f := l.bySource[sourceOf(from)]; f != nil && now.Before(f.until) {
		return fmt.Sprintf("source %s locked out for %v after %d failed logins", sourceOf(from), f.until.Sub(now).Round(time.Second), f.count)
	}
	return ""
}

// failed counts a wrong password (or unknown user) and returns the
// longer of the two lockouts it starts.
func (l *eapLimits) failed(name string, from netip.AddrPort, now time.Time) time.Duration {
	if l.byName == nil {
		l.byName, l.bySource = map[string]*eapFailures{}, map[netip.Prefix]*eapFailures{}
	}
	lockout := addEAPFailure(l.byName, name, now)
	return max(lockout, addEAPFailure(l.bySource, sourceOf(from), now))
}

func addEAPFailure[K comparable](table map[K]*eapFailures, k K, now time.Time) time.Duration {
	f := table[k]
	if f == nil {
		if len(table) >= maxEAPFailureRecords {
			return 0
		}
		f = &eapFailures{}
		table[k] = f
	}
	f.count++
	f.last = now
	lockout := eapLockout(f.count)
	f.until = now.Add(lockout)
	return lockout
}

// succeeded clears the counts of name and its source.
func (l *eapLimits) succeeded(name string, from netip.AddrPort) {
	delete(l.byName, name)
	delete(l.bySource, sourceOf(from))
}

// forget drops the counts whose last failure is eapFailureMemory old.
func (l *eapLimits) forget(now time.Time) {
	for k, f := range l.byName {
		if now.Sub(f.last) >= eapFailureMemory {
			delete(l.byName, k)
		}
	}
	for k, f := range l.bySource {
		if now.Sub(f.last) >= eapFailureMemory {
			delete(l.bySource, k)
		}
	}
}
