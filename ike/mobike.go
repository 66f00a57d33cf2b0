package ike

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// Path is one way from this host to the gateway: a socket bound to one
// local interface and address, and the gateway address it reaches.
type Path struct {
	// ID names the path for the conductor and in the status (for example
	// the interface name); the session only compares and shows it.
	ID string
	// Local is the local address and port the Transport sends from.
	Local netip.AddrPort
	// Gateway is the gateway's address on this path; the zero value means
	// the session's gateway address.
	Gateway netip.Addr
	// Transport sends from this path's socket.
	Transport Transport
	// Interface names the local interface the path leaves from, told to
	// the gateway (MIF_PATH_ADD, MIF_CLASSES) for traffic classes bound
	// to interfaces; "" tells nothing.
	Interface string
}

func (p *Path) check() error {
	if p.Transport == nil {
		return fmt.Errorf("path %q: no transport", p.ID)
	}
	return nil
}

// to is where a message goes on p when the session would send it to def.
func (p *Path) to(def netip.AddrPort) netip.AddrPort {
	if p.Gateway.IsValid() {
		return netip.AddrPortFrom(p.Gateway, def.Port())
	}
	return def
}

// PathHandler is implemented by a Handler that wants to know when the
// session's IKE SA moved to another path (UPDATE_SA_ADDRESSES answered):
// the Child SAs' outbound ESP should then leave on that path too. It runs
// on the session's loop.
type PathHandler interface {
	PathChanged(p Path)
}

// ResponderPathHandler is implemented by a ResponderHandler that follows
// clients' paths. Its methods run on the Responder's loop.
type ResponderPathHandler interface {
	// ClientMoved reports that the client moved its IKE SA and Child SAs
	// (UPDATE_SA_ADDRESSES) to client.Remote, talking to the gateway's
	// client.Local: outbound ESP goes there now.
	ClientMoved(client *RemoteClient)
	// PathAdded reports a MIF path of the client (new, or changed when
	// the client adds an ID again).
	PathAdded(client *RemoteClient, p PathInfo)
	// PathRemoved reports that the client removed MIF path id.
	PathRemoved(client *RemoteClient, id uint16)
}

// MobilityConfig configures MOBIKE and the MIF extension. It is part of
// both SessionConfig and ResponderConfig; the fields marked as the
// initiator's are ignored by the Responder.
type MobilityConfig struct {
	// DisableMOBIKE leaves MOBIKE_SUPPORTED out of IKE_AUTH (it is sent,
	// and answered, by default).
	DisableMOBIKE bool
	// DisableMIF leaves MIF_SUPPORTED out of IKE_AUTH.
	DisableMIF bool
	// MIFClasses, on an initiator, are the traffic classes it tells the
	// gateway in IKE_AUTH (MIF_CLASSES), with the interface of its
	// current path, so that the other direction follows them; "" tells
	// none.
	MIFClasses string
	// AdditionalAddresses are this side's other addresses, announced as
	// ADDITIONAL_IP4/6_ADDRESS; without them NO_ADDITIONAL_ADDRESSES is
	// sent.
	AdditionalAddresses []netip.Addr
	// AdditionalAddressesFor (responder), when set, replaces
	// AdditionalAddresses with the list for a client that talks to the
	// gateway's address local: a gateway with several addresses announces
	// the ones that client did not reach it on.
	AdditionalAddressesFor func(local netip.Addr) []netip.Addr
	// NoNATsAllowed (initiator) sends NO_NATS_ALLOWED and true NAT
	// detection hashes with UPDATE_SA_ADDRESSES and path tests, so that
	// the gateway refuses a path with a NAT on it.
	NoNATsAllowed bool
	// Path (initiator) is the path the session connects on; nil means the
	// Transport given to NewSession, to Remote.
	Path *Path
	// PathCheck (initiator) paces a path test, an UPDATE_SA_ADDRESSES or a
	// MIF_PATH_ADD on the path it tests; 0 values mean Retransmit's
	// timeout and backoff, 3 tries.
	PathCheck RetransmitPolicy
}

// MobilityStatus is the part of a session's status about its paths.
type MobilityStatus struct {
	MOBIKE           bool         `json:"mobike"`
	MIF              bool         `json:"mif"`
	Path             string       `json:"path,omitempty"` // the ID of the path IKE uses
	PathLocal        string       `json:"path_local,omitempty"`
	PathUpdates      int          `json:"path_updates"`
	GatewayAddresses []string     `json:"gateway_addresses,omitempty"`
	Paths            []PathStatus `json:"paths,omitempty"` // MIF paths added
}

// ClientMobility is the part of a gateway's client status about its paths.
type ClientMobility struct {
	MOBIKE          bool         `json:"mobike"`
	MIF             bool         `json:"mif"`
	Moves           int          `json:"moves"`
	ClientAddresses []string     `json:"client_addresses,omitempty"` // its ADDITIONAL_* addresses
	Paths           []PathStatus `json:"paths,omitempty"`
}

// PathStatus is one MIF path in a status.
type PathStatus struct {
	ID       uint16 `json:"id"`
	Name     string `json:"name,omitempty"`
	Kind     string `json:"kind"`
	Priority uint8  `json:"priority"`
	Local    string `json:"local,omitempty"`
	Remote   string `json:"remote,omitempty"`
}

