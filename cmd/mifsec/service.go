package main

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/mif"
	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"
)

// Profiles by name: `mifsec up NAME` runs the command a profile's "mode"
// names (connect, gateway or static) with --config
// /etc/mifsec/NAME.yaml, in the foreground, as the systemd unit
// mifsec@NAME does; `mifsec down NAME` stops it through its control
// socket, found by the profile's "tun" key.

const (
	// defaultProfileDir holds the profiles `mifsec up NAME` reads.
	defaultProfileDir = "/etc/mifsec"
	// defaultTUN is the --tun default of connect, gateway and static.
	defaultTUN = "mifsec0"
	// unitName is the systemd template unit, one instance per profile.
	unitName = "mifsec@.service"
	// unitBinary is the program path the unit in the repository names;
	// `mifsec install` writes its own instead.
	unitBinary = "/usr/local/bin/mifsec"
)

//go:embed systemd/mifsec@.service
var unitFile string

func profileDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "profile-dir", Value: defaultProfileDir, EnvVars: []string{"MIFSEC_PROFILE_DIR"},
		Usage: "`DIR` holding the profiles, NAME.yaml each"}
}

// namedProfile is a profile found by its name.
type namedProfile struct {
	name, path string
	mode       string // the command it is for
	tun        string // its TUN device, whose control socket reaches it
}

// commandArgs returns the command's arguments and applies the flags
// given after them, which urfave/cli leaves unparsed: `mifsec status
// office --json`.
func commandArgs(c *cli.Context) ([]string, error) {
	var names []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			names = append(names, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			names = append(names, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		flag := slices.IndexFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), name) })
		if flag < 0 {
			return nil, fmt.Errorf("flag provided but not defined: %s", arg)
		}
		if !hasValue {
			if _, isBool := c.Command.Flags[flag].(*cli.BoolFlag); isBool {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				return nil, fmt.Errorf("flag needs an argument: %s", arg)
			}
		}
		if err := c.Set(name, value); err != nil {
			return nil, fmt.Errorf("%s: %w", arg, err)
		}
	}
	return names, nil
}

// argProfile finds the profile named by the command's one argument.
func argProfile(c *cli.Context) (*namedProfile, error) {
	args, err := commandArgs(c)
	if err != nil {
		return nil, err
	}
	if len(args) != 1 {
		return nil, fmt.Errorf("mifsec %s needs one profile NAME (%s/NAME.yaml)", c.Command.Name, c.String("profile-dir"))
	}
	return findProfile(c, args[0])
}

// findProfile finds the profile name in --profile-dir and reads its mode
// and tun keys; the command it is for checks the rest.
func findProfile(c *cli.Context, name string) (*namedProfile, error) {
	if err := checkProfileName(name); err != nil {
		return nil, err
	}
	p := &namedProfile{name: name, path: filepath.Join(c.String("profile-dir"), name+".yaml"), mode: "connect", tun: defaultTUN}
	if _, err := os.Stat(p.path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no profile %q: %s does not exist", name, p.path)
	}
	top, err := parseProfileYAML(p.path)
	if err != nil {
		return nil, err
	}
	if top == nil {
		return p, nil // an empty profile: connect with nothing set
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case modeKey:
			if p.mode, err = profileMode(v); err != nil {
				return nil, profileError(p.path, v.Line, k.Value, "%v", err)
			}
		case "tun":
			if v.Kind != yaml.ScalarNode {
				return nil, profileError(p.path, v.Line, k.Value, "want an interface name")
			}
			p.tun = v.Value
		}
	}
	return p, nil
}

// controlled refuses a profile whose instance has no control socket.
func (p *namedProfile) controlled() error {
	if p.mode == "static" {
		return fmt.Errorf("profile %s is a static tunnel, which has no control socket: stop it as you started it (Ctrl-C, or systemctl stop mifsec@%s)", p.name, p.name)
	}
	return nil
}

// checkProfileName refuses names that are no file name in the profile
// directory or no systemd instance name as they are.
func checkProfileName(name string) error {
	ok := name != "" && name[0] != '.' && name[0] != '-'
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.", r)) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("profile name %q: use letters, digits, '-', '_' and '.' (not first)", name)
	}
	return nil
}

func upCommand() *cli.Command {
	return &cli.Command{
		Name:      "up",
		Usage:     "run the profile NAME (/etc/mifsec/NAME.yaml) in the foreground",
		ArgsUsage: "NAME",
		Description: `Runs the command the profile's "mode" key names (connect, the default, gateway or
static) with every setting from the profile, as 'mifsec MODE --config FILE' would,
until interrupted or stopped with 'mifsec down NAME'. The systemd unit mifsec@NAME
runs it; 'systemctl start mifsec@NAME' keeps it running in the background.`,
		Flags: []cli.Flag{profileDirFlag()},
		Action: func(c *cli.Context) error {
			p, err := argProfile(c)
			if err != nil {
				return err
			}
			slog.Info("profile", "name", p.name, "file", p.path, "mode", p.mode)
			return c.App.RunContext(c.Context, []string{c.App.Name, "--log-level", c.String("log-level"), p.mode, "--config", p.path})
		},
	}
}

func downCommand() *cli.Command {
	return &cli.Command{
		Name:      "down",
		Usage:     "stop the running profile NAME as Ctrl-C would (the IKE SA deleted, device and DNS restored)",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{
			profileDirFlag(),
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "wait up to `DURATION` for the instance to exit"},
		},
		Action: func(c *cli.Context) error {
			p, err := argProfile(c)
			if err != nil {
				return err
			}
			if err := p.controlled(); err != nil {
				return err
			}
			sock := mif.ControlSocket(p.tun)
			if _, err := mif.ReadSummary(sock); err != nil {
				return fmt.Errorf("profile %s is not running: nothing answers on %s (its TUN %s)", p.name, sock, p.tun)
			}
			if err := mif.Stop(sock, c.Duration("timeout")); err != nil {
				return fmt.Errorf("profile %s: %w", p.name, err)
			}
			fmt.Printf("%s stopped\n", p.name)
			return nil
		},
	}
}

