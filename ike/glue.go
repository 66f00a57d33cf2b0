package ike

import (
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/mifsec/mifsec/ike/wire"
)

// ikeKeys are an IKE SA's keys with the SK crypters of this side's
// directions, in one allocation: a gateway holds one per client, and the
// keys, their slice headers, a PRF and two crypters apart were some 600
// bytes of each (docs/gateway-scale.md).
type ikeKeys struct {
	Keys
	out, in   wire.Crypter
	aead      [2]aeadCrypter // out's and in's, where the suite is an AEAD
	initiator bool           // we are the "i" of the keys (see Keys)
}

func newIKEKeys(k *Keys, initiator bool) (*ikeKeys, error) {
	if _, err := k.PRF(); err != nil {
		return nil, err
	}
	ik := &ikeKeys{Keys: *k, initiator: initiator}
	var err error
	if ik.out, ik.in, err = ik.makeCrypters(initiator, &ik.aead[0], &ik.aead[1]); err != nil {
		return nil, err
	}
	return ik, nil
}

// prf returns the IKE SA's PRF (checked when the keys were made).
func (k *ikeKeys) prf() PRF {
	p, _ := k.PRF()
	return p
}

// forgetAuthKeys lets SK_pi and SK_pr go once IKE_AUTH is done
// (Keys.forgetAuthKeys), and points the AEAD crypters at their keys' new
// place; nothing else of theirs changes (their IV counters go on). CBC
// crypters keep copies of their own.
func (k *ikeKeys) forgetAuthKeys() {
	k.Keys.forgetAuthKeys()
	if !k.Suite.IsAEAD() {
		return
	}
	out, in := k.SKei(), k.SKer()
	if !k.initiator {
		out, in = in, out
	}
	k.aead[0].key, k.aead[1].key = out[:len(k.aead[0].key)], in[:len(k.aead[1].key)]
}

// wipe overwrites the IKE SA's keys with zeros once it is gone (deleted,
// replaced by a rekey, torn down). The SK crypters' and the PRF's expanded
// keys live inside the standard library and go with the SA.
func (sa *ikeSA) wipe() {
	if sa != nil && sa.keys != nil {
		sa.keys.Wipe()
	}
}

// deriveIKEKeys derives a new IKE SA's keys from IKE_SA_INIT.
func deriveIKEKeys(s Suite, shared, ni, nr []byte, spiI, spiR uint64, initiator bool) (*ikeKeys, error) {
	k, err := deriveKeys(s, shared, ni, nr, spiI, spiR)
	if err != nil {
		return nil, err
	}
	return newIKEKeys(k, initiator)
}

// rekeyIKEKeys derives the keys of an IKE SA that replaces old (RFC 7296
// §2.18). initiator says whether we initiated the new IKE SA.
func rekeyIKEKeys(old *ikeKeys, s Suite, shared, ni, nr []byte, spiI, spiR uint64, initiator bool) (*ikeKeys, error) {
	k, err := old.Rekey(s, shared, ni, nr, spiI, spiR)
	if err != nil {
		return nil, err
	}
	ik, err := newIKEKeys(k, initiator)
	if err != nil {
		return nil, err
	}
	ik.forgetAuthKeys() // an IKE SA made by a rekey has no AUTH payloads
	return ik, nil
}

