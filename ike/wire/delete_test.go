package wire

import "testing"

func FuzzDelete(f *testing.F) { fuzzPayload(f, PayloadDelete) }