// Errors of the path API.
var (
	ErrNotEstablished = errors.New("no IKE SA established")
	ErrNoMOBIKE       = errors.New("the gateway did not negotiate MOBIKE")
	ErrNoMIF          = errors.New("the gateway did not negotiate the MIF extension")
	ErrPathSilent     = errors.New("no answer on the path")
)

// COOKIE2 (RFC 4555 §4.2.3) is 8 to 64 bytes; ours are 16.
const (
	cookie2Len    = 16
	minCookie2Len = 8
	maxCookie2Len = 64
)

func newCookie2() []byte {
	b := make([]byte, cookie2Len)
	rand.Read(b)
	return b
}

// checkCookie2 checks the length of a received COOKIE2.
func checkCookie2(b []byte) error {
	if len(b) < minCookie2Len || len(b) > maxCookie2Len {
		return fmt.Errorf("COOKIE2 of %d bytes, want %d to %d", len(b), minCookie2Len, maxCookie2Len)
	}
	return nil
}

// sessionMobility is the session's MOBIKE and MIF state, owned by its loop
// except for the two channels.
type sessionMobility struct {
	calls chan func(loop context.Context) error // work handed to the loop
	moves chan *Path                            // the latest UpdateAddresses target, for an outstanding request

	path  *Path // the path IKE uses; nil: NewSession's Transport
	steer *Path // the outstanding request is retransmitted here

	mobike, mif bool
	peerAddrs   []netip.Addr
	paths       map[uint16]mifPath
	updates     int
}

type mifPath struct {
	path     Path
	kind     wire.PathKind
	priority uint8
}

func newSessionMobility(cfg *SessionConfig) sessionMobility {
	m := sessionMobility{calls: make(chan func(context.Context) error), moves: make(chan *Path, 1)}
	if cfg.Path != nil {
		p := *cfg.Path
		m.path = &p
	}
	return m
}

// checkPaths checks that the session has a way to send.
func checkPaths(cfg *SessionConfig, tr Transport) error {
	if cfg.Path != nil {
		return cfg.Path.check()
	}
	if tr == nil {
		return errors.New("neither a transport nor a path to send on")
	}
	return nil
}

// route returns how a message to the gateway leaves now.
func (s *Session) route() (Transport, netip.AddrPort) {
	p := s.mob.steer
	if p == nil {
		p = s.mob.path
	}
	if p == nil {
		return s.tr, s.remote
	}
	return p.Transport, p.to(s.remote)
}

// currentPath is the path IKE uses now.
func (s *Session) currentPath() *Path {
	if s.mob.path != nil {
		return s.mob.path
	}
	return &Path{Transport: s.tr}
}

// steerTo makes the outstanding request's retransmissions, and what the
// session sends until the UpdateAddresses that asked for p runs, leave on
// p. (Should that call's caller give up before the loop takes it, p stays
// in use for IKE until the next UpdateAddresses or reconnect; the gateway
// answers to the source of requests, so nothing breaks.)
func (s *Session) steerTo(p *Path) {
	s.mob.steer = p
	s.log.Info("retransmitting the outstanding request on another path", "path", p.ID)
}

// adoptMove takes a path change asked for while no IKE SA was up: the
// next connection attempt uses it.
func (s *Session) adoptMove() {
	s.mob.steer = nil
	select {
	case p := <-s.mob.moves:
		s.mob.path = p
		s.setStatus(func(st *Status) { st.Path, st.PathLocal = p.ID, p.Local.String() })
	default:
	}
}

// authNotifies are the MOBIKE and MIF notifications of our IKE_AUTH
// request.
func (s *Session) authNotifies() []wire.Payload {
	var ps []wire.Payload
	if !s.cfg.DisableMOBIKE {
		ps = append(ps, &wire.Notify{NotifyType: wire.MOBIKE_SUPPORTED})
		ps = append(ps, wire.AddressNotifies(s.cfg.AdditionalAddresses)...)
	}
	if !s.cfg.DisableMIF {
		ps = append(ps, &wire.Notify{NotifyType: wire.MIF_SUPPORTED, Data: wire.MIFSupportedData()})
		if s.cfg.MIFClasses != "" {
			ps = append(ps, &wire.Notify{NotifyType: wire.MIF_CLASSES, Data: wire.MarshalClasses(s.currentPath().Interface, s.cfg.MIFClasses)})
		}
	}
	return ps
}

// authAccepted records what the gateway's IKE_AUTH response said about
// MOBIKE and MIF. A new IKE SA starts with no MIF paths.
func (s *Session) authAccepted(reply []wire.Payload) {
	m := &s.mob
	m.mobike = !s.cfg.DisableMOBIKE && wire.FindNotify(reply, wire.MOBIKE_SUPPORTED) != nil
	m.mif = !s.cfg.DisableMIF && peerMIF(reply)
	m.peerAddrs, _, _ = wire.AdditionalAddresses(reply)
	m.paths = nil
	s.publishMobility()
}

