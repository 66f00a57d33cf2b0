package mif

import (
	"log/slog"
	"net"
	"net/netip"

	"github.com/mifsec/mifsec/dataplane/udp"
)

// ikeSendQueue is how many IKE datagrams may wait for the gateway's
// sender: a burst of some 4,000 answers. A full queue makes the responder
// wait, as writing the datagrams itself would.
const ikeSendQueue = 4096

// ikeSender writes the gateway's IKE datagrams to their sockets on a
// goroutine of its own. The responder's loop is the one goroutine that sets
// up every client; with tens of thousands of clients, a syscall per answer
// (sendto) was some 40 % of the loop's time (CPU profile of a gateway
// taking 60,000 clients), which another core can spend. The datagrams
// leave in the order they were given.
type ikeSender struct {
	queue chan ikeDatagram
	// done closes when run returns: SendFrom no longer waits for room.
	done chan struct{}
	log  *slog.Logger
}

// ikeDatagram is one datagram for one of a listener's two sockets.
type ikeDatagram struct {
	msg    []byte
	to     netip.AddrPort
	ike500 *net.UDPConn // port 500, or
	natT   *udp.Conn    // port 4500, msg behind the non-ESP marker
}

func newIKESender(log *slog.Logger) *ikeSender {
	return &ikeSender{queue: make(chan ikeDatagram, ikeSendQueue), done: make(chan struct{}), log: log}
}

// send queues d, waiting for room; false once the sender stopped.
func (s *ikeSender) send(d ikeDatagram) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.queue <- d:
		return true
	case <-s.done:
		return false
	}
}

// run writes the queued datagrams until stop closes, and then those still
// queued (a stopping gateway's goodbyes to its clients).
func (s *ikeSender) run(stop <-chan struct{}) {
	defer close(s.done)
	for {
		select {
		case d := <-s.queue:
			s.write(d)
		case <-stop:
			for {
				select {
				case d := <-s.queue:
					s.write(d)
				default:
					return
				}
			}
		}
	}
}

func (s *ikeSender) write(d ikeDatagram) {
	var err error
	if d.natT != nil {
		err = d.natT.WriteTo(d.msg, d.to)
	} else {
		_, err = d.ike500.WriteToUDPAddrPort(d.msg, d.to)
	}
	if err != nil {
		s.log.Debug("sending IKE message", "to", d.to, "err", err)
	}
}
