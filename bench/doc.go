// Package bench is mifsec's lab and benchmark harness, and itself only its
// top: the two runs that `mifsec bench` and `mifsec lab` start.
// RunThroughput measures one TCP flow through each peer between two
// namespaces joined by a veth pair; RunScenario runs a scenario's timeline
// (traffic, link sampling, events) on each peer's own lab network. Both
// go through one runner (peerRunner): for every peer in turn, prepare it,
// build its network, bring it up and measure it, tear it down, and record
// the outcome, a skipped or optional peer as a skip, not an error.
//
// The jobs below the runners are sub-packages, each importing only those
// listed after it:
//
//   - bench/load: many clients at once against a gateway (the client
//     fleet of `mifsec bench clients`, the soak, the IKE_SA_INIT flood).
//   - bench/report: the throughput and scenario reports: rows, ratios,
//     tables, summaries, JSON and plots.
//   - bench/peers: the systems measured (mifsec static and IKEv2,
//     wireguard-go, strongSwan, Linux MPTCP, veth) and how each comes up;
//     its package comment says why a throughput peer and a scenario's peer
//     share a lifecycle but not their Setup.
//   - bench/labnet: network namespaces owned by the running process, the
//     veth topology, the scenario's lab network with emulated links,
//     commands and processes in namespaces, ICMP echo.
//   - bench/scenarios: the YAML scenarios and the built-in ones beside
//     them.
//   - bench/traffic: bulk TCP and MPTCP flows read through TCP_INFO, paced
//     UDP, and the probe stream that records every packet's one-way delay.
//   - bench/linkemu: the userspace link emulator.
//
// Everything a run creates carries the owner's PID in its name, so that a
// later run removes what a crashed one left behind.
//
// Product packages never import bench or its sub-packages.
package bench
