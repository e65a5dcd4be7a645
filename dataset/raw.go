package dataset

import (
	"context"
	"fmt"
)

// RawRecord is one image-caption pair before embedding.
type RawRecord struct {
	Index   int64 // row within the shard
	ID      string
	Caption string
	Image   []byte // the encoded image, as stored
	Err     string // a problem found while reading this row; the row goes to errors
	Split   string // the row's value in the split column (Options.SplitColumn), when one is named
}

// RawFormat is an input layout of images and captions (webdataset tars, img2dataset Parquet,
// a CSV of image paths). Shards from Plan have Dim 0: dimensions come from the encoder.
type RawFormat interface {
	Name() string
	Detect(ctx context.Context, path string) bool
	Plan(ctx context.Context, path string, o Options) ([]Shard, error)
	// ReadRaw calls emit for every row of the shard, in order; per-row faults set Err.
	ReadRaw(ctx context.Context, sh Shard, o Options, emit func(RawRecord) error) error
}

// Split is where a row ends up.
type Split int

const (
	Kept Split = iota
	Rejected
	Errors
)

func (s Split) String() string { return [...]string{"kept", "rejected", "errors"}[s] }

// Outcome is one row's fate, as a SplitWriter receives it.
type Outcome struct {
	Split              Split
	Dmm, Sn, Sm, Score float64 // for Kept and Rejected
	Reason             string  // for Errors
}

// SplitWriter is implemented by formats that write kept/, rejected/ and errors/ in their own
// layout (a webdataset input gives webdataset outputs). Formats without it get Parquet outputs
// built from their Metadata.
type SplitWriter interface {
	// WriteSplits writes shard sh's rows under outDir/kept, outDir/rejected and outDir/errors,
	// in input order, atomically; outcomes[i] is row i's fate (len == sh.Rows).
	WriteSplits(ctx context.Context, sh Shard, o Options, outDir string, outcomes []Outcome) error
}

// SplitLayout is implemented by embedding formats whose kept/, rejected/ and errors/ are
// datasets of their own format, embeddings included (a clip-retrieval folder's are
// clip-retrieval folders), so the next tool, or lemon, reads them as it read the input.
// Formats without it get their metadata rows as Parquet part files.
type SplitLayout interface {
	// SplitMetadataPath is where shard sh's metadata rows of split go under outDir: the
	// pipeline writes them there as Parquet, with the score columns or the reason.
	SplitMetadataPath(sh Shard, outDir string, split Split) string
	// WriteSplitEmbeddings writes the embeddings of shard sh's rows of each split beside their
	// metadata, in input order and the input's precision, each file atomically; outcomes[i]
	// is row i's fate (len == sh.Rows).
	WriteSplitEmbeddings(ctx context.Context, sh Shard, o Options, outDir string, outcomes []Outcome) error
}

var rawFormats = map[string]RawFormat{}

// RegisterRaw makes a raw format available by name.
func RegisterRaw(f RawFormat) {
	mu.Lock()
	defer mu.Unlock()
	rawFormats[f.Name()] = f
}

// GetRaw returns a registered raw format.
func GetRaw(name string) (RawFormat, error) {
	mu.Lock()
	defer mu.Unlock()
	f, ok := rawFormats[name]
	if !ok {
		return nil, fmt.Errorf("unknown raw input format %q", name)
	}
	return f, nil
}

// rawNames lists the raw formats' names, sorted.
func rawNames() []string {
	mu.Lock()
	defer mu.Unlock()
	var names []string
	for n := range rawFormats {
		names = append(names, n)
	}
	sortStrings(names)
	return names
}

// DetectRaw returns the raw format that recognises path, or nil.
func DetectRaw(ctx context.Context, path, name string) (RawFormat, error) {
	if name != "" && name != "auto" {
		return GetRaw(name)
	}
	for _, n := range rawNames() {
		f, _ := GetRaw(n)
		if f.Detect(ctx, path) {
			return f, nil
		}
	}
	return nil, nil
}
