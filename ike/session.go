package ike

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// Transport sends IKE messages.
type Transport interface {
	// Send sends msg to the peer. natT says it goes between the UDP
	// encapsulation ports (4500), behind the non-ESP marker.
	Send(msg []byte, to netip.AddrPort, natT bool) error
}

// ChildSA is a negotiated pair of ESP SAs, as the data plane needs them.
type ChildSA struct {
	InSPI, OutSPI uint32
	Algorithm     string // the data plane's name: aes256gcm16, chacha20poly1305, aes256-sha256, ...
	// InKey and OutKey are each direction's keying material: the cipher
	// key followed by the 4-byte salt (AEAD), or the encryption key
	// followed by the integrity key (AES-CBC with an HMAC).
	InKey, OutKey []byte
	// Probe is its probe SA (MIF extension), nil when the peer offered
	// none: probes then travel in the Child SA itself.
	Probe    *ProbeSA
	LocalTS  []netip.Prefix
	RemoteTS []netip.Prefix
	Created  time.Time
	ESN      bool
	// Transport says the peers agreed on transport mode (RFC 7296
	// §1.3.1, transport.go); otherwise the SA is in tunnel mode.
	Transport bool

	switched bool // its outbound SA sends
	// The exchange that created it, to settle a rekey collision (RFC 7296
	// §2.8.1): whether the peer initiated it, the inbound SPI of the SA it
	// replaced (an SPI, not a pointer: a pointer would keep every
	// predecessor alive, a chain that grows by one SA per rekey for the
	// life of the session) and the exchange's nonces (Ni, Nr). The flags
	// and the SPI share a word: a gateway holds a Child SA per client.
	byPeer  bool
	rekeyOf uint32
	nonces  [2][]byte

	retired time.Time // when a rekey replaced it; it is deleted within oldChildGrace
	// rekeyAt is when its lifetime ends (set when first checked, with
	// jitter); retryAt holds off another rekey after one was refused.
	rekeyAt, retryAt instant
	// seqCheckAt (Unix nanoseconds) is the earliest its sequence numbers
	// can reach the rekey limit (sequencesRunningOut).
	seqCheckAt int64
}

// Handler receives what the session negotiated.
type Handler interface {
	// InstallChild makes c's inbound SA receive and, unless it replaces a
	// Child SA whose rekey is not finished, its outbound SA send.
	InstallChild(c *ChildSA) error
	// SwitchOutbound makes c's outbound SA the one that sends.
	SwitchOutbound(c *ChildSA)
	// RemoveChild stops c's inbound SA.
	RemoveChild(c *ChildSA)
	// Configured reports the inner addresses and DNS servers the gateway
	// assigned (configuration payload reply) after IKE_AUTH.
	Configured(addrs []netip.Prefix, dns []netip.Addr) error
}

// Activity is implemented by a Handler whose data plane counts the
// packets each inbound SA accepted: the session's liveness check
// (SessionConfig.DPD) then takes ESP from the gateway as a sign of life,
// as the gateway's does (ResponderActivity), so that a session busy with
// traffic sends no IKE message for it. Its method runs on the session's
// loop.
type Activity interface {
	// Received returns how many packets c's inbound SA has accepted so far.
	Received(c *ChildSA) uint64
}

// RetransmitPolicy says how requests are retransmitted: after Timeout, then
// Timeout*Backoff, ..., Tries sends in all.
type RetransmitPolicy struct {
	Timeout time.Duration
	Backoff float64
	Tries   int
}

func (p RetransmitPolicy) withDefaults() RetransmitPolicy {
	if p.Timeout <= 0 {
		p.Timeout = time.Second
	}
	if p.Backoff < 1 {
		p.Backoff = 1.8
	}
	if p.Tries <= 0 {
		p.Tries = 5
	}
	return p
}

