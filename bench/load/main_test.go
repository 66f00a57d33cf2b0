package load

import (
	"os"
	"testing"

	"github.com/mifsec/mifsec/internal/testenv"
)

// TestMain removes the mifsec binary the tests built (testenv.MifsecBinary).
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
