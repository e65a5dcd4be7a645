package cli_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/internal/cli"
)

func newSet() *flag.FlagSet {
	fs := flag.NewFlagSet("lemon t", flag.ContinueOnError)
	fs.String("name", "x", "a name")
	fs.Int("n", 0, "a count")
	fs.String("image-column", "", "an image column")
	fs.Usage = func() { cli.PrintHelp(fs, "Usage: lemon t [flags]\n", nil) }
	return fs
}

// capture returns what f prints on standard output and standard error.
func capture(t *testing.T, f func()) (string, string) {
	t.Helper()
	var got [2][]byte
	var pipes [2]*os.File
	var done [2]chan struct{}
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pipes[i], done[i] = w, make(chan struct{})
		go func() { got[i], _ = io.ReadAll(r); close(done[i]) }()
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = pipes[0], pipes[1]
	f()
	os.Stdout, os.Stderr = oldOut, oldErr
	for i, w := range pipes {
		w.Close()
		<-done[i]
	}
	return string(got[0]), string(got[1])
}

func TestParse(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		fs := newSet()
		var help bool
		var err error
		out, errOut := capture(t, func() { help, err = cli.Parse(fs, []string{arg}) })
		if !help || err != nil || !strings.HasPrefix(out, "Usage: lemon t [flags]\n\nFlags:\n") || errOut != "" {
			t.Errorf("%s: help %v, err %v, stdout %q, stderr %q; want the help on stdout only", arg, help, err, out, errOut)
		}
	}
	var ue cli.UsageError
	fs := newSet()
	var err error
	out, errOut := capture(t, func() { _, err = cli.Parse(fs, []string{"--imge-column", "x"}) })
	if !errors.As(err, &ue) || err.Error() != "unknown flag --imge-column (did you mean --image-column?); see 'lemon t --help'" || out != "" || errOut != "" {
		t.Errorf("mistyped flag: err %q, stdout %q, stderr %q; want one line, a suggestion, a pointer to --help and nothing printed", err, out, errOut)
	}
	if _, err := cli.Parse(newSet(), []string{"--zzzzzz"}); err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("a flag like no other: err %v, want no suggestion", err)
	}
	if _, err := cli.Parse(newSet(), []string{"--n", "many"}); !errors.As(err, &ue) || !strings.Contains(err.Error(), `invalid value "many" for flag --n`) || !strings.Contains(err.Error(), "see 'lemon t --help'") {
		t.Errorf("bad value: err %v", err)
	}
	if _, err := cli.Parse(newSet(), []string{"--name", "y", "stray"}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "stray") {
		t.Errorf("stray argument: err %v, want a UsageError naming it", err)
	}
	fs = newSet()
	if help, err := cli.Parse(fs, []string{"--name", "y"}); help || err != nil || fs.Lookup("name").Value.String() != "y" {
		t.Errorf("good flags: help %v, err %v", help, err)
	}
	// A flag set whose output was directed elsewhere gets its help there.
	fs = newSet()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	if help, err := cli.Parse(fs, []string{"-h"}); !help || err != nil || !strings.HasPrefix(buf.String(), "Usage: lemon t") {
		t.Errorf("-h with output set: help %v, err %v, output %q", help, err, buf.String())
	}
}

func TestPrintHelp(t *testing.T) {
	fs := newSet()
	out := &bytes.Buffer{}
	fs.SetOutput(out)
	cli.PrintHelp(fs, "Usage: lemon t\n\nDoes t.\n", nil, cli.Group{Heading: "Naming", Flags: []string{"name"}})
	want := "Usage: lemon t\n\nDoes t.\n\nNaming:\n  --name\n        a name (default x)\n\nOther flags:\n  --image-column\n        an image column\n  --n\n        a count\n"
	if out.String() != want {
		t.Errorf("PrintHelp printed:\n%s\nwant:\n%s", out, want)
	}
	out.Reset()
	cli.PrintHelp(fs, "Usage: lemon t\n", func(n string) bool { return n != "n" })
	if got := out.String(); strings.Contains(got, "--n\n") || !strings.Contains(got, "\nFlags:\n  --image-column") {
		t.Errorf("PrintHelp with a filter printed:\n%s", got)
	}
}