func (s *Session) publishMobility() {
	m := &s.mob
	ms := MobilityStatus{MOBIKE: m.mobike, MIF: m.mif, PathUpdates: m.updates}
	if m.path != nil {
		ms.Path, ms.PathLocal = m.path.ID, m.path.Local.String()
	}
	for _, a := range m.peerAddrs {
		ms.GatewayAddresses = append(ms.GatewayAddresses, a.String())
	}
	ids := make([]uint16, 0, len(m.paths))
	for id := range m.paths {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := m.paths[id]
		ms.Paths = append(ms.Paths, PathStatus{ID: id, Name: p.path.ID, Kind: p.kind.String(), Priority: p.priority,
			Local: p.path.Local.String(), Remote: p.path.to(s.remote).String()})
	}
	s.setStatus(func(st *Status) { st.MobilityStatus = ms })
}

// MOBIKE reports whether the gateway negotiated MOBIKE on the current IKE
// SA.
func (s *Session) MOBIKE() bool { return s.Status().MOBIKE }

// natDetection returns the NAT detection notifications of a request sent
// on p. Without NoNATsAllowed the source hash matches no address, as in
// IKE_SA_INIT, so that the gateway keeps encapsulating ESP in UDP.
func (s *Session) natDetection(sa *ikeSA, p *Path) []wire.Payload {
	src := randomBytes(20)
	if s.cfg.NoNATsAllowed && p.Local.IsValid() {
		src = nATDetectionHash(sa.spiI, sa.spiR, p.Local)
	}
	ps := []wire.Payload{
		&wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: src},
		&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: nATDetectionHash(sa.spiI, sa.spiR, p.to(s.remote))},
	}
	if s.cfg.NoNATsAllowed && p.Local.IsValid() {
		ps = append(ps, &wire.Notify{NotifyType: wire.NO_NATS_ALLOWED, Data: wire.NoNATsData(p.Local, p.to(s.remote))})
	}
	return ps
}

// callResult carries one API call's result from the loop to the caller.
type callResult struct {
	ch   chan error
	sent bool
}

func (r *callResult) set(err error) {
	if !r.sent {
		r.sent = true
		r.ch <- err
	}
}

// call runs f on the session's loop and waits for the result f sets. An
// error f returns ends the session's IKE SA (it reconnects).
func (s *Session) call(ctx context.Context, f func(loop context.Context, r *callResult) error) error {
	return s.callOr(ctx, nil, f)
}

