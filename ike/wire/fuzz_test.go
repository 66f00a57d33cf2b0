package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// codecFuzzSmallInner is a short IKE_AUTH inner chain; small seeds keep
// the minimisation of new inputs quick.
func codecFuzzSmallInner() []Payload {
	return []Payload{
		&ID{IDType: IDFQDN, Data: []byte("c.example")},
		&Auth{Method: AuthPSK, Data: codecSeq(0, 16)},
		&TS{Selectors: []TrafficSelector{{EndPort: 65535, Start: codecAddr("10.0.0.0"), End: codecAddr("10.0.0.255")}}},
		&Notify{NotifyType: MOBIKE_SUPPORTED},
	}
}

// codecFuzzMessages are the seeds of FuzzParse: real and edge-case
// messages, one per payload case.
func codecFuzzMessages(f *testing.F) [][]byte {
	_, saInit := ikeSAInitRequest(f)
	seeds := [][]byte{saInit, codecHex(f, loadCodecChapolyVector(f).MessageHex)}
	for _, tc := range codecPayloadCases {
		m := &Message{SPIi: 1, SPIr: 2, Exchange: IKE_AUTH, Flags: FlagResponse, MessageID: 3,
			Payloads: []Payload{tc.p, &VendorID{Data: []byte("v")}}}
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	enc, err := (&Message{Payloads: []Payload{&VendorID{Data: []byte("v")},
		&Encrypted{NextPayload: PayloadNotify, Body: codecSeq(0, 40)}}}).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, enc)

	c := newCodecCrypter()
	small := &Message{SPIi: 1, SPIr: 2, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1, Payloads: codecFuzzSmallInner()}
	sk, err := small.MarshalEncrypted(c)
	if err != nil {
		f.Fatal(err)
	}
	fragments, err := small.MarshalFragments(c, 120)
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, sk, fragments[0], fragments[1])
	seeds = append(seeds,
		codecRawMessage(f, PayloadNone, ""),
		codecRawMessage(f, PayloadVendorID, "c8 00 0006 6869 00 80 0004"),
		codecRawMessage(f, PayloadSA, "00 00 001c 00 00 0018 01 01 00 01 00 00 0010 01 00 0014 000e 0002 0100 0000"),
	)
	return seeds
}

// FuzzParse feeds arbitrary datagrams to Parse. Parse must not panic and
// must report failures as *ParseError; a message it accepts must marshal
// again into bytes that parse to the same message and marshal identically.
func FuzzParse(f *testing.F) {
	for _, seed := range codecFuzzMessages(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, not a *ParseError", err, err)
			}
			return
		}
		if !bytes.Equal(m.Raw, b) {
			t.Fatal("Raw differs from the input")
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed message: %v\n%x", err, b)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse: %v\nin  %x\nout %x", err, b, out)
		}
		if !reflect.DeepEqual(codecWithoutRaw(again), codecWithoutRaw(m)) {
			t.Fatalf("re-parsed message differs\nin  %x\nout %x", b, out)
		}
		if out2, err := again.Marshal(); err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("second Marshal differs: %v", err)
		}
	})
}

// FuzzParsePayloads checks ParsePayloads, the decoder of decrypted inner
// payloads, the same way.
func FuzzParsePayloads(f *testing.F) {
	first, inner, err := MarshalPayloads(codecFuzzSmallInner())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(first), inner)
	for _, tc := range codecPayloadCases {
		first, b, err := MarshalPayloads([]Payload{tc.p})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(first), b)
	}
	f.Add(uint8(PayloadNotify), codecHex(f, loadCodecChapolyVector(f).Notify))
	f.Add(uint8(PayloadSK), codecHex(f, "00 00 0008 01020304"))
	f.Add(uint8(PayloadNone), []byte{})
	f.Fuzz(func(t *testing.T, first uint8, b []byte) {
		ps, err := ParsePayloads(PayloadType(first), b)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, not a *ParseError", err, err)
			}
			return
		}
		first2, out, err := MarshalPayloads(ps)
		if err != nil {
			t.Fatalf("MarshalPayloads of parsed payloads: %v\n%x", err, b)
		}
		if len(ps) > 0 && first2 != PayloadType(first) {
			t.Fatalf("first payload %d, parsed from %d", first2, first)
		}
		again, err := ParsePayloads(first2, out)
		if err != nil {
			t.Fatalf("re-parse: %v\nin  %x\nout %x", err, b, out)
		}
		if !reflect.DeepEqual(again, ps) {
			t.Fatalf("re-parsed payloads differ\nin  %x\nout %x", b, out)
		}
	})
}
