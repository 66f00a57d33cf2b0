package ike

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// RemoteClient describes one authenticated client, as the responder (the
// gateway) serves it, to the ResponderHandler.
type RemoteClient struct {
	ID     Identity
	Remote netip.AddrPort // where its IKE messages and ESP come from
	// Local is the gateway's address its IKE SA uses: where its IKE
	// messages arrive and the gateway's leave from (the zero Addr or an
	// unspecified one: a socket bound to the wildcard address).
	Local     netip.Addr
	Addresses []netip.Prefix // leased inner addresses
	IKESPIi   uint64
	IKESPIr   uint64
	// PeerClasses are the traffic classes the client announced
	// (MIF_CLASSES) for the gateway's side to follow, and PathInterface
	// the client's interface of the IKE SA's own path then; "" without.
	PeerClasses, PathInterface string
}

// ResponderTransport sends a gateway's IKE messages. A gateway with
// several addresses answers each client from the address the client talks
// to (RFC 4555 §3.3: a reply leaves from where the request arrived), so
// every message names the gateway address it leaves from: local, as
// Responder.Deliver reported it. natT says it goes between the UDP
// encapsulation ports (4500), behind the non-ESP marker. SendFrom may
// write msg after it returns; the Responder never changes a message it
// gave it.
type ResponderTransport interface {
	SendFrom(msg []byte, local netip.Addr, to netip.AddrPort, natT bool) error
}

// ResponderHandler installs what the Responder negotiated with clients.
// Its methods run on the Responder's loop.
type ResponderHandler interface {
	// InstallChild makes c's inbound SA receive (from c.RemoteTS only) and,
	// when send is true, its outbound SA carry traffic to c.RemoteTS to
	// client.Remote.
	InstallChild(client *RemoteClient, c *ChildSA, send bool) error
	// SwitchOutbound makes c the SA that sends to the client, replacing
	// the one it rekeyed.
	SwitchOutbound(client *RemoteClient, c *ChildSA)
	// RemoveChild stops c, both directions.
	RemoveChild(client *RemoteClient, c *ChildSA)
}

// InboundSPIs is implemented by a ResponderHandler whose data plane can
// tell which inbound SPIs are taken: the Responder then draws each new
// inbound SPI (a Child SA's, a probe SA's) among the free ones. All
// clients of a gateway share one SPI space, and 32 random bits collide:
// among 100,000 clients' some 200,000 inbound SAs a few times (six in one
// fleet run), and the client whose SA could not be installed was turned
// away after it had authenticated.
type InboundSPIs interface {
	InboundSPIInUse(spi uint32) bool
}

// drawInboundSPI returns a random inbound SPI that the handler's data
// plane does not use (InboundSPIs). After a few draws that all collide it
// gives the last: installing its SA then fails and says so.
func (r *Responder) drawInboundSPI() uint32 {
	spis, ok := r.h.(InboundSPIs)
	spi := randomESPSPI()
	for range 8 {
		if !ok || !spis.InboundSPIInUse(spi) {
			break
		}
		spi = randomESPSPI()
	}
	return spi
}

// SessionHook learns of the clients a Responder serves, on its loop: a
// cluster of gateways registers them (mif/cluster), and deletes a client
// here with Responder.Disconnect when it logs in at another gateway. Its
// methods return soon: a registry that writes to a store bounds the wait.
type SessionHook interface {
	// ClientUp: client authenticated and got its first Child SA.
	ClientUp(client *RemoteClient)
	// ClientDown: a client ClientUp reported is gone (its leases are
	// released already).
	ClientDown(client *RemoteClient)
}

