package ike

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mifsec/mifsec/ike/wire"
)

// Proposals in strongSwan's syntax (swanctl.conf proposals and
// esp_proposals): algorithm keywords joined by '-', proposals separated by
// ','. Within a proposal several algorithms of one kind may be listed, the
// preferred first; the order of different kinds does not matter.

// EncryptionTransform is an ENCR transform and its Key Length attribute
// in bits (0 when the transform has none).
type EncryptionTransform struct {
	ID        uint16
	KeyLength uint16
}

// ProposalSpec is one configured proposal: the acceptable transforms of
// each type, in order of preference.
type ProposalSpec struct {
	Protocol   wire.ProtocolID
	Encryption []EncryptionTransform
	Integrity  []uint16 // empty with AEADs
	PRF        []uint16 // IKE only
	// DHGroups are the key exchange methods. In an ESP proposal they are
	// used when a Child SA is created or rekeyed with CREATE_CHILD_SA
	// (PFS); DH_NONE among them makes PFS optional.
	DHGroups []uint16
	ESN      []uint16 // ESP only: ESN_NO, ESN_YES
}

// proposalAliases maps other keywords strongSwan accepts to the ones
// String writes.
var proposalAliases = map[string]string{
	"aes":          "aes128",
	"aes128gcm128": "aes128gcm16",
	"aes192gcm128": "aes192gcm16",
	"aes256gcm128": "aes256gcm16",
	"sha":          "sha1",
	"sha2_256":     "sha256",
	"sha2_384":     "sha384",
	"sha2_512":     "sha512",
	"curve25519":   "x25519",
}

func supportedKeywords(proto wire.ProtocolID) string {
	var enc, integ, prf, dh []string
	for _, a := range encryptionAlgs {
		enc = append(enc, a.keyword)
	}
	for _, a := range integrityAlgs {
		integ = append(integ, a.keyword)
	}
	for _, a := range prfAlgs {
		prf = append(prf, a.keyword)
	}
	for _, a := range dhGroupAlgs {
		kw := a.keyword
		if a.id == wire.DH_CURVE25519 {
			kw += " (curve25519)"
		}
		dh = append(dh, kw)
	}
	s := "encryption " + strings.Join(enc, " ") + "; integrity " + strings.Join(integ, " ")
	if proto == wire.ProtoIKE {
		return s + "; PRF " + strings.Join(prf, " ") + "; DH " + strings.Join(dh, " ")
	}
	return s + "; DH (PFS) " + strings.Join(dh, " ") + " modpnone; esn noesn"
}

// ParseIKEProposals parses IKE SA proposals such as
// "aes256gcm16-prfsha256-x25519,aes256-sha256-modp2048". As in strongSwan,
// a proposal without a PRF keyword takes the PRFs matching its integrity
// algorithms (sha256 gives prfsha256), which is then dropped if the
// encryption algorithms are AEADs; a PRF and a DH group are mandatory.
func ParseIKEProposals(s string) ([]ProposalSpec, error) {
	return parseProposals(wire.ProtoIKE, s)
}

// ParseESPProposals parses Child SA proposals such as
// "aes256gcm16,chacha20poly1305-x25519,aes128-sha256-esn". A DH group
// asks for PFS when the Child SA is rekeyed; ESN defaults to noesn.
// As in strongSwan, integrity keywords next to AEADs and PRF keywords are
// dropped. Unlike strongSwan, AES-CBC without an integrity algorithm is
// refused.
func ParseESPProposals(s string) ([]ProposalSpec, error) {
	return parseProposals(wire.ProtoESP, s)
}

func parseProposals(proto wire.ProtocolID, s string) ([]ProposalSpec, error) {
	var specs []ProposalSpec
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("empty %s proposal in %q", protoName(proto), s)
		}
		spec, err := parseProposal(proto, item)
		if err != nil {
			return nil, err
		}
		specs = append(specs, spec)
	}
	if len(specs) > 255 {
		return nil, fmt.Errorf("%d %s proposals, at most 255 fit in an SA payload", len(specs), protoName(proto))
	}
	return specs, nil
}

