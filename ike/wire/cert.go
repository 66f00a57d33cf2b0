package wire

import (
	"errors"
)

// Cert is a Certificate payload (RFC 7296 §3.6).
type Cert struct {
	Encoding uint8
	Data     []byte
}

// CertReq is a Certificate Request payload (RFC 7296 §3.7).
type CertReq struct {
	Encoding uint8
	Data     []byte
}

func (*Cert) Type() PayloadType { return PayloadCERT }

func (*CertReq) Type() PayloadType { return PayloadCERTREQ }

func (p *Cert) appendBody(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func (p *CertReq) appendBody(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func parseCert(b []byte) (*Cert, error) {
	if len(b) < 1 {
		return nil, errors.New("no certificate encoding")
	}
	return &Cert{Encoding: b[0], Data: cloneBytes(b[1:])}, nil
}

func parseCertReq(b []byte) (*CertReq, error) {
	if len(b) < 1 {
		return nil, errors.New("no certificate encoding")
	}
	return &CertReq{Encoding: b[0], Data: cloneBytes(b[1:])}, nil
}