// ResponderActivity is implemented by a ResponderHandler whose data plane
// counts the packets each Child SA receives: the liveness checks
// (ResponderConfig.DPD) then take ESP from a client as a sign of life, so
// that a client busy with traffic costs no IKE message. Its method runs
// on the Responder's loop.
type ResponderActivity interface {
	// Received returns how many packets c's inbound SA has accepted so far.
	Received(client *RemoteClient, c *ChildSA) uint64
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
	// EAPUsers log in with EAP-MSCHAPv2 (RFC 7296 §2.16): a client whose
	// IKE_AUTH request has no AUTH payload. The gateway proves itself
	// with Key and Certificates, which EAP needs. Nil: no EAP.
	EAPUsers *EAPUsers
	// RADIUS checks EAP logins with a RADIUS server instead of EAPUsers
	// (radius.go); it needs Key and Certificates as well.
	RADIUS *RADIUSConfig

	IKE []ProposalSpec // acceptable IKE SA proposals, in order of preference
	ESP []ProposalSpec // acceptable Child SA proposals

	Pools   []netip.Prefix // inner address pools, at most one per family
	DNS     []netip.Addr   // DNS servers for the configuration reply
	LocalTS []netip.Prefix // the protected networks behind the gateway
	// RemoteTS, without pools, is what a client's side of the selectors
	// narrows to (default everything); with pools, its leased addresses.
	RemoteTS []netip.Prefix
	// NewPool makes the Pool that leases from each of Pools; nil makes an
	// AddressPool (the gateway's own). A cluster of gateways passes its
	// shared pools (mif/cluster).
	NewPool func(netip.Prefix) (Pool, error)
	// Sessions, when set, learns of each client that logs in and of each
	// that leaves (a cluster's session registry).
	Sessions SessionHook
	// Peers, when set, are the only identities that may log in (checked
	// before their proof): `mifsec peer` answers its one peer.
	Peers []Identity
	// Transport agrees to a client's request for transport mode
	// (USE_TRANSPORT_MODE) when the Child SA's selectors name one address
	// on each side (transport.go); otherwise every Child SA is in tunnel
	// mode, the request notwithstanding.
	Transport bool

	// DNSDomains are sent (INTERNAL_DNS_DOMAIN, RFC 8598) to clients that
	// ask for them: the names the DNS servers resolve.
	DNSDomains []string

	// CookieThreshold is the number of half-open IKE SAs above which a
	// COOKIE (RFC 7296 §2.6) is demanded, from requests that arrive
	// until 10 s after the count was last seen there; 0 means 32.
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

	// MaxClients bounds the clients (with the half-open IKE SAs) the
	// gateway takes; beyond it IKE_SA_INIT is redirected to the gateway
	// Redirector names (RFC 5685) or refused with TEMPORARY_FAILURE. 0
	// means no limit (redirect.go).
	MaxClients int
	// Redirector names the gateway that a full or draining gateway sends
	// clients to; nil: none, they are refused.
	Redirector Redirector
	// DrainTimeout is how long Drain waits for the redirected clients to
	// leave before it deletes their IKE SAs; 0 means 10 s.
	DrainTimeout time.Duration

	MobilityConfig // MOBIKE and MIF (mobike.go)
}

// ClientStatus is a snapshot of one client for `mifsec status`.
type ClientStatus struct {
	ID          string    `json:"id"`
	Remote      string    `json:"remote"`
	Local       string    `json:"local,omitempty"` // the gateway address it talks to
	Addresses   []string  `json:"addresses"`
	IKESPIi     string    `json:"ike_spi_i"`
	IKESPIr     string    `json:"ike_spi_r"`
	IKESuite    string    `json:"ike_suite"`
	Established time.Time `json:"established"`
	InSPI       string    `json:"in_spi,omitempty"`
	OutSPI      string    `json:"out_spi,omitempty"`
	Algorithm   string    `json:"algorithm,omitempty"`
	Mode        string    `json:"mode,omitempty"` // the Child SA's: tunnel or transport
	// ProbeSA says the Child SA has a probe SA (ProbeSA).
	ProbeSA     bool     `json:"probe_sa,omitempty"`
	Weak        []string `json:"weak,omitempty"` // weak algorithms negotiated (WeakAlgorithms)
	IKERekeys   int      `json:"ike_rekeys"`
	ChildRekeys int      `json:"child_rekeys"`
	DPDChecks   int      `json:"dpd_checks"` // liveness checks the gateway started
	ClientMobility
}

// rSA is one IKE SA of the Responder.
type rSA struct {
	*ikeSA
	from  netip.AddrPort // where IKE_SA_INIT came from
	local netip.Addr     // the gateway address it arrived at
	// half is what only a half-open SA needs; nil once IKE_AUTH is done
	// (admitted) and for an IKE SA made by a rekey.
	half   *rHalfOpen
	client *rClient // nil while half-open
	// The last request answered: where it came from (and the gateway
	// address it arrived at) and the digest of its (first) datagram, to
	// recognise its retransmissions; and how often its response was sent
	// again. firstSum is the digest of the first datagram of a request
	// that came in fragments, until the last one came (an unfragmented
	// request, the common case, needs none kept).
	reqFrom  netip.AddrPort
	reqLocal netip.Addr
	reqSum   [sha256.Size]byte
	firstSum *[sha256.Size]byte
	resends  int32

	natT       bool
	redirectOK bool // its IKE_SA_INIT said it follows redirects (RFC 5685)
	// answering: the request nextIn is being answered beside the loop
	// (a RADIUS server asked, a shared pool's leases taken); its
	// retransmissions are dropped meanwhile.
	answering bool
}

// pskDigest stands for a pre-shared key a client authenticated with: the
// first 64 bits of its SHA-256, 0 for none. A reload that changes the key
// (SetPSKs) is told by the digest; a client keeps 8 bytes, not the 24 of a
// slice, and two keys with one digest are a chance of 2^-64.
type pskDigest uint64

