package main

import "github.com/urfave/cli/v2"

// commands lists the subcommands of the binary, one file each.
func commands() []*cli.Command {
	return []*cli.Command{
		benchCommand(),
		withSetup(connectCommand(), commandSetup{needsRoot: true, tunFlag: "tun"}),
		withSetup(gatewayCommand(), commandSetup{needsRoot: true, tunFlag: "tun"}),
		withSetup(labCommand(), commandSetup{needsRoot: true}),
		withSetup(peerCommand(), commandSetup{needsRoot: true, tunFlag: "tun"}),
		withSetup(staticCommand(), commandSetup{needsRoot: true, tunFlag: "tun"}),
		downCommand(),
		installCommand(),
		statusCommand(),
		upCommand(),
		versionCommand(),
	}
}
