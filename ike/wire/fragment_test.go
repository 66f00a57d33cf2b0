package wire

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

func codecAuthRequest(id uint32) *Message {
	return &Message{SPIi: 0xa1, SPIr: 0xb2, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: id, Payloads: ikeAuthInner()}
}

// parseAll parses every datagram and fails the test on error.
func parseAll(t *testing.T, datagrams [][]byte) []*Message {
	t.Helper()
	ms := make([]*Message, len(datagrams))
	for i, d := range datagrams {
		m, err := Parse(d)
		if err != nil {
			t.Fatalf("datagram %d: %v", i+1, err)
		}
		ms[i] = m
	}
	return ms
}

func TestMarshalFragmentsLayout(t *testing.T) {
	c := newCodecCrypter()
	_, inner, err := MarshalPayloads(ikeAuthInner())
	if err != nil {
		t.Fatal(err)
	}
	for _, maxDatagram := range []int{100, 576, 1232, 1472, 3000} {
		datagrams, err := codecAuthRequest(1).MarshalFragments(c, maxDatagram)
		if err != nil {
			t.Fatalf("max %d: %v", maxDatagram, err)
		}
		if len(datagrams) < 2 {
			t.Fatalf("max %d: %d datagrams for %d inner bytes", maxDatagram, len(datagrams), len(inner))
		}
		var innerBytes int
		for i, m := range parseAll(t, datagrams) {
			if len(datagrams[i]) > maxDatagram {
				t.Errorf("max %d: fragment %d has %d bytes", maxDatagram, i+1, len(datagrams[i]))
			}
			if m.NextPayload != PayloadSKF || m.MessageID != 1 || m.Exchange != IKE_AUTH || m.SPIi != 0xa1 || !m.IsInitiator() {
				t.Errorf("max %d: fragment %d header %+v", maxDatagram, i+1, m)
			}
			f, ok := m.Payloads[0].(*EncryptedFragment)
			if !ok || len(m.Payloads) != 1 {
				t.Fatalf("max %d: fragment %d payloads %+v", maxDatagram, i+1, m.Payloads)
			}
			wantNext := PayloadNone
			if i == 0 {
				wantNext = PayloadIDi
			}
			if int(f.Number) != i+1 || int(f.Total) != len(datagrams) || f.NextPayload != wantNext {
				t.Errorf("max %d: fragment %d is %d/%d next %d", maxDatagram, i+1, f.Number, f.Total, f.NextPayload)
			}
			plain, err := c.Open(datagrams[i][:len(datagrams[i])-len(f.Body)], bytes.Clone(f.Body))
			if err != nil {
				t.Fatal(err)
			}
			innerBytes += len(plain)
		}
		if innerBytes != len(inner) {
			t.Errorf("max %d: fragments carry %d inner bytes, want %d", maxDatagram, innerBytes, len(inner))
		}
	}
}

func TestMarshalFragmentsSingle(t *testing.T) {
	c := newCodecCrypter()
	m := codecAuthRequest(1)
	want, err := m.MarshalEncrypted(c)
	if err != nil {
		t.Fatal(err)
	}
	datagrams, err := m.MarshalFragments(c, len(want))
	if err != nil {
		t.Fatal(err)
	}
	if len(datagrams) != 1 || len(datagrams[0]) != len(want) {
		t.Fatalf("%d datagrams, want one of %d bytes", len(datagrams), len(want))
	}
	p, err := Parse(datagrams[0])
	if err != nil {
		t.Fatal(err)
	}
	inner, err := p.Decrypt(c)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(inner, m.Payloads) {
		t.Fatal("inner payloads differ")
	}
	// One byte less and it is fragmented.
	datagrams, err = m.MarshalFragments(c, len(want)-1)
	if err != nil || len(datagrams) < 2 {
		t.Fatalf("%d datagrams, %v", len(datagrams), err)
	}
}

func TestMarshalFragmentsTooSmall(t *testing.T) {
	c := newCodecCrypter()
	minimum := ikeHeaderLen + genericHeaderLen + fragmentFieldLen + c.BodyLen(1)
	if _, err := codecAuthRequest(1).MarshalFragments(c, minimum-1); err == nil {
		t.Fatal("MarshalFragments accepted a datagram size that fits no fragment")
	}
	datagrams, err := (&Message{Payloads: []Payload{&VendorID{Data: codecSeq(0, 40)}}}).MarshalFragments(c, minimum)
	if err != nil {
		t.Fatal(err)
	}
	if len(datagrams) != 3 { // 44 inner bytes, at most 15 fit a 16-byte block with the pad length
		t.Errorf("%d fragments, want 3", len(datagrams))
	}
	if _, err := (&Message{Payloads: []Payload{&Nonce{}}}).MarshalFragments(c, 1500); err == nil {
		t.Error("MarshalFragments accepted an invalid payload")
	}
}