func digestPSK(psk []byte) pskDigest {
	if psk == nil {
		return 0
	}
	sum := sha256.Sum256(psk)
	return pskDigest(max(binary.BigEndian.Uint64(sum[:8]), 1))
}

// rHalfOpen is what an IKE SA needs only until its IKE_AUTH is done: a
// gateway holds an IKE SA per client, and these fields were some 110 bytes
// of each that nothing read again.
type rHalfOpen struct {
	initReq    []byte // the client's IKE_SA_INIT request: it signs it
	initResp   []byte // our response: we sign it
	peerHashes []uint16
	// pendingKeys derives the keys of a half-open SA beside the loop
	// (initkeys.go); nil once keysOf took them.
	pendingKeys *initKeys
	expires     time.Time
	eap         *rEAP // the EAP login under way (ike_auth_eap.go)
}

// dropHalfOpen lets go of what only the half-open sa needed, wiping an EAP
// login's MSK.
func (sa *rSA) dropHalfOpen() {
	sa.wipeMSK()
	sa.half = nil
}

// wipeMSK zeroes the MSK of the EAP login under way on sa, if any.
func (sa *rSA) wipeMSK() {
	if e := sa.eapLogin(); e != nil {
		clear(e.msk)
	}
}

// eapLogin returns the EAP login under way on sa, if any.
func (sa *rSA) eapLogin() *rEAP {
	if sa.half == nil {
		return nil
	}
	return sa.half.eap
}

// rClient is one authenticated client: its current IKE SA, Child SAs and
// leases.
type rClient struct {
	RemoteClient
	sa      *rSA
	child   *ChildSA
	oldKids []*ChildSA
	// The client's times are instants, 8 bytes each where a time.Time
	// takes 24.
	established instant
	pending     *rRequest        // the request we started and await the answer to
	espSeen     uint64           // ESP packets its Child SAs had received at the last read
	lastESP     instant          // when espSeen last grew; 0: never
	espRead     instant          // when espSeen was last read
	mob         clientMobility   // MOBIKE and MIF (mobike.go)
	psk         pskDigest        // the pre-shared key it authenticated with; 0 for a certificate
	authFrom    []netip.AddrPort // where its authenticated messages came from lately, newest first
	accounted   *radiusSession   // its RADIUS accounting session, if a RADIUS server admitted it
	key         string           // ID's text (ID is canonical): the key of per-identity tables
	due         instant          // its next visit by the tick (timers.go)
	// sas are its IKE SAs in r.sas (the current one, and one being
	// rekeyed or replaced): dropClient deletes them without a walk of
	// every client's.
	sas []*rSA

	// The small fields together, 32-bit counters and indexes, so that a
	// client fits the allocator's 448-byte class (a gateway holds one per
	// client).
	ikeRekeys   int32
	childRekeys int32
	dpdChecks   int32 // liveness checks the gateway started
	// dpdExcused counts the unanswered liveness checks in a row that the
	// gateway's own full queue may explain (checkLiveness).
	dpdExcused int32
	slot       int32 // its index in Responder.clients while it is held
	timer      int32 // its index in Responder.timers plus one (0: none)
	registered bool  // ResponderConfig.Sessions knows it (ClientUp)
	dropped    bool  // dropClient removed it
	// redirectOK: it follows redirects (RFC 5685); redirectSent: a
	// draining gateway asked it to go (redirect.go).
	redirectOK, redirectSent bool
}

// rRequest is a request the gateway sent to a client.
type rRequest struct {
	sa        *rSA
	to        netip.AddrPort // where it goes; the zero value: the client's current address
	local     netip.Addr     // the gateway address it leaves from, with to
	id        uint32
	exchange  wire.ExchangeType
	datagrams [][]byte
	tries     int
	wait      time.Duration
	next      time.Time
	done      func(reply []wire.Payload) // nil reply: no answer
	rekey     rekeyKind                  // the rekey it starts, if any
}

type saKey struct{ spiI, spiR uint64 }

