package wire

import "testing"

func FuzzAuth(f *testing.F) { fuzzPayload(f, PayloadAUTH) }
