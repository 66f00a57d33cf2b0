package netmon

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: a monitor's Close stops its
// loop and the netlink subscriptions' receivers.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
