package load

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
	"github.com/mifsec/mifsec/ike/wire"
	"github.com/mifsec/mifsec/internal/inetsum"
	"github.com/mifsec/mifsec/mif"
)

// A client fleet loads a gateway with many IKEv2 clients at once, in one
// process: each client is an initiator Session (package ike) with its own
// UDP socket, so the gateway sees a distinct source address and port per
// client. A client counts as established when its IKE SA and Child SA are
// up, and as passing traffic when an ICMP echo request it seals with its
// Child SA, from its leased inner address to ClientsConfig.Target, comes
// back as a sealed echo reply. The ESP is built and opened here with
// dataplane.SA, without a TUN device, so a fleet of hundreds runs in one
// network namespace without touching its routes.

// ClientsConfig describes a client fleet.
type ClientsConfig struct {
	// Gateway is where IKE_SA_INIT goes: the gateway's address with port
	// 500 (the clients float to 4500 as every IKEv2 client does) or 4500.
	Gateway netip.AddrPort
	Count   int
	// Sources are the local addresses the clients' sockets bind to (port
	// 0), round robin; empty binds the unspecified address of the
	// gateway's family.
	Sources []netip.Addr
	// Target is the inner address each client pings through its tunnel:
	// an address on the gateway itself (the first address of its pool)
	// or one in its protected networks.
	Target netip.Addr
	// RemoteTS are the selectors each client proposes for the gateway's
	// side; empty means Target alone. A test of the gateway's policy
	// proposes one network and sends to an address outside it, as a
	// client that ignores its selectors would.
	RemoteTS []netip.Prefix

	// ID names client i; nil means the FQDN client-i.fleet.bench. Every
	// client needs its own identity: a gateway drops the older IKE SAs of
	// an identity that connects again with INITIAL_CONTACT.
	ID func(i int) ike.Identity
	// PSK authenticates every client with one pre-shared key. Otherwise
	// Credentials gives client i its identity, key and certificate chain
	// (end entity first), and CAs verifies the gateway.
	PSK         []byte
	Credentials func(i int) (ike.Identity, crypto.Signer, []*x509.Certificate, error)
	CAs         *ike.TrustStore
	RemoteID    ike.Identity // the gateway's expected identity; required with CAs

	IKE, ESP   []ike.ProposalSpec // nil: aes256gcm16-prfsha256-x25519 and aes256gcm16
	Retransmit ike.RetransmitPolicy
	// ChildRekey and IKERekey make each client rekey its Child SA and IKE
	// SA that often (0: never).
	ChildRekey, IKERekey time.Duration
	// Timeout bounds each client's handshake and, separately, its echo;
	// 0 means 10 s.
	Timeout time.Duration
	// Retry, when set, makes a client whose connection attempt fails (its
	// gateway silent or busy) start a new one after a pause, as a
	// service manager restarts mifsec connect, until Timeout has passed
	// since its first: Retry at first, then twice the last up to 8 times
	// Retry, each jittered by up to a quarter. A refused key or proposal
	// is not retried. 0: one attempt.
	Retry time.Duration
	// StartRate starts that many clients a second (client i at i/StartRate
	// after the start) instead of all at once (0): a gateway whose
	// admissions wait for etcd takes a few hundred a second, and clients
	// that all come at once exhaust their retransmissions in its queue.
	StartRate float64
	Logger    *slog.Logger

	// Gateways makes the fleet outlive its gateways (reconnect.go):
	// client i starts at Gateways[i mod len] (Gateway is then ignored)
	// and, when its session ends, connects again at the next one. DPD is
	// the clients' liveness check interval (0: ike's default).
	Gateways []netip.AddrPort
	DPD      time.Duration
}

// ClientResult is what one client of a fleet observed.
type ClientResult struct {
	ID          string
	Local       netip.AddrPort // its socket
	Address     netip.Addr     // the inner address it leased
	Handshake   time.Duration  // IKE_SA_INIT and IKE_AUTH, as the client timed them
	Established time.Duration  // from the fleet's start until its Child SA was up
	EchoRTT     time.Duration  // the echo that passed through the tunnel
	Echoes      int            // echo requests sent until one was answered
	Attempts    int            // connection attempts (Retry), 1 without
	// Reconnected: its echo passed only after its session had torn its
	// tunnel down and set it up again (its liveness check unanswered,
	// or the gateway deleted its IKE SA).
	Reconnected bool
	TrafficOK   bool
	Err         error
}

