package mif

import (
	"github.com/mifsec/mifsec/dataplane"
	"github.com/mifsec/mifsec/ike"
)

// NewChildSAs makes the data plane's two SAs of a negotiated Child SA.
// The outbound SA never checks replays, so it gets the smallest window:
// 2 KiB less per SA, per client on a gateway.
func NewChildSAs(child *ike.ChildSA) (in, out *dataplane.SA, err error) {
	alg, err := dataplane.ParseAlgorithm(child.Algorithm)
	if err != nil {
		return nil, nil, err
	}
	in, err = dataplane.NewSA(dataplane.SAConfig{SPI: child.InSPI, Algorithm: alg, Key: child.InKey, ESN: child.ESN})
	if err != nil {
		return nil, nil, err
	}
	out, err = dataplane.NewSA(dataplane.SAConfig{SPI: child.OutSPI, Algorithm: alg, Key: child.OutKey, ESN: child.ESN,
		ReplayWindow: dataplane.MinReplayWindow})
	if err != nil {
		return nil, nil, err
	}
	return in, out, nil
}