// SessionConfig is what an initiator needs to connect.
type SessionConfig struct {
	Remote  netip.AddrPort // gateway address and IKE port (500, or 4500 to start there)
	LocalID Identity
	// RemoteID is the gateway's expected identity. A gateway that
	// authenticates with a certificate must prove it (and its certificate
	// must be a server's): with the zero value such a gateway is refused.
	// A gateway that proves the pre-shared key is checked against it when
	// it is set.
	RemoteID Identity
	// PSK authenticates with a pre-shared key. Otherwise Key and
	// Certificates (end entity first) sign, and CAs verify the gateway.
	PSK          []byte
	Key          crypto.Signer
	Certificates []*x509.Certificate
	CAs          *TrustStore
	// EAP logs in with EAP-MSCHAPv2 instead (RFC 7296 §2.16); the gateway
	// proves itself with a certificate that CAs vouch for. LocalID may
	// then be the zero value: the EAP identity stands in.
	EAP *EAPCredentials

	IKE []ProposalSpec // IKE SA proposals, in order of preference
	ESP []ProposalSpec // Child SA proposals (a DH group in them is used for PFS on rekey)

	RequestIPv4, RequestIPv6 bool           // ask for inner addresses (configuration payload)
	LocalTS, RemoteTS        []netip.Prefix // default: everything, both families
	// Transport asks for transport mode (USE_TRANSPORT_MODE); the Child
	// SA falls back to tunnel mode when the peer does not agree or the
	// selectors name more than one address on a side (transport.go).
	Transport  bool
	Retransmit RetransmitPolicy
	// ChildRekey and IKERekey start rekeying that long after creation,
	// less up to 10% of random jitter so that the two ends rarely start
	// at once; 0 leaves rekeying to the gateway.
	ChildRekey, IKERekey time.Duration
	// RekeySequences rekeys a Child SA without extended sequence numbers
	// once the last sequence number it sent or the highest it received
	// passes it, whatever ChildRekey says (read through the Handler when
	// it implements SequenceCounter); 0 means DefaultRekeySequences.
	RekeySequences uint64
	// DPD sends a liveness check after that long without a message from
	// the gateway (an IKE message, or an ESP packet when the Handler
	// implements Activity); 0 means 10 s.
	DPD time.Duration
	// ReconnectDelay is the pause before reconnecting after the gateway was
	// lost; 0 means 1 s. Each attempt the gateway refuses (authentication,
	// proposals, selectors: anything but silence) doubles the pause, up to
	// MaxReconnectDelay; a gateway that does not answer is tried again
	// after ReconnectDelay, its retransmissions having paced the attempt.
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the pause; 0 means defaultMaxReconnectDelay.
	MaxReconnectDelay time.Duration
	// DisableRedirect leaves REDIRECT_SUPPORTED out of IKE_SA_INIT and
	// ignores the gateway's REDIRECTs (RFC 5685, redirect.go).
	DisableRedirect bool
	// WaitToConnect, when set, is called before each attempt Run makes
	// to connect, and the attempt waits until it returns nil: a host that
	// also answers its peer (mifsec peer) does not start a second IKE SA
	// while the peer's is up. An error ends Run.
	WaitToConnect func(ctx context.Context) error
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	MobilityConfig
}

// Errors a user sees when connecting fails.
var (
	ErrAuthFailed       = errors.New("authentication failed")
	ErrNoProposalChosen = errors.New("no proposal chosen")
	ErrTimeout          = errors.New("gateway did not answer")
	// ErrUnavailable: the gateway is full or draining and named no other
	// gateway to go to (TEMPORARY_FAILURE to IKE_SA_INIT, redirect.go).
	ErrUnavailable = errors.New("gateway unavailable")
)

// inbound is a received datagram.
type inbound struct {
	data  []byte
	local netip.Addr // the gateway's address it arrived at (responder only)
	from  netip.AddrPort
	natT  bool
	at    time.Time // when an IKE_SA_INIT request reached the responder (its cookie demand)
}

