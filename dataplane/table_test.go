package dataplane

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestTable compares the table with a map through adds, replacements and
// deletes that make it grow many times.
func TestTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	tab := newTable[uint32, int](hashSPI)
	want := map[uint32]int{}
	for step := range 20000 {
		k := uint32(rng.IntN(4000))
		switch rng.IntN(3) {
		case 0, 1:
			tab.set(k, step)
			want[k] = step
		default:
			_, had := want[k]
			delete(want, k)
			if got := tab.delete(k); got != had {
				t.Fatalf("step %d: delete(%d) = %v, want %v", step, k, got, had)
			}
		}
		if tab.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", step, tab.len(), len(want))
		}
	}
	for k := range uint32(4000) {
		got, ok := tab.get(k)
		w, wok := want[k]
		if ok != wok || got != w {
			t.Fatalf("get(%d) = %d, %v; want %d, %v", k, got, ok, w, wok)
		}
	}
	n := 0
	for k, v := range tab.all {
		if want[k] != v {
			t.Fatalf("all yields %d=%d, want %d", k, v, want[k])
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("all yields %d entries, want %d", n, len(want))
	}
	if b := tab.b.Load(); len(b.heads) < len(want)/tableLoad {
		t.Fatalf("%d buckets for %d entries: the table did not grow", len(b.heads), len(want))
	}
}

// TestTableGetAllocatesNothing: the packet path's lookups, an inbound SA
// by SPI and a host route by address, make no allocation.
func TestTableGetAllocatesNothing(t *testing.T) {
	spis := newTable[uint32, *inboundSA](hashSPI)
	addrs := newTable[netip.Addr, *Route](hashAddr)
	for i := range 10000 {
		spis.set(uint32(i+256), &inboundSA{})
		addrs.set(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), &Route{})
	}
	a := netip.MustParseAddr("100.64.7.7")
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := spis.get(5000); !ok {
			t.Fatal("SPI 5000 not found")
		}
		if _, ok := addrs.get(a); !ok {
			t.Fatal("100.64.7.7 not found")
		}
	}); n != 0 {
		t.Fatalf("%.1f allocations per lookup", n)
	}
}

// TestTableConcurrentReaders reads entries that stay while a writer adds
// and deletes others and the table grows (run with -race).
func TestTableConcurrentReaders(t *testing.T) {
	tab := newTable[uint32, uint32](hashSPI)
	for k := range uint32(100) {
		tab.set(k, k)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := uint32(1000); k < 30000; k++ {
			tab.set(k, k)
			if k%3 == 0 {
				tab.delete(k)
			}
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		for k := range uint32(100) {
			if v, ok := tab.get(k); !ok || v != k {
				t.Fatalf("get(%d) = %d, %v while the table changed", k, v, ok)
			}
		}
	}
}
