package ike

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// A gateway's side of IKEv2: the Responder answers many clients' IKE SAs
// (IKE_SA_INIT, IKE_AUTH with a configuration reply, INFORMATIONAL,
// CREATE_CHILD_SA rekeys) and hands each client's Child SAs to a
// ResponderHandler.
//
// The Responder runs in one goroutine (Run), like the initiator's Session:
// datagrams arrive through Deliver, which copies and never blocks, so that
// the data plane's receive worker that hands over IKE messages on port
// 4500 never waits for a Diffie-Hellman computation or a signature. The
// loop owns every IKE SA, the address pools and the half-open table, so
// none of them needs a lock; handshakes are serialised on one core, which
// is far more than a gateway's IKE rate needs (200 clients starting at once
// are all established within 0.4 s on a 2-core host, docs/ike.md).

// Client describes one authenticated client to the ResponderHandler.
type Client struct {
	ID        Identity
	Remote    netip.AddrPort // where its IKE messages and ESP come from
	Addresses []netip.Prefix // leased inner addresses
	IKESPIi   uint64
	IKESPIr   uint64
}

// ResponderHandler installs what the Responder negotiated with clients.
// Its methods run on the Responder's loop.
type ResponderHandler interface {
	// InstallChild makes c's inbound SA receive (from c.RemoteTS only) and,
	// when send is true, its outbound SA carry traffic to c.RemoteTS to
	// client.Remote.
	InstallChild(client *Client, c *ChildSA, send bool) error
	// SwitchOutbound makes c the SA that sends to the client, replacing
	// the one it rekeyed.
	SwitchOutbound(client *Client, c *ChildSA)
	// RemoveChild stops c, both directions.
	RemoveChild(client *Client, c *ChildSA)
}

// ResponderActivity is implemented by a ResponderHandler whose data plane
// counts the packets each Child SA receives: the liveness checks
// (ResponderConfig.DPD) then take ESP from a client as a sign of life, so
// that a client busy with traffic costs no IKE message. Its method runs
// on the Responder's loop.
type ResponderActivity interface {
	// Received returns how many packets c's inbound SA has accepted so far.
	Received(client *Client, c *ChildSA) uint64
}

// ResponderConfig is what a gateway answers with.
type ResponderConfig struct {
	LocalID Identity
	// PSK authenticates with a pre-shared key (the same for every client).
	// Otherwise Key and Certificates (end entity first) sign; CAs verify
	// clients that authenticate with certificates.
	PSK []byte
	// ClientPSKs are pre-shared keys of single clients, by the textual
	// form of their identity (Identity.String; spellings that differ only
	// as Identity.Canonical allows name one client). A client named here
	// authenticates with its own key only, and the gateway answers with
	// that key unless it signs with Key; any other client uses PSK.
	ClientPSKs   map[string][]byte
	Key          crypto.Signer
	Certificates []*x509.Certificate
	CAs          *TrustStore

	IKE []ProposalSpec // acceptable IKE SA proposals, in order of preference
	ESP []ProposalSpec // acceptable Child SA proposals

	Pools   []netip.Prefix // inner address pools, at most one per family
	DNS     []netip.Addr   // DNS servers for the configuration reply
	LocalTS []netip.Prefix // the protected networks behind the gateway

	// DNSDomains are sent (INTERNAL_DNS_DOMAIN, RFC 8598) to clients that
	// ask for them: the names the DNS servers resolve.
	DNSDomains []string

	// CookieThreshold is the number of half-open IKE SAs above which a
	// COOKIE (RFC 7296 §2.6) is demanded; 0 means 32.
	CookieThreshold int
	// MaxHalfOpen bounds half-open IKE SAs; requests beyond it are
	// dropped. 0 means 1024.
	MaxHalfOpen int
	// MaxHalfOpenPerSource bounds the half-open IKE SAs of one source
	// (an IPv4 address, an IPv6 /64): at the limit the source must return
	// a COOKIE and may then replace its oldest one if that is stale.
	// 0 means 128 (limits.go).
	MaxHalfOpenPerSource int
	// SourceDHBudget is the Diffie-Hellman time per second (by each
	// group's nominal cost) IKE_SA_INIT requests from one source may make
	// the gateway spend, after a burst of twice that; requests beyond it
	// are dropped (the client retransmits). DHBudget is the same for all
	// sources together. 0 means 100 ms and 500 ms.
	SourceDHBudget, DHBudget time.Duration
	// MaxSAsPerIdentity bounds the IKE SAs one authenticated identity
	// holds at once; IKE_AUTH beyond it fails, unless it carries
	// INITIAL_CONTACT, which replaces the identity's older IKE SAs. 0
	// means 4; a negative value sets no limit.
	MaxSAsPerIdentity int
	// HalfOpenTimeout drops an IKE SA whose IKE_AUTH did not come; 0
	// means 30 s.
	HalfOpenTimeout time.Duration
	// CookieSecretLifetime is how long a cookie secret signs new cookies;
	// the previous one still verifies. 0 means 2 minutes.
	CookieSecretLifetime time.Duration
	// ChildRekey makes the gateway rekey each client's Child SA that long
	// after it was created, and IKERekey its IKE SA (RFC 7296 §2.18), each
	// less up to 10% of random jitter; 0 leaves it to the clients.
	ChildRekey, IKERekey time.Duration
	// RekeySequences rekeys a client's Child SA without extended sequence
	// numbers once the last sequence number sent or the highest received
	// passes it (read through the handler when it implements
	// SequenceCounter); 0 means DefaultRekeySequences.
	RekeySequences uint64
	// Retransmit paces the requests the gateway starts.
	Retransmit RetransmitPolicy
	// DPD starts a liveness check (an empty INFORMATIONAL request, RFC
	// 7296 §1.4) of a client from which nothing arrived for that long:
	// no IKE message and, when the handler implements ResponderActivity,
	// no ESP packet. A client that answers none of its retransmissions is
	// dropped with its Child SAs and leases. 0 never checks.
	DPD time.Duration

	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	MobilityConfig // MOBIKE and MIF (mobike.go)
}

// ClientStatus is a snapshot of one client for `mifsec status`.
type ClientStatus struct {
	ID          string    `json:"id"`
	Remote      string    `json:"remote"`
	Addresses   []string  `json:"addresses"`
	IKESPIi     string    `json:"ike_spi_i"`
	IKESPIr     string    `json:"ike_spi_r"`
	IKESuite    string    `json:"ike_suite"`
	Established time.Time `json:"established"`
	InSPI       string    `json:"in_spi,omitempty"`
	OutSPI      string    `json:"out_spi,omitempty"`
	Algorithm   string    `json:"algorithm,omitempty"`
	Weak        []string  `json:"weak,omitempty"` // weak algorithms negotiated (WeakAlgorithms)
	IKERekeys   int       `json:"ike_rekeys"`
	ChildRekeys int       `json:"child_rekeys"`
	DPDChecks   int       `json:"dpd_checks"` // liveness checks the gateway started
	ClientMobility
}

