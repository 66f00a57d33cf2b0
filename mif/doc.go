// Package mif conducts a multi-interface session: it watches the host's
// interfaces through netlink, opens one path per (local interface, gateway
// address), probes paths, adds and removes them, drives handover, and wires
// the ike, dataplane, scheduler and tun packages together.
package mif
