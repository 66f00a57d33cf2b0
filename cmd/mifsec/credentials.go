package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/mifsec/mifsec/ike"
	"github.com/urfave/cli/v2"
)

// ikeCredentials are the authentication and proposal settings that connect
// and gateway share.
type ikeCredentials struct {
	psk      []byte
	key      crypto.Signer
	certs    []*x509.Certificate
	cas      *ike.TrustStore
	ike, esp []ike.ProposalSpec
}

// parseCredentials reads --psk-file or --cert/--key, --ca, --ike and --esp.
func parseCredentials(c *cli.Context) (ikeCredentials, error) {
	var cr ikeCredentials
	var err error
	switch {
	case c.String("psk-file") != "" && c.String("key") != "":
		return cr, errors.New("give either --psk-file or --cert/--key, not both")
	case c.String("psk-file") != "":
		psk, err := os.ReadFile(c.String("psk-file"))
		if err != nil {
			return cr, fmt.Errorf("--psk-file: %w", err)
		}
		if cr.psk = bytes.TrimRight(psk, "\r\n"); len(cr.psk) == 0 {
			return cr, fmt.Errorf("--psk-file %s is empty", c.String("psk-file"))
		}
	case c.String("key") != "" || c.String("cert") != "":
		if c.String("key") == "" || c.String("cert") == "" {
			return cr, errors.New("--cert and --key go together")
		}
		if cr.certs, err = ike.LoadCertificates(c.String("cert")); err != nil {
			return cr, fmt.Errorf("--cert: %w", err)
		}
		if cr.key, err = ike.LoadPrivateKey(c.String("key")); err != nil {
			return cr, fmt.Errorf("--key: %w", err)
		}
	default:
		return cr, errors.New("no credentials: give --psk-file, or --cert and --key")
	}
	if ca := c.String("ca"); ca != "" {
		if cr.cas, err = ike.LoadTrustStore(ca); err != nil {
			return cr, fmt.Errorf("--ca: %w", err)
		}
	}
	if cr.ike, err = ike.ParseIKEProposals(c.String("ike")); err != nil {
		return cr, fmt.Errorf("--ike: %w", err)
	}
	if cr.esp, err = ike.ParseESPProposals(c.String("esp")); err != nil {
		return cr, fmt.Errorf("--esp: %w", err)
	}
	return cr, nil
}
