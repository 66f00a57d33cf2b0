package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// codecCrypter is an encrypt-then-MAC stand-in for a negotiated suite: a
// SHA-256 counter-mode keystream, 16-byte blocks so that padding varies,
// and a 16-byte HMAC-SHA256 ICV over prefix | IV | ciphertext.
type codecCrypter struct{ key []byte }

const (
	codecIVLen  = 8
	codecBlock  = 16
	codecICVLen = 16
)

var errCodecICV = errors.New("test crypter: ICV mismatch")

func newCodecCrypter() codecCrypter { return codecCrypter{key: []byte("test crypter key")} }

func (c codecCrypter) BodyLen(n int) int {
	return codecIVLen + (n/codecBlock+1)*codecBlock + codecICVLen
}

func (c codecCrypter) xor(iv, b []byte) {
	var block [sha256.Size]byte
	for i := range b {
		if i%sha256.Size == 0 {
			h := sha256.New()
			h.Write(c.key)
			h.Write(iv)
			h.Write(binary.BigEndian.AppendUint32(nil, uint32(i/sha256.Size)))
			h.Sum(block[:0])
		}
		b[i] ^= block[i%sha256.Size]
	}
}

func (c codecCrypter) icv(prefix, ivAndCiphertext []byte) []byte {
	mac := hmac.New(sha256.New, c.key)
	mac.Write(prefix)
	mac.Write(ivAndCiphertext)
	return mac.Sum(nil)[:codecICVLen]
}

func (c codecCrypter) Seal(body, prefix, inner []byte) error {
	if len(body) != c.BodyLen(len(inner)) {
		return errors.New("test crypter: wrong body length")
	}
	iv := body[:codecIVLen]
	rand.Read(iv)
	ct := body[codecIVLen : len(body)-codecICVLen]
	n := copy(ct, inner)
	clear(ct[n:])
	ct[len(ct)-1] = uint8(len(ct) - n - 1)
	c.xor(iv, ct)
	copy(body[len(body)-codecICVLen:], c.icv(prefix, body[:len(body)-codecICVLen]))
	return nil
}

func (c codecCrypter) Open(prefix, body []byte) ([]byte, error) {
	if len(body) < codecIVLen+codecBlock+codecICVLen || (len(body)-codecIVLen-codecICVLen)%codecBlock != 0 {
		return nil, errors.New("test crypter: bad body length")
	}
	icvAt := len(body) - codecICVLen
	if !hmac.Equal(body[icvAt:], c.icv(prefix, body[:icvAt])) {
		return nil, errCodecICV
	}
	pt := body[codecIVLen:icvAt]
	c.xor(body[:codecIVLen], pt)
	pad := int(pt[len(pt)-1])
	if pad+1 > len(pt) {
		return nil, errors.New("test crypter: bad padding")
	}
	return pt[:len(pt)-1-pad], nil
}

// codecChapoly is ENCR_CHACHA20_POLY1305 for IKEv2 (RFC 7634 §3): the
// IV is 8 bytes, the nonce salt | IV, the associated data the prefix, and
// no padding precedes the pad length octet. A fixed iv makes Seal
// deterministic for the test vector.
type codecChapoly struct {
	key, salt, iv []byte
}

func (c codecChapoly) BodyLen(n int) int {
	return 8 + n + 1 + chacha20poly1305.Overhead
}

func (c codecChapoly) Seal(body, prefix, inner []byte) error {
	aead, err := chacha20poly1305.New(c.key)
	if err != nil {
		return err
	}
	iv := body[:8]
	if c.iv != nil {
		copy(iv, c.iv)
	} else {
		rand.Read(iv)
	}
	plaintext := append(bytes.Clone(inner), 0)
	aead.Seal(body[8:8], append(bytes.Clone(c.salt), iv...), plaintext, prefix)
	return nil
}

func (c codecChapoly) Open(prefix, body []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(c.key)
	if err != nil {
		return nil, err
	}
	if len(body) < 8+1+chacha20poly1305.Overhead {
		return nil, errors.New("chapoly: short body")
	}
	pt, err := aead.Open(body[8:8], append(bytes.Clone(c.salt), body[:8]...), body[8:], prefix)
	if err != nil {
		return nil, err
	}
	pad := int(pt[len(pt)-1])
	if pad+1 > len(pt) {
		return nil, errors.New("chapoly: bad padding")
	}
	return pt[:len(pt)-1-pad], nil
}

func codecHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// codecSeq returns n bytes counting up from start.
func codecSeq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// codecWithoutRaw returns a copy of m without Raw, for comparing a parsed
// message with a built one.
func codecWithoutRaw(m *Message) Message {
	c := *m
	c.Raw = nil
	return c
}

func codecParseError(t *testing.T, err error) *ParseError {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ParseError", err, err)
	}
	return pe
}

// codecRawMessage returns an IKE header for an IKE_AUTH request with first as
// the first payload type and the right length, followed by body.
func codecRawMessage(t testing.TB, first PayloadType, body string) []byte {
	t.Helper()
	b := codecHex(t, body)
	h := make([]byte, ikeHeaderLen)
	binary.BigEndian.PutUint64(h, 0x0102030405060708)
	binary.BigEndian.PutUint64(h[8:], 0x1112131415161718)
	h[16], h[17], h[18], h[19] = uint8(first), Version, uint8(IKE_AUTH), FlagInitiator
	binary.BigEndian.PutUint32(h[20:], 1)
	binary.BigEndian.PutUint32(h[24:], uint32(ikeHeaderLen+len(b)))
	return append(h, b...)
}

