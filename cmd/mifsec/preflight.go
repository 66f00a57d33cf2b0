package main

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mifsec/mifsec/mif"
)

// hasNetAdmin reports whether the process may create TUN devices and
// change routes: CAP_NET_ADMIN in its effective set (root has it; so has
// a service given it as an ambient capability).
var hasNetAdmin = func() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_NET_ADMIN) != 0
}

// requireRoot refuses to run command without CAP_NET_ADMIN, before it
// touches anything.
func requireRoot(command string) error {
	if hasNetAdmin() {
		return nil
	}
	return fmt.Errorf("mifsec %s needs root: it creates a TUN device and changes addresses and routes (CAP_NET_ADMIN is missing); run it as root, e.g. with sudo", command)
}

// refuseRunning refuses to start a second instance on the TUN name tun:
// its control socket answers.
func refuseRunning(tun string) error {
	path := mif.ControlSocket(tun)
	conn, err := net.DialTimeout("unix", path, 500*time.Millisecond)
	if err != nil {
		return nil // no socket, or a stale one no one answers on
	}
	conn.Close()
	return fmt.Errorf("mifsec is already running on %s (its control socket %s answers; 'mifsec status --tun %s' shows it): stop it first, or give this one another --tun", tun, path, tun)
}