// rSA is one IKE SA of the Responder.
type rSA struct {
	*ikeSA
	from       netip.AddrPort // where IKE_SA_INIT came from
	natT       bool
	initReq    []byte // the client's IKE_SA_INIT request: it signs it
	initResp   []byte // our response: we sign it
	peerHashes []uint16
	expires    time.Time // for a half-open SA
	client     *rClient  // nil while half-open
	// The last request answered: where it came from and the digest of
	// its (first) datagram, to recognise its retransmissions; and how
	// often its response was sent again.
	reqFrom  netip.AddrPort
	reqSum   [sha256.Size]byte
	firstSum [sha256.Size]byte // of the request being reassembled
	resends  int
}

// rClient is one authenticated client: its current IKE SA, Child SAs and
// leases.
type rClient struct {
	Client
	sa          *rSA
	child       *ChildSA
	oldKids     []*ChildSA
	established time.Time
	ikeRekeys   int
	childRekeys int
	pending     *rRequest        // the request we started and await the answer to
	espSeen     uint64           // ESP packets its Child SAs had received at the last tick
	lastESP     time.Time        // when espSeen last grew
	dpdChecks   int              // liveness checks the gateway started
	mob         clientMobility   // MOBIKE and MIF (mobike.go)
	psk         []byte           // the pre-shared key it authenticated with; nil for a certificate
	authFrom    []netip.AddrPort // where its authenticated messages came from lately, newest first
	key         string           // ID's text (ID is canonical): the key of per-identity tables
}

// rRequest is a request the gateway sent to a client.
type rRequest struct {
	sa        *rSA
	to        netip.AddrPort // where it goes; the zero value: the client's current address
	id        uint32
	exchange  ExchangeType
	datagrams [][]byte
	tries     int
	wait      time.Duration
	next      time.Time
	done      func(reply []Payload) // nil reply: no answer
	rekey     rekeyKind             // the rekey it starts, if any
}

type saKey struct{ spiI, spiR uint64 }

// Responder is a gateway's IKEv2 responder for many clients.
type Responder struct {
	cfg   ResponderConfig
	tr    Transport
	h     ResponderHandler
	log   *slog.Logger
	inbox chan inbound
	calls chan func()

	sas       map[saKey]*rSA
	halfOpen  map[saKey]*rSA
	initIndex map[initKey]*rSA           // half-open IKE SAs by initiator SPI and source
	perSource map[netip.Prefix][]*rSA    // half-open IKE SAs by source, oldest first
	budgets   map[netip.Prefix]*dhBudget // Diffie-Hellman budgets by source
	dhAll     dhBudget                   // and for all sources
	clients   []*rClient
	pools     []*AddressPool

	secret, oldSecret [32]byte
	secretSince       time.Time
}

// NewResponder checks cfg and returns a responder that does not run yet.
func NewResponder(cfg ResponderConfig, tr Transport, h ResponderHandler) (*Responder, error) {
	keys, err := canonicalPSKs(cfg.ClientPSKs)
	if err != nil {
		return nil, err
	}
	cfg.ClientPSKs = keys
	if err := checkCredentials(len(cfg.PSK) > 0 || len(cfg.ClientPSKs) > 0, cfg.Key, cfg.Certificates, cfg.IKE, cfg.ESP, cfg.LocalID); err != nil {
		return nil, err
	}
	if len(cfg.LocalTS) == 0 {
		return nil, errors.New("no local traffic selectors (protected networks)")
	}
	if cfg.CookieThreshold <= 0 {
		cfg.CookieThreshold = 32
	}
	if cfg.MaxHalfOpen <= 0 {
		cfg.MaxHalfOpen = 1024
	}
	if cfg.MaxHalfOpenPerSource <= 0 {
		cfg.MaxHalfOpenPerSource = defaultMaxHalfOpenPerSource
	}
	if cfg.SourceDHBudget <= 0 {
		cfg.SourceDHBudget = defaultSourceDHBudget
	}
	if cfg.DHBudget <= 0 {
		cfg.DHBudget = defaultDHBudget
	}
	if cfg.MaxSAsPerIdentity == 0 {
		cfg.MaxSAsPerIdentity = defaultMaxSAsPerIdentity
	}
	if cfg.HalfOpenTimeout <= 0 {
		cfg.HalfOpenTimeout = 30 * time.Second
	}
	if cfg.CookieSecretLifetime <= 0 {
		cfg.CookieSecretLifetime = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Retransmit = cfg.Retransmit.withDefaults()
	if cfg.RekeySequences == 0 {
		cfg.RekeySequences = DefaultRekeySequences
	}
	r := &Responder{cfg: cfg, tr: tr, h: h, log: cfg.Logger, inbox: make(chan inbound, 256), calls: make(chan func()),
		sas: map[saKey]*rSA{}, halfOpen: map[saKey]*rSA{}, initIndex: map[initKey]*rSA{},
		perSource: map[netip.Prefix][]*rSA{}, budgets: map[netip.Prefix]*dhBudget{}}
	if r.log == nil {
		r.log = slog.Default()
	}
	var v4, v6 bool
	for _, p := range cfg.Pools {
		pool, err := NewAddressPool(p)
		if err != nil {
			return nil, err
		}
		if (p.Addr().Is4() && v4) || (!p.Addr().Is4() && v6) {
			return nil, fmt.Errorf("address pool %s: only one pool per address family", p)
		}
		v4, v6 = v4 || p.Addr().Is4(), v6 || !p.Addr().Is4()
		r.pools = append(r.pools, pool)
	}
	rand.Read(r.secret[:])
	rand.Read(r.oldSecret[:])
	r.secretSince = cfg.Now()
	return r, nil
}

// Deliver hands the responder a datagram from a client (without the
// non-ESP marker). It copies data and never blocks: when the responder is
// behind, the datagram is dropped, as the network might have.
func (r *Responder) Deliver(data []byte, from netip.AddrPort, natT bool) {
	select {
	case r.inbox <- inbound{data: slices.Clone(data), from: from, natT: natT}:
	default:
	}
}

// Run answers clients until ctx ends, then deletes every client's IKE SA
// (one try, no wait) and removes their Child SAs.
func (r *Responder) Run(ctx context.Context) error {
	timer := time.NewTicker(time.Second)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, c := range slices.Clone(r.clients) {
				r.sayGoodbye(c)
			}
			return nil
		case in := <-r.inbox:
			r.handle(in)
		case f := <-r.calls:
			f()
		case <-timer.C:
			r.tick()
		}
	}
}

// do runs f on the loop; false when ctx ended first.
func (r *Responder) do(ctx context.Context, f func()) bool {
	done := make(chan struct{})
	select {
	case r.calls <- func() { f(); close(done) }:
		<-done
		return true
	case <-ctx.Done():
		return false
	}
}

