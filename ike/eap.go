package ike

import (
	"crypto/des"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"

	"golang.org/x/crypto/md4"
)

// EAP in IKE_AUTH (RFC 7296 §2.16): the EAP message codec (RFC 3748 §4),
// EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2, RFC 2759) in both roles
// and its MSK (RFC 3079 keys, as strongSwan and Windows derive them).
//
// Nothing here logs or returns a password or a hash of one in an error.

// EAP codes (RFC 3748 §4).
const (
	eapCodeRequest  uint8 = 1
	eapCodeResponse uint8 = 2
	eapCodeSuccess  uint8 = 3
	eapCodeFailure  uint8 = 4
)

// EAP types (RFC 3748 §5, IANA).
const (
	eapTypeIdentity uint8 = 1
	eapTypeNak      uint8 = 3
	eapTypeMSCHAPv2 uint8 = 26
)

// MS-CHAPv2 op codes (RFC 2759 §4 through EAP).
const (
	mschapChallenge uint8 = 1
	mschapResponse  uint8 = 2
	mschapSuccess   uint8 = 3
	mschapFailure   uint8 = 4
)

// mschapResponseValueSize is the Value-Size of an MS-CHAPv2 Response:
// Peer-Challenge 16, Reserved 8, NT-Response 24, Flags 1.
const mschapResponseValueSize = 49

// eapMessage is one EAP packet. Type and Data are those of a Request or
// Response; Success and Failure carry neither.
type eapMessage struct {
	Code, ID uint8
	Type     uint8
	Data     []byte // after the Type octet
}

// parseEAP decodes an EAP packet (the body of an EAP payload). The Length
// field must match the packet; Data aliases b.
func parseEAP(b []byte) (eapMessage, error) {
	if len(b) < 4 {
		return eapMessage{}, fmt.Errorf("ike: EAP packet of %d bytes is shorter than its header", len(b))
	}
	m := eapMessage{Code: b[0], ID: b[1]}
	if n := int(binary.BigEndian.Uint16(b[2:])); n != len(b) {
		return eapMessage{}, fmt.Errorf("ike: EAP packet says it has %d bytes, it has %d", n, len(b))
	}
	switch m.Code {
	case eapCodeRequest, eapCodeResponse:
		if len(b) < 5 {
			return eapMessage{}, errors.New("ike: EAP request or response without a type")
		}
		m.Type, m.Data = b[4], b[5:]
	case eapCodeSuccess, eapCodeFailure:
		if len(b) != 4 {
			return eapMessage{}, errors.New("ike: EAP Success or Failure with data")
		}
	default:
		return eapMessage{}, fmt.Errorf("ike: unknown EAP code %d", m.Code)
	}
	return m, nil
}

// marshal encodes the packet.
func (m eapMessage) marshal() []byte {
	n := 4
	if m.Code == eapCodeRequest || m.Code == eapCodeResponse {
		n += 1 + len(m.Data)
	}
	b := make([]byte, 4, n)
	b[0], b[1] = m.Code, m.ID
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	if n > 4 {
		b = append(b, m.Type)
		b = append(b, m.Data...)
	}
	return b
}

// mschapPacket is the MS-CHAPv2 part of an EAP-MSCHAPv2 packet: OpCode,
// MS-CHAPv2-ID, MS-Length (from OpCode to the end) and the rest. A
// Challenge or Response has Value-Size, Value and Name; a Success or
// Failure request a message; their responses the OpCode alone.
type mschapPacket struct {
	OpCode, ID uint8
	Value      []byte // Challenge and Response
	Name       []byte // Challenge and Response; the message of Success and Failure requests
}

// parseMSCHAPv2 decodes the Data of an EAP-MSCHAPv2 packet; Value and
// Name alias data.
func parseMSCHAPv2(data []byte) (mschapPacket, error) {
	if len(data) == 0 {
		return mschapPacket{}, errors.New("ike: empty EAP-MSCHAPv2 packet")
	}
	p := mschapPacket{OpCode: data[0]}
	if len(data) == 1 {
		return p, nil // a Success or Failure response
	}
	if len(data) < 4 {
		return mschapPacket{}, fmt.Errorf("ike: EAP-MSCHAPv2 packet of %d bytes is shorter than its header", len(data))
	}
	p.ID = data[1]
	if n := int(binary.BigEndian.Uint16(data[2:])); n != len(data) {
		return mschapPacket{}, fmt.Errorf("ike: EAP-MSCHAPv2 MS-Length %d, the packet has %d bytes", n, len(data))
	}
	rest := data[4:]
	switch p.OpCode {
	case mschapChallenge, mschapResponse:
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return mschapPacket{}, errors.New("ike: EAP-MSCHAPv2 Value-Size exceeds the packet")
		}
		p.Value, p.Name = rest[1:1+int(rest[0])], rest[1+int(rest[0]):]
	default:
		p.Name = rest
	}
	return p, nil
}

