package scheduler

import "time"

// clockEpoch is the origin of the one clock of the multipath machinery.
var clockEpoch = time.Now()

// Now reads the clock every time given to a Scheduler is read from:
// monotonic nanoseconds since the process started. The pickers, the
// conductor's probes and samples, and the data plane's resequencers all
// use it, so that times taken in one place compare with times taken in
// another.
func Now() int64 { return int64(time.Since(clockEpoch)) }

// At converts t (a time.Time with its monotonic reading, as time.Now
// gives) to the clock Now reads.
func At(t time.Time) int64 { return int64(t.Sub(clockEpoch)) }