// Session is one initiator's connection to a gateway: it sets up an IKE SA
// and one
// Child SA (IKE_SA_INIT, IKE_AUTH with a configuration request), keeps them
// alive (retransmissions, dead peer detection, rekeying in both roles) and
// hands the Child SAs' keys to a Handler, which installs them in the data
// plane. When the gateway goes away it reconnects.
//
// The session runs in one goroutine (Run). Datagrams arrive through Deliver
// from whatever reads the sockets, leave through a Transport. It is shaped
// as one loop so that the protocol state needs no lock: the loop owns it.
type Session struct {
	cfg     SessionConfig
	tr      Transport
	h       Handler
	log     *slog.Logger
	inbox   chan inbound
	drop    chan struct{}     // Drop: delete the IKE SA and connect again
	hurry   chan chan<- error // CheckAlive: an outstanding request retransmits as a liveness check and reports (exchange)
	natT    bool              // talking on port 4500
	remote  netip.AddrPort    // where requests go
	sa      *ikeSA
	oldSAs  []*ikeSA // rekeyed IKE SAs waiting for their Delete
	child   *ChildSA
	oldKids []*ChildSA      // rekeyed Child SAs kept for inbound until deleted
	mob     sessionMobility // paths, MOBIKE and MIF (mobike.go)
	espSeen uint64          // ESP packets the Child SAs had accepted at the last read (Activity)
	lastESP time.Time       // when espSeen last grew
	espRead time.Time       // when espSeen was last read

	statusMu sync.Mutex
	status   Status

	// rekeying is the rekey this side has started and awaits the answer
	// to: the gateway's rekey of the other kind is refused meanwhile.
	rekeying rekeyKind

	// Redirects (redirect.go): when we followed them lately, the gateway
	// that sent us to the current one (until we connected there), and
	// the gateway the handler last learnt ESP goes to.
	redirects      []time.Time
	redirectedFrom netip.Addr
	toldGateway    netip.AddrPort
	keepAddrs      []netip.Prefix // the inner addresses to ask the new gateway for
}

// Status is a snapshot of a session for `mifsec status`.
type Status struct {
	State       string    `json:"state"`
	Gateway     string    `json:"gateway"`
	IKESPIi     string    `json:"ike_spi_i,omitempty"`
	IKESPIr     string    `json:"ike_spi_r,omitempty"`
	IKESuite    string    `json:"ike_suite,omitempty"`
	Weak        []string  `json:"weak,omitempty"` // weak algorithms negotiated (WeakAlgorithms)
	Established time.Time `json:"established,omitzero"`
	IKERekeys   int       `json:"ike_rekeys"`
	ChildRekeys int       `json:"child_rekeys"`
	Reconnects  int       `json:"reconnects"`
	// Redirects counts the gateways' redirects the session followed
	// (RFC 5685); RedirectedFrom is the gateway that sent it to Gateway
	// last.
	Redirects      int    `json:"redirects,omitempty"`
	RedirectedFrom string `json:"redirected_from,omitempty"`
	// Failures counts the IKE SAs that could not be set up or were lost,
	// by reason (Fail*).
	Failures  map[string]uint64 `json:"failures,omitempty"`
	Child     *ChildStatus      `json:"child,omitempty"`
	Addresses []string          `json:"addresses,omitempty"`
	DNS       []string          `json:"dns,omitempty"`
	LastError string            `json:"last_error,omitempty"`
	MobilityStatus
}

// ChildStatus describes the current Child SA: SPIs in hex, the
// algorithm, the traffic selectors.
type ChildStatus struct {
	InSPI     string   `json:"in_spi"`
	OutSPI    string   `json:"out_spi"`
	Algorithm string   `json:"algorithm"`
	Mode      string   `json:"mode"` // "tunnel" or "transport"
	LocalTS   []string `json:"local_ts"`
	RemoteTS  []string `json:"remote_ts"`
	// ProbeInSPI and ProbeOutSPI are its probe SA's (ProbeSA), empty
	// when it has none.
	ProbeInSPI  string `json:"probe_in_spi,omitempty"`
	ProbeOutSPI string `json:"probe_out_spi,omitempty"`
}