// ikeSAInitRequest is an IKE_SA_INIT request as strongSwan-style
// initiators send it, with its exact encoding.
func ikeSAInitRequest(t testing.TB) (*Message, []byte) {
	m := &Message{
		SPIi:     0x0102030405060708,
		Exchange: IKE_SA_INIT,
		Flags:    FlagInitiator,
		Payloads: []Payload{
			&SA{Proposals: []Proposal{{
				Number:   1,
				Protocol: ProtoIKE,
				Transforms: []Transform{
					{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLength: 256},
					{Type: TransformPRF, ID: PRF_HMAC_SHA2_256},
					{Type: TransformDH, ID: DH_CURVE25519},
				},
			}}},
			&KE{Group: DH_CURVE25519, Data: codecSeq(0xa0, 32)},
			&Nonce{Data: codecSeq(0x30, 32)},
			&Notify{NotifyType: NAT_DETECTION_SOURCE_IP, Data: codecSeq(0xc0, 20)},
			&Notify{NotifyType: NAT_DETECTION_DESTINATION_IP, Data: codecSeq(0xe0, 20)},
			&Notify{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED},
			&Notify{NotifyType: SIGNATURE_HASH_ALGORITHMS, Data: codecHex(t, "0002 0003 0004 0005")},
		},
	}
	wire := codecHex(t, `
		0102030405060708 0000000000000000 21 20 22 08 00000000 000000e0
		22 00 0028
		  00 00 0024 01 01 00 03
		    03 00 000c 01 00 0014 800e 0100
		    03 00 0008 02 00 0005
		    00 00 0008 04 00 001f
		28 00 0028 001f 0000`+hex.EncodeToString(codecSeq(0xa0, 32))+`
		29 00 0024`+hex.EncodeToString(codecSeq(0x30, 32))+`
		29 00 001c 00 00 4004`+hex.EncodeToString(codecSeq(0xc0, 20))+`
		29 00 001c 00 00 4005`+hex.EncodeToString(codecSeq(0xe0, 20))+`
		29 00 0008 00 00 402e
		00 00 0010 00 00 402f 0002 0003 0004 0005`)
	return m, wire
}

func TestIKESAInitRequestEncoding(t *testing.T) {
	m, want := ikeSAInitRequest(t)
	got, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:ikeHeaderLen], want[:ikeHeaderLen]) {
		t.Errorf("header\n got %x\nwant %x", got[:ikeHeaderLen], want[:ikeHeaderLen])
	}
	saEnd := ikeHeaderLen + 40
	if !bytes.Equal(got[ikeHeaderLen:saEnd], want[ikeHeaderLen:saEnd]) {
		t.Errorf("SA payload\n got %x\nwant %x", got[ikeHeaderLen:saEnd], want[ikeHeaderLen:saEnd])
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("message\n got %x\nwant %x", got, want)
	}

	parsed, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.Raw, want) {
		t.Error("Raw differs from the input")
	}
	m.NextPayload = PayloadSA
	if !reflect.DeepEqual(codecWithoutRaw(parsed), *m) {
		t.Errorf("parsed\n%+v\nwant\n%+v", codecWithoutRaw(parsed), *m)
	}
	if !parsed.IsInitiator() || parsed.IsResponse() {
		t.Error("flags: want initiator request")
	}
	if n := FindNotify(parsed.Payloads, IKEV2_FRAGMENTATION_SUPPORTED); n == nil {
		t.Error("FindNotify: no IKEV2_FRAGMENTATION_SUPPORTED")
	}
	if n := FindNotify(parsed.Payloads, COOKIE); n != nil {
		t.Error("FindNotify: found a COOKIE")
	}
	if ke := Find[*KE](parsed.Payloads); ke == nil || ke.Group != DH_CURVE25519 {
		t.Errorf("Find[*KE] = %+v", ke)
	}
	if id := Find[*ID](parsed.Payloads); id != nil {
		t.Errorf("Find[*ID] = %+v, want nil", id)
	}
	if ns := FindAll[*Notify](parsed.Payloads); len(ns) != 4 {
		t.Errorf("FindAll[*Notify] found %d, want 4", len(ns))
	}
}

func codecAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// codecPayloadCases has every payload type with its edge cases; all are valid.
var codecPayloadCases = []struct {
	name string
	p    Payload
}{
	{"SA IKE", &SA{Proposals: []Proposal{
		{Number: 1, Protocol: ProtoIKE, Transforms: []Transform{
			{Type: TransformENCR, ID: ENCR_AES_CBC, KeyLength: 128},
			{Type: TransformENCR, ID: ENCR_CHACHA20_POLY1305},
			{Type: TransformINTEG, ID: AUTH_HMAC_SHA2_256_128},
			{Type: TransformPRF, ID: PRF_HMAC_SHA2_512},
			{Type: TransformDH, ID: DH_ECP_384},
		}},
		{Number: 2, Protocol: ProtoIKE, Transforms: []Transform{{Type: TransformENCR, ID: ENCR_AES_GCM_8, KeyLength: 256}}},
	}}},
	{"SA IKE rekey", &SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoIKE, SPI: codecSeq(1, 8), Transforms: []Transform{{Type: TransformDH, ID: DH_MODP_2048}}}}}},
	{"SA ESP", &SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoESP, SPI: []byte{0xc1, 0, 0, 1}, Transforms: []Transform{
		{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLength: 256},
		{Type: TransformESN, ID: ESN_NO},
	}}}}},
	{"SA no transforms", &SA{Proposals: []Proposal{{Number: 7, Protocol: ProtoAH, SPI: codecSeq(9, 4)}}}},
	{"KE", &KE{Group: DH_ECP_256, Data: codecSeq(4, 64)}},
	{"KE empty", &KE{Group: 1024}},
	{"IDi FQDN", &ID{IDType: IDFQDN, Data: []byte("client.example.org")}},
	{"IDr IPv4", &ID{Responder: true, IDType: IDIPv4, Data: []byte{192, 0, 2, 1}}},
	{"IDr IPv6", &ID{Responder: true, IDType: IDIPv6, Data: codecSeq(0x20, 16)}},
	{"CERT", &Cert{Encoding: CertX509Signature, Data: codecSeq(0x30, 64)}},
	{"CERTREQ", &CertReq{Encoding: CertX509Signature, Data: codecSeq(0, 40)}},
	{"CERTREQ empty", &CertReq{Encoding: CertX509Signature}},
	{"AUTH", &Auth{Method: AuthPSK, Data: codecSeq(0, 32)}},
	{"Nonce min", &Nonce{Data: codecSeq(0, 16)}},
	{"Nonce max", &Nonce{Data: codecSeq(0, 256)}},
	{"Notify status", &Notify{NotifyType: SET_WINDOW_SIZE, Data: []byte{0, 0, 0, 10}}},
	{"Notify REKEY_SA", &Notify{Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, NotifyType: REKEY_SA}},
	{"Notify IKE SPIs", &Notify{Protocol: ProtoIKE, SPI: codecSeq(0, 16), NotifyType: INVALID_IKE_SPI}},
	{"Notify private", &Notify{NotifyType: 50000, Data: []byte("x")}},
	{"Delete IKE", &Delete{Protocol: ProtoIKE}},
	{"Delete ESP", &Delete{Protocol: ProtoESP, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}}},
	{"Vendor ID", &VendorID{Data: []byte("mifsec")}},
	{"TSi IPv4", &TS{Selectors: []TrafficSelector{
		{StartPort: 0, EndPort: 65535, Start: codecAddr("10.0.0.0"), End: codecAddr("10.0.255.255")},
		{IPProtocol: 17, StartPort: 500, EndPort: 500, Start: codecAddr("192.0.2.1"), End: codecAddr("192.0.2.1")},
	}}},
	{"TSr IPv6 opaque ports", &TS{Responder: true, Selectors: []TrafficSelector{
		{IPProtocol: 6, StartPort: 65535, EndPort: 0, Start: codecAddr("2001:db8::"), End: codecAddr("2001:db8::ffff")},
		{Start: codecAddr("::ffff:10.0.0.1"), End: codecAddr("::ffff:10.0.0.9"), EndPort: 65535},
	}}},
	{"TS empty", &TS{}},
	{"CP request", &CP{CfgType: CFG_REQUEST, Attributes: []CPAttribute{
		{Type: INTERNAL_IP4_ADDRESS}, {Type: INTERNAL_IP4_DNS}, {Type: INTERNAL_IP6_ADDRESS}, {Type: 25},
	}}},
	{"CP reply", &CP{CfgType: CFG_REPLY, Attributes: []CPAttribute{
		{Type: INTERNAL_IP4_ADDRESS, Value: []byte{10, 9, 0, 2}},
		{Type: INTERNAL_IP4_SUBNET, Value: []byte{10, 9, 0, 0, 255, 255, 255, 0}},
		{Type: INTERNAL_IP6_ADDRESS, Value: append(codecSeq(0x20, 16), 64)},
		{Type: 0x7fff, Value: []byte("private")},
	}}},
	{"CP empty", &CP{CfgType: CFG_ACK}},
	{"EAP", &EAP{Data: []byte{1, 7, 0, 5, 1}}},
	{"EAP success", &EAP{Data: []byte{3, 7, 0, 4}}},
	{"Unknown", &Unknown{PayloadType: 200, Data: []byte("ignored")}},
	{"Unknown empty", &Unknown{PayloadType: 49}},
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, tc := range codecPayloadCases {
		t.Run(tc.name, func(t *testing.T) {
			m := &Message{
				SPIi: 1, SPIr: 2, Exchange: IKE_AUTH, Flags: FlagResponse, MessageID: 77,
				Payloads: []Payload{tc.p, &Nonce{Data: codecSeq(0, 16)}},
			}
			b, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(%x): %v", b, err)
			}
			m.NextPayload = tc.p.Type()
			if !reflect.DeepEqual(codecWithoutRaw(got), *m) {
				t.Fatalf("round trip\n got %+v\nwant %+v", got.Payloads[0], tc.p)
			}
			again, err := got.Marshal()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-marshal: %v\n got %x\nwant %x", err, again, b)
			}

			first, inner, err := MarshalPayloads([]Payload{tc.p})
			if err != nil || first != tc.p.Type() {
				t.Fatalf("MarshalPayloads: %v, first %d", err, first)
			}
			ps, err := ParsePayloads(first, inner)
			if err != nil || len(ps) != 1 || !reflect.DeepEqual(ps[0], tc.p) {
				t.Fatalf("ParsePayloads: %v, %+v", err, ps)
			}
		})
	}
}

func TestEncryptedPayloadsRoundTrip(t *testing.T) {
	for _, last := range []Payload{
		&Encrypted{NextPayload: PayloadIDi, Body: codecSeq(0, 64)},
		&Encrypted{NextPayload: PayloadNone},
		&EncryptedFragment{Number: 1, Total: 3, NextPayload: PayloadIDi, Body: codecSeq(0, 40)},
		&EncryptedFragment{Number: 3, Total: 3, Body: codecSeq(0, 40)},
	} {
		m := &Message{SPIi: 1, SPIr: 2, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1,
			Payloads: []Payload{&VendorID{Data: []byte("before")}, last}}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		m.NextPayload = PayloadVendorID
		if !reflect.DeepEqual(codecWithoutRaw(got), *m) {
			t.Fatalf("round trip of %T\n got %+v\nwant %+v", last, got.Payloads[1], last)
		}
	}
}

func TestMarshalPayloadsChain(t *testing.T) {
	ps := ikeAuthInner()
	first, b, err := MarshalPayloads(ps)
	if err != nil {
		t.Fatal(err)
	}
	if first != PayloadIDi {
		t.Errorf("first = %d, want IDi", first)
	}
	got, err := ParsePayloads(first, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ps) {
		t.Fatalf("ParsePayloads\n got %+v\nwant %+v", got, ps)
	}
	if ts := FindTS(got, true); ts == nil || !ts.Responder {
		t.Error("FindTS(responder) found no TSr")
	}
	if id := FindID(got, false); id == nil || string(id.Data) != "client.example.org" {
		t.Errorf("FindID(initiator) = %+v", id)
	}
	if first, b, err := MarshalPayloads(nil); err != nil || first != PayloadNone || len(b) != 0 {
		t.Errorf("MarshalPayloads(nil) = %d, %x, %v", first, b, err)
	}
	if ps, err := ParsePayloads(PayloadNone, nil); err != nil || ps != nil {
		t.Errorf("ParsePayloads(none) = %v, %v", ps, err)
	}
}

