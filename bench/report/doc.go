// Package report owns what a run writes: the throughput report
// (ThroughputReport: rows per peer, mifsec's ratios, the table and the
// JSON) and the scenario report (ScenarioReport: per-uplink samples, the
// traffic's results, the probe stream's summary, interruptions and stalls
// per event, the ranking and single-link ratios, the summary text, the
// JSON and the PNG plots), with the machine they were measured on. It
// computes from measurements handed to it and runs nothing; bench fills
// the rows.
package report
