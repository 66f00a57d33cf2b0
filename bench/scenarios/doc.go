// Package scenarios owns the lab's experiments as data: the YAML format of
// a scenario (uplinks and their emulated links, the gateway's own uplinks,
// link events over time, the traffic and the peers to measure), the
// defaults and checks that normalize one, and the built-in scenarios
// embedded from this directory. The capacity traces of the built-in
// scenarios stay beside them in traces/ (GPL-3 data, read at run time, not
// embedded). It knows nothing of namespaces or peers: bench builds
// and runs what a scenario describes.
package scenarios