// Responder is a gateway's side of IKEv2: it answers many clients' IKE SAs
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
//
// Its defences against unauthenticated and misbehaving peers are in the
// package documentation (Defences of the Responder).
type Responder struct {
	cfg ResponderConfig
	tr  ResponderTransport
	h   ResponderHandler
	log *slog.Logger
	// keys are key pairs made ahead for IKE_SA_INIT and rekeys
	// (keypool.go), filled while Run runs.
	keys *keyPool
	// initJobs queues new IKE SAs' key derivations for the workers Run
	// starts (initkeys.go).
	initJobs chan *initKeys
	// inbox takes requests within an IKE SA (SPIr set: IKE_AUTH and
	// everything after it), inits the IKE_SA_INIT requests; the loop
	// serves inbox first, so a client whose Diffie-Hellman was done is
	// not starved by new ones when thousands start at once. A datagram
	// that finds its queue full is dropped and counted (FailInboxFull,
	// FailInitQueueFull).
	inbox     chan inbound
	inits     chan inbound
	inboxDrop atomic.Uint64
	initsDrop atomic.Uint64
	calls     chan func()

	sas       map[saKey]*rSA
	halfOpen  map[saKey]*rSA
	initIndex map[initKey]*rSA           // half-open IKE SAs by initiator SPI and source
	perSource map[netip.Prefix][]*rSA    // half-open IKE SAs by source, oldest first
	budgets   map[netip.Prefix]*dhBudget // Diffie-Hellman budgets by source
	dhAll     dhBudget                   // and for all sources
	clients   []*rClient
	timers    clientTimers          // clients by their next visit (timers.go)
	byKey     map[string][]*rClient // clients by identity (rClient.key)
	pools     []Pool
	// sharedPools: the pools are SharedPools, leased from beside the loop
	// (admit); leasing counts the IKE_AUTH requests whose leases are
	// being taken, up to leaseWindow at once (adjustLeaseWindow, last
	// halved at leaseShrunk); leaseQueue holds those waiting their turn
	// (leaseNext).
	sharedPools bool
	leasing     int
	leaseWindow float64
	leaseShrunk time.Time
	leaseQueue  []admission
	failures    map[string]uint64 // by reason (Fail*)
	eapLimits   eapLimits         // failed EAP logins by name and source (eap_limits.go)
	radius      *radiusClient     // nil without a RADIUS server
	// What is done beside the loop (RADIUS answers, a shared pool's
	// leases) comes back to it through besideDone, unbuffered: once Run
	// returned, what comes back finds quit closed instead (and releases
	// its leases); accounting counts RADIUS accounting requests in
	// flight.
	besideDone chan func()
	quit       chan struct{}
	accounting sync.WaitGroup

	secret, oldSecret [32]byte
	secretSince       time.Time
	cookiesUntil      time.Time                  // cookies are demanded from requests arriving until then (cookieCalmDown)
	sourceCookies     map[netip.Prefix]time.Time // the same for a source at its half-open share

	// Drain (redirect.go): since when new clients are refused and until
	// when established ones may leave; how many were redirected.
	draining   bool
	drainUntil time.Time
	redirected uint64
}

