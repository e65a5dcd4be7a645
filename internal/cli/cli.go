// Package cli holds what lemon's subcommands share: the error type for command-line mistakes
// (the command exits with status 2 for it, as for flag errors), flag parsing that treats -h as
// success, and the flag listing their help texts end with.
package cli

import (
	"errors"
	"flag"
	"fmt"
)

// UsageError is a mistake in the command line.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// Parse parses args into fs. help is true when -h was given (fs.Usage has printed the help);
// a bad flag or a stray argument is a UsageError.
func Parse(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, UsageError{err}
	}
	if fs.NArg() > 0 {
		return false, Usagef("unexpected arguments %q (flags start with --)", fs.Args())
	}
	return false, nil
}

// PrintFlags lists the named flags of fs (all of them, sorted, when names is nil) with their
// usage and any default that is not a zero value.
func PrintFlags(fs *flag.FlagSet, names []string) {
	if names == nil {
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	}
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil {
			continue
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(fs.Output(), "  --%s\n        %s%s\n", n, f.Usage, def)
	}
}