// ClientsReport sums up a fleet.
type ClientsReport struct {
	Count, Established, TrafficOK int
	// Retried counts the established clients that needed more than one
	// attempt (ClientsConfig.Retry); Reconnected those whose echo passed
	// only through a tunnel set up again (ClientResult.Reconnected).
	Retried, Reconnected int
	// All is the time from the start until the last client was
	// established (0 when some never were).
	All                                      time.Duration
	HandshakeP50, HandshakeP99, HandshakeMax time.Duration
	EchoP50, EchoMax                         time.Duration
	Errors                                   []string // the distinct errors, with counts
}

func (r ClientsReport) String() string {
	all := "not all"
	if r.Established == r.Count {
		all = "all within " + r.All.Round(time.Millisecond).String()
	}
	s := fmt.Sprintf("%d clients: %d established (%s), %d passed traffic; handshake p50 %v p99 %v max %v; echo p50 %v max %v",
		r.Count, r.Established, all, r.TrafficOK,
		r.HandshakeP50.Round(time.Millisecond), r.HandshakeP99.Round(time.Millisecond), r.HandshakeMax.Round(time.Millisecond),
		r.EchoP50.Round(100*time.Microsecond), r.EchoMax.Round(100*time.Microsecond))
	if r.Retried > 0 {
		s += fmt.Sprintf("; %d established after more than one attempt", r.Retried)
	}
	if r.Reconnected > 0 {
		s += fmt.Sprintf("; %d passed their echo only after their tunnel was set up again", r.Reconnected)
	}
	if len(r.Errors) > 0 {
		s += "; errors: " + strings.Join(r.Errors, "; ")
	}
	return s
}

// Fleet is a running client fleet.
type Fleet struct {
	cfg      ClientsConfig
	clients  []*fleetClient
	results  []ClientResult
	cancel   context.CancelFunc
	sessions sync.WaitGroup // the clients' connect goroutines, which end with their sessions
	wg       sync.WaitGroup // the receive goroutines, which end with their sockets
}

// fleetClient is one client: its socket, session and ESP state.
type fleetClient struct {
	i    int
	cfg  *ClientsConfig
	conn *net.UDPConn
	sess atomic.Pointer[ike.Session]
	id   uint16 // ICMP identifier

	mu    sync.Mutex
	in    map[uint32]*dataplane.SA // by SPI
	outs  map[uint32]*dataplane.SA // by the inbound SPI of their pair
	out   *dataplane.SA            // the one that sends
	addrs []netip.Prefix
	echo  chan uint16 // sequence numbers of echo replies

	roam    roamState                       // where it talks now, what it went through (reconnect.go)
	traffic atomic.Pointer[trafficCounters] // the traffic phase under way (traffic.go)
}

// FleetIDs names a fleet's clients prefix-i.fleet.bench (FQDNs), so that
// fleets of different prefixes never share an identity.
func FleetIDs(prefix string) func(int) ike.Identity {
	return func(i int) ike.Identity {
		return ike.Identity{Type: wire.IDFQDN, Data: fmt.Appendf(nil, "%s-%d.fleet.bench", prefix, i)}
	}
}

