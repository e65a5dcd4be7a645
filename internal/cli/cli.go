// Package cli holds what lemon's subcommands share, so they all behave alike: one help style
// (a usage text, then the flags under headings, on standard output, exit status 0), and one way
// to report a command-line mistake (a UsageError: one line naming it and pointing at --help,
// exit status 2), never the whole help after an error.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// UsageError is a mistake in the command line.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// Parse parses args into fs, whose name is the command as typed ("lemon score"; FlagSet.Init
// renames flag.CommandLine). help is true when -h or --help was given: fs.Usage has then
// printed the help on standard output (or on fs's output, if it was set to other than standard
// error). A bad flag or a stray argument is a UsageError of one
// line that points at the help; the help itself is not printed.
func Parse(fs *flag.FlagSet, args []string) (help bool, err error) {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {} // the flag package calls it after every error
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if out == os.Stderr { // the default: help goes to standard output
			fs.SetOutput(os.Stdout)
			defer fs.SetOutput(out)
		}
		fs.Usage()
		return true, nil
	case err != nil:
		return false, UsageError{fmt.Errorf("%s; see '%s --help'", explain(fs, err), fs.Name())}
	case fs.NArg() > 0:
		return false, Usagef("unexpected arguments %q (flags start with --); see '%s --help'", fs.Args(), fs.Name())
	}
	return false, nil
}

// explain rewords the flag package's errors as lemon writes flags (--name), and suggests the
// flag a mistyped one was likely meant to be.
func explain(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, "flag provided but not defined: -")
	if !ok {
		return strings.ReplaceAll(msg, "flag -", "flag --")
	}
	name = strings.TrimPrefix(name, "-")
	msg = "unknown flag --" + name
	if s := closest(fs, name); s != "" {
		msg += " (did you mean --" + s + "?)"
	}
	return msg
}

// closest is the flag of fs nearest to name, by edit distance, if it is near enough to be a
// likely typo.
func closest(fs *flag.FlagSet, name string) string {
	best, bestD := "", len(name)/3+1
	fs.VisitAll(func(f *flag.Flag) { // in name order: of equally near flags, the first wins
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Group is a heading and the flags listed under it.
type Group struct {
	Heading string
	Flags   []string
}

// PrintHelp prints a command's help in lemon's one style: text (which starts with the usage
// line "Usage: lemon ..."), then each group of flags under its heading. Flags of fs that no
// group lists are listed last under "Other flags:", unless only lists names (then the rest,
// such as Beam's runner flags, are left to the text). Call it from fs.Usage.
func PrintHelp(fs *flag.FlagSet, text string, only func(name string) bool, groups ...Group) {
	out := fs.Output()
	fmt.Fprint(out, strings.TrimRight(text, "\n")+"\n")
	listed := map[string]bool{}
	for _, g := range groups {
		fmt.Fprintf(out, "\n%s:\n", g.Heading)
		PrintFlags(fs, g.Flags)
		for _, n := range g.Flags {
			listed[n] = true
		}
	}
	var rest []string
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] && (only == nil || only(f.Name)) {
			rest = append(rest, f.Name)
		}
	})
	if len(rest) > 0 {
		heading := "Flags"
		if len(groups) > 0 {
			heading = "Other flags"
		}
		fmt.Fprintf(out, "\n%s:\n", heading)
		slices.Sort(rest)
		PrintFlags(fs, rest)
	}
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
