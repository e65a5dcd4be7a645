// Package dataset defines how lemon reads a corpus of image-caption pairs with precomputed
// embeddings: a small Format interface that each input layout implements in its own subpackage
// (embdir for the clip-retrieval/LAION layout, embparquet for Parquet with list columns), and
// the Shard and Record types the pipeline passes around. datasettest is the conformance suite
// every format passes.
package dataset

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/storage"
)

// Options name the columns a format reads (empty names mean "detect"), and what it may read.
type Options struct {
	IDColumn      string `yaml:"id_column" json:"id_column,omitempty"`
	CaptionColumn string `yaml:"caption_column" json:"caption_column,omitempty"`
	ImageColumn   string `yaml:"image_column" json:"image_column,omitempty"` // embparquet: list<float> image embedding
	TextColumn    string `yaml:"text_column" json:"text_column,omitempty"`   // embparquet: list<float> text embedding
	// SplitColumn is read into Record.Split when set (for --reference-split).
	SplitColumn string `yaml:"split_column" json:"split_column,omitempty"`
	// AllowOutsidePaths lets a path CSV name images outside its own folder (pathcsv).
	AllowOutsidePaths bool `yaml:"allow_outside_paths" json:"allow_outside_paths,omitempty"`
}

// IDColumns and CaptionColumns are the names tried, in order, when none is given.
var (
	IDColumns      = []string{"key", "uid", "id"}
	CaptionColumns = []string{"caption", "text"}
)

// Shard is one unit of input: a set of files holding rows [Offset, Offset+Rows) of the dataset.
type Shard struct {
	Format string            `json:"format"`
	Index  int               `json:"index"`  // shard number, in dataset order
	Offset int64             `json:"offset"` // dataset position of the shard's first row
	Rows   int64             `json:"rows"`
	Dim    int               `json:"dim"`
	Files  map[string]string `json:"files"` // role ("image", "text", "metadata", "data") -> path
	Name   string            `json:"name"`  // a short name for messages and output files
}

// Record is one row as read, before validation. Its Image and Text are only valid during the
// emit call that receives them: readers may reuse the memory for later rows (copy to keep).
type Record struct {
	Index   int64  // row within the shard
	ID      string // "" if the row has none
	Caption string
	Image   []float32
	Text    []float32
	Err     string // a problem found while reading this row; the row goes to errors
	// Split is the row's value in the split column (Options.SplitColumn), when one is named.
	Split string
}

// Format is an input layout.
type Format interface {
	// Name is the format's name, as given to --input-format.
	Name() string
	// Detect reports whether path looks like this format.
	Detect(ctx context.Context, path string) bool
	// Plan lists the shards under path and checks what can be checked from headers alone
	// (file pairing, row counts, dimensions), with errors naming the file.
	Plan(ctx context.Context, path string, o Options) ([]Shard, error)
	// Read calls emit for every row of the shard, in order. File-level faults (truncated file,
	// row-count mismatch) are errors; per-row faults set Record.Err. A Record's vectors may be
	// reused once emit returns.
	Read(ctx context.Context, sh Shard, o Options, emit func(Record) error) error
	// Metadata returns the shard's metadata rows, in order, as Arrow record batches: what the
	// kept and rejected outputs carry.
	Metadata(ctx context.Context, sh Shard, o Options) (array.RecordReader, error)
}

var (
	mu      sync.Mutex
	formats = map[string]Format{}
)

// Register makes a format available by name. Formats call it from init.
func Register(f Format) {
	mu.Lock()
	defer mu.Unlock()
	formats[f.Name()] = f
}

// Get returns a registered format.
func Get(name string) (Format, error) {
	mu.Lock()
	defer mu.Unlock()
	f, ok := formats[name]
	if !ok {
		return nil, fmt.Errorf("unknown input format %q (known: %v)", name, namesLocked())
	}
	return f, nil
}

