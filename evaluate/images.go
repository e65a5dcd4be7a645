package evaluate

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"sort"
	"strings"

	// Decoders for the thumbnails.
	_ "image/gif"
	_ "image/png"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

// Names of columns that commonly hold images (img2dataset writes jpg/png/webp; Hugging Face
// writes image as struct<bytes, path>) or paths to them.
var imageColumns = []string{"image", "jpg", "jpeg", "png", "webp", "img", "image_bytes", "image_path", "img_path", "filepath", "file_path", "path", "file", "filename"}

const (
	thumbPixels  = 192      // longest side of a thumbnail
	maxImageSize = 64 << 20 // larger files are not read for a thumbnail
)

// imageKind says how a column holds images: "bytes", "path", or "" when it cannot.
func imageKind(t arrow.DataType) string {
	switch t.ID() {
	case arrow.BINARY, arrow.LARGE_BINARY:
		return "bytes"
	case arrow.STRING, arrow.LARGE_STRING:
		return "path"
	case arrow.STRUCT:
		st := t.(*arrow.StructType)
		for _, f := range st.Fields() {
			if f.Name == "bytes" || f.Name == "path" {
				return "struct"
			}
		}
	}
	return ""
}

func findImageColumn(o Options, schema *arrow.Schema) (string, string, error) {
	if o.ImageColumn == "-" {
		return "", "", nil
	}
	if o.ImageColumn != "" {
		idx := schema.FieldIndices(o.ImageColumn)
		if len(idx) == 0 {
			return "", "", fmt.Errorf("no image column %q (--image-column) in kept/", o.ImageColumn)
		}
		k := imageKind(schema.Field(idx[0]).Type)
		if k == "" {
			return "", "", fmt.Errorf("image column %q is %s: want binary (image bytes), string (paths) or struct<bytes, path>", o.ImageColumn, schema.Field(idx[0]).Type)
		}
		return o.ImageColumn, k, nil
	}
	for _, n := range imageColumns {
		if idx := schema.FieldIndices(n); len(idx) > 0 {
			if k := imageKind(schema.Field(idx[0]).Type); k != "" {
				return n, k, nil
			}
		}
	}
	// Any binary column is most likely image bytes.
	for _, f := range schema.Fields() {
		if imageKind(f.Type) == "bytes" {
			return f.Name, "bytes", nil
		}
	}
	return "", "", nil
}

// gallery picks the GallerySize highest-scoring rows (all scored rows, every split) and, where
// the run carries images, makes their thumbnails.
func (r *Report) gallery(ctx context.Context, o Options) error {
	t := r.table
	order := make([]int, t.n())
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return t.score[order[a]] > t.score[order[b]] })
	if len(order) > GallerySize {
		order = order[:GallerySize]
	}
	r.Suspects = make([]Suspect, len(order))
	for k, i := range order {
		s := Suspect{Rank: k + 1, Score: t.score[i], IsError: t.truth[i], File: t.files[t.file[i]], Row: t.row[i]}
		if t.id != nil {
			s.ID = t.id[i]
		}
		switch {
		case t.caption != nil:
			s.Caption = t.caption[i]
		case t.scoreCaptions != nil:
			s.Caption = t.scoreCaptions[s.ID]
		}
		if t.split != nil {
			s.Split = t.split[i]
		}
		r.Suspects[k] = s
	}
	col, kind, err := findImageColumn(o, t.schema)
	if err != nil {
		return err
	}
	if col == "" {
		r.Images = "not available: kept/ and rejected/ have no image column (image bytes or local paths); name one with --image-column"
		if o.ImageColumn == "-" {
			r.Images = "not shown (--image-column -)"
		} else if _, err := dataset.GetRaw(r.manifest.Format); err == nil {
			// The input holds the images (webdataset tars beside their Parquet): as lemon
			// report shows them.
			r.Images = rawThumbnails(ctx, r.manifest, r.Suspects, nil)
		}
		return nil
	}
	r.Images = fmt.Sprintf("column %q (%s)", col, map[string]string{"bytes": "image bytes", "path": "image paths", "struct": "struct of bytes and path"}[kind])
	// Read the image column once per file that holds a suspect, keeping only the suspects' cells.
	byFile := map[string][]int{}
	for k, s := range r.Suspects {
		byFile[s.File] = append(byFile[s.File], k)
	}
	for file, ks := range byFile {
		want := map[int][]int{}
		for _, k := range ks {
			want[r.Suspects[k].Row] = append(want[r.Suspects[k].Row], k)
		}
		if err := r.readImages(ctx, file, col, want); err != nil {
			return err
		}
	}
	return nil
}

