package wire

import "testing"

func FuzzID(f *testing.F) { fuzzPayload(f, PayloadIDi, PayloadIDr) }
