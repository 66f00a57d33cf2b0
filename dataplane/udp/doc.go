// Package udp owns the data plane's UDP sockets: ESP in UDP (RFC 3948)
// moved in batches with the kernel's offloads, for one goroutine per
// Sender or Receiver. The engine (package dataplane) seals and opens; this
// package only moves datagrams. It is shaped for the hot path:
//
//   - Batches: one sendmmsg or recvmmsg moves many datagrams per system call.
//   - Segmentation offload (UDP_SEGMENT, "GSO"): the sealed packets of one TSO
//     superpacket read from the TUN are all the same size, so one message
//     whose iovecs point at each of them goes down the stack once and the
//     kernel cuts it into datagrams. The iovecs make the coalescing free: no
//     packet is copied into a common buffer.
//   - Receive offload (UDP_GRO): the kernel hands up trains of same-size
//     datagrams from one source in one buffer with their segment size.
//   - No allocation per call: message headers, iovecs, control buffers and
//     the poller callbacks are made once per Sender or Receiver, which belong
//     to one goroutine each.
//   - Megabyte socket buffers, forced when running as root, as serious VPNs
//     do: a burst of a few thousand packets must not overflow them.
//   - Narrow paths: ESP over IPv4 leaves without DF (IP_PMTUDISC_DONT), so a
//     router on a path narrower than the packets fragments them rather than
//     dropping them and counting on an ICMP message to get back (firewalls
//     filter it: the classic tunnel black hole). IPv6 routers never
//     fragment: there the kernel learns the path MTU from packet-too-big
//     messages and fragments at the source. Either way, once the kernel
//     knows a path MTU smaller than a GSO message's segments it refuses the
//     message (EMSGSIZE); the Sender then sends those datagrams one per
//     message, which the kernel fragments, and stops coalescing datagrams
//     that large to that endpoint for a while (Endpoint.gsoLimit).
package udp
