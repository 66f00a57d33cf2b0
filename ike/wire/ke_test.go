package wire

import "testing"

func FuzzKE(f *testing.F) { fuzzPayload(f, PayloadKE) }
