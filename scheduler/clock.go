package scheduler

import "time"

// clockEpoch is the origin of the process's monotonic clock.
var clockEpoch = time.Now()

// Now reads the clock every caller of a Scheduler or Resequencer passes
// instants of: monotonic nanoseconds since the process started. The
// conductor, the pickers and the data plane's resequencers all read this
// one clock, so their instants compare.
func Now() int64 { return int64(time.Since(clockEpoch)) }

// At is the instant of t on the clock Now reads.
func At(t time.Time) int64 { return int64(t.Sub(clockEpoch)) }
