package ike

import (
	"context"
	"sync"

	"github.com/mifsec/mifsec/ike/wire"
)

// keyPool holds ephemeral Diffie-Hellman key pairs generated ahead of
// time. The Responder's loop answers every IKE_SA_INIT; with a pair from
// the pool it does one scalar multiplication for the request (the shared
// secret) instead of two, and the pairs are made on other cores. Each
// pair is handed out once, as a pair made on the spot would be; one waits
// in the pool at most until the next IKE_SA_INIT of its group. A group's
// pairs are made only once a client used it: a gateway whose proposals
// offer five groups does not spend seconds of CPU at its start on pairs
// of groups (MODP-2048) no client may ask for. Without a running pool, or
// with its group's pairs used up, take makes one on the spot.
type keyPool struct {
	pairs map[uint16]chan KeyExchange
	// Set by fill, used by take on the Responder's loop: the context and
	// wait group of the goroutines that fill each group, started by the
	// group's first take.
	ctx     context.Context
	wg      *sync.WaitGroup
	started map[uint16]bool
}

// keyPoolSize is how many pairs of each group wait: a burst of new
// clients that large is answered without a key generation on the loop.
const keyPoolSize = 64

// newKeyPool makes a pool for the groups of specs (DH_NONE aside); nil
// for none.
func newKeyPool(size int, specs ...[]ProposalSpec) *keyPool {
	p := &keyPool{pairs: map[uint16]chan KeyExchange{}, started: map[uint16]bool{}}
	for _, list := range specs {
		for _, s := range list {
			for _, g := range s.DHGroups {
				if g != wire.DH_NONE && p.pairs[g] == nil {
					p.pairs[g] = make(chan KeyExchange, size)
				}
			}
		}
	}
	if len(p.pairs) == 0 {
		return nil
	}
	return p
}

// fill makes take start a goroutine that keeps its group's pairs coming
// (counted by wg) until ctx ends. Call it on the goroutine that calls
// take, before it does.
func (p *keyPool) fill(ctx context.Context, wg *sync.WaitGroup) {
	if p != nil {
		p.ctx, p.wg = ctx, wg
	}
}

// fillGroup keeps group g's pairs coming until p.ctx ends.
func (p *keyPool) fillGroup(g uint16) {
	pairs, ctx := p.pairs[g], p.ctx
	p.wg.Go(func() {
		for ctx.Err() == nil {
			k, err := NewKeyExchange(g)
			if err != nil {
				return // a group NewKeyExchange does not make: take reports it
			}
			k.Public() // an elliptic curve pair computes its public value once, here
			select {
			case pairs <- k:
			case <-ctx.Done():
			}
		}
	})
}

// take returns a new key pair of group, from the pool when it has one.
func (p *keyPool) take(group uint16) (KeyExchange, error) {
	if p != nil {
		select {
		case k := <-p.pairs[group]: // a nil channel (a group not pooled) is never ready
			return k, nil
		default:
		}
		if p.ctx != nil && p.pairs[group] != nil && !p.started[group] {
			p.started[group] = true
			p.fillGroup(group)
		}
	}
	return NewKeyExchange(group)
}
