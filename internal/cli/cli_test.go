package cli_test

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/internal/cli"
)

func newSet() (*flag.FlagSet, *bytes.Buffer) {
	var out bytes.Buffer
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(&out)
	fs.String("name", "x", "a name")
	fs.Int("n", 0, "a count")
	return fs, &out
}

func TestParse(t *testing.T) {
	fs, _ := newSet()
	if help, err := cli.Parse(fs, []string{"-h"}); !help || err != nil {
		t.Errorf("-h: help %v, err %v; want help and no error", help, err)
	}
	var ue cli.UsageError
	fs, _ = newSet()
	if _, err := cli.Parse(fs, []string{"--nope"}); !errors.As(err, &ue) {
		t.Errorf("unknown flag: err %v, want a UsageError", err)
	}
	fs, _ = newSet()
	if _, err := cli.Parse(fs, []string{"--name", "y", "stray"}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "stray") {
		t.Errorf("stray argument: err %v, want a UsageError naming it", err)
	}
}

func TestPrintFlags(t *testing.T) {
	fs, out := newSet()
	cli.PrintFlags(fs, nil)
	got := out.String()
	if !strings.Contains(got, "--name\n        a name (default x)") || !strings.Contains(got, "--n\n        a count\n") {
		t.Errorf("PrintFlags printed:\n%s", got)
	}
}
