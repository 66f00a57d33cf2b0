package wire

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

// fuzzPayload is the fuzz target of one message element: the payload
// types ts, decoded from a body without the generic payload header. A body
// the decoder takes must encode again, decode to the same payload, and
// encode to the same bytes a second time; a body it refuses gets a
// *ParseError, never a panic. The seeds are the element's cases of
// codecPayloadCases and an empty body.
func fuzzPayload(f *testing.F, ts ...PayloadType) {
	for _, tc := range codecPayloadCases {
		if i := slices.Index(ts, tc.p.Type()); i >= 0 {
			body, err := tc.p.appendBody(nil)
			if err != nil {
				f.Fatalf("%s: %v", tc.name, err)
			}
			f.Add(uint8(i), body)
		}
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		typ := ts[int(which)%len(ts)]
		decode := func(b []byte) (Payload, error) {
			if typ == PayloadSK || typ == PayloadSKF {
				return parseEncrypted(typ, PayloadNonce, b)
			}
			return parsePayload(typ, false, b)
		}
		p, err := decode(body)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, not a *ParseError", err, err)
			}
			return
		}
		if p.Type() != typ {
			t.Fatalf("decoded a %s as a %s", payloadName(typ), payloadName(p.Type()))
		}
		out, err := p.appendBody(nil)
		if err != nil {
			t.Fatalf("encoding a decoded %s: %v\n%x", payloadName(typ), err, body)
		}
		again, err := decode(out)
		if err != nil {
			t.Fatalf("decoding the encoded %s: %v\nin  %x\nout %x", payloadName(typ), err, body, out)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("%s differs after a round trip\nin  %x\nout %x", payloadName(typ), body, out)
		}
		if out2, err := again.appendBody(nil); err != nil || string(out2) != string(out) {
			t.Fatalf("second encoding of the %s differs: %v", payloadName(typ), err)
		}
	})
}
