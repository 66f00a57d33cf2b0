package wire

import "testing"

func FuzzUnknown(f *testing.F) { fuzzPayload(f, PayloadType(200)) }
