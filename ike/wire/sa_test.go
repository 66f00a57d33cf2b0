package wire

import "testing"

func FuzzSA(f *testing.F) { fuzzPayload(f, PayloadSA) }