// Clients returns a snapshot of the authenticated clients.
func (r *Responder) Clients(ctx context.Context) []ClientStatus {
	var out []ClientStatus
	r.do(ctx, func() {
		for _, c := range r.clients {
			st := ClientStatus{ID: c.ID.Display(), Remote: c.Remote.String(),
				IKESPIi: fmt.Sprintf("%016x", c.sa.spiI), IKESPIr: fmt.Sprintf("%016x", c.sa.spiR), IKESuite: c.sa.suite.String(),
				Established: c.established, IKERekeys: c.ikeRekeys, ChildRekeys: c.childRekeys, DPDChecks: c.dpdChecks, ClientMobility: c.mob.status()}
			for _, a := range c.Addresses {
				st.Addresses = append(st.Addresses, a.String())
			}
			if c.child != nil {
				st.InSPI, st.OutSPI, st.Algorithm = fmt.Sprintf("%08x", c.child.InSPI), fmt.Sprintf("%08x", c.child.OutSPI), c.child.Algorithm
			}
			st.Weak = WeakAlgorithms(c.sa.suite, st.Algorithm)
			out = append(out, st)
		}
	})
	return out
}

// PoolStatus is one address pool's use, for `mifsec status`.
type PoolStatus struct {
	Prefix string `json:"prefix"`
	Leased int    `json:"leased"`
}

// Pools returns how many addresses each pool has leased.
func (r *Responder) Pools(ctx context.Context) []PoolStatus {
	var out []PoolStatus
	r.do(ctx, func() {
		for _, p := range r.pools {
			out = append(out, PoolStatus{Prefix: p.Prefix().String(), Leased: p.Leased()})
		}
	})
	return out
}

// tick expires half-open IKE SAs, rotates the cookie secret and switches
// rekeyed Child SAs whose predecessor the client did not delete.
func (r *Responder) tick() {
	now := r.cfg.Now()
	for k, sa := range r.halfOpen {
		if now.After(sa.expires) {
			r.leaveHalfOpen(sa)
			delete(r.sas, k)
			sa.wipe()
		}
	}
	r.forgetIdleBudgets(now)
	if now.Sub(r.secretSince) >= r.cfg.CookieSecretLifetime {
		r.oldSecret = r.secret
		rand.Read(r.secret[:])
		r.secretSince = now
	}
	for _, c := range slices.Clone(r.clients) {
		if c.child != nil && !c.child.switched && now.Sub(c.child.Created) >= 2*time.Second {
			r.h.SwitchOutbound(&c.Client, c.child)
			c.child.switched = true
		}
		if p := c.pending; p != nil && !now.Before(p.next) {
			if r.sas[saKey{p.sa.spiI, p.sa.spiR}] != p.sa || p.tries >= r.cfg.Retransmit.Tries {
				r.log.Info("client did not answer", "id", c.ID, "exchange", p.exchange, "tries", p.tries)
				c.pending = nil
				p.done(nil)
				continue
			}
			p.tries++
			p.wait = time.Duration(float64(p.wait) * r.cfg.Retransmit.Backoff)
			p.next = now.Add(p.wait)
			to := p.to
			if !to.IsValid() {
				to = c.Remote
			}
			r.transmit(p.sa, to, p.datagrams)
		}
		r.nextRoutabilityCheck(c)
		r.expireOldChildren(c, now)
		r.rekeyWhenDue(c, now) // responder_rekey.go
		r.checkLiveness(c, now)
	}
}

// Bounds on the Child SAs a rekey leaves behind: the one who started the
// rekey deletes the old SA once the new one works (RFC 7296 §2.8); one that
// does not has it deleted by the gateway after oldChildGrace, and may not
// rekey again while maxOldChildren wait.
const (
	oldChildGrace  = 10 * time.Second
	maxOldChildren = 2
)

// expireOldChildren deletes the first of c's rekeyed Child SAs whose grace
// has passed, when no other request of the gateway is outstanding.
func (r *Responder) expireOldChildren(c *rClient, now time.Time) {
	if c.pending != nil || c.sa == nil {
		return
	}
	for _, old := range c.oldKids {
		if old.retired.IsZero() || now.Sub(old.retired) < oldChildGrace {
			continue
		}
		r.log.Info("deleting a rekeyed Child SA the client did not delete", "id", c.ID, "in_spi", fmt.Sprintf("%#x", old.InSPI))
		remove := func([]Payload) {
			if slices.Contains(c.oldKids, old) {
				r.h.RemoveChild(&c.Client, old)
				c.oldKids = slices.DeleteFunc(c.oldKids, func(o *ChildSA) bool { return o == old })
			}
		}
		del := []Payload{&Delete{Protocol: ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, old.InSPI)}}}
		if err := r.request(c, INFORMATIONAL, del, remove); err != nil {
			remove(nil)
		}
		return
	}
}

// checkLiveness sends c an empty INFORMATIONAL request when nothing came
// from it for the DPD interval, and drops c when the request goes
// unanswered after every retransmission. ESP counts as a sign of life
// when the handler reports it: the counters are read once a tick, so
// liveness costs the data plane nothing per packet.
func (r *Responder) checkLiveness(c *rClient, now time.Time) {
	if r.cfg.DPD <= 0 || c.sa == nil {
		return
	}
	if a, ok := r.h.(ResponderActivity); ok {
		var n uint64
		if c.child != nil {
			n += a.Received(&c.Client, c.child)
		}
		for _, k := range c.oldKids {
			n += a.Received(&c.Client, k)
		}
		if n != c.espSeen {
			c.espSeen, c.lastESP = n, now
		}
	}
	last := c.sa.lastHeard
	if c.lastESP.After(last) {
		last = c.lastESP
	}
	if c.pending != nil || now.Sub(last) < r.cfg.DPD {
		return
	}
	sa := c.sa
	err := r.request(c, INFORMATIONAL, nil, func(reply []Payload) {
		if reply != nil || c.sa != sa || !slices.Contains(r.clients, c) {
			return // answered, or the client moved to a rekeyed IKE SA or left
		}
		r.log.Info("client is gone: no answer to a liveness check", "id", c.ID, "from", c.Remote,
			"silent_for", r.cfg.Now().Sub(last).Round(time.Second), "addresses", c.Addresses)
		r.dropClient(c)
	})
	if err != nil {
		r.log.Debug("liveness check", "id", c.ID, "err", err)
		return
	}
	c.dpdChecks++
}

// request sends a request to c on its current IKE SA; done gets the
// response's payloads, or nil when none came.
func (r *Responder) request(c *rClient, exchange ExchangeType, payloads []Payload, done func([]Payload)) error {
	return r.requestTo(c, netip.AddrPort{}, exchange, payloads, done)
}

