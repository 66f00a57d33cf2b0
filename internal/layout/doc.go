// Package layout has no code: its test checks the import rules of the
// project's rooms (the layout table of the README and the design card)
// on the real tree, with `go list`.
package layout
