package wire

// VendorID is a Vendor ID payload (RFC 7296 §3.12).
type VendorID struct{ Data []byte }

func (*VendorID) Type() PayloadType { return PayloadVendorID }

func (p *VendorID) appendBody(b []byte) ([]byte, error) {
	return append(b, p.Data...), nil
}
