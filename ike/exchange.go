package ike

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mifsec/mifsec/ike/wire"
)

// maxDatagram is the largest IKE datagram sent unfragmented when the peer
// supports fragmentation: it fits the IPv6 minimum MTU with headers
// (RFC 7383 §2.5.1 recommends 1280 for IPv6).
const maxDatagram = 1280 - 40 - 8 - 4

// errGatewayDeleted ends a session whose gateway deleted the IKE SA.
var errGatewayDeleted = errors.New("the gateway deleted the IKE SA")

// pending is the one request this side has outstanding.
type pending struct {
	sa    *ikeSA
	id    uint32
	reply []wire.Payload
	err   error
	done  bool
}

// send protects payloads in a message of sa and sends it. It returns the
// datagrams, to be resent as they are on retransmission.
func (s *Session) send(sa *ikeSA, exchange wire.ExchangeType, id uint32, response bool, payloads []wire.Payload) ([][]byte, error) {
	datagrams, err := sealMessage(sa, exchange, id, response, payloads)
	if err != nil {
		return nil, err
	}
	s.transmit(datagrams)
	return datagrams, nil
}

// sealMessage protects payloads in a message of sa: one datagram, or
// fragments (RFC 7383) when the peer supports them.
func sealMessage(sa *ikeSA, exchange wire.ExchangeType, id uint32, response bool, payloads []wire.Payload) ([][]byte, error) {
	m := &wire.Message{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: exchange, Flags: sa.flags(response), MessageID: id, Payloads: payloads}
	if sa.fragOK {
		datagrams, err := m.MarshalFragments(sa.keys.out, maxDatagram)
		if err != nil {
			return nil, fmt.Errorf("building %s message: %w", exchange, err)
		}
		return datagrams, nil
	}
	b, err := m.MarshalEncrypted(sa.keys.out)
	if err != nil {
		return nil, fmt.Errorf("building %s message: %w", exchange, err)
	}
	return [][]byte{b}, nil
}

func (s *Session) transmit(datagrams [][]byte) {
	tr, to := s.route() // the current path (mobike.go)
	for _, d := range datagrams {
		if err := tr.Send(d, to, s.natT); err != nil {
			s.log.Debug("sending IKE message", "to", to, "err", err)
		}
	}
}

// exchange sends a request on sa and returns the decrypted payloads of the
// response, retransmitting per policy. Requests from the gateway that
// arrive meanwhile are answered.
func (s *Session) exchange(ctx context.Context, sa *ikeSA, exchange wire.ExchangeType, payloads []wire.Payload, policy RetransmitPolicy) ([]wire.Payload, error) {
	policy = policy.withDefaults()
	id := sa.nextOut
	datagrams, err := s.send(sa, exchange, id, false, payloads)
	if err != nil {
		return nil, err
	}
	p := &pending{sa: sa, id: id}
	timeout := policy.Timeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	hurry := s.hurry
	if exchange == wire.IKE_AUTH {
		hurry = nil // connecting: CheckAlive has no IKE SA to check yet
	}
	var checking chan<- error // a CheckAlive waiting for this request's fate
	settle := func(alive error) {
		if checking != nil {
			checking <- alive
		}
	}
	for tries := 1; ; {
		select {
		case <-ctx.Done():
			settle(ctx.Err())
			return nil, ctx.Err()
		case checking = <-hurry:
			// CheckAlive while this request is outstanding: its answer
			// shows the gateway alive; none within a liveness check's
			// tries shows it lost.
			policy, hurry = aliveCheckPolicy, nil
			tries, timeout = 1, policy.Timeout
			s.transmit(datagrams)
			timer.Reset(timeout)
		case to := <-s.mob.moves:
			// UpdateAddresses while this request is outstanding (its
			// path may be dead): retransmit it there at once, afresh,
			// and send there until the update runs (mobike.go).
			s.steerTo(to)
			tries, timeout = 1, policy.Timeout
			s.transmit(datagrams)
			timer.Reset(timeout)
		case in := <-s.inbox:
			if err := s.handle(in, p); err != nil {
				settle(err)
				return nil, err
			}
			if p.done {
				sa.nextOut++
				settle(nil)
				return p.reply, p.err
			}
		case <-timer.C:
			if tries == policy.Tries {
				err := fmt.Errorf("%w: no response to %s after %d tries", ErrTimeout, exchange, tries)
				if checking != nil {
					err = fmt.Errorf("%w: %w", errGatewaySilent, err) // reconnect at once
				}
				settle(err)
				return nil, err
			}
			tries++
			s.transmit(datagrams)
			timeout = time.Duration(float64(timeout) * policy.Backoff)
			timer.Reset(timeout)
		}
	}
}

