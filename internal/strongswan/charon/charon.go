// Package charon owns how mifsec runs strongSwan's charon, with its
// userspace ESP backend (kernel-libipsec), in a network namespace: what must
// be installed, the strongswan.conf it loads, the command that starts it in
// its own mount namespace with a private /run, and where its vici socket is
// then found. The test helper internal/strongswan and the benchmark's
// strongSwan peers both start charon this way; it imports no test code so
// that the mifsec binary (which contains the benchmark) does not either.
package charon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

const (
	// Binary is the charon daemon.
	Binary = "/usr/lib/ipsec/charon"
	// Plugins is the explicit plugin list charon loads: openssl first for
	// its AES-NI AES-GCM (the software aes/gcm plugins are ~15× slower), kdf
	// for the IKE key derivation, kernel-libipsec for userspace ESP.
	Plugins = "random nonce openssl aesni aes sha1 sha2 hmac gcm chapoly curve25519 x509 pem pkcs1 pkcs8 pubkey kdf gmp kernel-libipsec kernel-netlink socket-default vici attr updown"
	// Packages are the Debian packages that provide all of it.
	Packages = "strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins"
	// socket is the vici socket in charon's private /run. Its name is not
	// the default so that a host charon's socket is never mistaken for it
	// before the private /run is mounted.
	socket     = "/run/mifsec-charon.vici"
	pluginPath = "/usr/lib/ipsec/plugins/libstrongswan-%s.so"
)

// Missing reports what is missing to run charon here (besides root), or ""
// if nothing is.
func Missing() string {
	if _, err := os.Stat(Binary); err != nil {
		return Binary + " not found: apt-get install " + Packages
	}
	for _, tool := range []string{"swanctl", "unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found: apt-get install " + Packages
		}
	}
	for _, p := range []string{"openssl", "kernel-libipsec", "kdf", "vici"} {
		if _, err := os.Stat(fmt.Sprintf(pluginPath, p)); err != nil {
			return "strongSwan plugin " + p + " not found: apt-get install " + Packages
		}
	}
	return ""
}

// Conf is the text of strongswan.conf: Plugins, the lines of extra in the
// charon section, logging to stderr with IKE at ikeLogLevel, and the vici
// socket in the private /run.
func Conf(extra string, ikeLogLevel int) string {
	return fmt.Sprintf(`charon {
	load = %s
%s
	filelog {
		stderr {
			default = 1
			ike = %d
			time_format = %%T
		}
	}
	plugins {
		kernel-libipsec {
			allow_peer_ts = yes
		}
		vici {
			socket = unix://%s
		}
	}
}
`, Plugins, extra, ikeLogLevel, socket)
}

// Command is the command line that runs charon in a mount namespace of its
// own with a private /run (which keeps the pid files and vici sockets of
// several charons apart). Run it inside the network namespace, with
// STRONGSWAN_CONF naming the file that holds Conf.
func Command() []string {
	return []string{"unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /run && exec " + Binary}
}

// SocketPath is where the vici socket of the charon started by Command as
// process pid is reached from outside its mount namespace: through the
// process's root. The process is sh until it execs charon.
func SocketPath(pid int) string {
	return filepath.Join("/proc", strconv.Itoa(pid), "root", socket)
}
