package wire

import "testing"

func FuzzCP(f *testing.F) { fuzzPayload(f, PayloadCP) }
