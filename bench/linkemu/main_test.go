package linkemu

import (
	"fmt"
	"os"
	"testing"
)

// TestMain runs the tests the way the lab runs links: in a process with a
// raised priority (see PrioritizeProcess), when it may raise it.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		if err := PrioritizeProcess(threadNice); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(m.Run())
}
