// Package cliflag defines the command-line flags of dispenserd and
// dispenserctl that default to environment variables holding secrets
// (API keys, connection strings with passwords): their help text says
// whether the variable is set, never what it holds.
package cliflag

import (
	"os"

	"github.com/spf13/pflag"
)

// Secret defines a string flag whose default is the environment variable
// env, else def. --help shows "$ENV (set)" when env is set, else def
// (which must hold no secret).
func Secret(f *pflag.FlagSet, p *string, name, env, def, usage string) {
	v, set := os.LookupEnv(env)
	shown := def
	if set && v != "" {
		shown = "$" + env + " (set)"
	} else {
		v = def
	}
	f.StringVar(p, name, v, usage+" ["+env+"]")
	f.Lookup(name).DefValue = shown
}
