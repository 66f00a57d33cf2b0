package wire

import "testing"

func FuzzCert(f *testing.F) { fuzzPayload(f, PayloadCERT, PayloadCERTREQ) }
