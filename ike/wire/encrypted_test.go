package wire

import "testing"

func FuzzEncrypted(f *testing.F) { fuzzPayload(f, PayloadSK, PayloadSKF) }
