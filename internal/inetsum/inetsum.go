// Package inetsum computes the Internet checksum of RFC 1071, the one
// IPv4 headers, ICMP, UDP and TCP carry. It is the project's only copy:
// the TUN helpers that build packets, the link emulator that segments
// them and the benchmark clients that send echoes all use it.
package inetsum

import "encoding/binary"

// Add adds b to the running one's-complement sum as big-endian 16-bit
// words; an odd last byte is the high half of a word. Sums of separate
// pieces (a pseudo-header, then a segment) add up as long as every piece
// but the last has an even length.
func Add(sum uint64, b []byte) uint64 {
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// Fold folds the carries of sum back into 16 bits. The checksum a header
// carries is its complement, ^Fold(sum).
func Fold(sum uint64) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// Checksum is the Internet checksum of b: ^Fold(Add(0, b)). Over data that
// already holds its correct checksum it is 0.
func Checksum(b []byte) uint16 { return ^Fold(Add(0, b)) }
