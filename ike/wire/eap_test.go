package wire

import "testing"

func FuzzEAP(f *testing.F) { fuzzPayload(f, PayloadEAP) }