func (r *Report) readImages(ctx context.Context, file, col string, want map[int][]int) error {
	f, err := metadata.OpenParquet(ctx, file)
	if err != nil {
		return err
	}
	rr, err := f.Records(ctx, []string{col})
	if err != nil {
		f.Close()
		return err
	}
	defer rr.Release()
	offset := 0
	for rr.Next() {
		rec := rr.RecordBatch()
		c := rec.Column(rec.Schema().FieldIndices(col)[0])
		for i := 0; i < c.Len(); i++ {
			ks, ok := want[offset+i]
			if !ok {
				continue
			}
			data, p := imageCell(c, i)
			var url, note string
			switch {
			case data != nil:
				url, note = thumbnail(data)
			case p != "":
				url, note = r.thumbnailFromPath(ctx, p)
			default:
				note = "no image in this row"
			}
			for _, k := range ks {
				r.Suspects[k].thumb, r.Suspects[k].thumbNote = url, note
			}
		}
		offset += c.Len()
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// imageCell returns row i's image bytes or path.
func imageCell(c arrow.Array, i int) ([]byte, string) {
	if c.IsNull(i) {
		return nil, ""
	}
	switch a := c.(type) {
	case *array.Binary:
		return a.Value(i), ""
	case *array.LargeBinary:
		return a.Value(i), ""
	case *array.String:
		return nil, a.Value(i)
	case *array.LargeString:
		return nil, a.Value(i)
	case *array.Struct:
		st := a.DataType().(*arrow.StructType)
		var data []byte
		var p string
		for j, f := range st.Fields() {
			sub := a.Field(j)
			if sub.IsNull(i) {
				continue
			}
			d, s := imageCell(sub, i)
			if f.Name == "bytes" && d != nil {
				data = d
			}
			if f.Name == "path" && s != "" {
				p = s
			}
		}
		return data, p
	}
	return nil, ""
}

func (r *Report) thumbnailFromPath(ctx context.Context, p string) (string, string) {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		return "", "remote URL, not fetched"
	}
	candidates := []string{p}
	if !strings.HasPrefix(p, "/") && !strings.Contains(p, "://") && r.input != "" {
		// Relative paths: as given, then under the run's input (a directory) or beside it (a file).
		candidates = append(candidates, storage.Join(r.input, p), storage.Join(r.input, "..", p))
	}
	for _, c := range candidates {
		size, err := storage.Size(ctx, c)
		if err != nil {
			continue
		}
		if size > maxImageSize {
			return "", fmt.Sprintf("image file too large (%d bytes)", size)
		}
		data, err := storage.ReadFile(ctx, c)
		if err != nil {
			continue
		}
		return thumbnail(data)
	}
	return "", "image file not found: " + p
}

// thumbnail decodes an image and returns a small JPEG as a data: URL, so the report stays one
// small self-contained file whatever the source images weigh.
func thumbnail(data []byte) (string, string) {
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Sprintf("image could not be decoded (%s)", http.DetectContentType(data))
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w == 0 || h == 0 {
		return "", "empty image"
	}
	scale := float64(thumbPixels) / float64(max(w, h))
	if scale > 1 {
		scale = 1
	}
	tw, th := max(1, int(float64(w)*scale+0.5)), max(1, int(float64(h)*scale+0.5))
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src) // transparency on white
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Over, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 85}); err != nil {
		return "", "thumbnail could not be encoded"
	}
	return "data:image/jpeg;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()), ""
}