// runningInstances returns the status of every instance whose control
// socket answers, by TUN name, as read reads it.
func runningInstances(read func(path string) (json.RawMessage, error)) (map[string]json.RawMessage, error) {
	socks, err := filepath.Glob(filepath.Join(mif.ControlDir, "*.sock"))
	if err != nil {
		return nil, err
	}
	running := map[string]json.RawMessage{}
	for _, s := range socks {
		if raw, err := read(s); err == nil {
			running[strings.TrimSuffix(filepath.Base(s), ".sock")] = raw
		}
	}
	return running, nil
}

// instanceStatuses finds the instances `mifsec status` shows: the
// profile's given as the argument, the one on --tun, or else every
// running one; with --summary, without a gateway's list of clients.
func instanceStatuses(c *cli.Context) (map[string]json.RawMessage, error) {
	read := mif.ReadStatus
	if c.Bool("summary") {
		read = mif.ReadSummary
	}
	args, err := commandArgs(c)
	if err != nil {
		return nil, err
	}
	switch {
	case len(args) > 1:
		return nil, fmt.Errorf("mifsec status takes at most one profile NAME")
	case len(args) == 1 && c.IsSet("tun"):
		return nil, fmt.Errorf("give a profile NAME or --tun, not both")
	case len(args) == 1:
		p, err := findProfile(c, args[0])
		if err != nil {
			return nil, err
		}
		if err := p.controlled(); err != nil {
			return nil, err
		}
		raw, err := read(mif.ControlSocket(p.tun))
		if err != nil {
			return nil, fmt.Errorf("profile %s is not running: %w", p.name, err)
		}
		return map[string]json.RawMessage{p.tun: raw}, nil
	case c.IsSet("tun"):
		raw, err := read(mif.ControlSocket(c.String("tun")))
		if err != nil {
			return nil, err
		}
		return map[string]json.RawMessage{c.String("tun"): raw}, nil
	}
	running, err := runningInstances(read)
	if err == nil && len(running) == 0 {
		err = fmt.Errorf("no mifsec instance is running (no control socket in %s answers)", mif.ControlDir)
	}
	return running, err
}

// printInstances prints the status of each instance, as JSON (one
// object, or a list of {"tun", "status"} for several) or as text.
func printInstances(running map[string]json.RawMessage, asJSON bool) error {
	tuns := make([]string, 0, len(running))
	for tun := range running {
		tuns = append(tuns, tun)
	}
	slices.Sort(tuns)
	if asJSON {
		var out []byte
		var err error
		if len(tuns) == 1 {
			out, err = json.MarshalIndent(running[tuns[0]], "", "  ")
		} else {
			type entry struct {
				TUN    string          `json:"tun"`
				Status json.RawMessage `json:"status"`
			}
			var list []entry
			for _, tun := range tuns {
				list = append(list, entry{tun, running[tun]})
			}
			out, err = json.MarshalIndent(list, "", "  ")
		}
		if err != nil {
			return err
		}
		fmt.Println(string(out))
		return nil
	}
	for i, tun := range tuns {
		if len(tuns) > 1 {
			if i > 0 {
				fmt.Println()
			}
			fmt.Printf("[%s]\n", tun)
		}
		if err := printInstanceStatus(running[tun]); err != nil {
			return fmt.Errorf("%s: %w", tun, err)
		}
	}
	return nil
}

// printInstanceStatus prints the status of a client or a gateway.
func printInstanceStatus(raw json.RawMessage) error {
	var role struct{ Role string }
	json.Unmarshal(raw, &role)
	switch role.Role {
	case "peer":
		var st mif.PeerStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		printPeerStatus(st)
	case "gateway":
		var st mif.GatewayStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		printGatewayStatus(st)
	default:
		var st mif.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		printStatus(st)
	}
	return nil
}

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "install the systemd unit " + unitName + " (one instance per profile: systemctl enable --now mifsec@NAME)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "prefix", Value: "/", Usage: "install under `DIR` instead of the root"},
			&cli.StringFlag{Name: "bin", Usage: "the mifsec `PATH` the unit runs (default: this program)"},
		},
		Action: func(c *cli.Context) error {
			bin := c.String("bin")
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding this program: %w (give --bin)", err)
				}
				bin = exe
			}
			if !filepath.IsAbs(bin) || strings.ContainsAny(bin, " \t\n\"'\\%$") {
				return fmt.Errorf("--bin %q: the unit needs an absolute path without spaces, quotes, '%%' or '$'", bin)
			}
			unit := strings.ReplaceAll(unitFile, unitBinary+" ", bin+" ")
			unitDir := filepath.Join(c.String("prefix"), "etc/systemd/system")
			profiles := filepath.Join(c.String("prefix"), defaultProfileDir)
			if err := os.MkdirAll(unitDir, 0o755); err != nil {
				return err
			}
			if err := os.MkdirAll(profiles, 0o700); err != nil {
				return err
			}
			path := filepath.Join(unitDir, unitName)
			if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
				return err
			}
			fmt.Printf("wrote %s (runs %s up NAME)\n", path, bin)
			fmt.Printf("next: write a profile %s/NAME.yaml (mode 600), then\n  systemctl daemon-reload\n  systemctl enable --now mifsec@NAME\n", profiles)
			return nil
		},
	}
}
