// Package wire is the IKEv2 message codec (RFC 7296 §3): the IKE header,
// the generic payload chain, one file per payload type (sa.go, ke.go,
// id.go, cert.go, auth.go, nonce.go, notify.go, delete.go, vendor.go,
// ts.go, cp.go, eap.go, encrypted.go for SK and SKF, unknown.go), the IANA
// registries the payloads carry (constants.go), IKE fragmentation
// (RFC 7383, fragment.go), and the data of the notifications and
// configuration attributes whose layout is fixed: MOBIKE's (RFC 4555,
// mobike.go), split DNS (RFC 8598, splitdns.go) and the MIF extension's
// (mif.go, laid out in docs/mif.md).
//
// It holds no state of an exchange and no key: the SK payload's
// protection is a Crypter that package ike builds from the negotiated
// suite. Decoding is strict where RFC 7296 is (lengths, reserved
// payloads, SK last) and lenient where it asks to be (unknown non-critical
// payloads are kept as Unknown); every decoding failure is a *ParseError
// naming the notification to answer with. Decoded payloads never alias
// the input.
//
// Each payload type has a fuzz target in its own test file (FuzzSA,
// FuzzTS, ...): a body the decoder takes must encode to bytes that decode
// to the same payload. FuzzParse and FuzzParsePayloads do the same for
// whole messages and inner chains.
//
// It imports no other package of the project.
package wire
