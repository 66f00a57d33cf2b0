package wire

import "testing"

func FuzzVendorID(f *testing.F) { fuzzPayload(f, PayloadVendorID) }
