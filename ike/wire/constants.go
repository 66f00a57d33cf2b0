package wire

import "fmt"

// Wire constants of IKEv2 (RFC 7296 and the RFCs named), from the IANA
// "Internet Key Exchange Version 2 (IKEv2) Parameters" registry.

// ExchangeType is the exchange a message belongs to (RFC 7296 §3.1).
type ExchangeType uint8

const (
	IKE_SA_INIT     ExchangeType = 34
	IKE_AUTH        ExchangeType = 35
	CREATE_CHILD_SA ExchangeType = 36
	INFORMATIONAL   ExchangeType = 37
)

// Header flags (RFC 7296 §3.1).
const (
	FlagInitiator uint8 = 0x08
	FlagVersion   uint8 = 0x10
	FlagResponse  uint8 = 0x20
)

// Version is IKEv2's major and minor version byte.
const Version uint8 = 0x20

// PayloadType identifies a payload (RFC 7296 §3.2).
type PayloadType uint8

const (
	PayloadNone        PayloadType = 0
	PayloadSA          PayloadType = 33
	PayloadKE          PayloadType = 34
	PayloadIDi         PayloadType = 35
	PayloadIDr         PayloadType = 36
	PayloadCERT        PayloadType = 37
	PayloadCERTREQ     PayloadType = 38
	PayloadAUTH        PayloadType = 39
	PayloadNonce       PayloadType = 40
	PayloadNotify      PayloadType = 41
	PayloadDelete      PayloadType = 42
	PayloadVendorID    PayloadType = 43
	PayloadTSi         PayloadType = 44
	PayloadTSr         PayloadType = 45
	PayloadSK          PayloadType = 46
	PayloadCP          PayloadType = 47
	PayloadEAP         PayloadType = 48
	PayloadSKF         PayloadType = 53 // RFC 7383 encrypted fragment
	payloadCriticalBit uint8       = 0x80
)

// ProtocolID names the protocol of a proposal, notify or delete (RFC 7296 §3.3.1).
type ProtocolID uint8

const (
	ProtoIKE ProtocolID = 1
	ProtoAH  ProtocolID = 2
	ProtoESP ProtocolID = 3
)

// TransformType is the kind of a transform (RFC 7296 §3.3.2).
type TransformType uint8

const (
	TransformENCR  TransformType = 1
	TransformPRF   TransformType = 2
	TransformINTEG TransformType = 3
	TransformDH    TransformType = 4
	TransformESN   TransformType = 5
)

// Transform IDs used by mifsec.
const (
	// ENCR
	ENCR_AES_CBC           uint16 = 12
	ENCR_AES_GCM_8         uint16 = 18
	ENCR_AES_GCM_12        uint16 = 19
	ENCR_AES_GCM_16        uint16 = 20
	ENCR_CHACHA20_POLY1305 uint16 = 28
	// PRF
	PRF_HMAC_SHA1     uint16 = 2
	PRF_HMAC_SHA2_256 uint16 = 5
	PRF_HMAC_SHA2_384 uint16 = 6
	PRF_HMAC_SHA2_512 uint16 = 7
	// INTEG
	AUTH_NONE              uint16 = 0
	AUTH_HMAC_SHA1_96      uint16 = 2
	AUTH_HMAC_SHA2_256_128 uint16 = 12
	AUTH_HMAC_SHA2_384_192 uint16 = 13
	AUTH_HMAC_SHA2_512_256 uint16 = 14
	// DH groups
	DH_NONE       uint16 = 0
	DH_MODP_1024  uint16 = 2 // weak: only for clients that offer nothing better
	DH_MODP_2048  uint16 = 14
	DH_ECP_256    uint16 = 19
	DH_ECP_384    uint16 = 20
	DH_CURVE25519 uint16 = 31
	// ESN
	ESN_NO  uint16 = 0
	ESN_YES uint16 = 1
)

// AttributeKeyLength is the Key Length transform attribute, always in TV
// format (RFC 7296 §3.3.5).
const AttributeKeyLength uint16 = 14

// AuthMethod is the method of an AUTH payload (RFC 7296 §3.8, RFC 7427).
type AuthMethod uint8

const (
	AuthRSA              AuthMethod = 1
	AuthPSK              AuthMethod = 2
	AuthECDSA256         AuthMethod = 9
	AuthECDSA384         AuthMethod = 10
	AuthECDSA521         AuthMethod = 11
	AuthDigitalSignature AuthMethod = 14 // RFC 7427
)

// Hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4).
const (
	HashSHA256   uint16 = 2
	HashSHA384   uint16 = 3
	HashSHA512   uint16 = 4
	HashIdentity uint16 = 5 // RFC 8420, Ed25519
)

// IDType is the type of an identification payload (RFC 7296 §3.5).
type IDType uint8

const (
	IDIPv4   IDType = 1
	IDFQDN   IDType = 2
	IDRFC822 IDType = 3 // email address
	IDIPv6   IDType = 5
	IDDN     IDType = 9 // ASN.1 DER distinguished name
	IDKeyID  IDType = 11
)

