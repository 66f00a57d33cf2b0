// Package ike owns IKEv2 (RFC 7296) above the wire: crypto suites and key
// derivation, the protection of the SK payload, the initiator and
// responder state machines, configuration payloads, NAT traversal,
// rekeying, dead peer detection, MOBIKE (RFC 4555), the MIF extension, and
// EAP in IKE_AUTH (EAP-MSCHAPv2 in both roles, the gateway's users checked
// locally or by a RADIUS server). Messages are encoded and decoded by its
// subpackage ike/wire, the codec.
//
// It imports no other package of the project but ike/wire; the mif package
// wires its results (negotiated keys, traffic selectors, addresses) into
// the data plane.
//
// # Where each exchange lives
//
// Each exchange has one file holding both roles, the initiator's Session
// and the gateway's Responder: ike_sa_init.go, ike_auth.go,
// ike_auth_eap.go, create_child_sa.go (rekeys), informational.go (deletes,
// liveness) and mobike.go (MOBIKE and the MIF extension). Both roles
// dispatch the requests that arrive inside an IKE SA through one function
// (dispatch.go). redirect.go holds RFC 5685 redirects in both roles: a
// full or draining gateway sends clients elsewhere, and the initiator
// follows, make before break. session.go and exchange.go are the initiator's loop and
// retransmissions, responder.go the gateway's.
//
// # MOBIKE and the MIF extension
//
// MOBIKE (RFC 4555) works in both roles, with the MIF extension's paths.
//
// The initiator's session sends its IKE messages on one path at a time: a
// Path is a local socket (its Transport) and the gateway address it sends
// to. The conductor of the session hands it other paths through CheckPath
// (a return routability test, RFC 4555 §3.4 style), UpdateAddresses
// (UPDATE_SA_ADDRESSES, RFC 4555 §3.5: IKE and ESP move to the path) and,
// with a gateway that speaks the MIF extension, AddPath and RemovePath (the
// gateway learns the path's address as it sees it, and ESP may use every
// path at once). These methods are safe to call from any goroutine while
// Run serves: like Deliver, they hand their work to the session's loop,
// which owns the protocol state, and wait for its result.
//
// Message IDs: the IKE window is one request. A request whose first
// transmissions on a path under test go unanswered is not abandoned (the
// gateway may have received it and only the answer was lost): the same
// message is retransmitted on the current path until answered, so both
// sides stay in step, and the path is reported dead. A request that is
// outstanding when UpdateAddresses is called (a DPD or a rekey stuck on a
// dead path) is retransmitted on the new path at once, with a fresh
// retransmission schedule (RFC 4555 lets the initiator retransmit from
// other addresses); what the session sends until the update runs leaves
// there too, and UPDATE_SA_ADDRESSES follows.
//
// The gateway (Responder) answers MOBIKE_SUPPORTED, moves a client's IKE
// and ESP traffic only on UPDATE_SA_ADDRESSES once MOBIKE is negotiated
// (never implicitly), echoes COOKIE2 in every answer and records the
// client's MIF paths.
//
// # Rekeying
//
// Both roles rekey SAs by lifetime (with jitter, so that the two ends
// rarely start at once) and by volume (before a Child SA without extended
// sequence numbers runs out of them); two rekeys of the same SA that cross
// are settled as RFC 7296 §2.8.1 and §2.8.2 say. The gateway starts rekeys
// of each client's Child SA and IKE SA by lifetime, of the Child SA also by
// volume.
//
// # Defences of the Responder
//
// What the Responder does against peers that have not authenticated, or
// that hold a valid credential and misuse it:
//
//   - Half-open IKE SAs are bounded in all (MaxHalfOpen) and per source
//     (MaxHalfOpenPerSource, an IPv4 address or an IPv6 /64). A source at
//     its limit must return a COOKIE, whatever the table's fill, and may
//     then replace its own oldest half-open SA if that one waited over
//     staleHalfOpen for its IKE_AUTH (else the request is dropped and the
//     client retransmits): a host cannot fill the table, a spoofer that
//     filled a victim's share cannot keep it out, and a crowd of clients
//     behind one NAT does not knock out each other's handshakes.
//   - The Diffie-Hellman work IKE_SA_INIT requests cause is paced by
//     token buckets of nominal computing time (dhCost), one per source
//     (SourceDHBudget) and one for all (DHBudget): a MODP-2048 exchange
//     costs milliseconds on the only IKE goroutine, an X25519 one a tenth
//     of a millisecond, so a source forcing MODP gets few, while hundreds
//     of X25519 clients behind one address all get in at once.
//   - A cached response is sent again only for a byte-identical copy of
//     the request it answered, from the address that request came from
//     or the client's current one, a bounded number of times (retransmission, RFC 7296 §2.1): a
//     spoofed or forged "retransmission" reflects nothing.
//   - Failed EAP logins lock the user name and the source out for an
//     exponentially growing time after a few free ones (eap_limits.go).
//   - A full (MaxClients) or draining gateway answers IKE_SA_INIT with
//     REDIRECT or TEMPORARY_FAILURE, keeping no state and computing no
//     Diffie-Hellman: no dearer than a cookie (redirect.go).
//   - Authenticated identities hold at most MaxSAsPerIdentity IKE SAs;
//     INITIAL_CONTACT replaces the older ones (identity.go's Canonical
//     decides what "the same identity" is).
package ike
