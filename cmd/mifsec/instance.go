package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mifsec/mifsec/mif"
)

// instance is what every running connect, gateway and static has: a
// context that a signal or a stop request (`mifsec down`) ends, a control
// socket that answers `mifsec status` and `mifsec down`, and, under
// systemd (Type=notify), the notification socket systemd learns the
// instance's state from.
type instance struct {
	ctx    context.Context
	notify *notifier // nil when systemd does not listen
}

// startInstance serves the control socket of the instance on the TUN
// device tunName until the returned context ends (none when ctl.Status is
// nil; ctl.Stop is set here); stop ends it as SIGTERM does. It opens systemd's notification
// socket now, while the process may still reach it, and tells systemd
// STOPPING=1 when the context ends.
func startInstance(parent context.Context, tunName string, ctl mif.Control) (*instance, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	in := &instance{ctx: ctx, notify: openNotifier()}
	stop := cancel
	if ctl.Status != nil {
		ctl.Stop = cancel
		closeControl, err := mif.ServeControl(ctx, mif.ControlSocket(tunName), ctl)
		if err != nil {
			slog.Warn("status will not be available", "err", err)
		} else {
			// The socket goes before the process does, whichever way it
			// ends (callers defer stop).
			stop = func() {
				cancel()
				closeControl()
			}
		}
	}
	if in.notify != nil {
		go func() {
			<-ctx.Done()
			in.notify.send("STOPPING=1")
		}()
	}
	return in, stop
}

// report tells systemd READY=1 the first time state says the instance is
// ready, and STATUS= each time its summary changes, checking every
// interval until the instance stops. Outside systemd it returns at once.
func (in *instance) report(interval time.Duration, state func() (ready bool, summary string)) {
	if in.notify == nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	readySent, last := false, ""
	for {
		ready, summary := state()
		var msg string
		if summary != last {
			msg, last = "STATUS="+summary+"\n", summary
		}
		if ready && !readySent {
			msg, readySent = "READY=1\n"+msg, true
		}
		if msg != "" && in.ctx.Err() == nil {
			in.notify.send(msg)
		}
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// notifier sends state changes to systemd's notification socket
// ($NOTIFY_SOCKET, sd_notify(3)).
type notifier struct {
	conn *net.UnixConn
}

// openNotifier connects to $NOTIFY_SOCKET; nil when it is unset (not run
// by systemd, or not as Type=notify) or cannot be reached.
func openNotifier() *notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	// Go's net package takes a leading '@' for Linux's abstract
	// namespace, as systemd writes it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		slog.Warn("systemd will not hear this instance's state", "notify_socket", path, "err", err)
		return nil
	}
	return &notifier{conn: conn}
}

// send sends one notification (NAME=VALUE lines).
func (n *notifier) send(state string) {
	if _, err := n.conn.Write([]byte(state)); err != nil {
		slog.Debug("notifying systemd", "state", state, "err", err)
	}
}

// clientSummary is a client's state in one line, for systemd's STATUS=.
func clientSummary(st mif.Status) string {
	s := st.Session
	summary := s.State + " " + s.Gateway
	if s.State == "established" {
		paths := "1 path"
		if len(st.Paths) != 1 {
			paths = fmt.Sprintf("%d paths", len(st.Paths))
		}
		summary = fmt.Sprintf("connected to %s, %s on %s, %s", s.Gateway, strings.Join(s.Addresses, " "), st.Interface, paths)
	}
	if s.LastError != "" && s.State != "established" {
		summary += " (" + s.LastError + ")"
	}
	return summary
}