// findSA returns the IKE SA a message belongs to.
func (s *Session) findSA(spiI, spiR uint64) *ikeSA {
	if s.sa != nil && s.sa.spiI == spiI && s.sa.spiR == spiR {
		return s.sa
	}
	for _, sa := range s.oldSAs {
		if sa.spiI == spiI && sa.spiR == spiR {
			return sa
		}
	}
	return nil
}

// decrypt returns the inner payloads of a protected message of sa; for a
// fragment, nil until the message is complete.
func (s *Session) decrypt(sa *ikeSA, m *wire.Message) ([]wire.Payload, bool, error) {
	return openMessage(sa, m)
}

// openMessage returns the inner payloads of a protected message of sa; for
// a fragment, nil until the message is complete.
func openMessage(sa *ikeSA, m *wire.Message) ([]wire.Payload, bool, error) {
	if len(m.Payloads) == 0 {
		return nil, false, errors.New("unprotected message after IKE_SA_INIT")
	}
	switch m.Payloads[len(m.Payloads)-1].(type) {
	case *wire.Encrypted:
		inner, err := m.Decrypt(sa.keys.in)
		return inner, err == nil, err
	case *wire.EncryptedFragment:
		if sa.reasm == nil {
			sa.reasm = &wire.Reassembler{}
		}
		return sa.reasm.Add(m, sa.keys.in)
	}
	return nil, false, errors.New("unprotected message after IKE_SA_INIT")
}

// handle processes one datagram from the gateway. p, if not nil, is the
// request awaiting its response. It returns an error when the session must
// end (the gateway deleted the IKE SA).
func (s *Session) handle(in inbound, p *pending) error {
	m, err := wire.Parse(in.data)
	if err != nil {
		s.log.Debug("dropping malformed IKE message", "from", in.from, "err", err)
		return nil
	}
	if m.Exchange == wire.IKE_SA_INIT {
		return nil // a late response to a retransmitted IKE_SA_INIT
	}
	sa := s.findSA(m.SPIi, m.SPIr)
	if sa == nil {
		s.log.Debug("dropping IKE message for an unknown SA", "from", in.from, "exchange", m.Exchange)
		return nil
	}
	if m.Flags&wire.FlagResponse != 0 {
		if p == nil || p.sa != sa || m.MessageID != p.id || p.done {
			return nil
		}
		inner, complete, err := s.decrypt(sa, m)
		if err != nil {
			s.log.Debug("dropping undecryptable response", "exchange", m.Exchange, "err", err)
			return nil
		}
		if !complete {
			return nil
		}
		sa.lastHeard = s.cfg.Now()
		p.reply, p.done = inner, true
		return nil
	}
	// A request from the gateway.
	switch {
	case m.MessageID+1 == sa.nextIn && sa.lastResp != nil:
		s.transmit(sa.lastResp) // our response was lost
		return nil
	case m.MessageID != sa.nextIn:
		return nil
	}
	inner, complete, err := s.decrypt(sa, m)
	if err != nil {
		s.log.Debug("dropping undecryptable request", "exchange", m.Exchange, "err", err)
		return nil
	}
	if !complete {
		return nil
	}
	sa.lastHeard = s.cfg.Now()
	reply, after := dispatchInSARequest(s, sa, m.Exchange, inner)
	datagrams, err := sealMessage(sa, m.Exchange, m.MessageID, true, reply)
	if err != nil {
		return err
	}
	// The answer goes where the request came from (RFC 7296 §2.11), on
	// the path IKE uses: a gateway that asks from another of its
	// addresses (its old one went away) is answered there. A copy of the
	// request is answered on the path as before (above), never to
	// another source.
	tr, _ := s.route()
	for _, d := range datagrams {
		if err := tr.Send(d, in.from, s.natT); err != nil {
			s.log.Debug("sending IKE response", "to", in.from, "err", err)
		}
	}
	sa.lastResp = datagrams
	sa.nextIn++
	if after != nil {
		return after()
	}
	return nil
}

// firstError returns the first error notification of a response as the
// error a user reads.
func firstError(ps []wire.Payload, exchange string) error {
	for _, p := range ps {
		if n, ok := p.(*wire.Notify); ok && n.NotifyType.IsError() {
			return notifyError(n, exchange)
		}
	}
	return nil
}
