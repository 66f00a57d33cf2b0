// Package bench is mifsec's lab and benchmark harness: network-namespace
// topologies, the userspace link emulator, traffic generators, the peers that
// mifsec is measured against (wireguard-go, strongSwan), and the reports.
//
// Product packages never import it.
package bench
