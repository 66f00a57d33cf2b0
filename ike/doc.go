// Package ike owns IKEv2 (RFC 7296): message encoding and decoding, crypto
// suites and key derivation, the initiator and responder state machines,
// configuration payloads, NAT traversal, fragmentation, rekeying, dead peer
// detection, MOBIKE (RFC 4555) and the notifications of the MIF extension.
//
// It imports no other package of the project; the mif package wires its
// results (negotiated keys, traffic selectors, addresses) into the data plane.
package ike