// callOr is call, or the first result from early, which may come before
// the loop takes f (nil: none comes).
func (s *Session) callOr(ctx context.Context, early <-chan error, f func(loop context.Context, r *callResult) error) error {
	r := &callResult{ch: make(chan error, 1)}
	run := func(loop context.Context) error {
		err := f(loop, r)
		if err != nil {
			r.set(err)
		}
		r.set(nil)
		return err
	}
	select {
	case s.mob.calls <- run:
	case err := <-early:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.ch:
		return err
	case err := <-early:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Session) pathCheckPolicy() RetransmitPolicy {
	p := s.cfg.PathCheck
	if p.Timeout <= 0 {
		p.Timeout = s.cfg.Retransmit.Timeout
	}
	if p.Backoff < 1 {
		p.Backoff = s.cfg.Retransmit.Backoff
	}
	if p.Tries <= 0 {
		p.Tries = 3
	}
	return p
}

// pathExchange runs an INFORMATIONAL request sent on path p. It returns
// the response and the round trip time of its last transmission. When p
// stays silent (or the caller gives up), the same request is retransmitted
// on the current path until answered, to keep the message IDs in step,
// and the result is ErrPathSilent. fatal is set when the gateway is lost.
//
// With move (UPDATE_SA_ADDRESSES), our answers to requests the gateway
// sends meanwhile leave on p too: once the gateway has processed the
// update it sends from there (strongSwan rekeys the Child SA at once),
// and it sends responses to where the request came from.
func (s *Session) pathExchange(loop, caller context.Context, p *Path, payloads []wire.Payload, move bool) (reply []wire.Payload, rtt time.Duration, err, fatal error) {
	sa := s.sa
	id := sa.nextOut
	datagrams, err := sealMessage(sa, wire.INFORMATIONAL, id, false, payloads)
	if err != nil {
		return nil, 0, err, nil
	}
	sendOnPath := func() time.Time {
		to := p.to(s.remote)
		for _, d := range datagrams {
			if err := p.Transport.Send(d, to, s.natT); err != nil {
				s.log.Debug("sending IKE message", "path", p.ID, "to", to, "err", err)
			}
		}
		return time.Now()
	}
	pend := &pending{sa: sa, id: id}
	prev := s.mob.steer
	defer func() { s.mob.steer = prev }()
	if move {
		s.mob.steer = p
	}
	policy := s.pathCheckPolicy()
	sent := sendOnPath()
	timeout := policy.Timeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	onPath := true
	callerDone := caller.Done()
	for tries := 1; ; {
		select {
		case <-loop.Done():
			return nil, 0, loop.Err(), loop.Err()
		case <-callerDone:
			callerDone = nil
			if onPath {
				onPath, tries, timeout = false, 1, s.cfg.Retransmit.Timeout
				s.mob.steer = nil
				s.transmit(datagrams)
				timer.Reset(timeout)
			}
		case in := <-s.inbox:
			if err := s.handle(in, pend); err != nil {
				return nil, 0, err, err
			}
			if pend.done {
				sa.nextOut++
				if !onPath {
					return nil, 0, fmt.Errorf("%w %q", ErrPathSilent, p.ID), nil
				}
				return pend.reply, time.Since(sent), nil, nil
			}
		case <-timer.C:
			switch {
			case onPath && tries < policy.Tries:
				tries++
				sent = sendOnPath()
				timeout = time.Duration(float64(timeout) * policy.Backoff)
			case onPath:
				// The path is dead, or only its answers are lost: finish
				// the exchange on the path that works.
				s.log.Info("no answer on the path, finishing the exchange on the current one", "path", p.ID, "tries", tries)
				onPath, tries, timeout = false, 1, s.cfg.Retransmit.Timeout
				s.mob.steer = nil
				s.transmit(datagrams)
			case tries < s.cfg.Retransmit.Tries:
				tries++
				s.transmit(datagrams)
				timeout = time.Duration(float64(timeout) * s.cfg.Retransmit.Backoff)
			default:
				err := fmt.Errorf("%w: no response to INFORMATIONAL on path %q nor on the current path", ErrTimeout, p.ID)
				return nil, 0, err, err
			}
			timer.Reset(timeout)
		}
	}
}

// checkEcho checks a path request's response: no error notification and
// our COOKIE2 echoed.
func checkEcho(reply []wire.Payload, cookie []byte, what string) error {
	for _, n := range wire.FindAll[*wire.Notify](reply) {
		switch {
		case n.NotifyType == wire.UNACCEPTABLE_ADDRESSES:
			return fmt.Errorf("%s: the gateway refused the path's address (UNACCEPTABLE_ADDRESSES)", what)
		case n.NotifyType == wire.UNEXPECTED_NAT_DETECTED:
			return fmt.Errorf("%s: the gateway saw a NAT on the path (UNEXPECTED_NAT_DETECTED)", what)
		case n.NotifyType.IsError():
			return fmt.Errorf("%s: the gateway answered with error notification %d", what, n.NotifyType)
		}
	}
	n := wire.FindNotify(reply, wire.COOKIE2)
	if n == nil || string(n.Data) != string(cookie) {
		return fmt.Errorf("%s: the gateway's answer does not echo our COOKIE2", what)
	}
	return nil
}

// CheckPath tests path p (RFC 4555 §3.4 style): an INFORMATIONAL request
// with NAT detection and COOKIE2 leaves on p; the path works when the
// protected answer comes back echoing COOKIE2. It returns the round trip
// time. IKE keeps using the current path.
func (s *Session) CheckPath(ctx context.Context, p Path) (time.Duration, error) {
	if err := p.check(); err != nil {
		return 0, err
	}
	var rtt time.Duration
	err := s.call(ctx, func(loop context.Context, r *callResult) error {
		if s.sa == nil {
			r.set(ErrNotEstablished)
			return nil
		}
		cookie := newCookie2()
		reply, d, err, fatal := s.pathExchange(loop, ctx, &p, append(s.natDetection(s.sa, &p), &wire.Notify{NotifyType: wire.COOKIE2, Data: cookie}), false)
		if fatal != nil {
			return fatal
		}
		if err == nil {
			err = checkEcho(reply, cookie, "path test")
		}
		if err != nil {
			r.set(fmt.Errorf("checking path %q: %w", p.ID, err))
			return nil
		}
		rtt = d
		r.set(nil)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return rtt, nil
}

// UpdateAddresses moves the IKE SA to path p (UPDATE_SA_ADDRESSES with NAT
// detection and COOKIE2, sent on p, RFC 4555 §3.5). When it is answered,
// every later IKE message (requests, DPD, rekeys) leaves on p and a
// PathHandler learns that ESP should follow. The IKE SA keeps its SPIs. A
// request outstanding on another path is retransmitted on p at once.
func (s *Session) UpdateAddresses(ctx context.Context, p Path) error {
	if err := p.check(); err != nil {
		return err
	}
	target := &p
	// Latest wins: replace a move not taken yet.
	select {
	case <-s.mob.moves:
	default:
	}
	select {
	case s.mob.moves <- target:
	default:
	}
	return s.call(ctx, func(loop context.Context, r *callResult) error {
		select {
		case <-s.mob.moves:
		default:
		}
		// Whatever happens, IKE then leaves on the path the update
		// leaves it on.
		s.mob.steer = nil
		switch {
		case s.sa == nil:
			r.set(ErrNotEstablished)
			return nil
		case !s.mob.mobike:
			r.set(ErrNoMOBIKE)
			return nil
		}
		started := time.Now()
		cookie := newCookie2()
		payloads := append([]wire.Payload{&wire.Notify{NotifyType: wire.UPDATE_SA_ADDRESSES}}, s.natDetection(s.sa, target)...)
		payloads = append(payloads, &wire.Notify{NotifyType: wire.COOKIE2, Data: cookie})
		reply, _, err, fatal := s.pathExchange(loop, ctx, target, payloads, true)
		if fatal != nil {
			return fatal
		}
		if errors.Is(err, ErrPathSilent) {
			// The gateway may have moved before its answer got lost:
			// point it back at the path we use.
			resync := append([]wire.Payload{&wire.Notify{NotifyType: wire.UPDATE_SA_ADDRESSES}}, s.natDetection(s.sa, s.currentPath())...)
			resync = append(resync, &wire.Notify{NotifyType: wire.COOKIE2, Data: newCookie2()})
			if _, err := s.exchange(loop, s.sa, wire.INFORMATIONAL, resync, s.cfg.Retransmit); err != nil {
				r.set(fmt.Errorf("moving to path %q: %w", p.ID, ErrPathSilent))
				return err
			}
		}
		if err == nil {
			err = checkEcho(reply, cookie, "UPDATE_SA_ADDRESSES")
		}
		if err != nil {
			r.set(fmt.Errorf("moving to path %q: %w", p.ID, err))
			return nil
		}
		s.mob.path = target
		s.mob.updates++
		s.publishMobility()
		s.log.Info("moved the IKE SA to another path", "path", p.ID, "local", p.Local, "gateway", p.to(s.remote),
			"took", time.Since(started).Round(time.Microsecond))
		if ph, ok := s.h.(PathHandler); ok {
			ph.PathChanged(p)
		}
		r.set(nil)
		return nil
	})
}

// AddPath announces path p to a gateway that speaks the MIF extension: a
// MIF_PATH_ADD with NAT detection and COOKIE2 leaves on p; the gateway
// records the address and port it sees it from as path id. IKE keeps
// using the current path. Adding an id again updates it.
func (s *Session) AddPath(ctx context.Context, p Path, id uint16, kind wire.PathKind, priority uint8) error {
	if err := p.check(); err != nil {
		return err
	}
	if id == 0 {
		return errors.New("MIF path 0 is the IKE SA's own path")
	}
	return s.call(ctx, func(loop context.Context, r *callResult) error {
		switch {
		case s.sa == nil:
			r.set(ErrNotEstablished)
			return nil
		case !s.mob.mif:
			r.set(ErrNoMIF)
			return nil
		}
		cookie := newCookie2()
		payloads := append([]wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_ADD, Data: wire.PathAdd{ID: id, Kind: kind, Priority: priority, Interface: p.Interface}.Marshal()}},
			s.natDetection(s.sa, &p)...)
		payloads = append(payloads, &wire.Notify{NotifyType: wire.COOKIE2, Data: cookie})
		reply, _, err, fatal := s.pathExchange(loop, ctx, &p, payloads, false)
		if fatal != nil {
			return fatal
		}
		if err == nil {
			err = checkEcho(reply, cookie, "MIF_PATH_ADD")
		}
		if err != nil {
			r.set(fmt.Errorf("adding path %q as %d: %w", p.ID, id, err))
			return nil
		}
		if s.mob.paths == nil {
			s.mob.paths = map[uint16]mifPath{}
		}
		s.mob.paths[id] = mifPath{path: p, kind: kind, priority: priority}
		s.publishMobility()
		r.set(nil)
		return nil
	})
}

// RemovePath tells the gateway that MIF path id leaves (MIF_PATH_REMOVE,
// on the current path).
func (s *Session) RemovePath(ctx context.Context, id uint16) error {
	return s.call(ctx, func(loop context.Context, r *callResult) error {
		if _, ok := s.mob.paths[id]; !ok || s.sa == nil {
			r.set(fmt.Errorf("removing path %d: no such MIF path", id))
			return nil
		}
		reply, err := s.exchange(loop, s.sa, wire.INFORMATIONAL, []wire.Payload{&wire.Notify{NotifyType: wire.MIF_PATH_REMOVE, Data: wire.PathRemoveData(id)}}, s.cfg.Retransmit)
		if err != nil {
			r.set(fmt.Errorf("removing path %d: %w", id, err))
			return err
		}
		if err := firstError(reply, "INFORMATIONAL (MIF_PATH_REMOVE)"); err != nil {
			r.set(fmt.Errorf("removing path %d: %w", id, err))
			return nil
		}
		delete(s.mob.paths, id)
		s.publishMobility()
		r.set(nil)
		return nil
	})
}

// mobilityReply is what our answer to a gateway's INFORMATIONAL adds: the
// COOKIE2 echo (RFC 4555 §4.2.3) and NAT detection for a return
// routability check; a new address list of the gateway is recorded.
func (s *Session) mobilityReply(sa *ikeSA, req []wire.Payload) []wire.Payload {
	var out []wire.Payload
	if n := wire.FindNotify(req, wire.COOKIE2); n != nil && checkCookie2(n.Data) == nil {
		out = append(out, &wire.Notify{NotifyType: wire.COOKIE2, Data: n.Data})
	}
	if wire.FindNotify(req, wire.NAT_DETECTION_DESTINATION_IP) != nil {
		_, to := s.route()
		out = append(out, &wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: randomBytes(20)},
			&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: nATDetectionHash(sa.spiI, sa.spiR, to)})
	}
	if addrs, _, found := wire.AdditionalAddresses(req); found && s.mob.mobike {
		s.mob.peerAddrs = addrs
		s.publishMobility()
	}
	return out
}