// StartClients opens one socket per client, on the calling goroutine so
// that a caller inside a network namespace gets them in that namespace,
// then connects every client at once and has each pass an echo through its
// tunnel. It returns when every client succeeded or failed; the
// established ones stay up (answering the gateway's liveness checks and
// rekeys) until Close.
func StartClients(ctx context.Context, cfg ClientsConfig) (*Fleet, error) {
	if cfg.Count <= 0 {
		return nil, errors.New("client fleet: no clients")
	}
	if len(cfg.Gateways) > 0 {
		cfg.Gateway = cfg.Gateways[0]
	}
	if !cfg.Gateway.IsValid() || !cfg.Target.IsValid() {
		return nil, errors.New("client fleet: gateway address and target are required")
	}
	if !cfg.Target.Is4() {
		return nil, errors.New("client fleet: the target must be an IPv4 address")
	}
	if len(cfg.PSK) == 0 && cfg.Credentials == nil {
		return nil, errors.New("client fleet: neither a PSK nor credentials")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.ID == nil {
		cfg.ID = FleetIDs("client")
	}
	if cfg.IKE == nil {
		cfg.IKE, _ = ike.ParseIKEProposals("aes256gcm16-prfsha256-x25519")
	}
	if cfg.ESP == nil {
		cfg.ESP, _ = ike.ParseESPProposals("aes256gcm16")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg, results: make([]ClientResult, cfg.Count)}
	for i := range cfg.Count {
		src := netip.IPv4Unspecified()
		if cfg.Gateway.Addr().Is6() {
			src = netip.IPv6Unspecified()
		}
		if len(cfg.Sources) > 0 {
			src = cfg.Sources[i%len(cfg.Sources)]
		}
		network := "udp6"
		if src.Is4() {
			network = "udp4"
		}
		conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			f.closeSockets()
			return nil, fmt.Errorf("client fleet: socket of client %d on %s: %w", i, src, err)
		}
		f.clients = append(f.clients, &fleetClient{i: i, cfg: &f.cfg, conn: conn, id: uint16(i),
			in: map[uint32]*dataplane.SA{}, outs: map[uint32]*dataplane.SA{}, echo: make(chan uint16, 4)})
		f.clients[i].startAt()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	start := time.Now()
	var up sync.WaitGroup
	for _, c := range f.clients {
		up.Add(1)
		f.wg.Go(func() { c.receive() })
		f.sessions.Go(func() {
			res := &f.results[c.i]
			res.Local = netip.MustParseAddrPort(c.conn.LocalAddr().String())
			if cfg.StartRate > 0 {
				wait := time.NewTimer(time.Until(start.Add(time.Duration(float64(c.i) / cfg.StartRate * float64(time.Second)))))
				select {
				case <-wait.C:
				case <-ctx.Done():
					wait.Stop()
					res.Err = ctx.Err()
					up.Done()
					return
				}
			}
			c.connect(ctx, runCtx, res, start, up.Done)
		})
	}
	up.Wait()
	return f, nil
}

// connect runs one client: handshake, echo, then its session until the
// fleet closes. ready is called once the echo passed or anything failed.
func (c *fleetClient) connect(ctx, runCtx context.Context, res *ClientResult, start time.Time, ready func()) {
	readyOnce := sync.OnceFunc(ready)
	defer readyOnce()
	cfg := c.cfg
	remoteTS := cfg.RemoteTS
	if len(remoteTS) == 0 {
		remoteTS = []netip.Prefix{netip.PrefixFrom(cfg.Target, 32)}
	}
	scfg := ike.SessionConfig{Remote: c.gateway(), DPD: cfg.DPD, RemoteID: cfg.RemoteID, PSK: cfg.PSK, CAs: cfg.CAs,
		IKE: cfg.IKE, ESP: cfg.ESP, RequestIPv4: true, Retransmit: cfg.Retransmit,
		ChildRekey: cfg.ChildRekey, IKERekey: cfg.IKERekey,
		RemoteTS: remoteTS,
		Logger:   cfg.Logger.With("client", c.i)}
	scfg.LocalID = cfg.ID(c.i)
	if cfg.Credentials != nil {
		id, key, certs, err := cfg.Credentials(c.i)
		if err != nil {
			res.Err = fmt.Errorf("credentials: %w", err)
			return
		}
		scfg.LocalID, scfg.Key, scfg.Certificates, scfg.PSK = id, key, certs, nil
	}
	res.ID = scfg.LocalID.String()
	if len(cfg.Gateways) > 0 {
		scfg.WaitToConnect, scfg.ReconnectDelay = moveOn, roamReconnectDelay
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	s, t0, err := c.attempt(hctx, scfg, res)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = fmt.Errorf("no IKE SA with %s within %v", scfg.Remote, cfg.Timeout)
	}
	if err != nil {
		res.Err = fmt.Errorf("connecting: %w", err)
		return
	}
	res.Handshake, res.Established = time.Since(t0), time.Since(start)
	res.Address = c.innerAddress(netip.Addr{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(runCtx, s, scfg) // answers the gateway; deletes the IKE SA when the fleet closes
	}()
	res.EchoRTT, res.Echoes, res.Reconnected, res.Err = c.ping(ctx, res.Address)
	res.TrafficOK = res.Err == nil
	readyOnce()
	<-done
}

// attempt connects a new session, and with Retry again after each failed
// attempt until ctx ends. It returns the session that connected and when
// its attempt began.
func (c *fleetClient) attempt(ctx context.Context, scfg ike.SessionConfig, res *ClientResult) (*ike.Session, time.Time, error) {
	pause := c.cfg.Retry
	for {
		s, err := ike.NewSession(scfg, c, c)
		if err != nil {
			return nil, time.Time{}, err
		}
		c.sess.Store(s)
		res.Attempts++
		t0 := time.Now()
		err = s.Connect(ctx)
		if err == nil || c.cfg.Retry <= 0 || ctx.Err() != nil || errors.Is(err, ike.ErrAuthFailed) || errors.Is(err, ike.ErrNoProposalChosen) {
			return s, t0, err
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, err
		case <-time.After(pause + rand.N(pause/4+1)):
		}
		pause = min(2*pause, 8*c.cfg.Retry)
	}
}

// ping sends echo requests through the tunnel, one a second, until one is
// answered or the timeout passes. While the session has no tunnel (it tore
// it down to set it up again) it waits for the new one, from its new
// address, and says so (reconnected).
func (c *fleetClient) ping(ctx context.Context, src netip.Addr) (rtt time.Duration, echoes int, reconnected bool, err error) {
	if !src.Is4() {
		return 0, 0, false, errors.New("no inner IPv4 address leased")
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	for seq := uint16(1); ; seq++ {
		sent, err := c.sendEcho(src, seq)
		switch {
		case errors.Is(err, errNoOutboundSA):
			reconnected = true
			select {
			case <-ctx.Done():
			case <-time.After(echoRetry):
			}
			src = c.innerAddress(src)
		case err != nil:
			return 0, int(seq), reconnected, err
		case c.awaitEcho(ctx, seq, echoRetry):
			return time.Since(sent), int(seq), reconnected, nil
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if errors.Is(err, errNoOutboundSA) {
					return 0, int(seq), reconnected, fmt.Errorf("no tunnel again within %v after the session tore it down", c.cfg.Timeout)
				}
				return 0, int(seq), reconnected, fmt.Errorf("no echo reply from %s through the tunnel within %v", c.cfg.Target, c.cfg.Timeout)
			}
			return 0, int(seq), reconnected, ctx.Err()
		}
	}
}

// echoRetry is how long ping waits for a reply, or for a tunnel, before
// it sends the next echo.
const echoRetry = time.Second

// errNoOutboundSA: the client has no tunnel at the moment.
var errNoOutboundSA = errors.New("no outbound SA")

// innerAddress is the client's inner IPv4 address now, or old when it has
// none (between two tunnels).
func (c *fleetClient) innerAddress(old netip.Addr) netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.addrs {
		if p.Addr().Is4() {
			return p.Addr()
		}
	}
	return old
}

// receive hands IKE messages to the session and opens ESP until the
// socket closes.
func (c *fleetClient) receive() {
	// IKE messages above this size come fragmented (RFC 7383), and the
	// ESP here carries echoes: small buffers keep a fleet of thousands
	// small.
	buf := make([]byte, 8192)
	dst := make([]byte, len(buf)+dataplane.Headroom)
	for {
		n, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !c.accepts(from.Addr()) {
			continue // a client talks to its gateway's address only
		}
		b := buf[:n]
		switch {
		case from.Port() != 4500:
			if s := c.sess.Load(); s != nil {
				s.Deliver(b, from, false)
			}
		case n == 1 && b[0] == 0xff: // NAT keepalive
		case n >= 4 && binary.BigEndian.Uint32(b) == 0: // non-ESP marker
			if s := c.sess.Load(); s != nil {
				s.Deliver(b[4:], from, true)
			}
		case n >= 8:
			c.mu.Lock()
			sa := c.in[binary.BigEndian.Uint32(b)]
			c.mu.Unlock()
			if sa == nil {
				continue
			}
			payload, next, err := sa.OpenTo(dst, b)
			if err != nil || next != dataplane.NextHeaderIPv4 {
				continue
			}
			if seq, data, ok := echoReply(payload, c.id); ok && !c.countTraffic(data) {
				select {
				case c.echo <- seq:
				default:
				}
			}
		}
	}
}

// Send implements ike.Transport on the client's socket.
func (c *fleetClient) Send(msg []byte, to netip.AddrPort, natT bool) error {
	if natT {
		b := make([]byte, 4+len(msg)) // non-ESP marker
		copy(b[4:], msg)
		msg = b
	}
	_, err := c.conn.WriteToUDPAddrPort(msg, to)
	return err
}

// InstallChild implements ike.Handler.
func (c *fleetClient) InstallChild(child *ike.ChildSA) error {
	in, out, err := mif.NewChildSAs(child)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in[child.InSPI] = in
	c.outs[child.InSPI] = out
	if c.out == nil {
		c.out = out
	}
	return nil
}

// SwitchOutbound implements ike.Handler.
func (c *fleetClient) SwitchOutbound(child *ike.ChildSA) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if out := c.outs[child.InSPI]; out != nil {
		c.out = out
	}
}

