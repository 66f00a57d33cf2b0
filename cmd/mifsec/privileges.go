package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os/user"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// privileges say what a command keeps once its TUN device and sockets
// exist: the capabilities it needs at run time and the user it runs as.
type privileges struct {
	// keep are the capabilities the command still uses while running.
	keep []uintptr
	// user is the user to run as ("" or "root": uid 0 stays, with only
	// the capabilities kept).
	user string
}

// userFlag is the --user flag of the commands that drop privileges;
// def is the default user ("" keeps uid 0).
func userFlag(def, why string) cli.Flag {
	return &cli.StringFlag{Name: "user", Value: def,
		Usage: "once the TUN device and sockets exist, run as `USER` with only the capabilities needed (\"root\" keeps uid 0, capabilities still dropped)" + why}
}

// credentials are a resolved user.
type credentials struct {
	uid, gid int
	name     string
}

// lookupUser resolves name before anything is created, so that a wrong
// --user is refused early. An empty name or "root" means uid 0.
func lookupUser(name string) (*credentials, error) {
	if name == "" || name == "root" {
		return nil, nil
	}
	var u *user.User
	var err error
	if id, nerr := strconv.Atoi(name); nerr == nil {
		if id == 0 {
			return nil, nil
		}
		if u, err = user.LookupId(name); err != nil {
			if id < 0 {
				return nil, fmt.Errorf("--user %s: not a user id", name)
			}
			return &credentials{uid: id, gid: id, name: name}, nil // a bare uid, its own group
		}
	} else if u, err = user.Lookup(name); err != nil {
		return nil, fmt.Errorf("--user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("--user %s: uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("--user %s: gid %q", name, u.Gid)
	}
	if uid == 0 {
		return nil, nil
	}
	return &credentials{uid: uid, gid: gid, name: u.Username}, nil
}

// resolveUser looks up --user before anything is created. A user given
// explicitly must exist; when the default user is missing on this host the
// userAndMetrics resolves --user and opens --metrics-listen, what every
// long-running command does before it sets anything up (so that a wrong
// user or a taken port is refused first); the caller closes the metrics
// server.
func userAndMetrics(c *cli.Context) (*credentials, *metricsServer, error) {
	as, err := resolveUser(c)
	if err != nil {
		return nil, nil, err
	}
	metrics, err := listenMetrics(c)
	if err != nil {
		return nil, nil, err
	}
	return as, metrics, nil
}

// command stays uid 0 (capabilities still dropped) and says so.
func resolveUser(c *cli.Context) (*credentials, error) {
	as, err := lookupUser(c.String("user"))
	if err != nil && !c.IsSet("user") {
		slog.Warn("the default --user does not exist here: staying uid 0 with capabilities dropped", "user", c.String("user"), "err", err)
		return nil, nil
	}
	return as, err
}

// dropPrivileges is the one place where mifsec gives up root, for every
// command, on every thread of the process. It runs once the TUN device and
// the sockets exist:
//
//  1. the bounding set loses every capability not kept, so nothing run
//     later (nothing is) could regain them;
//  2. with as set (nil: stay uid 0), the supplementary groups go, then gid
//     and uid change for real, effective and saved, keeping the permitted
//     capabilities across the change (PR_SET_KEEPCAPS); the process is no
//     longer dumpable, so other processes of that user cannot ptrace it;
//  3. effective and permitted capabilities become exactly keep;
//  4. no_new_privs forbids gaining privileges again.
//
// Credentials are per thread in Linux. syscall.Setresuid, Setresgid and
// Setgroups change every thread of a Go program since Go 1.16, and
// syscall.AllThreadsSyscall does the same for prctl and capset; with cgo
// AllThreadsSyscall is not available (ENOTSUP) and errPrivilegesKept says
// so: build with CGO_ENABLED=0.
func dropPrivileges(keep []uintptr, as *credentials) error {
	var mask uint64
	for _, c := range keep {
		mask |= 1 << c
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); errno != 0 {
		return fmt.Errorf("setting no_new_privs: %w", errno)
	}
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if mask&(1<<c) != 0 {
			continue
		}
		if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); errno != 0 && errno != syscall.EINVAL {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, errno)
		}
	}
	if as != nil {
		if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); errno != 0 {
			return fmt.Errorf("keeping capabilities across the user change: %w", errno)
		}
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("dropping supplementary groups: %w", err)
		}
		if err := syscall.Setresgid(as.gid, as.gid, as.gid); err != nil {
			return fmt.Errorf("changing to gid %d: %w", as.gid, err)
		}
		if err := syscall.Setresuid(as.uid, as.uid, as.uid); err != nil {
			return fmt.Errorf("changing to user %s (uid %d): %w", as.name, as.uid, err)
		}
		if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0); errno != 0 {
			return fmt.Errorf("clearing keepcaps: %w", errno)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[0].Effective, data[0].Permitted = uint32(mask), uint32(mask)
	data[1].Effective, data[1].Permitted = uint32(mask>>32), uint32(mask>>32)
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno != 0 {
		return fmt.Errorf("dropping capabilities: %w", errno)
	}
	return nil
}

// dropPrivilegesOrWarn drops privileges as dropPrivileges does and logs
// what the command keeps. Only a cgo build, where the runtime cannot
// change every thread, keeps running with its privileges (and says so).
func dropPrivilegesOrWarn(log *slog.Logger, keep []uintptr, as *credentials) error {
	if err := dropPrivileges(keep, as); err != nil {
		if !errPrivilegesKept(err) {
			return err
		}
		log.Warn("privileges kept: this binary was built with cgo; build with CGO_ENABLED=0 to drop them")
		return nil
	}
	names := make([]string, len(keep))
	for i, c := range keep {
		names[i] = capabilityNames[c]
	}
	user := "root"
	if as != nil {
		user = as.name
	}
	log.Info("privileges dropped", "user", user, "capabilities", names)
	return nil
}

var capabilityNames = map[uintptr]string{
	unix.CAP_NET_ADMIN:        "CAP_NET_ADMIN",
	unix.CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
	unix.CAP_NET_RAW:          "CAP_NET_RAW",
}

// errPrivilegesKept reports whether dropPrivileges failed only because the
// binary was built with cgo, where the Go runtime cannot change every
// thread's credentials (build with CGO_ENABLED=0 for that).
func errPrivilegesKept(err error) bool { return errors.Is(err, syscall.ENOTSUP) }
