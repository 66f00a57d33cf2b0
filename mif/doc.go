// Package mif conducts a multi-interface session: it watches the host's
// interfaces through netlink, opens one path per (local interface, gateway
// address), probes paths, adds and removes them, drives handover, and wires
// the ike, dataplane, scheduler and tun packages together.
//
// Three conductors share that machinery: Client (`mifsec connect`, the
// initiator), Gateway (`mifsec gateway`, the responder of many clients)
// and Peer (`mifsec peer`, both roles over one TUN device, one IKE SA
// kept between two hosts; peer.go).
//
// Lock order: a goroutine that holds several of the package's mutexes took
// them in this order, and takes none of them while it holds a later one:
//
//	multiPath.routeMu  (Client routes: SwitchOutbound and drivePaths)
//	  Client.mu, multiPath.mu, peerPaths.mu  (each taken alone under routeMu)
//
// Every other mutex is a leaf: Gateway.mu, Gateway.lmu, gatewayPeer.mu,
// pathSet.mu, sharedTUN.mu and netmon's Monitor.mu are held only while
// no other mutex of this package is taken (they may call into dataplane
// and tun, whose locks come after all of these).
package mif