func namesLocked() []string {
	var n []string
	for k := range formats {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Open picks the format for path: the named one, or the first that detects it.
func Open(ctx context.Context, path, name string) (Format, error) {
	if name != "" && name != "auto" {
		return Get(name)
	}
	mu.Lock()
	names := namesLocked()
	mu.Unlock()
	for _, n := range names {
		f, _ := Get(n)
		if f.Detect(ctx, path) {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%s: not a dataset lemon can read: want a directory with img_emb/ and text_emb/ (clip-retrieval layout) or Parquet files with embedding columns (known formats: %v)", path, names)
}

// PickColumn returns the column to use: the configured one if set (it must exist), else the
// first of the candidates present.
func PickColumn(file string, have []string, configured string, candidates []string, what string) (string, error) {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	if configured != "" {
		if !set[configured] {
			return "", fmt.Errorf("%s: no %s column %q (columns: %v)", file, what, configured, have)
		}
		return configured, nil
	}
	for _, c := range candidates {
		if set[c] {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s: no %s column (looked for %v; columns: %v); name it with --%s-column", file, what, candidates, have, what)
}

func sortStrings(s []string) { sort.Strings(s) }

// ShardFiles lists a dataset's shard files, those with one of the extensions exts (".parquet",
// ".csv"; matched regardless of case): p itself if it names such a file, else the files with
// those extensions directly in directory p, sorted. Hidden names are skipped: they are other
// writers' unfinished files (storage.TempName).
func ShardFiles(ctx context.Context, p string, exts ...string) ([]string, error) {
	if Ext(p, exts...) != "" {
		if !storage.Exists(ctx, p) {
			return nil, fmt.Errorf("%s: no such file", p)
		}
		return []string{p}, nil
	}
	fs, err := listDir(ctx, p)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(fs, func(f string) bool { return Ext(f, exts...) == "" }), nil
}

// Ext returns the first of exts that name ends in, ignoring case, as name spells it; "" if none.
func Ext(name string, exts ...string) string {
	for _, e := range exts {
		if len(name) > len(e) && strings.EqualFold(name[len(name)-len(e):], e) {
			return name[len(name)-len(e):]
		}
	}
	return ""
}

// listDir lists the files directly in directory dir, sorted, without hidden names
// (storage.TempName).
func listDir(ctx context.Context, dir string) ([]string, error) {
	fs, err := storage.List(ctx, storage.Join(dir, "*"))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	fs = slices.DeleteFunc(fs, func(f string) bool { return strings.HasPrefix(storage.Base(f), ".") })
	sort.Strings(fs)
	return fs, nil
}

// planWorkers bounds how many files PlanShards plans at once: planning waits on storage
// (object-store round trips), not on the CPU.
const planWorkers = 16

// PlanShards plans one shard per file, several files at once, and returns the shards in file
// order with Index and Offset set; plan fills in the rest (Rows, Files, Name, ...). When files
// fail, the first in order says what is wrong and a count says how many more did.
func PlanShards(ctx context.Context, files []string, plan func(ctx context.Context, name string) (Shard, error)) ([]Shard, error) {
	shards := make([]Shard, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, planWorkers)
	for i, name := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			shards[i], errs[i] = plan(ctx, name)
		}()
	}
	wg.Wait()
	var first error
	broken := 0
	for _, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			broken++
		}
	}
	if broken > 1 {
		return nil, fmt.Errorf("%w (and %d more of the %d files cannot be read)", first, broken-1, len(files))
	}
	if first != nil {
		return nil, first
	}
	var offset int64
	for i := range shards {
		shards[i].Index, shards[i].Offset = i, offset
		offset += shards[i].Rows
	}
	return shards, nil
}

type notesKey struct{}

// WithNotes returns a context in which Notef calls note instead of printing.
func WithNotes(ctx context.Context, note func(msg string)) context.Context {
	return context.WithValue(ctx, notesKey{}, note)
}

// Notef tells the user something about the input that is not an error, such as files a format
// does not read: to the function WithNotes put in ctx, else on standard error.
func Notef(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if note, ok := ctx.Value(notesKey{}).(func(string)); ok {
		note(msg)
		return
	}
	fmt.Fprintln(os.Stderr, "lemon: "+msg)
}

// NoteUnread notes the files directly in directory dir that a format's Plan does not read
// (reads reports those it does), so that no file is left out without a word. dir is what Plan
// was given: a file the format reads has nothing to note. Hidden names are not mentioned: they
// are other writers' unfinished files.
func NoteUnread(ctx context.Context, format, dir string, reads func(path string) bool) error {
	if reads(dir) {
		return nil
	}
	fs, err := listDir(ctx, dir)
	if err != nil {
		return err
	}
	var names []string
	for _, f := range fs {
		if !reads(f) {
			names = append(names, storage.Base(f))
		}
	}
	if len(names) == 0 {
		return nil
	}
	const show = 5
	list := strings.Join(names[:min(len(names), show)], ", ")
	if len(names) > show {
		list += fmt.Sprintf(" and %d more", len(names)-show)
	}
	Notef(ctx, "%s: %d file(s) are not read (no part of the %s layout): %s", dir, len(names), format, list)
	return nil
}