// requestTo is request to the address to (when valid) instead of the
// client's current one.
func (r *Responder) requestTo(c *rClient, to netip.AddrPort, exchange ExchangeType, payloads []Payload, done func([]Payload)) error {
	return r.requestOn(c, c.sa, to, exchange, payloads, done)
}

// requestOn is requestTo on the IKE SA sa of c, which need not be c's
// current one (deleting a rekeyed IKE SA).
func (r *Responder) requestOn(c *rClient, sa *rSA, to netip.AddrPort, exchange ExchangeType, payloads []Payload, done func([]Payload)) error {
	if c.pending != nil {
		return errors.New("a request is outstanding")
	}
	datagrams, err := sealMessage(sa.ikeSA, exchange, sa.nextOut, false, payloads)
	if err != nil {
		return err
	}
	wait := r.cfg.Retransmit.Timeout
	c.pending = &rRequest{sa: sa, to: to, id: sa.nextOut, exchange: exchange, datagrams: datagrams, tries: 1, wait: wait,
		next: r.cfg.Now().Add(wait), done: done}
	if !to.IsValid() {
		to = c.Remote
	}
	r.transmit(sa, to, datagrams)
	return nil
}

// handleResponse passes the response to the request we sent on sa.
func (r *Responder) handleResponse(sa *rSA, m *Message, from netip.AddrPort) {
	c := sa.client
	if c == nil || c.pending == nil || c.pending.sa != sa || c.pending.id != m.MessageID {
		return
	}
	inner, complete, err := openMessage(sa.ikeSA, m)
	if err != nil {
		r.log.Debug("dropping undecryptable response", "exchange", m.Exchange, "err", err)
		return
	}
	if !complete {
		return
	}
	p := c.pending
	c.pending = nil
	sa.nextOut++
	sa.lastHeard = r.cfg.Now()
	c.noteAuthSource(from)
	r.confirmed(from)
	if inner == nil {
		inner = []Payload{} // an empty answer is still an answer
	}
	p.done(inner)
}

func (r *Responder) transmit(sa *rSA, to netip.AddrPort, datagrams [][]byte) {
	for _, d := range datagrams {
		if err := r.tr.Send(d, to, sa.natT); err != nil {
			r.log.Debug("sending IKE message", "to", to, "err", err)
		}
	}
}

// handle processes one datagram.
func (r *Responder) handle(in inbound) {
	m, err := Parse(in.data)
	if err != nil {
		r.log.Debug("dropping malformed IKE message", "from", in.from, "err", err)
		return
	}
	if m.Exchange == IKE_SA_INIT {
		if m.Flags&FlagResponse == 0 && m.Flags&FlagInitiator != 0 && m.SPIr == 0 && m.MessageID == 0 {
			r.handleInit(m, in)
		}
		return
	}
	sa := r.sas[saKey{m.SPIi, m.SPIr}]
	if sa == nil {
		r.log.Debug("dropping IKE message for an unknown SA", "from", in.from, "exchange", m.Exchange)
		return
	}
	if m.Flags&FlagResponse != 0 {
		r.handleResponse(sa, m, in.from)
		return
	}
	switch {
	case m.MessageID+1 == sa.nextIn:
		// Our response was lost: send it again, but only for a copy of
		// the request it answered, to where that came from (limits.go).
		if sa.isRetransmission(m, in) {
			sa.resends++
			r.transmit(sa, in.from, sa.lastResp)
		}
		return
	case m.MessageID != sa.nextIn:
		return
	}
	inner, complete, err := openMessage(sa.ikeSA, m)
	if err != nil {
		r.log.Debug("dropping undecryptable request", "from", in.from, "exchange", m.Exchange, "err", err)
		return
	}
	if firstDatagram(m) {
		sa.firstSum = sha256.Sum256(in.data)
	}
	if !complete {
		return
	}
	sa.reqFrom, sa.reqSum, sa.resends = in.from, sa.firstSum, 0
	sa.lastHeard = r.cfg.Now()
	sa.natT = in.natT
	var reply []Payload
	var after func()
	switch {
	case sa.client == nil && m.Exchange == IKE_AUTH && m.MessageID == 1:
		reply, after = r.respondAuth(sa, inner, in.from)
		reply = r.authMobility(sa, inner, reply) // MOBIKE, MIF (mobike.go)
	case sa.client == nil:
		r.log.Debug("dropping request on an unauthenticated IKE SA", "from", in.from, "exchange", m.Exchange)
		return
	default:
		reply, after = r.respondClient(sa, m.Exchange, inner, in.from) // address updates, MOBIKE, MIF (mobike.go)
	}
	datagrams, err := sealMessage(sa.ikeSA, m.Exchange, m.MessageID, true, reply)
	if err != nil {
		r.log.Warn("building IKE response", "exchange", m.Exchange, "err", err)
		return
	}
	sa.lastResp = datagrams
	sa.nextIn++
	if sa.client != nil {
		// Before the answer goes out: a transport that picks its socket
		// by source knows this one now.
		sa.client.noteAuthSource(in.from)
		r.confirmed(in.from)
	}
	r.transmit(sa, in.from, datagrams)
	if after != nil {
		after()
	}
}

// SourceObserver is implemented by a Transport that wants to know which
// sources proved to be an authenticated client: the Responder calls
// Confirmed, on its loop, with the source of every request and response
// that passed the integrity check of an authenticated client's IKE SA.
// Nothing an unauthenticated peer sends is reported, so that a table kept
// from these calls cannot be filled from spoofed addresses.
type SourceObserver interface {
	Confirmed(from netip.AddrPort)
}

func (r *Responder) confirmed(from netip.AddrPort) {
	if o, ok := r.tr.(SourceObserver); ok {
		o.Confirmed(from)
	}
}

// cookie is the stateless COOKIE for an IKE_SA_INIT request (RFC 7296
// §2.6): a version byte and HMAC-SHA-256(secret, Ni | IPi | SPIi).
func cookie(secret []byte, version byte, ni []byte, from netip.Addr, spiI uint64) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(ni)
	a := from.Unmap().AsSlice()
	h.Write(a)
	h.Write(binary.BigEndian.AppendUint64(nil, spiI))
	return h.Sum([]byte{version})
}

// cookieOK checks a cookie against the current and the previous secret.
func (r *Responder) cookieOK(got, ni []byte, from netip.Addr, spiI uint64) bool {
	if len(got) != 1+sha256.Size {
		return false
	}
	cur, old := r.secret, r.oldSecret
	return hmac.Equal(got, cookie(cur[:], got[0], ni, from, spiI)) || hmac.Equal(got, cookie(old[:], got[0], ni, from, spiI))
}

// answerInit sends an unprotected IKE_SA_INIT response that creates no
// state: a cookie or an error.
func (r *Responder) answerInit(m *Message, in inbound, n *Notify) {
	resp := &Message{SPIi: m.SPIi, Exchange: IKE_SA_INIT, Flags: FlagResponse, Payloads: []Payload{n}}
	b, err := resp.Marshal()
	if err != nil {
		return
	}
	if err := r.tr.Send(b, in.from, in.natT); err != nil {
		r.log.Debug("sending IKE_SA_INIT response", "to", in.from, "err", err)
	}
}