// NewSession checks cfg and returns a session that does not run yet.
func NewSession(cfg SessionConfig, tr Transport, h Handler) (*Session, error) {
	if !cfg.Remote.IsValid() {
		return nil, errors.New("no gateway address")
	}
	if cfg.EAP != nil {
		if len(cfg.PSK) > 0 || cfg.Key != nil {
			return nil, errors.New("EAP and a pre-shared key or private key exclude each other")
		}
		if cfg.CAs == nil {
			return nil, errors.New("EAP needs the CAs that vouch for the gateway's certificate")
		}
		if cfg.LocalID.Type == 0 {
			cfg.LocalID = eapIdentity(cfg.EAP.Identity)
		}
	}
	if err := checkCredentials(len(cfg.PSK) > 0 || cfg.EAP != nil, cfg.Key, cfg.Certificates, cfg.IKE, cfg.ESP, cfg.LocalID); err != nil {
		return nil, err
	}
	if err := checkPaths(&cfg, tr); err != nil { // mobike.go
		return nil, err
	}
	cfg.Retransmit = cfg.Retransmit.withDefaults()
	if cfg.DPD == 0 {
		cfg.DPD = 10 * time.Second
	}
	if cfg.RekeySequences == 0 {
		cfg.RekeySequences = DefaultRekeySequences
	}
	if cfg.ReconnectDelay == 0 {
		cfg.ReconnectDelay = time.Second
	}
	if cfg.MaxReconnectDelay == 0 {
		cfg.MaxReconnectDelay = defaultMaxReconnectDelay
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.RemoteTS) == 0 {
		cfg.RemoteTS = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	if len(cfg.LocalTS) == 0 {
		cfg.LocalTS = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Session{cfg: cfg, tr: tr, h: h, log: log, inbox: make(chan inbound, 64), drop: make(chan struct{}, 1), hurry: make(chan chan<- error, 1), remote: cfg.Remote, mob: newSessionMobility(&cfg),
		toldGateway: cfg.Remote}
	s.status.State = "connecting"
	s.status.Gateway = cfg.Remote.String()
	s.publishMobility()
	return s, nil
}

// Deliver hands the session a datagram received from the gateway (without
// the non-ESP marker). It copies data and never blocks: when the session
// is behind, the datagram is dropped, as the network might have.
func (s *Session) Deliver(data []byte, from netip.AddrPort, natT bool) {
	select {
	case s.inbox <- inbound{data: slices.Clone(data), from: from, natT: natT}:
	default:
	}
}

// Status returns a snapshot of the session.
func (s *Session) Status() Status {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	st := s.status
	st.Failures = maps.Clone(st.Failures)
	return st
}

func (s *Session) setStatus(f func(*Status)) {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	f(&s.status)
}

// Connect runs IKE_SA_INIT and IKE_AUTH and installs the first Child SA.
// Errors say what failed in words a user understands.
func (s *Session) Connect(ctx context.Context) error {
	err := s.connect(ctx, true)
	if err != nil {
		s.setStatus(func(st *Status) {
			st.State, st.LastError = "failed", err.Error()
			countFailure(st, err)
		})
	}
	return err
}

// countFailure counts err, which ended or prevented an IKE SA, in
// st.Failures.
func countFailure(st *Status, err error) {
	if st.Failures == nil {
		st.Failures = map[string]uint64{}
	}
	st.Failures[errorFailure(err)]++
}

// Run keeps the session up until ctx ends, then deletes the IKE SA. It
// reconnects when the gateway is lost. Without a Connect first, it starts
// by connecting, and tries until it succeeds.
func (s *Session) Run(ctx context.Context) error {
	connected := s.sa != nil
	for {
		pause := time.Duration(0)
		if connected {
			err := s.serve(ctx)
			if ctx.Err() != nil {
				s.shutdown()
				return nil
			}
			var redirect *redirectError
			if errors.As(err, &redirect) {
				// Make before break (redirect.go): on failure the old IKE
				// SA serves on; its gateway deletes it in the end.
				if err := s.moveTo(ctx, redirect.to); err != nil {
					s.log.Warn("not following the gateway's redirect", "to", redirect.to, "err", err)
				}
				if s.sa != nil {
					continue
				}
				err = fmt.Errorf("following the redirect to %s: %w", redirect.to, ctx.Err())
			}
			switch {
			case errors.Is(err, errDropped):
				s.log.Info("IKE SA deleted: the peer's own stays", "gateway", s.cfg.Remote)
				s.deleteIKESA(s.sa)
			default:
				s.log.Warn("connection to gateway lost, reconnecting", "gateway", s.cfg.Remote, "err", err)
				pause = s.cfg.ReconnectDelay
				if errors.Is(err, errGatewaySilent) {
					pause = 0 // a check asked for because the network changed
				}
			}
			s.teardown()
			s.setStatus(func(st *Status) {
				st.State = "reconnecting"
				if !errors.Is(err, errDropped) {
					st.LastError = err.Error()
					countFailure(st, err)
				}
			})
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pause):
			}
			select {
			case <-s.drop: // a Drop while not connected asks nothing
			default:
			}
			if s.cfg.WaitToConnect != nil {
				if err := s.cfg.WaitToConnect(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
			if err := s.connect(ctx, true); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				pause = nextReconnectPause(pause, err, s.cfg.ReconnectDelay, s.cfg.MaxReconnectDelay)
				s.log.Warn("reconnecting failed", "err", err, "next_attempt_in", pause.Round(time.Millisecond))
				s.setStatus(func(st *Status) {
					st.LastError = err.Error()
					countFailure(st, err)
				})
				continue
			}
			if connected {
				s.setStatus(func(st *Status) { st.Reconnects++ })
			}
			connected = true
			break
		}
	}
}

// errDropped ends serve when Drop asked for the IKE SA to go.
var errDropped = errors.New("IKE SA dropped: the peer's IKE SA is kept instead")

// Drop deletes the IKE SA (telling the peer) and makes Run connect again,
// after WaitToConnect: for a host that holds two IKE SAs with its peer,
// one in each role, and keeps the other (mifsec peer). Without an IKE SA
// it does nothing.
func (s *Session) Drop() {
	select {
	case s.drop <- struct{}{}:
	default:
	}
}

// defaultMaxReconnectDelay caps the pause between reconnection attempts
// the gateway refuses.
const defaultMaxReconnectDelay = 2 * time.Minute

// nextReconnectPause returns the pause after an attempt that failed with
// err: twice the last one up to max (less up to 10% of jitter, so that the
// clients a gateway refused together do not come back together) when the
// gateway refused; base when it did not answer.
func nextReconnectPause(last time.Duration, err error, base, max time.Duration) time.Duration {
	if errorFailure(err) == FailTimeout {
		return base
	}
	return jittered(min(2*last, max))
}

// teardown forgets the IKE SA and removes its Child SAs from the data
// plane; the keys of all are wiped.
func (s *Session) teardown() {
	for _, c := range s.oldKids {
		s.h.RemoveChild(c)
		c.Wipe()
	}
	if s.child != nil {
		s.h.RemoveChild(s.child)
		s.child.Wipe()
	}
	s.sa.wipe()
	for _, sa := range s.oldSAs {
		sa.wipe()
	}
	s.child, s.oldKids, s.sa, s.oldSAs = nil, nil, nil, nil
	s.espSeen, s.lastESP, s.espRead = 0, time.Time{}, time.Time{}
	s.natT = false
	s.remote = s.cfg.Remote
}

// CheckAlive sends a liveness check at once, retransmitted quickly
// (aliveCheckPolicy: about a second in all), for when the session has
// reason to doubt the gateway still knows it: the machine woke from sleep,
// the route to the gateway changed. A gateway that does not answer is
// lost: the session reconnects at once, without the usual pause, and
// CheckAlive returns an error matching ErrTimeout. Without an IKE SA it
// returns ErrNotEstablished.
func (s *Session) CheckAlive(ctx context.Context) error {
	// A request already outstanding (a DPD, a rekey) would keep the
	// check waiting through its whole retransmission schedule, a minute
	// and more: it is the check, and retransmits as one now.
	hurried := make(chan error, 1)
	select {
	case s.hurry <- hurried:
	default:
	}
	return s.callOr(ctx, hurried, func(loop context.Context, r *callResult) error {
		s.dropStaleHurry()
		if s.sa == nil {
			r.set(ErrNotEstablished)
			return nil
		}
		if _, err := s.exchange(loop, s.sa, wire.INFORMATIONAL, nil, aliveCheckPolicy); err != nil {
			return fmt.Errorf("%w: %w", errGatewaySilent, err) // ends serve: reconnect
		}
		return nil
	})
}

// dropStaleHurry forgets a CheckAlive's hurry that found no request
// outstanding: it must not cut a later one short.
func (s *Session) dropStaleHurry() {
	select {
	case <-s.hurry:
	default:
	}
}

// aliveCheckPolicy paces CheckAlive's retransmissions.
var aliveCheckPolicy = RetransmitPolicy{Timeout: 300 * time.Millisecond, Backoff: 1, Tries: 3}

// errGatewaySilent marks a session lost because CheckAlive went
// unanswered: it reconnects without a pause.
var errGatewaySilent = errors.New("the gateway did not answer a liveness check")

// deleteIKESA deletes sa at the gateway: one exchange, retransmitted
// briefly, since nothing is lost if the gateway never hears it.
func (s *Session) deleteIKESA(sa *ikeSA) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	policy := RetransmitPolicy{Timeout: time.Second, Backoff: 1, Tries: 2}
	if _, err := s.exchange(ctx, sa, wire.INFORMATIONAL, []wire.Payload{&wire.Delete{Protocol: wire.ProtoIKE}}, policy); err != nil {
		s.log.Debug("deleting IKE SA", "err", err)
	}
}

