package main

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropPrivileges keeps only CAP_NET_ADMIN (needed to change routes and
// addresses while running and to remove them on exit) and forbids gaining
// privileges again, on every thread of the process. It runs once the TUN
// device and the sockets exist.
func dropPrivileges() error {
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); errno != 0 {
		return fmt.Errorf("setting no_new_privs: %w", errno)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	const keep = 1 << unix.CAP_NET_ADMIN
	data[0].Effective, data[0].Permitted = keep, keep
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno != 0 {
		return fmt.Errorf("dropping capabilities: %w", errno)
	}
	return nil
}

// errPrivilegesKept reports whether dropPrivileges failed only because the
// binary was built with cgo, where the Go runtime cannot change every
// thread's credentials (build with CGO_ENABLED=0 for that).
func errPrivilegesKept(err error) bool { return errors.Is(err, syscall.ENOTSUP) }
