// Command mkraw converts an idx-format image classification dataset (MNIST, Fashion-MNIST:
// gzipped or plain idx3 images + idx1 labels) into a lemon "pathcsv" raw dataset:
// OUT/data.csv (id,image,caption) and OUT/images/<id>.png, caption "A photo of a <class>".
// It takes the first --n rows (the idx files are already in random order). Used by
// bench/classification/run.sh.
package main

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/csv"
	"flag"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
)

var classNames = map[string][]string{
	// Fashion-MNIST's labels, as its README names them.
	"fashion-mnist": {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"},
	// Digits as numerals, so `lemon noise --kind asymmetric` flips c -> c+1 in numeric order.
	"mnist": {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"},
	// Digits as words (note: asymmetric noise then orders classes by name, not value).
	"mnist-words": {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"},
}

func open(p string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(p, ".gz") {
		return f, nil
	}
	z, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{z, f}, nil
}

// readIdx reads an idx file's header and returns its dimensions and a reader at the data.
func readIdx(p string, wantDims int) ([]int, io.ReadCloser, error) {
	r, err := open(p)
	if err != nil {
		return nil, nil, err
	}
	var magic uint32
	if err := binary.Read(r, binary.BigEndian, &magic); err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	if magic>>8 != 0x08 || int(magic&0xff) != wantDims {
		r.Close()
		return nil, nil, fmt.Errorf("%s: magic %#x, want unsigned-byte idx with %d dims", p, magic, wantDims)
	}
	dims := make([]int, wantDims)
	for i := range dims {
		var d uint32
		if err := binary.Read(r, binary.BigEndian, &d); err != nil {
			r.Close()
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		dims[i] = int(d)
	}
	return dims, r, nil
}

func run() error {
	images := flag.String("images", "", "idx3 images file (.gz or plain)")
	labels := flag.String("labels", "", "idx1 labels file (.gz or plain)")
	classes := flag.String("classes", "", "class names: fashion-mnist, mnist (numerals) or mnist-words")
	n := flag.Int("n", 10000, "rows to convert (the first N; 0: all)")
	prefix := flag.String("id-prefix", "", "id prefix (default: --classes)")
	out := flag.String("out", "", "output directory (data.csv, images/)")
	flag.Parse()
	names, ok := classNames[*classes]
	if !ok || *images == "" || *labels == "" || *out == "" {
		flag.Usage()
		return fmt.Errorf("--images, --labels, --out and --classes (fashion-mnist|mnist|mnist-words) are required")
	}
	if *prefix == "" {
		*prefix = *classes
	}
	idims, ir, err := readIdx(*images, 3)
	if err != nil {
		return err
	}
	defer ir.Close()
	ldims, lr, err := readIdx(*labels, 1)
	if err != nil {
		return err
	}
	defer lr.Close()
	if idims[0] != ldims[0] {
		return fmt.Errorf("%d images but %d labels", idims[0], ldims[0])
	}
	rows := idims[0]
	if *n > 0 && *n < rows {
		rows = *n
	}
	h, w := idims[1], idims[2]
	if err := os.MkdirAll(filepath.Join(*out, "images"), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(*out, ".data.csv.tmp")
	cf, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer cf.Close()
	cw := csv.NewWriter(cf)
	cw.Write([]string{"id", "image", "caption"})
	counts := make([]int, len(names))
	buf := make([]byte, h*w)
	lab := make([]byte, 1)
	for i := 0; i < rows; i++ {
		if _, err := io.ReadFull(ir, buf); err != nil {
			return fmt.Errorf("image %d: %w", i, err)
		}
		if _, err := io.ReadFull(lr, lab); err != nil {
			return fmt.Errorf("label %d: %w", i, err)
		}
		if int(lab[0]) >= len(names) {
			return fmt.Errorf("label %d of row %d out of range", lab[0], i)
		}
		counts[lab[0]]++
		img := &image.Gray{Pix: append([]byte(nil), buf...), Stride: w, Rect: image.Rect(0, 0, w, h)}
		id := fmt.Sprintf("%s-%05d", *prefix, i)
		rel := filepath.Join("images", id+".png")
		pf, err := os.Create(filepath.Join(*out, rel))
		if err != nil {
			return err
		}
		if err := png.Encode(pf, img); err != nil {
			pf.Close()
			return err
		}
		if err := pf.Close(); err != nil {
			return err
		}
		cw.Write([]string{id, rel, "A photo of a " + names[lab[0]]})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if err := cf.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(*out, "data.csv")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "mkraw: %d rows (%dx%d) -> %s; per class:", rows, h, w, *out)
	for c, k := range counts {
		fmt.Fprintf(os.Stderr, " %s=%d", names[c], k)
	}
	fmt.Fprintln(os.Stderr)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkraw:", err)
		os.Exit(1)
	}
}