// Certificate encodings (RFC 7296 §3.6).
const (
	CertX509Signature uint8 = 4
)

// Traffic selector types (RFC 7296 §3.13.1).
const (
	TSIPv4AddrRange uint8 = 7
	TSIPv6AddrRange uint8 = 8
)

// Configuration payload types and attributes (RFC 7296 §3.15).
const (
	CFG_REQUEST uint8 = 1
	CFG_REPLY   uint8 = 2
	CFG_SET     uint8 = 3
	CFG_ACK     uint8 = 4

	INTERNAL_IP4_ADDRESS uint16 = 1
	INTERNAL_IP4_NETMASK uint16 = 2
	INTERNAL_IP4_DNS     uint16 = 3
	INTERNAL_IP6_ADDRESS uint16 = 8
	INTERNAL_IP6_DNS     uint16 = 10
	INTERNAL_IP4_SUBNET  uint16 = 13
	INTERNAL_IP6_SUBNET  uint16 = 15
)

// NotifyType is the type of a Notify payload. Below 16384 it reports an
// error; above, a status (RFC 7296 §3.10.1).
type NotifyType uint16

const (
	// Errors
	UNSUPPORTED_CRITICAL_PAYLOAD NotifyType = 1
	INVALID_IKE_SPI              NotifyType = 4
	INVALID_MAJOR_VERSION        NotifyType = 5
	INVALID_SYNTAX               NotifyType = 7
	INVALID_MESSAGE_ID           NotifyType = 9
	INVALID_SPI                  NotifyType = 11
	NO_PROPOSAL_CHOSEN           NotifyType = 14
	INVALID_KE_PAYLOAD           NotifyType = 17
	AUTHENTICATION_FAILED        NotifyType = 24
	SINGLE_PAIR_REQUIRED         NotifyType = 34
	NO_ADDITIONAL_SAS            NotifyType = 35
	INTERNAL_ADDRESS_FAILURE     NotifyType = 36
	FAILED_CP_REQUIRED           NotifyType = 37
	TS_UNACCEPTABLE              NotifyType = 38
	INVALID_SELECTORS            NotifyType = 39
	UNACCEPTABLE_ADDRESSES       NotifyType = 40
	UNEXPECTED_NAT_DETECTED      NotifyType = 41
	TEMPORARY_FAILURE            NotifyType = 43
	CHILD_SA_NOT_FOUND           NotifyType = 44

	// Status
	INITIAL_CONTACT               NotifyType = 16384
	SET_WINDOW_SIZE               NotifyType = 16385
	ADDITIONAL_TS_POSSIBLE        NotifyType = 16386
	IPCOMP_SUPPORTED              NotifyType = 16387
	NAT_DETECTION_SOURCE_IP       NotifyType = 16388
	NAT_DETECTION_DESTINATION_IP  NotifyType = 16389
	COOKIE                        NotifyType = 16390
	USE_TRANSPORT_MODE            NotifyType = 16391
	HTTP_CERT_LOOKUP_SUPPORTED    NotifyType = 16392
	REKEY_SA                      NotifyType = 16393
	ESP_TFC_PADDING_NOT_SUPPORTED NotifyType = 16394
	NON_FIRST_FRAGMENTS_ALSO      NotifyType = 16395
	MOBIKE_SUPPORTED              NotifyType = 16396
	ADDITIONAL_IP4_ADDRESS        NotifyType = 16397
	ADDITIONAL_IP6_ADDRESS        NotifyType = 16398
	NO_ADDITIONAL_ADDRESSES       NotifyType = 16399
	UPDATE_SA_ADDRESSES           NotifyType = 16400
	COOKIE2                       NotifyType = 16401
	NO_NATS_ALLOWED               NotifyType = 16402
	MULTIPLE_AUTH_SUPPORTED       NotifyType = 16404
	REDIRECT_SUPPORTED            NotifyType = 16406
	REDIRECT                      NotifyType = 16407 // RFC 5685 §8; data: redirect.go
	REDIRECTED_FROM               NotifyType = 16408 // RFC 5685 §9; data: redirect.go
	CHILDLESS_IKEV2_SUPPORTED     NotifyType = 16418
	IKEV2_FRAGMENTATION_SUPPORTED NotifyType = 16430
	SIGNATURE_HASH_ALGORITHMS     NotifyType = 16431
)

// IsError reports whether n is an error notification.
func (n NotifyType) IsError() bool { return n < 16384 }

func (e ExchangeType) String() string {
	switch e {
	case IKE_SA_INIT:
		return "IKE_SA_INIT"
	case IKE_AUTH:
		return "IKE_AUTH"
	case CREATE_CHILD_SA:
		return "CREATE_CHILD_SA"
	case INFORMATIONAL:
		return "INFORMATIONAL"
	}
	return fmt.Sprintf("exchange-%d", uint8(e))
}