// handleInit answers an IKE_SA_INIT request.
func (r *Responder) handleInit(m *Message, in inbound) {
	saP, ke, ni := Find[*SA](m.Payloads), Find[*KE](m.Payloads), Find[*Nonce](m.Payloads)
	if saP == nil || ke == nil || ni == nil || len(ni.Data) < MinNonceLen || len(ni.Data) > MaxNonceLen {
		r.answerInit(m, in, &Notify{NotifyType: INVALID_SYNTAX})
		return
	}
	// A retransmission, a copy of the request from where it came, gets
	// the response already sent (limits.go).
	if sa := r.initIndex[initKey{m.SPIi, in.from}]; sa != nil && string(sa.initReq) == string(in.data) {
		if sa.resends < maxResends {
			sa.resends++
			r.transmit(sa, in.from, [][]byte{sa.initResp})
		}
		return
	}
	src := sourceOf(in.from)
	atSourceLimit := len(r.perSource[src]) >= r.cfg.MaxHalfOpenPerSource
	if len(r.halfOpen) >= r.cfg.MaxHalfOpen && !atSourceLimit {
		r.log.Debug("dropping IKE_SA_INIT: too many half-open IKE SAs", "from", in.from)
		return
	}
	if len(r.halfOpen) >= r.cfg.CookieThreshold || atSourceLimit {
		n := FindNotify(m.Payloads, COOKIE)
		if n == nil || !r.cookieOK(n.Data, ni.Data, in.from.Addr(), m.SPIi) {
			cur := r.secret
			r.answerInit(m, in, &Notify{NotifyType: COOKIE, Data: cookie(cur[:], 1, ni.Data, in.from.Addr(), m.SPIi)})
			return
		}
	}
	sel, ok := SelectProposalWith(saP.Proposals, r.cfg.IKE, SelectOptions{PreferDH: ke.Group})
	if !ok {
		r.answerInit(m, in, &Notify{NotifyType: NO_PROPOSAL_CHOSEN})
		return
	}
	suite := sel.Suite
	if ke.Group != suite.DHGroup {
		r.answerInit(m, in, &Notify{NotifyType: INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, suite.DHGroup)})
		return
	}
	if err := CheckNonce(suite.PRF, ni.Data); err != nil {
		r.log.Debug("refusing IKE_SA_INIT", "from", in.from, "err", err)
		r.answerInit(m, in, &Notify{NotifyType: INVALID_SYNTAX})
		return
	}
	now := r.cfg.Now()
	if atSourceLimit {
		// The source proved its address with the cookie: its own oldest
		// half-open IKE SA makes room if it waited long for its IKE_AUTH
		// (abandoned, or planted by a spoofer); one still in its
		// handshake is not cut short.
		oldest := r.perSource[src][0]
		if now.Sub(oldest.created) < staleHalfOpen {
			r.log.Debug("dropping IKE_SA_INIT: its source has the most half-open IKE SAs allowed", "from", in.from)
			return
		}
		r.leaveHalfOpen(oldest)
		delete(r.sas, saKey{oldest.spiI, oldest.spiR})
		oldest.wipe()
	}
	if !r.takeDH(src, dhCost(suite.DHGroup), now) {
		r.log.Debug("dropping IKE_SA_INIT: Diffie-Hellman budget spent", "from", in.from, "group", suite.DHGroup)
		return
	}
	kex, err := NewKeyExchange(suite.DHGroup)
	if err != nil {
		r.answerInit(m, in, &Notify{NotifyType: NO_PROPOSAL_CHOSEN})
		return
	}
	shared, err := kex.SharedSecret(ke.Data)
	if err != nil {
		r.answerInit(m, in, &Notify{NotifyType: INVALID_SYNTAX})
		return
	}
	nr := nonce()
	spiR := randomSPI()
	keys, err := deriveIKEKeys(suite, shared, ni.Data, nr, m.SPIi, spiR, false)
	if err != nil {
		r.log.Warn("deriving IKE SA keys", "err", err)
		return
	}
	fragOK := FindNotify(m.Payloads, IKEV2_FRAGMENTATION_SUPPORTED) != nil
	payloads := []Payload{
		&SA{Proposals: []Proposal{sel.Proposal}},
		&KE{Group: suite.DHGroup, Data: kex.Public()},
		&Nonce{Data: nr},
		// A source hash that matches no address tells the client we are
		// behind a NAT: it floats to port 4500 and encapsulates ESP in
		// UDP, the only ESP the data plane carries.
		&Notify{NotifyType: NAT_DETECTION_SOURCE_IP, Data: randomBytes(20)},
		&Notify{NotifyType: NAT_DETECTION_DESTINATION_IP, Data: NATDetectionHash(m.SPIi, spiR, in.from)},
	}
	if fragOK {
		payloads = append(payloads, &Notify{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED})
	}
	payloads = append(payloads, &Notify{NotifyType: SIGNATURE_HASH_ALGORITHMS, Data: SignatureHashAlgorithmsNotifyData()})
	if r.cfg.CAs != nil {
		payloads = append(payloads, &CertReq{Encoding: CertX509Signature, Data: r.cfg.CAs.CertReqData()})
	}
	resp := &Message{SPIi: m.SPIi, SPIr: spiR, Exchange: IKE_SA_INIT, Flags: FlagResponse, Payloads: payloads}
	b, err := resp.Marshal()
	if err != nil {
		r.log.Warn("building IKE_SA_INIT response", "err", err)
		return
	}
	sa := &rSA{ikeSA: &ikeSA{spiI: m.SPIi, spiR: spiR, suite: suite, keys: keys, ni: slices.Clone(ni.Data), nr: nr,
		nextIn: 1, lastHeard: now, created: now, fragOK: fragOK},
		from: in.from, natT: in.natT, initReq: slices.Clone(in.data), initResp: b, expires: now.Add(r.cfg.HalfOpenTimeout)}
	if n := FindNotify(m.Payloads, SIGNATURE_HASH_ALGORITHMS); n != nil {
		sa.peerHashes, _ = ParseSignatureHashAlgorithms(n.Data)
	}
	r.addHalfOpen(sa)
	r.transmit(sa, in.from, [][]byte{b})
}

