package ike

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// initKeys derives a new IKE SA's keys (the Diffie-Hellman shared secret,
// SKEYSEED and its prf+) beside the responder's loop. The loop is the one
// goroutine that answers every client; with tens of thousands of clients
// coming in, the IKE_SA_INIT's scalar multiplication and key derivation
// were a fifth of its time (CPU profile of a 100,000-client run), which
// the other core can spend. The IKE_SA_INIT response does not depend on
// them (it carries the gateway's public value and nonce), so it leaves at
// once; the keys are first needed when the client's IKE_AUTH arrives, a
// round trip later. By then a worker has usually derived them; if not,
// the loop takes the job back and derives them itself (keysOf), so a
// backlog of workers never delays an IKE_AUTH more than deriving on the
// loop would.
type initKeys struct {
	// state is initQueued until a worker or the loop takes the job
	// (initTaken), then initDerived; initCancelled if the half-open SA
	// went before anyone took it, initAbandoned if it went while a
	// worker derived (who then wipes what it derived).
	state atomic.Int32
	done  chan struct{} // closed once keys or err is set by whoever took the job

	kex        KeyExchange
	peerPublic []byte
	suite      Suite
	ni, nr     []byte
	spiI, spiR uint64

	keys *ikeKeys
	err  error
}

const (
	initQueued int32 = iota
	initTaken
	initDerived
	initCancelled
	initAbandoned
)

func newInitKeys(kex KeyExchange, peerPublic []byte, suite Suite, ni, nr []byte, spiI, spiR uint64) *initKeys {
	return &initKeys{done: make(chan struct{}), kex: kex, peerPublic: peerPublic, suite: suite, ni: ni, nr: nr, spiI: spiI, spiR: spiR}
}

// take derives the keys if nobody took the job before; true if it did.
func (j *initKeys) take() bool {
	if !j.state.CompareAndSwap(initQueued, initTaken) {
		return false
	}
	j.derive()
	return true
}

// derive computes the shared secret and the keys of a job taken.
func (j *initKeys) derive() {
	shared, err := j.kex.SharedSecret(j.peerPublic)
	if err == nil {
		j.keys, err = deriveIKEKeys(j.suite, shared, j.ni, j.nr, j.spiI, j.spiR, false)
		clear(shared)
	}
	j.err = err
	j.kex, j.peerPublic = nil, nil // the private value goes with the pair
	if !j.state.CompareAndSwap(initTaken, initDerived) && j.keys != nil {
		j.keys.Wipe() // abandoned meanwhile: nobody will read them
	}
	close(j.done)
}

// result waits for the keys, deriving them here when no worker took the
// job yet.
func (j *initKeys) result() (*ikeKeys, error) {
	j.take()
	<-j.done
	return j.keys, j.err
}

// cancel gives up the job without waiting: a worker that did not take it
// skips it, one that holds it wipes what it derives, and keys derived
// already are wiped here.
func (j *initKeys) cancel() {
	switch {
	case j.state.CompareAndSwap(initQueued, initCancelled):
		j.kex, j.peerPublic = nil, nil
	case j.state.CompareAndSwap(initTaken, initAbandoned):
	case j.state.Load() == initDerived && j.keys != nil:
		j.keys.Wipe()
	}
}

// initKeyJobs is how many derivations may wait for a worker: a burst that
// large of IKE_SA_INIT requests is answered without one on the loop.
// Beyond it the loop leaves the job to itself (keysOf), as before.
const initKeyJobs = 1024

// initKeyWorkers runs a worker per CPU that takes jobs from the queue
// until ctx ends.
func initKeyWorkers(ctx context.Context, wg *sync.WaitGroup, jobs <-chan *initKeys) {
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				select {
				case j := <-jobs:
					j.take()
				case <-ctx.Done():
					return
				}
			}
		})
	}
}

// deriveBeside queues sa's key derivation for a worker; with the queue
// full (or no workers running) the loop derives the keys when they are
// first needed.
func (r *Responder) deriveBeside(sa *rSA, j *initKeys) {
	sa.half.pendingKeys = j
	select {
	case r.initJobs <- j:
	default:
	}
}

// keysOf gives sa its keys once they are derived: false, with the
// half-open SA removed, when the derivation failed (the client's public
// value was not one of the group's).
func (r *Responder) keysOf(sa *rSA) bool {
	if sa.half == nil || sa.half.pendingKeys == nil {
		return true
	}
	j := sa.half.pendingKeys
	sa.half.pendingKeys = nil
	keys, err := j.result()
	if err != nil {
		r.log.Debug("dropping an IKE SA whose Diffie-Hellman failed", "from", sa.from, "err", err)
		r.failures[FailInvalidSyntax]++
		r.leaveHalfOpen(sa)
		delete(r.sas, saKey{sa.spiI, sa.spiR})
		return false
	}
	sa.keys = keys
	return true
}

// wipe zeroes the IKE SA's keys and an EAP login's MSK, and gives up
// their derivation if it is still pending.
func (sa *rSA) wipe() {
	if sa.half != nil && sa.half.pendingKeys != nil {
		j := sa.half.pendingKeys
		sa.half.pendingKeys = nil
		j.cancel()
	}
	sa.wipeMSK()
	sa.ikeSA.wipe()
}