func TestReassembleAnyOrderWithDuplicates(t *testing.T) {
	c := newCodecCrypter()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, maxDatagram := range []int{200, 576, 1280} {
		for round := range 5 {
			datagrams, err := codecAuthRequest(7).MarshalFragments(c, maxDatagram)
			if err != nil {
				t.Fatal(err)
			}
			ms := parseAll(t, datagrams)
			order := rng.Perm(len(ms))
			// Every fragment but the last to complete is also sent twice.
			for _, i := range rng.Perm(len(ms))[:len(ms)/2] {
				if i != order[len(order)-1] {
					order = append(order[:len(order)-1], i, order[len(order)-1])
				}
			}
			var r Reassembler
			for k, i := range order {
				inner, done, err := r.Add(ms[i], c)
				if err != nil {
					t.Fatalf("max %d round %d: fragment %d: %v", maxDatagram, round, i+1, err)
				}
				if last := k == len(order)-1; done != last {
					t.Fatalf("max %d round %d: done=%v after %d of %d adds", maxDatagram, round, done, k+1, len(order))
				}
				if done && !reflect.DeepEqual(inner, ikeAuthInner()) {
					t.Fatalf("max %d round %d: reassembled payloads differ", maxDatagram, round)
				}
			}
			if r.Pending() != 0 || r.held != 0 {
				t.Fatalf("state left after completion: %d pending, %d bytes", r.Pending(), r.held)
			}
		}
	}
}