// groupsOf lists the DH groups the proposals name.
func groupsOf(specs []ProposalSpec) []uint16 {
	var out []uint16
	for _, s := range specs {
		for _, g := range s.DHGroups {
			if g != wire.DH_NONE && !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	return out
}

func offerIKE(specs []ProposalSpec) []wire.Proposal {
	ps, _ := BuildProposals(specs, nil)
	return ps
}

// offerESP builds the ESP proposals with our inbound SPI; without DH for
// IKE_AUTH, where no key exchange takes place.
func offerESP(specs []ProposalSpec, spi uint32, withDH bool) []wire.Proposal {
	if !withDH {
		plain := make([]ProposalSpec, len(specs))
		for i, s := range specs {
			plain[i] = s.WithoutDH()
		}
		specs = plain
	}
	ps, _ := BuildProposals(specs, binary.BigEndian.AppendUint32(nil, spi))
	return ps
}

// acceptIKE checks the gateway's choice against what we offered.
func acceptIKE(chosen wire.Proposal, specs []ProposalSpec) (Suite, error) {
	sel, err := verifyChosenProposal([]wire.Proposal{chosen}, offerIKE(specs))
	return sel.Suite, err
}

// espParams is a negotiated Child SA transform set.
type espParams struct {
	spi uint32 // the peer's SPI
	alg string // data plane algorithm name
	esn bool
	dh  uint16
	s   Suite
}

func espFromSelection(sel Selection) (espParams, error) {
	if len(sel.PeerSPI) != 4 {
		return espParams{}, fmt.Errorf("ESP proposal with a %d-byte SPI", len(sel.PeerSPI))
	}
	if err := sel.Suite.Validate(); err != nil {
		return espParams{}, fmt.Errorf("ESP transform %s: %w", sel.Suite, err)
	}
	return espParams{spi: binary.BigEndian.Uint32(sel.PeerSPI), alg: sel.Suite.DataPlaneName(), esn: sel.Suite.ESN, dh: sel.Suite.DHGroup, s: sel.Suite}, nil
}

// acceptESP checks the gateway's choice of ESP proposal.
func acceptESP(chosen wire.Proposal, specs []ProposalSpec, withDH bool) (espParams, error) {
	sel, err := verifyChosenProposal([]wire.Proposal{chosen}, offerESP(specs, 0, withDH))
	if err != nil {
		return espParams{}, err
	}
	return espFromSelection(sel)
}

// selectESP is the responder's choice among the gateway's ESP proposals.
func selectESP(offered []wire.Proposal, specs []ProposalSpec, keGroup uint16) (wire.Proposal, espParams, bool) {
	sel, ok := SelectProposalWith(offered, specs, SelectOptions{PreferDH: keGroup})
	if !ok {
		return wire.Proposal{}, espParams{}, false
	}
	esp, err := espFromSelection(sel)
	return sel.Proposal, esp, err == nil
}

// childKeyMaterial is a Child SA's keying material: for each direction
// the data plane's key, the encryption key (with an AEAD's salt) followed
// by the integrity key when the suite has one (RFC 7296 §2.17 takes them
// from KEYMAT in that order); and the same for its probe SA (ProbeSA),
// nil when it has none.
type childKeyMaterial struct {
	iToR, rToI           []byte
	probeIToR, probeRToI []byte
}

// childKeys returns a Child SA's keys, the initiator-to-responder key of
// the exchange first; with probe, also its probe SA's, taken from KEYMAT
// right after them.
func childKeys(sa *ikeSA, esp espParams, shared, ni, nr []byte, probe bool) (childKeyMaterial, error) {
	sets := 1
	if probe {
		sets = 2
	}
	ks, err := sa.keys.deriveChildKeySets(esp.s, shared, ni, nr, sets)
	if err != nil {
		return childKeyMaterial{}, err
	}
	joined := func(ck *ChildKeys) (iToR, rToI []byte) {
		iToR = append(append([]byte(nil), ck.InitiatorEncryption...), ck.InitiatorIntegrity...)
		rToI = append(append([]byte(nil), ck.ResponderEncryption...), ck.ResponderIntegrity...)
		ck.Wipe()
		return iToR, rToI
	}
	var km childKeyMaterial
	km.iToR, km.rToI = joined(ks[0])
	if probe {
		km.probeIToR, km.probeRToI = joined(ks[1])
	}
	return km, nil
}

// checkCredentials checks what either role needs to authenticate and
// negotiate.
func checkCredentials(hasPSK bool, key crypto.Signer, certs []*x509.Certificate, ike, esp []ProposalSpec, local Identity) error {
	switch {
	case !hasPSK && key == nil:
		return errors.New("neither a pre-shared key nor a private key to authenticate with")
	case key != nil && len(certs) == 0:
		return errors.New("a private key without its certificate")
	case len(ike) == 0 || len(esp) == 0:
		return errors.New("no IKE or ESP proposals")
	case local.Type == 0:
		return errors.New("no local identity")
	}
	return nil
}