// marshal encodes the packet as EAP Data; short makes a Success or
// Failure response (the OpCode alone).
func (p mschapPacket) marshal(short bool) []byte {
	if short {
		return []byte{p.OpCode}
	}
	b := []byte{p.OpCode, p.ID, 0, 0}
	if p.OpCode == mschapChallenge || p.OpCode == mschapResponse {
		b = append(b, byte(len(p.Value)))
		b = append(b, p.Value...)
	}
	b = append(b, p.Name...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// The algorithms of RFC 2759 §8 and RFC 3079 §3, by their names there.

// ntPasswordHash is MD4 of the password in UTF-16LE (RFC 2759 §8.3).
func ntPasswordHash(password string) [16]byte {
	u := utf16.Encode([]rune(password))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	h := md4.New()
	h.Write(b)
	clear(b)
	var out [16]byte
	h.Sum(out[:0])
	return out
}

// hashNTPasswordHash is MD4 of the password hash (RFC 2759 §8.4).
func hashNTPasswordHash(hash [16]byte) [16]byte {
	h := md4.New()
	h.Write(hash[:])
	var out [16]byte
	h.Sum(out[:0])
	return out
}

// mschapUserName is the user name MS-CHAPv2 hashes: without a Windows
// domain ("DOMAIN\user" hashes "user", RFC 2759 §8.2).
func mschapUserName(name string) string {
	if i := strings.LastIndexByte(name, '\\'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// challengeHash is RFC 2759 §8.2's ChallengeHash.
func challengeHash(peerChallenge, authChallenge []byte, userName string) [8]byte {
	h := sha1.New()
	h.Write(peerChallenge)
	h.Write(authChallenge)
	h.Write([]byte(mschapUserName(userName)))
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}

// desKey spreads 7 bytes of key over the 8 of a DES key, parity bits
// left zero (DES ignores them).
func desKey(k []byte) []byte {
	return []byte{
		k[0] & 0xfe,
		(k[0]<<7 | k[1]>>1) & 0xfe,
		(k[1]<<6 | k[2]>>2) & 0xfe,
		(k[2]<<5 | k[3]>>3) & 0xfe,
		(k[3]<<4 | k[4]>>4) & 0xfe,
		(k[4]<<3 | k[5]>>5) & 0xfe,
		(k[5]<<2 | k[6]>>6) & 0xfe,
		k[6] << 1,
	}
}

// challengeResponse is RFC 2759 §8.5's ChallengeResponse: the challenge
// DES-encrypted under three keys cut from the zero-padded password hash.
func challengeResponse(challenge [8]byte, hash [16]byte) [24]byte {
	var z [21]byte
	copy(z[:], hash[:])
	var out [24]byte
	for i := 0; i < 3; i++ {
		c, _ := des.NewCipher(desKey(z[7*i : 7*i+7])) // 8-byte key: cannot fail
		c.Encrypt(out[8*i:], challenge[:])
	}
	return out
}

// generateNTResponse is RFC 2759 §8.1's GenerateNTResponse.
func generateNTResponse(authChallenge, peerChallenge []byte, userName string, hash [16]byte) [24]byte {
	return challengeResponse(challengeHash(peerChallenge, authChallenge, userName), hash)
}

var (
	mschapMagic1    = []byte("Magic server to client signing constant")
	mschapMagic2    = []byte("Pad to make it do more than one iteration")
	mppeMasterMagic = []byte("This is the MPPE Master Key")
	// RFC 3079 §3.4: the send key of a client is the receive key of the
	// server (Magic2) and the other way round (Magic3).
	mppeMagic2 = []byte("On the client side, this is the send key; on the server side, it is the receive key.")
	mppeMagic3 = []byte("On the client side, this is the receive key; on the server side, it is the send key.")
)

// authenticatorResponse is RFC 2759 §8.7's GenerateAuthenticatorResponse:
// "S=" and 40 upper-case hex digits.
func authenticatorResponse(hash [16]byte, ntResponse [24]byte, peerChallenge, authChallenge []byte, userName string) string {
	hh := hashNTPasswordHash(hash)
	h := sha1.New()
	h.Write(hh[:])
	h.Write(ntResponse[:])
	h.Write(mschapMagic1)
	digest := h.Sum(nil)
	ch := challengeHash(peerChallenge, authChallenge, userName)
	h.Reset()
	h.Write(digest)
	h.Write(ch[:])
	h.Write(mschapMagic2)
	return "S=" + strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
}

// mppeMasterKey is RFC 3079 §3.4's GetMasterKey.
func mppeMasterKey(hash [16]byte, ntResponse [24]byte) [16]byte {
	hh := hashNTPasswordHash(hash)
	h := sha1.New()
	h.Write(hh[:])
	h.Write(ntResponse[:])
	h.Write(mppeMasterMagic)
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

// mppeStartKey is RFC 3079 §3.4's GetAsymmetricStartKey for 128-bit keys
// with the given magic.
func mppeStartKey(masterKey [16]byte, magic []byte) []byte {
	var pad1, pad2 [40]byte
	for i := range pad2 {
		pad2[i] = 0xf2
	}
	h := sha1.New()
	h.Write(masterKey[:])
	h.Write(pad1[:])
	h.Write(magic)
	h.Write(pad2[:])
	return h.Sum(nil)[:16]
}

// mschapMSK is the 64-byte MSK of EAP-MSCHAPv2 as strongSwan and Windows
// derive it: the server's MasterReceiveKey, its MasterSendKey, 32 zero
// bytes. Both ends compute the same bytes.
func mschapMSK(hash [16]byte, ntResponse [24]byte) []byte {
	mk := mppeMasterKey(hash, ntResponse)
	msk := make([]byte, 0, 64)
	msk = append(msk, mppeStartKey(mk, mppeMagic2)...)
	msk = append(msk, mppeStartKey(mk, mppeMagic3)...)
	return append(msk, make([]byte, 32)...)
}

// EAPUsers are the EAP-MSCHAPv2 users a gateway knows, by EAP identity.
// It keeps each password's NT hash only, which is what MS-CHAPv2 needs.
type EAPUsers struct {
	hashes map[string][16]byte
}

// NewEAPUsers takes passwords by identity. An identity or password may
// not be empty.
func NewEAPUsers(passwords map[string]string) (*EAPUsers, error) {
	u := &EAPUsers{hashes: make(map[string][16]byte, len(passwords))}
	for id, pw := range passwords {
		if id == "" {
			return nil, errors.New("ike: EAP user with an empty identity")
		}
		if pw == "" {
			return nil, fmt.Errorf("ike: EAP user %s has an empty password", Printable(id))
		}
		u.hashes[id] = ntPasswordHash(pw)
	}
	return u, nil
}

// Len is how many users there are.
func (u *EAPUsers) Len() int { return len(u.hashes) }

// lookup finds a user by the name the client gave, else by that name
// without its Windows domain ("DOMAIN\user").
func (u *EAPUsers) lookup(name string) ([16]byte, bool) {
	if u == nil {
		return [16]byte{}, false
	}
	if h, ok := u.hashes[name]; ok {
		return h, true
	}
	h, ok := u.hashes[mschapUserName(name)]
	return h, ok
}

// eapServer is the gateway's side of one EAP conversation: Identity, then
// MSCHAPv2 Challenge, Response, Success request and response, then
// EAP-Success.
type eapServer struct {
	users *EAPUsers
	// lockedOut, when set, is asked before a password is checked; a
	// reason it returns refuses the login unchecked.
	lockedOut func(name string) string
	guessed   bool   // a password was checked (or the user was unknown)
	name      []byte // the authenticator's name in the Challenge
	id        uint8  // the identifier of the last request
	state     eapServerState
	identity  string // the EAP identity, then the name the Response gave
	challenge [16]byte
	authResp  string // the Success message we sent, for retransmission checks
	msk       []byte
}

type eapServerState int

const (
	eapAwaitIdentity eapServerState = iota
	eapAwaitResponse
	eapAwaitSuccessAck
	eapDone
)

// eapResult says how a step of the conversation ended.
type eapResult int

const (
	eapContinue  eapResult = iota // send the packet, expect the next one
	eapSucceeded                  // send EAP-Success; the MSK is ready
	eapFailed                     // send EAP-Failure
)

// newEAPServer starts a conversation and returns the first request: an
// EAP-Identity request.
func newEAPServer(users *EAPUsers, name string) (*eapServer, []byte) {
	e := &eapServer{users: users, name: []byte(name), id: randomByte()}
	if len(e.name) == 0 {
		e.name = []byte("mifsec")
	}
	return e, eapMessage{Code: eapCodeRequest, ID: e.id, Type: eapTypeIdentity}.marshal()
}

func randomByte() uint8 {
	var b [1]byte
	rand.Read(b[:])
	return b[0]
}

// step takes the client's response and returns the next packet to send.
// With eapFailed, err says why (it names no secret).
func (e *eapServer) step(packet []byte) ([]byte, eapResult, error) {
	fail := func(format string, args ...any) ([]byte, eapResult, error) {
		e.state, e.msk = eapDone, nil
		return eapMessage{Code: eapCodeFailure, ID: e.id}.marshal(), eapFailed, fmt.Errorf(format, args...)
	}
	m, err := parseEAP(packet)
	if err != nil {
		return fail("%v", err)
	}
	if m.Code != eapCodeResponse || m.ID != e.id {
		return fail("EAP code %d identifier %d where a response to request %d was due", m.Code, m.ID, e.id)
	}
	if m.Type == eapTypeNak {
		return fail("the client declined EAP-MSCHAPv2 (Nak, wants types %v)", m.Data)
	}
	switch e.state {
	case eapAwaitIdentity:
		if m.Type != eapTypeIdentity {
			return fail("EAP type %d where an Identity response was due", m.Type)
		}
		if len(m.Data) == 0 || len(m.Data) > 253 {
			return fail("EAP identity of %d bytes", len(m.Data))
		}
		e.identity = string(m.Data)
		rand.Read(e.challenge[:])
		e.id++
		e.state = eapAwaitResponse
		p := mschapPacket{OpCode: mschapChallenge, ID: e.id, Value: e.challenge[:], Name: e.name}
		return eapMessage{Code: eapCodeRequest, ID: e.id, Type: eapTypeMSCHAPv2, Data: p.marshal(false)}.marshal(), eapContinue, nil
	case eapAwaitResponse:
		if m.Type != eapTypeMSCHAPv2 {
			return fail("EAP type %d where an MSCHAPv2 Response was due", m.Type)
		}
		p, err := parseMSCHAPv2(m.Data)
		if err != nil {
			return fail("%v", err)
		}
		if p.OpCode != mschapResponse || len(p.Value) != mschapResponseValueSize {
			return fail("MSCHAPv2 op code %d with a value of %d bytes where a Response was due", p.OpCode, len(p.Value))
		}
		name := string(p.Name)
		if name == "" {
			name = e.identity
		}
		e.identity = name
		if e.lockedOut != nil {
			if why := e.lockedOut(name); why != "" {
				return fail("%s", why)
			}
		}
		e.guessed = true
		hash, ok := e.users.lookup(name)
		if !ok {
			return fail("unknown EAP user %s", Printable(name))
		}
		peerChallenge, ntResponse := p.Value[:16], p.Value[24:48]
		want := generateNTResponse(e.challenge[:], peerChallenge, name, hash)
		if subtle.ConstantTimeCompare(want[:], ntResponse) != 1 {
			return fail("wrong password for EAP user %s", Printable(name))
		}
		e.authResp = authenticatorResponse(hash, want, peerChallenge, e.challenge[:], name)
		e.msk = mschapMSK(hash, want)
		e.id++
		e.state = eapAwaitSuccessAck
		s := mschapPacket{OpCode: mschapSuccess, ID: p.ID, Name: []byte(e.authResp + " M=Welcome")}
		return eapMessage{Code: eapCodeRequest, ID: e.id, Type: eapTypeMSCHAPv2, Data: s.marshal(false)}.marshal(), eapContinue, nil
	case eapAwaitSuccessAck:
		if m.Type != eapTypeMSCHAPv2 || len(m.Data) == 0 || m.Data[0] != mschapSuccess {
			return fail("EAP type %d where the MSCHAPv2 Success response was due", m.Type)
		}
		e.state = eapDone
		return eapMessage{Code: eapCodeSuccess, ID: e.id}.marshal(), eapSucceeded, nil
	}
	return fail("EAP packet after the conversation ended")
}

// EAPCredentials are what a client logs in with by EAP-MSCHAPv2: its EAP
// identity and its password's NT hash.
type EAPCredentials struct {
	Identity string
	hash     [16]byte
}

// NewEAPCredentials takes an EAP identity and its password; neither may
// be empty.
func NewEAPCredentials(identity, password string) (*EAPCredentials, error) {
	if identity == "" || len(identity) > 253 {
		return nil, fmt.Errorf("ike: EAP identity of %d bytes", len(identity))
	}
	if password == "" {
		return nil, errors.New("ike: empty EAP password")
	}
	return &EAPCredentials{Identity: identity, hash: ntPasswordHash(password)}, nil
}

// eapClient is the client's side of one EAP conversation.
type eapClient struct {
	cred     *EAPCredentials
	authResp string // the Success message the gateway must send
	msk      []byte
	done     bool // EAP-Success came
}

// ErrEAPRefused reports that the gateway refused our EAP login (a wrong
// password or an unknown user). It is an ErrAuthFailed.
var ErrEAPRefused = fmt.Errorf("%w: the gateway refused the EAP login (wrong password or unknown user)", ErrAuthFailed)

// step answers one packet of the gateway; a nil answer with a nil error
// means EAP-Success came (the MSK is ready).
func (e *eapClient) step(packet []byte) ([]byte, error) {
	m, err := parseEAP(packet)
	if err != nil {
		return nil, err
	}
	switch m.Code {
	case eapCodeSuccess:
		if e.msk == nil || e.authResp != "" {
			return nil, errors.New("ike: EAP-Success before the gateway proved it knows the password")
		}
		e.done = true
		return nil, nil
	case eapCodeFailure:
		return nil, fmt.Errorf("%w: EAP-Failure", ErrEAPRefused)
	case eapCodeResponse:
		return nil, errors.New("ike: an EAP response from the gateway")
	}
	respond := func(typ uint8, data []byte) []byte {
		return eapMessage{Code: eapCodeResponse, ID: m.ID, Type: typ, Data: data}.marshal()
	}
	switch m.Type {
	case eapTypeIdentity:
		return respond(eapTypeIdentity, []byte(e.cred.Identity)), nil
	case eapTypeMSCHAPv2:
	default:
		return respond(eapTypeNak, []byte{eapTypeMSCHAPv2}), nil
	}
	p, err := parseMSCHAPv2(m.Data)
	if err != nil {
		return nil, err
	}
	switch p.OpCode {
	case mschapChallenge:
		if len(p.Value) != 16 {
			return nil, fmt.Errorf("ike: MSCHAPv2 challenge of %d bytes", len(p.Value))
		}
		var value [mschapResponseValueSize]byte
		peerChallenge := value[:16]
		rand.Read(peerChallenge)
		nt := generateNTResponse(p.Value, peerChallenge, e.cred.Identity, e.cred.hash)
		copy(value[24:48], nt[:])
		e.authResp = authenticatorResponse(e.cred.hash, nt, peerChallenge, p.Value, e.cred.Identity)
		e.msk = mschapMSK(e.cred.hash, nt)
		r := mschapPacket{OpCode: mschapResponse, ID: p.ID, Value: value[:], Name: []byte(e.cred.Identity)}
		return respond(eapTypeMSCHAPv2, r.marshal(false)), nil
	case mschapSuccess:
		if e.authResp == "" {
			return nil, errors.New("ike: MSCHAPv2 Success before a challenge")
		}
		got, _, _ := strings.Cut(string(p.Name), " ")
		if len(got) != len(e.authResp) || subtle.ConstantTimeCompare([]byte(strings.ToUpper(got)), []byte(e.authResp)) != 1 {
			return nil, fmt.Errorf("%w: the gateway's MSCHAPv2 authenticator response is wrong (it does not know the password)", ErrAuthFailed)
		}
		e.authResp = ""
		return respond(eapTypeMSCHAPv2, mschapPacket{OpCode: mschapSuccess}.marshal(true)), nil
	case mschapFailure:
		return nil, fmt.Errorf("%w: MSCHAPv2 failure %s", ErrEAPRefused, Printable(mschapFailureCode(p.Name)))
	}
	return nil, fmt.Errorf("ike: MSCHAPv2 op code %d from the gateway", p.OpCode)
}

// mschapFailureCode is the E= part of a Failure message ("E=691 R=0 ...").
func mschapFailureCode(msg []byte) string {
	code, _, _ := strings.Cut(string(msg), " ")
	return code
}
