// Package scheduler makes the data plane's pure decisions: which path each
// outbound packet takes (the single, offload, aggregate and redundant
// policies, and the traffic classes that choose a policy per packet), the
// per-path estimators that feed that choice (round trip, one-way delay,
// delivery rate, loss, the sender-side virtual queue), the failure
// detector that declares paths failed and recovered, and the receiver's
// resequencer.
//
// It does no I/O, starts no goroutines and is deterministic given its
// inputs, so every policy can be simulated and tested on synthetic paths
// (sim_test.go is a discrete-event simulator of whole sessions). Time is
// always an argument: instants are monotonic nanoseconds as int64 from the
// one clock Now reads (the conductor, the pickers and the data plane all
// read it), durations are time.Duration. It imports no other package of
// the project.
//
// Who calls what:
//
//   - The session conductor owns a Scheduler per peer: AddPath,
//     RemovePath; ProbeSent and ProbeReply for every probe, with the
//     engine's per-path transmit counters and the replier's receive
//     counters; Tick every few milliseconds; ProbeInterval to schedule the
//     next probe on each path. These serialise on a mutex.
//   - Outbound workers call a FallbackPicker or ClassPicker through the
//     Picker interfaces per packet (Classifier.Classify chooses the
//     policy from the inner header; Decide or Pick the paths). These take
//     no lock and allocate nothing.
//   - A receive side owns one Resequencer per SA.
package scheduler