// NewResponder checks cfg and returns a responder that does not run yet.
func NewResponder(cfg ResponderConfig, tr ResponderTransport, h ResponderHandler) (*Responder, error) {
	keys, err := canonicalPSKs(cfg.ClientPSKs)
	if err != nil {
		return nil, err
	}
	cfg.ClientPSKs = keys
	if err := checkCredentials(len(cfg.PSK) > 0 || len(cfg.ClientPSKs) > 0, cfg.Key, cfg.Certificates, cfg.IKE, cfg.ESP, cfg.LocalID); err != nil {
		return nil, err
	}
	if (cfg.EAPUsers != nil || cfg.RADIUS != nil) && cfg.Key == nil {
		return nil, errEAPNeedsKey
	}
	if cfg.EAPUsers != nil && cfg.RADIUS != nil {
		return nil, errors.New("EAP users and a RADIUS server exclude each other")
	}
	if len(cfg.Peers) > 0 && (cfg.EAPUsers != nil || cfg.RADIUS != nil) {
		return nil, errors.New("allowed peers and EAP exclude each other: EAP logins name their users inside EAP")
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
	if cfg.MaxClients < 0 {
		return nil, fmt.Errorf("a negative client limit (%d)", cfg.MaxClients)
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = defaultDrainTimeout
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
	r := &Responder{cfg: cfg, tr: tr, h: h, log: cfg.Logger, inbox: make(chan inbound, inboxSize), inits: make(chan inbound, initsSize), calls: make(chan func()),
		sas: map[saKey]*rSA{}, halfOpen: map[saKey]*rSA{}, initIndex: map[initKey]*rSA{},
		perSource: map[netip.Prefix][]*rSA{}, byKey: map[string][]*rClient{}, budgets: map[netip.Prefix]*dhBudget{}, sourceCookies: map[netip.Prefix]time.Time{}, failures: map[string]uint64{},
		besideDone: make(chan func()), quit: make(chan struct{}), keys: newKeyPool(keyPoolSize, cfg.IKE, cfg.ESP), initJobs: make(chan *initKeys, initKeyJobs)}
	if cfg.RADIUS != nil {
		if r.radius, err = newRADIUSClient(*cfg.RADIUS); err != nil {
			return nil, err
		}
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	var v4, v6 bool
	newPool := cfg.NewPool
	if newPool == nil {
		newPool = func(p netip.Prefix) (Pool, error) { return NewAddressPool(p) }
	}
	for _, p := range cfg.Pools {
		if (p.Addr().Is4() && v4) || (!p.Addr().Is4() && v6) {
			return nil, fmt.Errorf("address pool %s: only one pool per address family", p)
		}
		pool, err := newPool(p)
		if err != nil {
			return nil, err
		}
		v4, v6 = v4 || p.Addr().Is4(), v6 || !p.Addr().Is4()
		r.pools = append(r.pools, pool)
		if _, ok := pool.(SharedPool); ok {
			r.sharedPools, r.leaseWindow = true, 4
		}
	}
	rand.Read(r.secret[:])
	rand.Read(r.oldSecret[:])
	r.secretSince = cfg.Now()
	return r, nil
}

// The responder's queues, in datagrams. At the 600-900 handshakes a
// second a 2-core gateway sets up (docs/gateway-scale.md), 1024
// IKE_SA_INIT requests are one to two seconds of work, about as long as a
// client waits before it first retransmits; a longer queue would mostly
// hold retransmissions of requests already queued. Requests within an IKE
// SA cost no Diffie-Hellman and come about one per handshake in progress
// or client exchange.
const (
	inboxSize = 4096
	initsSize = 1024
)

// Deliver hands the responder a datagram from a client (without the
// non-ESP marker) that arrived at the gateway's address local (the zero
// Addr or an unspecified one when the socket that read it does not know).
// It copies data and never blocks: when the responder is behind, the
// datagram is dropped, as the network might have, and counted.
func (r *Responder) Deliver(data []byte, local netip.Addr, from netip.AddrPort, natT bool) {
	q, at, drops := r.inbox, time.Time{}, &r.inboxDrop
	if len(data) < 16 || binary.BigEndian.Uint64(data[8:16]) == 0 {
		q, at, drops = r.inits, r.cfg.Now(), &r.initsDrop // no responder's SPI: an IKE_SA_INIT, whose arrival its cookie demand goes by
	}
	select {
	case q <- inbound{data: slices.Clone(data), local: local, from: from, natT: natT, at: at}:
	default:
		drops.Add(1)
	}
}

// Run answers clients until ctx ends, then deletes every client's IKE SA
// (one try, no wait) and removes their Child SAs.
func (r *Responder) Run(ctx context.Context) error {
	timer := time.NewTicker(time.Second)
	defer timer.Stop()
	fillCtx, stopFill := context.WithCancel(ctx)
	var fillers sync.WaitGroup
	r.keys.fill(fillCtx, &fillers)
	initKeyWorkers(fillCtx, &fillers, r.initJobs)
	defer func() {
		stopFill()
		fillers.Wait()
	}()
	for {
		// Requests within IKE SAs first (a bounded run, so that the
		// timer and the end of ctx are not starved).
		for i := 0; i < 64 && r.serveInbox(); i++ {
		}
		select {
		case <-ctx.Done():
			for _, c := range slices.Clone(r.clients) {
				r.sayGoodbye(c)
			}
			close(r.quit)
			r.waitAccounting(2 * time.Second)
			return nil
		case in := <-r.inbox:
			r.handle(in)
		case in := <-r.inits:
			r.handle(in)
		case f := <-r.besideDone:
			f()
		case f := <-r.calls:
			f()
		case <-timer.C:
			r.tick()
		}
	}
}

// serveInbox handles a request within an IKE SA if one waits.
func (r *Responder) serveInbox() bool {
	select {
	case in := <-r.inbox:
		r.handle(in)
		return true
	default:
		return false
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
				Established: c.established.time(), IKERekeys: int(c.ikeRekeys), ChildRekeys: int(c.childRekeys), DPDChecks: int(c.dpdChecks), ClientMobility: c.mob.status()}
			if c.Local.IsValid() && !c.Local.IsUnspecified() {
				st.Local = c.Local.String()
			}
			for _, a := range c.Addresses {
				st.Addresses = append(st.Addresses, a.String())
			}
			if c.child != nil {
				st.InSPI, st.OutSPI, st.Algorithm = fmt.Sprintf("%08x", c.child.InSPI), fmt.Sprintf("%08x", c.child.OutSPI), c.child.Algorithm
				st.Mode = c.child.mode()
				st.ProbeSA = c.child.Probe != nil
			}
			st.Weak = WeakAlgorithms(c.sa.suite, st.Algorithm)
			out = append(out, st)
		}
	})
	return out
}

// ClientCount returns how many clients are connected; 0 when ctx ends
// before the loop answers.
func (r *Responder) ClientCount(ctx context.Context) int {
	var n int
	r.do(ctx, func() { n = len(r.clients) })
	return n
}