func TestReassembleRejectsTampered(t *testing.T) {
	c := newCodecCrypter()
	datagrams, err := codecAuthRequest(2).MarshalFragments(c, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var r Reassembler
	ms := parseAll(t, datagrams)
	for _, m := range ms[1:] {
		if _, done, err := r.Add(m, c); err != nil || done {
			t.Fatalf("done=%v, %v", done, err)
		}
	}
	// Flags, message ID, Total Fragments, IV and ICV are all authenticated.
	for _, at := range []int{19, 20, ikeHeaderLen + 7, ikeHeaderLen + 9, len(datagrams[0]) - 1} {
		bad := bytes.Clone(datagrams[0])
		bad[at] ^= 0x01
		m, err := Parse(bad)
		if err != nil {
			t.Fatalf("byte %d: %v", at, err)
		}
		if _, done, err := r.Add(m, c); !errors.Is(err, errCodecICV) || done {
			t.Fatalf("tampered byte %d: done=%v, error %v", at, done, err)
		}
	}
	if _, done, err := r.Add(ms[0], c); err != nil || !done {
		t.Fatalf("genuine first fragment after tampered ones: done=%v, %v", done, err)
	}

	// A fragment sealed under another key is refused too.
	other := codecCrypter{key: []byte("another key")}
	d, err := codecAuthRequest(3).MarshalFragments(other, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Add(parseAll(t, d)[0], c); !errors.Is(err, errCodecICV) {
		t.Fatalf("foreign key: %v", err)
	}
	if r.Pending() != 0 {
		t.Fatal("an unauthenticated fragment created state")
	}
}

func TestReassembleLimits(t *testing.T) {
	c := newCodecCrypter()
	datagrams, err := codecAuthRequest(4).MarshalFragments(c, 576)
	if err != nil {
		t.Fatal(err)
	}
	ms := parseAll(t, datagrams)

	t.Run("fragments", func(t *testing.T) {
		r := Reassembler{MaxFragments: len(ms) - 1}
		if _, _, err := r.Add(ms[0], c); !errors.Is(err, ErrFragmentLimit) {
			t.Fatalf("%d fragments with MaxFragments %d: %v", len(ms), r.MaxFragments, err)
		}
		many, err := (&Message{Payloads: []Payload{&VendorID{Data: make([]byte, 20000)}}}).MarshalFragments(c, 200)
		if err != nil {
			t.Fatal(err)
		}
		var def Reassembler
		if _, _, err := def.Add(parseAll(t, many)[0], c); len(many) <= DefaultMaxFragments || !errors.Is(err, ErrFragmentLimit) {
			t.Fatalf("%d fragments with the default limit: %v", len(many), err)
		}
	})

	t.Run("bytes", func(t *testing.T) {
		r := Reassembler{MaxBytes: 2000}
		var err error
		for _, m := range ms {
			if _, _, err = r.Add(m, c); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrFragmentLimit) {
			t.Fatalf("a %d-fragment message within 2000 bytes: %v", len(ms), err)
		}
		if r.Pending() != 0 || r.held != 0 {
			t.Fatalf("state kept after the limit: %d pending, %d bytes", r.Pending(), r.held)
		}
	})

	t.Run("messages", func(t *testing.T) {
		r := Reassembler{MaxMessages: 2}
		first := make(map[uint32]*Message)
		rest := make(map[uint32][]*Message)
		for id := uint32(10); id < 13; id++ {
			d, err := codecAuthRequest(id).MarshalFragments(c, 576)
			if err != nil {
				t.Fatal(err)
			}
			fs := parseAll(t, d)
			first[id], rest[id] = fs[0], fs[1:]
			if _, _, err := r.Add(fs[0], c); err != nil {
				t.Fatal(err)
			}
		}
		if r.Pending() != 2 {
			t.Fatalf("%d messages pending, want 2", r.Pending())
		}
		// Message 10, the oldest, was dropped: its other fragments
		// start over and cannot complete it.
		for _, m := range rest[10] {
			if _, done, err := r.Add(m, c); err != nil || done {
				t.Fatalf("message 10: done=%v, %v", done, err)
			}
		}
		// Message 12 is still whole.
		var done bool
		for _, m := range rest[12] {
			if _, done, err = r.Add(m, c); err != nil {
				t.Fatal(err)
			}
		}
		if !done {
			t.Fatal("message 12 did not complete")
		}
	})
}

// TestReassembleTotalChanges applies RFC 7383 §2.6: a larger Total
// restarts reassembly, a smaller one is ignored.
func TestReassembleTotalChanges(t *testing.T) {
	c := newCodecCrypter()
	coarse, err := codecAuthRequest(5).MarshalFragments(c, 1400)
	if err != nil {
		t.Fatal(err)
	}
	fine, err := codecAuthRequest(5).MarshalFragments(c, 600)
	if err != nil {
		t.Fatal(err)
	}
	if len(fine) <= len(coarse) {
		t.Fatalf("%d fine fragments, %d coarse", len(fine), len(coarse))
	}
	cm, fm := parseAll(t, coarse), parseAll(t, fine)
	var r Reassembler
	if _, _, err := r.Add(cm[0], c); err != nil {
		t.Fatal(err)
	}
	for i, m := range fm[:len(fm)-1] {
		if _, done, err := r.Add(m, c); err != nil || done {
			t.Fatalf("fine fragment %d: done=%v, %v", i+1, done, err)
		}
	}
	// The coarse fragments are now stale.
	for _, m := range cm[1:] {
		if inner, done, err := r.Add(m, c); err != nil || done || inner != nil {
			t.Fatalf("stale coarse fragment: done=%v, %v", done, err)
		}
	}
	inner, done, err := r.Add(fm[len(fm)-1], c)
	if err != nil || !done || !reflect.DeepEqual(inner, ikeAuthInner()) {
		t.Fatalf("last fine fragment: done=%v, %v", done, err)
	}
}

func TestReassembleRequestAndResponse(t *testing.T) {
	c := newCodecCrypter()
	request := codecAuthRequest(1)
	response := &Message{SPIi: 0xa1, SPIr: 0xb2, Exchange: IKE_AUTH, Flags: FlagResponse, MessageID: 1,
		Payloads: []Payload{&Cert{Encoding: CertX509Signature, Data: codecSeq(0, 2500)}, &Auth{Method: AuthPSK, Data: codecSeq(0, 32)}}}
	qd, err := request.MarshalFragments(c, 1000)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := response.MarshalFragments(c, 1000)
	if err != nil {
		t.Fatal(err)
	}
	qm, rm := parseAll(t, qd), parseAll(t, rd)
	var r Reassembler
	var gotRequest, gotResponse []Payload
	for i := range max(len(qm), len(rm)) {
		if i < len(qm) {
			if inner, done, err := r.Add(qm[i], c); err != nil {
				t.Fatal(err)
			} else if done {
				gotRequest = inner
			}
		}
		if i < len(rm) {
			if inner, done, err := r.Add(rm[i], c); err != nil {
				t.Fatal(err)
			} else if done {
				gotResponse = inner
			}
		}
	}
	if !reflect.DeepEqual(gotRequest, request.Payloads) || !reflect.DeepEqual(gotResponse, response.Payloads) {
		t.Fatal("request and response with one message ID were mixed up")
	}
}

func TestReassembleRefusesOtherMessages(t *testing.T) {
	c := newCodecCrypter()
	var r Reassembler
	sk, err := codecAuthRequest(1).MarshalEncrypted(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Message{{}, parseAll(t, [][]byte{sk})[0]} {
		if _, _, err := r.Add(m, c); err == nil {
			t.Errorf("Add accepted %+v", m)
		}
	}
	built := &Message{Payloads: []Payload{&EncryptedFragment{Number: 1, Total: 1, Body: codecSeq(0, 48)}}}
	if _, _, err := r.Add(built, c); err == nil {
		t.Error("Add accepted a fragment that was not parsed")
	}
	frag := parseAll(t, [][]byte{mustFragment(t, c)})[0]
	if _, err := frag.Decrypt(c); err == nil {
		t.Error("Decrypt accepted a fragment")
	}
}

func mustFragment(t *testing.T, c Crypter) []byte {
	t.Helper()
	d, err := codecAuthRequest(1).MarshalFragments(c, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return d[0]
}
