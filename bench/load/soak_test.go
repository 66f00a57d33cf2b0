package load

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/testenv"
)

// TestSoakShort is `mifsec bench soak` in half a minute: ten clients that
// rekey every few seconds, a flapping link and churn. No echo may be lost
// outside the flaps, and once every client left the gateway holds no
// client, SA or lease.
func TestSoakShort(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := RunSoak(ctx, SoakConfig{Binary: testenv.MifsecBinary(t), Clients: 10, ChurnClients: 2, Duration: 30 * time.Second,
		ChildRekey: 3 * time.Second, IKERekey: 8 * time.Second, FlapEvery: 9 * time.Second, FlapFor: time.Second,
		ChurnEvery: 6 * time.Second, SampleEvery: time.Second, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log("\n" + rep.Summary())
	if rep.Leaked() {
		t.Errorf("the gateway kept %d clients, %d inbound SAs and %d leases of clients that left", rep.LeftClients, rep.LeftInboundSAs, rep.LeftLeases)
	}
	if rep.EchoesSent < 200 {
		t.Errorf("only %d echoes sent", rep.EchoesSent)
	}
	// Rekeys are make-before-break: they cost nothing. One echo is
	// allowed for a loaded host.
	if rep.EchoesLostOutside > 1 {
		t.Errorf("%d echoes lost outside the link flaps (by second of the run: %v)", rep.EchoesLostOutside, rep.LostOutsideBySecond)
	}
	if len(rep.Flaps) < 2 || rep.Churns < 3 || rep.ChurnFailures != 0 {
		t.Errorf("%d flaps, %d churn rounds (%d failed): the soak did not do what it should", len(rep.Flaps), rep.Churns, rep.ChurnFailures)
	}
	if rep.ChildRekeys == 0 || rep.IKERekeys == 0 {
		t.Errorf("the gateway counted %d Child SA and %d IKE SA rekeys", rep.ChildRekeys, rep.IKERekeys)
	}
	if n := len(rep.Samples); n < 10 || rep.Samples[n-1].Goroutines > rep.Samples[0].Goroutines+5 {
		t.Errorf("%d samples; goroutines %d at the start, %d at the end", n, rep.Samples[0].Goroutines, rep.Samples[n-1].Goroutines)
	}
}