// clientMobility is a gateway's MOBIKE and MIF state of one client.
type clientMobility struct {
	mobike, mif bool
	announce    bool               // the gateway's addresses changed since the client was told
	moves       int32              // beside the flags: 8 bytes less per client
	addrs       []netip.Addr       // its ADDITIONAL_* addresses
	paths       []PathInfo         // MIF paths, by ID
	checks      []routabilityCheck // return routability checks waiting for their turn
}

// routabilityCheck is a new address of a client (reached from the
// gateway's address local) that the gateway uses only after the client
// proved it receives there (RFC 4555 §5.2): then runs once the client
// echoed the check's COOKIE2 from that address's request.
type routabilityCheck struct {
	local netip.Addr
	to    netip.AddrPort
	then  func()
}

// Bounds on what one client may ask the gateway to track.
const (
	// MaxClientPaths is the number of MIF paths a client may have at
	// once.
	MaxClientPaths = 16
	// MaxPathID is the largest MIF path ID the gateway accepts (the
	// scheduler tracks 64 paths per peer, path 0 being the IKE SA's).
	MaxPathID = 63
	// maxPendingChecks bounds the return routability checks queued per
	// client; the oldest is dropped (the client asks again).
	maxPendingChecks = 4
)

// checkRoutability queues a return routability check of to (from the
// gateway's address local) for c and starts it when c has no request of
// the gateway outstanding.
func (r *Responder) checkRoutability(c *rClient, local netip.Addr, to netip.AddrPort, then func()) {
	if len(c.mob.checks) >= maxPendingChecks {
		r.log.Debug("return routability checks queued to the limit: dropping the oldest", "id", c.ID, "to", c.mob.checks[0].to)
		c.mob.checks = c.mob.checks[1:]
	}
	c.mob.checks = append(c.mob.checks, routabilityCheck{local: local, to: to, then: then})
	r.nextRoutabilityCheck(c)
}