// Disconnect deletes the IKE SAs of the clients whose identity is id
// (telling each) with their Child SAs and leases, and returns how many
// went; why says it in the log: for a host that holds two IKE SAs with
// its peer, one in each role, and keeps the other (mifsec peer), and for
// a client that logged in at another gateway of a cluster (mif/cluster).
func (r *Responder) Disconnect(ctx context.Context, id Identity, why string) (int, error) {
	n := 0
	ok := r.do(ctx, func() {
		for _, c := range slices.Clone(r.clients) {
			if c.ID.Key() == id.Key() {
				r.log.Info("deleting a client's IKE SA: "+why, "id", c.ID, "from", c.Remote)
				r.sayGoodbye(c)
				n++
			}
		}
	})
	if !ok {
		return 0, ctx.Err()
	}
	return n, nil
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

// Failures counts, by reason (Fail*), the IKE_SA_INIT and IKE_AUTH
// requests the gateway refused (every retransmission of a refused
// IKE_SA_INIT is answered and counted again: the gateway keeps no state
// for it) or its limits dropped, and the clients that answered none of
// its requests.
func (r *Responder) Failures(ctx context.Context) map[string]uint64 {
	var out map[string]uint64
	r.do(ctx, func() { out = maps.Clone(r.failures) })
	if out != nil {
		for reason, n := range map[string]uint64{FailInboxFull: r.inboxDrop.Load(), FailInitQueueFull: r.initsDrop.Load()} {
			if n > 0 {
				out[reason] = n
			}
		}
	}
	return out
}

// tick expires half-open IKE SAs, rotates the cookie secret and switches
// rekeyed Child SAs whose predecessor the client did not delete.
func (r *Responder) tick() {
	now := r.cfg.Now()
	for k, sa := range r.halfOpen {
		if now.After(sa.half.expires) {
			r.leaveHalfOpen(sa)
			delete(r.sas, k)
			sa.wipe()
		}
	}
	r.forgetIdleBudgets(now)
	// Kept a calm-down longer: requests that arrived before the end may
	// still wait in the queue.
	maps.DeleteFunc(r.sourceCookies, func(_ netip.Prefix, until time.Time) bool { return !now.Before(until.Add(cookieCalmDown)) })
	r.eapLimits.forget(now)
	if now.Sub(r.secretSince) >= r.cfg.CookieSecretLifetime {
		r.oldSecret = r.secret
		rand.Read(r.secret[:])
		r.secretSince = now
	}
	r.visitDueClients(now) // timers.go
	r.drainTick(now)       // redirect.go
}

// visitClient runs c's timed checks at now: the switch to its new Child
// SA, the retransmission of the gateway's request, queued return
// routability checks and address announcements, old Child SAs' grace,
// rekeys and liveness.
func (r *Responder) visitClient(c *rClient, now time.Time) {
	if c.child != nil && !c.child.switched && now.Sub(c.child.Created) >= switchDelay {
		r.h.SwitchOutbound(&c.RemoteClient, c.child)
		c.child.switched = true
	}
	if p := c.pending; p != nil && !now.Before(p.next) {
		if r.sas[saKey{p.sa.spiI, p.sa.spiR}] != p.sa || p.tries >= r.cfg.Retransmit.Tries {
			r.log.Info("client did not answer", "id", c.ID, "exchange", p.exchange, "tries", p.tries)
			r.failures[FailTimeout]++
			c.pending = nil
			p.done(nil)
			return
		}
		p.tries++
		p.wait = time.Duration(float64(p.wait) * r.cfg.Retransmit.Backoff)
		p.next = now.Add(p.wait)
		local, to := p.local, p.to
		if !to.IsValid() {
			local, to = c.Local, c.Remote
		}
		r.transmit(p.sa, local, to, p.datagrams)
	}
	r.nextRoutabilityCheck(c)
	r.nextAnnouncement(c)
	r.expireOldChildren(c, now)
	r.rekeyWhenDue(c, now) // create_child_sa.go
	r.checkLiveness(c, now)
}

// Bounds on the Child SAs a rekey leaves behind: the one who started the
// rekey deletes the old SA once the new one works (RFC 7296 §2.8); one that
// does not has it deleted by the gateway after oldChildGrace, and may not
// rekey again while maxOldChildren wait.
const (
	oldChildGrace  = 10 * time.Second
	maxOldChildren = 2
)

// request sends a request to c on its current IKE SA; done gets the
// response's payloads, or nil when none came.
func (r *Responder) request(c *rClient, exchange wire.ExchangeType, payloads []wire.Payload, done func([]wire.Payload)) error {
	return r.requestTo(c, netip.Addr{}, netip.AddrPort{}, exchange, payloads, done)
}

// requestTo is request to the address to from the gateway address local
// (when to is valid) instead of the client's current pair.
func (r *Responder) requestTo(c *rClient, local netip.Addr, to netip.AddrPort, exchange wire.ExchangeType, payloads []wire.Payload, done func([]wire.Payload)) error {
	return r.requestOn(c, c.sa, local, to, exchange, payloads, done)
}

// requestOn is requestTo on the IKE SA sa of c, which need not be c's
// current one (deleting a rekeyed IKE SA).
func (r *Responder) requestOn(c *rClient, sa *rSA, local netip.Addr, to netip.AddrPort, exchange wire.ExchangeType, payloads []wire.Payload, done func([]wire.Payload)) error {
	if c.pending != nil {
		return errors.New("a request is outstanding")
	}
	datagrams, err := sealMessage(sa.ikeSA, exchange, sa.nextOut, false, payloads)
	if err != nil {
		return err
	}
	wait := r.cfg.Retransmit.Timeout
	now := r.cfg.Now()
	c.pending = &rRequest{sa: sa, to: to, local: local, id: sa.nextOut, exchange: exchange, datagrams: datagrams, tries: 1, wait: wait,
		next: now.Add(wait), done: done}
	r.rescheduleClient(c, now)
	if !to.IsValid() {
		local, to = c.Local, c.Remote
	}
	r.transmit(sa, local, to, datagrams)
	return nil
}

// handleResponse passes the response to the request we sent on sa.
func (r *Responder) handleResponse(sa *rSA, m *wire.Message, from netip.AddrPort) {
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
	if inner == nil {
		inner = []wire.Payload{} // an empty answer is still an answer
	}
	p.done(inner)
	r.rescheduleClient(c, r.cfg.Now())
}

// transmit sends datagrams to to, from the gateway address local.
func (r *Responder) transmit(sa *rSA, local netip.Addr, to netip.AddrPort, datagrams [][]byte) {
	for _, d := range datagrams {
		if err := r.tr.SendFrom(d, local, to, sa.natT); err != nil {
			r.log.Debug("sending IKE message", "to", to, "err", err)
		}
	}
}

// answeredEmpty stands for an empty INFORMATIONAL response in
// rSA.lastResp: every client's liveness checks are answered so, and a
// gateway that kept each one's datagram held some 100 bytes per client for
// a copy it can seal again.
var answeredEmpty = [][]byte{}

// lastResponse returns the datagrams of the response sa last sent, for
// the retransmission m of its request: the cached ones, or for an empty
// INFORMATIONAL response, the same sealed again (a new IV, the same
// message) and kept from then on. A client retransmits when the gateway
// is slow to answer, and often more than once: the answer is sealed once
// more, not once per copy.
func (r *Responder) lastResponse(sa *rSA, m *wire.Message) [][]byte {
	if len(sa.lastResp) > 0 {
		return sa.lastResp
	}
	datagrams, err := sealMessage(sa.ikeSA, wire.INFORMATIONAL, m.MessageID, true, nil)
	if err != nil {
		r.log.Warn("building IKE response", "exchange", wire.INFORMATIONAL, "err", err)
		return nil
	}
	sa.lastResp = datagrams
	return datagrams
}

// handle processes one datagram.
func (r *Responder) handle(in inbound) {
	m, err := wire.Parse(in.data)
	if err != nil {
		r.log.Debug("dropping malformed IKE message", "from", in.from, "err", err)
		return
	}
	if m.Exchange == wire.IKE_SA_INIT {
		if m.Flags&wire.FlagResponse == 0 && m.Flags&wire.FlagInitiator != 0 && m.SPIr == 0 && m.MessageID == 0 {
			r.handleInit(m, in)
		}
		return
	}
	sa := r.sas[saKey{m.SPIi, m.SPIr}]
	if sa == nil {
		r.log.Debug("dropping IKE message for an unknown SA", "from", in.from, "exchange", m.Exchange)
		return
	}
	if m.Flags&wire.FlagResponse != 0 {
		r.handleResponse(sa, m, in.from)
		return
	}
	switch {
	case m.MessageID+1 == sa.nextIn:
		// Our response was lost: send it again, but only for a copy of
		// the request it answered, to where that came from (limits.go).
		if sa.isRetransmission(m, in) {
			sa.resends++
			r.transmit(sa, in.local, in.from, r.lastResponse(sa, m))
		}
		return
	case m.MessageID != sa.nextIn, sa.answering:
		return
	}
	if !r.keysOf(sa) {
		return
	}
	inner, complete, err := openMessage(sa.ikeSA, m)
	if err != nil {
		r.log.Debug("dropping undecryptable request", "from", in.from, "exchange", m.Exchange, "err", err)
		return
	}
	var sum [sha256.Size]byte
	switch first := firstDatagram(m); {
	case first && !complete:
		sa.firstSum = new([sha256.Size]byte)
		*sa.firstSum = sha256.Sum256(in.data)
		return
	case !complete:
		return
	case first:
		sum = sha256.Sum256(in.data)
	case sa.firstSum != nil:
		sum = *sa.firstSum
	}
	sa.firstSum = nil
	sa.reqFrom, sa.reqLocal, sa.reqSum, sa.resends = in.from, in.local, sum, 0
	sa.lastHeard = r.cfg.Now()
	sa.natT = in.natT
	var reply []wire.Payload
	var after func()
	switch {
	case sa.client == nil && sa.eapLogin() != nil && m.Exchange == wire.IKE_AUTH && r.relaysEAP(sa):
		// The answer goes out once the RADIUS server's came
		// (ike_auth_eap.go); retransmissions meanwhile are dropped.
		r.relayEAP(sa, m.MessageID, inner, in.from)
		return
	case sa.client == nil && sa.eapLogin() != nil && m.Exchange == wire.IKE_AUTH:
		reply, after = r.continueEAP(sa, inner, in.from) // ike_auth_eap.go
	case sa.client == nil && sa.eapLogin() != nil && m.Exchange == wire.INFORMATIONAL:
		reply, after = r.abandonEAP(sa, inner, in.from)
	case sa.client == nil && m.Exchange == wire.IKE_AUTH && m.MessageID == 1:
		reply, after = r.respondAuth(sa, inner, in.from)
	case sa.client == nil:
		r.log.Debug("dropping request on an unauthenticated IKE SA", "from", in.from, "exchange", m.Exchange)
		return
	default:
		reply, after = r.respondClient(sa, m.Exchange, inner, in.from) // address updates, MOBIKE, MIF (mobike.go)
	}
	if sa.answering {
		return // the answer goes out when its leases come (admit)
	}
	datagrams, err := sealMessage(sa.ikeSA, m.Exchange, m.MessageID, true, reply)
	if err != nil {
		r.log.Warn("building IKE response", "exchange", m.Exchange, "err", err)
		return
	}
	sa.lastResp = datagrams
	if len(reply) == 0 && m.Exchange == wire.INFORMATIONAL {
		sa.lastResp = answeredEmpty
	}
	sa.nextIn++
	if sa.client != nil {
		sa.client.noteAuthSource(in.from)
	}
	r.transmit(sa, in.local, in.from, datagrams)
	if after != nil {
		after()
	}
	if c := sa.client; c != nil {
		r.rescheduleClient(c, r.cfg.Now())
	}
}

// dropClient removes a client: its Child SAs, leases and IKE SAs.
func (r *Responder) dropClient(c *rClient) {
	for _, k := range c.oldKids {
		r.h.RemoveChild(&c.RemoteClient, k)
	}
	if c.child != nil {
		r.h.RemoveChild(&c.RemoteClient, c.child)
	}
	c.child, c.oldKids = nil, nil
	r.accountStop(c) // before the leases go: the session's record names them
	r.releaseLeases(c)
	if c.registered {
		c.registered = false
		r.cfg.Sessions.ClientDown(&c.RemoteClient)
	}
	for _, sa := range c.sas {
		if k := (saKey{sa.spiI, sa.spiR}); r.sas[k] == sa {
			delete(r.sas, k)
			sa.wipe()
		}
	}
	c.sas = nil
	c.dropped = true
	r.unscheduleClient(c)
	// The last client takes c's place: a departure costs the same with
	// 100,000 clients as with ten (the list's order is not kept).
	if i := int(c.slot); i < len(r.clients) && r.clients[i] == c {
		last := len(r.clients) - 1
		if i != last {
			r.clients[i] = r.clients[last]
			r.clients[i].slot = int32(i)
		}
		r.clients[last] = nil
		r.clients = r.clients[:last]
	}
	if list := slices.DeleteFunc(r.byKey[c.key], func(o *rClient) bool { return o == c }); len(list) > 0 {
		r.byKey[c.key] = list
	} else {
		delete(r.byKey, c.key)
	}
}

// addClient makes c, which authenticated on sa, one of the clients.
func (r *Responder) addClient(c *rClient, sa *rSA) {
	c.slot = int32(len(r.clients))
	r.clients = append(r.clients, c)
	r.byKey[c.key] = append(r.byKey[c.key], c)
	r.ownSA(c, sa)
	r.rescheduleClient(c, r.cfg.Now())
}

// ownSA records sa, which is in r.sas, as c's, and forgets those of c's
// IKE SAs that left r.sas.
func (r *Responder) ownSA(c *rClient, sa *rSA) {
	sa.client = c
	c.sas = slices.DeleteFunc(c.sas, func(o *rSA) bool { return r.sas[saKey{o.spiI, o.spiR}] != o })
	c.sas = append(c.sas, sa)
}

// holds reports whether c is still one of the clients.
func (r *Responder) holds(c *rClient) bool { return !c.dropped }
