// Package scheduler makes the data plane's pure decisions: which path each
// outbound packet takes, the per-path metric estimators that feed that choice,
// and the receiver's resequencer.
//
// It does no I/O, starts no goroutines and is deterministic given its inputs,
// so every policy can be simulated and tested on synthetic paths. It imports
// no other package of the project.
package scheduler