// nextRoutabilityCheck starts c's next queued check if nothing else of the
// gateway's is outstanding: an INFORMATIONAL request with a fresh COOKIE2
// sent to the new address; the client's answer must echo it.
func (r *Responder) nextRoutabilityCheck(c *rClient) {
	if c.pending != nil || len(c.mob.checks) == 0 || c.sa == nil {
		return
	}
	chk := c.mob.checks[0]
	c.mob.checks = c.mob.checks[1:]
	cookie := newCookie2()
	sa := c.sa
	err := r.requestTo(c, chk.local, chk.to, wire.INFORMATIONAL, []wire.Payload{&wire.Notify{NotifyType: wire.COOKIE2, Data: cookie}}, func(reply []wire.Payload) {
		var echo []byte
		if n := wire.FindNotify(reply, wire.COOKIE2); n != nil {
			echo = n.Data
		}
		switch {
		case reply == nil:
			r.log.Info("client's new address did not answer a return routability check: not used", "id", c.ID, "address", chk.to)
		case subtle.ConstantTimeCompare(echo, cookie) != 1:
			r.log.Info("client's answer to a return routability check lacks its COOKIE2: address not used", "id", c.ID, "address", chk.to)
		case c.sa != sa || !r.holds(c):
			// The client rekeyed its IKE SA or left meanwhile.
		default:
			chk.then()
		}
		r.nextRoutabilityCheck(c)
	})
	if err != nil {
		r.log.Debug("return routability check", "id", c.ID, "to", chk.to, "err", err)
	}
}

// AnnounceAddresses tells every MOBIKE client the gateway's addresses
// anew (RFC 4555 §3.6), for a gateway whose addresses changed: an
// INFORMATIONAL request with ADDITIONAL_IP4/6_ADDRESS, or
// NO_ADDITIONAL_ADDRESSES, as AdditionalAddressesFor says when it is sent.
// A client with a request of the gateway outstanding is told once that
// one is answered.
func (r *Responder) AnnounceAddresses(ctx context.Context) error {
	if !r.do(ctx, func() {
		for _, c := range r.clients {
			if c.mob.mobike {
				c.mob.announce = true
				r.nextAnnouncement(c)
			}
		}
	}) {
		return ctx.Err()
	}
	return nil
}

// additionalAddressesOf are the addresses a client that talks to the
// gateway's local may also use.
func (r *Responder) additionalAddressesOf(c *rClient) []netip.Addr {
	if r.cfg.AdditionalAddressesFor != nil {
		return r.cfg.AdditionalAddressesFor(c.Local)
	}
	return r.cfg.AdditionalAddresses
}

// nextAnnouncement sends c the gateway's addresses if they changed since
// it was last told and nothing else of the gateway's is outstanding.
func (r *Responder) nextAnnouncement(c *rClient) {
	if !c.mob.announce || c.pending != nil || c.sa == nil {
		return
	}
	c.mob.announce = false
	addrs := r.additionalAddressesOf(c)
	err := r.request(c, wire.INFORMATIONAL, wire.AddressNotifies(addrs), func(reply []wire.Payload) {
		if reply == nil {
			r.log.Info("client did not answer the gateway's new addresses", "id", c.ID)
		}
		r.nextRoutabilityCheck(c)
		r.nextAnnouncement(c)
	})
	if err != nil {
		r.log.Debug("announcing the gateway's addresses", "id", c.ID, "err", err)
		return
	}
	r.log.Debug("told a client the gateway's addresses", "id", c.ID, "addresses", addrs)
}

