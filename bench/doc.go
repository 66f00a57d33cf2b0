// Package bench is mifsec's lab and benchmark harness: network-namespace
// topologies (a veth pair for `mifsec bench throughput`; a client host with
// several uplinks, each through its own emulated link, a gateway and a
// protected network for the scenarios), the userspace link emulator
// (bench/linkemu), scenarios read from YAML with the built-in ones embedded,
// traffic generated and measured in this process (bench/traffic: bulk TCP
// and MPTCP flows read through TCP_INFO, paced UDP; and a probe stream that
// records every packet's one-way delay), the peers that mifsec is measured
// against (wireguard-go, strongSwan, kernel MPTCP), and the reports: tables, summaries, JSON and plots.
//
// Everything a run creates carries the owner's PID in its name, so that a
// later run removes what a crashed one left behind.
//
// Product packages never import it.
package bench
