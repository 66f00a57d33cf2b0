package wire

import "testing"

func FuzzTS(f *testing.F) { fuzzPayload(f, PayloadTSi, PayloadTSr) }