// ikeAuthInner is the inner payloads of an IKE_AUTH request with a
// certificate large enough to need fragmentation.
func ikeAuthInner() []Payload {
	return []Payload{
		&ID{IDType: IDFQDN, Data: []byte("client.example.org")},
		&Cert{Encoding: CertX509Signature, Data: codecSeq(0x30, 3000)},
		&Notify{NotifyType: INITIAL_CONTACT},
		&ID{Responder: true, IDType: IDFQDN, Data: []byte("gw.example.org")},
		&Auth{Method: AuthDigitalSignature, Data: codecSeq(0, 80)},
		&CP{CfgType: CFG_REQUEST, Attributes: []CPAttribute{{Type: INTERNAL_IP4_ADDRESS}, {Type: INTERNAL_IP4_DNS}}},
		&SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoESP, SPI: []byte{0xca, 0xfe, 0, 1}, Transforms: []Transform{
			{Type: TransformENCR, ID: ENCR_AES_GCM_16, KeyLength: 256}, {Type: TransformESN, ID: ESN_NO}}}}},
		&TS{Selectors: []TrafficSelector{{EndPort: 65535, Start: codecAddr("0.0.0.0"), End: codecAddr("255.255.255.255")}}},
		&TS{Responder: true, Selectors: []TrafficSelector{{EndPort: 65535, Start: codecAddr("0.0.0.0"), End: codecAddr("255.255.255.255")}}},
		&Notify{NotifyType: MOBIKE_SUPPORTED},
	}
}

type codecChapolyVector struct {
	SPIi       string `json:"spi_i_hex"`
	SPIr       string `json:"spi_r_hex"`
	MessageID  uint32 `json:"message_id"`
	Exchange   uint8  `json:"exchange_type"`
	Key        string `json:"key_hex"`
	Salt       string `json:"salt_hex"`
	IV         string `json:"iv_hex"`
	Notify     string `json:"notify_payload_hex"`
	Ciphertext string `json:"ciphertext_hex"`
	ICV        string `json:"icv_hex"`
	SKHeader   string `json:"sk_payload_header_hex"`
	IKEHeader  string `json:"ike_header_hex"`
	MessageHex string `json:"message_hex"`
}

func loadCodecChapolyVector(t testing.TB) codecChapolyVector {
	t.Helper()
	raw, err := os.ReadFile("testdata/ikev2-message-chapoly.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []codecChapolyVector }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) != 1 {
		t.Fatalf("%d vectors, want 1", len(file.Vectors))
	}
	return file.Vectors[0]
}