// RemoveChild implements ike.Handler.
func (c *fleetClient) RemoveChild(child *ike.ChildSA) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out == c.outs[child.InSPI] {
		c.out = nil
		for spi, o := range c.outs {
			if spi != child.InSPI {
				c.out = o
			}
		}
	}
	delete(c.in, child.InSPI)
	delete(c.outs, child.InSPI)
}

// Configured implements ike.Handler.
func (c *fleetClient) Configured(addrs []netip.Prefix, _ []netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs = slices.Clone(addrs)
	c.roam.configured(addrs, c.gateway())
	return nil
}

// EchoLoop has every established client send an echo through its tunnel
// each interval until ctx ends, waiting up to the interval for its reply,
// and reports each to record (from several goroutines at once). Only
// after StartClients returned: the clients' first echoes are done.
func (f *Fleet) EchoLoop(ctx context.Context, interval time.Duration, record func(client int, sent time.Time, ok bool)) {
	var wg sync.WaitGroup
	for _, c := range f.clients {
		if !f.results[c.i].TrafficOK {
			continue
		}
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			c.roam.echoesStart()
			for seq := uint16(1000); ; seq++ {
				sent, err := c.sendEcho(c.address(), seq)
				ok := err == nil && c.awaitEcho(ctx, seq, interval)
				if ctx.Err() != nil {
					c.roam.echoesEnd()
					return
				}
				c.echoed(ctx, ok)
				record(c.i, sent, ok)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	wg.Wait()
}

// sendEcho seals an echo request with sequence number seq from src to the
// target and sends it to the gateway.
func (c *fleetClient) sendEcho(src netip.Addr, seq uint16) (time.Time, error) {
	buf := make([]byte, dataplane.Headroom+64+dataplane.Tailroom)
	c.mu.Lock()
	out := c.out
	c.mu.Unlock()
	if out == nil || !src.Is4() {
		return time.Now(), errNoOutboundSA
	}
	n := echoRequest(buf[dataplane.Headroom:], src, c.cfg.Target, c.id, seq)
	pkt, err := out.Seal(buf, n, dataplane.NextHeaderIPv4)
	if err != nil {
		return time.Now(), fmt.Errorf("sealing an echo: %w", err)
	}
	sent := time.Now()
	if _, err := c.conn.WriteToUDPAddrPort(pkt, netip.AddrPortFrom(c.gateway().Addr(), 4500)); err != nil {
		return sent, fmt.Errorf("sending an echo: %w", err)
	}
	return sent, nil
}

// awaitEcho waits up to wait for the reply to echo seq, discarding late
// replies to earlier ones.
func (c *fleetClient) awaitEcho(ctx context.Context, seq uint16, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case got := <-c.echo:
			if got == seq {
				return true
			}
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// Results returns what each client observed.
func (f *Fleet) Results() []ClientResult { return slices.Clone(f.results) }

// Report sums up the results.
func (f *Fleet) Report() ClientsReport { return summarizeClients(f.results) }

// Close deletes every client's IKE SA at the gateway (each session sends
// its Delete and waits for the answer, 2 s at most) and closes the
// sockets.
func (f *Fleet) Close() {
	f.cancel()
	f.sessions.Wait() // the receive loops deliver the Delete responses meanwhile
	f.closeSockets()
	f.wg.Wait()
}

// Abandon makes every client go silent, as a host that lost its network
// or crashed: the sockets close first, so that no Delete, answer or ESP
// reaches the gateway any more, then the sessions end.
func (f *Fleet) Abandon() {
	f.closeSockets()
	f.cancel()
	f.sessions.Wait()
	f.wg.Wait()
}

func (f *Fleet) closeSockets() {
	for _, c := range f.clients {
		c.conn.Close()
	}
}

// summarizeClients computes a report from client results.
func summarizeClients(results []ClientResult) ClientsReport {
	r := ClientsReport{Count: len(results)}
	var hs, echoes []time.Duration
	errs := map[string]int{}
	for _, c := range results {
		if c.Handshake > 0 {
			r.Established++
			if c.Attempts > 1 {
				r.Retried++
			}
			hs = append(hs, c.Handshake)
			r.All = max(r.All, c.Established)
		}
		if c.TrafficOK {
			r.TrafficOK++
			if c.Reconnected {
				r.Reconnected++
			}
			echoes = append(echoes, c.EchoRTT)
		}
		if c.Err != nil {
			errs[c.Err.Error()]++
		}
	}
	if r.Established < r.Count {
		r.All = 0
	}
	r.HandshakeP50, r.HandshakeP99, r.HandshakeMax = quantile(hs, 0.5), quantile(hs, 0.99), quantile(hs, 1)
	r.EchoP50, r.EchoMax = quantile(echoes, 0.5), quantile(echoes, 1)
	for e, n := range errs {
		r.Errors = append(r.Errors, fmt.Sprintf("%d× %s", n, e))
	}
	slices.Sort(r.Errors)
	return r
}

// quantile returns the q-quantile (nearest rank) of d; 0 for none.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// echoRequest writes an IPv4 ICMP echo request from src to dst with the
// identifier and sequence number into b and returns its length (44 bytes:
// 20 of IP header, 8 of ICMP header and 16 of payload).
func echoRequest(b []byte, src, dst netip.Addr, id, seq uint16) int {
	return echoRequestData(b, src, dst, id, seq, 20+8+16, "mifsec fleet 01.")
}

// echoRequestData writes an IPv4 ICMP echo request of size bytes (at
// least 28 + len(marker)) whose data begins with marker, the rest zero,
// into b and returns size.
func echoRequestData(b []byte, src, dst netip.Addr, id, seq uint16, size int, marker string) int {
	ip := b[:20]
	clear(b[:size])
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size))
	ip[8] = 64 // TTL
	ip[9] = 1  // ICMP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], inetsum.Checksum(ip))
	icmp := b[20:size]
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], marker)
	binary.BigEndian.PutUint16(icmp[2:], inetsum.Checksum(icmp))
	return size
}

// echoReply returns the sequence number and the data of an IPv4 ICMP
// echo reply with identifier id; ok is false for anything else.
func echoReply(p []byte, id uint16) (seq uint16, data []byte, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != 1 {
		return 0, nil, false
	}
	hl := int(p[0]&0x0f) * 4
	if hl < 20 || len(p) < hl+8 {
		return 0, nil, false
	}
	icmp := p[hl:]
	if icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != id {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(icmp[6:]), icmp[8:], true
}