// shutdown deletes the IKE SA at the gateway (one try) and tears down.
func (s *Session) shutdown() {
	if s.sa != nil {
		s.deleteIKESA(s.sa)
	}
	s.teardown()
	s.setStatus(func(st *Status) { st.State = "closed" })
}

// serve answers the gateway's requests and runs our own timers until the
// gateway is lost or ctx ends.
//
// Its timer is set after every event to the first time tick has something
// to do (nextTick), not to a fixed beat: an idle client wakes once per
// liveness interval, not every second. A laptop's client sleeps
// longer, and one mifsec bench clients process holding 15,000 idle
// sessions used 11-13% of a core ticking (ten such fleets of 10,000,
// 100,000 wakes a second).
func (s *Session) serve(ctx context.Context) error {
	timer := time.NewTimer(s.untilTick(s.cfg.Now()))
	defer timer.Stop()
	s.dropStaleHurry()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case in := <-s.inbox:
			if err := s.handle(in, nil); err != nil {
				return err
			}
		case <-timer.C:
			if err := s.tick(ctx); err != nil {
				return err
			}
			// A check that could not start (a rekey refused, say) is
			// not tried again in a loop: a second at least.
			timer.Reset(max(s.untilTick(s.cfg.Now()), time.Second))
			continue
		case f := <-s.mob.calls: // CheckPath, UpdateAddresses, AddPath, RemovePath
			if err := f(ctx); err != nil {
				return err
			}
		case <-s.drop:
			return errDropped
		}
		timer.Reset(s.untilTick(s.cfg.Now()))
	}
}

