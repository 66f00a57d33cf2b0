package ike

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mifsec/mifsec/ike/wire"
)

func TestPeerMIF(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   []wire.Payload
		want bool
	}{
		{"absent", []wire.Payload{&wire.Notify{NotifyType: wire.MOBIKE_SUPPORTED}}, false},
		{"ours", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_SUPPORTED, Data: wire.MIFSupportedData()}}, true},
		{"malformed", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_SUPPORTED}}, false},
		{"newer", []wire.Payload{&wire.Notify{NotifyType: wire.MIF_SUPPORTED, Data: []byte{3, 0}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := peerMIF(tc.ps); got != tc.want {
				t.Fatalf("peerMIF = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPeerProbeSPI: a MIF_PROBE_SPI offers a probe SA only with exactly
// four bytes naming an SPI outside the reserved 0-255.
func TestPeerProbeSPI(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		spi  uint32
		ok   bool
	}{
		{"an SPI", []byte{0xc0, 0x01, 0x02, 0x03}, 0xc0010203, true},
		{"the lowest unreserved SPI", []byte{0, 0, 1, 0}, 256, true},
		{"a reserved SPI", []byte{0, 0, 0, 255}, 0, false},
		{"SPI 0", []byte{0, 0, 0, 0}, 0, false},
		{"three bytes", []byte{1, 2, 3}, 0, false},
		{"five bytes", []byte{1, 2, 3, 4, 5}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spi, ok := peerProbeSPI([]wire.Payload{&wire.Notify{NotifyType: wire.MIF_PROBE_SPI, Data: tc.data}})
			if ok != tc.ok || ok && spi != tc.spi {
				t.Fatalf("peerProbeSPI(%x) = %#x, %v; want %#x, %v", tc.data, spi, ok, tc.spi, tc.ok)
			}
		})
	}
	if _, ok := peerProbeSPI(nil); ok {
		t.Fatal("an offer without the notification")
	}
	spi, ps := offerProbeSPI(true, randomESPSPI)
	if got, ok := peerProbeSPI(ps); !ok || got != spi {
		t.Fatalf("our own offer of %#x reads as %#x, %v", spi, got, ok)
	}
	if spi, ps := offerProbeSPI(false, randomESPSPI); spi != 0 || ps != nil {
		t.Fatalf("no offer gave SPI %#x and %v", spi, ps)
	}
}

func FuzzPeerProbeSPI(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		spi, ok := peerProbeSPI([]wire.Payload{&wire.Notify{NotifyType: wire.MIF_PROBE_SPI, Data: b}})
		if ok && (len(b) != wire.MIFProbeSPILen || spi < 256 || !bytes.Equal(binary.BigEndian.AppendUint32(nil, spi), b)) {
			t.Fatalf("accepted %x as %#x", b, spi)
		}
	})
}
