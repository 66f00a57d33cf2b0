package wire

import "testing"

func FuzzNonce(f *testing.F) { fuzzPayload(f, PayloadNonce) }
