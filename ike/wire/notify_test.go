package wire

import "testing"

func FuzzNotify(f *testing.F) { fuzzPayload(f, PayloadNotify) }
