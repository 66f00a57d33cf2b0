// Package dataplane owns ESP (RFC 4303) as mifsec sends and receives it:
// security associations with their AEAD keys and sequence numbers, sealing
// and opening packets in place, the anti-replay window, UDP encapsulation
// (RFC 3948) and its demultiplexing on port 4500, and the pipeline that moves
// packets between the TUN device and the network paths.
//
// It imports only the scheduler package of the project.
package dataplane