func protoName(p wire.ProtocolID) string {
	switch p {
	case wire.ProtoIKE:
		return "IKE"
	case wire.ProtoESP:
		return "ESP"
	case wire.ProtoAH:
		return "AH"
	}
	return fmt.Sprintf("protocol %d", p)
}

func parseProposal(proto wire.ProtocolID, item string) (ProposalSpec, error) {
	p := ProposalSpec{Protocol: proto}
	bad := func(format string, args ...any) (ProposalSpec, error) {
		return ProposalSpec{}, fmt.Errorf("%s proposal %q: %s", protoName(proto), item, fmt.Sprintf(format, args...))
	}
	for tok := range strings.SplitSeq(item, "-") {
		tok = strings.ToLower(strings.TrimSpace(tok))
		if canonical, ok := proposalAliases[tok]; ok {
			tok = canonical
		}
		if !p.addKeyword(tok) {
			if tok == "" {
				return bad("empty algorithm keyword; supported: %s", supportedKeywords(proto))
			}
			return bad("unknown algorithm %q; supported: %s", tok, supportedKeywords(proto))
		}
	}

	if len(p.Encryption) == 0 {
		return bad("no encryption algorithm; supported: %s", supportedKeywords(proto))
	}
	aead := 0
	for _, e := range p.Encryption {
		if a, _ := lookupEncryption(e.ID, e.KeyLength); a.aead {
			aead++
		}
	}
	if aead != 0 && aead != len(p.Encryption) {
		return bad("AEAD and classic encryption algorithms cannot share a proposal; separate them with ','")
	}

	switch proto {
	case wire.ProtoIKE:
		if len(p.PRF) == 0 {
			for _, i := range p.Integrity {
				if prf, ok := prfForIntegrity(i); ok {
					p.PRF = appendUnique(p.PRF, prf)
				}
			}
		}
		if len(p.PRF) == 0 {
			return bad("no PRF (add one of prfsha256 prfsha384 prfsha512 prfsha1)")
		}
		p.DHGroups = slices.DeleteFunc(p.DHGroups, func(g uint16) bool { return g == wire.DH_NONE })
		if len(p.DHGroups) == 0 {
			return bad("no Diffie-Hellman group (add one of modp2048 ecp256 ecp384 x25519)")
		}
		if len(p.ESN) != 0 {
			return bad("esn and noesn apply to ESP proposals only")
		}
	case wire.ProtoESP:
		p.PRF = nil
		if len(p.ESN) == 0 {
			p.ESN = []uint16{wire.ESN_NO}
		}
	}
	if aead != 0 {
		p.Integrity = nil
	} else if len(p.Integrity) == 0 {
		return bad("classic encryption needs an integrity algorithm (add one of sha256 sha384 sha512 sha1)")
	}
	return p, nil
}

// addKeyword adds the algorithm a canonical keyword names; false for an
// unknown keyword.
func (p *ProposalSpec) addKeyword(tok string) bool {
	for _, a := range encryptionAlgs {
		if a.keyword == tok {
			e := EncryptionTransform{ID: a.id, KeyLength: a.keyLength}
			if !slices.Contains(p.Encryption, e) {
				p.Encryption = append(p.Encryption, e)
			}
			return true
		}
	}
	for _, a := range integrityAlgs {
		if a.keyword == tok {
			p.Integrity = appendUnique(p.Integrity, a.id)
			return true
		}
	}
	for _, a := range prfAlgs {
		if a.keyword == tok {
			p.PRF = appendUnique(p.PRF, a.id)
			return true
		}
	}
	for _, a := range dhGroupAlgs {
		if a.keyword == tok {
			p.DHGroups = appendUnique(p.DHGroups, a.id)
			return true
		}
	}
	switch tok {
	case "modpnone":
		p.DHGroups = appendUnique(p.DHGroups, wire.DH_NONE)
	case "esn":
		p.ESN = appendUnique(p.ESN, wire.ESN_YES)
	case "noesn":
		p.ESN = appendUnique(p.ESN, wire.ESN_NO)
	default:
		return false
	}
	return true
}

