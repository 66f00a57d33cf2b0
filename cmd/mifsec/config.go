package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"
)

// A profile (--config FILE) is a YAML mapping from flag names to values:
// every flag of the command except --config itself, required ones
// included, and "mode", the command it is for. A value on the command
// line wins over the file's. Unknown keys and values of the wrong kind
// are refused with the file, line and key named.

// profileSetting is one key of a profile.
type profileSetting struct {
	key    string
	line   int
	values []string // one, or a list's items
	used   bool     // set from the file, not overridden on the command line
}

// profile is a parsed --config file.
type profile struct {
	path     string
	settings []profileSetting
}

// profileError names where in the file a setting is wrong.
func profileError(path string, line int, key, format string, args ...any) error {
	if key == "" {
		return fmt.Errorf("%s:%d: %s", path, line, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s:%d: %s: %s", path, line, key, fmt.Sprintf(format, args...))
}

// flagKind is what a flag's values are, from the value it holds.
type flagKind int

const (
	kindString flagKind = iota
	kindInt
	kindBool
	kindDuration
	kindList
)

// profileKeys maps each flag name a profile may set to its kind.
func profileKeys(c *cli.Context, flags []cli.Flag) map[string]flagKind {
	keys := map[string]flagKind{}
	for _, f := range flags {
		for _, name := range f.Names() {
			if name == "config" || name == "help" || name == "h" {
				continue
			}
			kind := kindString
			switch c.Value(f.Names()[0]).(type) {
			case int, int64, uint, uint64:
				kind = kindInt
			case bool:
				kind = kindBool
			case time.Duration:
				kind = kindDuration
			case cli.StringSlice, cli.IntSlice, cli.Int64Slice, cli.Float64Slice, cli.UintSlice, cli.Uint64Slice:
				kind = kindList
			}
			keys[name] = kind
		}
	}
	return keys
}

// modeKey is the profile key that names the command the profile is for
// (`mifsec up` runs it): connect, gateway, peer or static; connect when
// absent.
const modeKey = "mode"

// profileModes are the commands a profile may be for.
var profileModes = []string{"connect", "gateway", "peer", "static"}

// profileMode checks a mode key's value.
func profileMode(v *yaml.Node) (string, error) {
	if v.Kind != yaml.ScalarNode || !slices.Contains(profileModes, v.Value) {
		return "", fmt.Errorf("%q is not %s", v.Value, strings.Join(profileModes, ", "))
	}
	return v.Value, nil
}

// parseProfileYAML reads path and returns its top-level mapping, nil for
// an empty file.
func parseProfileYAML(path string) (*yaml.Node, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("--config: %s does not exist", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		// yaml.v3 says "yaml: line N: ..."
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if n, text, ok := strings.Cut(rest, ": "); ok {
				return nil, fmt.Errorf("%s:%s: %s", path, n, text)
			}
		}
		return nil, fmt.Errorf("%s: %s", path, msg)
	}
	if len(doc.Content) == 0 {
		return nil, nil // an empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, profileError(path, top.Line, "", "want a mapping of flag names to values (like 'gateway: vpn.example.net')")
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Kind != yaml.ScalarNode {
			return nil, profileError(path, top.Content[i].Line, "", "a key must be a flag name")
		}
	}
	return top, nil
}

// readProfile parses path against the keys command has.
func readProfile(path, command string, keys map[string]flagKind) (*profile, error) {
	top, err := parseProfileYAML(path)
	if err != nil {
		return nil, err
	}
	p := &profile{path: path}
	if top == nil {
		return p, nil
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		key := k.Value
		kind, ok := keys[key]
		if !ok && key != modeKey {
			return nil, profileError(path, k.Line, key, "unknown key%s", suggestKey(key, keys))
		}
		if first, dup := seen[key]; dup {
			return nil, profileError(path, k.Line, key, "given again (first on line %d)", first)
		}
		seen[key] = k.Line
		if key == modeKey {
			mode, err := profileMode(v)
			if err != nil {
				return nil, profileError(path, v.Line, key, "%v", err)
			}
			if mode != command {
				return nil, profileError(path, v.Line, key, "the profile is for mifsec %s, not mifsec %s", mode, command)
			}
			continue
		}
		values, err := profileValues(v, kind)
		if err != nil {
			return nil, profileError(path, v.Line, key, "%v", err)
		}
		p.settings = append(p.settings, profileSetting{key: key, line: k.Line, values: values})
	}
	return p, nil
}

// profileValues checks a value node against the flag's kind.
func profileValues(v *yaml.Node, kind flagKind) ([]string, error) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	var items []*yaml.Node
	switch {
	case v.Kind == yaml.SequenceNode && kind == kindList:
		items = v.Content
	case v.Kind == yaml.SequenceNode:
		return nil, errors.New("a list where one value belongs")
	case v.Kind == yaml.MappingNode:
		return nil, errors.New("a mapping where a value belongs")
	default:
		items = []*yaml.Node{v}
	}
	var out []string
	for _, it := range items {
		if it.Kind != yaml.ScalarNode {
			return nil, errors.New("a list item must be a single value")
		}
		if it.Tag == "!!null" {
			return nil, errors.New("no value")
		}
		s := it.Value
		var err error
		switch kind {
		case kindInt:
			_, err = strconv.ParseInt(s, 0, 64)
			if err != nil {
				err = fmt.Errorf("%q is not a whole number", s)
			}
		case kindBool:
			if _, perr := strconv.ParseBool(s); perr != nil {
				err = fmt.Errorf("%q is not true or false", s)
			}
		case kindDuration:
			if _, perr := time.ParseDuration(s); perr != nil {
				err = fmt.Errorf("%q is not a duration (like 30s, 5m, 1h)", s)
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// suggestKey names the flag a mistyped key probably meant.
func suggestKey(key string, keys map[string]flagKind) string {
	norm := strings.ToLower(strings.NewReplacer("_", "-", " ", "-").Replace(key))
	if _, ok := keys[norm]; ok {
		return fmt.Sprintf(" (did you mean %q?)", norm)
	}
	norm = strings.TrimPrefix(norm, "--")
	if _, ok := keys[norm]; ok {
		return fmt.Sprintf(" (did you mean %q?)", norm)
	}
	return ""
}

// apply sets every setting the command line left unset.
func (p *profile) apply(c *cli.Context) error {
	for i := range p.settings {
		s := &p.settings[i]
		if c.IsSet(s.key) {
			continue
		}
		s.used = true
		for _, v := range s.values {
			if err := c.Set(s.key, v); err != nil {
				return profileError(p.path, s.line, s.key, "%v", err)
			}
		}
	}
	return nil
}

// where returns the line of key in the profile, if the profile set it and
// the command line did not.
func (p *profile) where(key string) (int, bool) {
	for _, s := range p.settings {
		if s.key == key && s.used {
			return s.line, true
		}
	}
	return 0, false
}

// commandSetup is what withSetup adds to a command.
type commandSetup struct {
	needsRoot bool
	// tunFlag names the flag that holds the instance's TUN name, checked
	// for an instance running already; "" skips the check.
	tunFlag string
}

// withSetup prepares cmd to run: a non-root user is told root is needed
// before anything else happens; --config (when the command has it) is
// read before the required flags are checked, so a profile can hold
// them; a second instance on a TUN name in use is refused. Errors of the
// action that name a flag set by the profile ("--key: ...") gain the
// file and line. It replaces cmd.Before.
func withSetup(cmd *cli.Command, setup commandSetup) *cli.Command {
	var required []string
	hasConfig := false
	for _, f := range cmd.Flags {
		if f.Names()[0] == "config" {
			hasConfig = true
		}
		if clearRequired(f) {
			required = append(required, f.Names()[0])
		}
	}
	var prof *profile
	cmd.Before = func(c *cli.Context) error {
		prof = nil
		if c.Args().Present() && cmd.Command(c.Args().First()) != nil {
			return nil // a subcommand (gateway profile) runs: the setup is not its
		}
		if setup.needsRoot {
			if err := requireRoot(cmd.Name); err != nil {
				return err
			}
		}
		if path := c.String("config"); hasConfig && path != "" {
			p, err := readProfile(path, cmd.Name, profileKeys(c, cmd.Flags))
			if err != nil {
				return err
			}
			if err := p.apply(c); err != nil {
				return err
			}
			prof = p
		}
		var missing []string
		for _, name := range required {
			if !c.IsSet(name) {
				missing = append(missing, "--"+name)
			}
		}
		if len(missing) > 0 {
			where := ""
			if prof != nil {
				where = " (on the command line or as keys in " + prof.path + ")"
			}
			return fmt.Errorf("mifsec %s needs %s%s; see mifsec %s --help", cmd.Name, strings.Join(missing, ", "), where, cmd.Name)
		}
		if setup.tunFlag != "" {
			if err := refuseRunning(c.String(setup.tunFlag)); err != nil {
				return err
			}
		}
		return nil
	}
	if action := cmd.Action; action != nil {
		cmd.Action = func(c *cli.Context) error {
			err := action(c)
			if err == nil || prof == nil {
				return err
			}
			msg := err.Error()
			if strings.HasPrefix(msg, "--") {
				key, _, _ := strings.Cut(strings.TrimPrefix(msg, "--"), ":")
				key, _, _ = strings.Cut(key, " ")
				if line, ok := prof.where(key); ok {
					return fmt.Errorf("%s:%d: %w", prof.path, line, err)
				}
			}
			return err
		}
	}
	return cmd
}

// clearRequired makes a required flag optional for the flag parser (the
// command's Before checks it once the profile is read) and reports
// whether it was required. Flags are cli's or altsrc's wrappers of them,
// all with a Required field.
func clearRequired(f cli.Flag) bool {
	r, ok := f.(cli.RequiredFlag)
	if !ok || !r.IsRequired() {
		return false
	}
	v := reflect.ValueOf(f)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	field := v.FieldByName("Required")
	if !field.IsValid() || !field.CanSet() || field.Kind() != reflect.Bool {
		return false // left to the flag parser
	}
	field.SetBool(false)
	return true
}
