package cli

import (
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// Permute reorders args (args[0] is the program name) so that every flag comes
// before the arguments, as GNU tools accept them: `detect config.json --info`
// is `detect --info config.json`. "--" ends the flags; what follows it stays an
// argument, in order. A flag that takes a value keeps the next word as its
// value ("-o FILE") unless it is written "--flag=value". An app with
// subcommands is left to urfave.
func Permute(app *ucli.App, args []string) []string {
	if len(args) < 2 || len(app.Commands) > 0 {
		return args // subcommands parse their own flags
	}
	takesValue := map[string]bool{}
	for _, f := range app.Flags {
		_, isBool := f.(*ucli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	flags := []string{args[0]}
	var rest []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			rest = append(rest, args[i+1:]...)
			i = len(args)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 {
		return flags
	}
	return append(append(flags, "--"), rest...)
}

// StageArgs are the flags given on the command line, in their long names and
// --name=value form, then the arguments: what a stage record says ran.
// Arguments that name existing files are made absolute.
func StageArgs(c *ucli.Context) []string {
	var out []string
	for _, f := range c.App.Flags {
		name := f.Names()[0]
		if !c.IsSet(name) {
			continue
		}
		switch f.(type) {
		case *ucli.StringSliceFlag:
			for _, v := range c.StringSlice(name) {
				out = append(out, "--"+name+"="+v)
			}
		case *ucli.BoolFlag:
			if c.Bool(name) {
				out = append(out, "--"+name)
			} else {
				out = append(out, "--"+name+"=false")
			}
		default:
			out = append(out, "--"+name+"="+fmtValue(c.Value(name)))
		}
	}
	for _, a := range c.Args().Slice() {
		out = append(out, absIfExists(a))
	}
	return out
}
