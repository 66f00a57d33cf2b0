// Package tun owns the virtual interface that carries the tunnel's inner
// traffic: it creates the TUN device (golang.zx2c4.com/wireguard/tun, with
// virtio-net header offloads and one queue per core), sets its addresses,
// routes and MTU through netlink, and provides an in-memory device so the
// data plane can be tested without privileges.
//
// It imports no other package of the project.
package tun
