// Package mif conducts a multi-interface session: it watches the host's
// interfaces through netlink, opens one path per (local interface, gateway
// address), probes paths, adds and removes them, drives handover, and wires
// the ike, dataplane, scheduler and tun packages together.
//
// # Locks
//
// The package's mutexes guard small pieces of state and are leaves, with
// one exception: multiPath.routeMu, which orders a client's route changes,
// is taken before Client.mu, multiPath.mu and peerPaths.mu (never after
// them). No other mif mutex is held while another mif mutex is taken; the
// data plane's and the scheduler's locks come after any of them (the
// gateway installs routes and resequencers under Gateway.mu, a path set
// opens engine paths under pathSet.mu). Each struct says what its mutex
// guards.
package mif