// untilTick is how long from now until nextTick.
func (s *Session) untilTick(now time.Time) time.Duration {
	return max(s.nextTick(now).Sub(now), 0)
}

// nextTick is when tick next has something to do: the first of its checks
// in time, and no later than clientVisitMax from now (the responder's
// longest wait too).
func (s *Session) nextTick(now time.Time) time.Time {
	due := now.Add(clientVisitMax)
	at := func(t time.Time) {
		if t.Before(due) {
			due = t
		}
	}
	sa := s.sa
	if sa == nil {
		return due
	}
	if t, ok := sa.nextRekeyCheck(s.cfg.IKERekey); ok {
		at(t)
	}
	if c := s.child; c != nil {
		if t, ok := c.nextRekeyCheck(s.cfg.ChildRekey, s.h); ok {
			at(t)
		}
		if !c.switched {
			at(c.Created.Add(switchDelay))
		}
	}
	at(s.heardFrom(sa).Add(s.cfg.DPD))
	if _, ok := s.h.(Activity); ok && !s.lastESP.IsZero() && now.Sub(s.lastESP) < s.cfg.DPD {
		// ESP came in within the last interval: the counters are read
		// every second, so that a gateway whose packets stop is checked
		// an interval after them, a second late at most. Without ESP
		// the interval alone wakes the session (lastSign).
		at(s.espRead.Add(espReadWhileActive))
	}
	return due
}