func appendUnique(s []uint16, v uint16) []uint16 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// String renders p in strongSwan's syntax; parsing the result gives p
// back. ESN is left out when it is noesn alone, strongSwan's default.
func (p ProposalSpec) String() string {
	var tok []string
	for _, e := range p.Encryption {
		if a, ok := lookupEncryption(e.ID, e.KeyLength); ok {
			tok = append(tok, a.keyword)
		} else {
			tok = append(tok, fmt.Sprintf("encr%d_%d", e.ID, e.KeyLength))
		}
	}
	for _, i := range p.Integrity {
		tok = append(tok, integrityKeyword(i))
	}
	for _, f := range p.PRF {
		tok = append(tok, prfKeyword(f))
	}
	for _, g := range p.DHGroups {
		tok = append(tok, dhKeyword(g))
	}
	if !slices.Equal(p.ESN, []uint16{wire.ESN_NO}) {
		for _, e := range p.ESN {
			tok = append(tok, esnKeyword(e == wire.ESN_YES))
		}
	}
	return strings.Join(tok, "-")
}

// formatProposals renders specs as a comma-separated list.
func formatProposals(specs []ProposalSpec) string {
	s := make([]string, len(specs))
	for i, p := range specs {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// DataPlaneNames lists the data plane names (Suite.DataPlaneName) of the
// ESP transforms an ESP proposal allows: each AEAD, or each pairing of a
// cipher with an integrity algorithm.
func (p ProposalSpec) DataPlaneNames() []string {
	var out []string
	for _, e := range p.Encryption {
		s := Suite{Protocol: p.Protocol, Encryption: e.ID, KeyLength: e.KeyLength}
		if s.IsAEAD() {
			out = append(out, s.DataPlaneName())
			continue
		}
		for _, i := range p.Integrity {
			s.Integrity = i
			out = append(out, s.DataPlaneName())
		}
	}
	return out
}

// WithoutDH returns p without DH groups, as a Child SA proposal is sent in
// IKE_AUTH, which has no KE payload.
func (p ProposalSpec) WithoutDH() ProposalSpec {
	p.DHGroups = nil
	return p
}

// Proposal renders p as the proposal substructure of an SA payload
// (RFC 7296 §3.3.1), transforms in the order ENCR, PRF, INTEG, DH, ESN.
func (p ProposalSpec) Proposal(number uint8, spi []byte) wire.Proposal {
	out := wire.Proposal{Number: number, Protocol: p.Protocol, SPI: spi}
	for _, e := range p.Encryption {
		out.Transforms = append(out.Transforms, wire.Transform{Type: wire.TransformENCR, ID: e.ID, KeyLength: e.KeyLength})
	}
	for _, f := range p.PRF {
		out.Transforms = append(out.Transforms, wire.Transform{Type: wire.TransformPRF, ID: f})
	}
	for _, i := range p.Integrity {
		out.Transforms = append(out.Transforms, wire.Transform{Type: wire.TransformINTEG, ID: i})
	}
	for _, g := range p.DHGroups {
		out.Transforms = append(out.Transforms, wire.Transform{Type: wire.TransformDH, ID: g})
	}
	for _, e := range p.ESN {
		out.Transforms = append(out.Transforms, wire.Transform{Type: wire.TransformESN, ID: e})
	}
	return out
}

// BuildProposals renders specs as the proposals of an SA payload,
// numbered from 1, each with spi.
func BuildProposals(specs []ProposalSpec, spi []byte) ([]wire.Proposal, error) {
	if len(specs) > 255 {
		return nil, fmt.Errorf("%d proposals, at most 255 fit in an SA payload", len(specs))
	}
	out := make([]wire.Proposal, len(specs))
	for i, p := range specs {
		out[i] = p.Proposal(uint8(i+1), spi)
	}
	return out, nil
}

// firstDHGroup returns the preferred DH group of specs, the one to send a
// KE payload for first; DH_NONE if there is none.
func firstDHGroup(specs []ProposalSpec) uint16 {
	for _, p := range specs {
		for _, g := range p.DHGroups {
			if g != wire.DH_NONE {
				return g
			}
		}
	}
	return wire.DH_NONE
}

// SelectOptions adjust SelectProposalWith.
type SelectOptions struct {
	// IgnoreDH leaves DH groups out of a Child SA negotiation: in IKE_AUTH
	// there is no KE payload, so offered groups are neither required nor
	// chosen.
	IgnoreDH bool
	// PreferDH is the group of the KE payload received. When the matched
	// proposals share it, it is chosen over a group preferred by order,
	// which spares an INVALID_KE_PAYLOAD round trip.
	PreferDH uint16
}

// Selection is a negotiated proposal.
type Selection struct {
	// Proposal is the single proposal to answer with: one transform of
	// each type and the Number of the offer accepted. Its SPI is empty; a
	// responder sets its own before sending.
	Proposal wire.Proposal
	// PeerSPI is the SPI of the accepted offer.
	PeerSPI []byte
	Suite   Suite
}

// SelectProposal is the responder's choice among offered proposals (RFC
// 7296 §2.7) when a KE payload comes with them (IKE_SA_INIT,
// CREATE_CHILD_SA). As strongSwan does by default, the responder's order
// wins: the first of mine that matches any offer is taken, matched with
// the first offer it matches, and within the pair each transform type
// takes the first of mine's algorithms that the offer lists. An offer with
// a transform type that is not understood or not valid for its protocol,
// or missing a mandatory type, does not match. ok is false when nothing
// matches (answer NO_PROPOSAL_CHOSEN).
func SelectProposal(offered []wire.Proposal, mine []ProposalSpec) (Selection, bool) {
	return SelectProposalWith(offered, mine, SelectOptions{})
}

// SelectProposalWith is SelectProposal with options.
func SelectProposalWith(offered []wire.Proposal, mine []ProposalSpec, opts SelectOptions) (Selection, bool) {
	for _, spec := range mine {
		for _, offer := range offered {
			if s, ok := matchProposal(spec, offer, opts); ok {
				return Selection{
					Proposal: s.proposal(offer.Number),
					PeerSPI:  offer.SPI,
					Suite:    s,
				}, true
			}
		}
	}
	return Selection{}, false
}

// offeredTransforms are one proposal's transforms by type, in order.
type offeredTransforms struct {
	encr                []EncryptionTransform
	integ, prf, dh, esn []uint16
	unknown             bool
}

func splitTransforms(ts []wire.Transform) offeredTransforms {
	var o offeredTransforms
	for _, t := range ts {
		switch t.Type {
		case wire.TransformENCR:
			o.encr = append(o.encr, EncryptionTransform{ID: t.ID, KeyLength: t.KeyLength})
		case wire.TransformINTEG:
			o.integ = append(o.integ, t.ID)
		case wire.TransformPRF:
			o.prf = append(o.prf, t.ID)
		case wire.TransformDH:
			o.dh = append(o.dh, t.ID)
		case wire.TransformESN:
			o.esn = append(o.esn, t.ID)
		default:
			o.unknown = true
		}
	}
	return o
}

func spiSizeOK(p wire.Proposal) bool {
	switch p.Protocol {
	case wire.ProtoIKE:
		return len(p.SPI) == 0 || len(p.SPI) == 8
	case wire.ProtoESP, wire.ProtoAH:
		return len(p.SPI) == 4
	}
	return false
}

func matchProposal(spec ProposalSpec, offer wire.Proposal, opts SelectOptions) (Suite, bool) {
	if offer.Protocol != spec.Protocol || !spiSizeOK(offer) {
		return Suite{}, false
	}
	o := splitTransforms(offer.Transforms)
	if o.unknown {
		return Suite{}, false
	}
	s := Suite{Protocol: spec.Protocol}
	var ok bool
	i := slices.IndexFunc(spec.Encryption, func(e EncryptionTransform) bool { return slices.Contains(o.encr, e) })
	if i < 0 {
		return Suite{}, false
	}
	s.Encryption, s.KeyLength = spec.Encryption[i].ID, spec.Encryption[i].KeyLength
	if !s.IsAEAD() {
		if s.Integrity, ok = firstCommon(spec.Integrity, o.integ); !ok {
			return Suite{}, false
		}
	}
	switch spec.Protocol {
	case wire.ProtoIKE:
		if len(o.esn) != 0 {
			return Suite{}, false
		}
		if s.PRF, ok = firstCommon(spec.PRF, o.prf); !ok {
			return Suite{}, false
		}
		if s.DHGroup, ok = chooseDH(spec.DHGroups, o.dh, opts.PreferDH); !ok {
			return Suite{}, false
		}
	case wire.ProtoESP:
		if len(o.prf) != 0 {
			return Suite{}, false
		}
		if !opts.IgnoreDH {
			mineDH, offerDH := spec.DHGroups, o.dh
			if len(mineDH) == 0 {
				mineDH = []uint16{wire.DH_NONE}
			}
			if len(offerDH) == 0 {
				offerDH = []uint16{wire.DH_NONE}
			}
			if s.DHGroup, ok = chooseDH(mineDH, offerDH, opts.PreferDH); !ok {
				return Suite{}, false
			}
		}
		esn, ok := firstCommon(spec.ESN, o.esn)
		if !ok {
			return Suite{}, false
		}
		s.ESN = esn == wire.ESN_YES
	default:
		return Suite{}, false
	}
	if s.Validate() != nil {
		return Suite{}, false
	}
	return s, true
}

// firstCommon returns the first of mine that offered lists.
func firstCommon(mine, offered []uint16) (uint16, bool) {
	for _, m := range mine {
		if slices.Contains(offered, m) {
			return m, true
		}
	}
	return 0, false
}

func chooseDH(mine, offered []uint16, prefer uint16) (uint16, bool) {
	if prefer != wire.DH_NONE && slices.Contains(mine, prefer) && slices.Contains(offered, prefer) {
		return prefer, true
	}
	return firstCommon(mine, offered)
}

// proposal renders a negotiated suite as the single-transform-per-type
// proposal of an answer.
func (s Suite) proposal(number uint8) wire.Proposal {
	p := wire.Proposal{Number: number, Protocol: s.Protocol}
	p.Transforms = append(p.Transforms, wire.Transform{Type: wire.TransformENCR, ID: s.Encryption, KeyLength: s.KeyLength})
	if s.Protocol == wire.ProtoIKE {
		p.Transforms = append(p.Transforms, wire.Transform{Type: wire.TransformPRF, ID: s.PRF})
	}
	if !s.IsAEAD() {
		p.Transforms = append(p.Transforms, wire.Transform{Type: wire.TransformINTEG, ID: s.Integrity})
	}
	if s.DHGroup != wire.DH_NONE {
		p.Transforms = append(p.Transforms, wire.Transform{Type: wire.TransformDH, ID: s.DHGroup})
	}
	if s.Protocol == wire.ProtoESP {
		esn := wire.ESN_NO
		if s.ESN {
			esn = wire.ESN_YES
		}
		p.Transforms = append(p.Transforms, wire.Transform{Type: wire.TransformESN, ID: esn})
	}
	return p
}

// ErrProposalMismatch reports a responder's answer that does not fit what
// was offered.
var ErrProposalMismatch = errors.New("chosen proposal does not match the offer")

// verifyChosenProposal is the initiator's check of the SA payload of an
// answer (RFC 7296 §2.7): exactly one proposal, with the number and
// protocol of one we offered, one transform of each type that offer has
// (integrity may be left out with an AEAD, a DH group when the offer
// allowed NONE), each transform one the offer listed. offered is what we
// sent.
func verifyChosenProposal(chosen, offered []wire.Proposal) (Selection, error) {
	if len(chosen) != 1 {
		return Selection{}, fmt.Errorf("%w: %d proposals in the answer, want 1", ErrProposalMismatch, len(chosen))
	}
	c := chosen[0]
	i := slices.IndexFunc(offered, func(p wire.Proposal) bool { return p.Number == c.Number })
	if i < 0 {
		return Selection{}, fmt.Errorf("%w: proposal number %d was not offered", ErrProposalMismatch, c.Number)
	}
	offer := offered[i]
	if c.Protocol != offer.Protocol {
		return Selection{}, fmt.Errorf("%w: proposal %d has protocol %s, offered %s", ErrProposalMismatch, c.Number, protoName(c.Protocol), protoName(offer.Protocol))
	}
	if !spiSizeOK(c) {
		return Selection{}, fmt.Errorf("%w: %s proposal with a %d-byte SPI", ErrProposalMismatch, protoName(c.Protocol), len(c.SPI))
	}
	seen := map[wire.TransformType]bool{}
	for _, t := range c.Transforms {
		if t.Type < wire.TransformENCR || t.Type > wire.TransformESN {
			return Selection{}, fmt.Errorf("%w: unknown transform type %d", ErrProposalMismatch, t.Type)
		}
		if seen[t.Type] {
			return Selection{}, fmt.Errorf("%w: more than one transform of type %d", ErrProposalMismatch, t.Type)
		}
		seen[t.Type] = true
		if !slices.ContainsFunc(offer.Transforms, func(o wire.Transform) bool {
			return o.Type == t.Type && o.ID == t.ID && o.KeyLength == t.KeyLength
		}) {
			return Selection{}, fmt.Errorf("%w: transform type %d ID %d (key length %d) was not offered", ErrProposalMismatch, t.Type, t.ID, t.KeyLength)
		}
	}
	got := splitTransforms(c.Transforms)
	want := splitTransforms(offer.Transforms)
	if len(got.encr) == 0 {
		return Selection{}, fmt.Errorf("%w: no encryption algorithm", ErrProposalMismatch)
	}
	s := Suite{Protocol: c.Protocol, Encryption: got.encr[0].ID, KeyLength: got.encr[0].KeyLength}
	if len(got.integ) > 0 {
		s.Integrity = got.integ[0]
	}
	if len(got.prf) > 0 {
		s.PRF = got.prf[0]
	}
	if len(got.dh) > 0 {
		s.DHGroup = got.dh[0]
	}
	if len(got.esn) > 0 {
		s.ESN = got.esn[0] == wire.ESN_YES
	}
	missing := func(what string) (Selection, error) {
		return Selection{}, fmt.Errorf("%w: no %s transform", ErrProposalMismatch, what)
	}
	if len(want.integ) > 0 && len(got.integ) == 0 && !s.IsAEAD() {
		return missing("integrity")
	}
	if len(want.prf) > 0 && len(got.prf) == 0 {
		return missing("PRF")
	}
	if len(want.dh) > 0 && len(got.dh) == 0 && (c.Protocol == wire.ProtoIKE || !slices.Contains(want.dh, wire.DH_NONE)) {
		return missing("Diffie-Hellman")
	}
	if len(want.esn) > 0 && len(got.esn) == 0 {
		return missing("ESN")
	}
	if err := s.Validate(); err != nil {
		return Selection{}, fmt.Errorf("%w: %v", ErrProposalMismatch, err)
	}
	return Selection{Proposal: c, PeerSPI: c.SPI, Suite: s}, nil
}
