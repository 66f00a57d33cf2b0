//go:build race

package linkemu

// raceEnabled: the race detector slows the per-packet path several times,
// so throughput floors are reported but not asserted.
const raceEnabled = true
