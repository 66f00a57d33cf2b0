// Package peers owns the systems the lab measures and how each comes up:
// mifsec with static keys (`mifsec static`) and keyed by IKEv2 (`mifsec
// gateway` and `mifsec connect`, also on the AES-CBC suite of macOS and
// iOS), wireguard-go, strongSwan's charon (kernel-libipsec, started by
// internal/strongswan/charon, the launcher the tests share), Linux MPTCP,
// and the plain veth reference.
//
// Every peer has one Lifecycle (Name, Prepare, Version, Teardown), the
// only part bench's one runner calls. What a peer does between Prepare and
// Teardown depends on the network it is given, and that is why two Setup
// families remain:
//
//   - Peer (NewPeer, PeerNames) comes up between the two namespaces of a
//     labnet.Topology joined by one veth pair, for `mifsec bench
//     throughput`: one tunnel, a server address behind it, and the client
//     interface whose byte counters prove the flow crossed the tunnel.
//   - LabPeer (NewLabPeer, scenarios.LabPeerNames) comes up on the
//     labnet.LabNet a scenario describes: a client with several uplinks, a
//     gateway, a protected network, bound to the scenario's interfaces and
//     policy, and describes how it uses the uplinks (Behaviour).
//
// The names mean different systems in the two runs ("mifsec" is static
// keys in a throughput run and IKEv2 in a scenario, whose peers may also
// be "mptcp" or "mifsec@UPLINK"), the reports' peer names and the command
// lines' flags are fixed, and a throughput peer such as veth has no
// meaning on a scenario's network; so the lab peers embed their
// throughput counterparts (mifsec-ike, wireguard-go, strongSwan) and share
// their Prepare, Version, Teardown and process handling, and only Setup
// and what the run reads after it are per network.
package peers