// authFail answers IKE_AUTH with AUTHENTICATION_FAILED and forgets sa once
// the answer is sent.
func (r *Responder) authFail(sa *rSA, from netip.AddrPort, why string, args ...any) ([]Payload, func()) {
	r.log.Warn("client failed to authenticate: "+why, append([]any{"from", from}, args...)...)
	return []Payload{&Notify{NotifyType: AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
}

// forget removes an IKE SA from the tables and wipes its keys: nothing
// reaches it any more (what it last sent is cached sealed).
func (r *Responder) forget(sa *rSA) {
	r.leaveHalfOpen(sa)
	delete(r.sas, saKey{sa.spiI, sa.spiR})
	sa.wipe()
}

// verifyClient checks the client's AUTH payload over its IKE_SA_INIT
// request.
func (r *Responder) verifyClient(sa *rSA, id Identity, auth *Auth, req []Payload) error {
	octets := InitiatorSignedOctets(sa.keys.prf.Sum, sa.initReq, sa.nr, sa.keys.SKpi, id.PayloadBody())
	if auth.Method == AuthPSK {
		psk := r.pskFor(id)
		if len(psk) == 0 {
			if len(r.cfg.ClientPSKs) > 0 {
				return errors.New("it used a pre-shared key, the gateway has none for its identity")
			}
			return errors.New("it used a pre-shared key, the gateway expects a certificate")
		}
		if VerifyPSKAuth(sa.keys.prf.Sum, psk, octets, auth.Data) != nil {
			return errors.New("its AUTH does not match the pre-shared key")
		}
		return nil
	}
	if r.cfg.CAs == nil {
		return errors.New("it used a certificate, but no CA is configured")
	}
	var certs [][]byte
	for _, p := range req {
		if c, ok := p.(*Cert); ok && c.Encoding == CertX509Signature {
			certs = append(certs, c.Data)
		}
	}
	if len(certs) == 0 {
		return errors.New("it sent no certificate")
	}
	peer, err := r.cfg.CAs.VerifyPeer(certs[0], certs[1:], id, r.cfg.Now())
	if err != nil {
		return err
	}
	if err := Verify(peer.PublicKey, auth.Method, auth.Data, octets); err != nil {
		return fmt.Errorf("its signature: %w", err)
	}
	return nil
}

// canonicalPSKs checks per-client keys (no empty key, identities that
// parse, no identity named twice in two spellings) and returns a copy
// keyed by the identities' canonical form (Identity.Key).
func canonicalPSKs(keys map[string][]byte) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	for name, psk := range keys {
		if len(psk) == 0 {
			return nil, fmt.Errorf("empty pre-shared key for client %s", Printable(name))
		}
		id, err := ParseIdentity(name)
		if err != nil {
			return nil, fmt.Errorf("pre-shared key for client %s: %w", Printable(name), err)
		}
		k := id.Key()
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("two pre-shared keys for client %s (identities are compared without case and trailing dot)", Printable(k))
		}
		out[k] = slices.Clone(psk)
	}
	return out, nil
}

// CheckClientPSKs checks per-client pre-shared keys as NewResponder
// does (no empty key, identities that parse, no identity given twice in
// two spellings), so that a configuration can be refused before anything
// is set up.
func CheckClientPSKs(keys map[string][]byte) error {
	_, err := canonicalPSKs(keys)
	return err
}

// pskFor returns the pre-shared key a client of identity id authenticates
// with: its own, else the shared one (nil when there is neither).
func (r *Responder) pskFor(id Identity) []byte {
	if psk, ok := r.cfg.ClientPSKs[id.Key()]; ok {
		return psk
	}
	return r.cfg.PSK
}

// SetPSKs replaces the shared and the per-client pre-shared keys (see
// ResponderConfig) while the responder runs. Clients that authenticated
// with a key that is no longer theirs (changed or removed) are told their
// IKE SA is deleted and dropped with their Child SAs and leases; their
// identities are returned. New keys apply to every later IKE_AUTH.
func (r *Responder) SetPSKs(ctx context.Context, shared []byte, perClient map[string][]byte) ([]Identity, error) {
	keys, err := canonicalPSKs(perClient)
	if err != nil {
		return nil, err
	}
	if len(shared) == 0 && len(keys) == 0 && r.cfg.Key == nil {
		return nil, errors.New("no pre-shared key left and no private key to authenticate with")
	}
	var revoked []Identity
	ok := r.do(ctx, func() {
		r.cfg.PSK, r.cfg.ClientPSKs = slices.Clone(shared), keys
		for _, c := range slices.Clone(r.clients) {
			if c.psk == nil || subtle.ConstantTimeCompare(c.psk, r.pskFor(c.ID)) == 1 {
				continue
			}
			r.log.Info("client's pre-shared key changed: deleting its IKE SA", "id", c.ID, "from", c.Remote, "addresses", c.Addresses)
			r.sayGoodbye(c)
			revoked = append(revoked, c.ID)
		}
	})
	if !ok {
		return nil, ctx.Err()
	}
	return revoked, nil
}

// sayGoodbye tells c its IKE SA is deleted (one try, no wait: the gateway
// forgets it at once) and drops it with its Child SAs and leases.
func (r *Responder) sayGoodbye(c *rClient) {
	if sa := c.sa; sa != nil {
		if datagrams, err := sealMessage(sa.ikeSA, INFORMATIONAL, sa.nextOut, false, []Payload{&Delete{Protocol: ProtoIKE}}); err == nil {
			sa.nextOut++
			r.transmit(sa, c.Remote, datagrams)
		}
	}
	r.dropClient(c)
}

