package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mifsec/mifsec/bench/peers"
	"github.com/mifsec/mifsec/bench/report"
)

// optionalPeer is a peer whose failures are reported as skips.
type optionalPeer interface{ Optional() bool }

// peerOutcome is what the runner records in every peer's row, whatever the
// run measured: the peer's version, the wall-clock time, and why it was
// skipped or what went wrong.
type peerOutcome struct {
	version   string
	wallClock float64
	skipped   string
	errors    []string
}

// peerRunner is the one loop of both runs: for each peer in turn, prepare
// it, build its network, bring it up and measure it, tear it down, and
// record the outcome; a skipped or optional peer is reported, not an error.
// P is the peer type, N the network each peer gets (its Close runs after
// the peer's Teardown), R the report's row.
type peerRunner[P peers.Lifecycle, N interface{ Close() error }, R any] struct {
	// what names the run in the error of an interrupted one.
	what      string
	keepGoing bool
	log       io.Writer
	// row starts a peer's row before anything runs.
	row func(P) R
	// build creates the peer's network (after Prepare).
	build func(context.Context, P) (N, error)
	// measure brings the peer up on the network and measures it into the
	// row; it returns before the peer is torn down.
	measure func(context.Context, P, N, *R) error
	// record stores the outcome in the row.
	record func(*R, peerOutcome)
}

// run measures every peer in turn and returns their rows. The rows hold
// what was measured even when the error is not nil (a peer failed, or ctx
// ended).
func (r peerRunner[P, N, R]) run(ctx context.Context, peers []P) ([]R, error) {
	var rows []R
	var failures []error
	for _, peer := range peers {
		row, err := r.runOne(ctx, peer)
		rows = append(rows, row)
		if ctx.Err() != nil {
			return rows, fmt.Errorf("%s interrupted during %s: %w", r.what, peer.Name(), ctx.Err())
		}
		if err != nil {
			failures = append(failures, fmt.Errorf("%s: %w", peer.Name(), err))
			if !r.keepGoing {
				break
			}
		}
	}
	return rows, errors.Join(failures...)
}

// runOne measures one peer; the error is nil for a skipped peer.
func (r peerRunner[P, N, R]) runOne(ctx context.Context, peer P) (R, error) {
	start := time.Now()
	row := r.row(peer)
	err := r.lifecycle(ctx, peer, &row)
	outcome := peerOutcome{version: peer.Version(), wallClock: report.RoundTo(time.Since(start).Seconds(), 1)}
	err = r.judge(ctx, peer, err, &outcome)
	r.record(&row, outcome)
	return row, err
}

// judge sorts the peer's error into the outcome: interrupted, skipped (a
// *SkipError, or any failure of an optional peer) or failed. The error it
// returns is nil for a skipped peer.
func (r peerRunner[P, N, R]) judge(ctx context.Context, peer P, err error, outcome *peerOutcome) error {
	if ctx.Err() != nil {
		outcome.errors = append(outcome.errors, "interrupted: "+ctx.Err().Error())
		return err
	}
	if err == nil {
		return nil
	}
	reason, skipped := peers.SkipReason(err)
	if optional, ok := any(peer).(optionalPeer); ok && optional.Optional() && !skipped {
		reason, skipped = err.Error(), true
	}
	if skipped {
		outcome.skipped = reason
		fmt.Fprintf(r.log, "%s: skipped: %s\n", peer.Name(), reason)
		return nil
	}
	outcome.errors = append(outcome.errors, err.Error())
	fmt.Fprintf(r.log, "%s: failed: %v\n", peer.Name(), err)
	return err
}

// lifecycle prepares the peer, builds its network, measures, and tears the
// peer and then its network down.
func (r peerRunner[P, N, R]) lifecycle(ctx context.Context, peer P, row *R) (err error) {
	if err := peer.Prepare(ctx); err != nil {
		return err
	}
	network, err := r.build(ctx, peer)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, peer.Teardown(), network.Close())
	}()
	return r.measure(ctx, peer, network, row)
}
