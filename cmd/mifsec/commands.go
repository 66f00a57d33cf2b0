package main

import "github.com/urfave/cli/v2"

// commands lists the subcommands of the binary, one file each.
func commands() []*cli.Command {
	return []*cli.Command{benchCommand(), connectCommand(), gatewayCommand(), labCommand(), staticCommand(), statusCommand()}
}