// espReadWhileActive is how often a session reads its Child SAs' inbound
// ESP counters while they grow (Activity).
const espReadWhileActive = time.Second

// tick runs what is due: DPD, rekeys, expiry of old Child SAs.
func (s *Session) tick(ctx context.Context) error {
	now := s.cfg.Now()
	sa := s.sa
	switch {
	case sa.rekeyDue(s.cfg.IKERekey, now):
		return s.rekeyIKE(ctx)
	case s.child != nil && s.child.rekeyDue(s.cfg.ChildRekey, s.cfg.RekeySequences, s.h, now):
		return s.rekeyChild(ctx)
	case s.child != nil && !s.child.switched && now.Sub(s.child.Created) >= switchDelay:
		// The gateway rekeyed but has not deleted the old SA yet.
		s.h.SwitchOutbound(s.child)
		s.child.switched = true
	case now.Sub(s.lastSign(sa, now)) >= s.cfg.DPD:
		_, err := s.exchange(ctx, sa, wire.INFORMATIONAL, nil, s.cfg.Retransmit)
		return err
	}
	return nil
}

// lastSign returns when the gateway was last heard from on sa: an IKE
// message, or an ESP packet its Child SAs accepted (read now, when the
// Handler implements Activity).
func (s *Session) lastSign(sa *ikeSA, now time.Time) time.Time {
	if a, ok := s.h.(Activity); ok {
		var n uint64
		if s.child != nil {
			n += a.Received(s.child)
		}
		for _, k := range s.oldKids {
			n += a.Received(k)
		}
		if n != s.espSeen {
			seen := now
			if now.Sub(s.espRead) > espReadWhileActive {
				// Unread for longer (an idle session, see nextTick): the
				// packets may have come just after that read. Counted
				// as of the later of that read and an interval less a
				// second ago, the session reads again a second on and
				// checks then if nothing more came: an interval and a
				// second after the packet at most, and not at all
				// while the packets go on.
				seen = now.Add(espReadWhileActive - s.cfg.DPD)
				if s.espRead.After(seen) {
					seen = s.espRead
				}
				if seen.After(now) {
					seen = now
				}
			}
			s.espSeen, s.lastESP = n, seen
		}
		s.espRead = now
	}
	return s.heardFrom(sa)
}

// heardFrom is the later of sa's last IKE message from the gateway and
// the last ESP the counters showed, as of their last read.
func (s *Session) heardFrom(sa *ikeSA) time.Time {
	if s.lastESP.After(sa.lastHeard) {
		return s.lastESP
	}
	return sa.lastHeard
}

// ikeSA is the state of one IKE SA.
type ikeSA struct {
	spiI, spiR uint64
	initiator  bool // we are the original initiator of this IKE SA
	fragOK     bool // peer supports RFC 7383 (beside initiator and the suite's 14 bytes: one word less per IKE SA)
	suite      Suite
	keys       *ikeKeys
	ni, nr     []byte
	nextOut    uint32   // message ID of our next request
	nextIn     uint32   // message ID of the gateway's next request
	lastResp   [][]byte // the last response we sent, for retransmitted requests; the responder's answeredEmpty for an empty INFORMATIONAL one (sealed again when asked)
	lastHeard  time.Time
	created    time.Time
	reasm      *wire.Reassembler
	rekeyOf    ikeSAID // the IKE SA this one replaced (RFC 7296 §2.18); by SPIs, not a pointer, for the reason ChildSA.rekeyOf gives
	// rekeyAt is when its lifetime ends (set when first checked, with
	// jitter); retryAt holds off another rekey after one was refused.
	rekeyAt, retryAt instant
}