// respondAuth answers IKE_AUTH: authenticates the client, leases its inner
// addresses and sets up its first Child SA.
func (r *Responder) respondAuth(sa *rSA, req []Payload, from netip.AddrPort) ([]Payload, func()) {
	idi, auth := FindID(req, false), Find[*Auth](req)
	if idi == nil || auth == nil {
		return r.authFail(sa, from, "no IDi or AUTH")
	}
	id := Identity{Type: idi.IDType, Data: idi.Data}
	if err := r.verifyClient(sa, id, auth, req); err != nil {
		return r.authFail(sa, from, err.Error(), "id", id)
	}
	// From here on the client is known by the canonical form of the
	// identity it authenticated with, for its leases, the limit per
	// identity and INITIAL_CONTACT.
	id = id.Canonical()
	key := id.String()
	replace := FindNotify(req, INITIAL_CONTACT) != nil
	if limit := r.cfg.MaxSAsPerIdentity; limit > 0 && !replace {
		held := 0
		for _, c := range r.clients {
			if c.key == key {
				held++
			}
		}
		if held >= limit {
			return r.authFail(sa, from, "its identity already holds the most IKE SAs allowed", "id", id, "limit", limit)
		}
	}
	// Our AUTH over our IKE_SA_INIT response.
	reply := []Payload{&ID{Responder: true, IDType: r.cfg.LocalID.Type, Data: r.cfg.LocalID.Data}}
	octets := ResponderSignedOctets(sa.keys.prf.Sum, sa.initResp, sa.ni, sa.keys.SKpr, r.cfg.LocalID.PayloadBody())
	ours := &Auth{}
	if r.cfg.Key != nil {
		for _, c := range r.cfg.Certificates {
			reply = append(reply, &Cert{Encoding: CertX509Signature, Data: c.Raw})
		}
		method, data, err := Sign(r.cfg.Key, octets, sa.peerHashes)
		if err != nil {
			r.log.Warn("signing IKE_AUTH", "err", err)
			return []Payload{&Notify{NotifyType: AUTHENTICATION_FAILED}}, func() { r.forget(sa) }
		}
		ours.Method, ours.Data = method, data
	} else {
		ours.Method, ours.Data = AuthPSK, PSKAuth(sa.keys.prf.Sum, r.pskFor(id), octets)
	}
	reply = append(reply, ours)

	// The client is authenticated from here on. The IKE_SA_INIT messages
	// were only needed for the AUTH payloads (a retransmitted IKE_AUTH gets
	// the cached response): a gateway with many clients need not keep
	// them.
	r.leaveHalfOpen(sa)
	sa.initReq, sa.initResp = nil, nil
	if replace {
		for _, old := range slices.Clone(r.clients) {
			if old.key == key {
				r.log.Info("client reconnected: dropping its older IKE SA", "id", id, "ike_spi_i", fmt.Sprintf("%016x", old.sa.spiI))
				r.dropClient(old)
			}
		}
	}
	c := &rClient{Client: Client{ID: id, Remote: from, IKESPIi: sa.spiI, IKESPIr: sa.spiR}, sa: sa, key: key, established: r.cfg.Now()}
	if auth.Method == AuthPSK {
		c.psk = r.pskFor(id)
	}
	sa.client = c
	r.clients = append(r.clients, c)

	childReply, fail := r.firstChild(c, req)
	if fail != nil {
		// Nothing of the client stays behind: the IKE SA goes with the
		// answer (the client gives up on it when its first Child SA is
		// refused), and firstChild released the leases.
		r.log.Warn("client authenticated, but no Child SA: dropping it", "id", id, "from", from, "notify", fail.NotifyType)
		reply = append(reply, fail)
		return reply, func() {
			if slices.Contains(r.clients, c) {
				r.dropClient(c)
			}
		}
	}
	reply = append(reply, childReply...)
	r.log.Info("client connected", "id", id, "from", from, "ike", sa.suite, "esp", c.child.Algorithm,
		"addresses", c.Addresses, "in_spi", fmt.Sprintf("%#x", c.child.InSPI), "out_spi", fmt.Sprintf("%#x", c.child.OutSPI))
	if weak := WeakAlgorithms(sa.suite, c.child.Algorithm); len(weak) > 0 {
		r.log.Warn("client negotiated weak algorithms", "id", id, "from", from, "weak", weak)
	}
	return reply, nil
}

