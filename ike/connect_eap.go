package ike

import (
	"context"
	"fmt"

	"github.com/mifsec/mifsec/ike/wire"
)

// maxEAPRounds bounds the EAP requests a gateway may send in one login
// (EAP-MSCHAPv2 needs three: Identity, Challenge, Success).
const maxEAPRounds = 8

// eapLogin runs EAP-MSCHAPv2 after the gateway's first IKE_AUTH response
// (first, whose signature verifyGateway checked), then sends AUTH keyed
// with the MSK and checks the gateway's. It returns the last response,
// which carries the configuration, SA and traffic selectors.
func (s *Session) eapLogin(ctx context.Context, init *initResult, first []wire.Payload) ([]wire.Payload, error) {
	sa := init.sa
	client := &eapClient{cred: s.cfg.EAP}
	reply := first
	for round := 0; !client.done; round++ {
		p := wire.Find[*wire.EAP](reply)
		if p == nil {
			return nil, fmt.Errorf("%w: IKE_AUTH: the gateway proved its identity but sent no EAP request (it does not do EAP for us)", ErrAuthFailed)
		}
		if round == maxEAPRounds {
			return nil, fmt.Errorf("IKE_AUTH: the gateway sent more than %d EAP requests", maxEAPRounds)
		}
		answer, err := client.step(p.Data)
		if err != nil {
			return nil, fmt.Errorf("IKE_AUTH with %s: EAP-MSCHAPv2 as %s: %w", s.cfg.Remote, Printable(s.cfg.EAP.Identity), err)
		}
		if answer == nil {
			break
		}
		if reply, err = s.exchange(ctx, sa, wire.IKE_AUTH, []wire.Payload{&wire.EAP{Data: answer}}, s.cfg.Retransmit); err != nil {
			return nil, fmt.Errorf("IKE_AUTH with %s: %w", s.cfg.Remote, err)
		}
		if err := firstError(reply, "IKE_AUTH"); err != nil {
			return nil, err
		}
	}
	msk := client.msk
	defer clear(msk)
	octets := initiatorSignedOctets(sa.keys.prf.Sum, init.request, sa.nr, sa.keys.SKpi, s.cfg.LocalID.PayloadBody())
	reply, err := s.exchange(ctx, sa, wire.IKE_AUTH, []wire.Payload{&wire.Auth{Method: wire.AuthPSK, Data: pSKAuth(sa.keys.prf.Sum, msk, octets)}}, s.cfg.Retransmit)
	if err != nil {
		return nil, fmt.Errorf("IKE_AUTH with %s: %w", s.cfg.Remote, err)
	}
	if err := firstError(reply, "IKE_AUTH"); err != nil {
		return nil, err
	}
	auth, idr := wire.Find[*wire.Auth](reply), wire.Find[*wire.ID](first)
	if auth == nil || auth.Method != wire.AuthPSK {
		return nil, fmt.Errorf("%w: the gateway's last IKE_AUTH response has no AUTH keyed with the EAP MSK", ErrAuthFailed)
	}
	theirs := responderSignedOctets(sa.keys.prf.Sum, init.response, sa.ni, sa.keys.SKpr, Identity{Type: idr.IDType, Data: idr.Data}.PayloadBody())
	if verifyPSKAuth(sa.keys.prf.Sum, msk, theirs, auth.Data) != nil {
		return nil, fmt.Errorf("%w: the gateway's AUTH does not match the EAP MSK", ErrAuthFailed)
	}
	return reply, nil
}