// flags returns the header flags of a message we send on sa.
func (sa *ikeSA) flags(response bool) uint8 {
	var f uint8
	if sa.initiator {
		f |= wire.FlagInitiator
	}
	if response {
		f |= wire.FlagResponse
	}
	return f
}

// randomSPI returns a random non-zero 64-bit SPI.
func randomSPI() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// randomESPSPI returns a random SPI of 256 or more. A client draws its
// inbound SPIs so; a gateway, whose clients share one SPI space, draws
// among the free ones (Responder.drawInboundSPI).
func randomESPSPI() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if v := binary.BigEndian.Uint32(b[:]); v >= 256 {
			return v
		}
	}
}

func nonce() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// fmtErr turns an error notification into the error a user reads.
func notifyError(n *wire.Notify, exchange string) error {
	switch n.NotifyType {
	case wire.AUTHENTICATION_FAILED:
		return fmt.Errorf("%w: the gateway rejected our credentials (%s)", ErrAuthFailed, exchange)
	case wire.NO_PROPOSAL_CHOSEN:
		return fmt.Errorf("%w: the gateway accepted none of the proposals offered in %s", ErrNoProposalChosen, exchange)
	case wire.TS_UNACCEPTABLE:
		return fmt.Errorf("the gateway accepted none of the traffic selectors (%s)", exchange)
	case wire.INTERNAL_ADDRESS_FAILURE:
		return fmt.Errorf("the gateway could not assign an inner address (%s)", exchange)
	case wire.FAILED_CP_REQUIRED:
		return fmt.Errorf("the gateway requires a configuration request (%s)", exchange)
	case wire.TEMPORARY_FAILURE:
		if exchange == "IKE_SA_INIT" {
			return fmt.Errorf("%w: the gateway is full or draining and named no other gateway (TEMPORARY_FAILURE to %s)", ErrUnavailable, exchange)
		}
		return fmt.Errorf("%w: the gateway could not take the client now (TEMPORARY_FAILURE to %s)", ErrUnavailable, exchange)
	}
	return fmt.Errorf("the gateway answered %s with error notification %d", exchange, n.NotifyType)
}

// ikeSAID names an IKE SA by its SPIs; the zero value names none.
type ikeSAID struct{ spiI, spiR uint64 }

// id returns sa's SPIs as an ikeSAID.
func (sa *ikeSA) id() ikeSAID { return ikeSAID{sa.spiI, sa.spiR} }

// replaced reports whether sa was created by a rekey of old.
func (sa *ikeSA) replaced(old *ikeSA) bool { return old != nil && sa.rekeyOf == old.id() }

// replaced reports whether c was created by a rekey of old.
func (c *ChildSA) replaced(old *ChildSA) bool { return old != nil && c.rekeyOf == old.InSPI }

func (st *Status) setChild(c *ChildSA) {
	if c == nil {
		st.Child = nil
		return
	}
	st.Child = &ChildStatus{InSPI: fmt.Sprintf("%08x", c.InSPI), OutSPI: fmt.Sprintf("%08x", c.OutSPI), Algorithm: c.Algorithm, Mode: c.mode()}
	if c.Probe != nil {
		st.Child.ProbeInSPI, st.Child.ProbeOutSPI = fmt.Sprintf("%08x", c.Probe.InSPI), fmt.Sprintf("%08x", c.Probe.OutSPI)
	}
	for _, p := range c.LocalTS {
		st.Child.LocalTS = append(st.Child.LocalTS, p.String())
	}
	for _, p := range c.RemoteTS {
		st.Child.RemoteTS = append(st.Child.RemoteTS, p.String())
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
