package cluster

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/etcdtest"
)

// BenchmarkLogin is what logins cost three gateways of a three-member
// etcd sharing one pool: an address leased for a new identity and its
// session registered (the writer's batches, flushed before the clock
// stops), with 1, 8 or 32 logins at once per gateway (the Responder's
// lease window).
func BenchmarkLogin(b *testing.B) {
	for _, at := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("at-once-%d", at), func(b *testing.B) {
			etcd := etcdtest.Start(b, 3)
			var gws []*Pool
			var cs []*Cluster
			for g := range 3 {
				c, err := New(b.Context(), Config{Endpoints: etcd.Endpoints(), Name: fmt.Sprintf("g%d", g), Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
					MemberTTL: memberTTL, Grace: grace, Timeout: 10 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				p, err := c.Pool(netip.MustParsePrefix("10.0.0.0/12"))
				if err != nil {
					b.Fatal(err)
				}
				gws, cs = append(gws, p.(*Pool)), append(cs, c)
			}
			var n atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range at * len(gws) {
				wg.Go(func() {
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						g := int(i) % len(gws)
						rc := client(fmt.Sprintf("c%d", i))
						a, err := gws[g].LeaseFor(rc.ID.String())
						if err != nil {
							b.Error(err)
							return
						}
						rc.Addresses = append(rc.Addresses, netip.PrefixFrom(a, 32))
						cs[g].ClientUp(rc)
					}
				})
			}
			wg.Wait()
			for _, c := range cs {
				c.flush()
			}
		})
	}
}