func (m *clientMobility) status() ClientMobility {
	st := ClientMobility{MOBIKE: m.mobike, MIF: m.mif, Moves: int(m.moves)}
	for _, a := range m.addrs {
		st.ClientAddresses = append(st.ClientAddresses, a.String())
	}
	for _, p := range m.paths {
		ps := PathStatus{ID: p.ID, Kind: p.Kind.String(), Priority: p.Priority, Remote: p.Remote.String()}
		if p.Local.IsValid() {
			ps.Local = p.Local.String()
		}
		st.Paths = append(st.Paths, ps)
	}
	return st
}

// authMobility adds the gateway's MOBIKE and MIF answers to an IKE_AUTH
// response, for a client that announced them.
func (r *Responder) authMobility(sa *rSA, req, reply []wire.Payload) []wire.Payload {
	c := sa.client
	if c == nil || c.sa != sa {
		return reply // authentication failed
	}
	if !r.cfg.DisableMOBIKE && wire.FindNotify(req, wire.MOBIKE_SUPPORTED) != nil {
		c.mob.mobike = true
		reply = append(reply, &wire.Notify{NotifyType: wire.MOBIKE_SUPPORTED})
		reply = append(reply, wire.AddressNotifies(r.additionalAddressesOf(c))...)
		c.mob.addrs, _, _ = wire.AdditionalAddresses(req)
	}
	if !r.cfg.DisableMIF && peerMIF(req) {
		c.mob.mif = true
		reply = append(reply, &wire.Notify{NotifyType: wire.MIF_SUPPORTED, Data: wire.MIFSupportedData()})
		if n := wire.FindNotify(req, wire.MIF_CLASSES); n != nil {
			// Informational: a malformed one is logged and left aside.
			if iface, rules, err := wire.ParseClasses(n.Data); err != nil {
				r.log.Info("ignoring a client's traffic classes", "id", c.ID, "err", err)
			} else {
				c.PeerClasses, c.PathInterface = rules, iface
			}
		}
	}
	return reply
}

// respondClient answers a request of an authenticated client. Without
// MOBIKE the client's address follows its requests (RFC 7296 §2.23); with
// MOBIKE only UPDATE_SA_ADDRESSES moves it (RFC 4555 §3.5), and a path
// test is answered to where it came from without moving anything.
func (r *Responder) respondClient(sa *rSA, exchange wire.ExchangeType, req []wire.Payload, from netip.AddrPort) ([]wire.Payload, func()) {
	c := sa.client
	if !c.mob.mobike {
		c.Local, c.Remote = sa.reqLocal, from
	}
	if exchange != wire.INFORMATIONAL {
		return dispatchInSARequest(r, sa, exchange, req)
	}
	// Checked before anything else of the request takes effect.
	extra, then, fail := r.mobilityRequest(c, sa, req, sa.reqLocal, from)
	if fail != nil {
		return []wire.Payload{fail}, nil
	}
	reply, after := dispatchInSARequest(r, sa, exchange, req)
	reply = append(reply, extra...)
	return reply, func() {
		if after != nil {
			after()
		}
		if then != nil {
			then()
		}
	}
}