// firstChild leases the client's addresses and builds its first Child SA
// from IKE_AUTH: the CP reply, SA and narrowed traffic selectors.
func (r *Responder) firstChild(c *rClient, req []Payload) ([]Payload, *Notify) {
	saP := Find[*SA](req)
	tsi, tsr := findTS(req, false), findTS(req, true)
	if saP == nil || tsi == nil || tsr == nil {
		return nil, &Notify{NotifyType: INVALID_SYNTAX}
	}
	if tooManySelectors(req) {
		return nil, &Notify{NotifyType: TS_UNACCEPTABLE}
	}
	sel, ok := SelectProposalWith(saP.Proposals, r.cfg.ESP, SelectOptions{IgnoreDH: true})
	if !ok {
		return nil, &Notify{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	esp, err := espFromSelection(sel)
	if err != nil {
		return nil, &Notify{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	var reply []Payload
	if len(r.pools) > 0 {
		cp := Find[*CP](req)
		if cp == nil || cp.CfgType != CFG_REQUEST {
			return nil, &Notify{NotifyType: FAILED_CP_REQUIRED}
		}
		attrs, err := r.lease(c, cp)
		if err != nil {
			r.log.Warn("leasing an inner address", "id", c.ID, "err", err)
			return nil, &Notify{NotifyType: INTERNAL_ADDRESS_FAILURE}
		}
		reply = append(reply, &CP{CfgType: CFG_REPLY, Attributes: attrs})
	}
	// The client's side narrows to its leased addresses; without pools, to
	// what it proposed.
	remoteAllowed := []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
	if len(r.pools) > 0 {
		remoteAllowed = c.Addresses
	}
	limit := max(maxChildPrefixes, 2*len(r.cfg.LocalTS))
	remote, okRemote := narrowSelectors(tsi.Selectors, remoteAllowed, limit)
	local, okLocal := narrowSelectors(tsr.Selectors, r.cfg.LocalTS, limit)
	if !okRemote || !okLocal || len(remote) == 0 || len(local) == 0 {
		r.releaseLeases(c)
		return nil, &Notify{NotifyType: TS_UNACCEPTABLE}
	}
	inSPI := randomESPSPI()
	iToR, rToI, err := childKeys(c.sa.ikeSA, esp, nil, c.sa.ni, c.sa.nr)
	if err != nil {
		r.releaseLeases(c)
		return nil, &Notify{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	child := &ChildSA{InSPI: inSPI, OutSPI: esp.spi, Algorithm: esp.alg, InKey: iToR, OutKey: rToI, ESN: esp.esn,
		LocalTS: local, RemoteTS: remote, Created: r.cfg.Now(), switched: true}
	if err := r.h.InstallChild(&c.Client, child, true); err != nil {
		r.log.Warn("installing a client's Child SA", "id", c.ID, "err", err)
		r.releaseLeases(c)
		return nil, &Notify{NotifyType: TEMPORARY_FAILURE}
	}
	c.child = child
	chosen := sel.Proposal
	chosen.SPI = binary.BigEndian.AppendUint32(nil, inSPI)
	reply = append(reply, &SA{Proposals: []Proposal{chosen}},
		&TS{Selectors: SelectorsFromPrefixes(remote)}, &TS{Responder: true, Selectors: SelectorsFromPrefixes(local)})
	return reply, nil
}

// lease takes an address from each pool whose family the client asked for
// and returns the CP reply's attributes.
func (r *Responder) lease(c *rClient, cp *CP) ([]CPAttribute, error) {
	var want4, want6, dns4, dns6, domains bool
	for _, a := range cp.Attributes {
		switch a.Type {
		case INTERNAL_DNS_DOMAIN:
			domains = true
		case INTERNAL_IP4_ADDRESS:
			want4 = true
		case INTERNAL_IP6_ADDRESS:
			want6 = true
		case INTERNAL_IP4_DNS:
			dns4 = true
		case INTERNAL_IP6_DNS:
			dns6 = true
		}
	}
	var attrs []CPAttribute
	for _, p := range r.pools {
		is4 := p.Prefix().Addr().Is4()
		if (is4 && !want4) || (!is4 && !want6) {
			continue
		}
		a, err := p.LeaseFor(c.key)
		if err != nil {
			r.releaseLeases(c)
			return nil, err
		}
		if is4 {
			c.Addresses = append(c.Addresses, netip.PrefixFrom(a, 32))
			attrs = append(attrs, CPAttribute{Type: INTERNAL_IP4_ADDRESS, Value: a.AsSlice()})
		} else {
			c.Addresses = append(c.Addresses, netip.PrefixFrom(a, 128))
			attrs = append(attrs, CPAttribute{Type: INTERNAL_IP6_ADDRESS, Value: append(a.AsSlice(), 128)})
		}
	}
	if len(attrs) == 0 {
		return nil, errors.New("the client asked for no address of a family the pools have")
	}
	for _, d := range r.cfg.DNS {
		switch {
		case d.Is4() && dns4:
			attrs = append(attrs, CPAttribute{Type: INTERNAL_IP4_DNS, Value: d.AsSlice()})
		case d.Is6() && dns6:
			attrs = append(attrs, CPAttribute{Type: INTERNAL_IP6_DNS, Value: d.AsSlice()})
		}
	}
	if domains {
		attrs = append(attrs, dnsDomainAttributes(r.cfg.DNSDomains)...)
	}
	return attrs, nil
}

func (r *Responder) releaseLeases(c *rClient) {
	for _, a := range c.Addresses {
		for _, p := range r.pools {
			if p.Prefix().Contains(a.Addr()) {
				p.Release(a.Addr())
			}
		}
	}
	c.Addresses = nil
}

// dropClient removes a client: its Child SAs, leases and IKE SAs.
func (r *Responder) dropClient(c *rClient) {
	for _, k := range c.oldKids {
		r.h.RemoveChild(&c.Client, k)
	}
	if c.child != nil {
		r.h.RemoveChild(&c.Client, c.child)
	}
	c.child, c.oldKids = nil, nil
	r.releaseLeases(c)
	for k, sa := range r.sas {
		if sa.client == c {
			delete(r.sas, k)
			sa.wipe()
		}
	}
	r.clients = slices.DeleteFunc(r.clients, func(o *rClient) bool { return o == c })
}

// childByOutSPI finds a client's Child SA by the SPI the client receives
// on.
func (c *rClient) childByOutSPI(spi uint32) *ChildSA {
	if c.child != nil && c.child.OutSPI == spi {
		return c.child
	}
	for _, k := range c.oldKids {
		if k.OutSPI == spi {
			return k
		}
	}
	return nil
}

func (r *Responder) respondInformational(sa *rSA, req []Payload) ([]Payload, func()) {
	c := sa.client
	var reply []Payload
	var after func()
	for _, p := range req {
		d, ok := p.(*Delete)
		if !ok {
			continue
		}
		switch d.Protocol {
		case ProtoIKE:
			after = func() {
				if c.sa == sa {
					r.log.Info("client disconnected", "id", c.ID, "addresses", c.Addresses)
					r.dropClient(c)
					return
				}
				r.forget(sa) // a rekeyed IKE SA
			}
		case ProtoESP:
			var ours [][]byte
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				k := c.childByOutSPI(binary.BigEndian.Uint32(spi))
				if k == nil {
					continue
				}
				ours = append(ours, binary.BigEndian.AppendUint32(nil, k.InSPI))
				r.h.RemoveChild(&c.Client, k)
				if k == c.child {
					c.child = nil
					continue
				}
				c.oldKids = slices.DeleteFunc(c.oldKids, func(o *ChildSA) bool { return o == k })
				if c.child != nil && !c.child.switched {
					r.h.SwitchOutbound(&c.Client, c.child)
					c.child.switched = true
				}
			}
			if len(ours) > 0 {
				reply = append(reply, &Delete{Protocol: ProtoESP, SPIs: ours})
			}
		}
	}
	return reply, after
}

// respondChildRekey answers a client's rekey of its Child SA. The new SA
// receives at once and sends once the client deletes the old one.
func (r *Responder) respondChildRekey(sa *rSA, rekey *Notify, req []Payload) ([]Payload, func()) {
	c := sa.client
	if rekey.Protocol != ProtoESP || len(rekey.SPI) != 4 {
		return []Payload{&Notify{NotifyType: INVALID_SYNTAX}}, nil
	}
	old := c.childByOutSPI(binary.BigEndian.Uint32(rekey.SPI))
	if old == nil {
		return []Payload{&Notify{Protocol: ProtoESP, SPI: rekey.SPI, NotifyType: CHILD_SA_NOT_FOUND}}, nil
	}
	if tooManySelectors(req) {
		return []Payload{&Notify{NotifyType: TS_UNACCEPTABLE}}, nil
	}
	if old != c.child || (c.pending != nil && c.pending.rekey == rekeyingIKE) {
		// Not for an SA being deleted (RFC 7296 §2.25.1), nor while our
		// rekey of the IKE SA is outstanding: the client retries later.
		return []Payload{&Notify{NotifyType: TEMPORARY_FAILURE}}, nil
	}
	if len(c.oldKids) >= maxOldChildren {
		// A client that rekeys without deleting what it replaced would
		// grow the gateway's SAs without bound.
		r.log.Info("client rekeys its Child SA again before deleting the ones it replaced: refused", "id", c.ID, "old", len(c.oldKids))
		return []Payload{&Notify{NotifyType: TEMPORARY_FAILURE}}, nil
	}
	reply, child, fail := answerChildRekey(sa.ikeSA, r.cfg.ESP, req, old, r.cfg.Now())
	if fail != nil {
		return []Payload{fail}, nil
	}
	if err := r.h.InstallChild(&c.Client, child, false); err != nil {
		r.log.Warn("installing a rekeyed Child SA", "id", c.ID, "err", err)
		return []Payload{&Notify{NotifyType: TEMPORARY_FAILURE}}, nil
	}
	return reply, func() {
		old.retired = r.cfg.Now()
		c.oldKids = append(c.oldKids, old)
		c.child = child
		c.childRekeys++
	}
}

// respondIKERekey answers a client's rekey of its IKE SA.
func (r *Responder) respondIKERekey(sa *rSA, req []Payload) ([]Payload, func()) {
	c := sa.client
	if sa != c.sa || (c.pending != nil && c.pending.rekey == rekeyingChild) {
		// Not for an IKE SA already replaced, nor while our rekey of a
		// Child SA is outstanding: the client retries later.
		return []Payload{&Notify{NotifyType: TEMPORARY_FAILURE}}, nil
	}
	reply, next, fail := answerIKERekey(sa.ikeSA, r.cfg.IKE, req, r.cfg.Now())
	if fail != nil {
		return []Payload{fail}, nil
	}
	return reply, func() {
		n := &rSA{ikeSA: next, from: sa.from, natT: sa.natT, client: c}
		r.sas[saKey{next.spiI, next.spiR}] = n
		c.sa = n
		c.IKESPIi, c.IKESPIr = next.spiI, next.spiR
		c.ikeRekeys++
	}
}
