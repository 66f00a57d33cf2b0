package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// versionText describes the build: the module version, the commit it was
// built from (vcs.revision, with its time and whether the tree had
// uncommitted changes) and the Go version. A version set with -ldflags
// "-X main.version=..." replaces the module's.
func versionText(bi *debug.BuildInfo, ok bool) string {
	if !ok {
		return version + " (no build information)"
	}
	v := bi.Main.Version
	if version != "dev" || v == "" || v == "(devel)" {
		v = version
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var parts []string
	if rev := settings["vcs.revision"]; rev != "" {
		commit := "commit " + rev
		if t := settings["vcs.time"]; t != "" {
			commit += " of " + t
		}
		if settings["vcs.modified"] == "true" {
			commit += ", with uncommitted changes"
		}
		parts = append(parts, commit)
	} else {
		parts = append(parts, "commit unknown: built without VCS information (-buildvcs=false, or outside a git checkout)")
	}
	parts = append(parts, bi.GoVersion)
	return v + " (" + strings.Join(parts, "; ") + ")"
}

// buildVersion is versionText of this binary.
func buildVersion() string { return versionText(debug.ReadBuildInfo()) }

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit it was built from and the Go version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, "mifsec", buildVersion())
			return nil
		},
	}
}
