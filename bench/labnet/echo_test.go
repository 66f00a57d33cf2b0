package labnet

import (
	"encoding/binary"
	"testing"

	"github.com/mifsec/mifsec/internal/inetsum"
)

func TestEchoRoundTrip(t *testing.T) {
	req := encodeEcho(nil, 0x1234, 7, []byte("mifsec-lab"))
	if inetsum.Checksum(req) != 0 {
		t.Fatalf("request % x has a wrong checksum", req)
	}
	// The peer answers with type 0 and a checksum fixed for it.
	reply := append([]byte(nil), req...)
	reply[0] = icmpEchoReply
	binary.BigEndian.PutUint16(reply[2:], 0)
	binary.BigEndian.PutUint16(reply[2:], inetsum.Checksum(reply))
	if seq, ok := parseEchoReply(reply, 0x1234); !ok || seq != 7 {
		t.Fatalf("parseEchoReply = %d, %v; want 7, true", seq, ok)
	}
	for name, b := range map[string][]byte{
		"request":          req,
		"other identifier": func() []byte { r := append([]byte(nil), reply...); r[4] ^= 1; return r }(),
		"bad checksum":     func() []byte { r := append([]byte(nil), reply...); r[9] ^= 1; return r }(),
		"short":            reply[:7],
		"empty":            nil,
	} {
		if _, ok := parseEchoReply(b, 0x1234); ok {
			t.Errorf("%s: accepted % x", name, b)
		}
	}
}

func FuzzParseEchoReply(f *testing.F) {
	reply := encodeEcho(nil, 9, 3, []byte("x"))
	reply[0] = icmpEchoReply
	binary.BigEndian.PutUint16(reply[2:], 0)
	binary.BigEndian.PutUint16(reply[2:], inetsum.Checksum(reply))
	f.Add(reply, uint16(9))
	f.Add([]byte{0, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, id uint16) {
		seq, ok := parseEchoReply(b, id)
		if ok && (len(b) < icmpHeaderLen || b[0] != icmpEchoReply || binary.BigEndian.Uint16(b[6:]) != seq || inetsum.Checksum(b) != 0) {
			t.Fatalf("accepted % x", b)
		}
	})
}