// mobilityRequest handles the MOBIKE and MIF notifications of a client's
// INFORMATIONAL request, which came from from to the gateway's address
// local: it returns what the answer adds and what to do once it is sent,
// or the error notification to answer with instead. It changes nothing
// itself.
//
// A client's path is the pair of its address and the gateway's: a client
// that talks to two gateway addresses from one socket has two paths.
func (r *Responder) mobilityRequest(c *rClient, sa *rSA, req []wire.Payload, local netip.Addr, from netip.AddrPort) ([]wire.Payload, func(), *wire.Notify) {
	here := func(l netip.Addr, remote netip.AddrPort) bool { return l == local && remote == from }
	var out []wire.Payload
	var then []func()
	if n := wire.FindNotify(req, wire.COOKIE2); n != nil {
		if checkCookie2(n.Data) != nil {
			return nil, nil, &wire.Notify{NotifyType: wire.INVALID_SYNTAX}
		}
		out = append(out, &wire.Notify{NotifyType: wire.COOKIE2, Data: n.Data})
	}
	if n := wire.FindNotify(req, wire.NO_NATS_ALLOWED); n != nil && c.mob.mobike {
		src, _, err := wire.ParseNoNATs(n.Data)
		if err != nil {
			return nil, nil, &wire.Notify{NotifyType: wire.INVALID_SYNTAX}
		}
		// The gateway's own address is the socket's: only the client's
		// side is compared.
		if src.Addr().Unmap() != from.Addr().Unmap() || src.Port() != from.Port() {
			r.log.Info("client's path crosses a NAT, which it does not allow", "id", c.ID, "sent_from", src, "seen_from", from)
			return nil, nil, &wire.Notify{NotifyType: wire.UNEXPECTED_NAT_DETECTED}
		}
	}
	if wire.FindNotify(req, wire.NAT_DETECTION_DESTINATION_IP) != nil {
		// The source hash matches no address: the client keeps
		// encapsulating ESP in UDP, the only ESP the data plane carries.
		out = append(out, &wire.Notify{NotifyType: wire.NAT_DETECTION_SOURCE_IP, Data: randomBytes(20)},
			&wire.Notify{NotifyType: wire.NAT_DETECTION_DESTINATION_IP, Data: nATDetectionHash(sa.spiI, sa.spiR, from)})
	}
	if addrs, _, found := wire.AdditionalAddresses(req); found && c.mob.mobike {
		then = append(then, func() { c.mob.addrs = addrs })
	}
	ph, _ := r.h.(ResponderPathHandler)
	if wire.FindNotify(req, wire.UPDATE_SA_ADDRESSES) != nil && c.mob.mobike {
		// The request is authenticated, its source address is not: the
		// SAs move only once the client answers there (RFC 4555 §5.2), so
		// no one can point the gateway's traffic at a third party.
		then = append(then, func() {
			if here(c.Local, c.Remote) {
				return
			}
			r.checkRoutability(c, local, from, func() {
				if here(c.Local, c.Remote) {
					return
				}
				r.log.Info("client moved", "id", c.ID, "from", c.Remote, "to", from, "gateway_address", local)
				c.Local, c.Remote = local, from
				c.mob.moves++
				if ph != nil {
					ph.ClientMoved(&c.RemoteClient)
				}
			})
		})
	}
	if n := wire.FindNotify(req, wire.MIF_PATH_ADD); n != nil && c.mob.mif {
		add, err := wire.ParsePathAdd(n.Data)
		if err != nil || wire.FindNotify(req, wire.COOKIE2) == nil {
			return nil, nil, &wire.Notify{NotifyType: wire.INVALID_SYNTAX}
		}
		// An address already in use is refused: it is the IKE SA's own
		// path, or the request reached us on another path than the one
		// it announces (a retransmission on the current path).
		if add.ID == 0 || add.ID > MaxPathID {
			return nil, nil, &wire.Notify{NotifyType: wire.INVALID_SYNTAX}
		}
		if here(c.Local, c.Remote) || slices.ContainsFunc(c.mob.paths, func(p PathInfo) bool { return here(p.Local, p.Remote) && p.ID != add.ID }) {
			return nil, nil, &wire.Notify{NotifyType: wire.UNACCEPTABLE_ADDRESSES}
		}
		known := slices.ContainsFunc(c.mob.paths, func(p PathInfo) bool { return p.ID == add.ID })
		switch {
		case !known && len(c.mob.paths) >= MaxClientPaths:
			r.log.Info("client announced more paths than allowed", "id", c.ID, "paths", len(c.mob.paths), "max", MaxClientPaths)
			return nil, nil, &wire.Notify{NotifyType: wire.UNACCEPTABLE_ADDRESSES}
		case c.child == nil:
			// Paths carry ESP: without a Child SA there is nothing to
			// schedule, and nothing to tear the scheduling down with.
			return nil, nil, &wire.Notify{NotifyType: wire.UNACCEPTABLE_ADDRESSES}
		}
		info := PathInfo{ID: add.ID, Kind: add.Kind, Priority: add.Priority, Local: local, Remote: from, Interface: add.Interface}
		// The client's COOKIE2 proves nothing of its address: the gateway
		// sends there only after its own check came back.
		then = append(then, func() {
			r.checkRoutability(c, local, from, func() {
				if c.child == nil {
					return
				}
				c.mob.paths = slices.DeleteFunc(c.mob.paths, func(p PathInfo) bool { return p.ID == info.ID })
				if len(c.mob.paths) >= MaxClientPaths {
					return
				}
				i, _ := slices.BinarySearchFunc(c.mob.paths, info.ID, func(p PathInfo, id uint16) int { return cmp.Compare(p.ID, id) })
				c.mob.paths = slices.Insert(c.mob.paths, i, info)
				r.log.Info("client added a path", "id", c.ID, "path", info.ID, "kind", info.Kind, "priority", info.Priority, "remote", info.Remote,
					"gateway_address", info.Local)
				if ph != nil {
					ph.PathAdded(&c.RemoteClient, info)
				}
			})
		})
	}
	if n := wire.FindNotify(req, wire.MIF_PATH_REMOVE); n != nil && c.mob.mif {
		id, err := wire.ParsePathRemove(n.Data)
		if err != nil {
			return nil, nil, &wire.Notify{NotifyType: wire.INVALID_SYNTAX}
		}
		then = append(then, func() {
			n := len(c.mob.paths)
			c.mob.paths = slices.DeleteFunc(c.mob.paths, func(p PathInfo) bool { return p.ID == id })
			if len(c.mob.paths) != n && ph != nil {
				ph.PathRemoved(&c.RemoteClient, id)
			}
		})
	}
	return out, func() {
		for _, f := range then {
			f()
		}
	}, nil
}
