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
// Each has one meaning, and the formats it applies to say so; the others ignore it.
type Options struct {
	IDColumn      string `yaml:"id_column" json:"id_column,omitempty"`
	CaptionColumn string `yaml:"caption_column" json:"caption_column,omitempty"`
	// ImageEmbeddingColumn and TextEmbeddingColumn are the list<float> embedding columns of
	// Parquet with embeddings (embparquet).
	ImageEmbeddingColumn string `yaml:"image_embedding_column" json:"image_embedding_column,omitempty"`
	TextEmbeddingColumn  string `yaml:"text_embedding_column" json:"text_embedding_column,omitempty"`
	// ImageBytesColumn is the encoded-image column of Parquet with images (img2parquet).
	ImageBytesColumn string `yaml:"image_bytes_column" json:"image_bytes_column,omitempty"`
	// ImagePathColumn is the image path column of a path CSV (pathcsv).
	ImagePathColumn string `yaml:"image_path_column" json:"image_path_column,omitempty"`
	// ImageExtension is the extension of the image member of webdataset samples (webdataset).
	ImageExtension string `yaml:"image_extension" json:"image_extension,omitempty"`
	// EmbeddingModel picks DataComp's embedding arrays: b32 (default) or l14 (datacomp).
	EmbeddingModel string `yaml:"embedding_model" json:"embedding_model,omitempty"`
	// ImageColumn and TextColumn are the deprecated --image-column and --text-column, which
	// meant a different option for each format: Resolve turns them into that option.
	ImageColumn string `yaml:"image_column" json:"image_column,omitempty"`
	TextColumn  string `yaml:"text_column" json:"text_column,omitempty"`
	// SplitColumn is read into Record.Split when set (for --reference-split).
	SplitColumn string `yaml:"split_column" json:"split_column,omitempty"`
	// AllowOutsidePaths lets a path CSV name images outside its own folder (pathcsv).
	AllowOutsidePaths bool `yaml:"allow_outside_paths" json:"allow_outside_paths,omitempty"`
}

// aliases are what the deprecated --image-column and --text-column mean for each format that
// had a use for them: the option each stands for there.
var aliases = map[string][2]string{
	"parquet":     {"image-embedding-column", "text-embedding-column"},
	"img2parquet": {"image-bytes-column", ""},
	"pathcsv":     {"image-path-column", ""},
	"webdataset":  {"image-extension", ""},
}

// Resolve returns o with the deprecated ImageColumn and TextColumn moved to the options they
// mean for the format named format, and a one-line note saying so ("" when neither is set).
// Where the format has no such option, or the new option is also set to something else, it
// is an error.
func (o Options) Resolve(format string) (Options, string, error) {
	var notes []string
	for i, old := range []*string{&o.ImageColumn, &o.TextColumn} {
		if *old == "" {
			continue
		}
		oldFlag := [2]string{"image-column", "text-column"}[i]
		name := aliases[format][i]
		if name == "" {
			return o, "", fmt.Errorf("--%s (deprecated) has no meaning for %s input; the options are --image-embedding-column and --text-embedding-column (Parquet with embeddings), --image-bytes-column (Parquet with images), --image-path-column (CSV of paths), --image-extension (webdataset), and --caption-column for captions", oldFlag, format)
		}
		target := map[string]*string{
			"image-embedding-column": &o.ImageEmbeddingColumn, "text-embedding-column": &o.TextEmbeddingColumn,
			"image-bytes-column": &o.ImageBytesColumn, "image-path-column": &o.ImagePathColumn, "image-extension": &o.ImageExtension,
		}[name]
		if *target != "" && *target != *old {
			return o, "", fmt.Errorf("--%s %q and --%s %q name the same thing; give only --%s", oldFlag, *old, name, *target, name)
		}
		*target, *old = *old, ""
		notes = append(notes, fmt.Sprintf("--%s is deprecated: for %s input it is --%s; use that", oldFlag, format, name))
	}
	return o, strings.Join(notes, "; "), nil
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
	if err := CheckExists(ctx, path); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s: not a dataset lemon can read: want embeddings (a clip-retrieval folder with img_emb/ and text_emb/, Parquet with embedding columns, DataComp Parquet with .npz beside it) or images and captions (webdataset tars, Parquet with an image column, a CSV of image paths); --input-format names one of %v", path, append(names, rawNames()...))
}

// CheckExists says "does not exist" when nothing is at path p (no file, no folder), and "is an
// empty folder" when a local folder is there but holds nothing.
func CheckExists(ctx context.Context, p string) error {
	switch {
	case storage.Exists(ctx, p):
		return nil
	case !storage.IsDir(ctx, p):
		return fmt.Errorf("%s does not exist", p)
	}
	if ents, err := os.ReadDir(p); storage.IsLocal(p) && err == nil && len(ents) == 0 {
		return fmt.Errorf("%s is an empty folder: no dataset files in it", p)
	}
	return nil
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

// ShardFilesUnder is ShardFiles at any depth: p itself if it names a file with one of exts,
// else every such file anywhere under directory p, sorted by path (a Hugging Face dataset root
// holds data/train-00000-of-00002.parquet). Hidden names, files or folders, are skipped.
func ShardFilesUnder(ctx context.Context, p string, exts ...string) ([]string, error) {
	if Ext(p, exts...) != "" {
		return ShardFiles(ctx, p, exts...)
	}
	fs, err := storage.Walk(ctx, p)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(fs, func(f string) bool { return Ext(f, exts...) == "" }), nil
}

// RelPath is file's path relative to root, the path a format's Plan was given: the file's base
// name when root is the file itself. Under a dataset root it tells apart files of one name in
// different folders (train/0.parquet, test/0.parquet).
func RelPath(root, file string) string {
	root, file = storage.Clean(root), storage.Clean(file)
	if rel, ok := strings.CutPrefix(file, strings.TrimSuffix(root, "/")+"/"); ok {
		return rel
	}
	return storage.Base(file)
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
	return noteUnread(ctx, format, dir, fs, reads)
}

// NoteUnreadUnder is NoteUnread for formats that find their files at any depth under dir
// (ShardFilesUnder): it notes the files under dir, named by their paths relative to it.
func NoteUnreadUnder(ctx context.Context, format, dir string, reads func(path string) bool) error {
	if reads(dir) {
		return nil
	}
	fs, err := storage.Walk(ctx, dir)
	if err != nil {
		return err
	}
	return noteUnread(ctx, format, dir, fs, reads)
}

func noteUnread(ctx context.Context, format, dir string, fs []string, reads func(path string) bool) error {
	var names []string
	for _, f := range fs {
		if !reads(f) {
			names = append(names, RelPath(dir, f))
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