// TestParseRFC7634Message parses, decrypts and rebuilds the IKEv2 message of
// RFC 7634 Appendix B.
func TestParseRFC7634Message(t *testing.T) {
	v := loadCodecChapolyVector(t)
	wire := codecHex(t, v.MessageHex)
	if !bytes.Equal(wire[:ikeHeaderLen], codecHex(t, v.IKEHeader)) || !bytes.Equal(wire[ikeHeaderLen:ikeHeaderLen+4], codecHex(t, v.SKHeader)) {
		t.Fatal("vector: message does not start with its IKE and SK headers")
	}
	m, err := Parse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if m.SPIi != binary.BigEndian.Uint64(codecHex(t, v.SPIi)) || m.SPIr != binary.BigEndian.Uint64(codecHex(t, v.SPIr)) {
		t.Errorf("SPIs %016x %016x", m.SPIi, m.SPIr)
	}
	if m.SPIi != 0xc0c1c2c3c4c5c6c7 || m.SPIr != 0xd0d1d2d3d4d5d6d7 {
		t.Errorf("SPIs %016x %016x, want c0..c7 d0..d7", m.SPIi, m.SPIr)
	}
	if m.Exchange != INFORMATIONAL || uint8(m.Exchange) != v.Exchange || m.MessageID != 9 || m.MessageID != v.MessageID || m.Flags != 0 {
		t.Errorf("exchange %d, message ID %d, flags %#x", m.Exchange, m.MessageID, m.Flags)
	}
	if m.NextPayload != PayloadSK || len(m.Payloads) != 1 {
		t.Fatalf("next payload %d, %d payloads", m.NextPayload, len(m.Payloads))
	}
	sk, ok := m.Payloads[0].(*Encrypted)
	if !ok {
		t.Fatalf("payload is %T, want *Encrypted", m.Payloads[0])
	}
	if sk.NextPayload != PayloadNotify {
		t.Errorf("SK next payload %d, want 41", sk.NextPayload)
	}
	wantBody := codecHex(t, v.IV+v.Ciphertext+v.ICV)
	if !bytes.Equal(sk.Body, wantBody) {
		t.Errorf("SK body %x, want %x", sk.Body, wantBody)
	}
	if again, err := m.Marshal(); err != nil || !bytes.Equal(again, wire) {
		t.Errorf("Marshal of the parsed message: %v\n got %x\nwant %x", err, again, wire)
	}

	key, salt := codecHex(t, v.Key), codecHex(t, v.Salt)
	inner, err := m.Decrypt(codecChapoly{key: key, salt: salt})
	if err != nil {
		t.Fatal(err)
	}
	want := []Payload{&Notify{NotifyType: SET_WINDOW_SIZE, Data: []byte{0, 0, 0, 10}}}
	if !reflect.DeepEqual(inner, want) {
		t.Fatalf("inner payloads %+v, want %+v", inner[0], want[0])
	}
	if !bytes.Equal(m.Raw, wire) {
		t.Error("Decrypt modified Raw")
	}

	built := &Message{SPIi: m.SPIi, SPIr: m.SPIr, Exchange: INFORMATIONAL, MessageID: 9, Payloads: want}
	sealed, err := built.MarshalEncrypted(codecChapoly{key: key, salt: salt, iv: codecHex(t, v.IV)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sealed, wire) {
		t.Fatalf("MarshalEncrypted\n got %x\nwant %x", sealed, wire)
	}

	tampered := bytes.Clone(wire)
	tampered[20] ^= 1 // message ID, authenticated as associated data
	tm, err := Parse(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Decrypt(codecChapoly{key: key, salt: salt}); err == nil {
		t.Fatal("Decrypt accepted a message with a modified header")
	}
}

func TestEncryptedRoundTrip(t *testing.T) {
	c := newCodecCrypter()
	inner := ikeAuthInner()
	m := &Message{SPIi: 5, SPIr: 6, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1, Payloads: inner}
	b, err := m.MarshalEncrypted(c)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.NextPayload != PayloadSK || parsed.Payloads[0].(*Encrypted).NextPayload != PayloadIDi {
		t.Fatalf("parsed %+v", parsed)
	}
	got, err := parsed.Decrypt(c)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, inner) {
		t.Fatal("decrypted payloads differ")
	}

	// A payload before SK is authenticated with the header and kept ahead
	// of the inner payloads.
	withOuter := sealWithVendorID(t, c, m, []byte("outer"), inner)
	po, err := Parse(withOuter)
	if err != nil {
		t.Fatal(err)
	}
	got, err = po.Decrypt(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]Payload{&VendorID{Data: []byte("outer")}}, inner...); !reflect.DeepEqual(got, want) {
		t.Fatal("payload before SK not kept")
	}
	// The same SK body moved behind another prefix fails.
	moved, err := (&Message{SPIi: 5, SPIr: 6, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1,
		Payloads: []Payload{&VendorID{Data: []byte("outer")}, parsed.Payloads[0]}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if pm, err := Parse(moved); err != nil {
		t.Fatal(err)
	} else if _, err := pm.Decrypt(c); !errors.Is(err, errCodecICV) {
		t.Fatalf("Decrypt of an SK body under another prefix: %v", err)
	}

	for _, at := range []int{17 + 2, ikeHeaderLen + genericHeaderLen + 3, len(b) - 1} {
		bad := bytes.Clone(b)
		bad[at] ^= 0x40
		pm, err := Parse(bad)
		if err != nil {
			continue // the header itself became invalid
		}
		if _, err := pm.Decrypt(c); !errors.Is(err, errCodecICV) {
			t.Errorf("tampered byte %d: Decrypt error %v, want the ICV error", at, err)
		}
	}

	if _, err := (&Message{}).Decrypt(c); err == nil {
		t.Error("Decrypt of an empty message succeeded")
	}
	built := &Message{Payloads: []Payload{&Encrypted{Body: codecSeq(0, 48)}}}
	if _, err := built.Decrypt(c); err == nil {
		t.Error("Decrypt of a message that was not parsed succeeded")
	}
}

// sealWithVendorID builds m as a protected message with an unprotected
// Vendor ID payload ahead of the SK payload.
func sealWithVendorID(t *testing.T, c Crypter, m *Message, vendor []byte, inner []Payload) []byte {
	t.Helper()
	first, plain, err := MarshalPayloads(inner)
	if err != nil {
		t.Fatal(err)
	}
	vid := append([]byte{uint8(PayloadSK), 0, 0, uint8(genericHeaderLen + len(vendor))}, vendor...)
	prefixLen := ikeHeaderLen + len(vid) + genericHeaderLen
	b := make([]byte, prefixLen+c.BodyLen(len(plain)))
	if err := m.putHeader(b, PayloadVendorID, len(b)); err != nil {
		t.Fatal(err)
	}
	copy(b[ikeHeaderLen:], vid)
	sk := b[ikeHeaderLen+len(vid):]
	sk[0] = uint8(first)
	binary.BigEndian.PutUint16(sk[2:], uint16(len(sk)))
	if err := c.Seal(b[prefixLen:], b[:prefixLen], plain); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncryptedInnerSyntax checks that a well-sealed but malformed inner
// chain is reported as INVALID_SYNTAX.
func TestEncryptedInnerSyntax(t *testing.T) {
	c := newCodecCrypter()
	m := &Message{SPIi: 1, SPIr: 2, Exchange: INFORMATIONAL, MessageID: 3}
	prefix := make([]byte, ikeHeaderLen+genericHeaderLen)
	inner := codecHex(t, "00000003")
	body := make([]byte, c.BodyLen(len(inner)))
	m.putHeader(prefix, PayloadSK, len(prefix)+len(body))
	prefix[ikeHeaderLen] = uint8(PayloadNotify)
	binary.BigEndian.PutUint16(prefix[ikeHeaderLen+2:], uint16(genericHeaderLen+len(body)))
	if err := c.Seal(body, prefix, inner); err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(append(prefix, body...))
	if err != nil {
		t.Fatal(err)
	}
	_, err = parsed.Decrypt(c)
	if pe := codecParseError(t, err); pe.Notify != INVALID_SYNTAX {
		t.Fatalf("notify %d, want INVALID_SYNTAX", pe.Notify)
	}
}

func TestMajorVersion(t *testing.T) {
	for _, version := range []uint8{0x10, 0x30, 0xf0} {
		b := codecRawMessage(t, PayloadNone, "")
		b[17] = version
		m, err := Parse(b)
		if !errors.Is(err, ErrInvalidMajorVersion) {
			t.Fatalf("version %#x: %v", version, err)
		}
		if pe := codecParseError(t, err); pe.Notify != INVALID_MAJOR_VERSION {
			t.Errorf("version %#x: notify %d", version, pe.Notify)
		}
		if m == nil || m.SPIi != 0x0102030405060708 || m.MessageID != 1 {
			t.Errorf("version %#x: header not returned: %+v", version, m)
		}
	}
	b := codecRawMessage(t, PayloadNone, "")
	b[17] = 0x2f // minor versions are accepted
	if _, err := Parse(b); err != nil {
		t.Errorf("minor version 15: %v", err)
	}
}

func TestUnknownPayloads(t *testing.T) {
	// A non-critical unknown payload (type 200) between two known ones.
	b := codecRawMessage(t, PayloadNonce, "c8 00 0014 "+hex.EncodeToString(codecSeq(0, 16))+" 2b 00 0007 616263 00 00 0006 6869")
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Payload{&Nonce{Data: codecSeq(0, 16)}, &Unknown{PayloadType: 200, Data: []byte("abc")}, &VendorID{Data: []byte("hi")}}
	if !reflect.DeepEqual(m.Payloads, want) {
		t.Fatalf("payloads %+v", m.Payloads)
	}

	// The same payload with the critical bit must be refused.
	b = codecRawMessage(t, PayloadNonce, "c8 00 0014 "+hex.EncodeToString(codecSeq(0, 16))+" 2b 80 0007 616263 00 00 0006 6869")
	m, err = Parse(b)
	pe := codecParseError(t, err)
	if pe.Notify != UNSUPPORTED_CRITICAL_PAYLOAD || pe.Payload != 200 || !bytes.Equal(pe.NotifyData(), []byte{200}) {
		t.Fatalf("error %+v, notify data %x", pe, pe.NotifyData())
	}
	if m == nil || m.MessageID != 1 {
		t.Error("header not returned with the error")
	}

	// The critical bit of a known payload is ignored.
	b = codecRawMessage(t, PayloadVendorID, "00 80 0006 6869")
	if m, err := Parse(b); err != nil || !reflect.DeepEqual(m.Payloads, []Payload{&VendorID{Data: []byte("hi")}}) {
		t.Fatalf("critical Vendor ID: %v", err)
	}

	// Marshal keeps an unknown payload's critical bit.
	out, err := (&Message{Payloads: []Payload{&Unknown{PayloadType: 150, Critical: true, Data: []byte{1}}}}).Marshal()
	if err != nil || out[ikeHeaderLen+1] != 0x80 {
		t.Fatalf("critical unknown marshalled as %x, %v", out, err)
	}
}

func TestParseStrictness(t *testing.T) {
	cases := []struct {
		name  string
		first PayloadType
		body  string
	}{
		{"payload length below 4", PayloadVendorID, "00 00 0003"},
		{"payload length beyond message", PayloadVendorID, "00 00 0009 6869"},
		{"truncated generic header", PayloadVendorID, "00 00"},
		{"chain names a missing payload", PayloadVendorID, "28 00 0006 6869"},
		{"bytes after last payload", PayloadVendorID, "00 00 0006 6869 00"},
		{"SK not last", PayloadSK, "00 00 0008 01020304 2b 00 0004"},
		{"SK followed by a byte", PayloadSK, "2e 00 0008 01020304 00"},
		{"SKF without fields", PayloadSKF, "00 00 0007 000100"},
		{"SKF number 0", PayloadSKF, "00 00 000c 0000 0002 01020304"},
		{"SKF number beyond total", PayloadSKF, "00 00 000c 0003 0002 01020304"},

		{"SA empty", PayloadSA, "00 00 0004"},
		{"SA truncated proposal header", PayloadSA, "00 00 000a 0000 0006 0101"},
		{"SA proposal length too short for SPI", PayloadSA, "00 00 000c 00 00 0008 01 03 04 00 01020304"},
		{"SA proposal length beyond payload", PayloadSA, "00 00 0014 00 00 0020 01 01 00 01 00 00 0008 04 00 001f"},
		{"SA proposal more=2 on the last", PayloadSA, "00 00 0014 02 00 0010 01 01 00 01 00 00 0008 04 00 001f"},
		{"SA proposal last=0 with more following", PayloadSA, "00 00 0024 00 00 0010 01 01 00 01 00 00 0008 04 00 001f 00 00 0010 02 01 00 01 00 00 0008 04 00 001f"},
		{"SA proposal last=1", PayloadSA, "00 00 0014 01 00 0010 01 01 00 01 00 00 0008 04 00 001f"},
		{"SA fewer transforms than counted", PayloadSA, "00 00 0014 00 00 0010 01 01 00 02 00 00 0008 04 00 001f"},
		{"SA more transforms than counted", PayloadSA, "00 00 001c 00 00 0018 01 01 00 01 00 00 0008 04 00 001f 00 00 0008 02 00 0005"},
		{"SA transform last=3 on the last", PayloadSA, "00 00 0014 00 00 0010 01 01 00 01 03 00 0008 04 00 001f"},
		{"SA transform last=0 before another", PayloadSA, "00 00 001c 00 00 0018 01 01 00 02 00 00 0008 04 00 001f 00 00 0008 02 00 0005"},
		{"SA transform length below 8", PayloadSA, "00 00 0014 00 00 0010 01 01 00 01 00 00 0007 04 00 001f"},
		{"SA transform length beyond proposal", PayloadSA, "00 00 0014 00 00 0010 01 01 00 01 00 00 000c 04 00 001f"},
		{"SA Key Length in TLV format", PayloadSA, "00 00 001c 00 00 0018 01 01 00 01 00 00 0010 01 00 0014 000e 0002 0100 0000"},
		{"SA unknown TV attribute", PayloadSA, "00 00 0018 00 00 0014 01 01 00 01 00 00 000c 01 00 0014 800f 0100"},
		{"SA Key Length 0", PayloadSA, "00 00 0018 00 00 0014 01 01 00 01 00 00 000c 01 00 0014 800e 0000"},
		{"SA Key Length twice", PayloadSA, "00 00 001c 00 00 0018 01 01 00 01 00 00 0010 01 00 0014 800e 0100 800e 0080"},
		{"SA truncated attribute", PayloadSA, "00 00 0016 00 00 0012 01 01 00 01 00 00 000a 01 00 0014 800e"},
		{"SA ESP without SPI", PayloadSA, "00 00 0014 00 00 0010 01 03 00 01 00 00 0008 01 00 0014"},
		{"SA IKE SPI of 4", PayloadSA, "00 00 0018 00 00 0014 01 01 04 01 01020304 00 00 0008 04 00 001f"},
		{"SA protocol 0", PayloadSA, "00 00 0014 00 00 0010 01 00 00 01 00 00 0008 04 00 001f"},

		{"KE below 4 bytes", PayloadKE, "00 00 0007 001f00"},
		{"IDi below 4 bytes", PayloadIDi, "00 00 0006 0200"},
		{"IDi IPv4 of 5 bytes", PayloadIDi, "00 00 000d 01 000000 0a00000102"},
		{"IDr IPv6 of 4 bytes", PayloadIDr, "00 00 000c 05 000000 0a000001"},
		{"CERT empty", PayloadCERT, "00 00 0004"},
		{"CERTREQ empty", PayloadCERTREQ, "00 00 0004"},
		{"AUTH below 4 bytes", PayloadAUTH, "00 00 0007 020000"},
		{"Nonce of 15 bytes", PayloadNonce, "00 00 0013 " + hex.EncodeToString(codecSeq(0, 15))},
		{"Nonce of 257 bytes", PayloadNonce, "00 00 0105 " + hex.EncodeToString(make([]byte, 257))},
		{"Notify below 4 bytes", PayloadNotify, "00 00 0007 000040"},
		{"Notify SPI beyond payload", PayloadNotify, "00 00 000a 03 04 4009 0102"},
		{"Notify ESP SPI of 3", PayloadNotify, "00 00 000b 03 03 4009 010203"},
		{"Notify SPI without protocol", PayloadNotify, "00 00 000c 00 04 4009 01020304"},
		{"Delete below 4 bytes", PayloadDelete, "00 00 0007 010000"},
		{"Delete IKE with SPI size 8", PayloadDelete, "00 00 0010 01 08 0001 0102030405060708"},
		{"Delete IKE with SPI count", PayloadDelete, "00 00 0008 01 00 0001"},
		{"Delete ESP SPI size 0", PayloadDelete, "00 00 0008 03 00 0000"},
		{"Delete ESP count mismatch", PayloadDelete, "00 00 000c 03 04 0002 01020304"},
		{"Delete unknown protocol", PayloadDelete, "00 00 0008 07 00 0000"},
		{"TSi below 4 bytes", PayloadTSi, "00 00 0006 0000"},
		{"TSi fewer selectors than counted", PayloadTSi, "00 00 0018 02 000000 07 00 0010 0000 ffff 0a000000 0a0000ff"},
		{"TSi bytes after selectors", PayloadTSi, "00 00 0019 01 000000 07 00 0010 0000 ffff 0a000000 0a0000ff 00"},
		{"TSi IPv4 length 17", PayloadTSi, "00 00 0019 01 000000 07 00 0011 0000 ffff 0a000000 0a0000ff 00"},
		{"TSi IPv6 length 16", PayloadTSi, "00 00 0018 01 000000 08 00 0010 0000 ffff 0a000000 0a0000ff"},
		{"TSi IPv4 truncated", PayloadTSi, "00 00 0014 01 000000 07 00 0010 0000 ffff 0a000000"},
		{"TSi unknown type", PayloadTSi, "00 00 0018 01 000000 09 00 0010 0000 ffff 0a000000 0a0000ff"},
		{"TSr start address after end", PayloadTSr, "00 00 0018 01 000000 07 00 0010 0000 ffff 0a0000ff 0a000000"},
		{"TSr start port after end", PayloadTSr, "00 00 0018 01 000000 07 00 0010 0050 0035 0a000000 0a0000ff"},
		{"TSr IPv6 start after end", PayloadTSr, "00 00 0030 01 000000 08 00 0028 0000 ffff 20010db8000000000000000000000002 20010db8000000000000000000000001"},
		{"CP below 4 bytes", PayloadCP, "00 00 0006 0100"},
		{"CP attribute header truncated", PayloadCP, "00 00 000a 01 000000 0001"},
		{"CP attribute beyond payload", PayloadCP, "00 00 000c 01 000000 0001 0004"},
		{"CP IPv4 address of 3 bytes", PayloadCP, "00 00 000f 02 000000 0001 0003 0a0000"},
		{"CP IPv6 address of 16 bytes", PayloadCP, "00 00 001c 02 000000 0008 0010 " + hex.EncodeToString(codecSeq(0, 16))},
		{"EAP below 4 bytes", PayloadEAP, "00 00 0007 010100"},
		{"EAP length mismatch", PayloadEAP, "00 00 0009 01 01 0006 01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := codecRawMessage(t, tc.first, tc.body)
			m, err := Parse(b)
			if err == nil {
				t.Fatalf("Parse accepted %x as %+v", b, m.Payloads)
			}
			if pe := codecParseError(t, err); pe.Notify != INVALID_SYNTAX {
				t.Fatalf("notify %d, want INVALID_SYNTAX (%v)", pe.Notify, err)
			}
			t.Log(err)
			if m == nil || m.MessageID != 1 {
				t.Errorf("header not returned with %v", err)
			}
		})
	}

	t.Run("header", func(t *testing.T) {
		good := codecRawMessage(t, PayloadVendorID, "00 00 0006 6869")
		if _, err := Parse(good); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{
			"empty":          nil,
			"27 bytes":       good[:27],
			"length larger":  append(bytes.Clone(good[:24]), 0, 0, 0, byte(len(good)+1), 0x00, 0x00, 0x00, 0x06, 0x68, 0x69),
			"length smaller": append(bytes.Clone(good[:24]), 0, 0, 0, byte(len(good)-1), 0x00, 0x00, 0x00, 0x06, 0x68, 0x69),
			"truncated":      good[:len(good)-1],
			"extended":       append(bytes.Clone(good), 0),
		} {
			_, err := Parse(b)
			if pe := codecParseError(t, err); pe.Notify != INVALID_SYNTAX {
				t.Errorf("%s: notify %d", name, pe.Notify)
			}
		}
	})

	t.Run("inner chain", func(t *testing.T) {
		for _, body := range []string{"00 00 0008 01020304", "00 00 000c 0001 0001 01020304"} {
			for _, first := range []PayloadType{PayloadSK, PayloadSKF} {
				_, err := ParsePayloads(first, codecHex(t, body))
				if pe := codecParseError(t, err); pe.Notify != INVALID_SYNTAX {
					t.Errorf("%s inside SK: notify %d", payloadName(first), pe.Notify)
				}
			}
		}
		if _, err := ParsePayloads(PayloadNone, []byte{0}); err == nil {
			t.Error("ParsePayloads accepted padding after the chain")
		}
	})
}

func TestMarshalRejects(t *testing.T) {
	v4, v6 := codecAddr("10.0.0.1"), codecAddr("2001:db8::1")
	cases := []struct {
		name string
		ps   []Payload
	}{
		{"nil payload", []Payload{nil}},
		{"nil payload after another", []Payload{&VendorID{}, nil}},
		{"typed nil payload", []Payload{(*Unknown)(nil)}},
		{"SK not last", []Payload{&Encrypted{}, &Nonce{Data: codecSeq(0, 16)}}},
		{"SKF not last", []Payload{&EncryptedFragment{Number: 1, Total: 1}, &VendorID{}}},
		{"SKF number 0", []Payload{&EncryptedFragment{Total: 1}}},
		{"unknown with a known type", []Payload{&Unknown{PayloadType: PayloadNonce}}},
		{"unknown with type 0", []Payload{&Unknown{}}},
		{"SA without proposals", []Payload{&SA{}}},
		{"ESP proposal without SPI", []Payload{&SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoESP}}}}},
		{"IKE proposal with 4-byte SPI", []Payload{&SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoIKE, SPI: codecSeq(0, 4)}}}}},
		{"proposal with 256 transforms", []Payload{&SA{Proposals: []Proposal{{Number: 1, Protocol: ProtoIKE, Transforms: make([]Transform, 256)}}}}},
		{"IPv4 ID of 16 bytes", []Payload{&ID{IDType: IDIPv4, Data: codecSeq(0, 16)}}},
		{"short nonce", []Payload{&Nonce{Data: codecSeq(0, 15)}}},
		{"long nonce", []Payload{&Nonce{Data: make([]byte, 257)}}},
		{"ESP notify SPI of 8", []Payload{&Notify{Protocol: ProtoESP, SPI: codecSeq(0, 8), NotifyType: REKEY_SA}}},
		{"IKE delete with SPIs", []Payload{&Delete{Protocol: ProtoIKE, SPIs: [][]byte{codecSeq(0, 8)}}}},
		{"ESP delete SPI of 3", []Payload{&Delete{Protocol: ProtoESP, SPIs: [][]byte{codecSeq(0, 3)}}}},
		{"delete of protocol 0", []Payload{&Delete{}}},
		{"TS without addresses", []Payload{&TS{Selectors: []TrafficSelector{{}}}}},
		{"TS of mixed families", []Payload{&TS{Selectors: []TrafficSelector{{Start: v4, End: v6}}}}},
		{"TS start after end", []Payload{&TS{Selectors: []TrafficSelector{{Start: codecAddr("10.0.0.2"), End: v4}}}}},
		{"TS ports reversed", []Payload{&TS{Selectors: []TrafficSelector{{Start: v4, End: v4, StartPort: 2, EndPort: 1}}}}},
		{"TS with zone", []Payload{&TS{Selectors: []TrafficSelector{{Start: codecAddr("fe80::1%eth0"), End: codecAddr("fe80::1%eth0")}}}}},
		{"TS with 256 selectors", []Payload{&TS{Selectors: make([]TrafficSelector, 256)}}},
		{"CP attribute type of 16 bits", []Payload{&CP{Attributes: []CPAttribute{{Type: 0x8001}}}}},
		{"CP DNS of 5 bytes", []Payload{&CP{Attributes: []CPAttribute{{Type: INTERNAL_IP4_DNS, Value: codecSeq(0, 5)}}}}},
		{"EAP of 3 bytes", []Payload{&EAP{Data: []byte{1, 2, 0}}}},
		{"EAP length mismatch", []Payload{&EAP{Data: []byte{1, 2, 0, 9, 1}}}},
		{"payload over 65535 bytes", []Payload{&VendorID{Data: make([]byte, 65532)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := (&Message{Payloads: tc.ps}).Marshal(); err == nil {
				t.Fatalf("Marshal accepted: %x", b)
			}
		})
	}
	if _, _, err := MarshalPayloads([]Payload{&Encrypted{}}); err == nil {
		t.Error("MarshalPayloads accepted an SK payload")
	}
	if _, err := (&Message{Payloads: []Payload{&Encrypted{}}}).MarshalEncrypted(newCodecCrypter()); err == nil {
		t.Error("MarshalEncrypted accepted a nested SK payload")
	}
	big := &Message{Payloads: []Payload{&Cert{Data: make([]byte, 65000)}, &Cert{Data: make([]byte, 1000)}}}
	if _, err := big.MarshalEncrypted(newCodecCrypter()); err == nil {
		t.Error("MarshalEncrypted accepted an SK payload over 65535 bytes")
	}
}

func TestNotifyProtocolWithoutSPI(t *testing.T) {
	// A protocol without SPI is sent as zero and read as zero.
	b, err := (&Message{Payloads: []Payload{&Notify{Protocol: ProtoESP, NotifyType: NO_PROPOSAL_CHOSEN}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if b[ikeHeaderLen+genericHeaderLen] != 0 {
		t.Errorf("protocol octet %d, want 0", b[ikeHeaderLen+genericHeaderLen])
	}
	m, err := Parse(codecRawMessage(t, PayloadNotify, "00 00 0008 03 00 000e"))
	if err != nil {
		t.Fatal(err)
	}
	if n := m.Payloads[0].(*Notify); n.Protocol != 0 || n.NotifyType != NO_PROPOSAL_CHOSEN {
		t.Errorf("notify %+v", n)
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	b := codecRawMessage(t, PayloadVendorID, "00 00 0006 6869")
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if string(m.Payloads[0].(*VendorID).Data) != "hi" || m.Raw[ikeHeaderLen+4] != 'h' {
		t.Fatal("parsed message shares memory with the input")
	}
}
